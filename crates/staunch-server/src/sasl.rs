//! SASL authentication of a connection (SaslHandshake, SaslAuthenticate, KIP-152
//! re-authentication), and the per-address limit on failed attempts.
//!
//! The exchange does not care what carries it (plain TCP or TLS): it sees decoded requests
//! only. On a SASL listener, until the client has authenticated, only ApiVersions,
//! SaslHandshake and SaslAuthenticate are answered; anything else closes the connection, as
//! in Kafka. On other listeners both SASL requests are answered ILLEGAL_SASL_STATE.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_broker::{Broker, Principal, StoredCredential};
use staunch_core::{ErrorCode, SaslMechanism};
use staunch_protocol::kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use staunch_protocol::sasl::{
    ClientFirst, MAX_TOKEN_BYTES, PlainToken, SaslError, ScramCredential, ScramMechanism,
    ScramServer,
};
use staunch_protocol::{Request, encode_response};

use crate::handlers::{NoAnswer, Reply, text};

/// The largest request frame read from a connection that has not authenticated yet on a SASL
/// listener (Kafka's `sasl.server.max.receive.size`, 512 KiB): an unauthenticated client
/// cannot make the broker read 100 MiB.
pub(crate) const MAX_UNAUTHENTICATED_FRAME_BYTES: usize = 512 << 10;

/// SASL settings of a server.
#[derive(Debug, Clone)]
pub struct SaslConfig {
    /// Mechanisms a client may choose (`sasl.enabled.mechanisms`). Default: PLAIN,
    /// SCRAM-SHA-256 and SCRAM-SHA-512.
    pub enabled_mechanisms: Vec<SaslMechanism>,
    /// How long an authenticated session lasts before the client must re-authenticate
    /// (KIP-152, `connections.max.reauth.ms`); zero (the default) means for ever. After it,
    /// a connection that has not re-authenticated is closed at its next request.
    pub connections_max_reauth: Duration,
    /// How long a failed authentication's answer is held back before the connection closes
    /// (`connection.failed.authentication.delay.ms`). Default 100 ms.
    pub failed_authentication_delay: Duration,
    /// Failed authentications one client address may have in `failure_window` before its
    /// connections are closed at their first SASL request, without trying (a token bucket
    /// that refills at this many per window). Default 10.
    pub max_failures_per_address: u32,
    /// See `max_failures_per_address`. Default 60 s.
    pub failure_window: Duration,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            enabled_mechanisms: SaslMechanism::ALL.to_vec(),
            connections_max_reauth: Duration::ZERO,
            failed_authentication_delay: Duration::from_millis(100),
            max_failures_per_address: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// Client addresses tracked at most; past it the least recently failed is forgotten.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failed authentications per client address: a token bucket each, in bounded memory.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    capacity: f64,
    /// Tokens regained per second.
    refill: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailureLimiter {
    /// `max` failures per `window`, refilled evenly.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        let capacity = f64::from(max.max(1));
        FailureLimiter {
            capacity,
            refill: capacity / window.as_secs_f64().max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * self.refill;
        Bucket {
            tokens: (bucket.tokens + gained).min(self.capacity),
            at: now,
        }
    }

    /// Whether `ip` may try to authenticate now (it has failures left).
    pub(crate) fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        let buckets = self.lock();
        match buckets.get(&ip) {
            None => true,
            Some(&bucket) => self.refilled(bucket, now).tokens >= 1.0,
        }
    }

