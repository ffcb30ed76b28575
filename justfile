# Staunch task runner. Every recipe is a thin wrapper; nothing here needs more than cargo.

# Format check, clippy and every test — what CI runs.
test:
    scripts/test

# Formatting and lints only.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test -p staunch-testkit --test layers

# Format the code.
fmt:
    cargo fmt --all

# Criterion benchmarks: `just bench` for all, `just bench log_append` for one target.
bench name="":
    cargo bench -p staunch-benches {{ if name == "" { "" } else { "--bench " + name } }}

# The main job for now: the embedded-log crash demo.
demo:
    cargo run --release -p staunch-examples --example embedded_log

# Run each fuzz target for 60 s (needs `cargo install cargo-fuzz` and a nightly toolchain).
fuzz-ci:
    cd fuzz && cargo +nightly fuzz run batch_parse -- -max_total_time=60
    cd fuzz && cargo +nightly fuzz run log_recovery -- -max_total_time=60

# Check the crate layering rule of DESIGN.md.
layers:
    cargo test -p staunch-testkit --test layers
