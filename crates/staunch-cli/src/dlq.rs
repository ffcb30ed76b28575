//! `staunch dlq list|show|redrive`: dead-letter topics, their records, and replaying them.
//!
//! A thin front end over `staunch_consumer::redrive` through a `staunch_client::Client`.
//! `redrive` keeps its progress in the broker as the committed offsets of the group
//! `staunch-redrive.<dlt>`, marked only after the replayed record was acknowledged with
//! acks=all, so running it again never replays a record twice (see the library's docs).

use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use humantime_serde::re::humantime;
use serde_json::json;
use staunch_consumer::headers::{ErrorKind, is_staunch_header};
use staunch_consumer::redrive::{
    DeadLetter, DeadLetterTopicSummary, RedriveOptions, RedriveProgress, RedriveReport,
    is_dead_letter_topic, list_dead_letter_topics, read_dead_letters, redrive_group,
    redrive_with_progress,
};

use staunch_client::kafka_protocol::messages::DescribeLogDirsRequest;

use crate::client::{self, ClientArgs, connect_cluster as connect, now_ms};
use crate::output::{Table, cell, json_bytes, print_json};

/// `staunch dlq`.
#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead-letter topics (every `*.DLT` and `%DLQ%*` topic, or the ones named) with
    /// their record counts, size on disk (from DescribeLogDirs of the broker connected to;
    /// `-` where it is not answered), records not yet redriven, and the age of the oldest and
    /// newest.
    List(ListArgs),
    /// Show a dead-letter topic's records with their origin, error and headers.
    Show(ShowArgs),
    /// Replay dead letters to their original topic (or --to), each at most once: progress is
    /// committed in the broker (group staunch-redrive.<DLT>) after each acknowledged replay.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Dead-letter topics to list (default: every topic named like one).
    topics: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The dead-letter topic.
    topic: String,
    /// Show at most this many records.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct RedriveArgs {
    /// The dead-letter topic.
    topic: String,
    /// Replay to this topic instead of each record's original topic.
    #[arg(long, value_name = "TOPIC")]
    to: Option<String>,
    /// Only records dead-lettered at or after this time: RFC 3339 (2026-11-21T10:00:00Z),
    /// ms since the epoch, or a duration ago (2h).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    since: Option<i64>,
    /// Only records dead-lettered before this time (same forms as --since).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    until: Option<i64>,
    /// Only records whose last failure was of this kind: retriable or fatal.
    #[arg(long, value_parser = parse_kind, value_name = "KIND")]
    error_kind: Option<ErrorKind>,
    /// Only records whose error type (staunch.dlt.error-type) is this.
    #[arg(long, value_name = "TYPE")]
    error_type: Option<String>,
    /// Only records with this key (UTF-8).
    #[arg(long)]
    key: Option<String>,
    /// At most this many records per second.
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Report what would be replayed; produce and commit nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// A time: RFC 3339, ms since the epoch, or a duration before now.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .map_err(|_| format!("{text} is before 1970"));
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)),
        Err(_) => Err(format!(
            "expected an RFC 3339 time, ms since the epoch or a duration ago (e.g. 2h), got '{text}'"
        )),
    }
}

fn parse_kind(text: &str) -> Result<ErrorKind, String> {
    ErrorKind::parse(text).ok_or_else(|| format!("expected retriable or fatal, got '{text}'"))
}

/// Runs a `staunch dlq` subcommand.
pub(crate) fn run(args: DlqArgs) -> Result<(), String> {
    client::block_on(async move {
        match args.command {
            DlqCommand::List(a) => list(a).await,
            DlqCommand::Show(a) => show(a).await,
            DlqCommand::Redrive(a) => redrive(a).await,
        }
    })?
}

/// Fails unless `topic` exists (checked without auto-creating it).
async fn must_exist(args: &ClientArgs, topic: &str) -> Result<(), String> {
    let mut connection = client::connect(args).await?;
    client::topic(&mut connection, topic, false)
        .await
        .map(|_| ())
}

/// How long ago `ms` was, in its two largest units (`3m 12s`, `2days 4h`); `-` for none.
fn age(ms: Option<i64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(t) => {
            let secs = u64::try_from((now_ms() - t).max(0) / 1000).unwrap_or(0);
            // The two largest units are enough: `3years 7days`, `5m 12s`.
            let full = humantime::format_duration(Duration::from_secs(secs)).to_string();
            full.split(' ').take(2).collect::<Vec<_>>().join(" ")
        }
    }
}

fn time_text(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        Err(_) => ms.to_string(),
    }
}

