//! SASL mechanisms without I/O, shared by the broker and the client: PLAIN (RFC 4616) and
//! SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them (KIP-84).
//!
//! The hash, HMAC and PBKDF2 primitives come from the RustCrypto crates; comparisons of keys
//! are constant-time (`subtle`). Every client message is validated strictly; a malformed one
//! is an [`SaslError`], never a panic. Only the GS2 header `n,,` is accepted (no channel
//! binding, no authorization identity); Kafka's SCRAM extensions (`tokenauth=true`) in the
//! client-first message are accepted and ignored (Staunch has no delegation tokens).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use staunch_core::SaslMechanism;
use subtle::ConstantTimeEq;

/// The fewest PBKDF2 iterations a SCRAM credential may use (Kafka's minimum).
pub const MIN_ITERATIONS: i32 = 4096;
/// The most PBKDF2 iterations a SCRAM credential may use (Kafka's maximum).
pub const MAX_ITERATIONS: i32 = 16384;
/// The largest SASL token either side accepts (a SCRAM or PLAIN message is a few hundred
/// bytes); a larger one fails authentication without being parsed.
pub const MAX_TOKEN_BYTES: usize = 64 << 10;

/// Why a SASL exchange failed. The text never contains a password or a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A message does not follow the mechanism's syntax.
    #[error("malformed {mechanism} message: {reason}")]
    Malformed {
        /// The mechanism.
        mechanism: SaslMechanism,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials are wrong (unknown user, wrong password or proof).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The mechanism is not a SCRAM one, or a credential's parameters are out of range.
    #[error("{0}")]
    Unsupported(String),
}

fn malformed(mechanism: SaslMechanism, reason: impl Into<String>) -> SaslError {
    SaslError::Malformed {
        mechanism,
        reason: reason.into(),
    }
}

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (Kafka's mechanism type 1).
    Sha256,
    /// SCRAM-SHA-512 (Kafka's mechanism type 2).
    Sha512,
}

impl ScramMechanism {
    /// Both, in Kafka's order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism.
    pub fn sasl(self) -> SaslMechanism {
        match self {
            ScramMechanism::Sha256 => SaslMechanism::ScramSha256,
            ScramMechanism::Sha512 => SaslMechanism::ScramSha512,
        }
    }

    /// The SCRAM mechanism of `mechanism`, `None` for PLAIN.
    pub fn of(mechanism: SaslMechanism) -> Option<Self> {
        match mechanism {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        }
    }

    /// Kafka's mechanism type in the SCRAM credential APIs (1 or 2).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of Kafka's type `t`, `None` for 0 (UNKNOWN) and anything else.
    pub fn from_kafka_type(t: i8) -> Option<Self> {
        match t {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Length of the hash (and of every key) in bytes: 32 or 64.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// SaltedPassword: PBKDF2 of `password` with `salt` and `iterations` (RFC 5802's Hi).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.hash_len()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sasl().fmt(f)
    }
}

/// What a broker keeps of a user's SCRAM password: never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// The random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: i32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of a salted password (what AlterUserScramCredentials carries, KIP-554).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: i32,
        salted_password: &[u8],
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// A fresh credential for `password`, with a random 32-byte salt.
    pub fn new(
        mechanism: ScramMechanism,
        password: &str,
        iterations: i32,
    ) -> Result<Self, SaslError> {
        check_iterations(iterations)?;
        let salt = random_bytes(32);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations as u32);
        Ok(Self::from_salted_password(
            mechanism, salt, iterations, &salted,
        ))
    }

    /// Whether this credential's parameters fit `mechanism`: keys of its hash length, a
    /// non-empty salt and iterations within [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`].
    pub fn check(&self, mechanism: ScramMechanism) -> Result<(), SaslError> {
        check_iterations(self.iterations)?;
        if self.salt.is_empty() {
            return Err(SaslError::Unsupported("empty salt".to_owned()));
        }
        let n = mechanism.hash_len();
        if self.stored_key.len() != n || self.server_key.len() != n {
            return Err(SaslError::Unsupported(format!(
                "{mechanism} keys must be {n} bytes"
            )));
        }
        Ok(())
    }

    /// Whether `password` is the one this credential was made from (constant-time compare
    /// of the stored key); how a broker checks PLAIN against SCRAM credentials.
    pub fn verify_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        if self.check(mechanism).is_err() {
            return false;
        }
        let salted =
            mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations as u32);
        let expected = Self::from_salted_password(mechanism, Vec::new(), 0, &salted);
        bool::from(expected.stored_key.ct_eq(&self.stored_key))
    }
}

