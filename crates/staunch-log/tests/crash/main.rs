//! Crash and fault tests: the log is broken on purpose — power loss mid-load, torn writes,
//! flipped bits, failed fsyncs, a full disk, kill -9 of a real process — and every test checks
//! the one promise: what the log acknowledged as durable is still there, and nothing invalid is
//! ever served.

mod bit_rot;
mod check;
mod kill9;
mod lazy_marker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_core::{Clock, ManualClock, Offset, RecordBatch};
use staunch_log::{Durability, FileLog, FlushPolicy, LogConfig, LogError, LogStore};
use staunch_testkit::log_store_suite::{batch, read_all};
use staunch_testkit::{CrashMode, FaultyIo};

mod zero_fill;

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        segment_bytes: 2 * 1024,
        max_batch_bytes: 2 * 1024,
        index_interval_bytes: 256,
        // Off in most tests: the background zero-fill's fsyncs would make fsync counts and
        // "fail the n-th fsync" depend on timing. The `zero_fill_*` tests turn it on.
        zero_fill_bytes: 0,
        ..LogConfig::default()
    }
}

fn open(io: &FaultyIo, flush: FlushPolicy) -> Result<FileLog, LogError> {
    open_configured(io, config(flush))
}

fn open_configured(io: &FaultyIo, config: LogConfig) -> Result<FileLog, LogError> {
    FileLog::open_with(
        Arc::new(io.clone()),
        config,
        Arc::new(ManualClock::new(1_000)),
    )
}

/// A log over `io` with flush `always`, holding `batches` four-record batches.
fn filled(io: &FaultyIo, batches: u32) -> FileLog {
    let log = open(io, FlushPolicy::Always).unwrap();
    for i in 0..batches {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    log
}

/// A record's offset and value.
type Record = (Offset, Vec<u8>);

/// The value of every record, keyed by offset.
fn values(log: &dyn LogStore) -> Vec<Record> {
    read_all(log, log.earliest())
}

/// Appends from several threads while the "power" is cut at a random moment; every append
/// acknowledged before the cut is in the recovered log, byte for byte.
#[test]
fn power_loss_during_concurrent_appends_loses_nothing_acknowledged() {
    power_loss_during_concurrent_appends(config(FlushPolicy::Always));
}

/// The appends of [`power_loss_during_concurrent_appends_loses_nothing_acknowledged`] with a
/// log configured by `config` (flush `always`).
fn power_loss_during_concurrent_appends(config: LogConfig) {
    for seed in 0..20u64 {
        let io = FaultyIo::new();
        let log = Arc::new(open_configured(&io, config.clone()).unwrap());
        let acked: Arc<Mutex<Vec<Record>>> = Arc::default();
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let (log, acked) = (log.clone(), acked.clone());
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        let mut bytes = batch(t * 10_000 + i, 1 + i % 5, 1_000);
                        let Ok(info) = log.append(&mut bytes, 0) else {
                            return;
                        };
                        assert_eq!(info.durability, Durability::OnDisk);
                        let mut acked = acked.lock().unwrap();
                        for (k, r) in staunch_testkit::log_store_suite::records_of(&bytes)
                            .into_iter()
                            .enumerate()
                        {
                            assert_eq!(r.0, info.base_offset + k as i64);
                            acked.push(r);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..20_000)));
        // Everything acknowledged before the image is taken must be in it.
        let acknowledged = acked.lock().unwrap().clone();
        let mode = if seed % 2 == 0 {
            CrashMode::DropUnsynced
        } else {
            CrashMode::TornTail { seed }
        };
        let image = io.crash(mode);
        for w in writers {
            w.join().unwrap();
        }
        let recovered = open_configured(&image, config.clone()).unwrap();
        let found: std::collections::HashMap<_, _> = values(&recovered).into_iter().collect();
        for (offset, value) in &acknowledged {
            assert_eq!(
                found.get(offset),
                Some(value),
                "seed {seed}: acknowledged offset {offset} lost"
            );
        }
        let end = recovered.log_end();
        assert_eq!(recovered.durable_end(), end);
        let info = recovered.append(&mut batch(9, 1, 1_000), 0).unwrap();
        assert_eq!(info.base_offset, end, "appends continue after recovery");
    }
}

