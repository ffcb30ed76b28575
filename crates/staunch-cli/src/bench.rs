//! `staunch bench produce|producer|consume`: a load generator against a running broker, with a
//! progress bar and a summary. A benchmark, never a test: it reports numbers and asserts nothing
//! about speed.
//!
//! `produce` writes `--messages` records of `--size` bytes to one partition of a topic over
//! `--connections` connections, each sending batches of `--batch` records with acks=all, one
//! request at a time; it reports records/s, MB/s and request latency percentiles. It measures
//! the broker, not a client.
//!
//! `producer` sends the same records through [`staunch_producer::Producer`] with the settings a
//! user gets by default (acks=all, idempotence, linger 5 ms, at most 5 batches in flight per
//! partition), keeping the pipeline full with `send_async`; it reports records/s, MB/s, the
//! time from the first send to the last acknowledgement and send-to-ack latency percentiles.
//! It is the Rust side of `benches/compare-producers`, which runs it and confluent-kafka
//! against one broker in one run.
//!
//! `consume` reads the partition from the start to its high watermark with fetches of up to
//! 4 MiB.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use staunch_client::Client;
use staunch_client::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_client::kafka_protocol::messages::{FetchRequest, ProduceRequest, fetch_request};
use staunch_core::api::CreateTopicCall;
use staunch_core::{BatchBuilder, BrokerApi};
use staunch_producer::{Producer, ProducerConfig, ProducerRecord};

use crate::client::{self, ClientArgs};

/// `staunch bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce records as fast as acks=all allows and report throughput and latency (raw
    /// produce requests: measures the broker, not a client).
    Produce(ProduceBench),
    /// Send records through the Rust producer (staunch-producer, its defaults: acks=all,
    /// idempotence) and report throughput and the time to the last acknowledgement.
    Producer(ProducerBench),
    /// Read a partition from the start to its end and report throughput.
    Consume(ConsumeBench),
}

#[derive(Debug, Args)]
struct ProduceBench {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic (created with one partition on first use when the broker auto-creates topics).
    #[arg(long, default_value = "staunch-bench")]
    topic: String,
    /// Partition to write to.
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Records to send.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Records per batch (one produce request).
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    connections: u64,
}

