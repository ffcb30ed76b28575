//! How a send fails: [`SendError`] carries the record back with the reason ([`ProduceError`]).

use std::time::Duration;

use staunch_core::ApiError;

use crate::record::{ProducerRecord, RecordMetadata};

/// The outcome of one record: where it landed, or the record back with why it failed.
pub type SendResult = Result<RecordMetadata, SendError>;

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The broker refused the record for a reason retrying cannot fix (`MESSAGE_TOO_LARGE`,
    /// `INVALID_RECORD`, `CORRUPT_MESSAGE`, an authorization or protocol error, …). Failed at
    /// once, without retries.
    #[error("refused: {0}")]
    Fatal(ApiError),
    /// The record was not acknowledged within [`crate::ProducerConfig::delivery_timeout`] of
    /// being accepted; `last_error` is the last failure seen (`None` if it never got as far as
    /// a request, e.g. while metadata or a producer id was missing without an error).
    #[error("not acknowledged within the delivery timeout of {timeout:?} after {attempts} attempt(s){}",
        last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    DeliveryTimeout {
        /// The configured delivery timeout.
        timeout: Duration,
        /// Produce requests made for the record.
        attempts: u32,
        /// The last failure.
        last_error: Option<ApiError>,
    },
    /// The retry policy ([`crate::ProducerConfig::retry_backoff`]) has a retry or time limit
    /// and it was reached before the delivery timeout.
    #[error("gave up after {attempts} attempt(s); last error: {last_error}")]
    RetriesExhausted {
        /// Produce requests made for the record.
        attempts: u32,
        /// The last failure.
        last_error: ApiError,
    },
    /// The producer's buffer stayed full for [`crate::ProducerConfig::max_block`]: records are
    /// accepted faster than the broker acknowledges them. The record was not accepted.
    #[error(
        "producer buffer of {buffer_memory} bytes stayed full for {max_block:?}; record not accepted"
    )]
    BufferFull {
        /// The configured buffer size.
        buffer_memory: usize,
        /// How long `send` waited.
        max_block: Duration,
    },
    /// The record is larger than [`crate::ProducerConfig::max_request_size`] (or the whole
    /// buffer). The record was not accepted.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes; record not accepted")]
    RecordTooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The record names a partition the topic does not have.
    #[error("partition {partition} does not exist; the topic has {partitions} partition(s)")]
    InvalidPartition {
        /// The partition asked for.
        partition: i32,
        /// The topic's partition count.
        partitions: usize,
    },
    /// The producer was closed before the record was handed to it. The record was not
    /// accepted.
    #[error("the producer is closed; record not accepted")]
    Closed,
    /// The durable outbox stayed over its size limit for [`crate::ProducerConfig::max_block`]:
    /// records are accepted faster than they complete. The record was not accepted.
    #[error(
        "producer outbox holds {bytes} bytes, over its limit of {max_bytes}, for {max_block:?}; record not accepted"
    )]
    OutboxFull {
        /// Bytes in the outbox.
        bytes: u64,
        /// The configured limit.
        max_bytes: u64,
        /// How long `send` waited.
        max_block: Duration,
    },
    /// The durable outbox could not store the record (disk full, failed fsync, closed). The
    /// record was not accepted.
    #[error("producer outbox could not store the record: {0}; record not accepted")]
    Outbox(String),
    /// The producer's task stopped (its runtime shut down, or it panicked) before the record
    /// was acknowledged. With an outbox, the record is still in it and is sent again when the
    /// producer is reopened.
    #[error("the producer stopped before the record was acknowledged")]
    Aborted,
}

impl ProduceError {
    /// The broker or transport error behind the failure, if there was one.
    pub fn last_error(&self) -> Option<&ApiError> {
        match self {
            ProduceError::Fatal(e) | ProduceError::RetriesExhausted { last_error: e, .. } => {
                Some(e)
            }
            ProduceError::DeliveryTimeout { last_error, .. } => last_error.as_ref(),
            _ => None,
        }
    }
}

/// A record that failed, with the reason. Every record `send` accepted that is not acknowledged
/// comes back in one of these, with its key, value and headers intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct SendError {
    /// The record, as the caller gave it (its timestamp is filled in if it was `None` and the
    /// record got as far as a batch).
    pub record: ProducerRecord,
    /// Why it failed.
    pub error: ProduceError,
    /// Whether an earlier attempt was ambiguous (no answer, or a broker timeout), so the
    /// record may be in the log although it failed. A caller that sends it again may
    /// duplicate it.
    pub may_have_been_appended: bool,
}

impl SendError {
    /// A failure of a record that was never sent.
    pub(crate) fn unsent(record: ProducerRecord, error: ProduceError) -> Self {
        SendError {
            record,
            error,
            may_have_been_appended: false,
        }
    }
}
