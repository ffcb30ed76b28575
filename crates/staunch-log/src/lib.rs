//! One partition's durable log.
//!
//! A log is an append-only sequence of Kafka v2 record batches with contiguous offsets, stored
//! exactly as producers sent them so a fetch serves the stored bytes. Two implementations of
//! [`LogStore`]:
//!
//! - [`FileLog`]: segments on disk, sparse offset/time index, flush policy with group commit,
//!   crash recovery that never serves a torn or corrupt batch, retention by age and size.
//! - [`MemoryLog`]: the same semantics in memory, for tests and durability-free embedding.
//!
//! Durability is explicit: [`LogStore::append`] reports what it achieved ([`Durability`]), and
//! with the default [`FlushPolicy::Always`] an append returns only after `fdatasync`.
//!
//! ```
//! use staunch_core::BatchBuilder;
//! use staunch_log::{Durability, FileLog, LogConfig, LogStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = FileLog::open(dir.path(), LogConfig::default()).unwrap();
//! let mut batch = BatchBuilder::new(1_700_000_000_000).record(None, Some(b"hello")).build();
//! let info = log.append(&mut batch, 0).unwrap();
//! assert_eq!((info.base_offset, info.durability), (0, Durability::OnDisk));
//! let read = log.read(0, 1 << 20).unwrap();
//! assert_eq!(read.bytes, batch); // the stored bytes, offset stamped
//! log.close().unwrap();
//! ```

mod config;
mod error;
mod file;
pub mod io;
mod memory;
pub mod metrics;
mod read_buffer;
mod store;
mod validate;

pub use config::{FlushPolicy, LogConfig};
pub use error::LogError;
pub use file::{BackgroundPool, FileLog, PoolConfig, Recovery, TailCut, check};
pub use io::{
    FsSegmentIo, FsStorage, SegmentFile, SegmentIo, StorageIo, join_path, read_file, replace_file,
};
pub use memory::MemoryLog;
pub use store::{AppendInfo, Durability, LogStore, ReadBatches, RetentionOutcome, TimestampOffset};