    /// Counts a failure of `ip`.
    pub(crate) fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.lock();
        if !buckets.contains_key(&ip) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            // Forget the full buckets first, then the least recently failed address.
            buckets.retain(|_, b| {
                now.saturating_duration_since(b.at).as_secs_f64() * self.refill + b.tokens
                    < self.capacity
            });
            if buckets.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip)
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.get(&ip).copied().unwrap_or(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let mut bucket = self.refilled(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        buckets.insert(ip, bucket);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// What a listener's connections share for SASL.
#[derive(Debug)]
pub(crate) struct SaslShared {
    pub(crate) config: SaslConfig,
    pub(crate) limiter: FailureLimiter,
    /// Random for the server's lifetime; decoy credentials of unknown users derive from it.
    pub(crate) secret: Vec<u8>,
}

impl SaslShared {
    pub(crate) fn new(config: SaslConfig) -> Self {
        SaslShared {
            limiter: FailureLimiter::new(config.max_failures_per_address, config.failure_window),
            config,
            secret: staunch_protocol::sasl::random_bytes(32),
        }
    }
}

/// Where one connection's exchange is.
enum State {
    /// Waiting for a SaslHandshake.
    Start,
    /// Handshake done; the first SaslAuthenticate is due.
    Handshaken(SaslMechanism),
    /// SCRAM server-first sent; the client-final is due.
    ScramFinal {
        mechanism: SaslMechanism,
        server: Box<ScramServer>,
        username: String,
    },
    /// Authenticated (and no re-authentication under way).
    Done,
}

/// One connection's SASL session.
pub(crate) struct SaslSession {
    /// Whether the listener requires SASL.
    required: bool,
    state: State,
    /// Who the connection authenticated as, once it has.
    principal: Option<Principal>,
    /// The mechanism it authenticated with.
    mechanism: Option<SaslMechanism>,
    /// When the session expires (KIP-152), if it does.
    expires: Option<Instant>,
}

/// What the connection does with a request.
pub(crate) enum Gate {
    /// Handle it as usual.
    Pass,
    /// Send this reply (a SASL answer).
    Reply(Reply),
    /// Close the connection, saying why.
    Close(String),
}

fn encode(api_key: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Reply {
    Reply::Now(
        encode_response(api_key, version, correlation_id, &body)
            .map(Some)
            .map_err(|e| NoAnswer::Encode(e.to_string())),
    )
}

/// The answer, then the connection closes.
fn last(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
    delay: Duration,
) -> Reply {
    let answer = encode_response(api_key, version, correlation_id, &body)
        .map(Some)
        .map_err(|e| NoAnswer::Encode(e.to_string()));
    Reply::Last(Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        answer
    }))
}

fn handshake_response(error: ErrorCode, enabled: &[SaslMechanism]) -> ResponseKind {
    ResponseKind::SaslHandshake(
        SaslHandshakeResponse::default()
            .with_error_code(error.code())
            .with_mechanisms(enabled.iter().map(|m| text(m.name())).collect()),
    )
}

fn authenticate_response(
    error: ErrorCode,
    message: Option<String>,
    bytes: Bytes,
) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(error.code())
        .with_error_message(message.map(text))
        .with_auth_bytes(bytes)
}

impl SaslSession {
    /// A session for a connection on a listener that `required`s SASL, or not.
    pub(crate) fn new(required: bool) -> Self {
        SaslSession {
            required,
            state: State::Start,
            principal: None,
            mechanism: None,
            expires: None,
        }
    }

    /// Whether the connection may send requests other than SASL ones: it authenticated (or
    /// need not).
    pub(crate) fn authenticated(&self) -> bool {
        !self.required || self.principal.is_some()
    }

