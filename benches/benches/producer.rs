//! The Rust producer end to end: `staunch-producer` over `staunch-client` (TCP on loopback)
//! against an in-process `staunch-server` + `staunch-broker` — the same code `staunch serve`
//! runs — with flush `always`, acks=all and idempotence, 1 KiB records on one partition.
//!
//! One iteration sends [`RECORDS`] records with `send_async` and waits for `flush`. Cases:
//! - `producer/batch_1MiB/retries_on`: the producer's defaults, librdkafka's batch size
//!   (1,000,000 B) and linger 5 ms, as `benches/clients/confluent_bench.py` configures
//!   confluent-kafka, so the two compare;
//! - `producer/batch_1MiB/retries_off`: the same with a back-off of zero retries, to price the
//!   retry machinery on the happy path;
//! - `producer/batch_16KiB/retries_on`: the Java client's default batch size;
//! - `producer/senders_64/no_outbox`, `…/outbox_always`, `…/outbox_os`: 64 tasks send
//!   concurrently (as a service's request handlers would), without and with the durable outbox
//!   (every record fsynced into it before `send_async` returns, the fsyncs shared by
//!   concurrent senders; or written to the page cache only). A single task awaiting each send
//!   pays one outbox fsync per record, which is not worth a benchmark.
//!
//! After criterion's report a table prints records/s per case, the retries-on / retries-off
//! ratio and the outbox / no-outbox ratios.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use staunch_benches::{Timings, VALUE_BYTES, bench_dir, measuring, per_second};
use staunch_broker::{Broker, BrokerConfig};
use staunch_client::{Client, ClientConfig};
use staunch_core::BackOff;
use staunch_log::FlushPolicy;
use staunch_producer::{OutboxConfig, Producer, ProducerConfig, ProducerRecord};
use staunch_server::{Server, ServerConfig};

/// Records sent per iteration.
const RECORDS: u64 = 20_000;
/// Criterion samples per case.
const SAMPLES: usize = 10;

fn config(batch_size: usize, retries: bool) -> ProducerConfig {
    let mut config = ProducerConfig {
        batch_size,
        max_request_size: batch_size.max(1 << 20) + 64 * 1024,
        linger: Duration::from_millis(5),
        ..ProducerConfig::default()
    };
    if !retries {
        config.retry_backoff = BackOff::fixed(Duration::ZERO, 0);
    }
    config
}

/// How a case sends.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    batch_size: usize,
    retries: bool,
    /// Tasks sending concurrently, each awaiting its own `send_async` calls in turn.
    senders: u64,
    /// The outbox's flush policy, or no outbox.
    outbox: Option<FlushPolicy>,
}

/// Sends `RECORDS` records from `senders` tasks and waits until all are acknowledged; returns
/// the wall time.
async fn send_all(
    producer: &Producer<Client>,
    topic: &str,
    value: &Bytes,
    senders: u64,
) -> Duration {
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (producer, failed, topic, value) = (
                producer.clone(),
                failed.clone(),
                topic.to_owned(),
                value.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..RECORDS / senders {
                    let failed = failed.clone();
                    producer
                        .send_async(
                            ProducerRecord::new(topic.clone(), value.clone()).with_partition(0),
                            move |outcome| {
                                if outcome.is_err() {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            },
                        )
                        .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender task");
    }
    producer.flush().await;
    let elapsed = start.elapsed();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "deliveries failed");
    elapsed
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let (addr, _server) = runtime.block_on(async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
            .await
            .expect("bind");
        let addr = server.local_addr().expect("address");
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            advertised_port: addr.port(),
            ..BrokerConfig::default()
        };
        let broker = Broker::open(config).expect("open broker");
        let task = tokio::spawn(server.run(broker, std::future::pending::<()>()));
        (addr, task)
    });

    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let timings = Timings::default();
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let case = |name, batch_size, retries, senders, outbox| Case {
        name,
        batch_size,
        retries,
        senders,
        outbox,
    };
    let cases = [
        case("batch_1MiB/retries_on", 1_000_000, true, 1, None),
        case("batch_1MiB/retries_off", 1_000_000, false, 1, None),
        case("batch_16KiB/retries_on", 16 * 1024, true, 1, None),
        case("senders_64/no_outbox", 1_000_000, true, 64, None),
        case(
            "senders_64/outbox_always",
            1_000_000,
            true,
            64,
            Some(FlushPolicy::Always),
        ),
        case(
            "senders_64/outbox_os",
            1_000_000,
            true,
            64,
            Some(FlushPolicy::Os),
        ),
    ];
    let mut group = criterion.benchmark_group("producer");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(RECORDS));
    for case in cases {
        let name = case.name;
        let topic = format!("bench-{}", name.replace('/', "-"));
        let outbox_dir = dir
            .path()
            .join(format!("outbox-{}", name.replace('/', "-")));
        let producer = runtime.block_on(async {
            let client = Client::connect(vec![addr.to_string()], ClientConfig::default())
                .await
                .expect("connect");
            let config = config(case.batch_size, case.retries);
            match case.outbox {
                None => Producer::new(client, config).expect("producer config"),
                Some(flush) => {
                    let outbox = OutboxConfig {
                        flush,
                        ..OutboxConfig::new(&outbox_dir)
                    };
                    Producer::with_outbox(client, config, outbox)
                        .expect("producer with outbox")
                        .0
                }
            }
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += runtime.block_on(send_all(&producer, &topic, &value, case.senders));
                }
                timings.record(name, iters, total);
                total
            })
        });
        runtime.block_on(producer.close());
    }
    group.finish();
    criterion.final_summary();

    if !measuring() || timings.is_empty() {
        return;
    }
    let rate = |name: &str| {
        timings
            .per_iter(name, SAMPLES)
            .map(|per| per_second(RECORDS as f64, per))
    };
    println!("\n| case | records/s |\n|---|---|");
    for case in cases {
        if let Some(rate) = rate(case.name) {
            println!("| {} | {rate:.0} |", case.name);
        }
    }
    if let (Some(on), Some(off)) = (
        rate("batch_1MiB/retries_on"),
        rate("batch_1MiB/retries_off"),
    ) {
        println!(
            "\nretry machinery on the happy path: retries-on runs at {:.3}x the retries-off rate",
            on / off
        );
    }
    if let Some(plain) = rate("senders_64/no_outbox") {
        for name in ["senders_64/outbox_always", "senders_64/outbox_os"] {
            if let Some(with) = rate(name) {
                println!("{name}: {:.3}x the rate without an outbox", with / plain);
            }
        }
    }
}
