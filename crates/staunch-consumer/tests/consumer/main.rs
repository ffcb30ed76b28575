//! Consumer tests against the embedded broker: the retry / dead-letter suite, ordered mode,
//! batch handlers and a two-member group rebalance.

mod cancel;
mod commit_interval;
mod fetch_turns;
mod ordered_forward;
mod rebalance;
mod restart_backoff;
mod suite;
mod support;
mod traces;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staunch_broker::Broker;
use staunch_consumer::{
    BatchFailure, BatchHandler, Consumer, ConsumerConfig, ConsumerRecord, FailurePolicy,
    HandlerError, PerRecord, handler_fn,
};
use staunch_core::api::*;
use staunch_core::{ApiError, BackOff, BrokerApi, ErrorCode, TopicPartition};

use staunch_testkit::{Intercept, Intercepted};
use support::*;

async fn embedded() -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    (dir, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_ten_deliveries_then_dlt() {
    let (_d, b) = embedded().await;
    suite::default_policy(b, "orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_three_deliveries_then_dlt() {
    let (_d, b) = embedded().await;
    suite::exponential_backoff(b, "exp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_retry_holds_the_next_record() {
    let (_d, b) = embedded().await;
    suite::head_of_line_blocking(b, "hol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_topics_let_the_next_record_through() {
    let (_d, b) = embedded().await;
    suite::retry_topics_do_not_block(b.clone(), "rt").await;
    // Created by the consumer without a retention limit: nothing waiting expires.
    for topic in ["rt-retry-300", "rt.DLT"] {
        assert_eq!(
            retention(&b, topic),
            ("-1".to_owned(), "-1".to_owned()),
            "{topic}"
        );
    }
}

/// `retention.ms` and `retention.bytes` of `topic`, as the broker describes them.
fn retention(broker: &Broker, topic: &str) -> (String, String) {
    let entries = broker.describe_topic_config(topic, None).unwrap();
    let value = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone())
            .unwrap()
    };
    (value("retention.ms"), value("retention.bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_topic_configs_replace_the_unlimited_retention() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "kept", &[("k", "x")]).await;
    let handler = FailAtX::default();
    let mut config = ConsumerConfig::new("g-kept");
    config.fetch_max_wait = Duration::from_millis(20);
    config.forward_topic_configs = vec![("retention.ms".to_owned(), "3600000".to_owned())];
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        dead_letter_arrived(&b).await
    })
    .await;
    assert_eq!(retention(&b, "kept.DLT").0, "3600000");
}

/// Whether the dead letter of `forward_topic_configs_replace_the_unlimited_retention` is there.
async fn dead_letter_arrived(b: &Arc<Broker>) -> bool {
    b.describe_topic_config("kept.DLT", None).is_ok()
        && !read_all(b.as_ref(), "kept.DLT").await.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_retry_continues_the_count() {
    let (_d, b) = embedded().await;
    suite::restart_mid_retry(b, "restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_topic_unavailable_stops_the_partition() {
    let (_d, b) = embedded().await;
    let down = Arc::new(AtomicBool::new(false));
    let api = Arc::new(Intercepted(FailingDlt {
        inner: (*b).clone(),
        down: down.clone(),
    }));
    suite::dead_letter_topic_unavailable(api, down, b.as_ref(), "dltdown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_parks_the_key_not_the_partition() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "keyed",
        &[
            ("A", "a1"),
            ("B", "b1"),
            ("A", "a2"),
            ("B", "b2"),
            ("A", "a3"),
        ],
    )
    .await;
    let log = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let a1_failures = Arc::new(Mutex::new(0));
    let (l, f) = (log.clone(), a1_failures.clone());
    let handler = PerRecord(handler_fn(move |r| {
        let (log, fails) = (l.clone(), f.clone());
        async move {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            let mut n = fails.lock().unwrap();
            let ok = !(v == "a1" && *n < 2);
            if !ok {
                *n += 1;
            }
            log.lock().unwrap().push((v, ok));
            if ok {
                Ok(())
            } else {
                Err(HandlerError::retriable("Busy", "try later"))
            }
        }
    }));
    let config = ordered_config(
        "g-ordered",
        BackOff::fixed(Duration::from_millis(100), 5),
        100,
    );
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        log.lock().unwrap().iter().filter(|e| e.1).count() == 5
    })
    .await;
    let log = log.lock().unwrap().clone();
    let ok: Vec<&str> = log.iter().filter(|e| e.1).map(|e| e.0.as_str()).collect();
    let a_order: Vec<&str> = ok.iter().copied().filter(|v| v.starts_with('a')).collect();
    assert_eq!(a_order, ["a1", "a2", "a3"], "A stays in order");
    let pos = |v: &str| ok.iter().position(|x| *x == v).unwrap();
    assert!(
        pos("b1") < pos("a1") && pos("b2") < pos("a1"),
        "B flows while A waits: {log:?}"
    );
    assert_eq!(log.iter().filter(|e| e.0 == "a1").count(), 3);
    let m = consumer.metrics().topic("keyed");
    assert_eq!(
        (m.processed, m.retried, m.dead_lettered, m.in_retry),
        (5, 2, 0, 0),
        "{m:?}"
    );
    consumer.commit().await.unwrap();
    assert_eq!(
        committed(b.as_ref(), "g-ordered", &tp)
            .await
            .unwrap()
            .offset,
        5
    );
}

/// Fails at the record valued "x": earlier records are committed, it goes to the DLT (fatal).
#[derive(Debug, Default)]
struct FailAtX(Mutex<Vec<Vec<String>>>);

impl BatchHandler for FailAtX {
    async fn handle_batch(&self, records: &[ConsumerRecord]) -> Result<(), BatchFailure> {
        let values: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        self.0.lock().unwrap().push(values.clone());
        match values.iter().position(|v| v == "x") {
            Some(index) => Err(BatchFailure {
                index,
                error: HandlerError::fatal("Bad", "x is bad"),
            }),
            None => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handler_commits_before_the_failed_record() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "batch",
        &[("k", "a"), ("k", "b"), ("k", "x"), ("k", "c")],
    )
    .await;
    let handler = FailAtX::default();
    let mut config = ConsumerConfig::new("g-batch");
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        handler
            .0
            .lock()
            .unwrap()
            .last()
            .is_some_and(|l| l == &["c"])
    })
    .await;
    let calls = handler.0.lock().unwrap().clone();
    assert_eq!(calls, vec![vec!["a", "b", "x", "c"], vec!["c"]]);
    // The dead letter was sent without waiting, and "c" handled meanwhile; a commit waits
    // for the dead letter and then covers "c" too.
    consumer.commit().await.unwrap();
    let m = consumer.metrics().topic("batch");
    assert_eq!(
        (m.processed, m.retried, m.dead_lettered),
        (3, 0, 1),
        "{m:?}"
    );
    let dead = read_all(b.as_ref(), "batch.DLT").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(&b"x"[..]));
    assert_eq!(
        committed(b.as_ref(), "g-batch", &tp).await.unwrap().offset,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_member_group_processes_and_commits_everything() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "shared", 4).await;
    for p in 0..4 {
        let tp = TopicPartition::new("shared", p);
        let values: Vec<String> = (0..10).map(|i| format!("{p}-{i}")).collect();
        let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
        produce(b.as_ref(), &tp, &pairs).await;
    }
    let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // How many partitions each member owns after its latest poll.
    let owns: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut tasks = Vec::new();
    for member in 0..2 {
        let (b, seen, stop, owns) = (b.clone(), seen.clone(), stop.clone(), owns.clone());
        tasks.push(tokio::spawn(async move {
            if member == 1 {
                // The second member joins once the first owns every partition: its join is a
                // rebalance of a running group.
                let start = Instant::now();
                while owns[0].load(Ordering::SeqCst) < 4 {
                    assert!(
                        start.elapsed() < LIMIT,
                        "the first member did not own all 4 partitions within {LIMIT:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let mut config = ConsumerConfig::new("g-shared");
            config.fetch_max_wait = Duration::from_millis(50);
            config.heartbeat_interval = Duration::from_millis(100);
            config.session_timeout = Duration::from_secs(10);
            config.rebalance_timeout = Duration::from_secs(10);
            let mut consumer = Consumer::new(b, config).unwrap();
            consumer.subscribe(&["shared"]).await.unwrap();
            let s = seen.clone();
            let handler = handler_fn(move |r| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().insert(
                        String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                            .into_owned(),
                    );
                    // Work that takes a while (not synchronisation), so records are still
                    // being processed when the second member joins.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(())
                }
            });
            let mut max_owned = 0;
            while !stop.load(Ordering::SeqCst) {
                let _ = consumer.poll(&handler).await;
                max_owned = max_owned.max(consumer.assignment().len());
                owns[member].store(consumer.assignment().len(), Ordering::SeqCst);
            }
            let owned = consumer.assignment().len();
            consumer.close().await.unwrap();
            (owned, max_owned)
        }));
    }
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < LIMIT, "not all processed and committed");
        let mut total = 0;
        for p in 0..4 {
            let tp = TopicPartition::new("shared", p);
            total += committed(b.as_ref(), "g-shared", &tp)
                .await
                .map_or(0, |c| c.offset);
        }
        let rebalanced = seen.lock().unwrap().len() == 40 && total == 40;
        if rebalanced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second member's join has settled once the two own all 4 partitions between them,
    // the second some of them.
    let start = Instant::now();
    loop {
        let (first, second) = (
            owns[0].load(Ordering::SeqCst),
            owns[1].load(Ordering::SeqCst),
        );
        if first + second == 4 && second > 0 {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the partitions were not split between the members within {LIMIT:?}: \
             the first owns {first}, the second {second}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut owned = Vec::new();
    for t in tasks {
        owned.push(t.await.unwrap());
    }
    assert_eq!(seen.lock().unwrap().len(), 40, "every record processed");
    assert_eq!(
        owned[0].0 + owned[1].0,
        4,
        "partitions split between members: {owned:?}"
    );
    assert!(
        owned[1].0 > 0,
        "the second member got partitions: {owned:?}"
    );
}

/// Delegates to `inner`, except produce to a `.DLT` topic fails while `down` is set.
#[derive(Debug, Clone)]
struct FailingDlt<B> {
    inner: B,
    down: Arc<AtomicBool>,
}

impl<B: BrokerApi> Intercept for FailingDlt<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn produce(
        &self,
        call: ProduceCall,
    ) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
        if self.down.load(Ordering::SeqCst)
            && call
                .batches
                .iter()
                .any(|b| b.partition.topic.ends_with(".DLT"))
        {
            return call
                .batches
                .into_iter()
                .map(|b| {
                    (
                        b.partition,
                        Err(ApiError::broker(ErrorCode::NotEnoughReplicas)),
                    )
                })
                .collect();
        }
        self.inner.produce(call).await
    }
}

