//! A `poll` dropped before it finished — by a timeout or a `select!` — loses no record and
//! keeps its partitions: the partition being worked on starts over from where everything
//! before it was finished (its local commit point, which may be ahead of the broker's).
//! A group join that failed, or whose poll was dropped, is made again by the next poll.

use super::*;
use staunch_consumer::OffsetReset;

/// Polls with a deadline of 100 ms until one poll runs out of it (the handler is busy) and is
/// dropped.
async fn cancel_a_poll<B: BrokerApi, H: BatchHandler>(consumer: &mut Consumer<B>, handler: &H) {
    for _ in 0..50 {
        let deadline = Duration::from_millis(100);
        if tokio::time::timeout(deadline, consumer.poll_batch(handler))
            .await
            .is_err()
        {
            return;
        }
    }
    panic!("no poll was cut short");
}

/// A handler that takes a second over the first delivery of `slow` and records every
/// delivery; records whose value starts with "poison" fail for good.
fn slow_on_first_delivery(
    slow: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
) -> PerRecord<impl staunch_consumer::Handler> {
    let slowed = Arc::new(AtomicBool::new(false));
    PerRecord(handler_fn(move |r| {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        seen.lock().unwrap().push(value.clone());
        let wait = value == slow && !slowed.swap(true, Ordering::SeqCst);
        async move {
            if wait {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if value.starts_with("poison") {
                Err(HandlerError::fatal("Poison", "unparseable"))
            } else {
                Ok(())
            }
        }
    }))
}

fn delivered(seen: &Mutex<Vec<String>>, value: &str) -> usize {
    seen.lock().unwrap().iter().filter(|v| *v == value).count()
}

/// The poll is dropped while the handler works on a record: the next polls deliver that
/// record again and go on to the end of the partition, which stays assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_dropped_mid_handler_loses_no_record_and_keeps_the_partition() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "cancel", 1).await;
    let tp = TopicPartition::new("cancel", 0);
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    for v in &values {
        produce(b.as_ref(), &tp, &[("k", v.as_str())]).await;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = slow_on_first_delivery("v5", seen.clone());
    let mut consumer = Consumer::new(b.clone(), one_batch_per_fetch("g-cancel")).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        delivered(&seen, "v4") == 1
    })
    .await;
    cancel_a_poll(&mut consumer, &handler).await;
    assert_eq!(consumer.assignment(), std::slice::from_ref(&tp));
    poll_until(&mut consumer, &handler, || async {
        delivered(&seen, "v19") == 1
    })
    .await;
    for v in &values {
        assert!(delivered(&seen, v) >= 1, "{v} was never delivered");
    }
    assert_eq!(
        delivered(&seen, "v5"),
        2,
        "the record in hand is delivered again"
    );
    commit_and_expect(&mut consumer, &b, "g-cancel", &tp, 20).await;
}

/// The poll is dropped while one dead letter is being written and the next waits to be sent
/// behind it: neither record is lost — each reaches the dead-letter topic (once more if need
/// be) before the source offset is committed past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_dropped_with_dead_letters_in_hand_loses_none() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "cancelfwd", 1).await;
    let tp = TopicPartition::new("cancelfwd", 0);
    for v in ["poison-1", "poison-2", "slow", "last"] {
        produce(b.as_ref(), &tp, &[("k", v)]).await;
    }
    let api = Arc::new(Intercepted(SlowDlt {
        inner: (*b).clone(),
        delay: Duration::from_millis(300),
        calls: Arc::default(),
        answered: Arc::default(),
    }));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = slow_on_first_delivery("slow", seen.clone());
    let mut consumer = Consumer::new(api.clone(), one_batch_per_fetch("g-cancelfwd")).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        delivered(&seen, "poison-2") == 1
    })
    .await;
    cancel_a_poll(&mut consumer, &handler).await;
    poll_until(&mut consumer, &handler, || async {
        delivered(&seen, "last") == 1
    })
    .await;
    consumer.commit().await.unwrap();
    let dead: BTreeSet<String> = read_all(b.as_ref(), "cancelfwd.DLT")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        dead,
        BTreeSet::from(["poison-1".to_owned(), "poison-2".to_owned()]),
        "both dead letters landed"
    );
    assert_eq!(
        committed(b.as_ref(), "g-cancelfwd", &tp)
            .await
            .unwrap()
            .offset,
        4
    );
    consumer.close().await.unwrap();
}

