//! The retry / dead-letter suite, generic over `BrokerApi`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staunch_consumer::headers as h;
use staunch_consumer::{
    Consumer, ConsumerConfig, Counters, FailurePolicy, HandlerError, PerRecord, handler_fn,
};
use staunch_core::{BackOff, BrokerApi, TopicPartition};

use crate::support::*;

/// (value, delivery attempt, when) of every delivery.
pub(crate) type Log = Arc<Mutex<Vec<(String, u32, Instant)>>>;

fn fails_on(
    values: &'static [&'static str],
    log: Log,
) -> PerRecord<impl staunch_consumer::Handler> {
    PerRecord(handler_fn(move |r| {
        let log = log.clone();
        async move {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            log.lock()
                .unwrap()
                .push((v.clone(), r.delivery_attempt, Instant::now()));
            if values.contains(&v.as_str()) {
                Err(HandlerError::retriable(
                    "Boom",
                    format!("cannot handle {v}"),
                ))
            } else {
                Ok(())
            }
        }
    }))
}

fn count(log: &Log, v: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(x, _, _)| x == v)
        .count()
}

fn config(group: &str, failure: FailurePolicy) -> ConsumerConfig {
    ConsumerConfig {
        failure,
        fetch_max_wait: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(100),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        ..ConsumerConfig::new(group)
    }
}

/// spring's default: ten deliveries, then `<topic>.DLT` with headers; the next record flows.
pub(crate) async fn default_policy<B: BrokerApi>(api: Arc<B>, topic: &str) {
    create(api.as_ref(), topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api.as_ref(), &tp, &[("k1", "bad"), ("k2", "good")]).await;
    let log: Log = Log::default();
    let handler = fails_on(&["bad"], log.clone());
    let mut consumer =
        Consumer::new(api.clone(), config("g-default", FailurePolicy::default())).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        count(&log, "good") == 1
    })
    .await;
    assert_eq!(count(&log, "bad"), 10, "exactly ten deliveries");
    // The dead letter was sent without waiting; a commit waits for it.
    consumer.commit().await.unwrap();
    let m = consumer.metrics();
    assert_eq!(m.group, "g-default");
    assert_eq!(
        m.topic(topic),
        Counters {
            processed: 1,
            retried: 9,
            forwarded_to_retry: 0,
            dead_lettered: 1,
            forward_failures: 0,
            in_retry: 0,
        },
        "{m:?}"
    );
    assert_eq!(m.total, m.topic(topic), "only one topic: {m:?}");
    let attempts: Vec<u32> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == "bad")
        .map(|e| e.1)
        .collect();
    assert_eq!(attempts, (1..=10).collect::<Vec<_>>());
    let dlt = read_all(api.as_ref(), &format!("{topic}.DLT")).await;
    assert_eq!(dlt.len(), 1);
    let r = &dlt[0];
    assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(r.value.as_deref(), Some(&b"bad"[..]));
    assert_eq!(header(r, h::ORIGINAL_TOPIC), Some(topic));
    assert_eq!(header(r, h::ORIGINAL_PARTITION), Some("0"));
    assert_eq!(header(r, h::ORIGINAL_OFFSET), Some("0"));
    assert_eq!(header(r, h::ORIGINAL_TIMESTAMP), Some("1700000000000"));
    assert_eq!(header(r, h::ATTEMPTS), Some("10"));
    assert_eq!(header(r, h::ERROR_KIND), Some("retriable"));
    assert_eq!(header(r, h::ERROR_TYPE), Some("Boom"));
    assert_eq!(header(r, h::ERROR_MESSAGE), Some("cannot handle bad"));
    assert_eq!(header(r, h::CONSUMER_GROUP), Some("g-default"));
    let facts = r.forward_facts().expect("facts decode");
    assert!(facts.first_failure_ms <= facts.last_failure_ms);
    // "good" went through after the dead letter: its round's commit is pipelined, so it lands
    // by itself while the consumer keeps polling.
    poll_until(&mut consumer, &handler, || async {
        committed(api.as_ref(), "g-default", &tp)
            .await
            .is_some_and(|c| c.offset == 2)
    })
    .await;
    assert_eq!(count(&log, "good"), 1, "no redelivery");
}