async fn list(args: ListArgs) -> Result<(), String> {
    let names: Vec<String> = if args.topics.is_empty() {
        let mut connection = client::connect(&args.client).await?;
        client::metadata(&mut connection, None, false)
            .await?
            .into_iter()
            .map(|t| t.name)
            .filter(|n| is_dead_letter_topic(n))
            .collect()
    } else {
        for t in &args.topics {
            must_exist(&args.client, t).await?;
        }
        args.topics.clone()
    };
    let sizes = topic_sizes(&args.client, &names).await;
    let api = connect(&args.client).await?;
    let summaries = list_dead_letter_topics(&api, &names)
        .await
        .map_err(|e| e.to_string())?;
    let size_of = |topic: &str| sizes.as_ref().and_then(|s| s.get(topic).copied());
    if args.client.json {
        let list: Vec<_> = summaries
            .iter()
            .map(|s| {
                let mut value = summary_json(s);
                value["size_bytes"] = json!(size_of(&s.topic));
                value
            })
            .collect();
        print_json(&json!({ "dead_letter_topics": list }));
        return Ok(());
    }
    if summaries.is_empty() {
        println!("no dead-letter topics");
        return Ok(());
    }
    let mut table = Table::new([
        "TOPIC",
        "PARTITIONS",
        "RECORDS",
        "SIZE",
        "PENDING",
        "OLDEST",
        "NEWEST",
    ])
    .right(&[1, 2, 3, 4]);
    for s in &summaries {
        table.row([
            cell(&s.topic),
            s.partitions.len().to_string(),
            s.records.to_string(),
            size_of(&s.topic).map_or("-".to_owned(), size_text),
            s.pending.to_string(),
            age(s.oldest_ms),
            age(s.newest_ms),
        ]);
    }
    table.print();
    Ok(())
}

/// Bytes on disk of each of `topics` on the broker connected to (DescribeLogDirs), or `None`
/// if it does not answer (an older broker, or no permission).
async fn topic_sizes(
    args: &ClientArgs,
    topics: &[String],
) -> Option<std::collections::HashMap<String, u64>> {
    let mut connection = client::connect(args).await.ok()?;
    // Every topic (a null list): naming partitions would need each topic's count first.
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let response = client::call(&mut connection, request).await.ok()?;
    let mut sizes = std::collections::HashMap::new();
    for dir in response.results.iter().filter(|d| d.error_code == 0) {
        for topic in dir
            .topics
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name.0.as_str()))
        {
            let total: i64 = topic
                .partitions
                .iter()
                .map(|p| p.partition_size.max(0))
                .sum();
            *sizes.entry(topic.name.0.as_str().to_owned()).or_insert(0) += total as u64;
        }
    }
    Some(sizes)
}

/// Bytes in the largest binary unit that keeps the number at least 1 (`512 B`, `3.2 MiB`).
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn summary_json(s: &DeadLetterTopicSummary) -> serde_json::Value {
    json!({
        "topic": s.topic,
        "records": s.records,
        "pending": s.pending,
        "oldest_ms": s.oldest_ms,
        "newest_ms": s.newest_ms,
        "redrive_group": redrive_group(&s.topic),
        "partitions": s.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "earliest": p.earliest,
            "latest": p.latest,
            "pending": p.pending,
        })).collect::<Vec<_>>(),
    })
}

fn dead_letter_json(d: &DeadLetter) -> serde_json::Value {
    let r = &d.record;
    let headers: Vec<_> = r
        .headers
        .iter()
        .map(|(k, v)| json!({ "key": String::from_utf8_lossy(k), "value": json_bytes(v.as_deref()) }))
        .collect();
    let facts = d.facts.as_ref().map(|f| {
        json!({
            "original_topic": f.original_topic,
            "original_partition": f.original_partition,
            "original_offset": f.original_offset,
            "original_timestamp": f.original_timestamp,
            "attempts": f.attempts,
            "first_failure_ms": f.first_failure_ms,
            "last_failure_ms": f.last_failure_ms,
            "error_kind": f.error_kind.as_str(),
            "error_type": f.error_type,
            "error_message": f.error_message,
            "consumer_group": f.consumer_group,
        })
    });
    json!({
        "topic": &*r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": json_bytes(r.key.as_deref()),
        "value": json_bytes(r.value.as_deref()),
        "headers": headers,
        "facts": facts,
    })
}

fn text_of(bytes: Option<&Bytes>) -> String {
    match bytes {
        None => "-".to_owned(),
        Some(b) => {
            let t = String::from_utf8_lossy(b);
            let short: String = t.chars().take(60).collect();
            cell(&if short.len() < t.len() {
                format!("{short}…")
            } else {
                short
            })
        }
    }
}