/// Delegates to `inner`, except offset commits fail while `down` is set.
#[derive(Debug, Clone)]
struct FailingCommits<B> {
    inner: B,
    down: Arc<AtomicBool>,
}

impl<B: BrokerApi> Intercept for FailingCommits<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn commit_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Vec<(TopicPartition, Result<(), ApiError>)> {
        if self.down.load(Ordering::SeqCst) {
            return offsets
                .into_iter()
                .map(|(tp, _)| {
                    (
                        tp,
                        Err(ApiError::broker(ErrorCode::CoordinatorNotAvailable)),
                    )
                })
                .collect();
        }
        self.inner.commit_offsets(member, offsets).await
    }
}

/// `b` behind offset commits that fail while the returned flag is set (it starts set).
fn commits_down(b: &Arc<Broker>) -> (Arc<AtomicBool>, Arc<Intercepted<FailingCommits<Broker>>>) {
    let down = Arc::new(AtomicBool::new(true));
    let api = Arc::new(Intercepted(FailingCommits {
        inner: (**b).clone(),
        down: down.clone(),
    }));
    (down, api)
}

/// Commits what `consumer` processed and checks that `group` is then committed at `offset`
/// in `tp` on `b`.
async fn commit_and_expect<B: BrokerApi>(
    consumer: &mut Consumer<B>,
    b: &Broker,
    group: &str,
    tp: &TopicPartition,
    offset: i64,
) {
    consumer.commit().await.unwrap();
    assert_eq!(committed(b, group, tp).await.unwrap().offset, offset);
}