/// With flush `os`, unsynced data may be lost in a power loss — but only whole batches from the
/// tail, never a torn one, and never what `flush()` made durable.
#[test]
fn torn_tail_is_cut_at_the_last_whole_batch() {
    for seed in 0..50u64 {
        let io = FaultyIo::new();
        let log = open(&io, FlushPolicy::Os).unwrap();
        for i in 0..10 {
            log.append(&mut batch(i, 3, 1_000), 0).unwrap();
        }
        let durable = log.flush().unwrap();
        for i in 10..14 {
            let info = log.append(&mut batch(i, 3, 1_000), 0).unwrap();
            assert_eq!(info.durability, Durability::PageCache);
        }
        let before = values(&log);
        let image = io.crash(CrashMode::TornTail { seed });
        let recovered = open(&image, FlushPolicy::Os).unwrap();
        let after = values(&recovered);
        assert!(
            recovered.log_end() >= durable,
            "seed {seed}: flushed data lost"
        );
        assert_eq!(
            after[..],
            before[..after.len()],
            "seed {seed}: recovered log is not a prefix"
        );
        assert_eq!(
            recovered.log_end() % 3,
            0,
            "seed {seed}: a partial batch survived"
        );
    }
}

/// A bit flipped under a running log: the read that reaches it fails with `Corrupt` instead of
/// serving the bad batch; reads before it still work.
#[test]
fn corrupt_batch_is_never_served_by_read() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Always).unwrap();
    let mut sizes = Vec::new();
    for i in 0..4 {
        let mut b = batch(i, 2, 1_000);
        log.append(&mut b, 0).unwrap();
        sizes.push(b.len());
    }
    io.flip_bit("00000000000000000000.log", sizes[0] + sizes[1] + 70, 0);
    let read = log.read(0, 1 << 20).unwrap();
    assert_eq!(
        read.next_offset, 4,
        "the read stops before the corrupt batch"
    );
    for b in staunch_core::batch::batches(&read.bytes) {
        b.unwrap().validate().unwrap();
    }
    assert!(matches!(
        log.read(4, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
    // The read from memory (the broker's fast path) is just as strict.
    assert_eq!(log.read_cached(0, 1 << 20).unwrap(), Some(read));
    assert!(matches!(
        log.read_cached(4, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
}

/// Corruption inside a closed segment is not "a torn tail": the log refuses to open rather than
/// silently dropping the acknowledged segments after it.
#[test]
fn damaged_closed_segment_refuses_to_open() {
    let io = FaultyIo::new();
    let log = filled(&io, 40);
    assert!(log.segment_count() > 2);
    drop(log);
    let first = "00000000000000000000.log";
    io.flip_bit(first, 100, 1);
    io.flip_bit("00000000000000000000.index", 10, 1);
    let err = open(&io, FlushPolicy::Always).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "got {err}");
}

/// An fsync that fails poisons the log: that append fails, every later one fails, nothing is
/// retried; what was durable before stays readable and survives a crash.
#[test]
fn failed_fsync_fails_the_append_and_every_later_one() {
    let io = FaultyIo::new();
    let log = Arc::new(open(&io, FlushPolicy::Always).unwrap());
    for i in 0..3 {
        log.append(&mut batch(i, 2, 1_000), 0).unwrap();
    }
    let acknowledged = values(&*log);
    io.fail_sync_after(1);
    let syncs_before = io.file_syncs();
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let log = log.clone();
            std::thread::spawn(move || log.append(&mut batch(100 + i, 2, 1_000), 0))
        })
        .collect();
    for w in waiters {
        let result = w.join().unwrap();
        assert!(
            matches!(result, Err(LogError::Failed { .. })),
            "got {result:?}"
        );
    }
    assert_eq!(
        io.file_syncs() - syncs_before,
        1,
        "a failed fsync is not retried"
    );
    let err = log.append(&mut batch(200, 1, 1_000), 0).unwrap_err();
    assert!(
        err.to_string().contains("fdatasync"),
        "the error says why: {err}"
    );
    assert!(log.flush().is_err());
    assert!(
        log.close().is_err(),
        "a failed log does not claim a clean shutdown"
    );
    assert_eq!(values(&*log)[..acknowledged.len()], acknowledged[..]);

    let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Always).unwrap();
    assert!(!recovered.recovery().clean);
    assert_eq!(values(&recovered)[..acknowledged.len()], acknowledged[..]);
}

/// A full disk fails the append cleanly (no partial batch left, no offset used), keeps what was
/// acknowledged, and appends work again once space is freed — also across a segment roll.
#[test]
fn full_disk_fails_the_append_and_recovers_when_space_is_freed() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Always).unwrap();
    for i in 0..3 {
        log.append(&mut batch(i, 2, 1_000), 0).unwrap();
    }
    // Not one byte more: appends can use only the blocks the segment reserved ahead, then the
    // roll to a new segment finds no space.
    io.set_capacity(Some(io.used_bytes()));
    let mut acknowledged = values(&log);
    let mut appended = 0;
    let err = loop {
        let end = log.log_end();
        match log.append(&mut batch(10 + appended, 4, 1_000), 0) {
            Ok(_) => {
                acknowledged = values(&log);
                appended += 1;
                assert!(appended < 100, "the disk never filled up");
            }
            Err(e) => {
                assert_eq!(log.log_end(), end, "no offset used by the failed append");
                break e;
            }
        }
    };
    assert!(matches!(err, LogError::DiskFull { .. }), "got {err}");
    assert!(err.to_string().contains("disk full"));
    assert_eq!(
        values(&log),
        acknowledged,
        "what was acknowledged is intact"
    );
    // Still full: still refused, still nothing lost.
    assert!(matches!(
        log.append(&mut batch(200, 8, 1_000), 0),
        Err(LogError::DiskFull { .. })
    ));

    io.set_capacity(None);
    let end = log.log_end();
    let info = log.append(&mut batch(201, 4, 1_000), 0).unwrap();
    assert_eq!(
        info.base_offset, end,
        "appends work again once space is freed"
    );
    let all = values(&log);
    let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Always).unwrap();
    assert_eq!(values(&recovered), all);
}

