//! Runnable examples; each embeds or swaps one Staunch component. Run one with
//! `cargo run --release -p staunch-examples --example <name>`.
//!
//! | example | what it shows |
//! |---|---|
//! | `embedded_log` | the durable log embedded in a program: a child process appends with `flush = always`, is killed with SIGKILL, and every offset it was told is durable is read back after recovery |
