//! Append throughput of [`FileLog`] per flush policy, batch size and number of appenders,
//! against the physical baseline of one thread doing `write` + `fdatasync`.
//!
//! - `append_<policy>/batch_<records>/appenders_<n>`: `n` threads share one fresh log; each
//!   builds its batch of `records` 1 KiB-value records (outside the timed part) and appends it
//!   over and over (`append`
//!   rewrites only the base offset and leader epoch, outside the CRC, so the same buffer stays
//!   a valid batch). One iteration is one append; with `n` threads each does `iters / n` of
//!   them and the wall time from a common start to the last one finishing is measured, so
//!   criterion's records/s is the aggregate rate.
//! - `baseline_write_fdatasync/batch_<records>/writers_1`: one thread appending a buffer of the
//!   same byte size to a plain file with `write_all` + `sync_data` (`fdatasync`), i.e. what
//!   `always` would cost without group commit.
//!
//! - `baseline_write_pagecache/batch_<records>/writers_1`: one thread appending the same buffer
//!   with plain `write_all` and no fsync: what `os` would cost with no log at all, i.e. the
//!   page-cache bandwidth of the machine.
//!
//! Each batch size's fsync baseline runs right before its `always` cases, then `interval:100ms`
//! follows, then each page-cache baseline right before its `os` cases. After criterion's report a table prints records/s and MB/s (batch bytes, 10^6 B) of every
//! case, and the ratio of `always` throughput to the baseline per batch size.

use std::fs::File;
use std::io::Write;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use staunch_benches::{Timings, batch, bench_dir, mb_per_second, measuring, per_second};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogStore};

/// Records per batch.
const BATCH_RECORDS: [usize; 3] = [1, 16, 256];
/// Concurrent appender threads sharing one log.
const APPENDERS: [usize; 2] = [1, 8];
/// Criterion samples per case (flat sampling: every sample runs the same number of appends).
const SAMPLES: usize = 20;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASUREMENT: Duration = Duration::from_secs(2);

/// The policies, with a name usable in a criterion id.
fn policies() -> [(&'static str, FlushPolicy); 3] {
    [
        ("always", FlushPolicy::Always),
        (
            "interval_100ms",
            FlushPolicy::Interval(Duration::from_millis(100)),
        ),
        ("os", FlushPolicy::Os),
    ]
}

fn append_id(policy: &str, records: usize, appenders: usize) -> String {
    format!("append_{policy}/batch_{records}/appenders_{appenders}")
}

fn baseline_id(records: usize) -> String {
    format!("baseline_write_fdatasync/batch_{records}/writers_1")
}

fn pagecache_id(records: usize) -> String {
    format!("baseline_write_pagecache/batch_{records}/writers_1")
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT);
}

/// Plain `write` (+ `fdatasync` if `sync`) of one batch-sized buffer per iteration, one thread.
fn bench_baseline(c: &mut Criterion, timings: &Timings, records: usize, sync: bool) {
    let (group_name, key) = if sync {
        ("baseline_write_fdatasync", baseline_id(records))
    } else {
        ("baseline_write_pagecache", pagecache_id(records))
    };
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    let bytes = batch(records);
    let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let file = File::create(dir.path().join("baseline.log")).expect("creating the baseline file");
    group.throughput(Throughput::Elements(records as u64));
    group.bench_function(
        BenchmarkId::new(format!("batch_{records}"), "writers_1"),
        |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    (&file).write_all(&bytes).expect("baseline write");
                    if sync {
                        file.sync_data().expect("baseline fdatasync");
                    }
                }
                let elapsed = start.elapsed();
                timings.record(&key, iters, elapsed);
                elapsed
            });
        },
    );
    group.finish();
}

/// `records`-record batches under one flush policy, 1 and 8 appenders, each on a fresh log.
fn bench_policy(
    c: &mut Criterion,
    timings: &Timings,
    name: &str,
    policy: FlushPolicy,
    records: usize,
) {
    let mut group = c.benchmark_group(format!("append_{name}"));
    configure(&mut group);
    group.throughput(Throughput::Elements(records as u64));
    for appenders in APPENDERS {
        let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));
        let config = LogConfig {
            flush: policy,
            ..LogConfig::default()
        };
        let log = FileLog::open(dir.path(), config).expect("opening the bench log");
        let key = append_id(name, records, appenders);
        let id = BenchmarkId::new(format!("batch_{records}"), format!("appenders_{appenders}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let elapsed = append_concurrently(&log, records, appenders, iters);
                timings.record(&key, iters, elapsed);
                elapsed
            });
        });
        log.close().expect("closing the bench log");
        // Dropping `dir` deletes the segments (and any dirty pages with them), so one case's
        // writeback does not slow the next.
    }
    group.finish();
}

