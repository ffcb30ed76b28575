//! `staunch produce`: send lines of text to a topic through [`staunch_producer::Producer`] over
//! a [`staunch_client::Client`].
//!
//! The producer batches per partition with a linger time, keeps several requests in flight,
//! retries what is retriable until the delivery timeout and — with idempotence, on by default —
//! never writes a retried batch twice. Every input record ends acknowledged or reported as
//! failed (with the reason, its partition if known and the input line it came from); the exit
//! status is non-zero if any record failed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use staunch_client::Client;
use staunch_core::{Acks, ApiError, BrokerApi, ErrorCode};
use staunch_producer::{
    Compression, OutboxConfig, Producer, ProducerConfig, ProducerRecord, RecordMetadata, SendError,
    partition_for_key,
};
use tokio::sync::mpsc;

use crate::client::{ClientArgs, connect_cluster as connect, parse_duration};
use crate::output::{cell, print_json};

/// Unkeyed records (without `--partition`) go to one partition for at most this many records,
/// then to the next one, round-robin.
const UNKEYED_RUN: usize = 500;
/// A pause in the input at least this long also moves unkeyed records to the next partition
/// (one partition per burst of typing), and prints the offsets acknowledged so far.
const PAUSE: Duration = Duration::from_millis(100);
/// Input lines read ahead of the producer.
const READ_AHEAD: usize = 1024;

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
    /// partition per burst of input (at most 500 records), round-robin.
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Split each line at the first SEP into key and value (a line without SEP has no key).
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// Acknowledgement to wait for: all, 1 or 0. Anything but all turns idempotence off.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// How long a partition's batch waits for more records before it is sent (linger.ms)
    /// [default: the producer's, 5ms].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    linger: Option<Duration>,
    /// How long a record may take from being read to being acknowledged, retries included,
    /// before it is reported as failed (delivery.timeout.ms) [default: the producer's, 2m].
    /// Each request then waits at most this minus the linger time, if that is shorter than
    /// --timeout.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    delivery_timeout: Option<Duration>,
    /// Compress each batch (compression.type): none, gzip, snappy, lz4 or zstd. The broker
    /// stores batches as sent; every Kafka consumer reads them.
    #[arg(long, default_value = "none", value_parser = parse_compression, value_name = "CODEC")]
    compression: Compression,
    /// Turn the idempotent producer off: a retried batch may then be written twice.
    #[arg(long)]
    no_idempotence: bool,
    /// Keep a durable outbox in DIR: each record is written (and fsynced) there before the
    /// next line is read, so records read before a crash of this process are not lost: the
    /// next run with the same DIR sends them first — exactly once after kill -9 with
    /// idempotence (batches already written are recognized by the broker), at least once
    /// otherwise. Slower: one fsync per line.
    #[arg(long, value_name = "DIR")]
    outbox: Option<std::path::PathBuf>,
    /// A record to send instead of reading standard input (repeatable).
    #[arg(long = "value", value_name = "TEXT")]
    values: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse()
}

impl ProduceArgs {
    /// The producer's settings: its defaults with the flags applied. The request timeout is
    /// the client's `--timeout`, shortened if needed so that linger + request timeout fit in
    /// the delivery timeout (which the producer requires, as Kafka does).
    fn producer_config(&self) -> ProducerConfig {
        let defaults = ProducerConfig::default();
        let linger = self.linger.unwrap_or(defaults.linger);
        let delivery_timeout = self.delivery_timeout.unwrap_or(defaults.delivery_timeout);
        let room = delivery_timeout.saturating_sub(linger);
        let request_timeout = if room.is_zero() {
            // Left for validation to refuse with its own message.
            self.client.timeout
        } else {
            self.client.timeout.min(room)
        };
        ProducerConfig {
            acks: self.acks,
            linger,
            delivery_timeout,
            request_timeout,
            idempotence: !self.no_idempotence && self.acks == Acks::All,
            compression: self.compression,
            ..defaults
        }
    }
}

/// One input line as a key and value.
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

/// Reads lines (without their `\n` or `\r\n`) on a thread of its own, so records are sent
/// while the next lines are still being typed.
fn spawn_reader(values: Vec<String>) -> mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
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

/// Runs `staunch produce`.
pub(crate) fn run(args: ProduceArgs) -> Result<(), String> {
    crate::client::block_on(produce(args))?
}

