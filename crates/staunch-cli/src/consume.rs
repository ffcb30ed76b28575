//! `staunch consume`: print a topic's records.
//!
//! Without `--group`: a plain fetch loop over chosen partitions from chosen offsets, with no
//! consumer group, nothing committed and no rebalancing.
//!
//! With `--group G` ([`group`]): a member of consumer group `G` over one or more topics, built
//! on `staunch_consumer::Consumer` (kafka-console-consumer's `--group`, kcat's `-G`). The group
//! assigns the partitions (`--assignor range|sticky|cooperative-sticky`), reading starts at the
//! group's committed offsets (`--from beginning|end` only where it has none), and a record's
//! offset is committed only after the record was written to standard output and flushed. `-n`
//! stops after exactly that many records, all committed; `-e` once every partition this member
//! owns is at its end; SIGINT / SIGTERM commit what was printed and leave the group.
//!
//! Either way, batches compressed with any of Kafka's codecs (gzip, snappy, lz4, zstd) are
//! decompressed for printing.

mod group;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use staunch_client::kafka_protocol::messages::{FetchRequest, fetch_request};
use staunch_core::ErrorCode;
use staunch_core::batch::{Record, batches};

use staunch_consumer::Assignor;

use crate::client::{self, ClientArgs, EARLIEST, LATEST, call_error, error_text, topic_name};
use crate::output::json_bytes;

/// Longest a fetch waits at the broker for new data.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Fetch v13 names topics by id only; this consumer names them.
const MAX_FETCH_VERSION: i16 = 12;
/// Bytes asked for per partition and per fetch.
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_MAX_BYTES: i32 = 50 << 20;

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The earliest offset still stored.
    Beginning,
    /// The end: only records produced from now on.
    End,
    /// This offset.
    Offset(i64),
    /// This many records before the end.
    BeforeEnd(i64),
}

fn parse_from(text: &str) -> Result<Start, String> {
    match text {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        _ => match text.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Start::Offset(n)),
            Ok(n) => Ok(Start::BeforeEnd(n.saturating_neg())),
            Err(_) => Err(
                "expected beginning, end, an offset, or -N for N records before the end".to_owned(),
            ),
        },
    }
}

/// Flags of `staunch consume`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// The topic; with --group, one or more topics.
    #[arg(required = true, value_name = "TOPIC")]
    topics: Vec<String>,
    /// Consume as a member of this consumer group: the group assigns the partitions, reading
    /// starts at its committed offsets, and each record's offset is committed after the record
    /// was printed.
    #[arg(long, short = 'G', value_name = "GROUP")]
    group: Option<String>,
    /// With --group: the partition assignor this member proposes, range (Kafka's default),
    /// sticky or cooperative-sticky. Every member of a group must propose the same one.
    #[arg(long, value_parser = group::parse_assignor, value_name = "ASSIGNOR", requires = "group")]
    assignor: Option<Assignor>,
    /// Read only this partition (default: every partition).
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Option<i32>,
    /// Where to start in each partition: beginning, end, an offset, or -N (N records before
    /// the end). With --group only beginning or end, and only where the group has no
    /// committed offset (Kafka's auto.offset.reset).
    #[arg(long, short = 'o', default_value = "beginning", value_parser = parse_from, allow_hyphen_values = true)]
    from: Start,
    /// Stop after this many records (with --group: all of them committed).
    #[arg(long, short = 'n', visible_alias = "count")]
    max: Option<u64>,
    /// Stop once every partition read has reached its high watermark (with --group: every
    /// partition assigned to this member).
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Output of each record (ignored with --json): %t topic, %p partition, %o offset,
    /// %k key, %v value, %T timestamp (ms), %h headers (k=v,...), %% a percent sign;
    /// \n, \t and \\ escapes. A newline follows each record.
    #[arg(long, short = 'f', default_value = "%v")]
    format: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// One piece of a `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

fn parse_format(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                Some(other) => return Err(format!("unknown format directive %{other}")),
                None => return Err("the format ends with a lone %".to_owned()),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        let mut buf = [0; 4];
                        text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => text.push(b'\\'),
                }
                continue;
            }
            c => {
                let mut buf = [0; 4];
                text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn render(pieces: &[Piece], topic: &str, partition: i32, record: &Record<'_>, out: &mut Vec<u8>) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(record.key.unwrap_or_default()),
            Piece::Value => out.extend_from_slice(record.value.unwrap_or_default()),
            Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Piece::Headers => {
                for (i, (k, v)) in record.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k);
                    out.push(b'=');
                    out.extend_from_slice(v.unwrap_or_default());
                }
            }
        }
    }
    out.push(b'\n');
}

