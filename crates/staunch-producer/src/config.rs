//! [`ProducerConfig`]: what the producer promises and how hard it tries, with Kafka's defaults.
//!
//! The names follow the Java client's settings (`linger.ms` → [`ProducerConfig::linger`],
//! `delivery.timeout.ms` → [`ProducerConfig::delivery_timeout`], …) so a Kafka user finds them.
//! Every value is checked by [`ProducerConfig::validate`], which [`crate::Producer::new`] calls.

use std::time::Duration;

use staunch_core::{Acks, BackOff, BackOffError};

/// Compression of the batches the producer sends.
///
/// Only [`Compression::None`] exists for now: compressed batches are built through the
/// `kafka-protocol` crate, which this producer does not use yet. The enum is here so that adding
/// codecs later does not change the config's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Records are sent as they are (`compression.type=none`).
    #[default]
    None,
}

/// Which partition an unkeyed record without an explicit partition goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UnkeyedPartitioning {
    /// Kafka's sticky partitioner: stick to one partition until its batch is closed, then pick
    /// another at random — large batches, even spread over time. Partitions that have no
    /// leader, or whose last produce was not sent or not answered, are skipped while another
    /// one is available (RocketMQ's "retry another broker").
    #[default]
    StickyAvoidingUnavailable,
    /// Sticky as above, but never skips a partition for being unavailable (Kafka's behaviour
    /// with `partitioner.availability.timeout.ms=0`).
    Sticky,
}

/// Settings of a [`crate::Producer`]. `ProducerConfig::default()` is Kafka's producer default
/// with idempotence on: every record is acknowledged by all in-sync replicas, retried until its
/// delivery timeout, and never duplicated by a retry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerConfig {
    /// How acknowledged a record must be before `send` reports success (`acks`). Default
    /// [`Acks::All`]; idempotence requires it.
    pub acks: Acks,
    /// How long a partition's batch waits for more records before it is sent (`linger.ms`).
    /// Default 5 ms (Kafka 4.0's default). `flush` and `close` send at once.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes (`batch.size`); a single larger record gets
    /// a batch of its own. Default 16 KiB.
    pub batch_size: usize,
    /// Largest request, and so largest single record, the producer sends (`max.request.size`);
    /// a larger record fails at `send` with [`crate::ProduceError::RecordTooLarge`]. Default
    /// 1 MiB.
    pub max_request_size: usize,
    /// Batches of one partition that may be in flight at once. Default 5, the most that keeps
    /// idempotent de-duplication exact (the broker remembers a producer's last five batches).
    pub max_in_flight_per_partition: usize,
    /// Delay between retries of a failed batch (`retry.backoff.ms` / `retry.backoff.max.ms`).
    /// Default: 100 ms doubling up to 1 s, ±20 % jitter ([`BackOff::kafka_producer_default`]).
    /// A retry limit or elapsed limit set on the policy is honoured as well; the delivery
    /// timeout bounds retries in any case.
    pub retry_backoff: BackOff,
    /// The most time from `send` accepting a record to its outcome (`delivery.timeout.ms`):
    /// once it passes, a record that is not acknowledged fails with
    /// [`crate::ProduceError::DeliveryTimeout`] instead of being retried again. A request
    /// already in flight is allowed to finish first. Default 120 s.
    pub delivery_timeout: Duration,
    /// How long one produce request may take before it counts as unanswered
    /// (`request.timeout.ms`), also passed to the broker as its wait for replicas. Default 30 s.
    pub request_timeout: Duration,
    /// Bytes of records the producer holds before `send` waits for room (`buffer.memory`).
    /// Default 32 MiB. The buffer is never unbounded.
    pub buffer_memory: usize,
    /// How long `send` waits for room in a full buffer before it fails with
    /// [`crate::ProduceError::BufferFull`] (`max.block.ms`). Default 60 s.
    pub max_block: Duration,
    /// Idempotent producer (`enable.idempotence`): a producer id, and sequence numbers per
    /// partition so the broker drops retried duplicates and refuses gaps. Default `true`.
    pub idempotence: bool,
    /// Refresh a topic's partitions and leaders at least this often (`metadata.max.age.ms`).
    /// Default 5 min. Errors that mean "stale metadata" refresh it at once.
    pub metadata_max_age: Duration,
    /// Batch compression. Only [`Compression::None`] for now.
    pub compression: Compression,
    /// Partitioning of unkeyed records; keyed records always go to
    /// `toPositive(murmur2(key)) % partitions`, as in Kafka.
    pub unkeyed_partitioning: UnkeyedPartitioning,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            max_request_size: 1024 * 1024,
            max_in_flight_per_partition: 5,
            retry_backoff: BackOff::kafka_producer_default(),
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            idempotence: true,
            metadata_max_age: Duration::from_secs(300),
            compression: Compression::None,
            unkeyed_partitioning: UnkeyedPartitioning::default(),
        }
    }
}

