//! Shared test fixtures: an embedded broker, reading partitions back, and a fault-injecting
//! `BrokerApi` wrapper.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_broker::{Broker, BrokerConfig, FetchPartition, NewTopic};
use staunch_core::batch::{Compression, batches};
use staunch_core::{
    ApiError, BrokerApi, ErrorCode, ProduceAck, ProduceCall, TopicInfo, TopicPartition,
};
use staunch_testkit::{Intercept, Intercepted};

/// Every test body runs under this bound, so a hang fails instead of stalling CI.
pub const TEST_BOUND: Duration = Duration::from_secs(180);

/// Runs `body` with a generous upper bound.
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .expect("test did not finish within its bound")
}

/// Opens an embedded broker in `dir`.
pub async fn open_broker(dir: &Path) -> Broker {
    let config = BrokerConfig {
        data_dir: dir.to_owned(),
        ..BrokerConfig::default()
    };
    tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .expect("open task")
        .expect("broker opens")
}

/// Creates `name` with `partitions` partitions.
pub async fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let outcome = broker
        .create_topics(
            vec![NewTopic {
                name: name.to_owned(),
                partitions,
                replication_factor: -1,
                configs: Vec::new(),
            }],
            false,
        )
        .await;
    assert_eq!(outcome[0].error, ErrorCode::None, "{outcome:?}");
}

/// One record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub producer_id: i64,
    /// The codec of the batch it was stored in.
    pub compression: Option<Compression>,
    /// Size of that batch as stored, and of its records section once decompressed.
    pub batch_size: usize,
    pub batch_records_size: usize,
    pub producer_epoch: i16,
}

/// Every visible record of one partition, in log order.
pub async fn read_partition(broker: &Broker, topic: &str, partition: i32) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let results = broker
            .fetch(
                Duration::ZERO,
                1,
                8 << 20,
                vec![FetchPartition {
                    topic: topic.to_owned(),
                    partition,
                    fetch_offset: offset,
                    current_leader_epoch: -1,
                    max_bytes: 4 << 20,
                }],
            )
            .await;
        let result = &results[0];
        assert_eq!(result.error, ErrorCode::None, "fetch {topic}-{partition}");
        if result.records.is_empty() {
            break;
        }
        for batch in batches(&result.records) {
            let batch = batch.expect("stored batch parses");
            let records = batch.decompressed().expect("stored batch decompresses");
            for record in records.records() {
                let record = record.expect("record decodes");
                if record.offset < offset {
                    continue;
                }
                out.push(Stored {
                    offset: record.offset,
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.map(<[u8]>::to_vec),
                    headers: record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                    producer_id: batch.producer_id(),
                    compression: batch.compression(),
                    batch_size: batch.size(),
                    batch_records_size: records.as_bytes().len(),
                    producer_epoch: batch.producer_epoch(),
                });
            }
            offset = batch.next_offset();
        }
        if offset >= result.high_watermark {
            break;
        }
    }
    out
}

/// The values of a partition as UTF-8 strings.
pub async fn values(broker: &Broker, topic: &str, partition: i32) -> Vec<String> {
    read_partition(broker, topic, partition)
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap_or_default()).expect("utf-8 value"))
        .collect()
}

/// What a [`Faulty`] broker does wrong, per batch, with probabilities in 0..1.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Refuse before sending (nothing appended).
    pub not_sent: f64,
    /// Append through the inner broker, then lose the answer (`NoAnswer`: ambiguous).
    pub lost_after_append: f64,
    /// Start a spell of 1–4 `NOT_LEADER_OR_FOLLOWER` answers for the partition.
    pub not_leader: f64,
    /// Start a spell of 1–4 `NOT_ENOUGH_REPLICAS` answers for the partition.
    pub not_enough_replicas: f64,
    /// Answer `OUT_OF_ORDER_SEQUENCE_NUMBER` without appending (as a broker that lost the
    /// producer's state would).
    pub out_of_order: f64,
    /// Delay each call by up to this much (a slow broker).
    pub max_delay: Duration,
    /// Answer every batch with this error, without appending.
    pub always: Option<ErrorCode>,
    /// Never answer a produce until [`FaultState::release`] is called.
    pub gated: bool,
    /// Append through the inner broker, then never answer (a broker that wrote the batch and
    /// then went silent).
    pub silent_after_append: bool,
    /// Partitions that metadata reports without a leader, and that are never reachable.
    pub leaderless: Vec<i32>,
}