/// Stale or damaged metadata (index files, the clean-shutdown marker) is detected and ignored:
/// the log scans instead of trusting it.
#[test]
fn damaged_metadata_falls_back_to_scanning() {
    let io = FaultyIo::new();
    let log = filled(&io, 30);
    let before = values(&log);
    log.close().unwrap();
    drop(log);
    let marker = io.live_bytes("clean-shutdown").unwrap();
    io.flip_bit("clean-shutdown", marker.len() / 2, 0);
    for name in io.names().iter().filter(|n| n.ends_with(".index")) {
        io.put_file(name, b"garbage");
    }
    let reopened = open(&io, FlushPolicy::Always).unwrap();
    assert!(!reopened.recovery().clean);
    assert!(reopened.recovery().segments_scanned > 1);
    assert_eq!(values(&reopened), before);
}

/// A clean close makes the next open trust the metadata and scan nothing.
#[test]
fn clean_shutdown_reopens_without_scanning() {
    let io = FaultyIo::new();
    let log = filled(&io, 30);
    let before = values(&log);
    log.close().unwrap();
    drop(log);
    let reopened = open(&io, FlushPolicy::Always).unwrap();
    assert!(reopened.recovery().clean);
    assert_eq!(reopened.recovery().segments_scanned, 0);
    assert_eq!(values(&reopened), before);
    // Nothing was changed: the marker is still true, and a crash now finds it.
    drop(reopened);
    let again = open(&io, FlushPolicy::Always).unwrap();
    assert!(again.recovery().clean);
    assert_eq!(again.recovery().segments_scanned, 0);
    assert_eq!(values(&again), before);
    // The first change consumes it: a crash after it is noticed.
    again.append(&mut batch(30, 4, 1_000), 0).unwrap();
    let after = values(&again);
    drop(again);
    let scanned = open(&io, FlushPolicy::Always).unwrap();
    assert!(!scanned.recovery().clean);
    assert_eq!(values(&scanned), after);
}

