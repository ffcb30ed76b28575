//! [`SecurityConfig`]: how a client secures its connections (TLS, SASL), with the settings
//! Kafka clients use (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, ...).

use std::fmt;
use std::path::PathBuf;

use staunch_core::{SaslMechanism, SecurityProtocol};

/// How a client secures each connection. `Default` is PLAINTEXT, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The protocol every connection speaks; it must match the broker listener's.
    pub protocol: SecurityProtocol,
    /// TLS settings, used when `protocol` is SSL or SASL_SSL.
    pub tls: TlsClientSettings,
    /// SASL credentials, required when `protocol` is SASL_PLAINTEXT or SASL_SSL.
    pub sasl: Option<SaslCredentials>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            protocol: SecurityProtocol::Plaintext,
            tls: TlsClientSettings::default(),
            sasl: None,
        }
    }
}

/// TLS settings of a client (librdkafka's names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientSettings {
    /// PEM file of the certificate authorities trusted to sign the broker's certificate
    /// (`ssl.ca.location`); `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the broker (`ssl.certificate.location`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (`ssl.key.location`).
    pub key_file: Option<PathBuf>,
    /// Whether the broker's certificate must name the host connected to
    /// (`ssl.endpoint.identification.algorithm=https`, the default). Default true.
    pub verify_hostname: bool,
}

impl Default for TlsClientSettings {
    fn default() -> Self {
        TlsClientSettings {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_hostname: true,
        }
    }
}

/// A SASL identity. Its `Debug` form never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// `sasl.mechanism`.
    pub mechanism: SaslMechanism,
    /// `sasl.username`.
    pub username: String,
    /// `sasl.password`.
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: "alice".into(),
            password: "s3cret-pw".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("s3cret-pw"),
            "{shown}"
        );
    }
}
