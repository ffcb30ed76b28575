//! Ordered mode when a key's dead letter cannot be written at first: the partition waits for
//! it (a forward found failed stops the partition), and once it is through the key goes on.

use super::*;

/// Key A's head is a poison record whose dead letter fails while the DLT is down: A is
/// blocked until the dead letter is through. Once the DLT is back it goes through, and A's
/// next record is delivered — it does not stay parked for ever — and so is B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_goes_on_once_its_failed_dead_letter_went_through() {
    let (_d, b) = embedded().await;
    let tp = topic_with(
        b.as_ref(),
        "ordfwd",
        &[("A", "poison"), ("A", "a2"), ("B", "b1")],
    )
    .await;
    let down = Arc::new(AtomicBool::new(true));
    let api = Arc::new(Intercepted(FailingDlt {
        inner: (*b).clone(),
        down: down.clone(),
    }));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let handler = PerRecord(handler_fn(move |r| {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        s.lock().unwrap().push(value.clone());
        async move {
            if value == "poison" {
                Err(HandlerError::fatal("Poison", "unparseable"))
            } else {
                Ok(())
            }
        }
    }));
    let mut config = ConsumerConfig::new("g-ordfwd");
    config.ordered = Some(100);
    config.fetch_max_wait = Duration::from_millis(20);
    config.forward_backoff = BackOff::fixed(Duration::from_millis(20), 1000);
    let mut consumer = Consumer::new(api.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let has = |v: &str| seen.lock().unwrap().iter().any(|s| s == v);
    poll_until(&mut consumer, &handler, || async { has("poison") }).await;
    for _ in 0..5 {
        let _ = consumer.poll_batch(&handler).await;
    }
    assert!(!has("a2"), "a2 waits behind the poison record: {seen:?}");
    down.store(false, Ordering::SeqCst);
    poll_until(&mut consumer, &handler, || async { has("a2") && has("b1") }).await;
    let dead = read_all(b.as_ref(), "ordfwd.DLT").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(&b"poison"[..]));
    commit_and_expect(&mut consumer, &b, "g-ordfwd", &tp, 3).await;
}