/// `delete_segments_before` removes exactly the closed segments wholly below the offset, never
/// one holding a record at or above it, never the active one; the deletion survives a crash.
#[test]
fn deleting_segments_below_an_offset_keeps_every_record_at_or_above_it() {
    let io = FaultyIo::new();
    let log = filled(&io, 100);
    let segments = log.segment_count();
    assert!(segments >= 3, "{segments} segments");
    let all = values(&log);
    let cut = all[all.len() / 2].0;
    let outcome = log.delete_segments_before(cut).unwrap();
    assert!(outcome.segments_deleted >= 1);
    assert!(log.earliest() <= cut, "a segment holding {cut} was deleted");
    assert_eq!(outcome.earliest, log.earliest());
    let kept = values(&log);
    assert_eq!(
        kept[..],
        all[all.iter().position(|r| r.0 == log.earliest()).unwrap()..]
    );
    // Deleting below the log end leaves the active segment.
    log.delete_segments_before(log.log_end()).unwrap();
    assert_eq!(log.segment_count(), 1);
    let earliest = log.earliest();
    let crashed = io.crash(CrashMode::DropUnsynced);
    let again = open(&crashed, FlushPolicy::Always).unwrap();
    assert_eq!(again.earliest(), earliest, "the deletion was durable");
    assert_eq!(values(&again).last(), all.last());
}

/// Retention deletes whole closed segments by age and by size, never the active one, and the
/// log keeps working from the new earliest offset.
#[test]
fn retention_deletes_whole_closed_segments_only() {
    let io = FaultyIo::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let cfg = LogConfig {
        retention_age: Some(Duration::from_secs(60)),
        retention_bytes: None,
        ..config(FlushPolicy::Always)
    };
    let log = FileLog::open_with(Arc::new(io.clone()), cfg.clone(), clock.clone()).unwrap();
    for i in 0..40 {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 3);
    // Nothing is old enough yet.
    assert_eq!(
        log.apply_retention(1_000 + 59_000)
            .unwrap()
            .segments_deleted,
        0
    );
    // Everything is old: all closed segments go, the active one stays.
    let outcome = log.apply_retention(1_000_000).unwrap();
    assert_eq!(outcome.segments_deleted, segments - 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.earliest(), outcome.earliest);
    assert!(log.earliest() > 0);
    assert!(matches!(
        log.read(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(values(&log).first().map(|r| r.0), Some(log.earliest()));
    let logs = io
        .names()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .count();
    assert_eq!(logs, 1, "deleted segments' files are gone");

    // By size, applied by the log itself at every roll: keep at most ~2 segments' worth.
    let cfg = LogConfig {
        retention_age: None,
        retention_bytes: Some(4 * 1024),
        ..config(FlushPolicy::Always)
    };
    let io = FaultyIo::new();
    let log = FileLog::open_with(Arc::new(io.clone()), cfg, clock).unwrap();
    for i in 0..100 {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    let size = log.size_bytes();
    // Closed segments are kept while they fit the limit; the active one grows on top.
    assert!(
        (2 * 1024..=8 * 1024).contains(&size),
        "size after retention: {size}"
    );
    assert!(log.earliest() > 0, "retention ran without being called");
    let reopened_end = log.log_end();
    drop(log);
    let reopened = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Always).unwrap();
    assert_eq!(reopened.log_end(), reopened_end);
}

/// Segments roll by age at the first append after `segment_age`.
#[test]
fn segments_roll_by_age() {
    let io = FaultyIo::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let cfg = LogConfig {
        segment_age: Duration::from_secs(10),
        ..config(FlushPolicy::Always)
    };
    let log = FileLog::open_with(Arc::new(io), cfg, clock.clone()).unwrap();
    log.append(&mut batch(0, 1, 1_000), 0).unwrap();
    log.append(&mut batch(1, 1, 1_000), 0).unwrap();
    assert_eq!(log.segment_count(), 1);
    clock.advance(10_000);
    log.append(&mut batch(2, 1, 1_000), 0).unwrap();
    assert_eq!(log.segment_count(), 2);
}

/// The interval policy reports page-cache durability and its background flusher makes data
/// durable without any call.
#[test]
fn interval_flusher_makes_data_durable_in_the_background() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Interval(Duration::from_millis(5))).unwrap();
    let info = log.append(&mut batch(0, 3, 1_000), 0).unwrap();
    assert_eq!(info.durability, Durability::PageCache);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.durable_end() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never ran"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Os).unwrap();
    assert_eq!(recovered.log_end(), 3);
}

/// Truncation is durable: the removed records do not come back after a power loss, and the
/// leader epoch stamped on later appends is the new one.
#[test]
fn truncation_survives_a_crash() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Always).unwrap();
    for i in 0..60 {
        log.append(&mut batch(i, 4, 1_000), 1).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.truncate_to(22).unwrap(), 20);
    log.append(&mut batch(99, 4, 1_000), 2).unwrap();
    let expected = values(&log);
    let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Always).unwrap();
    assert_eq!(values(&recovered), expected);
    let last = recovered.read(20, 1 << 20).unwrap();
    assert_eq!(
        RecordBatch::parse(&last.bytes)
            .unwrap()
            .partition_leader_epoch(),
        2
    );
}

