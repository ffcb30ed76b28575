//! The end-of-poll commit goes out at most once per `commit_interval`; an explicit commit goes
//! out at once regardless.

use super::*;

async fn committed_offset(b: &Broker, group: &str, tp: &TopicPartition) -> Option<i64> {
    committed(b, group, tp).await.map(|c| c.offset)
}

/// Within the interval, polls leave their progress uncommitted (and `commit` sends it); with
/// an interval of zero, every poll's progress goes out without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_commit_at_most_once_per_interval() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "paced", &[("k", "1")]).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let handler = PerRecord(handler_fn(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    }));
    let mut config = ConsumerConfig::new("g-paced");
    config.fetch_max_wait = Duration::from_millis(20);
    config.commit_interval = Duration::from_secs(3600);
    let mut consumer = Consumer::new(b.clone(), config.clone()).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    // The first poll's commit goes out: none was sent before.
    poll_until(&mut consumer, &handler, || async {
        committed_offset(&b, "g-paced", &tp).await == Some(1)
    })
    .await;

    produce(b.as_ref(), &tp, &[("k", "2")]).await;
    poll_until(&mut consumer, &handler, || async {
        handled.load(Ordering::SeqCst) == 2
    })
    .await;
    for _ in 0..5 {
        consumer.poll_batch(&handler).await.unwrap();
    }
    assert_eq!(
        committed_offset(&b, "g-paced", &tp).await,
        Some(1),
        "a poll within the interval committed"
    );
    consumer.commit().await.unwrap();
    assert_eq!(committed_offset(&b, "g-paced", &tp).await, Some(2));
    consumer.close().await.unwrap();

    config.commit_interval = Duration::ZERO;
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    for round in 3..=4 {
        produce(b.as_ref(), &tp, &[("k", "n")]).await;
        poll_until(&mut consumer, &handler, || async {
            committed_offset(&b, "g-paced", &tp).await == Some(round)
        })
        .await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), 4);
    consumer.close().await.unwrap();
}
