//! The [`BackgroundPool`] shared by many logs: its zero-fill budget bounds the disk all its
//! logs hold in zeros ahead of their data; `close` cancels a log's queued work; a log whose
//! background fsync fails or hangs is failed and the other logs of the pool keep working.
//! (Thread counts are in `pool_threads.rs`, alone in its binary.)

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use staunch_core::SystemClock;
use staunch_log::{
    BackgroundPool, Durability, FileLog, FlushPolicy, FsSegmentIo, LogConfig, LogError, LogStore,
    PoolConfig, SegmentIo,
};
use staunch_testkit::FaultyIo;
use staunch_testkit::log_store_suite::{batch, read_all};

/// Waits (at most 20 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn open(io: Arc<dyn SegmentIo>, config: LogConfig, pool: &BackgroundPool) -> FileLog {
    FileLog::open_with_pool(io, config, Arc::new(SystemClock), pool).unwrap()
}

/// Small segments that roll every few batches; no zero-filling.
fn small(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        segment_bytes: 2048,
        max_batch_bytes: 2048,
        zero_fill_bytes: 0,
        ..LogConfig::default()
    }
}

/// Appends to `log` until it has rolled (under `os` / `interval` the closed segment then waits
/// for the pool to seal it).
fn append_until_rolled(log: &FileLog) {
    let mut tag = 0;
    while log.segment_count() < 2 {
        log.append(&mut batch(tag, 8, 1_000), 0).unwrap();
        tag += 1;
    }
}

fn sealed(io: &FaultyIo) -> usize {
    io.names().iter().filter(|n| n.ends_with(".index")).count()
}

/// Waits (at most 10 s) until `n` fsyncs hang at `io`'s gate.
fn until_hung(io: &FaultyIo, n: usize) {
    eventually("an fsync hangs", || io.hung_syncs() >= n);
}

/// Disk blocks (bytes) that the `.log` files under `dir` hold.
fn segment_blocks(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            total += segment_blocks(&path);
        } else if path.extension().is_some_and(|e| e == "log") {
            total += std::fs::metadata(&path).unwrap().blocks() * 512;
        }
    }
    total
}