/// The iteration count `staunch users add` uses unless told otherwise, and decoy credentials
/// have.
pub const DEFAULT_ITERATIONS: i32 = 8192;

impl ScramCredential {
    /// A credential for a user that does not exist, derived from `secret` (random, kept by
    /// the broker for its lifetime) and the user name: the same salt every time for the same
    /// name, like a real user's, so an unknown user cannot be told from a known one by its
    /// salt changing between attempts. Nothing proves it: its keys are not derived from any
    /// password.
    pub fn decoy(mechanism: ScramMechanism, secret: &[u8], username: &str) -> Self {
        let derive = |label: &str| {
            let mut out = mechanism.hmac(secret, format!("{label}\0{username}").as_bytes());
            out.truncate(mechanism.hash_len());
            out
        };
        let mut salt = derive("salt");
        salt.truncate(32);
        ScramCredential {
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: derive("stored"),
            server_key: derive("server"),
        }
    }
}

/// Checks `iterations` against Kafka's bounds.
pub fn check_iterations(iterations: i32) -> Result<(), SaslError> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(SaslError::Unsupported(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {iterations}"
        )))
    }
}

/// `n` bytes from the operating system's random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    // The OS random source failing is not something to serve on: nonces and salts would repeat.
    getrandom::fill(&mut out).unwrap_or_else(|e| panic!("the OS random source failed: {e}"));
    out
}

fn random_nonce() -> String {
    BASE64.encode(random_bytes(24))
}

/// A PLAIN token (RFC 4616): `authzid NUL user NUL password`.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainToken {
    /// The user authenticating.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainToken")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl PlainToken {
    /// Parses a client's PLAIN token. An authorization id other than empty or the user
    /// itself is refused (Staunch does not let one user act as another).
    pub fn parse(token: &[u8]) -> Result<Self, SaslError> {
        let m = SaslMechanism::Plain;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(m, "token too large"));
        }
        let text = std::str::from_utf8(token).map_err(|_| malformed(m, "not UTF-8"))?;
        let mut parts = text.split('\0');
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(m, "expected authzid NUL user NUL password"));
        };
        if user.is_empty() || password.is_empty() {
            return Err(malformed(m, "empty user name or password"));
        }
        if !authzid.is_empty() && authzid != user {
            return Err(malformed(
                m,
                "an authorization id different from the user name is not allowed",
            ));
        }
        Ok(PlainToken {
            username: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The token a client sends.
    pub fn encode(&self) -> Vec<u8> {
        format!("\0{}\0{}", self.username, self.password).into_bytes()
    }
}

/// The parts of a SCRAM message (`k=v,k=v`, where Kafka's extensions have longer keys);
/// values may contain `=` but not `,`.
fn attributes(mechanism: SaslMechanism, text: &str) -> Result<Vec<(&str, &str)>, SaslError> {
    text.split(',')
        .map(|part| match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Ok((k, v))
            }
            _ => Err(malformed(mechanism, format!("bad attribute {part:?}"))),
        })
        .collect()
}

/// Decodes a SCRAM `saslname` (`=2C` is `,`, `=3D` is `=`; any other `=` is malformed).
fn decode_saslname(mechanism: SaslMechanism, name: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed(mechanism, "bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(malformed(mechanism, "empty user name"));
    }
    Ok(out)
}

fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn check_nonce(mechanism: SaslMechanism, nonce: &str) -> Result<(), SaslError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed(mechanism, "nonce must be printable ASCII"));
    }
    Ok(())
}

/// A client-first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user authenticating (decoded).
    pub username: String,
    /// The client's nonce.
    pub nonce: String,
    /// The message without its GS2 header, part of the AuthMessage.
    bare: String,
}

