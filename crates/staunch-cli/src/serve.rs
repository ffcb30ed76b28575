//! `staunch serve`: configuration from file, environment and flags; logging; signals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use staunch_broker::{Broker, BrokerConfig};
use staunch_core::SaslMechanism;
use staunch_log::FlushPolicy;
use staunch_server::{
    ClientAuth, ListenerConfig, SaslConfig, SecurityProtocol, Server, ServerConfig, TlsSettings,
};

use crate::metrics_http;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The whole configuration file. Every key is optional; see `staunch.example.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServeConfig {
    /// Address to listen on. Default 127.0.0.1:9092. Ignored when `listeners` is set.
    listen: SocketAddr,
    /// Listeners in Kafka's form, `NAME://host:port`, e.g.
    /// `["PLAINTEXT://127.0.0.1:9092", "SASL_SSL://127.0.0.1:9093"]`; `NAME` is a security
    /// protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or a name mapped to one in
    /// `listener_security_protocol_map`. Default: one PLAINTEXT listener on `listen`.
    listeners: Vec<String>,
    /// Protocols of listeners with other names, e.g. `{ CLIENTS = "SASL_SSL" }`.
    listener_security_protocol_map: BTreeMap<String, String>,
    /// Log line format.
    log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax. Default `info`.
    log_level: String,
    /// Largest request frame accepted. Default 100 MiB.
    max_request_bytes: usize,
    /// Idle connections are closed after this. Default 10 min.
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    /// Request memory of all connections together (frames charged at their worst decoded
    /// size); 0 is no limit. Default 512 MiB.
    queued_max_request_bytes: usize,
    /// Unanswered requests per connection before it is no longer read. Default 16.
    max_in_flight_requests: usize,
    /// Connections served at once; more are closed on accept. Default 10,000.
    max_connections: usize,
    /// Address of the metrics and health HTTP listener (`/metrics`, `/healthz`, `/readyz`);
    /// unset (the default) runs no listener and records no metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    /// TLS of the SSL and SASL_SSL listeners.
    tls: TlsConfig,
    /// SASL on the SASL_PLAINTEXT and SASL_SSL listeners.
    sasl: SaslSection,
    /// The broker: data directory, defaults for topics, groups.
    broker: BrokerConfig,
}

/// The `[tls]` section: certificate, key and client certificates of the SSL and SASL_SSL
/// listeners, with Kafka's setting names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// PEM certificate chain of the broker, its own certificate first.
    #[serde(skip_serializing_if = "Option::is_none")]
    ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, RSA or EC).
    #[serde(skip_serializing_if = "Option::is_none")]
    ssl_key_location: Option<PathBuf>,
    /// PEM file of the CAs that sign client certificates (needed unless ssl_client_auth is
    /// none).
    #[serde(skip_serializing_if = "Option::is_none")]
    ssl_ca_location: Option<PathBuf>,
    /// none, requested or required.
    ssl_client_auth: String,
    /// How often the files are read again (a change is used by new connections); 0s turns
    /// polling off (SIGHUP still reloads). Default 30s.
    #[serde(with = "humantime_serde")]
    ssl_reload_interval: Duration,
    /// Time a client has to finish the TLS handshake. Default 10s.
    #[serde(with = "humantime_serde")]
    ssl_handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        let defaults = TlsSettings::new("", "");
        TlsConfig {
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_ca_location: None,
            ssl_client_auth: ClientAuth::None.name().to_owned(),
            ssl_reload_interval: defaults.reload_interval,
            ssl_handshake_timeout: defaults.handshake_timeout,
        }
    }
}

/// The `[sasl]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SaslSection {
    /// Mechanisms clients may use (`sasl.enabled.mechanisms`). Default all three: PLAIN,
    /// SCRAM-SHA-256, SCRAM-SHA-512.
    enabled_mechanisms: Vec<String>,
    /// Milliseconds an authenticated session lasts before the client must re-authenticate
    /// (KIP-152 `connections.max.reauth.ms`); 0 (default) is for ever.
    connections_max_reauth_ms: u64,
    /// Delay before a failed authentication is answered and the connection closed
    /// (`connection.failed.authentication.delay.ms`). Default 100.
    failed_authentication_delay_ms: u64,
    /// Failed authentications per client address per `failure_window_secs` before its new
    /// connections are closed without trying. Default 10.
    max_failures_per_address: u32,
    /// See `max_failures_per_address`. Default 60.
    failure_window_secs: u64,
}

