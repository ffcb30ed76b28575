//! [`ClientConfig`]: timeouts and limits shared by the cluster [`Client`](crate::Client) and
//! each [`PipelinedConnection`](crate::PipelinedConnection).

use std::time::Duration;

use crate::ClientError;
use crate::security::SecurityConfig;

/// Settings of a client; `Default` gives Kafka's defaults where Kafka has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Sent in every request header (`client.id`). Default `"staunch"`.
    pub client_id: String,
    /// How long a request may wait for its answer before the connection is closed and the
    /// call fails as unanswered (`request.timeout.ms`). Default 30 s.
    pub request_timeout: Duration,
    /// How long establishing a connection, including the ApiVersions handshake, may take
    /// (`socket.connection.setup.timeout.ms`). Default 10 s.
    pub connect_timeout: Duration,
    /// Cached metadata older than this is fetched again before use (`metadata.max.age.ms`).
    /// Default 5 min.
    pub metadata_max_age: Duration,
    /// Largest answer frame accepted from a broker; a larger size prefix closes the
    /// connection before anything is allocated. Default 100 MiB.
    pub max_response_bytes: usize,
    /// How connections are secured (TLS, SASL). Default PLAINTEXT.
    pub security: SecurityConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "staunch".to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            metadata_max_age: Duration::from_secs(300),
            max_response_bytes: staunch_protocol::DEFAULT_MAX_FRAME_BYTES,
            security: SecurityConfig::default(),
        }
    }
}

impl ClientConfig {
    /// Returns the configuration if it is usable: non-zero timeouts and a response limit of at
    /// least 1 KiB.
    pub fn validate(self) -> Result<Self, ClientError> {
        if self.request_timeout.is_zero() {
            return Err(ClientError::Config("request_timeout must be > 0".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(ClientError::Config("connect_timeout must be > 0".into()));
        }
        if self.max_response_bytes < 1024 {
            return Err(ClientError::Config(format!(
                "max_response_bytes of {} is below 1 KiB",
                self.max_response_bytes
            )));
        }
        Ok(self)
    }
}