/// A truncation cut short (here: by a failing fsync, then a power loss) is finished by the next
/// open, so the log is never left with a gap or half a truncation — and the log that failed
/// mid-truncation accepts no appends that the finished truncation would then delete.
#[test]
fn interrupted_truncation_is_finished_on_open() {
    for failing_sync in 1..=2 {
        let io = FaultyIo::new();
        let log = open(&io, FlushPolicy::Always).unwrap();
        for i in 0..60 {
            log.append(&mut batch(i, 4, 1_000), 0).unwrap();
        }
        assert!(log.segment_count() > 2);
        let before = values(&log);
        io.fail_sync_after(failing_sync);
        let result = log.truncate_to(22);
        assert!(
            result.is_err(),
            "sync {failing_sync}: the truncation saw the failed fsync"
        );
        assert!(log.append(&mut batch(99, 1, 1_000), 0).is_err());

        let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Always).unwrap();
        let after = values(&recovered);
        assert!(
            recovered.log_end() == 20 || recovered.log_end() == 240,
            "sync {failing_sync}: log end {} is neither before nor after the truncation",
            recovered.log_end()
        );
        assert_eq!(after[..], before[..after.len()]);
        if failing_sync > 1 {
            assert_eq!(
                recovered.log_end(),
                20,
                "the durable intent was carried out"
            );
        }
        let info = recovered.append(&mut batch(100, 1, 1_000), 0).unwrap();
        assert_eq!(info.base_offset, recovered.log_end() - 1);
    }
}

/// Retention by age counts from when the log appended a segment's newest batch, not from the
/// producer's timestamps: records stamped in 1970 by a skewed producer clock are kept the full
/// retention period instead of being deleted at the next roll.
#[test]
fn retention_counts_from_append_time_not_producer_timestamps() {
    const DAY: i64 = 24 * 3600 * 1000;
    let clock = Arc::new(ManualClock::new(100 * DAY));
    let cfg = LogConfig {
        retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
        ..config(FlushPolicy::Always)
    };
    let log = FileLog::open_with(Arc::new(FaultyIo::new()), cfg, clock.clone()).unwrap();
    for i in 0..60 {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap(); // timestamps from 1970
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.earliest(), 0, "nothing expired at the rolls");
    assert_eq!(
        log.apply_retention(clock.now_ms() + 6 * DAY)
            .unwrap()
            .segments_deleted,
        0
    );
    let outcome = log.apply_retention(clock.now_ms() + 8 * DAY).unwrap();
    assert_eq!(
        outcome.segments_deleted,
        log.segment_count() + outcome.segments_deleted - 1
    );
    assert_eq!(log.segment_count(), 1);
}