impl Default for SaslSection {
    fn default() -> Self {
        let d = SaslConfig::default();
        SaslSection {
            enabled_mechanisms: d
                .enabled_mechanisms
                .iter()
                .map(|m| m.name().to_owned())
                .collect(),
            connections_max_reauth_ms: 0,
            failed_authentication_delay_ms: d.failed_authentication_delay.as_millis() as u64,
            max_failures_per_address: d.max_failures_per_address,
            failure_window_secs: d.failure_window.as_secs(),
        }
    }
}

impl TlsConfig {
    /// The server's TLS settings: `None` when no certificate is configured. A key without a
    /// certificate (or the reverse) or an unknown client-auth name is an error.
    fn settings(&self) -> Result<Option<TlsSettings>, String> {
        let client_auth: ClientAuth = self
            .ssl_client_auth
            .parse()
            .map_err(|e| format!("[tls] ssl_client_auth: {e}"))?;
        let (cert, key) = match (&self.ssl_certificate_location, &self.ssl_key_location) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                return Err(
                    "[tls] needs both ssl_certificate_location and ssl_key_location \
                     (--ssl-certificate-location, --ssl-key-location)"
                        .to_owned(),
                );
            }
        };
        let mut settings = TlsSettings::new(cert, key);
        settings.ca_file = self.ssl_ca_location.clone();
        settings.client_auth = client_auth;
        settings.reload_interval = self.ssl_reload_interval;
        settings.handshake_timeout = self.ssl_handshake_timeout;
        Ok(Some(settings))
    }
}

impl SaslSection {
    /// The server's SASL settings.
    fn server_config(&self) -> Result<SaslConfig, String> {
        let enabled_mechanisms = self
            .enabled_mechanisms
            .iter()
            .map(|m| m.parse::<SaslMechanism>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("sasl.enabled_mechanisms: {e}"))?;
        if enabled_mechanisms.is_empty() {
            return Err("sasl.enabled_mechanisms must name at least one mechanism".to_owned());
        }
        if self.max_failures_per_address < 1 || self.failure_window_secs < 1 {
            return Err(
                "sasl.max_failures_per_address and sasl.failure_window_secs must be at least 1"
                    .to_owned(),
            );
        }
        Ok(SaslConfig {
            enabled_mechanisms,
            connections_max_reauth: Duration::from_millis(self.connections_max_reauth_ms),
            failed_authentication_delay: Duration::from_millis(self.failed_authentication_delay_ms),
            max_failures_per_address: self.max_failures_per_address,
            failure_window: Duration::from_secs(self.failure_window_secs),
        })
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            listeners: Vec::new(),
            listener_security_protocol_map: BTreeMap::new(),
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            max_request_bytes: ServerConfig::default().max_request_bytes,
            idle_timeout: ServerConfig::default().idle_timeout,
            queued_max_request_bytes: ServerConfig::default().queued_max_request_bytes,
            max_in_flight_requests: ServerConfig::default().max_in_flight_requests,
            max_connections: ServerConfig::default().max_connections,
            metrics_listen: None,
            tls: TlsConfig::default(),
            sasl: SaslSection::default(),
            broker: BrokerConfig::default(),
        }
    }
}

