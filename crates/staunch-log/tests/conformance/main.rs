//! Every `LogStore` implementation passes the shared conformance suite, and the file log agrees
//! with a simple model under random operations, reopens included.

mod max_timestamp;
mod model;

use staunch_log::{FileLog, FlushPolicy, LogConfig, MemoryLog};
use staunch_testkit::FaultyIo;
use staunch_testkit::log_store_suite::{
    LogStoreBuilder, batch, kib_batch, large_reads_one_after_another_never_mix_contents, test_all,
};

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
        (io.open_log(config), io)
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

#[test]
fn large_reads_never_mix_contents() {
    large_reads_one_after_another_never_mix_contents(&Memory);
    large_reads_one_after_another_never_mix_contents(&OnDisk(FlushPolicy::Always));
}

/// Just-written data is in the page cache, so the file log serves it without waiting (the
/// path a broker's fetch takes on its async threads). Needs a file system with `RWF_NOWAIT`
/// reads (ext4, xfs, btrfs, tmpfs on Linux 5.x and later).
#[test]
fn file_log_serves_hot_data_from_the_page_cache() {
    use staunch_log::LogStore;

    let (log, _dir) = OnDisk(FlushPolicy::Always).build();
    for tag in 0..10 {
        log.append(&mut batch(tag, 4, 1_000), 0).unwrap();
    }
    assert_eq!(log.try_bounds(), Some((0, 40)));
    for from in [0, 17, 39] {
        let cached = log.read_cached(from, 1 << 20).unwrap();
        assert_eq!(
            cached,
            Some(log.read(from, 1 << 20).unwrap()),
            "from {from}"
        );
    }
}

/// A batch that does not fit a `read_within` is not read, only its header — where `read`,
/// which owes the reader one batch, reads it whole. (A fetch that has some batches already
/// used to read the next 1 MiB batch only to drop it.)
#[test]
fn read_within_reads_only_the_header_of_a_batch_that_does_not_fit() {
    use staunch_log::LogStore;

    let io = FaultyIo::new();
    let log = io.open_log(LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    });
    let big = kib_batch(100);
    for _ in 0..2 {
        log.append(&mut big.clone(), 0).unwrap();
    }
    let half = big.len() / 2;

    let before = io.bytes_read();
    let within = log.read_within(100, half).unwrap();
    let read_within = io.bytes_read() - before;
    assert!(within.bytes.is_empty());
    assert_eq!(within.next_offset, 100);
    assert!(
        read_within < 1024,
        "read {read_within} bytes of a {} byte batch that does not fit",
        big.len()
    );

    let before = io.bytes_read();
    let read = log.read(100, half).unwrap();
    assert_eq!(read.bytes.len(), big.len());
    assert!(io.bytes_read() - before >= big.len() as u64);
}

/// Found by fuzzing: a compressed batch may claim up to 2^31 records (its records are not
/// decoded by the log), so one segment can span more than 2^32 offsets. Reads must still find
/// every batch by offset, also after a reopen rebuilt the index from the file.
#[test]
fn file_log_reads_exactly_when_a_segment_spans_more_than_u32_offsets() {
    use staunch_core::RecordBatch;
    use staunch_log::LogStore;

    /// A CRC-valid "gzip" batch claiming `i32::MAX` records.
    fn huge_batch() -> Vec<u8> {
        let mut b = staunch_core::BatchBuilder::new(1_000)
            .record(None, Some(b"x"))
            .build();
        b[21..23].copy_from_slice(&1i16.to_be_bytes()); // attributes: gzip
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes()); // last offset delta
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes()); // record count
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Os,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut bases = Vec::new();
    {
        let log = FileLog::open(dir.path(), config.clone()).unwrap();
        for i in 0..6u32 {
            let mut bytes = if i % 2 == 0 {
                huge_batch()
            } else {
                staunch_testkit::log_store_suite::batch(i, 2, 1_000)
            };
            bases.push(log.append(&mut bytes, 0).unwrap().base_offset);
        }
        assert!(log.log_end() > i64::from(u32::MAX));
        for &base in &bases {
            let read = log.read(base, 1).unwrap();
            assert_eq!(RecordBatch::parse(&read.bytes).unwrap().base_offset(), base);
        }
        // Dropped without close: the reopen scans and rebuilds the index.
    }
    let log = FileLog::open(dir.path(), config).unwrap();
    assert_eq!(log.recovery().segments_scanned, 1);
    for &base in &bases {
        let read = log.read(base, 1).unwrap();
        assert_eq!(RecordBatch::parse(&read.bytes).unwrap().base_offset(), base);
        let middle = log.read(base + 1, 1).unwrap();
        assert!(RecordBatch::parse(&middle.bytes).unwrap().base_offset() <= base + 1);
    }
}
