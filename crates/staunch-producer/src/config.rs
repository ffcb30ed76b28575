//! [`ProducerConfig`]: what the producer promises and how hard it tries, with Kafka's defaults.
//!
//! The names follow the Java client's settings (`linger.ms` → [`ProducerConfig::linger`],
//! `delivery.timeout.ms` → [`ProducerConfig::delivery_timeout`], …) so a Kafka user finds them.
//! Every value is checked by [`ProducerConfig::validate`], which [`crate::Producer::new`] calls.
//!
//! The config reads from a TOML (or any serde) section; every key is optional and defaults to
//! [`ProducerConfig::default()`], unknown keys are refused, durations are human-readable:
//!
//! ```toml
//! acks = "all"                 # "all" (or -1), 1, 0
//! linger = "5ms"
//! batch_size = 1000000         # bytes before compression
//! max_request_size = 1048576
//! max_in_flight_per_partition = 5
//! delivery_timeout = "2m"      # at least linger + request_timeout
//! request_timeout = "30s"
//! buffer_memory = 33554432
//! max_block = "1m"
//! idempotence = true
//! metadata_max_age = "5m"
//! compression = "none"         # none, gzip, snappy, lz4, zstd
//! unkeyed_partitioning = "sticky-avoiding-unavailable"   # or "sticky"
//!
//! [retry_backoff]              # staunch_core::BackOff; these are its producer defaults
//! initial = "100ms"
//! multiplier = 2.0
//! max_interval = "1s"
//! jitter = 0.2
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use staunch_core::{Acks, BackOff, BackOffError};

/// Compression of the batches the producer sends (`compression.type`): Kafka's codecs, in the
/// framing the Java client writes (see [`staunch_core::compression`]). Default
/// [`Compression::None`]. A batch is compressed once, when it is first sent; the broker stores
/// it as it is and consumers decompress it.
pub use staunch_core::compression::Compression;

/// Which partition an unkeyed record without an explicit partition goes to. In a config file:
/// `"sticky-avoiding-unavailable"` or `"sticky"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
/// delivery timeout, and never duplicated by a retry. Reads from a config file section (see
/// the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// How acknowledged a record must be before `send` reports success (`acks`). Default
    /// [`Acks::All`]; idempotence requires it. In a config file: `"all"` (or `-1`), `1`, `0`.
    #[serde(with = "acks_serde")]
    pub acks: Acks,
    /// How long a partition's batch waits for more records before it is sent (`linger.ms`).
    /// Default 5 ms (Kafka 4.0's default). `flush` and `close` send at once.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes (`batch.size`); a single larger record gets
    /// a batch of its own. Default 1,000,000 bytes, librdkafka's default. (The Java client's
    /// 16 KiB is too small for a broker that acknowledges only after fsync, as Staunch does by
    /// default: under load at most [`ProducerConfig::max_in_flight_per_partition`] batches of a
    /// partition are on their way per round trip, so the batch size bounds the throughput; with
    /// 1 KiB records against `staunch serve`, 16 KiB batches reach about a third of the rate of
    /// 1 MB ones, see `benches/compare-producers`.) Under light load the linger time closes
    /// batches long before they are full, and the size changes nothing. Counted *before*
    /// compression (the encoded records as the batch builder holds them): a compressed batch
    /// goes out smaller than this. (The Java client instead estimates the compressed size, so
    /// its compressed batches hold more records; counting the uncompressed size is simpler and
    /// never sends a batch larger than this.)
    pub batch_size: usize,
    /// Largest request, and so largest single record, the producer sends (`max.request.size`);
    /// a larger record fails at `send` with [`crate::ProduceError::RecordTooLarge`]. Default
    /// 1 MiB. Like [`ProducerConfig::batch_size`], measured before compression, as Kafka does
    /// for a single record.
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
    /// already in flight is allowed to finish first. Default 120 s. Must be at least
    /// [`ProducerConfig::linger`] + [`ProducerConfig::request_timeout`] (Kafka's rule: room for
    /// at least one full attempt).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How long one produce request may take before it counts as unanswered
    /// (`request.timeout.ms`), also passed to the broker as its wait for replicas. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bytes of records the producer holds before `send` waits for room (`buffer.memory`).
    /// Default 32 MiB. The buffer is never unbounded.
    pub buffer_memory: usize,
    /// How long `send` waits for room in a full buffer before it fails with
    /// [`crate::ProduceError::BufferFull`] (`max.block.ms`). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub max_block: Duration,
    /// Idempotent producer (`enable.idempotence`): a producer id, and sequence numbers per
    /// partition so the broker drops retried duplicates and refuses gaps. Default `true`.
    pub idempotence: bool,
    /// Refresh a topic's partitions and leaders at least this often (`metadata.max.age.ms`).
    /// Default 5 min. Errors that mean "stale metadata" refresh it at once.
    #[serde(with = "humantime_serde")]
    pub metadata_max_age: Duration,
    /// Batch compression (`compression.type`). Default [`Compression::None`].
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
            batch_size: 1_000_000,
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
    /// The delivery timeout leaves no room for one attempt: Kafka refuses
    /// `delivery.timeout.ms < linger.ms + request.timeout.ms` for the same reason.
    #[error(
        "delivery_timeout ({delivery_timeout:?}) must be at least linger ({linger:?}) + \
         request_timeout ({request_timeout:?}): a record must have time for one full attempt"
    )]
    DeliveryTimeoutTooShort {
        /// The configured delivery timeout.
        delivery_timeout: Duration,
        /// The configured linger time.
        linger: Duration,
        /// The configured request timeout.
        request_timeout: Duration,
    },
    /// The compression codec is not compiled into this build of `staunch-core`.
    #[error("compression {0} is not available: staunch-core was built without its \"{0}\" feature")]
    CompressionUnavailable(Compression),
}

