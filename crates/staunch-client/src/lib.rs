//! A network client for the Kafka protocol, against Staunch or any Kafka cluster.
//!
//! Three layers, each usable on its own:
//!
//! - [`Connection`]: one TCP connection, one call at a time (`&mut self`), with API versions
//!   negotiated on connect. Simple and predictable; the CLI and wire tests use it.
//! - [`PipelinedConnection`]: one TCP connection shared through `&self` with many requests in
//!   flight. Requests are written in the order they are queued, answers are matched by
//!   correlation id, answer frames are size-checked before allocation, and a failure tells each
//!   caller whether its request may have reached the broker ([`ClientError::NoAnswer`]) or
//!   certainly did not ([`ClientError::NotSent`]).
//! - [`Client`]: a cluster — metadata cache, pipelined connections per broker (opened lazily,
//!   replaced after failure; fetches and group calls on connections of their own, so a long
//!   poll or a rebalance never holds up a produce or a heartbeat), routing to partition leaders
//!   and group coordinators. It implements [`staunch_core::BrokerApi`], so the Staunch producer
//!   and consumer run over the network the same way they run against an embedded broker. Like
//!   every `BrokerApi`, it never retries.
//!
//! ```no_run
//! use staunch_client::{Client, ClientConfig};
//! use staunch_core::{Acks, BatchBuilder, BrokerApi, PartitionBatch, ProduceCall, TopicPartition};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(vec!["127.0.0.1:9092".into()], ClientConfig::default()).await?;
//! let acks = client
//!     .produce(ProduceCall {
//!         acks: Acks::All,
//!         timeout: std::time::Duration::from_secs(30),
//!         batches: vec![PartitionBatch {
//!             partition: TopicPartition::new("orders", 0),
//!             records: BatchBuilder::new(0).record(None, Some(b"hello")).build().into(),
//!         }],
//!     })
//!     .await;
//! for (partition, outcome) in acks {
//!     println!("{partition}: {:?}", outcome?);
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod broker_api;
mod cluster;
mod config;
mod connection;
#[cfg(test)]
mod fake_broker;
mod fetch;
mod groups;
mod pipelined;
mod routing;
mod security;
mod tls;

pub use cluster::Client;
pub use config::ClientConfig;
pub use connection::{ClientError, Connection};
pub use pipelined::PipelinedConnection;
pub use security::{SaslCredentials, SecurityConfig, TlsClientSettings};
pub use staunch_core::{SaslMechanism, SecurityProtocol};
pub use staunch_protocol::kafka_protocol;