/// Runs `iters` appends of `records`-record batches spread over `appenders` threads and returns
/// the wall time from the common start to the last append's return.
fn append_concurrently(log: &FileLog, records: usize, appenders: usize, iters: u64) -> Duration {
    if appenders == 1 {
        let mut bytes = batch(records);
        let start = Instant::now();
        append_n(log, &mut bytes, iters);
        return start.elapsed();
    }
    let start_line = Barrier::new(appenders + 1);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..appenders as u64)
            .map(|i| {
                // Thread i does iters / appenders, plus one of the remainder if i is below it.
                let n = iters / appenders as u64 + u64::from(i < iters % appenders as u64);
                let start_line = &start_line;
                s.spawn(move || {
                    let mut bytes = batch(records);
                    start_line.wait();
                    append_n(log, &mut bytes, n);
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        for t in threads {
            t.join().expect("an appender thread panicked");
        }
        start.elapsed()
    })
}

fn append_n(log: &FileLog, bytes: &mut [u8], n: u64) {
    for _ in 0..n {
        log.append(bytes, 0).expect("append");
    }
}

/// Records/s of `id` from this run's measurements.
fn records_per_second(timings: &Timings, id: &str, records: usize) -> Option<f64> {
    timings
        .per_iter(id, SAMPLES)
        .map(|t| per_second(records as f64, t))
}

fn fmt_opt(v: Option<f64>, width: usize, decimals: usize) -> String {
    v.map_or_else(
        || format!("{:>width$}", "-"),
        |v| format!("{v:>width$.decimals$}"),
    )
}

fn print_summary(timings: &Timings) {
    if timings.is_empty() || !measuring() {
        return;
    }
    let batch_bytes: Vec<usize> = BATCH_RECORDS.iter().map(|&r| batch(r).len()).collect();
    println!();
    println!(
        "=== FileLog append throughput (1 KiB values; mean over criterion's {SAMPLES} samples) ==="
    );
    println!(
        "{:<16} {:>6} {:>11} {:>10} {:>13} {:>10} {:>12}",
        "policy", "batch", "batch bytes", "appenders", "records/s", "MB/s", "appends/s"
    );
    for (name, policy) in policies() {
        for (&records, &bytes) in BATCH_RECORDS.iter().zip(&batch_bytes) {
            for appenders in APPENDERS {
                let per_iter = timings.per_iter(&append_id(name, records, appenders), SAMPLES);
                println!(
                    "{:<16} {:>6} {:>11} {:>10} {} {} {}",
                    policy.to_string(),
                    records,
                    bytes,
                    appenders,
                    fmt_opt(per_iter.map(|t| per_second(records as f64, t)), 13, 0),
                    fmt_opt(per_iter.map(|t| mb_per_second(bytes as f64, t)), 10, 1),
                    fmt_opt(per_iter.map(|t| per_second(1.0, t)), 12, 0),
                );
            }
        }
    }

    println!();
    println!("=== Baseline: one thread, write + fdatasync of a batch-sized buffer ===");
    println!(
        "{:>6} {:>11} {:>13} {:>10} {:>12} {:>14}",
        "batch", "batch bytes", "records/s", "MB/s", "fsyncs/s", "fsync+write"
    );
    for (&records, &bytes) in BATCH_RECORDS.iter().zip(&batch_bytes) {
        let per_iter = timings.per_iter(&baseline_id(records), SAMPLES);
        println!(
            "{:>6} {:>11} {} {} {} {:>14}",
            records,
            bytes,
            fmt_opt(per_iter.map(|t| per_second(records as f64, t)), 13, 0),
            fmt_opt(per_iter.map(|t| mb_per_second(bytes as f64, t)), 10, 1),
            fmt_opt(per_iter.map(|t| per_second(1.0, t)), 12, 0),
            per_iter.map_or_else(|| "-".into(), |t| format!("{t:.1?}")),
        );
    }

    println!();
    println!(
        "=== Ratio: FileLog `always` records/s / baseline (1 writer, write + fdatasync) records/s ==="
    );
    println!("{:>6} {:>13} {:>13}", "batch", "1 appender", "8 appenders");
    for records in BATCH_RECORDS {
        let baseline = records_per_second(timings, &baseline_id(records), records);
        let ratio = |appenders| {
            let log =
                records_per_second(timings, &append_id("always", records, appenders), records)?;
            Some(log / baseline?)
        };
        println!(
            "{:>6} {} {}",
            records,
            fmt_opt(ratio(1), 12, 2) + "x",
            fmt_opt(ratio(8), 12, 2) + "x"
        );
    }

    println!();
    println!("=== flush os against plain buffered writes (page-cache bandwidth) ===");
    println!(
        "{:>6} {:>16} {:>13} {:>13} {:>11} {:>11}",
        "batch", "plain write MB/s", "os 1 MB/s", "os 8 MB/s", "ratio 1", "ratio 8"
    );
    for (&records, &bytes) in BATCH_RECORDS.iter().zip(&batch_bytes) {
        let mb = |id: &str| {
            timings
                .per_iter(id, SAMPLES)
                .map(|t| mb_per_second(bytes as f64, t))
        };
        let plain = mb(&pagecache_id(records));
        let one = mb(&append_id("os", records, 1));
        let eight = mb(&append_id("os", records, 8));
        let ratio = |v: Option<f64>| Some(v? / plain?);
        println!(
            "{:>6} {} {} {} {} {}",
            records,
            fmt_opt(plain, 16, 1),
            fmt_opt(one, 13, 1),
            fmt_opt(eight, 13, 1),
            fmt_opt(ratio(one), 10, 2) + "x",
            fmt_opt(ratio(eight), 10, 2) + "x",
        );
    }
}

fn main() {
    let timings = Timings::default();
    let mut c = Criterion::default().configure_from_args();
    // fsync latency drifts with whatever else the machine writes (another process's writeback
    // can make it ten times slower), so each batch size's baseline runs right before its
    // `always` cases: the ratio compares runs made under the same conditions.
    for records in BATCH_RECORDS {
        bench_baseline(&mut c, &timings, records, true);
        bench_policy(&mut c, &timings, "always", FlushPolicy::Always, records);
    }
    let interval = FlushPolicy::Interval(Duration::from_millis(100));
    for records in BATCH_RECORDS {
        bench_policy(&mut c, &timings, "interval_100ms", interval, records);
    }
    // Page-cache bandwidth drifts with the kernel's writeback of earlier cases, so the plain
    // write baseline runs right before the `os` cases it is compared with.
    for records in BATCH_RECORDS {
        bench_baseline(&mut c, &timings, records, false);
        bench_policy(&mut c, &timings, "os", FlushPolicy::Os, records);
    }
    c.final_summary();
    print_summary(&timings);
}
