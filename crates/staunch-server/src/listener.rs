//! Listeners: where clients connect and which security protocol each speaks (Kafka's
//! `listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093`).

use std::fmt;
use std::net::SocketAddr;

pub use staunch_core::security::SecurityProtocol;

/// One listener: a name (Kafka's listener name, e.g. `PLAINTEXT` or `CLIENTS`), the address to
/// bind and the security protocol its connections speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's name; by default its protocol's name.
    pub name: String,
    /// Address to bind (port 0 picks a free one).
    pub addr: SocketAddr,
    /// How its connections are secured.
    pub protocol: SecurityProtocol,
}

impl ListenerConfig {
    /// A PLAINTEXT listener on `addr` named `PLAINTEXT`.
    pub fn plaintext(addr: SocketAddr) -> Self {
        ListenerConfig {
            name: SecurityProtocol::Plaintext.name().to_owned(),
            addr,
            protocol: SecurityProtocol::Plaintext,
        }
    }

    /// Parses Kafka's `NAME://host:port`, where `NAME` is a security protocol's name, or any
    /// other name given a protocol by `protocol_map` (Kafka's
    /// `listener.security.protocol.map`, as `(name, protocol)` pairs).
    pub fn parse(text: &str, protocol_map: &[(String, SecurityProtocol)]) -> Result<Self, String> {
        let (name, addr) = text
            .split_once("://")
            .ok_or_else(|| format!("listener {text:?}: expected NAME://host:port"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("listener {text:?}: address {addr:?}: {e}"))?;
        let protocol = match protocol_map
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, protocol)) => *protocol,
            None => name.parse().map_err(|e| {
                format!(
                    "listener {text:?}: {e}; map other names with listener_security_protocol_map"
                )
            })?,
        };
        Ok(ListenerConfig {
            name: name.to_ascii_uppercase(),
            addr,
            protocol,
        })
    }
}

impl fmt::Display for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.name, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_listener_strings() {
        let l = ListenerConfig::parse("SASL_SSL://127.0.0.1:9093", &[]).unwrap();
        assert_eq!(l.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(l.name, "SASL_SSL");
        assert_eq!(l.addr.port(), 9093);
        let map = vec![("CLIENTS".to_owned(), SecurityProtocol::Ssl)];
        let l = ListenerConfig::parse("clients://127.0.0.1:0", &map).unwrap();
        assert_eq!(
            (l.name.as_str(), l.protocol),
            ("CLIENTS", SecurityProtocol::Ssl)
        );
        assert!(ListenerConfig::parse("CLIENTS://127.0.0.1:1", &[]).is_err());
        assert!(ListenerConfig::parse("127.0.0.1:9092", &[]).is_err());
        assert!(ListenerConfig::parse("PLAINTEXT://nowhere", &[]).is_err());
    }
}
