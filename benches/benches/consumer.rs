//! The consumer's retry machinery on the happy path and with a few failures, against an
//! in-process `staunch-broker` (flush `always`) preloaded with [`RECORDS`] 1 KiB records on one
//! partition. Issue 5 asks: happy-path consumption through the retry machinery costs under 5 %
//! versus a plain fetch loop; with 1 % of records failing once, throughput stays above 90 % of
//! the happy path.
//!
//! One iteration reads all [`RECORDS`] records from offset 0 (a fresh consumer group each time)
//! and hands each to the same trivial work (read the value's length and first byte). Cases:
//! - `consumer/plain_fetch`: a loop over `BrokerApi::fetch` with the consumer's default fetch
//!   sizes, decoding every record, committing nothing;
//! - `consumer/plain_fetch_commit`: the same, committing the next offset after every fetch, as
//!   a simple at-least-once loop does (one durable commit per fetch; `Consumer::poll` commits
//!   at most every `commit_interval`, 5 ms by default, so `happy / plain_fetch_commit` compares
//!   the consumer with a loop that commits more often);
//! - `consumer/happy`: `Consumer` with the default blocking policy (spring's ten deliveries, no
//!   pause) and a handler that always succeeds;
//! - `consumer/fail_1pct_blocking`: the same, with 1 % of the records failing their first
//!   delivery (blocking retry, zero back-off, the default `max_uncommitted_failures` 1: the
//!   record is delivered again at once, its count goes out with the round's commit);
//! - `consumer/fail_1pct_retry_topic`: the same failures under a retry-topic policy (one retry,
//!   zero delay, through `bench-retry-0`);
//! - `consumer/happy_ordered`, `consumer/fail_1pct_ordered`: `happy` and `fail_1pct_blocking`
//!   in ordered mode (park the key, not the partition; the records have no key, so each is its
//!   own): a failed record is retried at once, as in `fail_1pct_blocking`.
//! - `consumer/happy_traced`: `happy` with an INFO `tracing_subscriber::fmt` subscriber (to a
//!   sink) as the polling thread's default, as an application usually runs: what the consumer's
//!   own spans and events cost. (An INFO span per record once made this 8-10x slower.)
//!
//! After criterion's report a table prints records/s per case and the ratios the issue names
//! (and `happy_traced / happy`),
//! from the mean of the samples, from the fastest sample, and as the median of 31 pairs of runs
//! of the two cases back to back (see [`paired_ratio`]).
//! `STAUNCH_BENCH_DIR` on a tmpfs takes the fsync of every commit out, which leaves the CPU
//! cost of the machinery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use staunch_benches::{Timings, bench_dir, measuring, per_second};
use staunch_broker::{Broker, BrokerConfig};
use staunch_consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, FailurePolicy, Handler, HandlerError,
};
use staunch_core::api::{
    CreateTopicCall, FetchCall, FetchPosition, GroupMembership, OffsetAndMetadata, OffsetSpec,
};
use staunch_core::batch::batches;
use staunch_core::{Acks, BackOff, BrokerApi, PartitionBatch, ProduceCall, TopicPartition};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::util::SubscriberInitExt;

/// Records read per iteration (all of the topic).
const RECORDS: u64 = 100_000;
/// Records per produced batch while preloading.
const PRELOAD_BATCH: usize = 1_000;
/// One record in this many fails its first delivery in the failing cases (1 %).
const FAIL_EVERY: i64 = 100;
/// Criterion samples per case.
const SAMPLES: usize = 10;
/// Pairs of runs behind each paired ratio (see [`paired_ratio`]).
const PAIRS: usize = 31;
/// The source topic.
const TOPIC: &str = "bench";
/// The parking lot of the ordered cases (records parked behind a failed key at most).
const ORDERED: Option<usize> = Some(10_000);
/// The retry topic of `fail_1pct_retry_topic` (one retry after 0 ms, spring's naming).
const RETRY_TOPIC: &str = "bench-retry-0";