/// Blocking retry with `max_uncommitted_failures` 0 delivers a record again only once the
/// count of its failed delivery is committed: a consumer killed at any moment never goes back
/// to an attempt number it already reported as failed. While commits fail, the record waits
/// (it is not retried with a count that a restart would forget); once they succeed, each
/// delivery `n > 1` finds `n - 1` failures in the committed metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_retry_waits_for_the_attempt_count_to_be_committed() {
    let bad = blocking_retry_while_commits_fail(0, Duration::from_millis(5)).await;
    assert_eq!(
        bad,
        [
            (1, None),
            (2, Some(1)),
            (3, Some(2)),
            (4, Some(3)),
            (5, Some(4))
        ],
        "each delivery after the first finds the previous failures committed"
    );
}

/// With the default `max_uncommitted_failures` 1, a failed record is delivered again without
/// waiting for its count to be committed — once: while commits fail it gets exactly two
/// deliveries, and once they succeed, each delivery `n > 2` finds at least `n - 2` failures
/// committed, so a restart repeats at most one failed attempt number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_retry_runs_at_most_one_failure_ahead_of_the_committed_count() {
    for pause in [Duration::from_millis(5), Duration::ZERO] {
        let bad = blocking_retry_while_commits_fail(1, pause).await;
        let attempts: Vec<u32> = bad.iter().map(|d| d.0).collect();
        assert_eq!(attempts, [1, 2, 3, 4, 5], "{pause:?}: {bad:?}");
        for (attempt, committed) in &bad {
            assert!(
                committed.unwrap_or(0) + 2 >= *attempt,
                "{pause:?}: delivery {attempt} found only {committed:?} failures committed: {bad:?}"
            );
        }
    }
}

/// `max_uncommitted_failures` is bounded: it also bounds how often a record failing with zero
/// back-off is delivered again within one poll.
#[tokio::test]
async fn max_uncommitted_failures_above_16_is_refused() {
    let (_d, b) = embedded().await;
    let mut config = ConsumerConfig::new("g-lag");
    config.max_uncommitted_failures = 17;
    assert!(matches!(
        Consumer::new(b.clone(), config),
        Err(staunch_consumer::ConsumerError::Config(_))
    ));
}