fn record_json(topic: &str, partition: i32, record: &Record<'_>) -> serde_json::Value {
    let headers: Vec<_> = record
        .headers
        .iter()
        .map(|(k, v)| json!({ "key": String::from_utf8_lossy(k), "value": json_bytes(*v) }))
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": json_bytes(record.key),
        "value": json_bytes(record.value),
        "headers": headers,
    })
}

/// Where one partition's reading stands.
#[derive(Debug)]
struct Position {
    next: i64,
    high_watermark: i64,
}

/// Runs `staunch consume`.
pub(crate) fn run(args: ConsumeArgs) -> Result<(), String> {
    let pieces = parse_format(&args.format)?;
    if let Some(group) = args.group.clone() {
        return client::block_on(group::consume(args, group, pieces))?;
    }
    if args.topics.len() > 1 {
        return Err(format!(
            "{} topics given: reading several topics needs --group (without it, consume reads one topic)",
            args.topics.len()
        ));
    }
    client::block_on(consume(args, pieces))?
}

async fn consume(args: ConsumeArgs, pieces: Vec<Piece>) -> Result<(), String> {
    let topic = args.topics[0].as_str();
    let mut connection = client::connect(&args.client).await?;
    let info = client::topic(&mut connection, topic, false).await?;
    let all: Vec<i32> = info.partitions.iter().map(|p| p.index).collect();
    let partitions = match args.partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(format!(
                "topic '{topic}' has no partition {p} (it has {})",
                all.len()
            ));
        }
        None => all,
    };
    let earliest = client::list_offsets(&mut connection, topic, &partitions, EARLIEST).await?;
    let latest = client::list_offsets(&mut connection, topic, &partitions, LATEST).await?;
    let mut positions = BTreeMap::new();
    for &p in &partitions {
        let offset_of = |offsets: &BTreeMap<i32, Result<i64, String>>, what: &str| {
            offsets
                .get(&p)
                .cloned()
                .unwrap_or_else(|| Err("no answer".to_owned()))
                .map_err(|e| format!("cannot find the {what} offset of partition {p}: {e}"))
        };
        let (first, end) = (
            offset_of(&earliest, "earliest")?,
            offset_of(&latest, "latest")?,
        );
        let next = match args.from {
            Start::Beginning => first,
            Start::End => end,
            Start::Offset(n) if n < first || n > end => {
                return Err(format!(
                    "offset {n} is out of range for partition {p} (earliest offset {first}, end {end})"
                ));
            }
            Start::Offset(n) => n,
            Start::BeforeEnd(n) => end.saturating_sub(n).max(first),
        };
        positions.insert(
            p,
            Position {
                next,
                high_watermark: end,
            },
        );
    }
    let version = client::version::<FetchRequest>(&connection)?.min(MAX_FETCH_VERSION);
    let max_wait = MAX_WAIT.min(args.client.timeout / 2);
    let mut printed: u64 = 0;
    let mut failing_since: Option<Instant> = None;
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    let mut turn: usize = 0;
    loop {
        if args.max.is_some_and(|max| printed >= max) {
            return Ok(());
        }
        let mut wanted: Vec<i32> = positions
            .iter()
            .filter(|(_, pos)| !args.exit_at_end || pos.next < pos.high_watermark)
            .map(|(&p, _)| p)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Each partition comes first in turn: only the first with data may bring a batch
        // larger than PARTITION_MAX_BYTES (Kafka's rule), so a fixed order could starve one.
        turn = turn.wrapping_add(1);
        let by = turn % wanted.len();
        wanted.rotate_left(by);
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(
                        wanted
                            .iter()
                            .map(|p| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(*p)
                                    .with_fetch_offset(positions[p].next)
                                    .with_partition_max_bytes(PARTITION_MAX_BYTES)
                            })
                            .collect(),
                    ),
            ]);
        let response = connection
            .call_at(version, request)
            .await
            .map_err(call_error::<FetchRequest>)?;
        if response.error_code != 0 {
            return Err(format!(
                "fetch failed: {}",
                error_text(response.error_code, None)
            ));
        }
        let mut retriable = None;
        for answer in response
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == topic)
        {
            for data in &answer.partitions {
                let p = data.partition_index;
                let Some(pos) = positions.get_mut(&p) else {
                    continue;
                };
                if data.error_code != 0 {
                    let code = ErrorCode::from_code(data.error_code);
                    let why = format!(
                        "partition {p} at offset {}: {}",
                        pos.next,
                        error_text(data.error_code, None)
                    );
                    if code == ErrorCode::OffsetOutOfRange {
                        return Err(format!(
                            "{why} (earliest offset {}, end {})",
                            data.log_start_offset, data.high_watermark
                        ));
                    }
                    if !code.is_retriable() {
                        return Err(why);
                    }
                    retriable = Some(why);
                    continue;
                }
                pos.high_watermark = data.high_watermark;
                let bytes = data.records.clone().unwrap_or_default();
                for (i, batch) in batches(&bytes).enumerate() {
                    let batch = match batch {
                        Ok(b) => b,
                        // A broker may cut the last batch short at the size limit.
                        Err(_) if i > 0 => break,
                        Err(e) => {
                            return Err(format!(
                                "partition {p}: cannot read the record batch at offset {}: {e}",
                                pos.next
                            ));
                        }
                    };
                    if batch.next_offset() <= pos.next {
                        continue;
                    }
                    if !batch.is_control() {
                        // Compressed batches are decompressed here, at most 64 MiB each.
                        let records = batch.decompressed().map_err(|e| {
                            let codec = batch
                                .compression()
                                .map_or_else(|| "an unknown codec".to_owned(), |c| c.to_string());
                            format!(
                                "partition {p}: the batch at offset {} ({codec}) cannot be read: {e}",
                                batch.base_offset(),
                            )
                        })?;
                        for record in records.records() {
                            let record = record.map_err(|e| {
                                format!(
                                    "partition {p}: a record in the batch at offset {} is malformed: {e}",
                                    batch.base_offset()
                                )
                            })?;
                            if record.offset < pos.next {
                                continue;
                            }
                            if args.client.json {
                                buf.extend_from_slice(
                                    record_json(topic, p, &record).to_string().as_bytes(),
                                );
                                buf.push(b'\n');
                            } else {
                                render(&pieces, topic, p, &record, &mut buf);
                            }
                            pos.next = record.offset + 1;
                            printed += 1;
                            if args.max.is_some_and(|max| printed >= max) {
                                break;
                            }
                        }
                    }
                    if args.max.is_some_and(|max| printed >= max) {
                        break;
                    }
                    pos.next = pos.next.max(batch.next_offset());
                }
                if !flush(&stdout, &mut buf)? {
                    return Ok(());
                }
                if args.max.is_some_and(|max| printed >= max) {
                    return Ok(());
                }
            }
        }
        match retriable {
            Some(why) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > args.client.timeout {
                    return Err(format!(
                        "{why} (still failing after {:?})",
                        args.client.timeout
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => failing_since = None,
        }
    }
}

/// Writes out what was rendered; `false` when standard output is closed (e.g. `| head`).
fn flush(stdout: &std::io::Stdout, buf: &mut Vec<u8>) -> Result<bool, String> {
    if buf.is_empty() {
        return Ok(true);
    }
    let mut out = stdout.lock();
    let result = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("writing the output: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Record<'a> {
        Record {
            offset: 42,
            timestamp: 1_700_000_000_000,
            key,
            value,
            headers: vec![(b"h1", Some(b"x")), (b"h2", None)],
        }
    }

    fn rendered(format: &str, record: &Record<'_>) -> String {
        let mut out = Vec::new();
        render(
            &parse_format(format).unwrap(),
            "orders",
            2,
            record,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_render_each_directive() {
        let r = record(Some(b"k"), Some(b"v"));
        assert_eq!(rendered("%v", &r), "v\n");
        assert_eq!(rendered("%t %p %o %k %v", &r), "orders 2 42 k v\n");
        assert_eq!(rendered("%T|%h|100%%", &r), "1700000000000|h1=x,h2=|100%\n");
        assert_eq!(rendered("%k\\t%v\\\\", &r), "k\tv\\\n");
        let null = record(None, None);
        assert_eq!(rendered("[%k][%v]", &null), "[][]\n");
        assert!(parse_format("%x").is_err());
        assert!(parse_format("50%").is_err());
    }

    #[test]
    fn from_parses() {
        assert_eq!(parse_from("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_from("end"), Ok(Start::End));
        assert_eq!(parse_from("17"), Ok(Start::Offset(17)));
        assert_eq!(parse_from("-5"), Ok(Start::BeforeEnd(5)));
        assert!(parse_from("soon").is_err());
    }

    #[test]
    fn json_records() {
        let r = record(None, Some(&[0xff]));
        let v = record_json("t", 1, &r);
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["value"], json!({"hex": "ff"}));
        assert_eq!(v["offset"], 42);
        assert_eq!(v["headers"][0], json!({"key": "h1", "value": "x"}));
        assert_eq!(v["headers"][1], json!({"key": "h2", "value": null}));
    }
}