impl ClientFirst {
    /// Parses a client-first message: `n,,n=user,r=nonce[,extensions]`.
    pub fn parse(mechanism: ScramMechanism, message: &[u8]) -> Result<Self, SaslError> {
        let m = mechanism.sasl();
        if message.len() > MAX_TOKEN_BYTES {
            return Err(malformed(m, "token too large"));
        }
        let text = std::str::from_utf8(message).map_err(|_| malformed(m, "not UTF-8"))?;
        let bare = text.strip_prefix("n,,").ok_or_else(|| {
            malformed(
                m,
                "expected GS2 header \"n,,\" (channel binding and authorization ids are not supported)",
            )
        })?;
        let attrs = attributes(m, bare)?;
        let (Some(("n", name)), Some(("r", nonce))) = (attrs.first(), attrs.get(1)) else {
            return Err(malformed(m, "expected n=<user>,r=<nonce>"));
        };
        if attrs.iter().skip(2).any(|(k, _)| *k == "m") {
            return Err(malformed(m, "mandatory extensions are not supported"));
        }
        check_nonce(m, nonce)?;
        Ok(ClientFirst {
            username: decode_saslname(m, name)?,
            nonce: (*nonce).to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// The broker's side of one SCRAM exchange, after the client-first message.
#[derive(Clone)]
pub struct ScramServer {
    mechanism: ScramMechanism,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts the exchange for `first` with the user's `credential` and returns the
    /// server-first message. Pass `None` for an unknown user: the exchange goes on with a
    /// random credential and fails at the client-final message exactly as a wrong password
    /// does, so unknown users cannot be told from known ones.
    pub fn start(
        mechanism: ScramMechanism,
        first: ClientFirst,
        credential: Option<ScramCredential>,
    ) -> (Self, Vec<u8>) {
        let credential = credential.unwrap_or_else(|| ScramCredential {
            salt: random_bytes(32),
            iterations: MIN_ITERATIONS,
            stored_key: random_bytes(mechanism.hash_len()),
            server_key: random_bytes(mechanism.hash_len()),
        });
        let nonce = format!("{}{}", first.nonce, random_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let message = server_first.clone().into_bytes();
        (
            ScramServer {
                mechanism,
                credential,
                client_first_bare: first.bare,
                server_first,
                nonce,
            },
            message,
        )
    }

    /// Checks the client-final message `c=biws,r=<nonce>,p=<proof>` and returns the
    /// server-final message (`v=<signature>`) when the proof is right.
    pub fn finish(&self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let m = self.mechanism.sasl();
        if message.len() > MAX_TOKEN_BYTES {
            return Err(malformed(m, "token too large"));
        }
        let text = std::str::from_utf8(message).map_err(|_| malformed(m, "not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed(m, "no proof"))?;
        let attrs = attributes(m, without_proof)?;
        let (Some(("c", binding)), Some(("r", nonce))) = (attrs.first(), attrs.get(1)) else {
            return Err(malformed(m, "expected c=<binding>,r=<nonce>,...,p=<proof>"));
        };
        if *binding != "biws" {
            return Err(malformed(m, "channel binding must be \"biws\" (n,,)"));
        }
        // Kafka checks that the nonce *ends* with the exchange's: librdkafka (2.0 at least)
        // sends its own nonce again in front of the whole server nonce.
        if !nonce.ends_with(self.nonce.as_str()) {
            return Err(malformed(m, "nonce does not match the exchange's"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed(m, "proof is not base64"))?;
        if proof.len() != self.mechanism.hash_len() {
            return Err(malformed(m, "proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = self
            .mechanism
            .hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = self.mechanism.hash(&client_key);
        if !bool::from(stored.ct_eq(&self.credential.stored_key)) {
            return Err(SaslError::InvalidCredentials);
        }
        let server_signature = self
            .mechanism
            .hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// The client's side of one SCRAM exchange.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    nonce: String,
    client_first_bare: String,
    /// The server signature expected in the server-final message, once known.
    expected_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange for `username` with `password`; returns the client-first message.
    pub fn start(mechanism: ScramMechanism, username: &str, password: &str) -> (Self, Vec<u8>) {
        let nonce = random_nonce();
        let client_first_bare = format!("n={},r={nonce}", encode_saslname(username));
        let message = format!("n,,{client_first_bare}").into_bytes();
        (
            ScramClient {
                mechanism,
                password: password.to_owned(),
                nonce,
                client_first_bare,
                expected_signature: None,
            },
            message,
        )
    }

    /// Answers the server-first message with the client-final one.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let m = self.mechanism.sasl();
        let text = std::str::from_utf8(server_first).map_err(|_| malformed(m, "not UTF-8"))?;
        let attrs = attributes(m, text)?;
        let (Some(("r", nonce)), Some(("s", salt)), Some(("i", iterations))) =
            (attrs.first(), attrs.get(1), attrs.get(2))
        else {
            return Err(malformed(m, "expected r=<nonce>,s=<salt>,i=<iterations>"));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(malformed(m, "server nonce does not extend the client's"));
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| malformed(m, "salt is not base64"))?;
        let iterations: i32 = iterations
            .parse()
            .map_err(|_| malformed(m, "iterations is not a number"))?;
        check_iterations(iterations)?;
        let salted =
            self.mechanism
                .salted_password(self.password.as_bytes(), &salt, iterations as u32);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        let stored_key = self.mechanism.hash(&client_key);
        let signature = self.mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.mechanism.hmac(&salted, b"Server Key");
        self.expected_signature = Some(self.mechanism.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the credential.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let m = self.mechanism.sasl();
        let text = std::str::from_utf8(server_final).map_err(|_| malformed(m, "not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(malformed(m, format!("server error {error:?}")));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or_else(|| malformed(m, "expected v=<signature>"))?;
        match &self.expected_signature {
            Some(expected) if bool::from(expected.ct_eq(&signature)) => Ok(()),
            Some(_) => Err(SaslError::InvalidCredentials),
            None => Err(malformed(m, "server-final before server-first")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, checked with its fixed nonces.
    #[test]
    fn rfc7677_example() {
        let m = ScramMechanism::Sha256;
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let credential = ScramCredential::from_salted_password(m, salt, 4096, &salted);
        let first = ClientFirst::parse(m, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.username, "user");
        let server = ScramServer {
            mechanism: m,
            credential,
            client_first_bare: first.bare,
            server_first:
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_owned(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
        };
        let last = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    fn exchange(m: ScramMechanism, stored: &str, given: &str) -> Result<(), SaslError> {
        let credential = ScramCredential::new(m, stored, 4096).unwrap();
        let (mut client, first) = ScramClient::start(m, "al,i=ce", given);
        let first = ClientFirst::parse(m, &first)?;
        assert_eq!(first.username, "al,i=ce");
        let (server, server_first) = ScramServer::start(m, first, Some(credential));
        let client_final = client.respond(&server_first)?;
        let server_final = server.finish(&client_final)?;
        client.verify(&server_final)
    }

    #[test]
    fn client_and_server_agree_on_right_passwords_only() {
        for m in ScramMechanism::ALL {
            exchange(m, "secret", "secret").unwrap();
            assert_eq!(
                exchange(m, "secret", "Secret"),
                Err(SaslError::InvalidCredentials)
            );
        }
    }

    #[test]
    fn decoys_are_stable_per_user_and_prove_nothing() {
        let m = ScramMechanism::Sha512;
        let a = ScramCredential::decoy(m, b"secret", "nobody");
        assert_eq!(a, ScramCredential::decoy(m, b"secret", "nobody"));
        assert_ne!(a.salt, ScramCredential::decoy(m, b"secret", "nobody2").salt);
        assert_ne!(a.salt, ScramCredential::decoy(m, b"other", "nobody").salt);
        a.check(m).unwrap();
        let (mut client, first) = ScramClient::start(m, "nobody", "");
        let (server, server_first) =
            ScramServer::start(m, ClientFirst::parse(m, &first).unwrap(), Some(a));
        let last = client.respond(&server_first).unwrap();
        assert_eq!(server.finish(&last), Err(SaslError::InvalidCredentials));
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        let m = ScramMechanism::Sha512;
        let (mut client, first) = ScramClient::start(m, "nobody", "x");
        let first = ClientFirst::parse(m, &first).unwrap();
        let (server, server_first) = ScramServer::start(m, first, None);
        let client_final = client.respond(&server_first).unwrap();
        assert_eq!(
            server.finish(&client_final),
            Err(SaslError::InvalidCredentials)
        );
    }

    #[test]
    fn malformed_client_messages_are_errors() {
        let m = ScramMechanism::Sha256;
        for bad in [
            &b""[..],
            b"n,,",
            b"p=tls-unique,,n=u,r=abc",
            b"n,a=other,n=u,r=abc",
            b"n,,r=abc,n=u",
            b"n,,n=,r=abc",
            b"n,,n=u=2X,r=abc",
            b"n,,n=u,r=",
            b"n,,n=u,r=a b",
            b"n,,n=u,r=abc,m=ext",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(ClientFirst::parse(m, bad), Err(SaslError::Malformed { .. })),
                "{bad:?}"
            );
        }
        // Kafka's tokenauth extension is accepted (and ignored).
        ClientFirst::parse(m, b"n,,n=u,r=abc,tokenauth=true").unwrap();
        assert!(ClientFirst::parse(m, &vec![b'a'; MAX_TOKEN_BYTES + 1]).is_err());

        let credential = ScramCredential::new(m, "pw", 4096).unwrap();
        let first = ClientFirst::parse(m, b"n,,n=u,r=abc").unwrap();
        let (server, server_first) = ScramServer::start(m, first, Some(credential));
        let nonce = std::str::from_utf8(&server_first).unwrap()[2..]
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        let proof = BASE64.encode([0u8; 32]);
        for bad in [
            String::new(),
            format!("c=biws,r={nonce}"),
            format!("c=biws,r=abcWRONG,p={proof}"),
            format!("c=eSws,r={nonce},p={proof}"),
            format!("c=biws,r={nonce},p=!!!"),
            format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 31])),
            format!("r={nonce},c=biws,p={proof}"),
        ] {
            assert!(
                matches!(
                    server.finish(bad.as_bytes()),
                    Err(SaslError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            server.finish(format!("c=biws,r={nonce},p={proof}").as_bytes()),
            Err(SaslError::InvalidCredentials)
        );
    }

    /// librdkafka 2.0 sends `r=<client nonce><server nonce>`, where the server nonce already
    /// starts with the client's; Kafka accepts it, and so must Staunch.
    #[test]
    fn librdkafkas_doubled_client_nonce_is_accepted() {
        let m = ScramMechanism::Sha256;
        let credential = ScramCredential::new(m, "pw", 4096).unwrap();
        let salt = credential.salt.clone();
        let first = ClientFirst::parse(m, b"n,,n=u,r=cnonce").unwrap();
        let (server, server_first) = ScramServer::start(m, first, Some(credential));
        let server_first = String::from_utf8(server_first).unwrap();
        let server_nonce = server_first[2..].split(',').next().unwrap().to_owned();
        // librdkafka's client-final, signed as librdkafka signs it.
        let without_proof = format!("c=biws,r=cnonce{server_nonce}");
        let auth_message = format!("n=u,r=cnonce,{server_first},{without_proof}");
        let salted = m.salted_password(b"pw", &salt, 4096);
        let client_key = m.hmac(&salted, b"Client Key");
        let signature = m.hmac(&m.hash(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        server.finish(last.as_bytes()).unwrap();
    }

    #[test]
    fn plain_tokens() {
        let t = PlainToken::parse(b"\0alice\0pw").unwrap();
        assert_eq!((t.username.as_str(), t.password.as_str()), ("alice", "pw"));
        assert_eq!(PlainToken::parse(b"alice\0alice\0pw").unwrap(), t);
        for bad in [
            &b"bob\0alice\0pw"[..],
            b"\0alice",
            b"\0\0pw",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\xff\0a\0b",
        ] {
            assert!(PlainToken::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PlainToken::parse(&t.encode()).unwrap(), t);
    }

    #[test]
    fn plain_passwords_verify_against_scram_credentials() {
        for m in ScramMechanism::ALL {
            let c = ScramCredential::new(m, "pw", 4096).unwrap();
            c.check(m).unwrap();
            assert!(c.verify_password(m, "pw"));
            assert!(!c.verify_password(m, "pW"));
        }
        assert!(ScramCredential::new(ScramMechanism::Sha256, "pw", 4095).is_err());
    }
}