/// Runs a blocking-retry consumer (5 deliveries, `pause` apart) with
/// `max_uncommitted_failures = lag` over a record that always fails and one that succeeds.
/// Commits fail for the first 300 ms: by then the bad record must have been delivered exactly
/// `lag + 1` times. Then they succeed; once the good record is handled, checks the bad one is
/// in the DLT after 5 attempts and returns its deliveries as (attempt, failures of it in the
/// committed metadata at the time).
async fn blocking_retry_while_commits_fail(lag: u32, pause: Duration) -> Vec<(u32, Option<u32>)> {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "ledger", &[("k", "bad"), ("k", "good")]).await;
    let (down, api) = commits_down(&b);
    // (value, delivery attempt, failures in the committed ledger when it was delivered)
    let log = Arc::new(Mutex::new(Vec::<(String, u32, Option<u32>)>::new()));
    let (l, inner) = (log.clone(), b.clone());
    let handler = PerRecord(handler_fn(move |r| {
        let (log, inner) = (l.clone(), inner.clone());
        async move {
            let tp = r.topic_partition();
            let ledger = committed(inner.as_ref(), "g-ledger", &tp)
                .await
                .and_then(|c| {
                    staunch_consumer::ledger::RetryLedger::decode(&c.metadata).get(r.offset)
                })
                .map(|e| e.attempts);
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            log.lock()
                .unwrap()
                .push((v.clone(), r.delivery_attempt, ledger));
            if v == "bad" {
                Err(HandlerError::retriable("Boom", "always"))
            } else {
                Ok(())
            }
        }
    }));
    let mut config = ConsumerConfig::new("g-ledger");
    config.failure = FailurePolicy::Blocking(BackOff::fixed(pause, 4));
    config.fetch_max_wait = Duration::from_millis(20);
    config.max_uncommitted_failures = lag;
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = Instant::now();
    let mut failed_polls = 0;
    while start.elapsed() < Duration::from_millis(300) {
        // A pipelined commit's failure is reported by a later poll.
        failed_polls += usize::from(consumer.poll_batch(&handler).await.is_err());
    }
    assert!(failed_polls > 0, "commits fail, and polls say so");
    let uncommitted: Vec<(String, u32, Option<u32>)> = (1..=lag + 1)
        .map(|attempt| ("bad".to_owned(), attempt, None))
        .collect();
    assert_eq!(
        log.lock().unwrap().clone(),
        uncommitted,
        "no more deliveries while {} failures are not committed",
        lag + 1
    );
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &handler, || async {
        log.lock().unwrap().iter().any(|e| e.0 == "good")
    })
    .await;
    consumer.commit().await.unwrap();
    let dead = read_all(b.as_ref(), "ledger.DLT").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], staunch_consumer::headers::ATTEMPTS),
        Some("5")
    );
    let log = log.lock().unwrap().clone();
    log.iter()
        .filter(|e| e.0 == "bad")
        .map(|e| (e.1, e.2))
        .collect()
}

/// A seek wins over what a poll kept for the next round: seeking past a record waiting for its
/// blocking retry delivers the next one at once, and seeking back delivers from the new offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_past_a_record_waiting_for_its_retry() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "seeky", &[("k", "a"), ("k", "b"), ("k", "c")]).await;
    let log = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
    let failed = Arc::new(AtomicBool::new(false));
    let (l, f) = (log.clone(), failed.clone());
    let handler = PerRecord(handler_fn(move |r| {
        let (log, failed) = (l.clone(), f.clone());
        async move {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            log.lock().unwrap().push((v.clone(), r.delivery_attempt));
            if v == "a" && !failed.swap(true, Ordering::SeqCst) {
                Err(HandlerError::retriable("Busy", "later"))
            } else {
                Ok(())
            }
        }
    }));
    let mut config = ConsumerConfig::new("g-seek");
    config.failure = FailurePolicy::Blocking(BackOff::fixed(Duration::from_secs(60), 3));
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        !log.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(consumer.metrics().topic("seeky").in_retry, 1);
    consumer.seek(&tp, 1);
    poll_until(&mut consumer, &handler, || async {
        log.lock().unwrap().len() == 3
    })
    .await;
    consumer.seek(&tp, 0);
    poll_until(&mut consumer, &handler, || async {
        log.lock().unwrap().len() == 6
    })
    .await;
    let got = log.lock().unwrap().clone();
    let got: Vec<(&str, u32)> = got.iter().map(|(v, n)| (v.as_str(), *n)).collect();
    assert_eq!(
        got,
        [("a", 1), ("b", 1), ("c", 1), ("a", 1), ("b", 1), ("c", 1)],
        "a's failed attempt was committed away with the seek past it"
    );
    assert_eq!(consumer.metrics().topic("seeky").in_retry, 0);
    commit_and_expect(&mut consumer, &b, "g-seek", &tp, 3).await;
}

/// `max_poll_records` caps what one poll takes in across partitions; the records left over
/// are delivered by later polls, each once, and the committed offsets never pass a record the
/// handler has not finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_poll_records_caps_each_poll_and_commits_only_what_was_handled() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "capped", 2).await;
    for p in 0..2 {
        let tp = TopicPartition::new("capped", p);
        let values: Vec<String> = (0..5).map(|i| format!("{p}-{i}")).collect();
        let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
        produce(b.as_ref(), &tp, &pairs).await;
    }
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let handler = handler_fn(move |r| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
            Ok(())
        }
    });
    let mut config = ConsumerConfig::new("g-capped");
    config.fetch_max_wait = Duration::from_millis(20);
    config.max_poll_records = Some(3);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    let tps = [
        TopicPartition::new("capped", 0),
        TopicPartition::new("capped", 1),
    ];
    consumer.assign(tps.to_vec()).await.unwrap();
    let committed_total = |b: Arc<staunch_broker::Broker>| async move {
        let mut total = 0;
        for p in 0..2 {
            let tp = TopicPartition::new("capped", p);
            total += committed(b.as_ref(), "g-capped", &tp)
                .await
                .map_or(0, |c| c.offset);
        }
        total
    };
    let start = Instant::now();
    let mut polls = 0;
    while seen.lock().unwrap().len() < 6 {
        assert!(start.elapsed() < LIMIT, "6 records not handled in time");
        let before = seen.lock().unwrap().len();
        consumer.poll(&handler).await.unwrap();
        let after = seen.lock().unwrap().len();
        assert!(
            after - before <= 3,
            "one poll handled {} records",
            after - before
        );
        // The poll's commit is pipelined; an explicit commit waits for it.
        consumer.commit().await.unwrap();
        assert_eq!(committed_total(b.clone()).await, after as i64);
        polls += 1;
    }
    assert!(
        polls >= 2,
        "6 records at most 3 a poll need 2 polls, took {polls}"
    );
    // Stop at exactly 8 (6, 7 or 8 were handled): a limit of what is left.
    consumer.set_max_poll_records(Some(8 - seen.lock().unwrap().len()));
    while seen.lock().unwrap().len() < 8 {
        assert!(
            start.elapsed() < LIMIT,
            "the 8th record not handled in time"
        );
        consumer.poll(&handler).await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 8);
    let positions: i64 = tps.iter().map(|tp| consumer.position(tp).unwrap()).sum();
    assert_eq!(
        positions, 8,
        "positions stop right after the handled records"
    );
    // A limit of zero takes in nothing.
    consumer.set_max_poll_records(Some(0));
    consumer.poll(&handler).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 8);
    consumer.close().await.unwrap();
    assert_eq!(committed_total(b.clone()).await, 8);
    // The rest, read by a new consumer of the group: each record once in all.
    let mut config = ConsumerConfig::new("g-capped");
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(tps.to_vec()).await.unwrap();
    while seen.lock().unwrap().len() < 10 {
        assert!(start.elapsed() < LIMIT, "the rest not handled in time");
        consumer.poll(&handler).await.unwrap();
    }
    let mut all = seen.lock().unwrap().clone();
    all.sort();
    let expected: Vec<String> = (0..2)
        .flat_map(|p| (0..5).map(move |i| format!("{p}-{i}")))
        .collect();
    assert_eq!(all, expected, "every record handled exactly once");
    consumer.close().await.unwrap();
}

