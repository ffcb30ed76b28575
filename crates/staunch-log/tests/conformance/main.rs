//! Every `LogStore` implementation passes the shared conformance suite, and the file log agrees
//! with a simple model under random operations, reopens included.

mod model;

use std::sync::Arc;

use staunch_core::SystemClock;
use staunch_log::{FileLog, FlushPolicy, LogConfig, MemoryLog};
use staunch_testkit::FaultyIo;
use staunch_testkit::log_store_suite::{LogStoreBuilder, test_all};

struct Memory;

impl LogStoreBuilder for Memory {
    type Log = MemoryLog;
    type Guard = ();
    fn build(&self) -> (MemoryLog, ()) {
        (MemoryLog::default(), ())
    }
}

/// File logs on the real file system, with small segments so rolling is exercised.
struct OnDisk(FlushPolicy);

impl LogStoreBuilder for OnDisk {
    type Log = FileLog;
    type Guard = tempfile::TempDir;
    fn build(&self) -> (FileLog, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: self.0,
            segment_bytes: 4 << 20,
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        (FileLog::open(dir.path(), config).unwrap(), dir)
    }
}

/// File logs over the in-memory fault-injecting I/O with tiny segments.
struct OnFaultyIo;

impl LogStoreBuilder for OnFaultyIo {
    type Log = FileLog;
    type Guard = FaultyIo;
    fn build(&self) -> (FileLog, FaultyIo) {
        let io = FaultyIo::new();
        let config = LogConfig {
            segment_bytes: 4096,
            max_batch_bytes: 4096,
            index_interval_bytes: 128,
            ..LogConfig::default()
        };
        let log = FileLog::open_with(Arc::new(io.clone()), config, Arc::new(SystemClock)).unwrap();
        (log, io)
    }
}

#[test]
fn memory_log_conforms() {
    test_all(&Memory);
}

#[test]
fn file_log_conforms_with_flush_always() {
    test_all(&OnDisk(FlushPolicy::Always));
}

#[test]
fn file_log_conforms_with_flush_interval() {
    test_all(&OnDisk(FlushPolicy::Interval(
        std::time::Duration::from_millis(5),
    )));
}

#[test]
fn file_log_conforms_with_flush_os() {
    test_all(&OnDisk(FlushPolicy::Os));
}

#[test]
fn file_log_conforms_with_tiny_segments() {
    test_all(&OnFaultyIo);
}