/// The work done per record, the same in every case: read the value's length and first byte.
fn work(value: Option<&[u8]>) -> u64 {
    let v = std::hint::black_box(value).unwrap_or_default();
    v.len() as u64 + u64::from(v.first().copied().unwrap_or(0))
}

/// Does [`work`] on each record; optionally fails each record whose offset is a multiple of
/// [`FAIL_EVERY`] on its first delivery. Counts nothing itself (the consumer's `processed`
/// counter says when all are done), so it costs what the plain loop's work costs.
#[derive(Debug, Default)]
struct Work {
    fail_first_delivery: bool,
}

impl Handler for Work {
    fn handle(
        &self,
        record: &ConsumerRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let fail = self.fail_first_delivery
            && record.delivery_attempt == 1
            && record.offset % FAIL_EVERY == 0;
        let outcome = if fail {
            Err(HandlerError::retriable("Flaky", "first delivery fails"))
        } else {
            std::hint::black_box(work(record.value.as_deref()));
            Ok(())
        };
        std::future::ready(outcome)
    }
}

/// The broker through [`BrokerApi`] (its inherent methods of the same names take wire types).
fn api(broker: &Broker) -> &impl BrokerApi {
    broker
}

async fn preload(broker: &Broker) {
    let broker = api(broker);
    for (name, partitions) in [(TOPIC, 1), (RETRY_TOPIC, 1)] {
        broker
            .create_topic(CreateTopicCall {
                name: name.into(),
                partitions: Some(partitions),
                replication_factor: None,
                configs: vec![],
            })
            .await
            .expect("create topic");
    }
    let batch = Bytes::from(staunch_benches::batch(PRELOAD_BATCH));
    let tp = TopicPartition::new(TOPIC, 0);
    for _ in 0..RECORDS / PRELOAD_BATCH as u64 {
        let answer = broker
            .produce(ProduceCall {
                acks: Acks::All,
                timeout: Duration::from_secs(30),
                batches: vec![PartitionBatch {
                    partition: tp.clone(),
                    records: batch.clone(),
                }],
            })
            .await;
        assert!(answer[0].1.is_ok(), "preload: {answer:?}");
    }
}

/// Commits `offset` of `tp` for `group` (a simple member, no metadata), durably.
async fn commit_at(broker: &impl BrokerApi, group: &str, tp: &TopicPartition, offset: i64) {
    let answers = broker
        .commit_offsets(
            &GroupMembership::simple(group),
            vec![(
                tp.clone(),
                OffsetAndMetadata {
                    offset,
                    leader_epoch: None,
                    metadata: String::new(),
                },
            )],
        )
        .await;
    assert!(answers.iter().all(|(_, a)| a.is_ok()), "{answers:?}");
}

