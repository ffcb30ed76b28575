//! The security settings of every subcommand that talks to a broker: a client-properties file
//! as Kafka's tools take it (`--command-config`), and flags / `STAUNCH_*` variables over it.

use std::path::{Path, PathBuf};

use clap::Args;
use staunch_client::{SaslCredentials, SaslMechanism, SecurityConfig, SecurityProtocol};

/// Security options shared by the client subcommands.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SecurityArgs {
    /// Client properties file, as Kafka's `--command-config`: security.protocol,
    /// sasl.mechanism, sasl.username / sasl.password or sasl.jaas.config, ssl.ca.location
    /// (or ssl.truststore.location of type PEM), ssl.certificate.location, ssl.key.location,
    /// ssl.endpoint.identification.algorithm. Flags win over it.
    #[arg(long, env = "STAUNCH_COMMAND_CONFIG", value_name = "FILE")]
    pub(crate) command_config: Option<PathBuf>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (the broker listener's protocol).
    #[arg(long, env = "STAUNCH_SECURITY_PROTOCOL")]
    pub(crate) security_protocol: Option<SecurityProtocol>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "STAUNCH_SASL_MECHANISM")]
    pub(crate) sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    #[arg(long, env = "STAUNCH_SASL_USERNAME")]
    pub(crate) sasl_username: Option<String>,
    /// SASL password (prefer the STAUNCH_SASL_PASSWORD variable or the properties file: a
    /// flag is visible to other users of the machine).
    #[arg(long, env = "STAUNCH_SASL_PASSWORD", hide_env_values = true)]
    pub(crate) sasl_password: Option<String>,
    /// PEM file of the authorities that sign the broker's certificate (default: the
    /// system's roots).
    #[arg(long, env = "STAUNCH_SSL_CA_LOCATION", value_name = "FILE")]
    pub(crate) ssl_ca_location: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one.
    #[arg(long, env = "STAUNCH_SSL_CERTIFICATE_LOCATION", value_name = "FILE")]
    pub(crate) ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "STAUNCH_SSL_KEY_LOCATION", value_name = "FILE")]
    pub(crate) ssl_key_location: Option<PathBuf>,
}

impl SecurityArgs {
    /// The settings: the properties file (if any), then the flags over it. Refuses SASL
    /// credentials without a SASL protocol, a SASL protocol without them, and unknown
    /// `ssl.` / `sasl.` / `security.` properties (a typo must not silently weaken security).
    pub(crate) fn resolve(&self) -> Result<SecurityConfig, String> {
        let mut settings = Settings::default();
        if let Some(path) = &self.command_config {
            settings.read_properties(path)?;
        }
        settings.protocol = self.security_protocol.or(settings.protocol);
        settings.mechanism = self.sasl_mechanism.or(settings.mechanism);
        settings.username = self.sasl_username.clone().or(settings.username);
        settings.password = self.sasl_password.clone().or(settings.password);
        let tls = &mut settings.config.tls;
        if let Some(path) = &self.ssl_ca_location {
            tls.ca_file = Some(path.clone());
        }
        if let Some(path) = &self.ssl_certificate_location {
            tls.cert_file = Some(path.clone());
        }
        if let Some(path) = &self.ssl_key_location {
            tls.key_file = Some(path.clone());
        }
        settings.finish()
    }
}

/// Settings gathered before they are checked together.
#[derive(Default)]
struct Settings {
    protocol: Option<SecurityProtocol>,
    mechanism: Option<SaslMechanism>,
    username: Option<String>,
    password: Option<String>,
    config: SecurityConfig,
}