/// Counters of what a [`Faulty`] broker did.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub produce_calls: AtomicU64,
    pub batches: AtomicU64,
    pub not_sent: AtomicU64,
    pub lost_after_append: AtomicU64,
    pub not_leader: AtomicU64,
    pub not_enough_replicas: AtomicU64,
    pub out_of_order: AtomicU64,
    pub topic_calls: AtomicU64,
    /// Errors the wrapped broker itself answered, by name.
    pub inner_errors: Mutex<HashMap<String, u64>>,
}

impl FaultCounts {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// Shared state of a [`Faulty`] broker.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    rng: Mutex<fastrand::Rng>,
    spells: Mutex<HashMap<TopicPartition, (ErrorCode, u32)>>,
    gate: tokio::sync::Semaphore,
    pub counts: FaultCounts,
}

impl FaultState {
    /// Lets every gated produce call through.
    pub fn release(&self) {
        self.gate.add_permits(1 << 20);
    }
}

/// A `BrokerApi` that wraps another and injects faults into produce and metadata calls,
/// deterministically from a seed (the interleaving of concurrent calls still varies). The other
/// calls pass through untouched ([`Intercepted`]).
pub type Faulty<B> = Intercepted<FaultInjector<B>>;

/// The faults of a [`Faulty`] broker and the broker it wraps.
#[derive(Debug, Clone)]
pub struct FaultInjector<B> {
    inner: B,
    pub state: Arc<FaultState>,
}

/// `inner` with `faults`, drawn from `seed`.
pub fn faulty<B>(inner: B, faults: Faults, seed: u64) -> Faulty<B> {
    Intercepted(FaultInjector::new(inner, faults, seed))
}

impl<B> FaultInjector<B> {
    fn new(inner: B, faults: Faults, seed: u64) -> Self {
        FaultInjector {
            inner,
            state: Arc::new(FaultState {
                faults,
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
                spells: Mutex::new(HashMap::new()),
                gate: tokio::sync::Semaphore::new(0),
                counts: FaultCounts::default(),
            }),
        }
    }
}

enum Plan {
    Forward { lose_answer: bool },
    Fail(ApiError),
}