/// Flags of `staunch serve`. Each overrides the config file; each can also be set through its
/// `STAUNCH_*` environment variable (flags win over the environment).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML config file.
    #[arg(long, short = 'c', env = "STAUNCH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:9092 (port 0 picks a free one).
    #[arg(long, env = "STAUNCH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Listeners, comma-separated, in Kafka's form: NAME://host:port, e.g.
    /// PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093 (replaces --listen).
    #[arg(long, env = "STAUNCH_LISTENERS", value_delimiter = ',')]
    listeners: Option<Vec<String>>,
    /// Data directory.
    #[arg(long, env = "STAUNCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Host advertised to clients (default: the listen address's IP).
    #[arg(long, env = "STAUNCH_ADVERTISED_HOST")]
    advertised_host: Option<String>,
    /// Default flush policy of topics: always, os, or interval:<duration>.
    #[arg(long, env = "STAUNCH_FLUSH")]
    flush: Option<FlushPolicy>,
    /// The weakest flush policy a topic may be given (always, interval:<duration> or os);
    /// clients asking for a weaker one get POLICY_VIOLATION. Default always.
    #[arg(long, env = "STAUNCH_DURABILITY_FLOOR")]
    durability_floor: Option<FlushPolicy>,
    /// Create topics on first use (true/false).
    #[arg(long, env = "STAUNCH_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics.
    #[arg(long, env = "STAUNCH_DEFAULT_PARTITIONS")]
    default_partitions: Option<i32>,
    /// Most partitions of all topics together; creating more gets POLICY_VIOLATION.
    #[arg(long, env = "STAUNCH_MAX_PARTITIONS")]
    max_partitions: Option<usize>,
    /// Bytes of requests being read, decoded and answered, all connections together (each
    /// frame charged its size plus the most it may decode to: 47x its size, 16 KiB to
    /// 64 MiB); 0 for no limit.
    #[arg(long, env = "STAUNCH_QUEUED_MAX_REQUEST_BYTES")]
    queued_max_request_bytes: Option<usize>,
    /// Unanswered requests one connection may have before it is no longer read.
    #[arg(long, env = "STAUNCH_MAX_IN_FLIGHT_REQUESTS")]
    max_in_flight_requests: Option<usize>,
    /// Connections served at once; one more is closed on accept.
    #[arg(long, env = "STAUNCH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Threads doing every partition log's background work (sealing, interval flushes,
    /// recovery points, zero-filling). Default 4.
    #[arg(long, env = "STAUNCH_BACKGROUND_THREADS")]
    background_threads: Option<usize>,
    /// Blocking threads produce requests may hold at once, each writing one partition and
    /// waiting for its fsync. Default 128.
    #[arg(long, env = "STAUNCH_IO_THREADS")]
    io_threads: Option<usize>,
    /// Threads that open, create and close partition logs at once (start-up, topic creation,
    /// shutdown). Default 16.
    #[arg(long, env = "STAUNCH_RECOVERY_THREADS")]
    recovery_threads: Option<usize>,
    /// Bytes of zeros all partition logs together may keep written ahead of their data (flush
    /// always); 0 turns zero-filling off. Default 268435456 (256 MiB).
    #[arg(long, env = "STAUNCH_ZERO_FILL_BUDGET")]
    zero_fill_budget: Option<u64>,
    /// Check every request against the ACLs (true/false); then only super users and what
    /// ACLs allow get through, and a resource without ACLs is denied. Default false.
    #[arg(long, env = "STAUNCH_AUTHORIZER_ENABLED")]
    authorizer_enabled: Option<bool>,
    /// Principals allowed everything when the authorizer is on, separated by `;` as Kafka's
    /// super.users (certificate names contain commas), e.g. "User:admin;User:CN=ops,O=acme".
    #[arg(
        long,
        env = "STAUNCH_SUPER_USERS",
        value_delimiter = ';',
        value_name = "PRINCIPALS"
    )]
    super_users: Option<Vec<String>>,
    /// Initial rebalance delay of new consumer groups, e.g. 3s or 100ms.
    #[arg(long, env = "STAUNCH_GROUP_INITIAL_REBALANCE_DELAY", value_parser = humantime_duration)]
    group_initial_rebalance_delay: Option<Duration>,
    /// Segment files that may hold an open descriptor at once (idle ones are closed and
    /// reopened on demand). Default 4096.
    #[arg(long, env = "STAUNCH_MAX_OPEN_FILES")]
    max_open_files: Option<usize>,
    /// Address of the Prometheus metrics and health listener, e.g. 127.0.0.1:9644 (port 0
    /// picks a free one): serves /metrics, /healthz and /readyz. Off when unset.
    #[arg(long, env = "STAUNCH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain of the SSL / SASL_SSL listeners ([tls] ssl_certificate_location).
    #[arg(long, env = "STAUNCH_TLS_CERTIFICATE_LOCATION", value_name = "FILE")]
    ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of that certificate: PKCS#8, RSA or EC ([tls] ssl_key_location).
    #[arg(long, env = "STAUNCH_TLS_KEY_LOCATION", value_name = "FILE")]
    ssl_key_location: Option<PathBuf>,
    /// PEM file of the CAs trusted to sign client certificates ([tls] ssl_ca_location).
    #[arg(long, env = "STAUNCH_TLS_CA_LOCATION", value_name = "FILE")]
    ssl_ca_location: Option<PathBuf>,
    /// Client certificates on SSL listeners: none, requested (checked if presented) or
    /// required ([tls] ssl_client_auth). Default none.
    #[arg(
        long,
        env = "STAUNCH_TLS_CLIENT_AUTH",
        value_name = "none|requested|required"
    )]
    ssl_client_auth: Option<ClientAuth>,
    /// How often the certificate, key and CA files are read again, e.g. 30s; a change is
    /// used by new connections, open ones are unaffected; 0s turns polling off (SIGHUP
    /// reloads at any time). Default 30s.
    #[arg(long, env = "STAUNCH_TLS_RELOAD_INTERVAL", value_parser = humantime_duration)]
    ssl_reload_interval: Option<Duration>,
    /// Log format.
    #[arg(long, env = "STAUNCH_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter (RUST_LOG syntax), e.g. info or staunch_server=debug.
    #[arg(long, env = "STAUNCH_LOG_LEVEL")]
    log_level: Option<String>,
    /// SASL mechanisms enabled on SASL listeners, comma-separated (`[sasl]
    /// enabled_mechanisms`).
    #[arg(long, env = "STAUNCH_SASL_ENABLED_MECHANISMS", value_delimiter = ',')]
    sasl_enabled_mechanisms: Option<Vec<String>>,
    /// KIP-152 session lifetime in ms; 0 = no re-authentication (`[sasl]
    /// connections_max_reauth_ms`).
    #[arg(long, env = "STAUNCH_CONNECTIONS_MAX_REAUTH_MS")]
    connections_max_reauth_ms: Option<u64>,
    /// Delay before a failed authentication is answered, in ms (`[sasl]
    /// failed_authentication_delay_ms`).
    #[arg(long, env = "STAUNCH_FAILED_AUTHENTICATION_DELAY_MS")]
    failed_authentication_delay_ms: Option<u64>,
    /// Print the resulting configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// Reads the config file (if any) and applies the flags and environment over it.