impl Settings {
    fn read_properties(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let at = |line: usize| format!("{}:{}", path.display(), line + 1);
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!("{}: expected key=value, got {line:?}", at(number)));
            };
            let (key, value) = (key.trim(), value.trim());
            let fail = |e: String| format!("{}: {key}: {e}", at(number));
            match key {
                "security.protocol" => self.protocol = Some(value.parse().map_err(fail)?),
                "sasl.mechanism" | "sasl.mechanisms" => {
                    self.mechanism = Some(value.parse().map_err(fail)?)
                }
                "sasl.username" => self.username = Some(value.to_owned()),
                "sasl.password" => self.password = Some(value.to_owned()),
                "sasl.jaas.config" => {
                    let (username, password) = parse_jaas(value).map_err(fail)?;
                    self.username = Some(username);
                    self.password = Some(password);
                }
                "ssl.ca.location" | "ssl.truststore.location" => {
                    self.config.tls.ca_file = Some(PathBuf::from(value))
                }
                "ssl.certificate.location" => {
                    self.config.tls.cert_file = Some(PathBuf::from(value))
                }
                "ssl.key.location" => self.config.tls.key_file = Some(PathBuf::from(value)),
                "ssl.truststore.type" | "ssl.keystore.type"
                    if value.eq_ignore_ascii_case("PEM") => {}
                "ssl.truststore.type" | "ssl.keystore.type" => {
                    return Err(fail(format!("only PEM files are supported, not {value}")));
                }
                "ssl.endpoint.identification.algorithm" => {
                    self.config.tls.verify_hostname = match value.to_ascii_lowercase().as_str() {
                        "https" => true,
                        "" | "none" => false,
                        other => {
                            return Err(fail(format!("expected https or empty, got {other:?}")));
                        }
                    }
                }
                _ if ["ssl.", "sasl.", "security."]
                    .iter()
                    .any(|p| key.starts_with(p)) =>
                {
                    return Err(fail("not a setting Staunch's client knows".to_owned()));
                }
                // Other client properties (timeouts, client.id, ...) have flags of their own.
                _ => tracing::debug!(key, "ignoring client property"),
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<SecurityConfig, String> {
        let protocol = self.protocol.unwrap_or(SecurityProtocol::Plaintext);
        self.config.protocol = protocol;
        let any_sasl =
            self.mechanism.is_some() || self.username.is_some() || self.password.is_some();
        if protocol.uses_sasl() {
            let (Some(username), Some(password)) = (self.username, self.password) else {
                return Err(format!(
                    "security protocol {protocol} needs a SASL user name and password \
                     (--sasl-username and STAUNCH_SASL_PASSWORD, or sasl.username / sasl.password)"
                ));
            };
            self.config.sasl = Some(SaslCredentials {
                // Kafka's default mechanism.
                mechanism: self.mechanism.unwrap_or(SaslMechanism::Plain),
                username,
                password,
            });
        } else if any_sasl {
            return Err(format!(
                "SASL settings were given but the security protocol is {protocol}; \
                 use SASL_PLAINTEXT or SASL_SSL"
            ));
        }
        Ok(self.config)
    }
}

/// The user name and password of a `sasl.jaas.config` value:
/// `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";`.
fn parse_jaas(value: &str) -> Result<(String, String), String> {
    let field = |name: &str| -> Option<String> {
        let start = value.find(&format!("{name}=\""))? + name.len() + 2;
        let end = value[start..].find('"')? + start;
        Some(value[start..end].to_owned())
    };
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok((username, password)),
        _ => Err("expected username=\"...\" password=\"...\"".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_file(text: &str, args: SecurityArgs) -> Result<SecurityConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.properties");
        std::fs::write(&path, text).unwrap();
        SecurityArgs {
            command_config: Some(path),
            ..args
        }
        .resolve()
    }

    #[test]
    fn reads_a_kafka_client_properties_file() {
        let config = resolve_file(
            "# comment\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"pw=1\";\n\
             ssl.truststore.location=/tmp/ca.pem\nssl.truststore.type=PEM\nrequest.timeout.ms=5000\n",
            SecurityArgs::default(),
        )
        .unwrap();
        assert_eq!(config.protocol, SecurityProtocol::SaslSsl);
        let sasl = config.sasl.unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("alice", "pw=1")
        );
        assert_eq!(config.tls.ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        assert!(config.tls.verify_hostname);
    }

    #[test]
    fn flags_win_over_the_file() {
        let config = resolve_file(
            "security.protocol=SASL_PLAINTEXT\nsasl.username=alice\nsasl.password=a\n",
            SecurityArgs {
                sasl_username: Some("bob".into()),
                sasl_mechanism: Some(SaslMechanism::ScramSha256),
                ..SecurityArgs::default()
            },
        )
        .unwrap();
        let sasl = config.sasl.unwrap();
        assert_eq!(
            (sasl.username.as_str(), sasl.mechanism),
            ("bob", SaslMechanism::ScramSha256)
        );
    }

    #[test]
    fn refuses_what_would_silently_weaken_security() {
        // A typo in a security key.
        assert!(resolve_file("ssl.ca.locaton=/x\n", SecurityArgs::default()).is_err());
        // Credentials given, but the protocol would send nothing of them.
        assert!(
            resolve_file(
                "sasl.username=a\nsasl.password=b\n",
                SecurityArgs::default()
            )
            .is_err()
        );
        // A SASL protocol without credentials.
        assert!(resolve_file("security.protocol=SASL_SSL\n", SecurityArgs::default()).is_err());
        // JKS stores.
        assert!(resolve_file("ssl.truststore.type=JKS\n", SecurityArgs::default()).is_err());
        assert!(resolve_file("security.protocol=TLS\n", SecurityArgs::default()).is_err());
    }
}
