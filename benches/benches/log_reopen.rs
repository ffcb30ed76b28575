//! Time to open a 1 GiB [`FileLog`] after a clean shutdown and after a crash.
//!
//! The log is built once: 16-record batches of 1 KiB values (flush policy `os`) up to just under
//! 1 GiB, so with the default 1 GiB segments it is one active segment — the worst case for
//! crash recovery, which scans only the active segment. Then `flush()` and `close()`.
//!
//! - `log_reopen/clean_shutdown`: `close()` left the clean-shutdown marker, so open trusts it and
//!   scans nothing. Opening removes the marker, so every iteration opens (timed) and then closes
//!   again (not timed) to write a fresh marker.
//! - `log_reopen/after_crash`: the log is dropped without `close()`, which leaves no marker, so
//!   open scans the whole active segment (framing, CRC-32C, offsets). Every iteration opens
//!   (timed) and drops (not timed). The segment is in the page cache (as after a process crash,
//!   not after a power loss), so this measures the scan, not the disk.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use staunch_benches::{Timings, batch, bench_dir, mb_per_second, measuring};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogStore};

const LOG_BYTES: u64 = 1 << 30;
const RECORDS_PER_BATCH: usize = 16;
const SAMPLES: usize = 10;
const CLEAN: &str = "log_reopen/clean_shutdown";
const CRASH: &str = "log_reopen/after_crash";

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

fn main() {
    let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));

    let build = Instant::now();
    let log = FileLog::open(dir.path(), config()).expect("opening the bench log");
    let mut bytes = batch(RECORDS_PER_BATCH);
    let mut size = 0;
    while size + bytes.len() as u64 <= LOG_BYTES {
        log.append(&mut bytes, 0).expect("filling the log");
        size += bytes.len() as u64;
    }
    log.flush().expect("flushing the filled log");
    let (records, segments) = (log.log_end(), log.segment_count());
    assert_eq!(size, log.size_bytes());
    log.close().expect("closing the filled log");
    drop(log);
    eprintln!(
        "built {size} bytes ({records} records, {segments} segment(s)) in {:.1?}",
        build.elapsed()
    );

    let timings = Timings::default();
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("log_reopen");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    group.bench_function("clean_shutdown", |b| {
        b.iter_custom(|iters| {
            let mut opening = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log =
                    FileLog::open(dir.path(), config()).expect("opening after a clean shutdown");
                opening += start.elapsed();
                let recovery = log.recovery();
                assert!(
                    recovery.clean && recovery.segments_scanned == 0,
                    "not a clean open: {recovery:?}"
                );
                assert_eq!(log.log_end(), records);
                log.close().expect("closing");
            }
            timings.record(CLEAN, iters, opening);
            opening
        });
    });

    // Whatever ran last left a clean-shutdown marker (the build's close, or the clean case's);
    // one open that is dropped without close removes it, so every open below is a crash open.
    drop(FileLog::open(dir.path(), config()).expect("opening to remove the marker"));

    group.throughput(Throughput::Bytes(size));
    group.bench_function("after_crash", |b| {
        b.iter_custom(|iters| {
            let mut opening = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = FileLog::open(dir.path(), config()).expect("opening after a crash");
                opening += start.elapsed();
                let recovery = log.recovery();
                assert!(
                    !recovery.clean
                        && recovery.segments_scanned == 1
                        && recovery.bytes_truncated == 0,
                    "unexpected recovery after a crash: {recovery:?}"
                );
                assert_eq!(log.log_end(), records);
                drop(log); // no close: no marker, the next open scans again
            }
            timings.record(CRASH, iters, opening);
            opening
        });
    });
    group.finish();
    c.final_summary();

    if timings.is_empty() || !measuring() {
        return;
    }
    let ms = |id| {
        timings.per_iter(id, SAMPLES).map_or_else(
            || "-".to_owned(),
            |t| format!("{:.2} ms", t.as_secs_f64() * 1e3),
        )
    };
    println!();
    println!(
        "=== FileLog::open of a {size}-byte log ({records} records, {segments} segment(s)) ==="
    );
    println!("after clean shutdown (open only):  {}", ms(CLEAN));
    println!("after crash (open, scans segment): {}", ms(CRASH));
    if let Some(t) = timings.per_iter(CRASH, SAMPLES) {
        println!(
            "crash recovery scan rate:          {:.0} MB/s",
            mb_per_second(size as f64, t)
        );
    }
}