/// A plain fetch loop with the consumer's default fetch sizes; commits the next offset after
/// each fetch under `group` if `commit_group` is set. Returns the wall time.
async fn plain_fetch(broker: &Broker, commit_group: Option<&str>) -> Duration {
    let broker = api(broker);
    let defaults = ConsumerConfig::new("unused");
    let tp = TopicPartition::new(TOPIC, 0);
    let start = Instant::now();
    let (mut offset, mut done) = (0, 0u64);
    while done < RECORDS {
        let answer = broker
            .fetch(FetchCall {
                max_wait: defaults.fetch_max_wait,
                min_bytes: 1,
                max_bytes: defaults.fetch_max_bytes,
                partitions: vec![FetchPosition {
                    partition: tp.clone(),
                    offset,
                    max_bytes: defaults.partition_max_bytes,
                }],
            })
            .await;
        let fetched = answer
            .into_iter()
            .next()
            .expect("an answer")
            .1
            .expect("fetch");
        let mut next = offset;
        for batch in batches(&fetched.records) {
            let Ok(batch) = batch else { break };
            if batch.last_offset() >= offset {
                let records = batch.decompressed().expect("decompress");
                for record in records.records() {
                    let record = record.expect("record");
                    if record.offset >= offset {
                        std::hint::black_box(work(record.value));
                        done += 1;
                    }
                }
            }
            next = batch.next_offset();
        }
        offset = next;
        if let Some(group) = commit_group {
            commit_at(broker, group, &tp, offset).await;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(done, RECORDS);
    elapsed
}

/// Reads the whole topic with a `Consumer` of a fresh group under `failure` and commits;
/// returns the wall time (consumer creation and the last commit included, close excluded).
async fn consume(
    broker: &Arc<Broker>,
    group: &str,
    failure: FailurePolicy,
    ordered: Option<usize>,
    fail_first_delivery: bool,
) -> Duration {
    let mut partitions = vec![TopicPartition::new(TOPIC, 0)];
    if let FailurePolicy::RetryTopics(_) = failure {
        // Start the fresh group at the retry topic's end, so it reads only its own forwards.
        let retry = TopicPartition::new(RETRY_TOPIC, 0);
        let end = api(broker)
            .list_offsets(vec![(retry.clone(), OffsetSpec::Latest)])
            .await
            .pop()
            .and_then(|(_, a)| a.ok().flatten())
            .map_or(0, |l| l.offset);
        commit_at(api(broker), group, &retry, end).await;
        partitions.push(retry);
    }
    let handler = Work {
        fail_first_delivery,
    };
    let config = ConsumerConfig {
        failure,
        ordered,
        fetch_max_wait: Duration::from_millis(10),
        ..ConsumerConfig::new(group)
    };
    let start = Instant::now();
    let mut consumer = Consumer::new(broker.clone(), config).expect("consumer config");
    consumer.assign(partitions).await.expect("assign");
    while consumer.metrics().total.processed < RECORDS {
        consumer.poll(&handler).await.expect("poll");
    }
    // Everything handled is committed, and every forward acknowledged.
    consumer.commit().await.expect("commit");
    let elapsed = start.elapsed();
    let metrics = consumer.metrics();
    consumer.close().await.expect("close");
    assert_eq!(metrics.total.processed, RECORDS, "{metrics:?}");
    if fail_first_delivery {
        assert_eq!(
            metrics.total.retried,
            RECORDS / FAIL_EVERY as u64,
            "{metrics:?}"
        );
    }
    elapsed
}

#[derive(Clone, Copy)]
enum Case {
    Plain,
    PlainCommit,
    Happy,
    FailBlocking,
    FailRetryTopic,
    HappyOrdered,
    FailOrdered,
    HappyTraced,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Plain => "plain_fetch",
            Case::PlainCommit => "plain_fetch_commit",
            Case::Happy => "happy",
            Case::FailBlocking => "fail_1pct_blocking",
            Case::FailRetryTopic => "fail_1pct_retry_topic",
            Case::HappyOrdered => "happy_ordered",
            Case::FailOrdered => "fail_1pct_ordered",
            Case::HappyTraced => "happy_traced",
        }
    }

    async fn run(self, broker: &Arc<Broker>, group: &str) -> Duration {
        match self {
            Case::Plain => plain_fetch(broker, None).await,
            Case::PlainCommit => plain_fetch(broker, Some(group)).await,
            Case::Happy => consume(broker, group, FailurePolicy::default(), None, false).await,
            Case::FailBlocking => {
                consume(broker, group, FailurePolicy::default(), None, true).await
            }
            Case::FailRetryTopic => {
                let policy = FailurePolicy::RetryTopics(BackOff::fixed(Duration::ZERO, 1));
                consume(broker, group, policy, None, true).await
            }
            Case::HappyOrdered => {
                consume(broker, group, FailurePolicy::default(), ORDERED, false).await
            }
            Case::FailOrdered => {
                consume(broker, group, FailurePolicy::default(), ORDERED, true).await
            }
            Case::HappyTraced => {
                // The poll runs on this thread (`block_on`): its spans and events reach this.
                let traced = tracing_subscriber::fmt()
                    .with_max_level(LevelFilter::INFO)
                    .with_writer(std::io::sink)
                    .set_default();
                let elapsed = consume(broker, group, FailurePolicy::default(), None, false).await;
                drop(traced);
                // Dropping the default leaves the call sites' cached interest (and the global
                // max level) as the subscriber set them: reset them, so the cases run after
                // this one see what they saw before it.
                tracing::callsite::rebuild_interest_cache();
                elapsed
            }
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let broker = runtime.block_on(async {
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            ..BrokerConfig::default()
        };
        let broker = Arc::new(Broker::open(config).expect("open broker"));
        preload(&broker).await;
        broker
    });

    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let timings = Timings::default();
    let cases = [
        Case::Plain,
        Case::PlainCommit,
        Case::Happy,
        Case::FailBlocking,
        Case::FailRetryTopic,
        Case::HappyOrdered,
        Case::FailOrdered,
        Case::HappyTraced,
    ];
    let groups = AtomicU64::new(0);
    let mut group = criterion.benchmark_group("consumer");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(RECORDS));
    for case in cases {
        let name = case.name();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let id = format!("bench-{name}-{}", groups.fetch_add(1, Ordering::Relaxed));
                    total += runtime.block_on(case.run(&broker, &id));
                }
                timings.record(name, iters, total);
                total
            })
        });
    }
    group.finish();
    criterion.final_summary();

    if !measuring() || timings.is_empty() {
        return;
    }
    // The mean of the samples, and the fastest sample: on a shared machine the fastest is the
    // one other work disturbed least, so its ratios are the steadier ones.
    let mean = |case: Case| {
        timings
            .per_iter(case.name(), SAMPLES)
            .map(|per| per_second(RECORDS as f64, per))
    };
    let best = |case: Case| {
        timings
            .fastest_per_iter(case.name(), SAMPLES)
            .map(|per| per_second(RECORDS as f64, per))
    };
    println!("\n| case | records/s (mean) | records/s (fastest sample) |\n|---|---|---|");
    for case in cases {
        if let (Some(m), Some(b)) = (mean(case), best(case)) {
            println!("| {} | {m:.0} | {b:.0} |", case.name());
        }
    }
    println!("\n| ratio | mean | fastest | paired median |\n|---|---|---|---|");
    for (a, b) in [
        (Case::Happy, Case::Plain),
        (Case::Happy, Case::PlainCommit),
        (Case::FailBlocking, Case::Happy),
        (Case::FailRetryTopic, Case::Happy),
        (Case::HappyOrdered, Case::Plain),
        (Case::FailOrdered, Case::HappyOrdered),
        (Case::HappyTraced, Case::Happy),
    ] {
        if let (Some(ma), Some(mb), Some(ba), Some(bb)) = (mean(a), mean(b), best(a), best(b)) {
            let paired = paired_ratio(&runtime, &broker, &groups, a, b);
            println!(
                "| {} / {} | {:.3} | {:.3} | {paired:.3} |",
                a.name(),
                b.name(),
                ma / mb,
                ba / bb
            );
        }
    }
}

/// Runs `a` and `b` one after the other [`PAIRS`] times (in turn first, so neither always
/// comes second) and returns the median of the pairs' throughput ratios a / b. Criterion
/// measures the cases seconds apart, so a slow spell of a shared machine lands on one case
/// only; a pair runs within a tenth of a second. (On the 2-vCPU development VM the medians
/// still differ by up to a third between runs of the benchmark: run it several times.)
fn paired_ratio(
    runtime: &tokio::runtime::Runtime,
    broker: &Arc<Broker>,
    groups: &AtomicU64,
    a: Case,
    b: Case,
) -> f64 {
    let run = |case: Case| {
        let id = format!(
            "paired-{}-{}",
            case.name(),
            groups.fetch_add(1, Ordering::Relaxed)
        );
        runtime.block_on(case.run(broker, &id)).as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..PAIRS)
        .map(|i| {
            let (time_a, time_b) = if i % 2 == 0 {
                let time_a = run(a);
                (time_a, run(b))
            } else {
                let time_b = run(b);
                (run(a), time_b)
            };
            time_b / time_a
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}