/// Offsets 0..9 of `tp` in three batches of three records ("a".."i", key "k").
async fn produce_three_batches(b: &Broker, tp: &TopicPartition) {
    for batch in [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]] {
        let records: Vec<(&str, &str)> = batch.iter().map(|v| ("k", *v)).collect();
        produce(b, tp, &records).await;
    }
}

/// A consumer config of `group` whose every fetch brings one batch per partition, so tests
/// see the read-ahead one batch at a time: a partition may bring 100 bytes, one of these
/// tests' batches of three one-letter records (91 bytes) but not two. (The first partition
/// with data brings one batch whatever its size.)
fn one_batch_per_fetch(group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group);
    config.fetch_max_wait = Duration::from_millis(20);
    config.partition_max_bytes = 100;
    config
}

/// The next fetch is sent ahead while a round's records are handled; a seek back must not
/// hand out that read-ahead (it starts where the seek left), but fetch from the new position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_drops_the_read_ahead() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "ahead", 1).await;
    let tp = TopicPartition::new("ahead", 0);
    produce_three_batches(b.as_ref(), &tp).await;
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let s = seen.clone();
    let handler = handler_fn(move |r| {
        s.lock().unwrap().push(r.offset);
        async { Ok(()) }
    });
    let mut consumer = Consumer::new(b.clone(), one_batch_per_fetch("g-ahead")).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    consumer.poll(&handler).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    // The read-ahead of offsets 3..6 is out now; go back instead.
    consumer.seek(&tp, 1);
    consumer.poll(&handler).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 1, 2]);
    consumer.poll(&handler).await.unwrap();
    consumer.poll(&handler).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
    consumer.close().await.unwrap();
}

/// A seek on one partition while another is read ahead too: the read-ahead's answer for the
/// other partition is used, the one for the sought partition (from where it was before the
/// seek) is not — else the records between the seek and that answer would be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_drops_the_read_ahead_of_that_partition_only() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "ahead2", 2).await;
    let parts = [
        TopicPartition::new("ahead2", 0),
        TopicPartition::new("ahead2", 1),
    ];
    for tp in &parts {
        produce_three_batches(b.as_ref(), tp).await;
    }
    let seen = Arc::new(Mutex::new(Vec::<(i32, i64)>::new()));
    let s = seen.clone();
    let handler = handler_fn(move |r| {
        s.lock().unwrap().push((r.partition, r.offset));
        async { Ok(()) }
    });
    let mut consumer = Consumer::new(b.clone(), one_batch_per_fetch("g-ahead2")).unwrap();
    consumer.assign(parts.to_vec()).await.unwrap();
    consumer.poll(&handler).await.unwrap();
    // Both partitions are read ahead from offset 3 now; partition 0 goes back to 1.
    consumer.seek(&parts[0], 1);
    for _ in 0..20 {
        if seen.lock().unwrap().len() >= 20 {
            break;
        }
        consumer.poll(&handler).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let of = |partition: i32| -> Vec<i64> {
        seen.iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect()
    };
    assert_eq!(of(0), [0, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8], "{seen:?}");
    assert_eq!(of(1), [0, 1, 2, 3, 4, 5, 6, 7, 8], "{seen:?}");
    consumer.close().await.unwrap();
}

