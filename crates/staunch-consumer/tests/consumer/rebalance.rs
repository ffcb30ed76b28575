//! Rebalancing a group while records flow: with `cooperative-sticky` a member that gains a
//! partner gives up only the partitions that move, and nothing is processed twice; with the
//! eager `sticky` it gives up everything first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staunch_broker::Broker;
use staunch_consumer::{Assignor, Consumer, ConsumerConfig, ConsumerEvents, handler_fn};
use staunch_core::TopicPartition;

use crate::support::*;

const TOPIC: &str = "rebalanced";
const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 25;

/// What one member was told, in order: `(true, partitions)` for assigned, `false` for revoked.
type Events = Arc<Mutex<Vec<(bool, Vec<TopicPartition>)>>>;

struct Recorder(Events);

impl ConsumerEvents for Recorder {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push((true, partitions.to_vec()));
    }
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push((false, partitions.to_vec()));
    }
}

/// Partitions a member owns after replaying its events.
fn owned(events: &Events) -> Vec<TopicPartition> {
    let mut owned = Vec::new();
    for (assigned, partitions) in events.lock().unwrap().iter() {
        if *assigned {
            owned.extend(partitions.iter().cloned());
        } else {
            owned.retain(|tp| !partitions.contains(tp));
        }
    }
    owned.sort();
    owned
}

fn revoked(events: &Events) -> Vec<Vec<TopicPartition>> {
    let events = events.lock().unwrap();
    events
        .iter()
        .filter(|(assigned, _)| !assigned)
        .map(|(_, p)| p.clone())
        .collect()
}

/// Runs a member of `group` until `stop`, recording every value it processed into `seen`.
fn member(
    broker: Arc<Broker>,
    group: &str,
    assignor: Assignor,
    seen: Arc<Mutex<Vec<String>>>,
    events: Events,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let mut config = ConsumerConfig::new(group);
    config.assignor = assignor;
    config.fetch_max_wait = Duration::from_millis(50);
    config.heartbeat_interval = Duration::from_millis(100);
    config.session_timeout = Duration::from_secs(10);
    config.rebalance_timeout = Duration::from_secs(10);
    tokio::spawn(async move {
        let mut consumer = Consumer::new(broker, config)
            .unwrap()
            .with_events(Recorder(events));
        consumer.subscribe(&[TOPIC]).await.unwrap();
        let handler = handler_fn(move |r| {
            let seen = seen.clone();
            async move {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                seen.lock().unwrap().push(value.into_owned());
                tokio::time::sleep(Duration::from_millis(15)).await;
                Ok(())
            }
        });
        while !stop.load(Ordering::SeqCst) {
            let _ = consumer.poll(&handler).await;
        }
        consumer.close().await.unwrap();
    })
}

/// One member owns every partition and is busy when a second joins; both run until every
/// record is processed and committed. Returns each member's events and what was processed.
async fn second_member_joins(assignor: Assignor, group: &str) -> (Events, Events, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    create(b.as_ref(), TOPIC, PARTITIONS).await;
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new(TOPIC, p);
        let values: Vec<String> = (0..PER_PARTITION).map(|i| format!("{p}-{i}")).collect();
        let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
        produce(b.as_ref(), &tp, &pairs).await;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (first, second): (Events, Events) = Default::default();
    let a = member(
        b.clone(),
        group,
        assignor,
        seen.clone(),
        first.clone(),
        stop.clone(),
    );
    let start = Instant::now();
    while owned(&first).len() < PARTITIONS as usize || seen.lock().unwrap().len() < 10 {
        assert!(start.elapsed() < LIMIT, "the first member never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b_task = member(
        b.clone(),
        group,
        assignor,
        seen.clone(),
        second.clone(),
        stop.clone(),
    );
    let total = PARTITIONS as i64 * PER_PARTITION as i64;
    loop {
        assert!(
            start.elapsed() < LIMIT,
            "not everything processed and committed"
        );
        let mut committed_total = 0;
        for p in 0..PARTITIONS {
            let tp = TopicPartition::new(TOPIC, p);
            committed_total += committed(b.as_ref(), group, &tp)
                .await
                .map_or(0, |c| c.offset);
        }
        let both_own = !owned(&first).is_empty() && !owned(&second).is_empty();
        if committed_total == total && both_own {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    a.await.unwrap();
    b_task.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (first, second, seen)
}

fn assert_each_processed_once(seen: &[String]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in seen {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        PARTITIONS as usize * PER_PARTITION,
        "every record processed"
    );
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalance_revokes_only_the_partitions_that_move() {
    let (first, second, seen) =
        second_member_joins(Assignor::CooperativeSticky, "g-cooperative").await;
    // Before close, the members split the partitions; the first gave up exactly the two that
    // moved, once, and the second never gave up anything.
    let moved = revoked(&first);
    let (kept, gained) = (owned(&first), owned(&second));
    // `close` revokes everything last; look at the revocations before it.
    assert_eq!(
        moved.len(),
        2,
        "one revocation in the rebalance, one at close: {moved:?}"
    );
    assert_eq!(moved[0].len(), 2, "only the moving partitions: {moved:?}");
    assert!(kept.is_empty() && gained.is_empty(), "both closed");
    let final_first = &moved[1];
    assert!(
        moved[0].iter().all(|tp| !final_first.contains(tp)),
        "a revoked partition came back: {moved:?}"
    );
    assert_eq!(final_first.len(), 2, "the first kept half: {moved:?}");
    let second_revoked = revoked(&second);
    assert_eq!(second_revoked.len(), 1, "the second gave up only at close");
    let mut moved_sorted = moved[0].clone();
    moved_sorted.sort();
    let mut second_final = second_revoked[0].clone();
    second_final.sort();
    assert_eq!(
        second_final, moved_sorted,
        "the second got what the first gave up"
    );
    assert_each_processed_once(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_rebalance_revokes_every_partition_first() {
    let (first, second, seen) = second_member_joins(Assignor::Sticky, "g-eager").await;
    let first_revoked = revoked(&first);
    assert!(
        first_revoked[0].len() == PARTITIONS as usize,
        "eager gives up everything before rejoining: {first_revoked:?}"
    );
    assert!(!revoked(&second).is_empty());
    // Eager still commits before revoking: nothing is processed twice either.
    assert_each_processed_once(&seen);
}