impl<B: BrokerApi> FaultInjector<B> {
    fn plan(&self, tp: &TopicPartition) -> Plan {
        let f = &self.state.faults;
        let c = &self.state.counts;
        if let Some(code) = f.always {
            return Plan::Fail(ApiError::broker(code));
        }
        if f.leaderless.contains(&tp.partition) {
            c.not_sent.fetch_add(1, Ordering::SeqCst);
            return Plan::Fail(ApiError::NotSent {
                target: tp.to_string(),
                reason: "no leader".into(),
            });
        }
        let mut spells = self.state.spells.lock().unwrap();
        if let Some((code, left)) = spells.get_mut(tp) {
            let code = *code;
            *left -= 1;
            if *left == 0 {
                spells.remove(tp);
            }
            let counter = if code == ErrorCode::NotLeaderOrFollower {
                &c.not_leader
            } else {
                &c.not_enough_replicas
            };
            counter.fetch_add(1, Ordering::SeqCst);
            return Plan::Fail(ApiError::broker(code));
        }
        let mut rng = self.state.rng.lock().unwrap();
        let mut roll = rng.f64();
        let spell_length = rng.u32(1..=4);
        if roll < f.not_sent {
            c.not_sent.fetch_add(1, Ordering::SeqCst);
            return Plan::Fail(ApiError::NotSent {
                target: tp.to_string(),
                reason: "injected: connection refused".into(),
            });
        }
        roll -= f.not_sent;
        if roll < f.out_of_order {
            c.out_of_order.fetch_add(1, Ordering::SeqCst);
            return Plan::Fail(ApiError::broker(ErrorCode::OutOfOrderSequenceNumber));
        }
        roll -= f.out_of_order;
        for (p, code) in [
            (f.not_leader, ErrorCode::NotLeaderOrFollower),
            (f.not_enough_replicas, ErrorCode::NotEnoughReplicas),
        ] {
            if roll < p {
                if spell_length > 1 {
                    spells.insert(tp.clone(), (code, spell_length - 1));
                }
                let counter = if code == ErrorCode::NotLeaderOrFollower {
                    &c.not_leader
                } else {
                    &c.not_enough_replicas
                };
                counter.fetch_add(1, Ordering::SeqCst);
                return Plan::Fail(ApiError::broker(code));
            }
            roll -= p;
        }
        Plan::Forward {
            lose_answer: roll < f.lost_after_append,
        }
    }
}

impl<B: BrokerApi> Intercept for FaultInjector<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn produce(
        &self,
        call: ProduceCall,
    ) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
        let c = &self.state.counts;
        c.produce_calls.fetch_add(1, Ordering::SeqCst);
        c.batches
            .fetch_add(call.batches.len() as u64, Ordering::SeqCst);
        if self.state.faults.gated {
            let _permit = self.state.gate.acquire().await;
        }
        let delay = {
            let max = self.state.faults.max_delay;
            if max.is_zero() {
                Duration::ZERO
            } else {
                max.mul_f64(self.state.rng.lock().unwrap().f64())
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let plans: Vec<Plan> = call
            .batches
            .iter()
            .map(|b| self.plan(&b.partition))
            .collect();
        let forwarded: Vec<_> = call
            .batches
            .iter()
            .zip(&plans)
            .filter(|(_, plan)| matches!(plan, Plan::Forward { .. }))
            .map(|(b, _)| b.clone())
            .collect();
        let mut answers = if forwarded.is_empty() {
            Vec::new()
        } else {
            self.inner
                .produce(ProduceCall {
                    acks: call.acks,
                    timeout: call.timeout,
                    batches: forwarded,
                })
                .await
        }
        .into_iter();
        if self.state.faults.silent_after_append {
            c.lost_after_append
                .fetch_add(answers.len() as u64, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        call.batches
            .iter()
            .zip(plans)
            .map(|(b, plan)| match plan {
                Plan::Fail(error) => (b.partition.clone(), Err(error)),
                Plan::Forward { lose_answer } => {
                    let (tp, result) = answers.next().expect("one answer per forwarded batch");
                    if let Err(e) = &result {
                        let name = e
                            .code()
                            .map_or_else(|| e.to_string(), |c| c.name().to_owned());
                        *c.inner_errors.lock().unwrap().entry(name).or_default() += 1;
                    }
                    if lose_answer && result.is_ok() {
                        c.lost_after_append.fetch_add(1, Ordering::SeqCst);
                        let lost = ApiError::NoAnswer {
                            broker: "node 1".into(),
                            reason: "injected: connection reset after the append".into(),
                        };
                        (tp, Err(lost))
                    } else {
                        (tp, result)
                    }
                }
            })
            .collect()
    }

    async fn topic(&self, topic: &str) -> Result<TopicInfo, ApiError> {
        self.state.counts.topic_calls.fetch_add(1, Ordering::SeqCst);
        let mut info = self.inner.topic(topic).await?;
        for p in &mut info.partitions {
            if self.state.faults.leaderless.contains(&p.index) {
                p.leader = None;
            }
        }
        Ok(info)
    }
}
