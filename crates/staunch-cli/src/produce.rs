//! `staunch produce`: send lines of text to a topic.
//!
//! This is a deliberately simple sender — one connection, one request in flight, no retries,
//! no idempotence. Issue 4's `staunch-producer` (batching per partition with linger, retries
//! with idempotent sequence numbers, leader routing) will replace it.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::ProduceRequest;
use staunch_client::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_core::BatchBuilder;
use tokio::sync::mpsc;

use crate::client::{self, ClientArgs, call_error, error_text, topic_name};
use crate::output::{cell, print_json};

/// Most lines sent in one request.
const MAX_BATCH_LINES: usize = 500;
/// A batch is also sent when no new line arrives for this long (typing at a terminal).
const LINGER: Duration = Duration::from_millis(100);
/// Produce v13 names topics by id only; this sender names them.
const MAX_PRODUCE_VERSION: i16 = 12;

/// Acknowledgement the producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acks {
    /// Every in-sync replica (and, on Staunch, the flush policy) — Kafka's `acks=all` (-1).
    All,
    /// The leader only.
    Leader,
    /// No acknowledgement: the broker does not answer.
    None,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
            Acks::None => 0,
        }
    }
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "all" | "-1" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        _ => Err("expected all, 1 or 0".to_owned()),
    }
}

/// Flags of `staunch produce`.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// The topic (created if missing and the broker auto-creates topics).
    topic: String,
    /// Send every record to this partition. Without it, keyed records go to
    /// murmur2(key) % partitions (Kafka's default partitioner) and unkeyed ones to one
    /// partition per batch, round-robin.
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Split each line at the first SEP into key and value (a line without SEP has no key).
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// Acknowledgement to wait for: all, 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// A record to send instead of reading standard input (repeatable).
    #[arg(long = "value", value_name = "TEXT")]
    values: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), used by its default
/// partitioner for keyed records.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key:
/// `toPositive(murmur2(key)) % partitions`.
pub(crate) fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// One input line as a record.
struct Line {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

fn split(line: Vec<u8>, separator: Option<&[u8]>) -> Line {
    let Some(sep) = separator.filter(|s| !s.is_empty()) else {
        return Line {
            key: None,
            value: line,
        };
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => Line {
            key: Some(line[..at].to_vec()),
            value: line[at + sep.len()..].to_vec(),
        },
        None => Line {
            key: None,
            value: line,
        },
    }
}

/// Reads lines (without their `\n` or `\r\n`) on a thread of its own, so a batch can be sent
/// while the next lines are still being typed.
fn spawn_reader(values: Vec<String>) -> mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH_LINES);
    std::thread::spawn(move || {
        if !values.is_empty() {
            for v in values {
                if tx.blocking_send(Ok(v.into_bytes())).is_err() {
                    return;
                }
            }
            return;
        }
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("reading standard input: {e}")));
                    return;
                }
            }
        }
    });
    rx
}