/// A partition without records rides along in the read-ahead while another brings records;
/// records that arrive in it later are read — each once, in order — while the busy partition
/// is still being read, and once it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arriving_in_a_partition_riding_along_in_the_read_ahead_are_read_once() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "ride", 2).await;
    let (busy, idle) = (
        TopicPartition::new("ride", 0),
        TopicPartition::new("ride", 1),
    );
    produce_three_batches(b.as_ref(), &busy).await;
    let seen = Arc::new(Mutex::new(Vec::<(i32, String)>::new()));
    let s = seen.clone();
    let handler = handler_fn(move |r| {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        s.lock().unwrap().push((r.partition, value));
        async { Ok(()) }
    });
    let mut consumer = Consumer::new(b.clone(), one_batch_per_fetch("g-ride")).unwrap();
    consumer
        .assign(vec![busy.clone(), idle.clone()])
        .await
        .unwrap();
    consumer.poll(&handler).await.unwrap();
    produce(b.as_ref(), &idle, &[("k", "x")]).await;
    for _ in 0..4 {
        consumer.poll(&handler).await.unwrap();
    }
    produce(b.as_ref(), &idle, &[("k", "y")]).await;
    for _ in 0..20 {
        if seen.lock().unwrap().len() >= 11 {
            break;
        }
        consumer.poll(&handler).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let of = |partition: i32| -> Vec<String> {
        seen.iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        of(0),
        ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
        "{seen:?}"
    );
    assert_eq!(of(1), ["x", "y"], "{seen:?}");
    consumer.close().await.unwrap();
}

/// Ordered mode (with `max_uncommitted_failures` 0) waits for a failure's count per key, not
/// per partition: while commits fail,
/// the failed key is not delivered again, yet the other keys keep flowing (their commit is not
/// waited for); once commits succeed, the key's next delivery finds its failure committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_waits_for_the_count_per_key_not_per_partition() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "okeys",
        &[("A", "a1"), ("B", "b1"), ("A", "a2")],
    )
    .await;
    let (down, api) = commits_down(&b);
    // (value, delivery attempt, failures of it in the committed ledger when it was delivered)
    let log = Arc::new(Mutex::new(Vec::<(String, u32, Option<u32>)>::new()));
    let (l, inner) = (log.clone(), b.clone());
    let handler = PerRecord(handler_fn(move |r| {
        let (log, inner) = (l.clone(), inner.clone());
        async move {
            let ledger = committed(inner.as_ref(), "g-okeys", &r.topic_partition())
                .await
                .and_then(|c| {
                    staunch_consumer::ledger::RetryLedger::decode(&c.metadata).get(r.offset)
                })
                .map(|e| e.attempts);
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            let fail = v == "a1" && r.delivery_attempt == 1;
            log.lock().unwrap().push((v, r.delivery_attempt, ledger));
            if fail {
                Err(HandlerError::retriable("Busy", "once"))
            } else {
                Ok(())
            }
        }
    }));
    let mut config = ordered_config("g-okeys", BackOff::fixed(Duration::ZERO, 3), 100);
    config.max_uncommitted_failures = 0;
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = Instant::now();
    let mut produced_later = false;
    while start.elapsed() < Duration::from_millis(300) {
        let _ = consumer.poll_batch(&handler).await;
        if !produced_later && !log.lock().unwrap().is_empty() {
            // Fetched after A's failure: the partition is still read.
            produce(b.as_ref(), &tp, &[("B", "b2")]).await;
            produced_later = true;
        }
    }
    assert_eq!(
        log.lock().unwrap().clone(),
        [
            ("a1".to_owned(), 1, None),
            ("b1".to_owned(), 1, None),
            ("b2".to_owned(), 1, None)
        ],
        "B flows; A waits for its failure to be committed"
    );
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &handler, || async {
        log.lock().unwrap().iter().any(|e| e.0 == "a2")
    })
    .await;
    assert_eq!(
        log.lock().unwrap().clone(),
        [
            ("a1".to_owned(), 1, None),
            ("b1".to_owned(), 1, None),
            ("b2".to_owned(), 1, None),
            ("a1".to_owned(), 2, Some(1)),
            ("a2".to_owned(), 1, None),
        ],
        "A's next delivery finds its failure committed, and A stays in order"
    );
    commit_and_expect(&mut consumer, &b, "g-okeys", &tp, 4).await;
}

/// Ordered mode with the default `max_uncommitted_failures` 1 and zero back-off retries a
/// failed key's head at once, without waiting for its count to be committed — once: while
/// commits fail, the head gets exactly two deliveries, the key's later record stays parked
/// and the other key flows. Once commits succeed, the head runs out of attempts, goes to the
/// DLT, and its key goes on in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_retries_a_failed_key_once_before_its_count_is_committed() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "oonce",
        &[("A", "a1"), ("B", "b1"), ("A", "a2"), ("B", "b2")],
    )
    .await;
    let (down, api) = commits_down(&b);
    let log = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
    let l = log.clone();
    let handler = PerRecord(handler_fn(move |r| {
        let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        let fail = v == "a1";
        l.lock().unwrap().push((v, r.delivery_attempt));
        async move {
            if fail {
                Err(HandlerError::retriable("Boom", "always"))
            } else {
                Ok(())
            }
        }
    }));
    let config = ordered_config("g-oonce", BackOff::fixed(Duration::ZERO, 3), 100);
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        let _ = consumer.poll_batch(&handler).await;
    }
    let seen =
        |log: &Mutex<Vec<(String, u32)>>| -> Vec<(String, u32)> { log.lock().unwrap().clone() };
    let pairs = |expected: &[(&str, u32)]| -> Vec<(String, u32)> {
        expected
            .iter()
            .map(|(v, n)| ((*v).to_owned(), *n))
            .collect()
    };
    assert_eq!(
        seen(&log),
        pairs(&[("a1", 1), ("a1", 2), ("b1", 1), ("b2", 1)]),
        "A's head is retried once at once, then waits for its count; B flows"
    );
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &handler, || async {
        log.lock().unwrap().iter().any(|e| e.0 == "a2")
    })
    .await;
    assert_eq!(
        seen(&log),
        pairs(&[
            ("a1", 1),
            ("a1", 2),
            ("b1", 1),
            ("b2", 1),
            ("a1", 3),
            ("a1", 4),
            ("a2", 1)
        ]),
        "A's head runs out of attempts, then A goes on in order"
    );
    consumer.commit().await.unwrap();
    assert_eq!(read_all(b.as_ref(), "oonce.DLT").await.len(), 1);
    assert_eq!(
        committed(b.as_ref(), "g-oonce", &tp).await.unwrap().offset,
        4
    );
}