    /// The principal after a successful authentication.
    pub(crate) fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Decides what happens to `request`; SASL requests are answered here.
    pub(crate) async fn gate(
        &mut self,
        request: &Request,
        broker: &Broker,
        shared: &SaslShared,
        peer: SocketAddr,
    ) -> Gate {
        let (api_key, version, correlation_id) =
            (request.api_key, request.api_version, request.correlation_id);
        let is_sasl = matches!(
            request.body,
            RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_)
        );
        if !self.required {
            if !is_sasl {
                return Gate::Pass;
            }
            // Kafka's answer on a listener without SASL.
            return Gate::Reply(match &request.body {
                RequestKind::SaslHandshake(_) => encode(
                    api_key,
                    version,
                    correlation_id,
                    handshake_response(ErrorCode::IllegalSaslState, &[]),
                ),
                _ => encode(
                    api_key,
                    version,
                    correlation_id,
                    ResponseKind::SaslAuthenticate(authenticate_response(
                        ErrorCode::IllegalSaslState,
                        Some("this listener does not use SASL".to_owned()),
                        Bytes::new(),
                    )),
                ),
            });
        }
        if !is_sasl {
            if matches!(request.body, RequestKind::ApiVersions(_)) {
                return Gate::Pass;
            }
            let Some(principal) = &self.principal else {
                return Gate::Close(format!(
                    "{api_key:?} request before SASL authentication completed"
                ));
            };
            if let Some(expires) = self.expires
                && Instant::now() >= expires
            {
                return Gate::Close(format!(
                    "SASL session of {principal} expired (connections_max_reauth) and was not re-authenticated"
                ));
            }
            return Gate::Pass;
        }
        let config = &shared.config;
        match (&request.body, &self.state) {
            (RequestKind::SaslHandshake(_), _) if version == 0 => {
                // v0 is followed by unframed tokens (pre-KIP-152 clients); every client
                // that knows SaslAuthenticate (advertised here) uses v1. librdkafka needs v0
                // advertised to see the handshake supported at all.
                tracing::warn!(%peer, "SaslHandshake v0 (unframed SASL tokens) is not supported; use v1 with SaslAuthenticate");
                Gate::Reply(last(
                    api_key,
                    version,
                    correlation_id,
                    handshake_response(ErrorCode::UnsupportedVersion, &config.enabled_mechanisms),
                    Duration::ZERO,
                ))
            }
            (RequestKind::SaslHandshake(r), State::Start | State::Done) => {
                let reauth = matches!(self.state, State::Done);
                if reauth && config.connections_max_reauth.is_zero() {
                    // Kafka's answer to a handshake after authentication without KIP-152.
                    return Gate::Reply(encode(
                        api_key,
                        version,
                        correlation_id,
                        handshake_response(ErrorCode::IllegalSaslState, &config.enabled_mechanisms),
                    ));
                }
                if !reauth && !shared.limiter.allows(peer.ip(), Instant::now()) {
                    crate::metrics::authentication_rate_limited();
                    return Gate::Close(
                        "too many failed authentications from this address; try again later"
                            .to_owned(),
                    );
                }
                let wanted = r.mechanism.as_str();
                let mechanism = config
                    .enabled_mechanisms
                    .iter()
                    .copied()
                    .find(|m| m.name() == wanted);
                match mechanism {
                    Some(m) if !reauth || self.mechanism == Some(m) => {
                        self.state = State::Handshaken(m);
                        Gate::Reply(encode(
                            api_key,
                            version,
                            correlation_id,
                            handshake_response(ErrorCode::None, &config.enabled_mechanisms),
                        ))
                    }
                    Some(m) => {
                        tracing::warn!(%peer, mechanism = %m, "re-authentication with another SASL mechanism refused");
                        Gate::Reply(last(
                            api_key,
                            version,
                            correlation_id,
                            handshake_response(
                                ErrorCode::IllegalSaslState,
                                &config.enabled_mechanisms,
                            ),
                            Duration::ZERO,
                        ))
                    }
                    None => {
                        tracing::warn!(%peer, mechanism = wanted, "SASL mechanism not enabled");
                        Gate::Reply(last(
                            api_key,
                            version,
                            correlation_id,
                            handshake_response(
                                ErrorCode::UnsupportedSaslMechanism,
                                &config.enabled_mechanisms,
                            ),
                            Duration::ZERO,
                        ))
                    }
                }
            }
            (RequestKind::SaslHandshake(_), _) => Gate::Reply(last(
                api_key,
                version,
                correlation_id,
                handshake_response(ErrorCode::IllegalSaslState, &config.enabled_mechanisms),
                Duration::ZERO,
            )),
            (RequestKind::SaslAuthenticate(r), State::Handshaken(mechanism)) => {
                let mechanism = *mechanism;
                let token = r.auth_bytes.clone();
                self.first_token(mechanism, token, broker, shared, peer, request)
                    .await
            }
            (
                RequestKind::SaslAuthenticate(r),
                State::ScramFinal {
                    mechanism,
                    server,
                    username,
                },
            ) => {
                let (mechanism, username) = (*mechanism, username.clone());
                let result = if r.auth_bytes.len() > MAX_TOKEN_BYTES {
                    Err(SaslError::Malformed {
                        mechanism,
                        reason: "token too large".to_owned(),
                    })
                } else {
                    server.finish(&r.auth_bytes)
                };
                match result {
                    Ok(server_final) => self.succeed(
                        mechanism,
                        &username,
                        Bytes::from(server_final),
                        shared,
                        peer,
                        request,
                    ),
                    Err(e) => self.fail(mechanism, Some(&username), &e, shared, peer, request),
                }
            }
            (RequestKind::SaslAuthenticate(_), State::Done) => Gate::Reply(encode(
                api_key,
                version,
                correlation_id,
                ResponseKind::SaslAuthenticate(authenticate_response(
                    ErrorCode::IllegalSaslState,
                    Some("SaslAuthenticate after successful authentication".to_owned()),
                    Bytes::new(),
                )),
            )),
            (_, _) => Gate::Reply(last(
                api_key,
                version,
                correlation_id,
                ResponseKind::SaslAuthenticate(authenticate_response(
                    ErrorCode::IllegalSaslState,
                    Some("SaslAuthenticate before SaslHandshake".to_owned()),
                    Bytes::new(),
                )),
                Duration::ZERO,
            )),
        }
    }

    /// The first SaslAuthenticate after the handshake: PLAIN's only token, or SCRAM's
    /// client-first message.
    async fn first_token(
        &mut self,
        mechanism: SaslMechanism,
        token: Bytes,
        broker: &Broker,
        shared: &SaslShared,
        peer: SocketAddr,
        request: &Request,
    ) -> Gate {
        if token.len() > MAX_TOKEN_BYTES {
            let e = SaslError::Malformed {
                mechanism,
                reason: format!("token of {} bytes (at most {MAX_TOKEN_BYTES})", token.len()),
            };
            return self.fail(mechanism, None, &e, shared, peer, request);
        }
        match ScramMechanism::of(mechanism) {
            None => {
                let plain = match PlainToken::parse(&token) {
                    Ok(plain) => plain,
                    Err(e) => return self.fail(mechanism, None, &e, shared, peer, request),
                };
                let credentials = broker.credentials().clone();
                let user = plain.username.clone();
                // PBKDF2 takes milliseconds: off the async threads.
                let verified =
                    tokio::task::spawn_blocking(move || verify_plain(&credentials, &plain))
                        .await
                        .unwrap_or(false);
                if verified {
                    self.succeed(mechanism, &user, Bytes::new(), shared, peer, request)
                } else {
                    self.fail(
                        mechanism,
                        Some(&user),
                        &SaslError::InvalidCredentials,
                        shared,
                        peer,
                        request,
                    )
                }
            }
            Some(scram) => {
                let first = match ClientFirst::parse(scram, &token) {
                    Ok(first) => first,
                    Err(e) => return self.fail(mechanism, None, &e, shared, peer, request),
                };
                let username = first.username.clone();
                let credential = broker
                    .credentials()
                    .get(&username, mechanism)
                    .map(to_scram)
                    .unwrap_or_else(|| ScramCredential::decoy(scram, &shared.secret, &username));
                let (server, server_first) = ScramServer::start(scram, first, Some(credential));
                self.state = State::ScramFinal {
                    mechanism,
                    server: Box::new(server),
                    username,
                };
                Gate::Reply(encode(
                    request.api_key,
                    request.api_version,
                    request.correlation_id,
                    ResponseKind::SaslAuthenticate(authenticate_response(
                        ErrorCode::None,
                        None,
                        Bytes::from(server_first),
                    )),
                ))
            }
        }
    }

    /// The exchange succeeded for `username`: the connection is `User:<username>` from now
    /// on (a re-authentication must keep the principal).
    fn succeed(
        &mut self,
        mechanism: SaslMechanism,
        username: &str,
        bytes: Bytes,
        shared: &SaslShared,
        peer: SocketAddr,
        request: &Request,
    ) -> Gate {
        let principal = Principal::user(username);
        if let Some(previous) = &self.principal
            && *previous != principal
        {
            tracing::warn!(%peer, %previous, %principal, "re-authentication as another principal refused");
            let e = SaslError::Unsupported("re-authentication as another principal".to_owned());
            return self.fail(mechanism, Some(username), &e, shared, peer, request);
        }
        let reauth = self.principal.is_some();
        let lifetime = shared.config.connections_max_reauth;
        let mut response = authenticate_response(ErrorCode::None, None, bytes);
        if !lifetime.is_zero() {
            self.expires = Some(Instant::now() + lifetime);
            response = response
                .with_session_lifetime_ms(lifetime.as_millis().try_into().unwrap_or(i64::MAX));
        }
        if reauth {
            // Once per session lifetime per connection, and only with KIP-152 turned on.
            tracing::info!(%peer, %principal, %mechanism, "re-authenticated");
        } else {
            tracing::info!(%peer, %principal, %mechanism, "authenticated");
        }
        self.principal = Some(principal);
        self.mechanism = Some(mechanism);
        self.state = State::Done;
        Gate::Reply(encode(
            request.api_key,
            request.api_version,
            request.correlation_id,
            ResponseKind::SaslAuthenticate(response),
        ))
    }

    /// The exchange failed: one warning naming the user (never the password or proof) and
    /// the address, a failure counted for the address, and SASL_AUTHENTICATION_FAILED sent
    /// after the configured delay, after which the connection closes.
    fn fail(
        &mut self,
        mechanism: SaslMechanism,
        username: Option<&str>,
        error: &SaslError,
        shared: &SaslShared,
        peer: SocketAddr,
        request: &Request,
    ) -> Gate {
        let user = username.unwrap_or("<unknown>");
        tracing::warn!(%peer, user, %mechanism, reason = %error, "authentication failed");
        crate::metrics::authentication_failed(mechanism.name());
        shared.limiter.record_failure(peer.ip(), Instant::now());
        self.state = State::Start;
        let message = format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
        );
        Gate::Reply(last(
            request.api_key,
            request.api_version,
            request.correlation_id,
            ResponseKind::SaslAuthenticate(authenticate_response(
                ErrorCode::SaslAuthenticationFailed,
                Some(message),
                Bytes::new(),
            )),
            shared.config.failed_authentication_delay,
        ))
    }
}

