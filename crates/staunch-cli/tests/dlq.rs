//! `staunch dlq list|show|redrive` against a `staunch serve` child: dead letters (written with
//! the consumer's `staunch.dlt.*` headers) are listed with counts, shown with their origin
//! and error, replayed with filters, a dry run and a rate limit, never twice, and arrive in
//! the source topic with their key, value and own headers and the redrive marker.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::Staunch;
use common::programs::{run, run_ok};
use serde_json::Value;
use staunch_client::{Client, ClientConfig};
use staunch_consumer::headers::{ErrorKind, ForwardFacts};
use staunch_core::{Acks, BatchBuilder, BrokerApi, PartitionBatch, ProduceCall, TopicPartition};

fn staunch_cli(staunch: &Staunch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_BOOTSTRAP", staunch.bootstrap())
        .env("NO_COLOR", "1");
    command
}

fn ok(staunch: &Staunch, work: &Path, args: &[&str]) -> (String, String) {
    let ran = run_ok(
        &format!("staunch {}", args.join(" ")),
        staunch_cli(staunch, args),
        None,
        work,
    );
    (ran.stdout, ran.stderr)
}

fn json(staunch: &Staunch, work: &Path, args: &[&str]) -> Value {
    let (out, _) = ok(staunch, work, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Writes dead letters to `orders.DLT` as the consumer would: key, value, own header, facts.
async fn write_dead_letters(bootstrap: String) {
    let client = Client::connect(vec![bootstrap], ClientConfig::default())
        .await
        .unwrap();
    let letters = [
        ("k1", "v0", ErrorKind::Fatal),
        ("k2", "v1", ErrorKind::Retriable),
        ("k1", "v2", ErrorKind::Fatal),
    ];
    for (i, (key, value, kind)) in letters.into_iter().enumerate() {
        let facts = ForwardFacts {
            original_topic: "orders".into(),
            original_partition: 0,
            original_offset: i as i64,
            original_timestamp: 1_700_000_000_000 + i as i64,
            attempts: 10,
            first_failure_ms: 1_700_000_001_000,
            last_failure_ms: 1_700_000_002_000,
            error_kind: kind,
            error_type: "Boom".into(),
            error_message: format!("cannot handle {value}"),
            consumer_group: "billing".into(),
            due_ms: None,
        };
        let added = facts.to_headers();
        let headers: Vec<(&[u8], Option<&[u8]>)> = [(&b"trace"[..], Some(&b"t"[..]))]
            .into_iter()
            .chain(
                added
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))),
            )
            .collect();
        let mut b = BatchBuilder::new(facts.original_timestamp);
        b.push(
            facts.original_timestamp,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            headers,
        );
        let out = client
            .produce(ProduceCall {
                acks: Acks::All,
                timeout: Duration::from_secs(10),
                batches: vec![PartitionBatch {
                    partition: TopicPartition::new("orders.DLT", 0),
                    records: Bytes::from(b.build()),
                }],
            })
            .await;
        assert!(out[0].1.is_ok(), "{out:?}");
    }
}