/// Forty logs written once each, zero-filling 1 MiB ahead under a 3 MiB budget: the zeros all
/// of them hold on a real file system stay within the budget (without it they would hold
/// 30 MiB), every append is durable whether its log got zeros or not, logs idle for
/// `zero_fill_idle` trim theirs and give the budget back, and a log written again then gets
/// zeros again.
#[test]
fn the_zero_fill_budget_bounds_the_disk_held_in_zeros() {
    const LOGS: usize = 40;
    const BUDGET: u64 = 3 << 20;
    let dir = tempfile::tempdir().unwrap();
    let pool = BackgroundPool::with_config(PoolConfig {
        threads: 2,
        zero_fill_budget: BUDGET,
        zero_fill_idle: Duration::from_secs(2),
    });
    let config = LogConfig {
        zero_fill_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let logs: Vec<FileLog> = (0..LOGS)
        .map(|i| {
            let io = FsSegmentIo::open(dir.path().join(format!("p{i}"))).unwrap();
            open(Arc::new(io), config.clone(), &pool)
        })
        .collect();
    for log in &logs {
        let info = log.append(&mut batch(1, 2, 1_000), 0).unwrap();
        assert_eq!(info.durability, Durability::OnDisk);
    }
    // Each zero-filling log holds three 256 KiB chunks: four of them exhaust the budget.
    eventually("the budget is spent", || {
        pool.zero_fill_reserved() == BUDGET
    });
    let data: u64 = logs.iter().map(|l| l.size_bytes()).sum();
    let held = segment_blocks(dir.path());
    let block_slack = LOGS as u64 * 8192;
    assert!(
        held <= data + BUDGET + block_slack,
        "{held} bytes of segment blocks for {data} bytes of data and a {BUDGET}-byte budget"
    );
    assert!(
        held >= BUDGET,
        "the zeros are really on disk: {held} bytes of segment blocks"
    );
    // Logs written once: the zeros came after their only write.
    eventually("idle logs give their zeros back", || {
        pool.zero_fill_reserved() == 0
    });
    let held = segment_blocks(dir.path());
    assert!(
        held <= data * 2 + block_slack,
        "idle logs trimmed their zeros: {held} bytes of segment blocks"
    );
    // A log written again is a recently written one: it gets zeros again.
    for tag in 3..8 {
        logs[LOGS - 1].append(&mut batch(tag, 2, 1_000), 0).unwrap();
    }
    eventually("the written log zero-fills again", || {
        pool.zero_fill_reserved() > 0
    });
    let expected: Vec<_> = logs.iter().map(|l| read_all(l, 0)).collect();
    for log in &logs {
        log.close().unwrap();
    }
    assert_eq!(pool.zero_fill_reserved(), 0, "closed logs hold no budget");
    drop(logs);
    for (i, records) in expected.iter().enumerate() {
        let io = FsSegmentIo::open(dir.path().join(format!("p{i}"))).unwrap();
        let log = open(Arc::new(io), config.clone(), &pool);
        assert!(log.recovery().clean);
        assert_eq!(&read_all(&log, 0), records, "log {i}");
        log.close().unwrap();
    }
}

/// `close` cancels the log's queued work: with the pool's one worker stuck in another log's
/// hung fsync, a log whose sealing is queued closes at once (sealing by itself), and the queued
/// job never runs afterwards, not even once the worker is free again.
/// A log that does not zero-fill (flush `os` here) reserves blocks ahead of its data
/// (preallocation) only within the same budget: two of forty logs get their 64 MiB, the rest
/// append without, and closing gives every byte back.
#[test]
fn preallocation_takes_from_the_same_budget() {
    const LOGS: usize = 40;
    const STEP: u64 = 64 << 20;
    const BUDGET: u64 = 2 * STEP + (1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let pool = BackgroundPool::with_config(PoolConfig {
        threads: 2,
        zero_fill_budget: BUDGET,
        zero_fill_idle: Duration::from_secs(3600),
    });
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let logs: Vec<FileLog> = (0..LOGS)
        .map(|i| {
            let io = FsSegmentIo::open(dir.path().join(format!("p{i}"))).unwrap();
            open(Arc::new(io), config.clone(), &pool)
        })
        .collect();
    for log in &logs {
        log.append(&mut batch(1, 2, 1_000), 0).unwrap();
    }
    assert_eq!(pool.zero_fill_reserved(), 2 * STEP);
    let data: u64 = logs.iter().map(|l| l.size_bytes()).sum();
    let held = segment_blocks(dir.path());
    let block_slack = LOGS as u64 * 8192;
    assert!(
        held <= data + BUDGET + block_slack,
        "{held} bytes of segment blocks for {data} bytes of data and a {BUDGET}-byte budget"
    );
    let expected: Vec<_> = logs.iter().map(|l| read_all(l, 0)).collect();
    for log in &logs {
        log.close().unwrap();
    }
    assert_eq!(pool.zero_fill_reserved(), 0, "closed logs hold no budget");
    assert!(segment_blocks(dir.path()) <= data + block_slack);
    drop(logs);
    for (i, records) in expected.iter().enumerate() {
        let io = FsSegmentIo::open(dir.path().join(format!("p{i}"))).unwrap();
        let log = open(Arc::new(io), config.clone(), &pool);
        assert_eq!(&read_all(&log, 0), records);
        log.close().unwrap();
    }
}

#[test]
fn close_cancels_the_logs_queued_work() {
    let pool = BackgroundPool::new(1);
    let stuck_io = FaultyIo::new();
    let stuck = open(
        Arc::new(stuck_io.clone()),
        LogConfig {
            // Long enough that the pool does not give up on the stuck worker during the test.
            sync_timeout: Duration::from_secs(120),
            ..small(FlushPolicy::Interval(Duration::from_millis(1)))
        },
        &pool,
    );
    stuck_io.hang_syncs();
    stuck.append(&mut batch(0, 2, 1_000), 0).unwrap();
    until_hung(&stuck_io, 1); // its interval flush, on the pool's worker

    let io = FaultyIo::new();
    let log = open(Arc::new(io.clone()), small(FlushPolicy::Os), &pool);
    append_until_rolled(&log);
    assert_eq!(sealed(&io), 0, "the seal waits for the busy worker");
    let started = Instant::now();
    log.close().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "close did not wait for the other log's job"
    );
    let syncs = io.file_syncs();
    let names = io.names();
    let started = pool.jobs_started();

    stuck_io.release_syncs();
    eventually("the stuck log's flush completes", || {
        stuck.durable_end() == stuck.log_end()
    });
    // The worker is free: one more job on the pool runs after the cancelled one would have.
    let other_io = FaultyIo::new();
    let other = open(Arc::new(other_io.clone()), small(FlushPolicy::Os), &pool);
    append_until_rolled(&other);
    eventually("the other log is sealed", || sealed(&other_io) == 1);
    // The queue is in order, so the closed log's job would have started before the other
    // log's one (its sealing). The stuck log's next deadline (its recovery point) is
    // `checkpoint_interval`, 10 s, away.
    assert_eq!(
        pool.jobs_started() - started,
        1,
        "only the other log's job ran"
    );
    assert_eq!(io.file_syncs(), syncs, "the closed log's job never ran");
    assert_eq!(io.names(), names);
    other.close().unwrap();
    let quiet = pool.jobs_started();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.jobs_started(), quiet, "no job of a closed log runs");
    stuck.close().unwrap();
}

