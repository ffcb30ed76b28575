//! A seeded random workload against one broker, recording every acknowledgement in the model.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use staunch_broker::{Broker, ConfigOp, NewTopic};
use staunch_core::api::{
    FetchCall, FetchPosition, GroupMembership, GroupProtocol, JoinGroupCall, JoinOutcome,
    OffsetAndMetadata,
};
use staunch_core::{Acks, BatchBuilder, BrokerApi, Clock, ErrorCode, ManualClock, TopicPartition};
use tokio::task::JoinSet;

use crate::model::{Model, ProducerModel, Rec, TopicModel, collect, produce};

/// Topics alive at most at once.
const MAX_TOPICS: usize = 4;
/// Idempotent producers at most at once.
const MAX_PRODUCERS: usize = 3;

/// One seed's workload on one broker.
pub(crate) struct Workload<'a> {
    rng: &'a mut fastrand::Rng,
    broker: &'a Broker,
    clock: &'a Arc<ManualClock>,
    model: &'a mut Model,
}

impl<'a> Workload<'a> {
    pub(crate) fn new(
        rng: &'a mut fastrand::Rng,
        broker: &'a Broker,
        clock: &'a Arc<ManualClock>,
        model: &'a mut Model,
    ) -> Self {
        Workload {
            rng,
            broker,
            clock,
            model,
        }
    }

