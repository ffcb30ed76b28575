//! A record retried in place keeps its back-off across a restart: a consumer that takes over
//! a partition (a restart, a rebalance) delivers it again only once the back-off since its
//! last failure is over — in ordered mode only its key waits.

use super::*;

/// The back-off of these tests.
const BACK_OFF: Duration = Duration::from_secs(1);
/// Failure times are kept in whole milliseconds.
const CLOCK_SLACK: Duration = Duration::from_millis(5);

/// Each delivery: value, attempt, when.
type Deliveries = Arc<Mutex<Vec<(String, u32, Instant)>>>;

/// Records every delivery; a record whose value starts with "flaky" fails its first delivery.
fn flaky_once(deliveries: Deliveries) -> PerRecord<impl staunch_consumer::Handler> {
    PerRecord(handler_fn(move |r| {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        let fail = value.starts_with("flaky") && r.delivery_attempt == 1;
        deliveries
            .lock()
            .unwrap()
            .push((value, r.delivery_attempt, Instant::now()));
        async move {
            if fail {
                Err(HandlerError::retriable("Flaky", "first delivery fails"))
            } else {
                Ok(())
            }
        }
    }))
}

fn config(group: &str, ordered: Option<usize>) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group);
    config.failure = FailurePolicy::Blocking(BackOff::fixed(BACK_OFF, 3));
    config.ordered = ordered;
    config.fetch_max_wait = Duration::from_millis(20);
    config
}

fn values(deliveries: &[(String, u32, Instant)]) -> Vec<(String, u32)> {
    deliveries.iter().map(|(v, a, _)| (v.clone(), *a)).collect()
}

/// Blocking retry: the first consumer's delivery fails and it closes (committing the count);
/// the next consumer of the group delivers the record again a back-off after the failure, not
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_retry_waits_out_the_back_off_after_a_restart() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "rb", &[("k", "flaky")]).await;
    let deliveries = Deliveries::default();
    let handler = flaky_once(deliveries.clone());
    let mut first = Consumer::new(b.clone(), config("g-rb", None)).unwrap();
    first.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut first, &handler, || async {
        deliveries.lock().unwrap().len() == 1
    })
    .await;
    first.close().await.unwrap();
    let mut second = Consumer::new(b.clone(), config("g-rb", None)).unwrap();
    second.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut second, &handler, || async {
        deliveries.lock().unwrap().len() == 2
    })
    .await;
    let d = deliveries.lock().unwrap().clone();
    assert_eq!(values(&d), [("flaky".into(), 1), ("flaky".into(), 2)]);
    let waited = d[1].2 - d[0].2;
    assert!(
        waited + CLOCK_SLACK >= BACK_OFF,
        "delivered again {waited:?} after its failure"
    );
    commit_and_expect(&mut second, &b, "g-rb", &tp, 1).await;
}

/// Ordered mode: key A's head fails and the consumer closes; the next consumer parks key A
/// until the back-off is over, while key B's records (delivered again: they were after the
/// committed offset) go through at once — and A's records still arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_parks_the_key_for_its_back_off_after_a_restart() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "rbo",
        &[("A", "flaky-a1"), ("B", "b1"), ("A", "a2"), ("B", "b2")],
    )
    .await;
    let deliveries = Deliveries::default();
    let handler = flaky_once(deliveries.clone());
    let mut first = Consumer::new(b.clone(), config("g-rbo", Some(100))).unwrap();
    first.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut first, &handler, || async {
        deliveries.lock().unwrap().iter().any(|(v, ..)| v == "b2")
    })
    .await;
    first.close().await.unwrap();
    let failed_at = deliveries.lock().unwrap()[0].2;
    let before = deliveries.lock().unwrap().len();
    let mut second = Consumer::new(b.clone(), config("g-rbo", Some(100))).unwrap();
    second.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut second, &handler, || async {
        deliveries.lock().unwrap().iter().any(|(v, ..)| v == "a2")
    })
    .await;
    let d = deliveries.lock().unwrap()[before..].to_vec();
    assert_eq!(
        values(&d),
        [
            ("b1".into(), 1),
            ("b2".into(), 1),
            ("flaky-a1".into(), 2),
            ("a2".into(), 1)
        ],
        "B goes on while A waits; A in order"
    );
    let waited = d[2].2 - failed_at;
    assert!(
        waited + CLOCK_SLACK >= BACK_OFF,
        "A's head delivered again {waited:?} after its failure"
    );
    commit_and_expect(&mut second, &b, "g-rbo", &tp, 4).await;
}

/// The last failure time in a committed ledger comes from another consumer's clock (or from
/// damaged metadata): one a day ahead still delays the record by one back-off at most, not
/// by a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_time_from_a_clock_ahead_delays_by_one_back_off_at_most() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "ahead", &[("k", "flaky")]).await;
    let day_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 24 * 3600 * 1000;
    let mut ledger = staunch_consumer::ledger::RetryLedger::default();
    ledger.set(
        0,
        staunch_consumer::ledger::RetryEntry {
            attempts: 1,
            first_failure_ms: day_ahead,
            last_failure_ms: day_ahead,
        },
    );
    commit_ledger(b.as_ref(), "g-ahead", &tp, 0, &ledger).await;
    let deliveries = Deliveries::default();
    let handler = flaky_once(deliveries.clone());
    let mut consumer = Consumer::new(b.clone(), config("g-ahead", None)).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        !deliveries.lock().unwrap().is_empty()
    })
    .await;
    // The count carried over: this is the record's second delivery.
    assert_eq!(values(&deliveries.lock().unwrap()), [("flaky".into(), 2)]);
}
