//! Test support shared by Staunch's crates; only ever a dev-dependency.
//!
//! - [`log_store_suite`]: the conformance suite every `LogStore` implementation must pass.
//! - [`faulty_io`]: an in-memory `SegmentIo` that tracks live versus durable bytes and injects
//!   crashes, torn writes, bit flips, fsync failures and a full disk.

pub mod faulty_io;
pub mod log_store_suite;

pub use faulty_io::{CrashMode, FaultyIo};
