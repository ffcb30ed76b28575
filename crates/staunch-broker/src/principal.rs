//! Who a request comes from, as Kafka names it (`User:alice`).

use std::fmt;

/// An authenticated identity: a type (`User`, the only one Kafka's authorizer uses) and a
/// name. A connection that did not authenticate (a PLAINTEXT listener, or SSL without a client
/// certificate) is [`Principal::anonymous`], `User:ANONYMOUS`, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// The principal type; `User` for every principal Staunch makes.
    pub principal_type: String,
    /// The user name (SASL) or the certificate's distinguished name (SSL).
    pub name: String,
}

impl Principal {
    /// `User:<name>`.
    pub fn user(name: impl Into<String>) -> Self {
        Principal {
            principal_type: "User".to_owned(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`, the principal of a connection that did not authenticate.
    pub fn anonymous() -> Self {
        Principal::user("ANONYMOUS")
    }

    /// Parses Kafka's `Type:name` form (`User:alice`); the name may itself contain `:`.
    pub fn parse(text: &str) -> Option<Self> {
        let (principal_type, name) = text.split_once(':')?;
        if principal_type.is_empty() || name.is_empty() {
            return None;
        }
        Some(Principal {
            principal_type: principal_type.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kafkas_form() {
        let p = Principal::parse("User:CN=client,O=a:b").unwrap();
        assert_eq!(p.principal_type, "User");
        assert_eq!(p.name, "CN=client,O=a:b");
        assert_eq!(p.to_string(), "User:CN=client,O=a:b");
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
        assert!(Principal::parse("alice").is_none());
        assert!(Principal::parse(":alice").is_none());
    }
}