/// Linux reports a writeback error to one fsync and may then report success for pages it
/// dropped. So after one failed fsync, no append may ever be reported durable again — even
/// though the next fsync would "succeed".
#[test]
fn one_failed_fsync_is_never_papered_over_by_a_later_one() {
    for round in 0..20 {
        let io = FaultyIo::new();
        let log = Arc::new(open(&io, FlushPolicy::Always).unwrap());
        log.append(&mut batch(0, 1, 1_000), 0).unwrap();
        io.fail_one_sync_after(1 + round % 3);
        let appenders: Vec<_> = (0..8u32)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..20u32)
                        .map(|i| log.append(&mut batch(t * 100 + i, 1, 1_000), 0).is_ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut results = Vec::new();
        for a in appenders {
            results.push(a.join().unwrap());
        }
        // Each thread's appends: some successes (before the failure), then only failures.
        for r in &results {
            let first_failure = r.iter().position(|ok| !ok).unwrap_or(r.len());
            assert!(
                r[first_failure..].iter().all(|ok| !ok),
                "round {round}: an append succeeded after the failed fsync: {r:?}"
            );
        }
        assert!(
            results.iter().flatten().any(|ok| !ok),
            "round {round}: the failure was never seen"
        );
        assert!(log.flush().is_err());
    }
}

/// Under `os`, a roll only queues the closed segment; the background thread seals it (fsync,
/// then index), which advances the durable end without any flush call, and the sealed segments
/// survive a power loss.
#[test]
fn os_policy_seals_closed_segments_in_the_background() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Os).unwrap();
    for i in 0..60 {
        let info = log.append(&mut batch(i, 4, 1_000), 0).unwrap();
        assert_eq!(info.durability, Durability::PageCache);
    }
    let segments = log.segment_count();
    assert!(segments > 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let index_files = || io.names().iter().filter(|n| n.ends_with(".index")).count();
    while index_files() < segments - 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "closed segments were never sealed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(log.durable_end() > 0, "sealing advanced the durable end");
    assert!(
        log.durable_end() < log.log_end(),
        "the active segment was not synced"
    );
    let sealed = log.durable_end();
    let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Os).unwrap();
    assert!(recovered.log_end() >= sealed);
    assert_eq!(recovered.recovery().segments_dropped, 0);
}

/// Blocks reserved ahead of the data read as zeros after a crash; recovery trims them without
/// calling it damage, and keeps every batch.
#[test]
fn reserved_blocks_are_not_mistaken_for_a_torn_tail() {
    let io = FaultyIo::new();
    let log = filled(&io, 3);
    let before = values(&log);
    let data = log.size_bytes() as usize;
    assert!(io.live_bytes("00000000000000000000.log").unwrap().len() > data);
    drop(log);
    let recovered = open(&io.crash(CrashMode::KeepPageCache), FlushPolicy::Always).unwrap();
    assert_eq!(recovered.recovery().bytes_truncated, 0);
    assert_eq!(recovered.recovery().truncation_reason, None);
    assert_eq!(values(&recovered), before);
}

/// A directory is locked while a log has it open; `close` releases it, so the broker can reopen
/// a partition (e.g. with a new config) while requests still hold the closed log, which refuses
/// them.
#[test]
fn close_releases_the_directory_lock_and_the_closed_log_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileLog::open(dir.path(), LogConfig::default()).unwrap();
    first.append(&mut batch(1, 1, 1), 0).unwrap();
    let busy = FileLog::open(dir.path(), LogConfig::default()).unwrap_err();
    assert!(busy.to_string().contains("in use"), "{busy}");
    first.close().unwrap();
    let second = FileLog::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(
        first.append(&mut batch(2, 1, 1), 0),
        Err(LogError::Closed)
    ));
    assert_eq!(
        second.append(&mut batch(3, 1, 1), 0).unwrap().base_offset,
        1
    );
    assert_eq!(read_all(&second, 0).len(), 2);
}