#[test]
fn dlq_list_show_and_redrive_against_staunch_serve() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let staunch = Staunch::start(work);
    for topic in ["orders", "orders.DLT"] {
        ok(
            &staunch,
            work,
            &["topics", "create", topic, "--partitions", "1"],
        );
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(write_dead_letters(staunch.bootstrap()));

    // list: found by name, with counts.
    let list = json(&staunch, work, &["dlq", "list", "--json"]);
    let topics = list["dead_letter_topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1, "{list}");
    assert_eq!(topics[0]["topic"], "orders.DLT");
    assert_eq!(topics[0]["records"], 3);
    assert_eq!(topics[0]["pending"], 3);
    // The size on disk, from DescribeLogDirs: three records' batches, well under a KiB each.
    let size = topics[0]["size_bytes"].as_u64().expect("a size");
    assert!((3 * 61..3 * 1024).contains(&size), "{list}");
    let (text, _) = ok(&staunch, work, &["dlq", "list"]);
    assert!(text.starts_with("TOPIC"), "{text}");
    let shown = if size < 1024 {
        format!("{size} B")
    } else {
        format!("{:.1} KiB", size as f64 / 1024.0)
    };
    assert!(text.contains("SIZE") && text.contains(&shown), "{text}");
    assert!(text.contains("orders.DLT"), "{text}");

    // show: records with their facts and headers.
    let show = json(
        &staunch,
        work,
        &["dlq", "show", "orders.DLT", "--limit", "2", "--json"],
    );
    let records = show["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["key"], "k1");
    assert_eq!(records[0]["facts"]["original_topic"], "orders");
    assert_eq!(records[0]["facts"]["error_kind"], "fatal");
    assert_eq!(records[1]["facts"]["error_message"], "cannot handle v1");
    let (text, _) = ok(&staunch, work, &["dlq", "show", "orders.DLT"]);
    assert!(text.contains("from orders/0/0 after 10 attempts"), "{text}");
    assert!(text.contains("headers: trace=t"), "{text}");

    // A dry run changes nothing.
    let dry = json(
        &staunch,
        work,
        &[
            "dlq",
            "redrive",
            "orders.DLT",
            "--error-kind",
            "fatal",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(dry["matched"], 2, "{dry}");
    assert_eq!(dry["redriven"], 0);
    assert_eq!(dry["skipped_by_filter"], 1);

    // Key filter, then the rest with a rate limit, then nothing.
    let by_key = json(
        &staunch,
        work,
        &["dlq", "redrive", "orders.DLT", "--key", "k2", "--json"],
    );
    assert_eq!(by_key["redriven"], 1, "{by_key}");
    assert_eq!(
        by_key["redriven_to"],
        serde_json::json!({ "orders": 1 }),
        "replayed to the original topic: {by_key}"
    );
    let (out, err) = ok(
        &staunch,
        work,
        &["dlq", "redrive", "orders.DLT", "--rate", "50", "--json"],
    );
    let rest: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rest["redriven"], 2, "{rest}");
    assert_eq!(
        rest["redriven_to"],
        serde_json::json!({ "orders": 2 }),
        "{rest}"
    );
    assert_eq!(rest["already_redriven"], 1);
    assert!(
        err.contains("orders.DLT: read"),
        "progress on stderr: {err}"
    );
    let again = json(&staunch, work, &["dlq", "redrive", "orders.DLT", "--json"]);
    assert_eq!(again["redriven"], 0, "{again}");
    assert_eq!(again["already_redriven"], 3);
    let (text, _) = ok(&staunch, work, &["dlq", "redrive", "orders.DLT"]);
    assert!(text.contains("already redriven"), "{text}");

    // The source topic has the replays: key, value, own header and the marker.
    let (out, _) = ok(
        &staunch,
        work,
        &["consume", "orders", "--exit-at-end", "--json"],
    );
    let replayed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, String, String)> = replayed
        .iter()
        .map(|r| {
            let headers = r["headers"].as_array().unwrap();
            assert!(
                headers
                    .iter()
                    .all(|h| !h["key"].as_str().unwrap().starts_with("staunch.dlt.")),
                "{r}"
            );
            assert!(
                headers
                    .iter()
                    .any(|h| h["key"] == "trace" && h["value"] == "t")
            );
            let from = headers
                .iter()
                .find(|h| h["key"] == "staunch.redrive.from")
                .unwrap();
            (
                r["key"].as_str().unwrap().to_owned(),
                r["value"].as_str().unwrap().to_owned(),
                from["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("k2", "v1", "orders.DLT/0/1"),
            ("k1", "v0", "orders.DLT/0/0"),
            ("k1", "v2", "orders.DLT/0/2"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let list = json(&staunch, work, &["dlq", "list", "orders.DLT", "--json"]);
    assert_eq!(list["dead_letter_topics"][0]["pending"], 0, "{list}");

    // A topic that does not exist is an error, not a new topic.
    let ran = run(
        "staunch dlq show nope.DLT",
        staunch_cli(&staunch, &["dlq", "show", "nope.DLT"]),
        None,
        work,
    );
    assert!(!ran.status.success());
    assert!(ran.stderr.contains("does not exist"), "{}", ran.stderr);
}
