//! Writes a failed record to a retry or dead-letter topic, acknowledged by every in-sync
//! replica (`acks=all`), creating the topic first if it is missing.
//!
//! The caller commits the source offset only after [`Forwarder::forward`] returned `Ok`; an
//! error means the record may or may not be there, and the caller keeps the source offset
//! where it is and tries again (a duplicate in the dead-letter topic is possible, a loss is
//! not).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use staunch_core::api::{CreateTopicCall, PartitionBatch, ProduceCall};
use staunch_core::{Acks, ApiError, BatchBuilder, BrokerApi, Offset, ProduceAck, TopicPartition};
use tokio::task::JoinHandle;

use crate::handler::ConsumerRecord;
use crate::headers::{ForwardFacts, is_staunch_header};

/// Sends forwarded records; remembers which destination topics exist and their partition counts.
#[derive(Debug)]
pub(crate) struct Forwarder {
    partitions: HashMap<String, i32>,
    timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(timeout: Duration) -> Self {
        Forwarder {
            partitions: HashMap::new(),
            timeout,
        }
    }

    /// Makes sure `topic` exists, with as many partitions as `like` has (so the record can
    /// keep its partition index). Returns the destination's partition count.
    pub(crate) async fn ensure_topic<B: BrokerApi>(
        &mut self,
        api: &B,
        topic: &str,
        like: &str,
    ) -> Result<i32, ApiError> {
        if let Some(&n) = self.partitions.get(topic) {
            return Ok(n);
        }
        let wanted = match api.topic(like).await {
            Ok(info) => i32::try_from(info.partitions.len()).unwrap_or(1).max(1),
            Err(_) => 1,
        };
        api.create_topic(CreateTopicCall {
            name: topic.to_owned(),
            partitions: Some(wanted),
            replication_factor: None,
            configs: Vec::new(),
        })
        .await?;
        let info = api.topic(topic).await?;
        let n = i32::try_from(info.partitions.len()).unwrap_or(0);
        if n <= 0 {
            return Err(ApiError::Protocol(format!(
                "topic {topic} has no partitions"
            )));
        }
        self.partitions.insert(topic.to_owned(), n);
        Ok(n)
    }

    /// Writes `record` to `topic` with acks=all: same key, value, timestamp and own headers,
    /// Staunch's headers replaced by `facts`. Same partition index as the source when the
    /// destination has it, else the index modulo its partition count. `Ok` only once every
    /// in-sync replica has it, with the partition and offset it got.
    pub(crate) async fn forward<B: BrokerApi>(
        &mut self,
        api: &B,
        topic: &str,
        record: &ConsumerRecord,
        facts: &ForwardFacts,
    ) -> Result<(TopicPartition, Offset), ApiError> {
        let call = self.prepare(api, topic, record, facts).await?;
        let answers = api.produce(call).await;
        self.outcome(topic, answers)
    }

    /// [`Forwarder::forward`] without waiting for the broker: the write is sent (its place in
    /// the destination partition is taken, in call order) and runs in a task of its own;
    /// [`SentForward::outcome`] says how it went. Fails at once if the destination topic is
    /// missing and cannot be created.
    pub(crate) async fn send<B: BrokerApi>(
        &mut self,
        api: &Arc<B>,
        topic: &str,
        record: &ConsumerRecord,
        facts: &ForwardFacts,
    ) -> Result<SentForward, ApiError> {
        let call = self.prepare(api.as_ref(), topic, record, facts).await?;
        let api = Arc::clone(api);
        let mut produce: ProduceFuture = Box::pin(async move { api.produce(call).await });
        // The first poll sends it, so forwards of one partition keep their order (the broker
        // appends calls naming the same partition in the order they were first polled).
        let first = produce
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        let task = match first {
            Poll::Ready(answers) => tokio::spawn(std::future::ready(answers)),
            Poll::Pending => tokio::spawn(produce),
        };
        Ok(SentForward {
            topic: topic.to_owned(),
            task,
        })
    }

    /// The produce call of a forward (see [`Forwarder::forward`]), creating the destination
    /// topic if it is missing.
    async fn prepare<B: BrokerApi>(
        &mut self,
        api: &B,
        topic: &str,
        record: &ConsumerRecord,
        facts: &ForwardFacts,
    ) -> Result<ProduceCall, ApiError> {
        let count = self.ensure_topic(api, topic, &facts.original_topic).await?;
        let partition = TopicPartition::new(topic, record.partition.rem_euclid(count));
        let added = facts.to_headers();
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .filter(|(k, _)| !is_staunch_header(k))
            .map(|(k, v)| (k.as_ref(), v.as_deref()))
            .chain(
                added
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))),
            )
            .collect();
        let mut builder = BatchBuilder::new(record.timestamp);
        builder.push(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            headers.iter().copied(),
        );
        Ok(ProduceCall {
            acks: Acks::All,
            timeout: self.timeout,
            batches: vec![PartitionBatch {
                partition,
                records: Bytes::from(builder.build()),
            }],
        })
    }

    /// The partition and offset a forward to `topic` got, from the produce's answers; forgets
    /// the topic's partition count if the broker no longer knows it.
    fn outcome(
        &mut self,
        topic: &str,
        mut answers: ProduceAnswers,
    ) -> Result<(TopicPartition, Offset), ApiError> {
        match answers.pop() {
            Some((partition, Ok(ack))) => Ok((partition, ack.base_offset)),
            Some((_, Err(e))) => {
                if e.code()
                    .is_some_and(|c| c == staunch_core::ErrorCode::UnknownTopicOrPartition)
                {
                    self.partitions.remove(topic);
                }
                Err(e)
            }
            None => Err(ApiError::Protocol(
                "produce answered for no partition".into(),
            )),
        }
    }
}

/// The answers of a forward's produce.
type ProduceAnswers = Vec<(TopicPartition, Result<ProduceAck, ApiError>)>;

/// A forward's produce, owning its broker handle.
type ProduceFuture = Pin<Box<dyn Future<Output = ProduceAnswers> + Send>>;

/// A forward sent by [`Forwarder::send`] and not yet looked at.
#[derive(Debug)]
pub(crate) struct SentForward {
    topic: String,
    task: JoinHandle<ProduceAnswers>,
}

impl SentForward {
    /// Whether the broker has answered.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the broker's answer: the partition and offset the record got, or why it may
    /// not be there.
    pub(crate) async fn outcome(
        self,
        forwarder: &mut Forwarder,
    ) -> Result<(TopicPartition, Offset), ApiError> {
        match self.task.await {
            Ok(answers) => forwarder.outcome(&self.topic, answers),
            Err(e) => Err(ApiError::NoAnswer {
                broker: "forward".into(),
                reason: format!("forward task: {e}"),
            }),
        }
    }
}
