//! TLS for SSL and SASL_SSL listeners: rustls with the `ring` provider, TLS 1.2 and 1.3,
//! certificate and key from PEM files, optional client certificates (Kafka's
//! `ssl.client.auth`), and reload of the files without a restart.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use staunch_broker::Principal;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up. Each message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or CA file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// Which setting (e.g. `ssl_certificate_location`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("{what} {path}: {message}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The settings do not fit together (e.g. client authentication without a CA file).
    #[error("TLS settings: {0}")]
    Config(String),
}

/// Whether an SSL listener asks its clients for a certificate (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for; SSL clients are `User:ANONYMOUS`.
    #[default]
    None,
    /// A certificate is asked for; a client without one is let in as `User:ANONYMOUS`, a
    /// client with one that does not verify is refused.
    Requested,
    /// Every client must present a certificate signed by a trusted CA, within its validity.
    Required,
}

impl ClientAuth {
    /// Kafka's name: `none`, `requested` or `required`.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!(
                "unknown ssl client auth {other:?} (expected none, requested or required)"
            )),
        }
    }
}

/// TLS settings of the SSL and SASL_SSL listeners (Kafka's names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain of the broker, its own certificate first
    /// (`ssl.certificate.location`).
    pub cert_file: PathBuf,
    /// PEM private key of that certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)
    /// (`ssl.key.location`).
    pub key_file: PathBuf,
    /// PEM file of the authorities trusted to sign client certificates (`ssl.ca.location`);
    /// needed when `client_auth` is not `None`.
    pub ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate (`ssl.client.auth`).
    pub client_auth: ClientAuth,
    /// How often the files are read again; a change replaces the certificate for new
    /// connections (open ones keep theirs). Zero turns polling off. Default 30 s.
    pub reload_interval: Duration,
    /// How long a client may take to finish the TLS handshake before it is closed.
    /// Default 10 s.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// Settings with a certificate and key, no client authentication and the default
    /// intervals.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        TlsSettings {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: None,
            client_auth: ClientAuth::None,
            reload_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The bytes of the files a configuration was built from, to tell when they change.
#[derive(PartialEq, Eq)]
struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

/// What a reload attempt did.
enum Reload {
    Unchanged,
    Replaced,
    /// The files hold the contents refused last time, for this reason.
    StillRefused(String),
}

/// The TLS side of a server: the current rustls configuration, replaced when the files change.
/// Connections take the configuration current at their accept; replacing it does not touch
/// connections already open.
pub struct ServerTls {
    settings: TlsSettings,
    current: RwLock<TlsAcceptor>,
    /// What `current` was built from, and the last contents refused with why (logged once).
    loaded: Mutex<(FileContents, Option<(FileContents, String)>)>,
    /// Failed handshakes not yet logged, and when the last warning was.
    failures: Mutex<(u64, Option<Instant>)>,
}

/// At most one warning about failed handshakes per this long; the others go to debug.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files and builds the configuration; fails naming the file that is missing,
    /// unreadable or invalid.
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        if settings.client_auth != ClientAuth::None && settings.ca_file.is_none() {
            return Err(TlsError::Config(format!(
                "ssl_client_auth = {} needs ssl_ca_location (the CAs that sign client certificates)",
                settings.client_auth
            )));
        }
        let contents = read_files(&settings)?;
        let config = build_config(&settings, &contents)?;
        Ok(ServerTls {
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            loaded: Mutex::new((contents, None)),
            failures: Mutex::new((0, None)),
            settings,
        })
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The acceptor new connections use.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again and, if they changed and are valid, makes them the
    /// configuration of new connections. Returns whether it replaced the configuration. A
    /// change that does not load is an error and the old configuration stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        match self.reload_inner()? {
            Reload::Unchanged => Ok(false),
            Reload::Replaced => Ok(true),
            Reload::StillRefused(message) => Err(TlsError::Config(message)),
        }
    }

    /// [`reload`](Self::reload), telling a repeated refusal of the same contents apart.
    fn reload_inner(&self) -> Result<Reload, TlsError> {
        let contents = read_files(&self.settings)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if contents == loaded.0 {
            return Ok(Reload::Unchanged);
        }
        if let Some((refused, message)) = &loaded.1
            && *refused == contents
        {
            return Ok(Reload::StillRefused(message.clone()));
        }
        match build_config(&self.settings, &contents) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    TlsAcceptor::from(Arc::new(config));
                *loaded = (contents, None);
                Ok(Reload::Replaced)
            }
            Err(e) => {
                loaded.1 = Some((contents, e.to_string()));
                Err(e)
            }
        }
    }

    /// [`reload`](Self::reload), logging the outcome: a replacement at info, a failure as a
    /// warning (once per distinct bad content; an unreadable file at every attempt). The old
    /// certificate is kept on failure.
    pub fn reload_and_log(&self) {
        match self.reload_inner() {
            Ok(Reload::Replaced) => tracing::info!(
                cert = %self.settings.cert_file.display(),
                "TLS certificate reloaded; new connections use it"
            ),
            Ok(Reload::Unchanged | Reload::StillRefused(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the current certificate")
            }
        }
    }

    /// Logs a failed handshake (the connection is then closed): one warning per
    /// [`WARN_EVERY`] at most, with the count since the last, and a debug line for each, so
    /// a flood of bad clients is not a flood of warnings.
    pub(crate) fn note_handshake_failure(&self, peer: SocketAddr, listener: &str, reason: &str) {
        tracing::debug!(%peer, listener, reason, "TLS handshake failed; closing the connection");
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.0 += 1;
        let now = Instant::now();
        if failures
            .1
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            tracing::warn!(
                %peer,
                listener,
                reason,
                failed_handshakes = failures.0,
                "TLS handshake failed; closing the connection (a plaintext client on a TLS port, \
                 or an untrusted client certificate?)"
            );
            *failures = (0, Some(now));
        }
    }

    /// Polls the files every `reload_interval` (if not zero) until the returned task is
    /// aborted.
    pub(crate) fn spawn_reloader(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.settings.reload_interval;
        if interval.is_zero() {
            return None;
        }
        let tls = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = tls.upgrade() else { return };
                // Small files, but still file I/O: off the async threads.
                let _ = tokio::task::spawn_blocking(move || tls.reload_and_log()).await;
            }
        }))
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_files(settings: &TlsSettings) -> Result<FileContents, TlsError> {
    Ok(FileContents {
        cert: read_file("ssl_certificate_location", &settings.cert_file)?,
        key: read_file("ssl_key_location", &settings.key_file)?,
        ca: match &settings.ca_file {
            Some(path) => Some(read_file("ssl_ca_location", path)?),
            None => None,
        },
    })
}