/// Ordered mode keeps the attempt counts of at most 64 failed records per partition, so they
/// always fit the committed metadata (4096 bytes in Kafka): with 64 keys waiting for a retry,
/// no further record is handed out until some finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_retries_at_most_64_records_at_a_time() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "many", 1).await;
    let tp = TopicPartition::new("many", 0);
    let keys: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
    let records: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    produce(b.as_ref(), &tp, &records).await;
    let (down, api) = commits_down(&b);
    let deliveries = Arc::new(Mutex::new(Vec::<(i64, u32)>::new()));
    let d = deliveries.clone();
    let handler = PerRecord(handler_fn(move |r| {
        d.lock().unwrap().push((r.offset, r.delivery_attempt));
        let first = r.delivery_attempt == 1;
        async move {
            if first {
                Err(HandlerError::retriable("Busy", "first delivery"))
            } else {
                Ok(())
            }
        }
    }));
    let mut config = ordered_config("g-many", BackOff::fixed(Duration::ZERO, 3), 1_000);
    // Every failure waits for its count, so the failed records pile up.
    config.max_uncommitted_failures = 0;
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        let _ = consumer.poll_batch(&handler).await;
    }
    let first: Vec<i64> = deliveries.lock().unwrap().iter().map(|d| d.0).collect();
    assert_eq!(
        first,
        (0..64).collect::<Vec<_>>(),
        "64 failed, then it waits"
    );
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &handler, || async {
        deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.1 == 2)
            .count()
            == 70
    })
    .await;
    commit_and_expect(&mut consumer, &b, "g-many", &tp, 70).await;
}

/// Several dead letters of one round go out in one produce call; when it fails, every one of
/// them waits (the first is retried, the rest queue behind it), the committed offset stays
/// below the first, and once the topic is back all arrive, in order, before the offset moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dead_letters_of_one_round_all_wait_and_land_in_order() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "poisons",
        &[
            ("k", "p1"),
            ("k", "ok1"),
            ("k", "p2"),
            ("k", "p3"),
            ("k", "ok2"),
        ],
    )
    .await;
    let down = Arc::new(AtomicBool::new(true));
    let api = Arc::new(Intercepted(FailingDlt {
        inner: (*b).clone(),
        down: down.clone(),
    }));
    let handler = handler_fn(|r| {
        let poison = r.value.as_deref().is_some_and(|v| v.starts_with(b"p"));
        async move {
            if poison {
                Err(HandlerError::fatal("Poison", "unparseable"))
            } else {
                Ok(())
            }
        }
    });
    let mut config = ConsumerConfig::new("g-poisons");
    config.fetch_max_wait = Duration::from_millis(20);
    config.forward_backoff = BackOff::fixed(Duration::from_millis(20), u32::MAX);
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        let _ = consumer.poll(&handler).await;
    }
    let m = consumer.metrics().topic("poisons");
    assert_eq!((m.dead_lettered, m.in_retry), (0, 3), "{m:?}");
    assert_eq!(consumer.stalled().len(), 1);
    assert_eq!(consumer.stalled()[0].offset, 0);
    let c = committed(b.as_ref(), "g-poisons", &tp).await;
    assert!(c.as_ref().is_none_or(|c| c.offset == 0), "{c:?}");
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &api, &handler, &tp).await;
    let dead: Vec<String> = read_all(b.as_ref(), "poisons.DLT")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(dead, ["p1", "p2", "p3"]);
    let m = consumer.metrics().topic("poisons");
    assert_eq!(
        (m.dead_lettered, m.processed, m.in_retry),
        (3, 2, 0),
        "{m:?}"
    );
    assert_eq!(
        committed(b.as_ref(), "g-poisons", &tp)
            .await
            .unwrap()
            .offset,
        5
    );

    /// Polls until everything is dead-lettered and committed.
    async fn poll_until<B: BrokerApi, H: staunch_consumer::Handler>(
        consumer: &mut Consumer<B>,
        api: &B,
        handler: &H,
        tp: &TopicPartition,
    ) {
        let start = Instant::now();
        loop {
            let _ = consumer.poll(handler).await;
            consumer.commit().await.unwrap();
            if committed(api, "g-poisons", tp)
                .await
                .is_some_and(|c| c.offset == 5)
            {
                return;
            }
            assert!(start.elapsed() < LIMIT, "not committed within {LIMIT:?}");
        }
    }
}