fn resolve(args: &ServeArgs) -> Result<ServeConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
        }
        None => ServeConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listeners) = &args.listeners {
        config.listeners = listeners.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.broker.data_dir = dir.clone();
    }
    if let Some(host) = &args.advertised_host {
        config.broker.advertised_host = host.clone();
    } else if args.config.is_none() || config.broker.advertised_host.is_empty() {
        let first = match config.listeners()?.first() {
            Some(listener) => listener.addr,
            None => config.listen,
        };
        config.broker.advertised_host = first.ip().to_string();
    }
    if let Some(flush) = args.flush {
        config.broker.log.flush = flush;
    }
    if let Some(floor) = args.durability_floor {
        config.broker.durability_floor = floor;
    }
    if let Some(auto) = args.auto_create_topics {
        config.broker.auto_create_topics = auto;
    }
    if let Some(n) = args.default_partitions {
        config.broker.default_partitions = n;
    }
    if let Some(n) = args.max_partitions {
        config.broker.max_partitions = n;
    }
    if let Some(bytes) = args.queued_max_request_bytes {
        config.queued_max_request_bytes = bytes;
    }
    if let Some(n) = args.max_in_flight_requests {
        config.max_in_flight_requests = n;
    }
    if let Some(n) = args.max_connections {
        config.max_connections = n;
    }
    if let Some(threads) = args.background_threads {
        config.broker.background_threads = threads;
    }
    if let Some(threads) = args.io_threads {
        config.broker.io_threads = threads;
    }
    if let Some(threads) = args.recovery_threads {
        config.broker.recovery_threads = threads;
    }
    if let Some(budget) = args.zero_fill_budget {
        config.broker.zero_fill_budget = budget;
    }
    if let Some(enabled) = args.authorizer_enabled {
        config.broker.authorizer_enabled = enabled;
    }
    if let Some(users) = &args.super_users {
        config.broker.super_users = users
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
    }
    if let Some(delay) = args.group_initial_rebalance_delay {
        config.broker.group_initial_rebalance_delay = delay;
    }
    if let Some(n) = args.max_open_files {
        config.broker.max_open_files = n;
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics_listen = Some(addr);
    }
    if let Some(path) = &args.ssl_certificate_location {
        config.tls.ssl_certificate_location = Some(path.clone());
    }
    if let Some(path) = &args.ssl_key_location {
        config.tls.ssl_key_location = Some(path.clone());
    }
    if let Some(path) = &args.ssl_ca_location {
        config.tls.ssl_ca_location = Some(path.clone());
    }
    if let Some(auth) = args.ssl_client_auth {
        config.tls.ssl_client_auth = auth.name().to_owned();
    }
    if let Some(interval) = args.ssl_reload_interval {
        config.tls.ssl_reload_interval = interval;
    }
    if let Some(mechanisms) = &args.sasl_enabled_mechanisms {
        config.sasl.enabled_mechanisms = mechanisms.clone();
    }
    if let Some(ms) = args.connections_max_reauth_ms {
        config.sasl.connections_max_reauth_ms = ms;
    }
    if let Some(ms) = args.failed_authentication_delay_ms {
        config.sasl.failed_authentication_delay_ms = ms;
    }
    config.sasl.server_config()?;
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    if let Some(level) = &args.log_level {
        config.log_level = level.clone();
    }
    config
        .broker
        .log
        .clone()
        .validate()
        .map_err(|e| e.to_string())?;
    config
        .broker
        .check_durability_floor(&config.broker.log.flush)
        .map_err(|e| format!("the default flush policy (--flush, log.flush): {e}"))?;
    if config.broker.default_partitions < 1 {
        return Err("default_partitions must be at least 1".to_owned());
    }
    if config.max_in_flight_requests < 1 {
        return Err("max_in_flight_requests must be at least 1".to_owned());
    }
    if config.max_connections < 1 {
        return Err("max_connections must be at least 1".to_owned());
    }
    if config.broker.io_threads < 1 {
        return Err("io_threads (--io-threads) must be at least 1".to_owned());
    }
    if config.broker.background_threads < 1 {
        return Err("background_threads (--background-threads) must be at least 1".to_owned());
    }
    let tls = config.tls.settings()?;
    if tls.is_none()
        && let Some(listener) = config.listeners()?.iter().find(|l| l.protocol.uses_tls())
    {
        return Err(format!(
            "listener {listener} ({}) needs a certificate: set ssl_certificate_location and \
             ssl_key_location in [tls] (or --ssl-certificate-location and --ssl-key-location)",
            listener.protocol
        ));
    }
    Ok(config)
}