/// The certificates of a PEM file, at least one.
pub(crate) fn parse_certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

fn build_config(
    settings: &TlsSettings,
    contents: &FileContents,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let certs = parse_certs(
        "ssl_certificate_location",
        &settings.cert_file,
        &contents.cert,
    )?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| TlsError::Invalid {
        what: "ssl_key_location",
        path: settings.key_file.clone(),
        message: format!("no PEM private key (PKCS#8, RSA or EC) found: {e}"),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&settings.ca_file, &contents.ca, settings.client_auth) {
        (_, _, ClientAuth::None) => builder.with_no_client_auth(),
        (Some(path), Some(pem), auth) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs("ssl_ca_location", path, pem)? {
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    what: "ssl_ca_location",
                    path: path.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?,
            )
        }
        _ => {
            return Err(TlsError::Config(
                "client authentication needs ssl_ca_location".to_owned(),
            ));
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            what: "ssl_key_location",
            path: settings.key_file.clone(),
            message: format!(
                "does not fit the certificate in {}: {e}",
                settings.cert_file.display()
            ),
        })
}

/// The `ring` provider. rustls 0.23.48 deprecates it for lacking post-quantum key exchange;
/// it is kept because it builds with a C compiler alone (aws-lc-rs wants more tooling), and
/// its classical X25519 / P-256 key exchange is what Kafka clients speak.
#[allow(deprecated)]
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Kafka's default principal of a TLS connection: `User:<subject DN>` of the client's
/// certificate in RFC 2253 form (`User:CN=client,O=Staunch`), `User:ANONYMOUS` without one.
pub(crate) fn principal_of(peer_certificates: Option<&[CertificateDer<'_>]>) -> Principal {
    use x509_cert::der::Decode;
    let Some(first) = peer_certificates.and_then(|certs| certs.first()) else {
        return Principal::anonymous();
    };
    match x509_cert::Certificate::from_der(first.as_ref()) {
        Ok(cert) => Principal::user(cert.tbs_certificate.subject.to_string()),
        // rustls verified it, so it parses; should it not, the connection is nobody.
        Err(_) => Principal::anonymous(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_names_are_kafkas() {
        for auth in [
            ClientAuth::None,
            ClientAuth::Requested,
            ClientAuth::Required,
        ] {
            assert_eq!(auth.name().parse::<ClientAuth>(), Ok(auth));
        }
        assert_eq!("REQUIRED".parse::<ClientAuth>(), Ok(ClientAuth::Required));
        assert!("yes".parse::<ClientAuth>().is_err());
    }

    #[test]
    fn principal_is_the_subject_in_rfc2253_order() {
        let mut params = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Staunch");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        assert_eq!(
            principal_of(Some(&[der])).to_string(),
            "User:CN=client,O=Staunch"
        );
        assert_eq!(principal_of(None).to_string(), "User:ANONYMOUS");
    }

    #[test]
    fn missing_and_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let missing = ServerTls::load(TlsSettings::new(&cert, &key)).unwrap_err();
        assert!(missing.to_string().contains("cert.pem"), "{missing}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let invalid = ServerTls::load(TlsSettings::new(&cert, &key)).unwrap_err();
        assert!(
            invalid.to_string().contains("ssl_certificate_location"),
            "{invalid}"
        );
        let mut settings = TlsSettings::new(&cert, &key);
        settings.client_auth = ClientAuth::Required;
        let no_ca = ServerTls::load(settings).unwrap_err();
        assert!(no_ca.to_string().contains("ssl_ca_location"), "{no_ca}");
    }
}
