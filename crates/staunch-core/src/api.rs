//! [`BrokerApi`]: the calls a producer or consumer makes to a Kafka-protocol cluster.
//!
//! Two implementations exist: `staunch-client` over TCP (against Staunch or any Kafka cluster)
//! and `staunch-broker` in-process. Producer and consumer are generic over this trait, so their
//! retry and dead-letter logic runs the same against both — and against test doubles that drop
//! connections or lose answers on purpose.
//!
//! The trait speaks of a *cluster*, not one connection: an implementation routes each partition's
//! records to that partition's leader and refreshes what it knows about leaders when told it is
//! stale. It does not retry: retries, back-off and idempotence are the caller's policy.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::{ErrorCode, Offset, ProducerEpoch, ProducerId, TopicPartition};

/// How many replicas must have a produce's records before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No answer at all (`acks=0`): the caller never learns whether the records arrived.
    None,
    /// The leader has appended them (`acks=1`); on Staunch, as durable as its flush policy says.
    Leader,
    /// Every in-sync replica has them (`acks=all`, the default).
    #[default]
    All,
}

impl Acks {
    /// The value on the wire: 0, 1 or -1.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Why a call, or one partition of a call, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The broker answered with an error code for this partition (or the whole request).
    #[error("{code} from the broker{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The Kafka error code.
        code: ErrorCode,
        /// The broker's explanation, if it sent one.
        message: Option<String>,
    },
    /// The request was sent but no answer arrived (the connection dropped, or the request timed
    /// out). **Ambiguous** for a produce: the broker may have appended the records.
    #[error("no answer from {broker}: {reason}")]
    NoAnswer {
        /// The broker the request went to.
        broker: String,
        /// What happened.
        reason: String,
    },
    /// The request was not sent: no leader is known, or no connection could be made. Nothing
    /// was appended.
    #[error("not sent to {target}: {reason}")]
    NotSent {
        /// The partition or broker it was meant for.
        target: String,
        /// Why it was not sent.
        reason: String,
    },
    /// The broker does not speak a version of the API this client can use, or sent an answer
    /// that could not be decoded. Retrying does not help.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ApiError {
    /// A broker error without a message.
    pub fn broker(code: ErrorCode) -> Self {
        ApiError::Broker {
            code,
            message: None,
        }
    }

    /// Whether the same call may succeed if retried (after a metadata refresh or a pause):
    /// transport failures, and the broker error codes Kafka marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            ApiError::Broker { code, .. } => code.is_retriable(),
            ApiError::NoAnswer { .. } | ApiError::NotSent { .. } => true,
            ApiError::Protocol(_) => false,
        }
    }

    /// Whether the records may have been appended although the call failed — the case an
    /// idempotent producer resolves with sequence numbers and a plain producer turns into a
    /// possible duplicate.
    pub fn may_have_been_appended(&self) -> bool {
        match self {
            ApiError::NoAnswer { .. } => true,
            ApiError::Broker { code, .. } => *code == ErrorCode::RequestTimedOut,
            ApiError::NotSent { .. } | ApiError::Protocol(_) => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Kafka v2 record batches for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// Where the records go.
    pub partition: TopicPartition,
    /// One or more v2 record batches (an idempotent producer sends exactly one per partition).
    pub records: Bytes,
}

/// A produce call: batches for any number of partitions, which the implementation sends to
/// each partition's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceCall {
    /// How acknowledged the records must be before the answer.
    pub acks: Acks,
    /// How long the broker may wait for replicas before answering with a timeout error.
    pub timeout: Duration,
    /// The batches, at most one per partition.
    pub batches: Vec<PartitionBatch>,
}

/// Where a partition's records landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the first record; -1 with [`Acks::None`], when the broker does not answer.
    pub base_offset: Offset,
    /// The broker's append time for topics that use log-append time, else -1.
    pub log_append_time_ms: i64,
}

/// One partition of a topic, as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition index.
    pub index: i32,
    /// The leader's node id, or `None` while the partition has no leader.
    pub leader: Option<i32>,
}

/// A topic's partitions, as metadata describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Every partition, by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A producer id with its epoch, from `InitProducerId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    /// The producer id; never handed out twice by a cluster.
    pub id: ProducerId,
    /// Its epoch.
    pub epoch: ProducerEpoch,
}

/// The calls producers and consumers make to a Kafka-protocol cluster.
///
/// Every method is a single attempt: it reports failures, it does not retry them. Futures are
/// `Send`, so callers may spawn them.
pub trait BrokerApi: Send + Sync + 'static {
    /// Appends each partition's batches at its leader. Returns one outcome per batch, in the
    /// order given. With [`Acks::All`] an `Ok` means every in-sync replica has the records
    /// (on Staunch with flush `always`: on disk). An [`ApiError::NoAnswer`] is ambiguous: the
    /// records may have been appended.
    ///
    /// **Order:** concurrent calls that name the same partition are appended in the order the
    /// calls were first polled, as a Kafka connection appends its pipelined requests in order.
    /// An idempotent producer relies on this to keep several batches of one partition in
    /// flight without the broker seeing a sequence gap.
    fn produce(
        &self,
        call: ProduceCall,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<ProduceAck, ApiError>)>> + Send;

    /// The topic's partitions and their leaders. Creates the topic when the cluster
    /// auto-creates topics; otherwise a missing topic is
    /// `ApiError::Broker { code: UnknownTopicOrPartition, .. }`.
    fn topic(&self, topic: &str) -> impl Future<Output = Result<TopicInfo, ApiError>> + Send;

    /// A new producer id for an idempotent producer (epoch 0 on a new id).
    fn init_producer_id(&self) -> impl Future<Output = Result<ProducerIdentity, ApiError>> + Send;
}
