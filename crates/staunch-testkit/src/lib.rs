//! Test support shared by Staunch's crates; only ever a dev-dependency.
//!
//! - [`log_store_suite`]: the conformance suite every `LogStore` implementation must pass.
//! - [`broker_api_suite`]: the consumer-side checks every `BrokerApi` must pass (fetch, list
//!   offsets, topic creation, the group protocol, committed offsets).
//! - [`intercept`]: `BrokerApi` test doubles that override produce / metadata / offset commits
//!   and pass every other call through, so fault wrappers do not each forward the whole trait.
//! - [`faulty_io`]: an in-memory `SegmentIo` that tracks live versus durable bytes and injects
//!   crashes, torn writes, bit flips, fsync failures and a full disk.
//! - [`pki`]: a throw-away CA with broker and client certificates for TLS tests.

pub mod broker_api_suite;
pub mod faulty_io;
pub mod intercept;
pub mod log_store_suite;
pub mod pki;

pub use faulty_io::{CrashMode, FaultyIo};
pub use intercept::{Intercept, Intercepted};