/// Exponential 30 ms × 3, two retries: three deliveries at growing spacing, then the DLT.
pub(crate) async fn exponential_backoff<B: BrokerApi>(api: Arc<B>, topic: &str) {
    create(api.as_ref(), topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api.as_ref(), &tp, &[("k", "bad")]).await;
    let log: Log = Log::default();
    let handler = fails_on(&["bad"], log.clone());
    let backoff = BackOff::exponential(Duration::from_millis(30), 3.0, Duration::from_secs(1))
        .with_max_retries(2);
    let mut consumer = Consumer::new(
        api.clone(),
        config("g-exp", FailurePolicy::Blocking(backoff)),
    )
    .unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let dlt = format!("{topic}.DLT");
    poll_until(&mut consumer, &handler, || async {
        !read_all(api.as_ref(), &dlt).await.is_empty()
    })
    .await;
    let times: Vec<Instant> = log.lock().unwrap().iter().map(|e| e.2).collect();
    assert_eq!(times.len(), 3, "three deliveries");
    consumer.commit().await.unwrap();
    let m = consumer.metrics().topic(topic);
    assert_eq!(
        (m.retried, m.dead_lettered, m.processed, m.in_retry),
        (2, 1, 0, 0),
        "{m:?}"
    );
    // Due times are whole wall-clock milliseconds (they are committed with the offset): a
    // failure at 1000.9 ms is stamped 1000, so its 90 ms back-off may end 89.1 ms later.
    let at_least = |ms: u64| Duration::from_millis(ms - 1);
    assert!(times[1] - times[0] >= at_least(30), "{times:?}");
    assert!(times[2] - times[1] >= at_least(90), "{times:?}");
}

/// Blocking retry: record 2 waits until record 1 is dead-lettered.
pub(crate) async fn head_of_line_blocking<B: BrokerApi>(api: Arc<B>, topic: &str) {
    create(api.as_ref(), topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api.as_ref(), &tp, &[("a", "one"), ("b", "two")]).await;
    let log: Log = Log::default();
    let handler = fails_on(&["one"], log.clone());
    let policy = FailurePolicy::Blocking(BackOff::fixed(Duration::from_millis(50), 2));
    let mut consumer = Consumer::new(api.clone(), config("g-hol", policy)).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        count(&log, "two") == 1
    })
    .await;
    let log = log.lock().unwrap().clone();
    let order: Vec<&str> = log.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(order, ["one", "one", "one", "two"]);
    consumer.commit().await.unwrap();
    let m = consumer.metrics().topic(topic);
    assert_eq!(
        (m.retried, m.dead_lettered, m.processed, m.in_retry),
        (2, 1, 1, 0),
        "{m:?}"
    );
}

