//! The Staunch broker as a library.
//!
//! [`Broker`] owns a data directory: one log per partition (`staunch-log`), the committed
//! offsets of consumer groups, and the producer-id reservations. It implements the produce and
//! fetch paths with Staunch's guarantees — a produce is acknowledged only once its records are as
//! durable as the topic's flush policy promises (fsync under the default `always`), and a fetch
//! returns only acknowledged records — plus idempotent-producer de-duplication, topic admin and
//! durable offsets. It speaks in plain types ([`types`]); `staunch-server` puts it on the Kafka
//! wire.

pub mod acl;
mod api;
pub mod broker;
mod byte_reader;
pub mod config;
pub mod credentials;
pub mod group;
mod group_offsets;
pub mod metrics;
pub mod offsets;
pub mod offsets_snapshot;
mod parallel;
pub mod partition;
pub mod principal;
pub mod producer_ids;
pub mod producer_snapshot;
pub mod producer_state;
pub mod storage;
pub mod topic_config;
pub mod topics;
pub mod types;

pub use acl::Authorizer;
pub use broker::{Broker, OpenError, ProduceInFlight};
pub use config::BrokerConfig;
pub use credentials::{CredentialChange, CredentialStore, StoredCredential};
pub use offsets::CommittedOffset;
pub use principal::Principal;
pub use storage::Storage;
pub use topic_config::{ConfigEntry, TopicConfig};
pub use types::*;
