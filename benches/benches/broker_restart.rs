//! How long a broker takes to open, after a clean shutdown and after a crash, as its data grows.
//!
//! For each size in `STAUNCH_BENCH_GIB` (default `1,2`): a fresh data directory; one topic of
//! `STAUNCH_BENCH_PARTITIONS` partitions (default 200); 1 KiB records in batches of 64 from
//! `STAUNCH_BENCH_PRODUCERS` idempotent producers (default 10,000; producer ids, epochs and
//! sequences as a real producer sends them, so the broker keeps state for every one), written
//! under flush `os` (building the data is not what is measured). Then:
//!
//! - `clean`: `Broker::shutdown`, then `Broker::open` timed (3 samples, each followed by a clean
//!   shutdown);
//! - `after crash`: one more batch per partition, the broker dropped without shutdown (no
//!   clean-shutdown marker, as after kill -9: the page cache keeps the data), then
//!   `Broker::open` timed (3 samples, each dropped again without shutdown).
//!
//! Prints one line per size; the issue asks that neither time grow with the data.
//!
//! ```text
//! STAUNCH_BENCH_GIB=1,2,4 cargo bench --bench broker_restart
//! ```
//!
//! A benchmark, never a test: it prints numbers and asserts nothing about speed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use staunch_benches::bench_dir;
use staunch_broker::{Broker, BrokerConfig, ProducePartition};
use staunch_core::BatchBuilder;
use staunch_log::FlushPolicy;

const TOPIC: &str = "restart-bench";
const RECORDS_PER_BATCH: usize = 64;
const RECORD_BYTES: usize = 1024;
const SAMPLES: usize = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds batches the way idempotent producers send them: each (producer, partition) pair
/// continues its own sequence.
struct Producers {
    count: i64,
    next_seq: HashMap<(i64, i32), i32>,
    value: Vec<u8>,
}

impl Producers {
    /// One batch for each partition, numbered from `n` on: one request per round keeps every
    /// partition's sequences in order.
    fn round(&mut self, n: &mut u64, partitions: i32) -> Vec<ProducePartition> {
        (0..partitions)
            .map(|p| {
                let batch = self.batch(*n, p);
                *n += 1;
                batch
            })
            .collect()
    }

    fn batch(&mut self, n: u64, partition: i32) -> ProducePartition {
        let producer = 1_000 + (n as i64 % self.count);
        let seq = self.next_seq.entry((producer, partition)).or_insert(0);
        let mut builder = BatchBuilder::new(1_700_000_000_000).producer(producer, 0, *seq);
        for _ in 0..RECORDS_PER_BATCH {
            builder = builder.record(None, Some(&self.value));
        }
        *seq += RECORDS_PER_BATCH as i32;
        ProducePartition {
            topic: TOPIC.to_owned(),
            partition,
            records: BytesMut::from(&builder.build()[..]),
        }
    }
}

fn main() {
    let sizes: Vec<f64> = std::env::var("STAUNCH_BENCH_GIB")
        .unwrap_or_else(|_| "1,2".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let partitions: i32 = env_or("STAUNCH_BENCH_PARTITIONS", 200);
    let producers: i64 = env_or("STAUNCH_BENCH_PRODUCERS", 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "broker_restart: {partitions} partitions, {producers} idempotent producers, 1 KiB \
         records, {SAMPLES} samples each (median)"
    );
    for gib in sizes {
        let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            default_partitions: partitions,
            log: staunch_log::LogConfig {
                flush: FlushPolicy::Os,
                ..Default::default()
            },
            durability_floor: FlushPolicy::Os,
            ..BrokerConfig::default()
        };
        let mut builder = Producers {
            count: producers,
            next_seq: HashMap::new(),
            value: vec![b'x'; RECORD_BYTES],
        };
        let target = (gib * (1u64 << 30) as f64) as u64;
        let per_batch = (RECORDS_PER_BATCH * RECORD_BYTES) as u64;
        let batches = target / per_batch;
        let build = Instant::now();
        let broker = Broker::open(config.clone()).expect("opening the bench broker");
        let mut n = 0u64;
        while n < batches {
            for result in runtime.block_on(broker.produce(-1, builder.round(&mut n, partitions))) {
                assert_eq!(result.error, staunch_core::ErrorCode::None, "{result:?}");
            }
        }
        runtime.block_on(broker.shutdown());
        drop(broker);
        let built = build.elapsed();

        let clean = median((0..SAMPLES).map(|_| {
            let start = Instant::now();
            let broker = Broker::open(config.clone()).expect("reopening");
            let took = start.elapsed();
            runtime.block_on(broker.shutdown());
            took
        }));

        let broker = Broker::open(config.clone()).expect("reopening");
        runtime.block_on(broker.produce(-1, builder.round(&mut n, partitions)));
        drop(broker); // a crash: no shutdown, no clean-shutdown markers
        let crashed = median((0..SAMPLES).map(|_| {
            let start = Instant::now();
            let broker = Broker::open(config.clone()).expect("reopening after a crash");
            let took = start.elapsed();
            drop(broker);
            took
        }));
        println!(
            "  {gib:>5.1} GiB ({n} batches, built in {:.0?}): open after clean shutdown {:.0?}, \
             after crash {:.0?}",
            built, clean, crashed
        );
    }
}

fn median(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut samples: Vec<_> = samples.collect();
    samples.sort();
    samples[samples.len() / 2]
}