impl ProducerConfig {
    /// Checks the settings and returns them: positive sizes, timeouts and in-flight limit; an
    /// idempotent producer needs `acks=all` and at most 5 batches in flight per partition; a
    /// request must fit in the buffer; the delivery timeout must cover linger + request
    /// timeout; the compression codec must be compiled in; the back-off policy must be valid.
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
        if self.delivery_timeout < self.linger.saturating_add(self.request_timeout) {
            return Err(ConfigError::DeliveryTimeoutTooShort {
                delivery_timeout: self.delivery_timeout,
                linger: self.linger,
                request_timeout: self.request_timeout,
            });
        }
        if !self.compression.is_available() {
            return Err(ConfigError::CompressionUnavailable(self.compression));
        }
        self.retry_backoff = self.retry_backoff.validate()?;
        Ok(self)
    }
}

/// Serde for [`Acks`] as Kafka writes it: `"all"`, `"-1"`, `"1"`, `"0"` or the numbers
/// -1, 1, 0; written back as `"all"`, `"1"`, `"0"`.
mod acks_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use staunch_core::Acks;

    pub(super) fn serialize<S: Serializer>(acks: &Acks, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match acks {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        })
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Acks, D::Error> {
        let acks = match Raw::deserialize(d)? {
            Raw::Number(-1) => Some(Acks::All),
            Raw::Number(1) => Some(Acks::Leader),
            Raw::Number(0) => Some(Acks::None),
            Raw::Number(_) => None,
            Raw::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "all" | "-1" => Some(Acks::All),
                "1" => Some(Acks::Leader),
                "0" => Some(Acks::None),
                _ => None,
            },
        };
        acks.ok_or_else(|| serde::de::Error::custom("acks must be \"all\" (or -1), 1 or 0"))
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
        // librdkafka's batch.size, not the Java client's 16 KiB (see the field's docs).
        assert_eq!(c.batch_size, 1_000_000);
        assert!(c.batch_size <= c.max_request_size);
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

    #[test]
    fn delivery_timeout_must_cover_linger_and_request_timeout() {
        let config = |delivery: u64, linger: u64, request: u64| ProducerConfig {
            delivery_timeout: Duration::from_millis(delivery),
            linger: Duration::from_millis(linger),
            request_timeout: Duration::from_millis(request),
            ..Default::default()
        };
        config(1_000, 100, 900).validate().unwrap();
        let err = config(1_000, 101, 900).validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::DeliveryTimeoutTooShort {
                delivery_timeout: Duration::from_millis(1_000),
                linger: Duration::from_millis(101),
                request_timeout: Duration::from_millis(900),
            }
        );
        assert_eq!(
            err.to_string(),
            "delivery_timeout (1s) must be at least linger (101ms) + request_timeout (900ms): \
             a record must have time for one full attempt"
        );
        // The default request timeout (30 s) does not fit a 10 s delivery timeout.
        assert!(matches!(
            config(10_000, 5, 30_000).validate(),
            Err(ConfigError::DeliveryTimeoutTooShort { .. })
        ));
    }

    #[test]
    fn every_codec_is_accepted() {
        for compression in Compression::ALL {
            let c = ProducerConfig {
                compression,
                ..Default::default()
            };
            assert_eq!(c.validate().unwrap().compression, compression);
        }
    }

    #[test]
    fn reads_a_toml_section_with_human_durations() {
        let c: ProducerConfig = toml::from_str(
            r#"
            acks = "all"
            linger = "20ms"
            batch_size = 65536
            delivery_timeout = "45s"
            request_timeout = "15s"
            max_block = "2s"
            idempotence = true
            compression = "zstd"
            unkeyed_partitioning = "sticky"

            [retry_backoff]
            initial = "50ms"
            max_interval = "2s"
            "#,
        )
        .unwrap();
        let c = c.validate().unwrap();
        assert_eq!(c.linger, Duration::from_millis(20));
        assert_eq!(c.batch_size, 65536);
        assert_eq!(c.delivery_timeout, Duration::from_secs(45));
        assert_eq!(c.request_timeout, Duration::from_secs(15));
        assert_eq!(c.max_block, Duration::from_secs(2));
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.unkeyed_partitioning, UnkeyedPartitioning::Sticky);
        assert_eq!(c.retry_backoff.initial, Duration::from_millis(50));
        assert_eq!(c.retry_backoff.max_interval, Duration::from_secs(2));
        // Unset keys of the back-off keep the producer's defaults.
        assert_eq!(
            c.retry_backoff.multiplier,
            BackOff::kafka_producer_default().multiplier
        );
        // Untouched keys keep theirs.
        assert_eq!(
            c.max_request_size,
            ProducerConfig::default().max_request_size
        );

        for (text, acks) in [
            ("acks = \"all\"", Acks::All),
            ("acks = -1", Acks::All),
            ("acks = \"-1\"", Acks::All),
            ("acks = 1", Acks::Leader),
            ("acks = \"1\"", Acks::Leader),
            ("acks = 0", Acks::None),
        ] {
            let c: ProducerConfig = toml::from_str(text).unwrap();
            assert_eq!(c.acks, acks, "{text}");
        }
    }

    #[test]
    fn an_empty_section_is_the_default_and_the_default_round_trips() {
        let empty: ProducerConfig = toml::from_str("").unwrap();
        assert_eq!(empty, ProducerConfig::default());
        let written = toml::to_string(&ProducerConfig::default()).unwrap();
        assert!(written.contains("delivery_timeout = \"2m\""), "{written}");
        assert!(written.contains("acks = \"all\""), "{written}");
        assert!(written.contains("compression = \"none\""), "{written}");
        let back: ProducerConfig = toml::from_str(&written).unwrap();
        assert_eq!(back, ProducerConfig::default());
        let custom = ProducerConfig {
            acks: Acks::Leader,
            idempotence: false,
            compression: Compression::Lz4,
            unkeyed_partitioning: UnkeyedPartitioning::Sticky,
            linger: Duration::from_millis(250),
            ..Default::default()
        };
        let back: ProducerConfig = toml::from_str(&toml::to_string(&custom).unwrap()).unwrap();
        assert_eq!(back, custom);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let err = toml::from_str::<ProducerConfig>("lingr = \"5ms\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `lingr`"), "{err}");
        let err = toml::from_str::<ProducerConfig>("compression = \"brotli\"").unwrap_err();
        assert!(err.to_string().contains("brotli"), "{err}");
        let err = toml::from_str::<ProducerConfig>("acks = 2").unwrap_err();
        assert!(err.to_string().contains("acks must be"), "{err}");
        let err = toml::from_str::<ProducerConfig>("linger = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("linger"), "{err}");
        let err =
            toml::from_str::<ProducerConfig>("[retry_backoff]\ninitiall = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("initiall"), "{err}");
        // Parsed, then refused by validate with a clear message.
        let c: ProducerConfig =
            toml::from_str("delivery_timeout = \"10s\"\nrequest_timeout = \"30s\"").unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("delivery_timeout (10s) must be at least linger (5ms)"),
            "{err}"
        );
        let c: ProducerConfig = toml::from_str("acks = 1").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "idempotence requires acks=all, got Leader"
        );
    }
}