/// After a restart, the retry counts read back from the committed metadata belong to records
/// ahead of the position: they do not count against ordered mode's 64 retrying records, or a
/// consumer starting with 64 of them would never read on to finish them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_reads_on_past_counts_read_back_after_a_restart() {
    use staunch_consumer::ledger::{RetryEntry, RetryLedger};
    let (_d, b) = embedded().await;
    create(b.as_ref(), "resume", 1).await;
    let tp = TopicPartition::new("resume", 0);
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let records: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    produce(b.as_ref(), &tp, &records).await;
    // What a consumer that died with 64 keys failing once left behind.
    let mut ledger = RetryLedger::default();
    for offset in 10..74 {
        ledger.set(
            offset,
            RetryEntry {
                attempts: 1,
                first_failure_ms: 1_700_000_000_000,
                last_failure_ms: 1_700_000_000_000,
            },
        );
    }
    commit_ledger(b.as_ref(), "g-resume", &tp, 0, &ledger).await;
    let attempts = Arc::new(Mutex::new(Vec::<(i64, u32)>::new()));
    let a = attempts.clone();
    let handler = PerRecord(handler_fn(move |r| {
        a.lock().unwrap().push((r.offset, r.delivery_attempt));
        async { Ok(()) }
    }));
    let config = ordered_config("g-resume", BackOff::fixed(Duration::ZERO, 3), 1_000);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        attempts.lock().unwrap().len() == 100
    })
    .await;
    let attempts = attempts.lock().unwrap().clone();
    let expected: Vec<(i64, u32)> = (0..100)
        .map(|o| (o, if (10..74).contains(&o) { 2 } else { 1 }))
        .collect();
    assert_eq!(attempts, expected, "the counts go on where they were");
    commit_and_expect(&mut consumer, &b, "g-resume", &tp, 100).await;
}

/// Delegates to `inner`; produce to a `.DLT` topic is answered only after `delay`, and
/// counted in `calls` when it is written and in `answered` when its answer goes back.
#[derive(Debug, Clone)]
struct SlowDlt<B> {
    inner: B,
    delay: Duration,
    calls: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl<B: BrokerApi> Intercept for SlowDlt<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn produce(
        &self,
        call: ProduceCall,
    ) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
        let slow = call
            .batches
            .iter()
            .any(|b| b.partition.topic.ends_with(".DLT"));
        let answers = self.inner.produce(call).await;
        if slow {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // What is being tested: a dead letter whose answer takes a while.
            tokio::time::sleep(self.delay).await;
            self.answered.fetch_add(1, Ordering::SeqCst);
        }
        answers
    }
}

/// A seek made while a dead letter is in flight wins: the dead letter's acknowledgement,
/// applied later, does not move the position past the record sought back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_wins_over_a_forward_acknowledged_later() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "seekfwd",
        &[("k", "poison"), ("k", "a"), ("k", "b")],
    )
    .await;
    let answered = Arc::new(AtomicUsize::new(0));
    let api = Arc::new(Intercepted(SlowDlt {
        inner: (*b).clone(),
        delay: Duration::from_millis(100),
        calls: Arc::default(),
        answered: answered.clone(),
    }));
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let s = seen.clone();
    let handler = handler_fn(move |r| {
        s.lock().unwrap().push(r.offset);
        let poison = r.value.as_deref() == Some(&b"poison"[..]);
        async move {
            if poison {
                Err(HandlerError::fatal("Poison", "unparseable"))
            } else {
                Ok(())
            }
        }
    });
    let mut config = ConsumerConfig::new("g-seekfwd");
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    consumer.poll(&handler).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [0, 1, 2],
        "the dead letter is in flight"
    );
    // Wait for the dead letter's answer (it is applied by the next poll), then go back to the
    // start.
    let start = Instant::now();
    while answered.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < LIMIT,
            "the dead letter was not answered within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consumer.seek(&tp, 0);
    consumer.poll(&handler).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[3], 0,
        "delivered again from the offset sought: {seen:?}"
    );
    consumer.close().await.unwrap();
}

/// While a partition's forward call is being written, the forwards of the next rounds gather
/// and go out together once it is answered: 30 dead letters, one per round, take a handful of
/// produce calls instead of 30 — and still land once each, in order, with the source offset
/// committed past them only once all are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_gather_while_the_previous_call_is_written() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "gather", 1).await;
    let tp = TopicPartition::new("gather", 0);
    let values: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    for v in &values {
        produce(b.as_ref(), &tp, &[("k", v.as_str())]).await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let api = Arc::new(Intercepted(SlowDlt {
        inner: (*b).clone(),
        delay: Duration::from_millis(200),
        calls: calls.clone(),
        answered: Arc::default(),
    }));
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    let handler = PerRecord(handler_fn(move |_| {
        d.fetch_add(1, Ordering::SeqCst);
        async { Err(HandlerError::fatal("Poison", "always")) }
    }));
    let mut consumer = Consumer::new(api.clone(), one_batch_per_fetch("g-gather")).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        delivered.load(Ordering::SeqCst) == 30
    })
    .await;
    consumer.commit().await.unwrap();
    let dead = read_all(b.as_ref(), "gather.DLT").await;
    let got: Vec<String> = dead
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(got, values, "each dead letter once, in order");
    let calls = calls.load(Ordering::SeqCst);
    assert!(
        calls <= 10,
        "{calls} produce calls for 30 dead letters: they did not gather"
    );
    assert_eq!(
        committed(b.as_ref(), "g-gather", &tp).await.unwrap().offset,
        30
    );
}