#[derive(Debug, Args)]
struct ProducerBench {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic; created with --partitions partitions if it does not exist (an existing topic is
    /// used as it is).
    #[arg(long, default_value = "staunch-bench")]
    topic: String,
    /// Partitions of the topic when this run creates it. Records carry no key and no
    /// partition: the producer's sticky partitioner places them.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Records to send.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// How long a batch waits for more records (linger.ms) [default: the producer's, 5ms].
    #[arg(long, value_parser = client::parse_duration, value_name = "DURATION")]
    linger: Option<Duration>,
    /// Bytes per batch before it is sent (batch.size) [default: the producer's].
    #[arg(long, value_name = "BYTES")]
    batch_size: Option<usize>,
}

#[derive(Debug, Args)]
struct ConsumeBench {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic to read.
    #[arg(long, default_value = "staunch-bench")]
    topic: String,
    /// Partition to read.
    #[arg(long, default_value_t = 0)]
    partition: i32,
}

/// Runs `staunch bench`.
pub(crate) fn run(args: BenchArgs) -> Result<(), String> {
    match args.command {
        BenchCommand::Produce(b) => client::block_on(produce(b))?,
        BenchCommand::Producer(b) => {
            init_logging();
            producer_runtime()?.block_on(producer(b))
        }
        BenchCommand::Consume(b) => client::block_on(consume(b))?,
    }
}

/// A progress bar on stderr (only when it is a terminal), redrawn at most 5 times a second.
struct Progress {
    total: u64,
    started: Instant,
    last_draw: Instant,
    enabled: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            started: Instant::now(),
            last_draw: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled || self.last_draw.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_draw = Instant::now();
        let width = 30;
        let filled = (done.min(self.total) * width / self.total.max(1)) as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r[{}{}] {done}/{} records, {rate:.0}/s ",
            "#".repeat(filled),
            "-".repeat(width as usize - filled),
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn produce(bench: ProduceBench) -> Result<(), String> {
    if bench.batch == 0 || bench.connections == 0 || bench.messages == 0 {
        return Err("--messages, --batch and --connections must be at least 1".to_owned());
    }
    let sent = Arc::new(AtomicU64::new(0));
    let value = vec![b'x'; bench.size];
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..bench.connections {
        let mut connection = client::connect(&bench.client).await?;
        let (sent, value, topic) = (sent.clone(), value.clone(), bench.topic.clone());
        let (batch, total, partition) = (bench.batch, bench.messages, bench.partition);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let claimed = sent.fetch_add(batch, Ordering::Relaxed);
                if claimed >= total {
                    return Ok::<_, String>(latencies);
                }
                let count = batch.min(total - claimed);
                let mut builder = BatchBuilder::new(client::now_ms());
                for _ in 0..count {
                    builder = builder.record(None, Some(&value));
                }
                let request = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(client::topic_name(&topic))
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(partition)
                                    .with_records(Some(Bytes::from(builder.build()))),
                            ]),
                    ]);
                let t = Instant::now();
                let response = client::call(&mut connection, request).await?;
                latencies.push(t.elapsed());
                for topic in &response.responses {
                    for p in &topic.partition_responses {
                        if p.error_code != 0 {
                            return Err(format!(
                                "produce failed: {}",
                                client::error_text(p.error_code, p.error_message.as_ref())
                            ));
                        }
                    }
                }
            }
        }));
    }
    let mut progress = Progress::new(bench.messages);
    let mut latencies = Vec::new();
    let mut pending = workers;
    while !pending.is_empty() {
        progress.update(sent.load(Ordering::Relaxed).min(bench.messages));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut still = Vec::new();
        for worker in pending {
            if worker.is_finished() {
                let result = worker.await.map_err(|e| e.to_string())?;
                latencies.extend(result?);
            } else {
                still.push(worker);
            }
        }
        pending = still;
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let latency_ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
    if bench.client.json {
        crate::output::print_json(&serde_json::json!({
            "records": bench.messages,
            "record_bytes": bench.size,
            "seconds": elapsed,
            "records_per_second": bench.messages as f64 / elapsed,
            "mb_per_second": (bench.messages * bench.size as u64) as f64 / elapsed / 1e6,
            "acks": "all",
            "connections": bench.connections,
            "records_per_request": bench.batch,
            "requests": latencies.len(),
            "request_latency_ms": {
                "p50": latency_ms(0.5),
                "p99": latency_ms(0.99),
                "max": latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            },
        }));
        return Ok(());
    }
    println!(
        "produce: {} records of {} B in {elapsed:.2} s = {:.0} records/s, {:.1} MB/s (acks=all, {} connections, {} records per request)",
        bench.messages,
        bench.size,
        bench.messages as f64 / elapsed,
        (bench.messages * bench.size as u64) as f64 / elapsed / 1e6,
        bench.connections,
        bench.batch
    );
    println!(
        "request latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} requests)",
        latency_ms(0.5),
        latency_ms(0.99),
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    );
    Ok(())
}

/// Log lines of the producer (retries, expired batches) on standard error: `RUST_LOG` if set,
/// else warnings and errors.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The runtime `bench producer` runs on: Tokio's multi-threaded default (one worker per core),
/// what `#[tokio::main]` gives an application, so the sending loop and the producer's own task
/// can run side by side.
fn producer_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

