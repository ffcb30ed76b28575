//! A network client for the Kafka protocol, against Staunch or any Kafka cluster.
//!
//! So far: [`Connection`], one TCP connection that negotiates API versions on connect and
//! makes typed calls (`connection.call(MetadataRequest::default())`). Connection pooling,
//! metadata caching and routing to partition leaders build on it.

mod connection;

pub use connection::{ClientError, Connection};
pub use staunch_protocol::kafka_protocol;
