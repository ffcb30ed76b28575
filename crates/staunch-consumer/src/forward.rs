//! Writes a failed record to a retry or dead-letter topic, acknowledged by every in-sync
//! replica (`acks=all`), creating the topic first if it is missing.
//!
//! The caller commits the source offset only after [`Forwarder::forward`] returned `Ok`; an
//! error means the record may or may not be there, and the caller keeps the source offset
//! where it is and tries again (a duplicate in the dead-letter topic is possible, a loss is
//! not).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use staunch_core::api::{CreateTopicCall, PartitionBatch, ProduceCall};
use staunch_core::{Acks, ApiError, BatchBuilder, BrokerApi, Offset, TopicPartition};
use tokio::sync::watch;

use crate::eager;
use crate::handler::ConsumerRecord;
use crate::headers::{ForwardFacts, is_staunch_header};

/// Sends forwarded records; remembers which destination topics exist and their partition counts.
#[derive(Debug)]
pub(crate) struct Forwarder {
    partitions: HashMap<String, i32>,
    timeout: Duration,
    /// Configs a destination topic is created with.
    topic_configs: Vec<(String, String)>,
}

impl Forwarder {
    pub(crate) fn new(timeout: Duration, topic_configs: Vec<(String, String)>) -> Self {
        Forwarder {
            partitions: HashMap::new(),
            timeout,
            topic_configs,
        }
    }

    /// Makes sure `topic` exists, with as many partitions as `like` has (so the record can
    /// keep its partition index) and, when this call creates it, the configured topic
    /// configs (by default no retention limit). Returns the destination's partition count.
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
            configs: self.topic_configs.clone(),
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

    /// Writes `record` to `topic` with acks=all and waits for the broker: same key, value,
    /// timestamp and own headers, Staunch's headers replaced by `facts`. Same partition index
    /// as the source when the destination has it, else the index modulo its partition count.
    /// `Ok` only once every in-sync replica has it, with the partition and offset it got.
    pub(crate) async fn forward<B: BrokerApi>(
        &mut self,
        api: &Arc<B>,
        topic: &str,
        record: &ConsumerRecord,
        facts: &ForwardFacts,
    ) -> Result<(TopicPartition, Offset), ApiError> {
        let mut sent = self.send_all(api, &[(topic, record, facts)]).await?;
        match sent.pop() {
            Some(sent) => sent.outcome(self).await,
            None => Err(ApiError::Protocol("no forward was sent".into())),
        }
    }

