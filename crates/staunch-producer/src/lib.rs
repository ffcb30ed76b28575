//! A Kafka producer that never drops a record it accepted, generic over
//! [`staunch_core::BrokerApi`].
//!
//! Every record handed to the [`Producer`] ends in exactly one of two states the caller can
//! see: **acknowledged** (with its partition and offset), or **failed** and handed back with its
//! key, value, headers and the last error. In between the producer batches records per
//! partition, retries what is retriable with back-off until the record's delivery timeout,
//! refreshes metadata after leader changes, and — with idempotence, on by default — stamps
//! producer id and sequence numbers so a retried batch is never written twice.
//!
//! Three send modes, as Kafka and RocketMQ users know them:
//!
//! | call | returns | use for |
//! |---|---|---|
//! | [`Producer::send`]`(record).await` | the outcome | records that must not be lost |
//! | [`Producer::send_async`]`(record, callback).await` | once accepted; callback gets the outcome | high throughput without losing outcomes |
//! | [`Producer::send_oneway`]`(record).await` | once accepted; no outcome | explicitly unreliable fire-and-forget |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use staunch_producer::{Producer, ProducerConfig, ProducerRecord};
//! # let dir = tempfile::tempdir().unwrap();
//! # let config = staunch_broker::BrokerConfig { data_dir: dir.path().to_owned(), ..Default::default() };
//! let broker = staunch_broker::Broker::open(config).unwrap(); // or a network client
//! let producer = Producer::new(broker, ProducerConfig::default()).unwrap();
//! let placed = producer
//!     .send(ProducerRecord::new("orders", "42 apples").with_key("customer-7"))
//!     .await
//!     .unwrap();
//! assert_eq!(placed.offset, 0);
//! producer.close().await;
//! # }
//! ```
//!
//! Modules, one job each: [`config`] (settings and defaults), [`record`] and [`error`] (what
//! goes in and comes out), [`partitioner`] (Kafka-compatible partitioning), [`metrics`]
//! (counters), and the private accumulator (batches and per-record outcomes), sequence
//! (idempotence rules, documented there) and sender (the task that owns all state).
//!
//! With [`Producer::with_outbox`] every accepted record is first written to a local durable
//! [`outbox`], so a crash of the producer's own process loses nothing it accepted.
//!
//! Batches are compressed with [`ProducerConfig::compression`] (gzip, snappy, lz4, zstd, as
//! Kafka writes them). Not here yet: transactions.

pub mod config;
pub mod error;
pub mod metrics;
pub mod outbox;
pub mod partitioner;
pub mod record;

mod accumulator;
mod producer;
mod sender;
mod sequence;

pub use config::{Compression, ConfigError, ProducerConfig, UnkeyedPartitioning};
pub use error::{ProduceError, SendError, SendResult};
pub use metrics::ProducerMetrics;
pub use outbox::{OutboxConfig, OutboxError};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{OpenError, OutboxRecovery, Producer};
pub use record::{Header, ProducerRecord, RecordMetadata};