/// Creates `topic` with `partitions` partitions unless it exists.
async fn ensure_topic(client: &Client, topic: &str, partitions: i32) -> Result<(), String> {
    client
        .create_topic(CreateTopicCall {
            name: topic.to_owned(),
            partitions: Some(partitions),
            replication_factor: None,
            configs: Vec::new(),
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("creating topic '{topic}': {e}"))
}

/// What the delivery callbacks of `bench producer` record.
#[derive(Debug, Default)]
struct Deliveries {
    /// Records with an outcome.
    done: AtomicU64,
    failed: AtomicU64,
    /// When the last outcome arrived, in nanoseconds after the start.
    last_ns: AtomicU64,
    /// Send-to-ack latency of each acknowledged record, in microseconds.
    latencies_us: std::sync::Mutex<Vec<u32>>,
    first_error: std::sync::Mutex<Option<String>>,
}

async fn producer(bench: ProducerBench) -> Result<(), String> {
    if bench.messages == 0 || bench.partitions < 1 {
        return Err("--messages and --partitions must be at least 1".to_owned());
    }
    let client = client::connect_cluster(&bench.client).await?;
    let warm_up_topic = format!("{}-warm-up", bench.topic);
    ensure_topic(&client, &bench.topic, bench.partitions).await?;
    ensure_topic(&client, &warm_up_topic, 1).await?;
    let defaults = ProducerConfig::default();
    let config = ProducerConfig {
        linger: bench.linger.unwrap_or(defaults.linger),
        batch_size: bench.batch_size.unwrap_or(defaults.batch_size),
        ..defaults
    };
    let producer = Producer::new(client, config).map_err(|e| format!("producer settings: {e}"))?;
    let config = producer.config().clone();

    // Warm-up, not timed, as benches/clients/confluent_bench.py does for confluent-kafka: the
    // connection, the producer id and one acknowledged record, on a topic of its own.
    let warm_start = Instant::now();
    producer
        .send(ProducerRecord::new(
            warm_up_topic,
            Bytes::from_static(b"warm-up"),
        ))
        .await
        .map_err(|e| format!("warm-up record failed: {}", e.error))?;
    let warm_up = warm_start.elapsed();

    let value = Bytes::from(vec![b'x'; bench.size]);
    let total = bench.messages;
    let deliveries = Arc::new(Deliveries {
        latencies_us: std::sync::Mutex::new(Vec::with_capacity(total as usize)),
        ..Deliveries::default()
    });
    let mut progress = Progress::new(total);
    let started = Instant::now();
    for n in 0..total {
        let sent_at = Instant::now();
        let shared = deliveries.clone();
        producer
            .send_async(
                ProducerRecord::new(bench.topic.clone(), value.clone()),
                move |outcome| {
                    let deliveries = shared;
                    let now = Instant::now();
                    match outcome {
                        Ok(_) => {
                            let us = now.duration_since(sent_at).as_micros();
                            if let Ok(mut latencies) = deliveries.latencies_us.lock() {
                                latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                            }
                        }
                        Err(e) => {
                            if deliveries.failed.fetch_add(1, Ordering::Relaxed) == 0
                                && let Ok(mut first) = deliveries.first_error.lock()
                            {
                                *first = Some(e.error.to_string());
                            }
                        }
                    }
                    if deliveries.done.fetch_add(1, Ordering::AcqRel) + 1 == total {
                        let ns = now.duration_since(started).as_nanos();
                        deliveries
                            .last_ns
                            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Release);
                    }
                },
            )
            .await;
        if n % 4096 == 0 {
            progress.update(deliveries.done.load(Ordering::Relaxed));
        }
    }
    let accepted = started.elapsed();
    producer.flush().await;
    let flushed = started.elapsed();
    progress.finish();
    producer.close().await;
    let metrics = producer.metrics();

    let failed = deliveries.failed.load(Ordering::Acquire);
    if failed > 0 {
        let first = deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        return Err(format!(
            "{failed} of {total} records failed, first: {first}"
        ));
    }
    let last_ns = deliveries.last_ns.load(Ordering::Acquire);
    let elapsed = if last_ns > 0 {
        Duration::from_nanos(last_ns)
    } else {
        flushed
    };
    let mut latencies = std::mem::take(
        &mut *deliveries
            .latencies_us
            .lock()
            .map_err(|_| "a delivery callback panicked".to_owned())?,
    );
    latencies.sort_unstable();
    let latency_ms = |p: f64| {
        let at = ((latencies.len().max(1) - 1) as f64 * p).round() as usize;
        f64::from(latencies.get(at).copied().unwrap_or(0)) / 1e3
    };
    let seconds = elapsed.as_secs_f64();
    let rate = total as f64 / seconds;
    let mb_per_s = (total * bench.size as u64) as f64 / seconds / 1e6;
    if bench.client.json {
        crate::output::print_json(&serde_json::json!({
            "records": total,
            "record_bytes": bench.size,
            "seconds": seconds,
            "records_per_second": rate,
            "mb_per_second": mb_per_s,
            "accepted_seconds": accepted.as_secs_f64(),
            "warm_up_seconds": warm_up.as_secs_f64(),
            "ack_latency_ms": {
                "p50": latency_ms(0.5),
                "p99": latency_ms(0.99),
                "max": latency_ms(1.0),
            },
            "retried": metrics.retried,
            "acks": "all",
            "idempotence": config.idempotence,
            "linger_ms": config.linger.as_secs_f64() * 1e3,
            "batch_size": config.batch_size,
            "max_in_flight_per_partition": config.max_in_flight_per_partition,
        }));
        return Ok(());
    }
    println!(
        "producer: {total} records of {} B, last ack after {seconds:.2} s = {rate:.0} records/s, {mb_per_s:.1} MB/s (acks=all, idempotence {}, linger {:?}, batch.size {} B, {} in flight per partition)",
        bench.size,
        if config.idempotence { "on" } else { "off" },
        config.linger,
        config.batch_size,
        config.max_in_flight_per_partition,
    );
    println!(
        "send-to-ack latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; all records accepted after {:.2} s; {} retried (after a {:.2} s warm-up: connect, producer id, first record)",
        latency_ms(0.5),
        latency_ms(0.99),
        latency_ms(1.0),
        accepted.as_secs_f64(),
        metrics.retried,
        warm_up.as_secs_f64(),
    );
    Ok(())
}