fn to_scram(c: StoredCredential) -> ScramCredential {
    ScramCredential {
        salt: c.salt,
        iterations: c.iterations,
        stored_key: c.stored_key,
        server_key: c.server_key,
    }
}

/// Checks a PLAIN password against the user's SCRAM-SHA-512 credential, else its
/// SCRAM-SHA-256 one. An unknown user costs the same PBKDF2 work as a known one.
fn verify_plain(credentials: &staunch_broker::CredentialStore, plain: &PlainToken) -> bool {
    for scram in [ScramMechanism::Sha512, ScramMechanism::Sha256] {
        if let Some(c) = credentials.get(&plain.username, scram.sasl()) {
            return to_scram(c).verify_password(scram, &plain.password);
        }
    }
    let dummy = ScramCredential::from_salted_password(
        ScramMechanism::Sha512,
        vec![0; 32],
        staunch_protocol::sasl::DEFAULT_ITERATIONS,
        &[0; 64],
    );
    let _ = dummy.verify_password(ScramMechanism::Sha512, &plain.password);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_closes_after_the_limit_and_refills() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(30));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(ip, t0));
            limiter.record_failure(ip, t0);
        }
        assert!(!limiter.allows(ip, t0));
        assert!(
            limiter.allows(other, t0),
            "other addresses are not affected"
        );
        // One failure's worth refills in window / max = 10 s.
        assert!(!limiter.allows(ip, t0 + Duration::from_secs(9)));
        assert!(limiter.allows(ip, t0 + Duration::from_secs(10)));
        limiter.record_failure(ip, t0 + Duration::from_secs(10));
        assert!(!limiter.allows(ip, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.record_failure(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(limiter.tracked() <= MAX_TRACKED_ADDRESSES);
        // The most recent failing address is still tracked.
        let last = IpAddr::from((MAX_TRACKED_ADDRESSES as u32 + 499).to_be_bytes());
        limiter.record_failure(last, t0 + Duration::from_secs(20));
        assert!(!limiter.allows(last, t0 + Duration::from_secs(20)));
    }
}