/// Why a [`ProducerConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Idempotence needs `acks=all`: with fewer acknowledgements a leader change can lose
    /// records the sequence numbers say were written.
    #[error("idempotence requires acks=all, got {0:?}")]
    IdempotenceNeedsAcksAll(Acks),
    /// Idempotent de-duplication is exact only with at most 5 batches in flight per partition.
    #[error("max_in_flight_per_partition must be 1..=5 with idempotence, got {0}")]
    InFlightWithIdempotence(usize),
    /// A size or count that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The largest request does not fit in the buffer.
    #[error("max_request_size ({max_request_size}) exceeds buffer_memory ({buffer_memory})")]
    RequestLargerThanBuffer {
        /// The configured request limit.
        max_request_size: usize,
        /// The configured buffer.
        buffer_memory: usize,
    },
    /// The retry back-off policy is invalid.
    #[error("retry_backoff: {0}")]
    BackOff(#[from] BackOffError),
}

impl ProducerConfig {
    /// Checks the settings and returns them: positive sizes, timeouts and in-flight limit; an
    /// idempotent producer needs `acks=all` and at most 5 batches in flight per partition; a
    /// request must fit in the buffer; the back-off policy must be valid.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.idempotence && self.acks != Acks::All {
            return Err(ConfigError::IdempotenceNeedsAcksAll(self.acks));
        }
        if self.max_in_flight_per_partition == 0 {
            return Err(ConfigError::Zero("max_in_flight_per_partition"));
        }
        if self.idempotence && self.max_in_flight_per_partition > 5 {
            return Err(ConfigError::InFlightWithIdempotence(
                self.max_in_flight_per_partition,
            ));
        }
        for (name, zero) in [
            ("batch_size", self.batch_size == 0),
            ("max_request_size", self.max_request_size == 0),
            ("buffer_memory", self.buffer_memory == 0),
            ("delivery_timeout", self.delivery_timeout.is_zero()),
            ("request_timeout", self.request_timeout.is_zero()),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_request_size > self.buffer_memory {
            return Err(ConfigError::RequestLargerThanBuffer {
                max_request_size: self.max_request_size,
                buffer_memory: self.buffer_memory,
            });
        }
        self.retry_backoff = self.retry_backoff.validate()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_kafka_like() {
        let c = ProducerConfig::default().validate().unwrap();
        assert_eq!(c.acks, Acks::All);
        assert!(c.idempotence);
        assert_eq!(c.max_in_flight_per_partition, 5);
        assert_eq!(c.delivery_timeout, Duration::from_secs(120));
        assert_eq!(c.max_block, Duration::from_secs(60));
    }

    #[test]
    fn rejects_contradictions() {
        let bad = |c: ProducerConfig| c.validate().is_err();
        assert!(bad(ProducerConfig {
            acks: Acks::Leader,
            ..Default::default()
        }));
        assert!(bad(ProducerConfig {
            max_in_flight_per_partition: 6,
            ..Default::default()
        }));
        assert!(bad(ProducerConfig {
            batch_size: 0,
            ..Default::default()
        }));
        assert!(bad(ProducerConfig {
            buffer_memory: 1024,
            ..Default::default()
        }));
        assert!(!bad(ProducerConfig {
            acks: Acks::Leader,
            idempotence: false,
            max_in_flight_per_partition: 50,
            ..Default::default()
        }));
    }
}