    /// [`Forwarder::forward`] for several records at once, without waiting for the broker:
    /// one produce call, with one batch per destination partition holding its records in the
    /// order given. The call is sent (its place in each destination partition taken, in call
    /// order) and runs in a task of its own; each returned [`SentForward`] (one per record, in
    /// order) says how its record went. Fails at once if a destination topic is missing and
    /// cannot be created.
    pub(crate) async fn send_all<B: BrokerApi>(
        &mut self,
        api: &Arc<B>,
        forwards: &[(&str, &ConsumerRecord, &ForwardFacts)],
    ) -> Result<Vec<SentForward>, ApiError> {
        // Each destination partition, its batch, and how many records it holds so far.
        let mut destinations: Vec<(TopicPartition, BatchBuilder, usize)> = Vec::new();
        let mut placed = Vec::with_capacity(forwards.len());
        for (topic, record, facts) in forwards {
            let count = self
                .ensure_topic(api.as_ref(), topic, &facts.original_topic)
                .await?;
            let index = record.partition.rem_euclid(count);
            let batch = match destinations
                .iter()
                .position(|(d, ..)| d.topic == *topic && d.partition == index)
            {
                Some(i) => i,
                None => {
                    let partition = TopicPartition::new(*topic, index);
                    destinations.push((partition, BatchBuilder::new(record.timestamp), 0));
                    destinations.len() - 1
                }
            };
            let (_, builder, held) = &mut destinations[batch];
            push_forward(builder, record, facts);
            placed.push((batch, *held));
            *held += 1;
        }
        let partitions: Vec<TopicPartition> =
            destinations.iter().map(|(d, ..)| d.clone()).collect();
        let call = ProduceCall {
            acks: Acks::All,
            timeout: self.timeout,
            batches: destinations
                .into_iter()
                .map(|(partition, builder, _)| PartitionBatch {
                    partition,
                    records: Bytes::from(builder.build()),
                })
                .collect(),
        };
        let api = Arc::clone(api);
        let (done, outcome) = watch::channel(None);
        let answered = partitions.clone();
        // Started at once, so forwards of one partition keep their order; it runs to the end
        // in a task of its own if need be, and the answer comes through `done`.
        eager::start(async move {
            let answers = api.produce(call).await;
            // One answer per batch, matched by partition (each partition has one batch here).
            let bases: Vec<Result<Offset, ApiError>> = answered
                .iter()
                .map(|p| {
                    answers
                        .iter()
                        .find(|(tp, _)| tp == p)
                        .map(|(_, answer)| answer.clone().map(|ack| ack.base_offset))
                        .unwrap_or_else(|| {
                            Err(ApiError::Protocol(format!(
                                "produce did not answer for {p}"
                            )))
                        })
                })
                .collect();
            let _ = done.send(Some(Arc::new(bases)));
        });
        Ok(placed
            .into_iter()
            .map(|(batch, index)| SentForward {
                outcome: outcome.clone(),
                batch,
                destination: partitions[batch].clone(),
                index,
            })
            .collect())
    }
}

/// Appends `record` as forwarded: same key, value, timestamp and own headers, Staunch's
/// headers replaced by `facts`.
fn push_forward(builder: &mut BatchBuilder, record: &ConsumerRecord, facts: &ForwardFacts) {
    let added = facts.encode();
    let headers = record
        .headers
        .iter()
        .filter(|(k, _)| !is_staunch_header(k))
        .map(|(k, v)| (k.as_ref(), v.as_deref()))
        .chain(added.pairs().map(|(k, v)| (k.as_bytes(), Some(v))));
    builder.push(
        record.timestamp,
        record.key.as_deref(),
        record.value.as_deref(),
        headers,
    );
}

/// The base offset each destination batch of a [`Forwarder::send_all`] call got, once the
/// broker answered.
type BatchOutcome = Option<Arc<Vec<Result<Offset, ApiError>>>>;

/// One record of a [`Forwarder::send_all`] call, not yet looked at.
#[derive(Debug)]
pub(crate) struct SentForward {
    outcome: watch::Receiver<BatchOutcome>,
    /// Which batch of the call holds the record, and where in it.
    batch: usize,
    index: usize,
    destination: TopicPartition,
}

impl SentForward {
    /// Whether the broker has answered (or the call was lost).
    pub(crate) fn is_finished(&self) -> bool {
        self.outcome.borrow().is_some() || self.outcome.has_changed().is_err()
    }

    /// Waits for the broker's answer: the partition and offset the record got, or why it may
    /// not be there. Forgets the destination's partition count if the broker no longer
    /// knows it.
    pub(crate) async fn outcome(
        mut self,
        forwarder: &mut Forwarder,
    ) -> Result<(TopicPartition, Offset), ApiError> {
        let answer = match self.outcome.wait_for(Option::is_some).await {
            Ok(bases) => bases.as_ref().and_then(|b| b.get(self.batch).cloned()),
            Err(_) => None,
        };
        match answer {
            Some(Ok(base)) => Ok((self.destination, base + self.index as Offset)),
            Some(Err(e)) => {
                if e.code()
                    .is_some_and(|c| c == staunch_core::ErrorCode::UnknownTopicOrPartition)
                {
                    forwarder.partitions.remove(&self.destination.topic);
                }
                Err(e)
            }
            None => Err(ApiError::NoAnswer {
                broker: "forward".into(),
                reason: "the forward's produce task ended without an answer".into(),
            }),
        }
    }
}
