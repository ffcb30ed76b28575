//! Sequential read throughput of [`FileLog`].
//!
//! Fills a log (flush policy `os`, then one `flush`) with about 256 MiB of 16-record batches of
//! 1 KiB values, then measures `log_read/sequential_1MiB`: one iteration is a full scan from the
//! earliest offset to the log end with `read(offset, 1 MiB)`, each read continuing at the
//! previous one's `next_offset`. Throughput is the log's size per scan, so criterion prints the
//! read rate. The segment is in the page cache (it was just written): this measures the log's
//! read path (index lookup, header walk, copy, CRC check), not the disk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use staunch_benches::{Timings, batch, bench_dir, mb_per_second, measuring, per_second};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogStore};

const LOG_BYTES: u64 = 256 << 20;
const READ_BYTES: usize = 1 << 20;
const RECORDS_PER_BATCH: usize = 16;
const SAMPLES: usize = 10;
const ID: &str = "log_read/sequential_1MiB";

/// Reads the whole log in `READ_BYTES` steps; returns (bytes read, reads).
fn scan(log: &FileLog) -> (u64, u64) {
    let (mut offset, end) = (log.earliest(), log.log_end());
    let (mut bytes, mut reads) = (0, 0);
    while offset < end {
        let read = log.read(offset, READ_BYTES).expect("read");
        assert!(
            read.next_offset > offset,
            "read at {offset} made no progress"
        );
        bytes += read.bytes.len() as u64;
        reads += 1;
        offset = read.next_offset;
        black_box(read.bytes);
    }
    (bytes, reads)
}

fn main() {
    let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let log = FileLog::open(dir.path(), config).expect("opening the bench log");

    let fill = Instant::now();
    let mut bytes = batch(RECORDS_PER_BATCH);
    let mut size = 0;
    while size < LOG_BYTES {
        log.append(&mut bytes, 0).expect("filling the log");
        size += bytes.len() as u64;
    }
    log.flush().expect("flushing the filled log");
    assert_eq!(size, log.size_bytes());
    eprintln!(
        "filled {} MiB ({} records, {} segment(s)) in {:.1?}",
        size >> 20,
        log.log_end(),
        log.segment_count(),
        fill.elapsed()
    );

    let timings = Timings::default();
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("log_read");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(size));
    let mut reads_per_scan = 0;
    group.bench_function("sequential_1MiB", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (read, reads) = scan(&log);
                assert_eq!(
                    read, size,
                    "a full scan returned a different number of bytes"
                );
                reads_per_scan = reads;
            }
            let elapsed = start.elapsed();
            timings.record(ID, iters, elapsed);
            elapsed
        });
    });
    group.finish();
    c.final_summary();
    log.close().expect("closing the bench log");

    if let Some(per_scan) = timings.per_iter(ID, SAMPLES).filter(|_| measuring()) {
        println!();
        println!("=== FileLog sequential read (1 MiB reads, page cache warm) ===");
        println!("log size:        {size} bytes ({} MiB)", size >> 20);
        println!("scan time:       {per_scan:.1?}");
        println!(
            "read throughput: {:.1} MB/s",
            mb_per_second(size as f64, per_scan)
        );
        println!(
            "reads:           {:.0} reads/s, {} per scan, {:.0} bytes on average",
            per_second(reads_per_scan as f64, per_scan),
            reads_per_scan,
            size as f64 / reads_per_scan as f64
        );
    }
}
