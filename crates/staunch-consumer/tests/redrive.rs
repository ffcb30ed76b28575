//! Redrive against the embedded broker: dead letters written by a real consumer go back to the
//! source topic intact and marked, get processed there, and are never replayed twice; filters,
//! dry runs, override topics and a run that died between replay and commit.

#[allow(dead_code)]
#[path = "consumer/support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use staunch_broker::Broker;
use staunch_consumer::headers::{self as h, ErrorKind, ForwardFacts};
use staunch_consumer::redrive::{REDRIVE_FROM, redrive_group};
use staunch_consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, FailurePolicy, HandlerError, PerRecord,
    RedriveOptions, handler_fn, list_dead_letter_topics, read_dead_letters, redrive,
};
use staunch_core::api::{GroupMembership, OffsetAndMetadata};
use staunch_core::{
    Acks, BackOff, BatchBuilder, BrokerApi, PartitionBatch, ProduceCall, TopicPartition,
};

use support::*;

/// (value, its `staunch.redrive.from`) of every record the handler finished.
type Processed = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn embedded() -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    (dir, b)
}

/// Produces one record with headers (acks=all).
async fn produce_with<B: BrokerApi>(
    api: &B,
    tp: &TopicPartition,
    timestamp: i64,
    key: &str,
    value: &str,
    headers: &[(&str, &[u8])],
) {
    let mut b = BatchBuilder::new(timestamp);
    b.push(
        timestamp,
        Some(key.as_bytes()),
        Some(value.as_bytes()),
        headers.iter().map(|(k, v)| (k.as_bytes(), Some(*v))),
    );
    let out = api
        .produce(ProduceCall {
            acks: Acks::All,
            timeout: Duration::from_secs(10),
            batches: vec![PartitionBatch {
                partition: tp.clone(),
                records: Bytes::from(b.build()),
            }],
        })
        .await;
    assert!(out[0].1.is_ok(), "{out:?}");
}

fn facts(topic: &str, offset: i64, kind: ErrorKind, ty: &str, failed_at: i64) -> ForwardFacts {
    ForwardFacts {
        original_topic: topic.into(),
        original_partition: 0,
        original_offset: offset,
        original_timestamp: 1_700_000_000_000 + offset,
        attempts: 3,
        first_failure_ms: failed_at - 10,
        last_failure_ms: failed_at,
        error_kind: kind,
        error_type: ty.into(),
        error_message: format!("failed {offset}"),
        consumer_group: "billing".into(),
        due_ms: None,
    }
}

/// A dead letter as the consumer writes it: own headers first, then the facts.
async fn dead_letter<B: BrokerApi>(api: &B, dlt: &str, key: &str, value: &str, f: &ForwardFacts) {
    let fh = f.to_headers();
    let mut headers: Vec<(&str, &[u8])> = vec![("trace", b"t-1")];
    headers.extend(fh.iter().map(|(k, v)| (*k, v.as_slice())));
    produce_with(
        api,
        &TopicPartition::new(dlt, 0),
        f.original_timestamp,
        key,
        value,
        &headers,
    )
    .await;
}