/// Fails the first join of a group, or holds it up for a second (`hold`); passes the rest on.
/// Notes when each join was asked for.
#[derive(Debug, Clone)]
struct FirstJoin<B> {
    inner: B,
    hold: bool,
    joins: Arc<Mutex<Vec<Instant>>>,
}

impl<B: BrokerApi> Intercept for FirstJoin<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn join_group(&self, call: JoinGroupCall) -> Result<JoinOutcome, ApiError> {
        let first = {
            let mut joins = self.joins.lock().unwrap();
            joins.push(Instant::now());
            joins.len() == 1
        };
        if first {
            if !self.hold {
                return Err(ApiError::Broker {
                    code: ErrorCode::GroupAuthorizationFailed,
                    message: None,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.inner.join_group(call).await
    }
}

/// The first join of a subscribed consumer fails (the poll reports it), or its poll is
/// dropped while the join waits: the next poll joins again, and the records flow. After a
/// failed join the next one waits 100 ms (so a poll loop does not hammer the coordinator).
async fn a_join_is_made_again(hold: bool, group: &str) {
    let (_d, b) = embedded().await;
    create(b.as_ref(), group, 1).await;
    let tp = TopicPartition::new(group, 0);
    produce(b.as_ref(), &tp, &[("k", "a"), ("k", "b")]).await;
    let joins = Arc::new(Mutex::new(Vec::new()));
    let api = Arc::new(Intercepted(FirstJoin {
        inner: (*b).clone(),
        hold,
        joins: joins.clone(),
    }));
    let mut config = ConsumerConfig::new(group);
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::new(api, config).unwrap();
    consumer.subscribe(&[group]).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // No record is slow: only the join is held up.
    let handler = slow_on_first_delivery("none", seen.clone());
    if hold {
        cancel_a_poll(&mut consumer, &handler).await;
    } else {
        assert!(consumer.poll_batch(&handler).await.is_err());
    }
    poll_until(&mut consumer, &handler, || async {
        delivered(&seen, "b") == 1
    })
    .await;
    assert_eq!(consumer.assignment(), std::slice::from_ref(&tp));
    let joins = joins.lock().unwrap().clone();
    assert!(joins.len() >= 2, "{joins:?}");
    if !hold {
        let waited = joins[1] - joins[0];
        assert!(
            waited >= Duration::from_millis(100),
            "joined again after {waited:?}"
        );
    }
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_failed_is_made_again_by_the_next_poll() {
    a_join_is_made_again(false, "join-failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_poll_was_dropped_is_made_again_by_the_next_poll() {
    a_join_is_made_again(true, "join-dropped").await;
}

/// With `OffsetReset::Latest`, a poll dropped before anything was committed does not make the
/// partition jump to the end: the record in hand and the ones after it are still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_dropped_before_the_first_commit_skips_nothing_under_reset_latest() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "cancel-latest", 1).await;
    let tp = TopicPartition::new("cancel-latest", 0);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = slow_on_first_delivery("slow", seen.clone());
    let mut config = one_batch_per_fetch("g-cancel-latest");
    config.reset = OffsetReset::Latest;
    config.fetch_max_wait = Duration::from_millis(500);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    // The first poll finds the (empty) partition's end and waits for data; cut it short.
    let first = tokio::time::timeout(Duration::from_millis(50), consumer.poll_batch(&handler));
    assert!(first.await.is_err());
    assert_eq!(consumer.position(&tp), Some(0));
    produce(b.as_ref(), &tp, &[("k", "slow"), ("k", "a"), ("k", "b")]).await;
    cancel_a_poll(&mut consumer, &handler).await;
    assert!(
        committed(b.as_ref(), "g-cancel-latest", &tp)
            .await
            .is_none()
    );
    poll_until(&mut consumer, &handler, || async {
        delivered(&seen, "b") == 1
    })
    .await;
    assert_eq!(delivered(&seen, "slow"), 2);
    assert_eq!(delivered(&seen, "a"), 1);
    commit_and_expect(&mut consumer, &b, "g-cancel-latest", &tp, 3).await;
}