async fn show(args: ShowArgs) -> Result<(), String> {
    must_exist(&args.client, &args.topic).await?;
    let api = connect(&args.client).await?;
    let letters = read_dead_letters(&api, &args.topic, args.limit)
        .await
        .map_err(|e| e.to_string())?;
    if args.client.json {
        let list: Vec<_> = letters.iter().map(dead_letter_json).collect();
        print_json(&json!({ "topic": args.topic, "records": list }));
        return Ok(());
    }
    if letters.is_empty() {
        println!("no records in {}", args.topic);
        return Ok(());
    }
    for d in &letters {
        let r = &d.record;
        println!(
            "{}/{}/{}  key={}  dead-lettered {}",
            cell(&r.topic),
            r.partition,
            r.offset,
            text_of(r.key.as_ref()),
            time_text(d.dead_lettered_ms())
        );
        match &d.facts {
            Some(f) => println!(
                "  from {}/{}/{} after {} attempts ({}, group {}): {}: {}",
                cell(&f.original_topic),
                f.original_partition,
                f.original_offset,
                f.attempts,
                f.error_kind.as_str(),
                cell(&f.consumer_group),
                cell(&f.error_type),
                cell(&f.error_message)
            ),
            None => println!("  (no staunch.dlt.* headers: origin unknown)"),
        }
        println!("  value: {}", text_of(r.value.as_ref()));
        let own: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| !is_staunch_header(k))
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    cell(&String::from_utf8_lossy(k)),
                    text_of(v.as_ref())
                )
            })
            .collect();
        if !own.is_empty() {
            println!("  headers: {}", own.join(", "));
        }
    }
    Ok(())
}

fn progress_line(topic: &str, p: &RedriveProgress<'_>) -> String {
    let verb = if p.report.dry_run {
        "would redrive"
    } else {
        "redriven"
    };
    let done = if p.report.dry_run {
        p.report.matched
    } else {
        p.report.redriven
    };
    format!(
        "{topic}: read {}/{}, {verb} {done}, skipped {}, already redriven {}",
        p.read, p.total, p.report.skipped_by_filter, p.report.already_redriven
    )
}

async fn redrive(args: RedriveArgs) -> Result<(), String> {
    must_exist(&args.client, &args.topic).await?;
    if let Some(to) = &args.to {
        must_exist(&args.client, to).await?;
    }
    let api = connect(&args.client).await?;
    let options = RedriveOptions {
        to: args.to.clone(),
        since_ms: args.since,
        until_ms: args.until,
        error_kind: args.error_kind,
        error_type: args.error_type.clone(),
        key: args.key.clone().map(Bytes::from),
        rate: args.rate,
        dry_run: args.dry_run,
        produce_timeout: args.client.timeout,
        ..RedriveOptions::new(args.topic.clone())
    };
    let mut last = Instant::now();
    let mut shown = false;
    let topic = args.topic.clone();
    let result = redrive_with_progress(&api, &options, |p| {
        if last.elapsed() >= Duration::from_millis(200) || p.read == p.total {
            last = Instant::now();
            shown = true;
            eprint!("\r{}", progress_line(&topic, &p));
            let _ = std::io::stderr().flush();
        }
    })
    .await;
    if shown {
        eprintln!();
    }
    let report = result.map_err(|e| e.to_string())?;
    print_report(&args, &report);
    Ok(())
}

fn print_report(args: &RedriveArgs, report: &RedriveReport) {
    if args.client.json {
        print_json(&json!({
            "topic": args.topic,
            "dry_run": report.dry_run,
            "matched": report.matched,
            "redriven": report.redriven,
            "redriven_to": report.redriven_to,
            "skipped_by_filter": report.skipped_by_filter,
            "already_redriven": report.already_redriven,
            "no_destination": report.no_destination,
        }));
        return;
    }
    let mut table = Table::new(["", "RECORDS"]).right(&[1]);
    table.row([
        if report.dry_run {
            "would redrive"
        } else {
            "matched"
        }
        .to_owned(),
        report.matched.to_string(),
    ]);
    if !report.dry_run {
        table.row(["redriven".to_owned(), report.redriven.to_string()]);
        for (topic, n) in &report.redriven_to {
            table.row([format!("  to {topic}"), n.to_string()]);
        }
    }
    table.row([
        "skipped by filter".to_owned(),
        report.skipped_by_filter.to_string(),
    ]);
    table.row([
        "already redriven".to_owned(),
        report.already_redriven.to_string(),
    ]);
    if report.no_destination > 0 {
        table.row([
            "no original topic (use --to)".to_owned(),
            report.no_destination.to_string(),
        ]);
    }
    table.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_kinds() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        let ago = parse_time("1h").unwrap();
        assert!((now_ms() - ago - 3_600_000).abs() < 60_000);
        assert!(parse_time("soon").is_err());
        assert_eq!(parse_kind("fatal"), Ok(ErrorKind::Fatal));
        assert!(parse_kind("bad").is_err());
    }
}
