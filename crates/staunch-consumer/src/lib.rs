//! A Kafka group consumer whose failures end in a retry or a dead letter, never in silence.
//!
//! Generic over [`staunch_core::BrokerApi`], so the same logic runs against an embedded
//! `staunch-broker`, a `staunch serve` process or any Kafka cluster (through `staunch-client`).
//!
//! - **Group membership** ([`Consumer::subscribe`]): the classic group protocol with the
//!   `range`, `sticky` and `cooperative-sticky` assignors ([`Assignor`]); with the last, a
//!   rebalance revokes only the partitions that move (Kafka's incremental protocol).
//! - **Commit after success** ([`consumer`]): an offset is committed only after the handler
//!   succeeded, or after the record was forwarded to a retry or dead-letter topic and that
//!   write was acknowledged with acks=all. There is no auto-commit.
//! - **Handler outcomes** ([`handler`]): success, retriable or fatal error, or an error the
//!   [`ErrorClassifier`] classifies by type with include / exclude lists.
//! - **Blocking retry** ([`FailurePolicy::Blocking`]): seek back and retry after a
//!   [`BackOff`](staunch_core::BackOff) delay; the attempt count lives in the committed
//!   offset's metadata ([`ledger`]) with the time of the last failure, so a restart or
//!   rebalance continues the count and waits out the rest of the back-off (in ordered mode
//!   only the record's key waits).
//! - **Retry topics** ([`FailurePolicy::RetryTopics`]): `<topic>-retry-<ms>` topics with the
//!   due time in a header, or the RocketMQ preset ([`policy::rocketmq`]).
//! - **Ordered mode** ([`ConsumerConfig::ordered`], [`ordered`]): a failing key's later
//!   records wait behind it while other keys flow.
//! - **Dead letters that cannot be lost**: a forward that keeps failing stops its partition
//!   and is reported ([`Consumer::stalled`], [`ConsumerEvents::on_forward_failed`]).
//!   Forwarded records carry the [`headers`] redrive reads.
//! - **Redrive** ([`redrive`](mod@redrive)): list dead-letter topics, read dead letters with their facts,
//!   and replay them to their original topic, each at most once (the progress is committed
//!   in the broker under the group `staunch-redrive.<dlt>`).
//! - **Batch handlers** ([`BatchHandler`]): a failed batch names the failing record; the ones
//!   before it are committed and it goes through the same retry path.
//! - **Counters and spans** ([`metrics`]): [`Consumer::metrics`] gives processed, retried,
//!   dead-lettered and in-retry counts per topic for the consumer's group (a redrive reports
//!   what it replayed in its [`RedriveReport`]); every poll runs in an INFO `tracing` span
//!   with the group, every handler call in a `handle` span with the group, topic, partition,
//!   offset and attempt (INFO for a batch call, DEBUG for a record handler's call), and dead
//!   letters and retry-topic forwards are `tracing` events ([`Consumer::poll_batch`]).
//!
//! ```no_run
//! # async fn demo(broker: std::sync::Arc<impl staunch_core::BrokerApi>) -> Result<(), staunch_consumer::ConsumerError> {
//! use staunch_consumer::{Consumer, ConsumerConfig, HandlerError, handler_fn};
//!
//! let mut consumer = Consumer::new(broker, ConsumerConfig::new("billing"))?;
//! consumer.subscribe(&["orders"]).await?;
//! let handler = handler_fn(|record| async move {
//!     match record.value.as_deref() {
//!         Some(b"bad") => Err(HandlerError::fatal("Invalid", "cannot parse")),
//!         _ => Ok(()),
//!     }
//! });
//! loop {
//!     consumer.poll(&handler).await?;
//! }
//! # }
//! ```

pub mod assignor;
pub mod config;
pub mod consumer;
mod decode;
mod eager;
pub mod error;
mod forward;
mod group;
pub mod handler;
pub mod headers;
pub mod ledger;
pub mod metrics;
pub mod ordered;
pub mod policy;
mod prefetch;
pub mod redrive;

pub use assignor::Assignor;
pub use config::{ConsumerConfig, ConsumerEvents, NoEvents, OffsetReset};
pub use consumer::{Consumer, Stalled};
pub use error::ConsumerError;
pub use handler::{
    BatchFailure, BatchHandler, ConsumerRecord, ErrorClassifier, Handler, HandlerError, PerRecord,
    Severity, handler_fn,
};
pub use metrics::{Counters, Metrics};
pub use policy::{FailurePolicy, TopicNaming};
pub use redrive::{
    DeadLetter, DeadLetterTopicSummary, RedriveError, RedriveOptions, RedriveReport,
    list_dead_letter_topics, read_dead_letters, redrive,
};
