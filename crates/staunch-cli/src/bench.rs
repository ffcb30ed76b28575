//! `staunch bench produce|consume`: a load generator against a running broker, with a progress
//! bar and a summary. A benchmark, never a test: it reports numbers and asserts nothing about
//! speed.
//!
//! `produce` writes `--messages` records of `--size` bytes to one partition of a topic over
//! `--connections` connections, each sending batches of `--batch` records with acks=all, one
//! request at a time; it reports records/s, MB/s and request latency percentiles. `consume`
//! reads the partition from the start to its high watermark with fetches of up to 4 MiB.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use staunch_client::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_client::kafka_protocol::messages::{FetchRequest, ProduceRequest, fetch_request};
use staunch_core::BatchBuilder;

use crate::client::{self, ClientArgs};

/// `staunch bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce records as fast as acks=all allows and report throughput and latency.
    Produce(ProduceBench),
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
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
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
    println!(
        "consume: {records} records ({:.1} MB) in {elapsed:.2} s = {:.0} records/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        records as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    Ok(())
}