impl ServeConfig {
    /// The listeners to bind: `listeners` parsed, or one PLAINTEXT listener on `listen`.
    fn listeners(&self) -> Result<Vec<ListenerConfig>, String> {
        if self.listeners.is_empty() {
            return Ok(vec![ListenerConfig::plaintext(self.listen)]);
        }
        let map = self
            .listener_security_protocol_map
            .iter()
            .map(|(name, protocol)| {
                protocol
                    .parse::<SecurityProtocol>()
                    .map(|p| (name.clone(), p))
                    .map_err(|e| format!("listener_security_protocol_map {name}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.listeners
            .iter()
            .map(|text| ListenerConfig::parse(text.trim(), &map))
            .collect()
    }
}

fn init_logging(config: &ServeConfig) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("invalid log level '{}': {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.log_format {
        LogFormat::Human => builder.try_init(),
        // Each line carries the fields of its span (`span`) and of every span around it
        // (`spans`): connection, request, topic and partition.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|e| format!("initialising logging: {e}"))
}

/// Resolves at SIGINT or SIGTERM. The handlers are installed when this is called (not when
/// the future is first polled), so a signal sent as soon as the listening line is printed
/// already shuts down cleanly. Call within the runtime.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM or SIGINT");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// A SIGHUP listener, or `None` (logged) when one cannot be made.
fn hangup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|e| {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files reload by polling only");
        })
        .ok()
}

/// Reloads the TLS certificate, key and CA files on every SIGHUP (a bad file is logged and
/// the current certificate kept).
async fn reload_on_sighup(
    tls: std::sync::Arc<staunch_server::ServerTls>,
    hangup: Option<tokio::signal::unix::Signal>,
) {
    let Some(mut hangup) = hangup else { return };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the TLS files");
        let tls = tls.clone();
        let _ = tokio::task::spawn_blocking(move || tls.reload_and_log()).await;
    }
}

/// Raises the soft limit on open files to the hard limit, as Kafka's start scripts advise: a
/// broker with many partitions and connections needs far more than the usual 1,024. Logs the
/// outcome; a limit that stays low is a warning naming the settings, not an error (the file
/// cache closes idle files when it runs out).
fn raise_open_files_limit(max_open_files: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = match limit.maximum {
        Some(hard) if limit.current.is_some_and(|soft| soft < hard) => {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => Some(hard),
                Err(e) => {
                    tracing::warn!(error = %e, "could not raise the open-files limit");
                    limit.current
                }
            }
        }
        _ => limit.current,
    };
    match soft {
        Some(soft) if soft < max_open_files as u64 * 2 => tracing::warn!(
            open_files_limit = soft,
            max_open_files,
            "the open-files limit is low for max_open_files plus connections; raise it \
             (ulimit -n, systemd LimitNOFILE) or lower max_open_files"
        ),
        _ => tracing::info!(open_files_limit = ?soft, max_open_files, "open files"),
    }
}