/// The topic's partition count, creating the topic if the broker auto-creates topics; waits
/// briefly for a topic being created to get its partitions.
async fn partition_count(client: &Client, topic: &str) -> Result<i32, String> {
    let mut attempts = 0;
    loop {
        let error = match client.topic(topic).await {
            Ok(info) if !info.partitions.is_empty() => return Ok(info.partitions.len() as i32),
            Ok(_) => ApiError::broker(ErrorCode::LeaderNotAvailable),
            Err(e) => e,
        };
        attempts += 1;
        if !error.is_retriable() || attempts >= 20 {
            return Err(match error.code() {
                Some(ErrorCode::UnknownTopicOrPartition) => {
                    format!("topic '{topic}' does not exist")
                }
                Some(ErrorCode::LeaderNotAvailable) => format!("topic '{topic}' has no partitions"),
                _ => format!("topic '{topic}': {error}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The source index of records an earlier run left in the outbox.
const FROM_OUTBOX: usize = 0;

/// Where a record came from: its line of standard input or its `--value` flag (1-based), or
/// the outbox ([`FROM_OUTBOX`]).
fn source(from_values: bool, index: usize) -> String {
    if index == FROM_OUTBOX {
        "a record left in the outbox by an earlier run".to_owned()
    } else if from_values {
        format!("--value #{index}")
    } else {
        format!("line {index}")
    }
}

/// What the printer learned, for the summary.
#[derive(Debug, Default)]
struct Report {
    acknowledged: u64,
    /// Acknowledged with acks 0: sent, the broker said nothing.
    unconfirmed: u64,
    failed: u64,
    /// Failed records that an earlier attempt may have written anyway.
    failed_maybe_written: u64,
    /// Acknowledged offset runs, in the order they were printed.
    runs: Vec<Run>,
    failures: Vec<serde_json::Value>,
}

/// Consecutive offsets of one partition (or, with acks 0, a count of unconfirmed records).
#[derive(Debug, Clone, Copy)]
struct Run {
    partition: i32,
    /// First and last offset; `None` with acks 0.
    offsets: Option<(i64, i64)>,
    records: u64,
}

impl Run {
    fn print(&self) {
        let plural = if self.records == 1 { "" } else { "s" };
        match self.offsets {
            Some((first, _)) if self.records == 1 => {
                println!("partition {}: offset {first} (1 record)", self.partition);
            }
            Some((first, last)) => println!(
                "partition {}: offsets {first}-{last} ({} records)",
                self.partition, self.records
            ),
            None => println!(
                "partition {}: {} record{plural} sent, not acknowledged (acks 0)",
                self.partition, self.records
            ),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "partition": self.partition,
            "records": self.records,
            "base_offset": self.offsets.map(|o| o.0),
            "last_offset": self.offsets.map(|o| o.1),
            "error": null,
        })
    }
}

/// Turns outcomes into output: acknowledged offsets coalesced into runs per partition (printed
/// when a run breaks, when outcomes pause, and at the end), and one line on standard error per
/// failed record.
struct Printer {
    json: bool,
    from_values: bool,
    partitions: i32,
    open: BTreeMap<i32, Run>,
    report: Report,
}

impl Printer {
    fn acknowledged(&mut self, metadata: &RecordMetadata) {
        let partition = metadata.partition.partition;
        let offset = (metadata.offset >= 0).then_some(metadata.offset);
        if offset.is_some() {
            self.report.acknowledged += 1;
        } else {
            self.report.unconfirmed += 1;
        }
        if let Some(run) = self.open.get_mut(&partition) {
            match (&mut run.offsets, offset) {
                (Some((_, last)), Some(o)) if o == *last + 1 => {
                    *last = o;
                    run.records += 1;
                    return;
                }
                (None, None) => {
                    run.records += 1;
                    return;
                }
                _ => {}
            }
        }
        let run = Run {
            partition,
            offsets: offset.map(|o| (o, o)),
            records: 1,
        };
        if let Some(done) = self.open.insert(partition, run) {
            self.close_run(done);
        }
    }

    fn failed(&mut self, index: usize, error: &SendError) {
        self.report.failed += 1;
        if error.may_have_been_appended {
            self.report.failed_maybe_written += 1;
        }
        let record = &error.record;
        // The partition the record was sent to (explicit or round-robin), or the one its key
        // maps to; unknown for an unkeyed record the producer never placed.
        let partition = record.partition.or_else(|| {
            record
                .key
                .as_ref()
                .map(|k| partition_for_key(k, self.partitions))
        });
        let from = source(self.from_values, index);
        let place = match partition {
            Some(p) => format!("{}/{p}", record.topic),
            None => record.topic.clone(),
        };
        let maybe = if error.may_have_been_appended {
            " (an earlier attempt may have written it anyway)"
        } else {
            ""
        };
        eprintln!(
            "staunch: record from {from} to {place} FAILED: {}{maybe}",
            error.error
        );
        self.report.failures.push(json!({
            "record": index,
            "source": from,
            "topic": record.topic,
            "partition": partition,
            "key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            "error": error.error.to_string(),
            "may_have_been_appended": error.may_have_been_appended,
        }));
    }

    fn close_run(&mut self, run: Run) {
        if !self.json {
            run.print();
        }
        self.report.runs.push(run);
    }

    fn close_all(&mut self) {
        for (_, run) in std::mem::take(&mut self.open) {
            self.close_run(run);
        }
    }
}

/// Prints outcomes as they arrive until every sender of `outcomes` is gone.
async fn print_outcomes(
    mut printer: Printer,
    mut outcomes: mpsc::UnboundedReceiver<(usize, Result<RecordMetadata, SendError>)>,
) -> Report {
    loop {
        let next = if printer.open.is_empty() {
            outcomes.recv().await
        } else {
            match tokio::time::timeout(PAUSE, outcomes.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    printer.close_all();
                    continue;
                }
            }
        };
        match next {
            Some((_, Ok(metadata))) => printer.acknowledged(&metadata),
            Some((index, Err(error))) => printer.failed(index, &error),
            None => break,
        }
    }
    printer.close_all();
    printer.report
}

async fn produce(args: ProduceArgs) -> Result<(), String> {
    let client = connect(&args.client).await?;
    let partitions = partition_count(&client, &args.topic).await?;
    if let Some(p) = args.partition
        && !(0..partitions).contains(&p)
    {
        return Err(format!(
            "topic '{}' has no partition {p} (it has {partitions}: 0 to {})",
            args.topic,
            partitions - 1
        ));
    }
    let config = args.producer_config();
    let idempotence = config.idempotence;
    let (producer, recovery) = match &args.outbox {
        None => {
            let producer =
                Producer::new(client, config).map_err(|e| format!("producer settings: {e}"))?;
            (producer, None)
        }
        Some(dir) => {
            let (producer, recovery) =
                Producer::with_outbox(client, config, OutboxConfig::new(dir))
                    .map_err(|e| format!("producer outbox {}: {e}", dir.display()))?;
            (producer, Some(recovery))
        }
    };

    let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
    if let Some(mut recovery) = recovery {
        if recovery.replayed > 0 {
            eprintln!(
                "Sending {} record(s) an earlier run left in the outbox first.",
                recovery.replayed
            );
        }
        // Outcomes of replayed records are reported like the others, as "from the outbox".
        let outcomes = outcome_tx.clone();
        tokio::spawn(async move {
            while let Some(result) = recovery.outcomes.recv().await {
                let _ = outcomes.send((FROM_OUTBOX, result));
            }
        });
    }
    let printer = Printer {
        json: args.client.json,
        from_values: !args.values.is_empty(),
        partitions,
        open: BTreeMap::new(),
        report: Report::default(),
    };
    let printing = tokio::spawn(print_outcomes(printer, outcome_rx));

    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut input = spawn_reader(args.values.clone());
    let mut read = 0usize;
    let mut unkeyed_partition = 0;
    let mut unkeyed_in_run = 0;
    let mut paused = false;
    let mut fatal = None;
    loop {
        let line = match tokio::time::timeout(PAUSE, input.recv()).await {
            Ok(line) => line,
            Err(_) => {
                paused = true;
                input.recv().await
            }
        };
        let line = match line {
            None => break,
            Some(Ok(line)) => line,
            Some(Err(e)) => {
                fatal = Some(e);
                break;
            }
        };
        read += 1;
        let line = split(line, separator);
        let partition = match (args.partition, &line.key) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => {
                if unkeyed_in_run > 0 && (paused || unkeyed_in_run >= UNKEYED_RUN) {
                    unkeyed_partition = (unkeyed_partition + 1) % partitions;
                    unkeyed_in_run = 0;
                }
                unkeyed_in_run += 1;
                Some(unkeyed_partition)
            }
        };
        paused = false;
        let mut record = ProducerRecord::new(args.topic.clone(), Bytes::from(line.value));
        record.key = line.key.map(Bytes::from);
        record.partition = partition;
        let outcomes = outcome_tx.clone();
        let index = read;
        producer
            .send_async(record, move |result| {
                let _ = outcomes.send((index, result));
            })
            .await;
    }
    drop(outcome_tx);
    // Every accepted record gets its outcome (and its callback has run) before close returns.
    producer.close().await;
    let metrics = producer.metrics();
    drop(producer);
    let report = printing
        .await
        .map_err(|e| format!("printing the outcomes: {e}"))?;

    let records = report.acknowledged + report.unconfirmed + report.failed;
    let duplicates = metrics.possible_duplicates;
    if args.client.json {
        print_json(&json!({
            "topic": args.topic,
            "acks": args.acks.wire(),
            "idempotence": idempotence,
            "records": records,
            "acknowledged": report.acknowledged,
            "unconfirmed": report.unconfirmed,
            "failed": report.failed,
            "failed_may_have_been_written": report.failed_maybe_written,
            "possible_duplicates": duplicates,
            "retried": metrics.retried,
            "batches": report.runs.iter().map(Run::json).collect::<Vec<_>>(),
            "failures": report.failures,
            "error": fatal,
        }));
    } else {
        let plural = if records == 1 { "" } else { "s" };
        let mut notes = Vec::new();
        if report.unconfirmed > 0 {
            notes.push("acks 0: not acknowledged".to_owned());
        }
        if duplicates > 0 {
            notes.push(format!(
                "up to {duplicates} possible duplicate{} from retries",
                if duplicates == 1 { "" } else { "s" }
            ));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        if report.failed == 0 {
            println!(
                "Produced {records} record{plural} to {}{notes}.",
                cell(&args.topic)
            );
        } else {
            let maybe = if report.failed_maybe_written > 0 {
                format!(
                    ", {} of which may have been written anyway",
                    report.failed_maybe_written
                )
            } else {
                String::new()
            };
            println!(
                "Produced {} of {records} record{plural} to {}; {} FAILED{maybe}{notes}.",
                report.acknowledged + report.unconfirmed,
                cell(&args.topic),
                report.failed
            );
        }
    }
    if let Some(e) = fatal {
        return Err(format!(
            "{e} ({} records acknowledged before it, {} failed)",
            report.acknowledged, report.failed
        ));
    }
    if report.failed > 0 {
        return Err(format!(
            "{} of {records} records to '{}' failed",
            report.failed, args.topic
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn flags_map_onto_the_producer_defaults() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: ProduceArgs,
        }
        let defaults = ProducerConfig::default();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["produce", "t"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args.producer_config()
        };
        let config = parse(&[]);
        assert_eq!(config.acks, Acks::All);
        assert!(config.idempotence);
        assert_eq!(config.linger, defaults.linger);
        assert_eq!(config.delivery_timeout, defaults.delivery_timeout);
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.compression, Compression::None);
        config.validate().unwrap();

        let config = parse(&["--linger", "20ms", "--delivery-timeout", "30s"]);
        assert_eq!(config.linger, Duration::from_millis(20));
        assert_eq!(config.delivery_timeout, Duration::from_secs(30));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        // A delivery timeout shorter than linger + --timeout shortens the request timeout.
        let config = parse(&["--linger", "20ms", "--delivery-timeout", "2s"]);
        assert_eq!(config.request_timeout, Duration::from_millis(1980));
        config.validate().unwrap();
        assert!(
            parse(&["--linger", "2s", "--delivery-timeout", "1s"])
                .validate()
                .is_err()
        );
        for (flag, codec) in [
            ("gzip", Compression::Gzip),
            ("snappy", Compression::Snappy),
            ("lz4", Compression::Lz4),
            ("zstd", Compression::Zstd),
            ("none", Compression::None),
        ] {
            let config = parse(&["--compression", flag]);
            assert_eq!(config.compression, codec);
            config.validate().unwrap();
        }
        assert!(
            Cli::try_parse_from(["produce", "t", "--compression", "brotli"]).is_err(),
            "unknown codecs are refused"
        );
        assert!(!parse(&["--no-idempotence"]).idempotence);
        // acks 1 or 0 turns idempotence off rather than failing validation.
        let config = parse(&["--acks", "1"]);
        assert!(!config.idempotence);
        config.validate().unwrap();
        parse(&["--acks", "0"]).validate().unwrap();
    }

    #[test]
    fn sources_name_the_input() {
        assert_eq!(source(false, 7), "line 7");
        assert_eq!(source(true, 2), "--value #2");
    }
}