/// Retry topics: record 2 is processed while record 1 waits in `-retry-300`; both reach the DLT.
pub(crate) async fn retry_topics_do_not_block<B: BrokerApi>(api: Arc<B>, topic: &str) {
    create(api.as_ref(), topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api.as_ref(), &tp, &[("a", "one"), ("b", "two")]).await;
    let log: Log = Log::default();
    let handler = fails_on(&["one", "two"], log.clone());
    let policy = FailurePolicy::RetryTopics(BackOff::fixed(Duration::from_millis(300), 1));
    let mut consumer = Consumer::new(api.clone(), config("g-rt", policy)).unwrap();
    consumer.subscribe(&[topic]).await.unwrap();
    let retry_topic = format!("{topic}-retry-300");
    // Both records failed once and wait in the retry topic.
    let start = Instant::now();
    while log.lock().unwrap().len() < 2 {
        assert!(
            start.elapsed() < LIMIT,
            "no first deliveries within {LIMIT:?}"
        );
        let _ = consumer.poll_batch(&handler).await;
    }
    // The forwards were sent without waiting; a commit waits for them.
    consumer.commit().await.unwrap();
    let m = consumer.metrics();
    let (source, retry) = (m.topic(topic), m.topic(&retry_topic));
    assert_eq!(
        (source.retried, source.forwarded_to_retry, source.in_retry),
        (2, 2, 0),
        "{m:?}"
    );
    assert_eq!(retry.in_retry, 2, "both wait in {retry_topic}: {m:?}");
    assert_eq!(m.total.in_retry, 2, "{m:?}");
    let dlt = format!("{topic}.DLT");
    poll_until(&mut consumer, &handler, || async {
        read_all(api.as_ref(), &dlt).await.len() == 2
    })
    .await;
    consumer.commit().await.unwrap();
    let m = consumer.metrics();
    assert_eq!(
        m.topic(topic),
        Counters {
            processed: 0,
            retried: 2,
            forwarded_to_retry: 2,
            dead_lettered: 0,
            forward_failures: 0,
            in_retry: 0,
        },
        "{m:?}"
    );
    assert_eq!(
        m.topic(&retry_topic),
        Counters {
            dead_lettered: 2,
            ..Counters::default()
        },
        "{m:?}"
    );
    assert_eq!(
        (m.total.retried, m.total.dead_lettered, m.total.in_retry),
        (2, 2, 0)
    );
    let log = log.lock().unwrap().clone();
    let order: Vec<(&str, u32)> = log.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(order, [("one", 1), ("two", 1), ("one", 2), ("two", 2)]);
    let first_one = log[0].2;
    let second_one = log[2].2;
    assert!(
        second_one - first_one >= Duration::from_millis(300),
        "waited for the due time"
    );
    let retried = read_all(api.as_ref(), &format!("{topic}-retry-300")).await;
    assert_eq!(retried.len(), 2);
    assert!(header(&retried[0], h::DUE).is_some());
    let dead = read_all(api.as_ref(), &dlt).await;
    assert_eq!(
        header(&dead[0], h::ORIGINAL_TOPIC),
        Some(topic),
        "original topic survives the retry topic"
    );
    assert_eq!(header(&dead[0], h::ATTEMPTS), Some("2"));

    consumer.close().await.unwrap();
}

/// A new consumer continues the attempt count persisted in the offset metadata. The first
/// consumer waits an hour before attempt 4, and is dropped (no close) once the broker has the
/// count 3: the count of the last failure may reach the broker after the record's next
/// delivery started (`max_uncommitted_failures`), and a crash before that would repeat
/// attempt 3 — not what this test is about.
pub(crate) async fn restart_mid_retry<B: BrokerApi>(api: Arc<B>, topic: &str) {
    create(api.as_ref(), topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api.as_ref(), &tp, &[("k", "bad")]).await;
    let tick = Duration::from_millis(20);
    let policy = FailurePolicy::Blocking(BackOff::fixed(tick, 4));
    let hold = FailurePolicy::Blocking(BackOff::levels(
        vec![tick, tick, Duration::from_secs(3600), tick],
        4,
    ));
    let log: Log = Log::default();
    let handler = fails_on(&["bad"], log.clone());
    let mut first = Consumer::new(api.clone(), config("g-restart", hold)).unwrap();
    first.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut first, &handler, || async { count(&log, "bad") == 3 }).await;
    let m = first.metrics().topic(topic);
    assert_eq!((m.retried, m.in_retry), (3, 1), "{m:?}");
    poll_until(&mut first, &handler, || async {
        committed(api.as_ref(), "g-restart", &tp)
            .await
            .is_some_and(|c| c.metadata.contains(":3:"))
    })
    .await;
    assert_eq!(count(&log, "bad"), 3, "attempt 4 waits an hour");
    drop(first); // no close: nothing more is committed
    let meta = committed(api.as_ref(), "g-restart", &tp).await.unwrap();
    assert_eq!(meta.offset, 0);
    assert!(meta.metadata.contains(":3:"), "{}", meta.metadata);
    let mut second = Consumer::new(api.clone(), config("g-restart", policy)).unwrap();
    second.assign(vec![tp.clone()]).await.unwrap();
    second.poll_batch(&handler).await.unwrap();
    assert_eq!(
        second.metrics().topic(topic).in_retry,
        1,
        "the count read back from the committed metadata: {:?}",
        second.metrics()
    );
    let dlt = format!("{topic}.DLT");
    poll_until(&mut second, &handler, || async {
        !read_all(api.as_ref(), &dlt).await.is_empty()
    })
    .await;
    let attempts: Vec<u32> = log.lock().unwrap().iter().map(|e| e.1).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    second.commit().await.unwrap();
    let m = second.metrics().topic(topic);
    assert_eq!((m.retried, m.dead_lettered, m.in_retry), (1, 1, 0), "{m:?}");
    let dead = read_all(api.as_ref(), &dlt).await;
    assert_eq!(header(&dead[0], h::ATTEMPTS), Some("5"));
}