    /// Topics that exist as far as the workload knows.
    fn live_topics(&self) -> Vec<String> {
        let existing = self.broker.topic_names();
        self.model
            .topics
            .iter()
            .filter(|(name, t)| !t.delete_tried && existing.contains(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn random_tp(&mut self) -> Option<TopicPartition> {
        let topics = self.live_topics();
        if topics.is_empty() {
            return None;
        }
        let name = &topics[self.rng.usize(..topics.len())];
        let partitions = self.model.topics[name].partitions;
        Some(TopicPartition::new(
            name.as_str(),
            self.rng.i32(0..partitions),
        ))
    }

    fn records(&mut self) -> Vec<Rec> {
        (0..self.rng.usize(1..4))
            .map(|_| {
                let key = self
                    .rng
                    .bool()
                    .then(|| format!("k{}", self.rng.u16(..)).into_bytes());
                let len = self.rng.usize(0..300);
                let value = Some((0..len).map(|_| self.rng.u8(..)).collect());
                (key, value)
            })
            .collect()
    }

    fn batch(&self, records: &[Rec], producer: Option<(i64, i16, i32)>) -> Bytes {
        let mut builder = BatchBuilder::new(self.clock.now_ms());
        if let Some((id, epoch, seq)) = producer {
            builder = builder.producer(id, epoch, seq);
        }
        for (key, value) in records {
            builder = builder.record(key.as_deref(), value.as_deref());
        }
        Bytes::from(builder.build())
    }

    /// One random step. `Err` only for what the checker must report (a served batch failing
    /// its CRC, a high watermark moving back); failed calls are expected around a cut.
    pub(crate) async fn step(&mut self) -> Result<(), String> {
        if self.live_topics().is_empty() {
            return self.create_topic().await;
        }
        match self.rng.u8(0..100) {
            0..=39 => self.produce_burst().await,
            40..=54 => self.fetch().await,
            55..=69 => self.commit().await,
            70..=75 => self.create_topic().await,
            76..=78 => self.delete_topic().await,
            79..=85 => self.alter_retention().await,
            86..=92 => self.retention().await,
            93..=96 => self.new_producer().await,
            _ => self.join_group().await,
        }
    }

    async fn create_topic(&mut self) -> Result<(), String> {
        if self.live_topics().len() >= MAX_TOPICS {
            return Ok(());
        }
        let name = format!("t{}", self.model.created);
        self.model.created += 1;
        let partitions = self.rng.i32(1..=3);
        let retention = self
            .rng
            .bool()
            .then(|| (self.rng.u64(1..20) * 60_000).to_string());
        let mut topic = TopicModel {
            partitions,
            ..TopicModel::default()
        };
        topic.retention.try_value(retention.clone());
        self.model.topics.insert(name.clone(), topic);
        let configs = retention
            .map(|r| vec![("retention.ms".to_owned(), r)])
            .unwrap_or_default();
        let created = self
            .broker
            .create_topics(
                vec![NewTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor: 1,
                    configs,
                }],
                false,
            )
            .await;
        if created.first().is_some_and(|o| o.error == ErrorCode::None) {
            let topic = self.model.topics.get_mut(&name).expect("just added");
            topic.created = true;
            topic.retention.ack();
        }
        Ok(())
    }

    async fn delete_topic(&mut self) -> Result<(), String> {
        let topics = self.live_topics();
        if topics.len() < 2 {
            return Ok(());
        }
        let name = topics[self.rng.usize(..topics.len())].clone();
        self.model
            .topics
            .get_mut(&name)
            .expect("known")
            .delete_tried = true;
        let deleted = self.broker.delete_topics(vec![name.clone()]).await;
        if deleted.first().is_some_and(|o| o.error == ErrorCode::None) {
            self.model.topics.get_mut(&name).expect("known").deleted = true;
        }
        self.model.producers.retain(|p| p.tp.topic != name);
        Ok(())
    }

    async fn alter_retention(&mut self) -> Result<(), String> {
        let topics = self.live_topics();
        let name = topics[self.rng.usize(..topics.len())].clone();
        let value = (self.rng.u64(1..20) * 60_000).to_string();
        let clock_moved = self.model.clock_moved;
        let topic = self.model.topics.get_mut(&name).expect("known");
        if !topic.created {
            return Ok(());
        }
        topic.retention.try_value(Some(value.clone()));
        topic.retention_ran |= clock_moved;
        let outcome = self
            .broker
            .alter_topic_config(
                name.clone(),
                vec![("retention.ms".to_owned(), ConfigOp::Set, value)],
                true,
                false,
            )
            .await;
        if outcome.error == ErrorCode::None {
            self.model
                .topics
                .get_mut(&name)
                .expect("known")
                .retention
                .ack();
        }
        Ok(())
    }

    /// Moves the clock on and applies retention (deleting closed segments older than a
    /// topic's `retention.ms`).
    async fn retention(&mut self) -> Result<(), String> {
        self.clock.advance(self.rng.i64(0..600_000));
        self.model.clock_moved = true;
        for topic in self.model.topics.values_mut() {
            let limited = topic.retention.acked.as_ref().is_some_and(Option::is_some)
                || topic.retention.tried.iter().any(Option::is_some);
            topic.retention_ran |= limited;
        }
        self.broker.apply_retention().await;
        Ok(())
    }

    async fn new_producer(&mut self) -> Result<(), String> {
        if self.model.producers.len() >= MAX_PRODUCERS {
            return Ok(());
        }
        let Some(tp) = self.random_tp() else {
            return Ok(());
        };
        if let Ok(id) = BrokerApi::init_producer_id(self.broker).await {
            self.model.producers.push(ProducerModel {
                tp,
                id: id.id,
                epoch: id.epoch,
                next_seq: 0,
                last_acked: None,
                pending: None,
            });
        }
        Ok(())
    }

    /// Up to four produce calls at once: idempotent producers' batches (acks=all) and plain
    /// batches with acks 0, 1 or all.
    async fn produce_burst(&mut self) -> Result<(), String> {
        let mut calls = JoinSet::new();
        let mut producers_used = Vec::new();
        for _ in 0..self.rng.usize(1..=4) {
            let idempotent = !self.model.producers.is_empty() && self.rng.bool();
            if idempotent {
                let i = self.rng.usize(..self.model.producers.len());
                if producers_used.contains(&i) {
                    continue;
                }
                producers_used.push(i);
                let (bytes, recs) = match self.model.producers[i].pending.clone() {
                    Some(pending) => pending,
                    None => {
                        let recs = self.records();
                        let p = &self.model.producers[i];
                        let bytes = self.batch(&recs, Some((p.id, p.epoch, p.next_seq)));
                        let p = &mut self.model.producers[i];
                        p.next_seq += recs.len() as i32;
                        p.pending = Some((bytes.clone(), recs.clone()));
                        (bytes, recs)
                    }
                };
                let tp = self.model.producers[i].tp.clone();
                let broker = self.broker.clone();
                calls.spawn(async move {
                    let result = produce(&broker, &tp, bytes.clone(), Acks::All).await;
                    (Some(i), tp, bytes, recs, Acks::All, result)
                });
            } else if let Some(tp) = self.random_tp() {
                let recs = self.records();
                let bytes = self.batch(&recs, None);
                let acks = [Acks::None, Acks::Leader, Acks::All][self.rng.usize(..3)];
                let broker = self.broker.clone();
                calls.spawn(async move {
                    let result = produce(&broker, &tp, bytes.clone(), acks).await;
                    (None, tp, bytes, recs, acks, result)
                });
            }
        }
        while let Some(done) = calls.join_next().await {
            let (producer, tp, bytes, recs, acks, result) = done.expect("produce task");
            let Ok(base) = result else {
                continue;
            };
            if acks == Acks::None {
                continue;
            }
            self.model.ack_records(&tp, base, &recs);
            if let Some(i) = producer {
                let p = &mut self.model.producers[i];
                p.pending = None;
                p.last_acked = Some((bytes, base));
            }
        }
        Ok(())
    }

    async fn fetch(&mut self) -> Result<(), String> {
        let Some(tp) = self.random_tp() else {
            return Ok(());
        };
        let offset = self.rng.i64(0..40);
        let fetched = BrokerApi::fetch(
            self.broker,
            FetchCall {
                max_wait: Duration::ZERO,
                min_bytes: 0,
                max_bytes: 64 << 10,
                partitions: vec![FetchPosition {
                    partition: tp.clone(),
                    offset,
                    max_bytes: 64 << 10,
                }],
            },
        )
        .await;
        if let Ok(got) = &fetched[0].1 {
            let mut records = Default::default();
            let mut next = offset;
            collect(&got.records, &mut records, &mut next)
                .map_err(|e| format!("live fetch of {tp:?}: {e}"))?;
            let seen = self
                .model
                .high_watermarks
                .entry((tp.topic.to_string(), tp.partition))
                .or_insert(0);
            *seen = (*seen).max(got.high_watermark);
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), String> {
        let Some(tp) = self.random_tp() else {
            return Ok(());
        };
        let group = format!("g{}", self.rng.u8(0..3));
        let offset = self.rng.i64(0..100);
        let metadata = format!("attempt={}", self.rng.u32(..));
        let key = (group.clone(), tp.topic.to_string(), tp.partition);
        self.model
            .commits
            .entry(key.clone())
            .or_default()
            .try_value((offset, metadata.clone()));
        self.model.groups.insert(group.clone());
        let answer = BrokerApi::commit_offsets(
            self.broker,
            &GroupMembership::simple(group),
            vec![(
                tp,
                OffsetAndMetadata {
                    offset,
                    leader_epoch: None,
                    metadata,
                },
            )],
        )
        .await;
        if answer.first().is_some_and(|(_, r)| r.is_ok()) {
            self.model.commits.get_mut(&key).expect("just added").ack();
        }
        Ok(())
    }

    /// A member joins a group (two rounds, as a new member does) and syncs; nothing of it is
    /// durable, but it runs beside everything else.
    async fn join_group(&mut self) -> Result<(), String> {
        let group = format!("g{}", self.rng.u8(0..3));
        let mut call = JoinGroupCall {
            group_id: group.clone(),
            member_id: String::new(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(1),
            protocol_type: "consumer".to_owned(),
            protocols: vec![GroupProtocol {
                name: "range".to_owned(),
                metadata: Bytes::new(),
            }],
        };
        for _ in 0..2 {
            let joined = tokio::time::timeout(
                Duration::from_secs(5),
                BrokerApi::join_group(self.broker, call.clone()),
            )
            .await;
            match joined {
                Ok(Ok(JoinOutcome::MemberIdRequired { member_id })) => call.member_id = member_id,
                Ok(Ok(JoinOutcome::Joined(joined))) => {
                    let member = GroupMembership {
                        generation_id: joined.generation_id,
                        member_id: joined.member_id,
                        ..GroupMembership::simple(group.as_str())
                    };
                    let _ = BrokerApi::leave_group(self.broker, &member).await;
                    break;
                }
                _ => break,
            }
        }
        Ok(())
    }
}