/// A close while the log's own job hangs in an fsync returns once the fsync has overrun
/// `sync_timeout` (the log is then failed, and no clean shutdown is claimed) instead of
/// hanging with it.
#[test]
fn close_does_not_hang_on_its_logs_hung_job() {
    let pool = BackgroundPool::new(1);
    let io = FaultyIo::new();
    let log = open(
        Arc::new(io.clone()),
        LogConfig {
            sync_timeout: Duration::from_millis(200),
            ..small(FlushPolicy::Interval(Duration::from_millis(1)))
        },
        &pool,
    );
    io.hang_syncs();
    log.append(&mut batch(0, 2, 1_000), 0).unwrap();
    until_hung(&io, 1);
    let started = Instant::now();
    let result = log.close();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "close returned within about sync_timeout"
    );
    let Err(LogError::Failed { reason }) = result else {
        panic!("a close over a hung fsync fails: {result:?}");
    };
    assert!(reason.contains("has not returned within 200ms"), "{reason}");
    assert!(io.names().iter().all(|n| n != "clean-shutdown"));
    io.release_syncs();
}

/// A log whose sealing fsync fails is failed (its appends are refused, naming the fsync), does
/// no more background work, and the other logs on the same one-thread pool keep being sealed.
#[test]
fn a_failed_sealing_fsync_fails_that_log_only() {
    let pool = BackgroundPool::new(1);
    let bad_io = FaultyIo::new();
    let bad = open(Arc::new(bad_io.clone()), small(FlushPolicy::Os), &pool);
    // Under `os` the first file fsync is the pool's seal of the closed segment.
    bad_io.fail_sync_after(1);
    append_until_rolled(&bad);
    eventually("the failed seal fails the log", || {
        bad.check_health().is_err()
    });
    let err = bad.append(&mut batch(99, 2, 1_000), 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("fdatasync of closed segment 00000000000000000000.log failed"),
        "{err}"
    );
    assert_eq!(sealed(&bad_io), 0);

    for _ in 0..3 {
        let io = FaultyIo::new();
        let log = open(Arc::new(io.clone()), small(FlushPolicy::Os), &pool);
        append_until_rolled(&log);
        eventually("another log's closed segment is sealed", || {
            sealed(&io) == 1
        });
        log.close().unwrap();
    }
    assert!(bad.close().is_err());
}

/// One log's background fsync hangs for good on a one-thread pool: once it has run that log's
/// `sync_timeout` the log is failed and the pool goes on without the stuck thread, so other
/// logs' sealing, interval flushes and recovery points still happen while it hangs.
#[test]
fn a_hung_background_fsync_stalls_other_logs_for_at_most_its_sync_timeout() {
    let pool = BackgroundPool::new(1);
    let hung_io = FaultyIo::new();
    let hung = open(
        Arc::new(hung_io.clone()),
        LogConfig {
            sync_timeout: Duration::from_millis(300),
            ..small(FlushPolicy::Interval(Duration::from_millis(1)))
        },
        &pool,
    );
    hung_io.hang_syncs();
    hung.append(&mut batch(0, 2, 1_000), 0).unwrap();
    until_hung(&hung_io, 1);

    let io = FaultyIo::new();
    let log = open(
        Arc::new(io.clone()),
        LogConfig {
            checkpoint_interval: Duration::from_millis(10),
            ..small(FlushPolicy::Interval(Duration::from_millis(5)))
        },
        &pool,
    );
    append_until_rolled(&log);
    eventually("the other log is sealed", || sealed(&io) == 1);
    eventually("the other log is flushed", || {
        log.durable_end() == log.log_end()
    });
    eventually("the other log's recovery point is recorded", || {
        io.live_bytes("recovery-point").is_some()
    });
    assert_eq!(hung_io.hung_syncs(), 1, "still hung meanwhile");
    let err = hung.check_health().unwrap_err();
    assert!(
        err.to_string().contains("has not returned within 300ms"),
        "{err}"
    );
    log.close().unwrap();
    hung_io.release_syncs();
    assert!(hung.close().is_err());
}