/// Runs the broker until SIGINT or SIGTERM, then finishes in-flight requests, flushes every
/// log and marks it cleanly shut down.
pub(crate) fn run(args: ServeArgs) -> Result<(), String> {
    let mut config = resolve(&args)?;
    if args.print_config {
        print!("{}", toml::to_string(&config).map_err(|e| e.to_string())?);
        return Ok(());
    }
    init_logging(&config)?;
    raise_open_files_limit(config.broker.max_open_files);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("staunch")
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        // Installed before anything opens, so every metric handle records into it.
        let metrics = match config.metrics_listen {
            Some(addr) => {
                let state = metrics_http::MetricsState::install()?;
                let listener = metrics_http::bind(addr).await?;
                let bound = listener.local_addr().map_err(|e| e.to_string())?;
                tokio::spawn(metrics_http::serve(listener, state.clone()));
                tracing::info!(listen = %bound, "metrics listener: /metrics, /healthz, /readyz");
                // Tests and scripts read this line to learn the port.
                println!("staunch metrics listening on {bound}");
                Some(state)
            }
            None => None,
        };
        let listeners = config.listeners()?;
        let server = Server::bind_listeners(
            listeners,
            ServerConfig {
                max_request_bytes: config.max_request_bytes,
                idle_timeout: config.idle_timeout,
                queued_max_request_bytes: config.queued_max_request_bytes,
                max_in_flight_requests: config.max_in_flight_requests,
                max_connections: config.max_connections,
                tls: config.tls.settings()?,
                sasl: config.sasl.server_config()?,
                ..ServerConfig::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let bound = server.local_addr().map_err(|e| e.to_string())?;
        config.broker.advertised_port = bound.port();
        let broker_config = config.broker.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        broker.start_background_tasks();
        let signal = shutdown_signal();
        // Tests and scripts read this line to learn the port.
        tracing::info!(listen = %bound, data_dir = %config.broker.data_dir.display(), flush = %config.broker.log.flush, "staunch is serving");
        for (listener, addr) in server.listeners() {
            tracing::info!(listener = %listener.name, protocol = %listener.protocol, %addr, "listening");
            // Tests and scripts read these lines to learn each listener's port.
            println!("staunch listener {} on {addr}", listener.name);
        }
        // Listening for SIGHUP before the listening line, so a script that reloads right
        // after start does not kill the broker (SIGHUP's default action).
        let reload_on_hangup = server.tls().map(|tls| tokio::spawn(reload_on_sighup(tls, hangup())));
        println!("staunch listening on {bound}");
        if let Some(metrics) = &metrics {
            metrics.broker_ready(&broker);
        }
        let shutdown = async {
            signal.await;
            if let Some(metrics) = &metrics {
                metrics.shutting_down();
            }
        };
        server.run(broker.clone(), shutdown).await;
        if let Some(task) = reload_on_hangup {
            task.abort();
        }
        broker.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sasl_section_becomes_the_servers_settings() {
        let config: ServeConfig = toml::from_str(
            "[sasl]\nenabled_mechanisms = [\"SCRAM-SHA-512\"]\nconnections_max_reauth_ms = 60000\nfailed_authentication_delay_ms = 5\n",
        )
        .unwrap();
        let sasl = config.sasl.server_config().unwrap();
        assert_eq!(sasl.enabled_mechanisms, vec![SaslMechanism::ScramSha512]);
        assert_eq!(sasl.connections_max_reauth, Duration::from_secs(60));
        assert_eq!(sasl.failed_authentication_delay, Duration::from_millis(5));
        assert_eq!(sasl.max_failures_per_address, 10);
        let defaults = ServeConfig::default().sasl.server_config().unwrap();
        assert_eq!(defaults.enabled_mechanisms, SaslMechanism::ALL.to_vec());
        assert!(defaults.connections_max_reauth.is_zero());
        for bad in [
            "[sasl]\nenabled_mechanisms = [\"GSSAPI\"]\n",
            "[sasl]\nenabled_mechanisms = []\n",
            "[sasl]\nmax_failures_per_address = 0\n",
        ] {
            let config: ServeConfig = toml::from_str(bad).unwrap();
            assert!(config.sasl.server_config().is_err(), "{bad}");
        }
        assert!(toml::from_str::<ServeConfig>("[sasl]\nunknown = 1\n").is_err());
    }
}