/// Collects the next batch: up to [`MAX_BATCH_LINES`] lines, ending early at end of input or
/// when input pauses for [`LINGER`]. Empty at end of input.
async fn next_batch(
    input: &mut mpsc::Receiver<Result<Vec<u8>, String>>,
) -> Result<Vec<Vec<u8>>, String> {
    let Some(first) = input.recv().await else {
        return Ok(Vec::new());
    };
    let mut lines = vec![first?];
    while lines.len() < MAX_BATCH_LINES {
        match tokio::time::timeout(LINGER, input.recv()).await {
            Ok(Some(line)) => lines.push(line?),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(lines)
}

/// The outcome of one partition's part of a batch.
#[derive(Debug)]
struct Outcome {
    partition: i32,
    records: usize,
    /// Offset of the first record; `None` when not acknowledged (acks 0) or failed.
    base_offset: Option<i64>,
    error: Option<String>,
    record_errors: Vec<(i32, String)>,
}

/// Runs `staunch produce`.
pub(crate) fn run(args: ProduceArgs) -> Result<(), String> {
    client::block_on(produce(args))?
}

async fn produce(args: ProduceArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let info = client::topic(&mut connection, &args.topic, true).await?;
    let partitions = info.partitions.len() as i32;
    if let Some(p) = args.partition
        && !(0..partitions).contains(&p)
    {
        return Err(format!(
            "topic '{}' has no partition {p} (it has {partitions}: 0 to {})",
            args.topic,
            partitions - 1
        ));
    }
    let version = client::version::<ProduceRequest>(&connection)?.min(MAX_PRODUCE_VERSION);
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut input = spawn_reader(args.values.clone());
    let mut next_round_robin = 0;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut fatal = None;
    loop {
        let lines = match next_batch(&mut input).await {
            Ok(lines) if lines.is_empty() => break,
            Ok(lines) => lines,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        };
        let unkeyed_partition = next_round_robin % partitions;
        let mut used_round_robin = false;
        let mut by_partition: BTreeMap<i32, Vec<Line>> = BTreeMap::new();
        for line in lines {
            let line = split(line, separator);
            let partition = match (args.partition, &line.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => {
                    used_round_robin = true;
                    unkeyed_partition
                }
            };
            by_partition.entry(partition).or_default().push(line);
        }
        if used_round_robin {
            next_round_robin = (next_round_robin + 1) % partitions;
        }
        match send(&mut connection, version, &args, by_partition).await {
            Ok(batch) => {
                if !args.client.json {
                    for o in &batch {
                        print_outcome(o);
                    }
                }
                outcomes.extend(batch);
            }
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    let sent: usize = outcomes.iter().map(|o| o.records).sum();
    let failed: usize = outcomes
        .iter()
        .filter(|o| o.error.is_some())
        .map(|o| o.records)
        .sum();
    if args.client.json {
        let batches: Vec<_> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "partition": o.partition,
                    "records": o.records,
                    "base_offset": o.base_offset,
                    "last_offset": o.base_offset.map(|b| b + o.records as i64 - 1),
                    "error": o.error,
                    "record_errors": o.record_errors.iter().map(|(i, m)| json!({"index": i, "message": m})).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({
            "topic": args.topic,
            "acks": args.acks.wire(),
            "records": sent,
            "failed": failed,
            "batches": batches,
            "error": fatal,
        }));
    }
    if let Some(e) = fatal {
        return Err(format!(
            "{e} ({} records acknowledged before it)",
            sent - failed
        ));
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {sent} records to '{}' failed",
            args.topic
        ));
    }
    if !args.client.json {
        println!(
            "Produced {sent} record{} to {}{}.",
            if sent == 1 { "" } else { "s" },
            cell(&args.topic),
            if args.acks == Acks::None {
                " (acks 0: not acknowledged)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn print_outcome(o: &Outcome) {
    let plural = if o.records == 1 { "" } else { "s" };
    match (&o.error, o.base_offset) {
        (Some(error), _) => {
            println!(
                "partition {}: {} record{plural} FAILED: {error}",
                o.partition, o.records
            );
            for (index, message) in &o.record_errors {
                println!("  record {index} of the batch: {message}");
            }
        }
        (None, Some(base)) if o.records == 1 => {
            println!("partition {}: offset {base} (1 record)", o.partition);
        }
        (None, Some(base)) => println!(
            "partition {}: offsets {base}-{} ({} records)",
            o.partition,
            base + o.records as i64 - 1,
            o.records
        ),
        (None, None) => println!(
            "partition {}: {} record{plural} sent, not acknowledged (acks 0)",
            o.partition, o.records
        ),
    }
}

/// Sends one batch per partition in one request; the outcome of each.
async fn send(
    connection: &mut Connection,
    version: i16,
    args: &ProduceArgs,
    by_partition: BTreeMap<i32, Vec<Line>>,
) -> Result<Vec<Outcome>, String> {
    let now = client::now_ms();
    let mut data = Vec::with_capacity(by_partition.len());
    let mut counts = BTreeMap::new();
    for (partition, lines) in &by_partition {
        let mut builder = BatchBuilder::new(now);
        for line in lines {
            builder = builder.record(line.key.as_deref(), Some(&line.value));
        }
        counts.insert(*partition, lines.len());
        data.push(
            PartitionProduceData::default()
                .with_index(*partition)
                .with_records(Some(Bytes::from(builder.build()))),
        );
    }
    let timeout_ms = i32::try_from(args.client.timeout.as_millis()).unwrap_or(i32::MAX);
    let request = ProduceRequest::default()
        .with_acks(args.acks.wire())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(&args.topic))
                .with_partition_data(data),
        ]);
    if args.acks == Acks::None {
        connection
            .send_at(version, &request)
            .await
            .map_err(call_error::<ProduceRequest>)?;
        return Ok(counts
            .into_iter()
            .map(|(partition, records)| Outcome {
                partition,
                records,
                base_offset: None,
                error: None,
                record_errors: Vec::new(),
            })
            .collect());
    }
    let response = connection
        .call_at(version, request)
        .await
        .map_err(call_error::<ProduceRequest>)?;
    let mut answers = BTreeMap::new();
    for t in response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == args.topic)
    {
        for p in &t.partition_responses {
            answers.insert(p.index, p);
        }
    }
    Ok(counts
        .into_iter()
        .map(|(partition, records)| match answers.get(&partition) {
            Some(p) if p.error_code == 0 => Outcome {
                partition,
                records,
                base_offset: Some(p.base_offset),
                error: None,
                record_errors: Vec::new(),
            },
            Some(p) => Outcome {
                partition,
                records,
                base_offset: None,
                error: Some(error_text(p.error_code, p.error_message.as_ref())),
                record_errors: p
                    .record_errors
                    .iter()
                    .map(|e| {
                        (
                            e.batch_index,
                            e.batch_index_error_message
                                .as_ref()
                                .map_or_else(String::new, |m| m.as_str().to_owned()),
                        )
                    })
                    .collect(),
            },
            None => Outcome {
                partition,
                records,
                base_offset: None,
                error: Some("the broker's answer does not mention this partition".to_owned()),
                record_errors: Vec::new(),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Apache Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn keys_map_to_positive_partitions() {
        for key in ["21", "foobar", "abc", ""] {
            let expected = (murmur2(key.as_bytes()) & 0x7fff_ffff) % 7;
            assert_eq!(partition_for_key(key.as_bytes(), 7), expected);
            assert!((0..7).contains(&partition_for_key(key.as_bytes(), 7)));
        }
        // "21" hashes negative: toPositive, not abs.
        assert_eq!(
            partition_for_key(b"21", 3),
            (-973932308i32 & 0x7fff_ffff) % 3
        );
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        let line = split(b"k:v:w".to_vec(), Some(b":"));
        assert_eq!(line.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(line.value, b"v:w");
        let line = split(b"no separator".to_vec(), Some(b"::"));
        assert_eq!(line.key, None);
        assert_eq!(line.value, b"no separator");
        let line = split(b"a::b".to_vec(), Some(b"::"));
        assert_eq!(line.key.as_deref(), Some(&b"a"[..]));
        assert_eq!(line.value, b"b");
        let line = split(b"k:v".to_vec(), None);
        assert_eq!(line.key, None);
        assert_eq!(line.value, b"k:v");
    }

    #[test]
    fn acks_parse() {
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert_eq!(parse_acks("1"), Ok(Acks::Leader));
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert!(parse_acks("2").is_err());
    }
}
