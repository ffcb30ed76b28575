//! Many logs on one [`BackgroundPool`] cost the pool's few threads, not one each, and every
//! log's background work still happens: sealing closed segments (`os`, `interval`), interval
//! flushes, recovery points. Alone in its test binary, so the threads it counts by name are the
//! pool's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use staunch_core::SystemClock;
use staunch_log::{BackgroundPool, FileLog, FlushPolicy, LogConfig, LogStore};
use staunch_testkit::FaultyIo;
use staunch_testkit::log_store_suite::batch;

/// Names of this process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_owned())
        .filter(|comm| comm.starts_with(prefix))
        .collect()
}

/// Waits (at most 20 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_hundred_logs_share_the_pools_threads_and_all_their_work_happens() {
    const LOGS: usize = 200;
    const THREADS: usize = 4;
    assert!(threads_named("staunch-bg").is_empty(), "no pool yet");
    let pool = BackgroundPool::new(THREADS);
    let logs: Vec<(FaultyIo, FileLog)> = (0..LOGS)
        .map(|i| {
            let flush = match i % 3 {
                0 => FlushPolicy::Always,
                1 => FlushPolicy::Interval(Duration::from_millis(20)),
                _ => FlushPolicy::Os,
            };
            let config = LogConfig {
                flush,
                segment_bytes: 2048,
                max_batch_bytes: 2048,
                zero_fill_bytes: 16 * 1024,
                checkpoint_interval: Duration::from_millis(50),
                ..LogConfig::default()
            };
            let io = FaultyIo::new();
            let log =
                FileLog::open_with_pool(Arc::new(io.clone()), config, Arc::new(SystemClock), &pool)
                    .unwrap();
            (io, log)
        })
        .collect();
    // Keep every worker busy: logs whose interval flush hangs (a stuck disk, well within
    // their 30 s sync_timeout) hold the workers while the other logs' work queues up. The
    // pool must not grow for it.
    let stuck: Vec<(FaultyIo, FileLog)> = (0..2 * THREADS)
        .map(|_| {
            let io = FaultyIo::new();
            let config = LogConfig {
                flush: FlushPolicy::Interval(Duration::from_millis(1)),
                segment_bytes: 2048,
                max_batch_bytes: 2048,
                ..LogConfig::default()
            };
            let log =
                FileLog::open_with_pool(Arc::new(io.clone()), config, Arc::new(SystemClock), &pool)
                    .unwrap();
            io.hang_syncs();
            log.append(&mut batch(0, 1, 1_000), 0).unwrap();
            (io, log)
        })
        .collect();
    eventually("every worker is stuck", || {
        stuck.iter().map(|(io, _)| io.hung_syncs()).sum::<usize>() == THREADS
    });
    for (i, (_, log)) in logs.iter().enumerate() {
        // `always` logs get one batch and never roll: only the checkpoint deadline records
        // their recovery point. The others roll a few times: their closed segments are
        // sealed by the pool.
        let batches = if i % 3 == 0 { 1 } else { 30 };
        for b in 0..batches {
            log.append(&mut batch(b, 8, 1_000), 0).unwrap();
        }
    }
    let busy = threads_named("staunch-bg");
    assert!(
        busy.iter().filter(|t| *t == "staunch-bg").count() == THREADS && busy.len() == THREADS + 1,
        "with every worker stuck and work queued, the pool stays at {THREADS} workers: {busy:?}"
    );
    for (io, _) in &stuck {
        io.release_syncs();
    }
    let rolled = logs
        .iter()
        .enumerate()
        .filter(|(i, (_, log))| i % 3 != 0 && log.segment_count() > 2)
        .count();
    assert_eq!(rolled, LOGS - LOGS.div_ceil(3), "the test's logs roll");

    for (i, (io, log)) in logs.iter().enumerate() {
        eventually(&format!("log {i}'s closed segments are sealed"), || {
            let indexes = io.names().iter().filter(|n| n.ends_with(".index")).count();
            indexes == log.segment_count() - 1
        });
        eventually(&format!("log {i}'s recovery point is recorded"), || {
            io.live_bytes("recovery-point").is_some()
        });
        if i % 3 == 1 {
            eventually(&format!("interval log {i} is flushed"), || {
                log.durable_end() == log.log_end()
            });
        }
    }
    let threads = threads_named("staunch-bg");
    let workers = threads.iter().filter(|t| *t == "staunch-bg").count();
    assert!(
        workers <= THREADS && threads.len() <= THREADS + 1,
        "{LOGS} logs on a pool of {THREADS}: threads {threads:?}"
    );
    assert!(workers >= 1, "the pool did the work: {threads:?}");
    assert!(
        pool.zero_fill_reserved() <= pool.config().zero_fill_budget,
        "within the budget"
    );
    for (_, log) in logs.iter().chain(&stuck) {
        log.close().unwrap();
    }
    assert_eq!(pool.zero_fill_reserved(), 0, "closed logs hold no zeros");
}