/// Pipelined appends (`write` several batches, then `wait_durable` once) share one fsync, and
/// the split keeps the promise: what `wait_durable` confirmed survives a power loss; what was
/// only written may vanish, but only as whole batches from the tail; and a failed fsync fails
/// the wait, so nothing is acknowledged that was not synced.
#[test]
fn pipelined_writes_are_durable_only_after_the_wait() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Always).unwrap();
    let syncs_before = io.file_syncs();
    let mut last = None;
    for i in 0..5 {
        let info = log.write(&mut batch(i, 2, 1_000), 0).unwrap();
        assert_eq!(info.durability, Durability::PageCache);
        assert_eq!(
            info.base_offset,
            i64::from(i) * 2,
            "offsets follow the write order"
        );
        last = Some(info);
    }
    assert_eq!(log.log_end(), 10, "written records are readable at once");
    assert_eq!(log.durable_end(), 0, "but not durable before the wait");
    let end = last.unwrap().last_offset + 1;
    assert_eq!(log.wait_durable(end).unwrap(), Durability::OnDisk);
    assert_eq!(io.file_syncs() - syncs_before, 1, "five writes, one fsync");
    assert_eq!(log.durable_end(), 10);
    let confirmed = values(&log);

    // Written but never waited for: may be lost in a power loss, whole batches only.
    log.write(&mut batch(50, 3, 1_000), 0).unwrap();
    let image = io.crash(CrashMode::DropUnsynced);
    let recovered = open(&image, FlushPolicy::Always).unwrap();
    assert_eq!(values(&recovered), confirmed);

    // A failed fsync fails the wait: the written batch must not be acknowledged.
    let info = recovered.write(&mut batch(60, 1, 1_000), 0).unwrap();
    image.fail_sync_after(1);
    let err = recovered.wait_durable(info.last_offset + 1);
    assert!(matches!(err, Err(LogError::Failed { .. })), "got {err:?}");
    assert!(recovered.write(&mut batch(61, 1, 1_000), 0).is_err());
}

/// A wait for records that a truncation cut fails with `Truncated` instead of syncing forever
/// toward an end the log no longer reaches; so does the interval flusher's, which then goes on.
#[test]
fn waiting_for_truncated_records_fails_instead_of_hanging() {
    let io = FaultyIo::new();
    let log = Arc::new(open(&io, FlushPolicy::Always).unwrap());
    log.append(&mut batch(0, 2, 1_000), 0).unwrap();
    let info = log.write(&mut batch(1, 3, 1_000), 0).unwrap();
    assert_eq!(log.truncate_to(2).unwrap(), 2);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let log = log.clone();
        std::thread::spawn(move || tx.send(log.wait_durable(info.last_offset + 1)))
    };
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("wait_durable for truncated records hung");
    waiter.join().unwrap().unwrap();
    assert!(matches!(result, Err(LogError::Truncated)), "got {result:?}");
    // The log itself is fine: appends go on at the cut.
    let next = log.append(&mut batch(2, 1, 1_000), 0).unwrap();
    assert_eq!(next.base_offset, 2);
    assert_eq!(next.durability, Durability::OnDisk);
}