async fn consume(bench: ConsumeBench) -> Result<(), String> {
    let mut connection = client::connect(&bench.client).await?;
    let offsets = client::list_offsets(
        &mut connection,
        &bench.topic,
        &[bench.partition],
        client::LATEST,
    )
    .await?;
    let end = match offsets.get(&bench.partition) {
        Some(Ok(offset)) => *offset,
        Some(Err(e)) => return Err(format!("cannot find the end of {}: {e}", bench.topic)),
        None => return Err(format!("no offsets for partition {}", bench.partition)),
    };
    let mut progress = Progress::new(end.max(0) as u64);
    let started = Instant::now();
    let (mut next, mut records, mut bytes) = (0i64, 0u64, 0u64);
    while next < end {
        let request = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(client::topic_name(&bench.topic))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(bench.partition)
                            .with_fetch_offset(next)
                            .with_partition_max_bytes(4 << 20),
                    ]),
            ]);
        let response = client::call(&mut connection, request).await?;
        let Some(partition) = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
        else {
            return Err("fetch answer has no partition".to_owned());
        };
        if partition.error_code != 0 {
            return Err(format!(
                "fetch failed: {}",
                client::error_text(partition.error_code, None)
            ));
        }
        let data = partition.records.clone().unwrap_or_default();
        bytes += data.len() as u64;
        for batch in staunch_core::batch::batches(&data) {
            let batch = batch.map_err(|e| e.to_string())?;
            records += (batch.next_offset() - batch.base_offset().max(next)) as u64;
            next = batch.next_offset();
        }
        progress.update(next as u64);
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    if bench.client.json {
        crate::output::print_json(&serde_json::json!({
            "records": records,
            "bytes": bytes,
            "seconds": elapsed,
            "records_per_second": records as f64 / elapsed,
            "mb_per_second": bytes as f64 / elapsed / 1e6,
        }));
        return Ok(());
    }
    println!(
        "consume: {records} records ({:.1} MB) in {elapsed:.2} s = {:.0} records/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        records as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    Ok(())
}