fn has_staunch_headers(r: &ConsumerRecord) -> bool {
    r.headers.iter().any(|(k, _)| h::is_staunch_header(k))
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_puts_consumer_dead_letters_back_and_they_get_processed_once() {
    let (_d, b) = embedded().await;
    let api = b.as_ref();
    create(api, "orders", 1).await;
    let tp = TopicPartition::new("orders", 0);
    produce_with(
        api,
        &tp,
        1_700_000_000_001,
        "k1",
        "bad1",
        &[("trace", b"a")],
    )
    .await;
    produce_with(api, &tp, 1_700_000_000_002, "k2", "good", &[]).await;
    produce_with(
        api,
        &tp,
        1_700_000_000_003,
        "k3",
        "bad2",
        &[("trace", b"c")],
    )
    .await;

    // The handler fails on "bad*" while the downstream is broken.
    let broken = Arc::new(AtomicBool::new(true));
    let processed: Processed = Arc::default();
    let handler = {
        let broken = broken.clone();
        let processed = processed.clone();
        PerRecord(handler_fn(move |r: ConsumerRecord| {
            let broken = broken.clone();
            let processed = processed.clone();
            async move {
                let v =
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                if v.starts_with("bad") && broken.load(Ordering::SeqCst) {
                    return Err(HandlerError::retriable("Downstream", "service down"));
                }
                let from = header(&r, REDRIVE_FROM).map(str::to_owned);
                processed.lock().unwrap().push((v, from));
                Ok(())
            }
        }))
    };
    let config = ConsumerConfig {
        failure: FailurePolicy::Blocking(BackOff::fixed(Duration::ZERO, 1)),
        fetch_max_wait: Duration::from_millis(50),
        ..ConsumerConfig::new("billing")
    };
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        read_all(api, "orders.DLT").await.len() == 2
    })
    .await;
    // Dead letters are sent without waiting; a commit waits for them.
    consumer.commit().await.unwrap();
    let counted = consumer.metrics().topic("orders");
    assert_eq!(
        (
            counted.processed,
            counted.retried,
            counted.dead_lettered,
            counted.in_retry
        ),
        (1, 2, 2, 0),
        "{counted:?}"
    );

    let summary = list_dead_letter_topics(api, &["orders.DLT".to_owned()])
        .await
        .unwrap();
    assert_eq!(summary[0].records, 2);
    assert_eq!(summary[0].pending, 2);
    assert!(summary[0].oldest_ms.unwrap() <= summary[0].newest_ms.unwrap());
    let letters = read_dead_letters(api, "orders.DLT", 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    let f = letters[0].facts.as_ref().unwrap();
    assert_eq!(
        (f.original_topic.as_str(), f.original_offset),
        ("orders", 0)
    );
    assert_eq!(f.error_type, "Downstream");

    // Fixed downstream; redrive.
    broken.store(false, Ordering::SeqCst);
    let report = redrive(api, &RedriveOptions::new("orders.DLT"))
        .await
        .unwrap();
    assert_eq!((report.matched, report.redriven), (2, 2), "{report:?}");
    assert_eq!(
        report.redriven_to,
        [("orders".to_owned(), 2)].into(),
        "{report:?}"
    );
    let source = read_all(api, "orders").await;
    assert_eq!(source.len(), 5);
    for (replayed, (key, value, ts, trace, from)) in source[3..].iter().zip([
        ("k1", "bad1", 1_700_000_000_001, "a", "orders.DLT/0/0"),
        ("k3", "bad2", 1_700_000_000_003, "c", "orders.DLT/0/1"),
    ]) {
        assert_eq!(replayed.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(replayed.value.as_deref(), Some(value.as_bytes()));
        assert_eq!(replayed.timestamp, ts);
        assert_eq!(header(replayed, "trace"), Some(trace));
        assert_eq!(header(replayed, REDRIVE_FROM), Some(from));
        assert!(!has_staunch_headers(replayed), "{replayed:?}");
    }

    // The consumer picks the replayed records up and they succeed now.
    poll_until(&mut consumer, &handler, || async {
        processed.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(consumer.metrics().topic("orders").processed, 3);
    let got = processed.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            ("good".to_owned(), None),
            ("bad1".to_owned(), Some("orders.DLT/0/0".to_owned())),
            ("bad2".to_owned(), Some("orders.DLT/0/1".to_owned())),
        ]
    );

    // A second run replays nothing.
    let again = redrive(api, &RedriveOptions::new("orders.DLT"))
        .await
        .unwrap();
    assert_eq!(again.redriven, 0);
    assert!(again.redriven_to.is_empty(), "{again:?}");
    assert_eq!(again.matched, 0);
    assert_eq!(again.already_redriven, 2);
    assert_eq!(read_all(api, "orders").await.len(), 5);
    let summary = list_dead_letter_topics(api, &["orders.DLT".to_owned()])
        .await
        .unwrap();
    assert_eq!(summary[0].pending, 0);
    let progress = committed(
        api,
        &redrive_group("orders.DLT"),
        &TopicPartition::new("orders.DLT", 0),
    )
    .await
    .unwrap();
    assert_eq!(progress.offset, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_dry_run() {
    let (_d, b) = embedded().await;
    let api = b.as_ref();
    create(api, "pay", 1).await;
    create(api, "pay.DLT", 1).await;
    let t0 = 1_800_000_000_000;
    dead_letter(
        api,
        "pay.DLT",
        "a",
        "v0",
        &facts("pay", 0, ErrorKind::Fatal, "Parse", t0),
    )
    .await;
    dead_letter(
        api,
        "pay.DLT",
        "b",
        "v1",
        &facts("pay", 1, ErrorKind::Retriable, "Timeout", t0 + 1000),
    )
    .await;
    dead_letter(
        api,
        "pay.DLT",
        "a",
        "v2",
        &facts("pay", 2, ErrorKind::Retriable, "Timeout", t0 + 2000),
    )
    .await;
    dead_letter(
        api,
        "pay.DLT",
        "c",
        "v3",
        &facts("pay", 3, ErrorKind::Fatal, "Parse", t0 + 3000),
    )
    .await;
    let dlt0 = TopicPartition::new("pay.DLT", 0);

    // Dry run: reports, changes nothing.
    let dry = RedriveOptions {
        error_kind: Some(ErrorKind::Fatal),
        dry_run: true,
        ..RedriveOptions::new("pay.DLT")
    };
    let report = redrive(api, &dry).await.unwrap();
    assert!(report.dry_run);
    assert!(report.redriven_to.is_empty(), "{report:?}");
    assert_eq!(
        (report.matched, report.redriven, report.skipped_by_filter),
        (2, 0, 2)
    );
    assert!(read_all(api, "pay").await.is_empty());
    assert!(
        committed(api, &redrive_group("pay.DLT"), &dlt0)
            .await
            .is_none()
    );

    // Key filter.
    let by_key = RedriveOptions {
        key: Some(Bytes::from_static(b"a")),
        ..RedriveOptions::new("pay.DLT")
    };
    let report = redrive(api, &by_key).await.unwrap();
    assert_eq!(
        (report.matched, report.redriven, report.skipped_by_filter),
        (2, 2, 2)
    );
    assert_eq!(values(&read_all(api, "pay").await), ["v0", "v2"]);

    // Time range [t0+500, t0+3000) and error type: only v1 is left to match.
    let by_time = RedriveOptions {
        since_ms: Some(t0 + 500),
        until_ms: Some(t0 + 3000),
        error_type: Some("Timeout".into()),
        ..RedriveOptions::new("pay.DLT")
    };
    let report = redrive(api, &by_time).await.unwrap();
    assert_eq!(report.redriven, 1, "{report:?}");
    assert_eq!(report.already_redriven, 2, "v0 and v2");
    assert_eq!(values(&read_all(api, "pay").await), ["v0", "v2", "v1"]);

    // Everything else: only v3 remains; then nothing.
    let report = redrive(api, &RedriveOptions::new("pay.DLT")).await.unwrap();
    assert_eq!((report.redriven, report.already_redriven), (1, 3));
    assert_eq!(
        values(&read_all(api, "pay").await),
        ["v0", "v2", "v1", "v3"]
    );
    let report = redrive(api, &RedriveOptions::new("pay.DLT")).await.unwrap();
    assert_eq!(
        (report.matched, report.redriven, report.already_redriven),
        (0, 0, 4)
    );
    assert_eq!(
        committed(api, &redrive_group("pay.DLT"), &dlt0)
            .await
            .unwrap()
            .offset,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_topic_and_records_without_facts() {
    let (_d, b) = embedded().await;
    let api = b.as_ref();
    create(api, "x.DLT", 1).await;
    create(api, "elsewhere", 1).await;
    produce_with(
        api,
        &TopicPartition::new("x.DLT", 0),
        5,
        "k",
        "foreign",
        &[("kafka_dlt-exception-message", b"x")],
    )
    .await;
    let report = redrive(api, &RedriveOptions::new("x.DLT")).await.unwrap();
    assert_eq!((report.no_destination, report.redriven), (1, 0));
    let to = RedriveOptions {
        to: Some("elsewhere".into()),
        rate: Some(50.0),
        ..RedriveOptions::new("x.DLT")
    };
    let report = redrive(api, &to).await.unwrap();
    assert_eq!(report.redriven, 1);
    assert_eq!(report.redriven_to, [("elsewhere".to_owned(), 1)].into());
    let out = read_all(api, "elsewhere").await;
    assert_eq!(values(&out), ["foreign"]);
    assert_eq!(header(&out[0], "kafka_dlt-exception-message"), Some("x"));
    assert_eq!(header(&out[0], REDRIVE_FROM), Some("x.DLT/0/0"));
}

/// A run that died after committing its intent: the replay is looked for in the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_replay_and_commit_does_not_replay_twice() {
    let (_d, b) = embedded().await;
    let api = b.as_ref();
    create(api, "s", 1).await;
    create(api, "s.DLT", 1).await;
    for i in 0..2 {
        dead_letter(
            api,
            "s.DLT",
            "k",
            &format!("v{i}"),
            &facts("s", i, ErrorKind::Fatal, "E", 1),
        )
        .await;
    }
    let dlt0 = TopicPartition::new("s.DLT", 0);
    let commit = |metadata: String| async move {
        let out = BrokerApi::commit_offsets(
            api,
            &GroupMembership::simple(redrive_group("s.DLT")),
            vec![(
                TopicPartition::new("s.DLT", 0),
                OffsetAndMetadata {
                    offset: 0,
                    leader_epoch: None,
                    metadata,
                },
            )],
        )
        .await;
        assert!(out[0].1.is_ok());
    };
    // Died after the replay of offset 0 was acknowledged, before marking it done.
    produce_with(
        api,
        &TopicPartition::new("s", 0),
        1,
        "k",
        "v0",
        &[(REDRIVE_FROM, b"s.DLT/0/0")],
    )
    .await;
    commit("staunch-redrive/1;pending=0:0:0:s".into()).await;
    let report = redrive(api, &RedriveOptions::new("s.DLT")).await.unwrap();
    assert_eq!(
        (report.already_redriven, report.redriven),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(values(&read_all(api, "s").await), ["v0", "v1"]);
    assert_eq!(
        committed(api, &redrive_group("s.DLT"), &dlt0)
            .await
            .unwrap()
            .offset,
        2
    );

    // Died before the replay arrived: it is done again.
    commit("staunch-redrive/1;done=1;pending=0:0:2:s".into()).await;
    let report = redrive(api, &RedriveOptions::new("s.DLT")).await.unwrap();
    assert_eq!(
        (report.already_redriven, report.redriven),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(values(&read_all(api, "s").await), ["v0", "v1", "v0"]);
}