/// Waits (at most 10 s) until `n` fsyncs hang at `io`'s gate.
fn until_hung(io: &FaultyIo, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while io.hung_syncs() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no fsync reached the hung disk"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An fsync that never returns (a hung disk) fails the log once it has run `sync_timeout`:
/// every append waiting for that round fails, naming the file and the limit, every later one
/// fails at once, and when the hung fsync finally returns `Ok` the log does not go back on
/// it — nothing more is reported durable, no clean shutdown is claimed. What was acknowledged
/// before survives a power cut.
#[test]
fn a_hung_fsync_fails_the_log_and_its_late_success_is_never_believed() {
    let io = FaultyIo::new();
    let log = Arc::new(
        open_configured(
            &io,
            LogConfig {
                sync_timeout: Duration::from_millis(200),
                ..config(FlushPolicy::Always)
            },
        )
        .unwrap(),
    );
    for i in 0..3 {
        log.append(&mut batch(i, 2, 1_000), 0).unwrap();
    }
    let acknowledged = values(&*log);
    let durable = log.durable_end();
    io.hang_syncs();
    let (tx, rx) = std::sync::mpsc::channel();
    // The first appender becomes the syncer and hangs in fdatasync.
    let syncer = {
        let log = log.clone();
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(("syncer", log.append(&mut batch(100, 2, 1_000), 0))))
    };
    until_hung(&io, 1);
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                tx.send(("waiter", log.append(&mut batch(101 + i, 2, 1_000), 0)))
            })
        })
        .collect();
    for _ in 0..4 {
        let (who, result) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an append waiting for a hung fsync must not hang");
        assert_eq!(who, "waiter", "the hung syncer cannot return");
        let Err(LogError::Failed { reason }) = result else {
            panic!("a waiter got {result:?}");
        };
        assert!(
            reason.contains("fdatasync of 00000000000000000000.log")
                && reason.contains("has not returned within 200ms"),
            "the reason names the file and the limit: {reason}"
        );
    }
    for w in waiters {
        w.join().unwrap().unwrap();
    }
    assert!(matches!(
        log.append(&mut batch(200, 1, 1_000), 0),
        Err(LogError::Failed { .. })
    ));
    assert!(log.check_health().is_err());
    assert_eq!(log.durable_end(), durable);

    // The disk comes back and the hung fsync returns Ok: still failed, nothing more durable.
    io.release_syncs();
    let (_, result) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the released syncer returns");
    syncer.join().unwrap().unwrap();
    assert!(
        matches!(result, Err(LogError::Failed { .. })),
        "the syncer's late success is not believed: {result:?}"
    );
    assert_eq!(log.durable_end(), durable);
    assert!(log.flush().is_err());
    assert!(log.append(&mut batch(201, 1, 1_000), 0).is_err());
    assert!(
        log.close().is_err(),
        "a failed log does not claim a clean shutdown"
    );
    let recovered = open(&io.crash(CrashMode::DropUnsynced), FlushPolicy::Always).unwrap();
    assert!(!recovered.recovery().clean);
    assert_eq!(values(&recovered)[..acknowledged.len()], acknowledged[..]);
}

/// With no append waiting for the round (the only appender is the one stuck in the fsync, or
/// the flush policy waits for no fsync at all), the hung fsync is still noticed: by
/// `check_health`, by the next write, and under `interval` by the next append's wait.
#[test]
fn a_hung_fsync_is_noticed_without_a_waiter() {
    for flush in [
        FlushPolicy::Always,
        FlushPolicy::Interval(Duration::from_millis(5)),
    ] {
        let io = FaultyIo::new();
        let log = Arc::new(
            open_configured(
                &io,
                LogConfig {
                    sync_timeout: Duration::from_millis(100),
                    ..config(flush)
                },
            )
            .unwrap(),
        );
        log.append(&mut batch(0, 2, 1_000), 0).unwrap();
        io.hang_syncs();
        let stuck = {
            let log = log.clone();
            std::thread::spawn(move || log.append(&mut batch(1, 2, 1_000), 0))
        };
        until_hung(&io, 1);
        std::thread::sleep(Duration::from_millis(150));
        let err = log.check_health().unwrap_err();
        assert!(
            err.to_string().contains("has not returned within 100ms"),
            "{flush}: {err}"
        );
        assert!(log.append(&mut batch(2, 1, 1_000), 0).is_err(), "{flush}");
        io.release_syncs();
        let late = stuck.join().unwrap();
        if flush == FlushPolicy::Always {
            assert!(
                late.is_err(),
                "{flush}: the hung append is not acknowledged"
            );
        }
        assert!(log.flush().is_err(), "{flush}");
    }
}