/// A BrokerApi whose produce to `<topic>.DLT` fails while `down` is set.
pub(crate) async fn dead_letter_topic_unavailable<B: BrokerApi>(
    api: Arc<B>,
    down: Arc<std::sync::atomic::AtomicBool>,
    inner: &impl BrokerApi,
    topic: &str,
) {
    use std::sync::atomic::Ordering;
    create(inner, topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(inner, &tp, &[("k1", "poison"), ("k2", "fine")]).await;
    down.store(true, Ordering::SeqCst);
    let later_produced = std::sync::atomic::AtomicBool::new(false);
    let log: Log = Log::default();
    let l2 = log.clone();
    let handler = PerRecord(handler_fn(move |r| {
        let log = l2.clone();
        async move {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            log.lock()
                .unwrap()
                .push((v.clone(), r.delivery_attempt, Instant::now()));
            if v == "poison" {
                Err(HandlerError::fatal("Poison", "unparseable"))
            } else {
                Ok(())
            }
        }
    }));
    let mut cfg = config("g-dlt-down", FailurePolicy::default());
    cfg.forward_backoff = BackOff::fixed(Duration::from_millis(20), u32::MAX);
    let mut consumer = Consumer::new(api.clone(), cfg).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    for _ in 0..20 {
        let _ = consumer.poll_batch(&handler).await;
        if !consumer.stalled().is_empty() && !later_produced.swap(true, Ordering::SeqCst) {
            // Records that arrive once the partition stopped are not read.
            produce(inner, &tp, &[("k3", "later")]).await;
        }
    }
    assert!(
        later_produced.load(Ordering::SeqCst),
        "the partition stalled"
    );
    let m = consumer.metrics();
    assert!(m.topic(topic).forward_failures >= 2, "{m:?}");
    assert_eq!(
        (m.topic(topic).in_retry, m.topic(topic).dead_lettered),
        (1, 0),
        "the poison record is not finished: {m:?}"
    );
    let stalled = consumer.stalled();
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0].offset, 0);
    assert_eq!(stalled[0].destination, format!("{topic}.DLT"));
    assert_eq!(count(&log, "poison"), 1, "fatal: no retries");
    // "fine" came in the same fetch and may have been handled while the dead letter was in
    // flight; nothing was read after the forward failed.
    assert!(count(&log, "fine") <= 1);
    assert_eq!(count(&log, "later"), 0, "the partition does not advance");
    let c = committed(inner, "g-dlt-down", &tp).await;
    assert!(
        c.as_ref().is_none_or(|c| c.offset == 0),
        "source offset not advanced: {c:?}"
    );
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &handler, || async {
        count(&log, "later") == 1
    })
    .await;
    assert_eq!(count(&log, "fine"), 1, "handled once");
    let dead = read_all(inner, &format!("{topic}.DLT")).await;
    assert!(!dead.is_empty());
    assert!(
        dead.iter()
            .all(|r| r.value.as_deref() == Some(&b"poison"[..]))
    );
    assert_eq!(header(&dead[0], h::ERROR_KIND), Some("fatal"));
    assert!(consumer.stalled().is_empty());
    let m = consumer.metrics().topic(topic);
    assert_eq!(
        (m.dead_lettered, m.retried, m.processed, m.in_retry),
        (1, 0, 2, 0),
        "{m:?}"
    );
    consumer.commit().await.unwrap();
    assert_eq!(committed(inner, "g-dlt-down", &tp).await.unwrap().offset, 3);
}
