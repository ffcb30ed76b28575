//! SASL on a SASL_PLAINTEXT listener, request by request over raw sockets and through the
//! Staunch client: logins with PLAIN and SCRAM, refusals, bad input before and during the
//! exchange (after each the broker serves a good client), the per-address failure limit,
//! KIP-152 re-authentication, and the SCRAM credential admin APIs.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use staunch_broker::{Broker, BrokerConfig, CredentialChange, Storage, StoredCredential};
use staunch_client::kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use staunch_client::kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiKey, ApiVersionsRequest,
    DescribeUserScramCredentialsRequest, MetadataRequest, RequestKind, ResponseKind,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use staunch_client::kafka_protocol::protocol::StrBytes;
use staunch_client::{ClientError, Connection, SaslCredentials, SecurityConfig};
use staunch_core::{SaslMechanism, SecurityProtocol};
use staunch_protocol::sasl::{ScramClient, ScramCredential, ScramMechanism};
use staunch_protocol::{decode_response, encode_request};
use staunch_server::{ListenerConfig, SaslConfig, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::requests::{one_record, produce_request};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    sasl: SocketAddr,
    plain: SocketAddr,
    broker: Broker,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stopped in time")
            .unwrap();
    }
}

/// A broker with user `alice` (password `secret`, both SCRAM mechanisms) behind a
/// SASL_PLAINTEXT and a PLAINTEXT listener.
async fn start(sasl: SaslConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind_listeners(
        vec![
            ListenerConfig {
                name: "SASL_PLAINTEXT".to_owned(),
                addr: any,
                protocol: SecurityProtocol::SaslPlaintext,
            },
            ListenerConfig::plaintext(any),
        ],
        ServerConfig {
            sasl,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let addrs: Vec<SocketAddr> = server.listeners().into_iter().map(|(_, a)| a).collect();
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        advertised_port: addrs[0].port(),
        ..BrokerConfig::default()
    };
    let storage = Storage::fs(dir.path());
    let broker = tokio::task::spawn_blocking(move || Broker::open_with(config, storage))
        .await
        .unwrap()
        .unwrap();
    let store = broker.credentials().clone();
    tokio::task::spawn_blocking(move || {
        let changes = ScramMechanism::ALL
            .into_iter()
            .map(|m| {
                let c = ScramCredential::new(m, "secret", 4096).unwrap();
                CredentialChange::Upsert {
                    user: "alice".to_owned(),
                    mechanism: m.sasl(),
                    credential: StoredCredential {
                        salt: c.salt,
                        iterations: c.iterations,
                        stored_key: c.stored_key,
                        server_key: c.server_key,
                    },
                }
            })
            .collect();
        store.alter(changes).unwrap();
    })
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let serving = broker.clone();
    let task = tokio::spawn(async move {
        server
            .run(serving.clone(), async {
                let _ = stopped.await;
            })
            .await;
        serving.shutdown().await;
    });
    Running {
        sasl: addrs[0],
        plain: addrs[1],
        broker,
        stop,
        task,
        _dir: dir,
    }
}

fn quick() -> SaslConfig {
    SaslConfig {
        failed_authentication_delay: Duration::from_millis(10),
        ..SaslConfig::default()
    }
}

fn security(mechanism: SaslMechanism, user: &str, password: &str) -> SecurityConfig {
    SecurityConfig {
        protocol: SecurityProtocol::SaslPlaintext,
        sasl: Some(SaslCredentials {
            mechanism,
            username: user.to_owned(),
            password: password.to_owned(),
        }),
        ..SecurityConfig::default()
    }
}

async fn login(addr: SocketAddr, security: &SecurityConfig) -> Result<Connection, ClientError> {
    Connection::connect_secured(addr, "127.0.0.1", "sasl-test", TIMEOUT, security).await
}

/// A good client still gets in and is served.
async fn serves_a_good_client(addr: SocketAddr) {
    let mut c = login(
        addr,
        &security(SaslMechanism::ScramSha512, "alice", "secret"),
    )
    .await
    .expect("a good client logs in");
    c.call(MetadataRequest::default()).await.unwrap();
}

/// A raw connection sending hand-made frames.
struct Raw {
    stream: TcpStream,
    next: i32,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            next: 0,
        }
    }

    async fn send(&mut self, key: ApiKey, version: i16, body: RequestKind) {
        self.next += 1;
        let frame = encode_request(key, version, self.next, "raw", &body).unwrap();
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next answer, or `None` once the broker closed the connection.
    async fn answer(&mut self, key: ApiKey, version: i16) -> Option<ResponseKind> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut len)).await {
            Err(_) => panic!("no answer and no close within {TIMEOUT:?}"),
            Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(decode_response(key, version, Bytes::from(body)).unwrap().1)
    }

    async fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> Option<ResponseKind> {
        self.send(key, version, body).await;
        self.answer(key, version).await
    }

    async fn handshake(&mut self, mechanism: &str) -> i16 {
        match self
            .call(
                ApiKey::SaslHandshake,
                1,
                RequestKind::SaslHandshake(
                    SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_string(mechanism.to_owned())),
                ),
            )
            .await
        {
            Some(ResponseKind::SaslHandshake(r)) => r.error_code,
            other => panic!("handshake answered {other:?}"),
        }
    }

    /// SaslAuthenticate v2: (error code, message, bytes, session lifetime), `None` if closed.
    async fn authenticate(&mut self, token: &[u8]) -> Option<(i16, Option<String>, Bytes, i64)> {
        match self
            .call(
                ApiKey::SaslAuthenticate,
                2,
                RequestKind::SaslAuthenticate(
                    SaslAuthenticateRequest::default()
                        .with_auth_bytes(Bytes::copy_from_slice(token)),
                ),
            )
            .await?
        {
            ResponseKind::SaslAuthenticate(r) => Some((
                r.error_code,
                r.error_message.map(|m| m.to_string()),
                r.auth_bytes,
                r.session_lifetime_ms,
            )),
            other => panic!("authenticate answered {other:?}"),
        }
    }

    /// A whole SCRAM-SHA-512 login; the session lifetime the broker gave.
    async fn scram_login(&mut self, user: &str, password: &str) -> Result<i64, i16> {
        assert_eq!(self.handshake("SCRAM-SHA-512").await, 0);
        let (mut client, first) = ScramClient::start(ScramMechanism::Sha512, user, password);
        let (code, _, server_first, _) = self.authenticate(&first).await.expect("server-first");
        if code != 0 {
            return Err(code);
        }
        let last = client.respond(&server_first).unwrap();
        let (code, _, server_final, lifetime) =
            self.authenticate(&last).await.expect("server-final");
        if code != 0 {
            return Err(code);
        }
        client.verify(&server_final).unwrap();
        Ok(lifetime)
    }

    async fn metadata(&mut self) -> bool {
        self.call(
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(MetadataRequest::default()),
        )
        .await
        .is_some()
    }

    async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

const FAILED: i16 = 58;
const ILLEGAL_SASL_STATE: i16 = 34;

#[tokio::test]
async fn every_mechanism_logs_in_and_wrong_credentials_are_refused_alike() {
    let running = start(quick()).await;
    for m in SaslMechanism::ALL {
        let mut c = login(running.sasl, &security(m, "alice", "secret"))
            .await
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        c.call(MetadataRequest::default()).await.unwrap();
        for (user, password) in [("alice", "Secret"), ("mallory", "secret")] {
            let error = login(running.sasl, &security(m, user, password))
                .await
                .expect_err("refused");
            let ClientError::Authentication { message, .. } = &error else {
                panic!("{m} {user}: {error}");
            };
            assert!(message.contains("SASL_AUTHENTICATION_FAILED"), "{message}");
            assert!(
                message.contains(&format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {m}"
                )),
                "{message}"
            );
            assert!(
                !error.to_string().contains(password),
                "no password in {error}"
            );
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn requests_before_authentication_close_the_connection() {
    let running = start(quick()).await;
    // ApiVersions is allowed; a produce is not.
    let mut raw = Raw::connect(running.sasl).await;
    assert!(
        raw.call(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default())
        )
        .await
        .is_some()
    );
    raw.send(
        ApiKey::Produce,
        9,
        RequestKind::Produce(produce_request("t", 1, one_record(b"x"))),
    )
    .await;
    assert!(raw.is_closed().await, "produce before authentication");
    assert!(
        running.broker.topic_names().is_empty(),
        "nothing was produced"
    );
    // Mid-exchange too.
    let mut raw = Raw::connect(running.sasl).await;
    assert_eq!(raw.handshake("SCRAM-SHA-512").await, 0);
    assert!(!raw.metadata().await, "metadata during the exchange");
    serves_a_good_client(running.sasl).await;
    running.stop().await;
}

#[tokio::test]
async fn out_of_order_oversized_and_garbage_sasl_input_is_refused() {
    let running = start(quick()).await;
    // SaslAuthenticate before SaslHandshake.
    let mut raw = Raw::connect(running.sasl).await;
    let (code, ..) = raw.authenticate(b"n,,n=alice,r=abc").await.unwrap();
    assert_eq!(code, ILLEGAL_SASL_STATE);
    assert!(raw.is_closed().await);
    serves_a_good_client(running.sasl).await;

    // A mechanism that is not enabled.
    let mut raw = Raw::connect(running.sasl).await;
    assert_eq!(raw.handshake("GSSAPI").await, 33);
    assert!(raw.is_closed().await);

    // A second handshake mid-exchange.
    let mut raw = Raw::connect(running.sasl).await;
    assert_eq!(raw.handshake("PLAIN").await, 0);
    assert_eq!(raw.handshake("PLAIN").await, ILLEGAL_SASL_STATE);
    assert!(raw.is_closed().await);

    // An oversized token (over 64 KiB, under the unauthenticated frame limit).
    let mut raw = Raw::connect(running.sasl).await;
    assert_eq!(raw.handshake("SCRAM-SHA-512").await, 0);
    let (code, ..) = raw.authenticate(&vec![b'a'; 100 << 10]).await.unwrap();
    assert_eq!(code, FAILED);
    assert!(raw.is_closed().await);
    // A frame over the unauthenticated limit is not even read.
    let mut raw = Raw::connect(running.sasl).await;
    raw.stream
        .write_all(&(1u32 << 20).to_be_bytes())
        .await
        .unwrap();
    assert!(raw.is_closed().await);
    serves_a_good_client(running.sasl).await;

    // Garbage in place of SCRAM and PLAIN messages.
    for (mechanism, token) in [
        ("SCRAM-SHA-512", &b"\xff\x00garbage"[..]),
        ("SCRAM-SHA-256", b"p=tls-server-end-point,,n=alice,r=x"),
        ("PLAIN", b"no nul bytes"),
        ("PLAIN", b"bob\0alice\0secret"),
    ] {
        let mut raw = Raw::connect(running.sasl).await;
        assert_eq!(raw.handshake(mechanism).await, 0);
        let (code, ..) = raw.authenticate(token).await.unwrap();
        assert_eq!(code, FAILED, "{mechanism} {token:?}");
        assert!(raw.is_closed().await);
    }
    // A SCRAM client-final with a wrong nonce, and one with garbage.
    for bad_final in [
        "c=biws,r=not-the-nonce,p=AAAA".to_owned(),
        "garbage".to_owned(),
    ] {
        let mut raw = Raw::connect(running.sasl).await;
        assert_eq!(raw.handshake("SCRAM-SHA-512").await, 0);
        let (_client, first) = ScramClient::start(ScramMechanism::Sha512, "alice", "secret");
        let (code, ..) = raw.authenticate(&first).await.unwrap();
        assert_eq!(code, 0);
        let (code, ..) = raw.authenticate(bad_final.as_bytes()).await.unwrap();
        assert_eq!(code, FAILED, "{bad_final}");
        assert!(raw.is_closed().await);
    }
    serves_a_good_client(running.sasl).await;
    running.stop().await;
}

/// The wire's bad-input battery against the SASL listener before authentication: each
/// closes its connection, and the broker keeps serving.
#[tokio::test]
async fn garbage_frames_on_the_sasl_listener_close_only_their_connection() {
    let running = start(quick()).await;
    let mut frames: Vec<Vec<u8>> = vec![
        // A negative size.
        vec![0xff, 0xff, 0xff, 0xff],
        // Shorter than a request header.
        vec![0, 0, 0, 3, 1, 2, 3],
        // A TLS ClientHello sent to the plain-TCP SASL listener (its "size" is ~369 MB).
        vec![
            0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
        ],
    ];
    // An unknown API key, and a SaslHandshake whose body is cut short.
    for (key, version, body) in [(999i16, 0i16, &b""[..]), (17, 1, &b"\x00\x10PL"[..])] {
        let mut frame = Vec::new();
        frame.extend_from_slice(&key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&7i32.to_be_bytes());
        frame.extend_from_slice(&(-1i16).to_be_bytes());
        frame.extend_from_slice(body);
        let mut sized = (frame.len() as u32).to_be_bytes().to_vec();
        sized.extend(frame);
        frames.push(sized);
    }
    // Random bytes in a frame of plausible size.
    let mut rng = fastrand::Rng::with_seed(26);
    let mut random = 300u32.to_be_bytes().to_vec();
    random.extend((0..300).map(|_| rng.u8(..)));
    frames.push(random);
    for frame in frames {
        let mut raw = Raw::connect(running.sasl).await;
        raw.stream.write_all(&frame).await.unwrap();
        assert!(raw.is_closed().await, "{frame:?}");
        serves_a_good_client(running.sasl).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn a_plaintext_listener_answers_sasl_requests_illegal_sasl_state() {
    let running = start(quick()).await;
    let mut raw = Raw::connect(running.plain).await;
    assert_eq!(raw.handshake("PLAIN").await, ILLEGAL_SASL_STATE);
    let (code, ..) = raw.authenticate(b"\0alice\0secret").await.unwrap();
    assert_eq!(code, ILLEGAL_SASL_STATE);
    assert!(raw.metadata().await, "the connection goes on");
    running.stop().await;
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_cut_off() {
    let running = start(SaslConfig {
        max_failures_per_address: 3,
        failure_window: Duration::from_secs(600),
        failed_authentication_delay: Duration::from_millis(10),
        ..SaslConfig::default()
    })
    .await;
    for _ in 0..3 {
        let mut raw = Raw::connect(running.sasl).await;
        assert_eq!(raw.scram_login("alice", "wrong").await, Err(FAILED));
        assert!(raw.is_closed().await);
    }
    // The fourth try from this address is closed at its handshake, without an answer —
    // even with the right password.
    let mut raw = Raw::connect(running.sasl).await;
    raw.send(
        ApiKey::SaslHandshake,
        1,
        RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        ),
    )
    .await;
    assert!(raw.answer(ApiKey::SaslHandshake, 1).await.is_none());
    running.stop().await;
}

#[tokio::test]
async fn sessions_expire_unless_re_authenticated() {
    let lifetime = Duration::from_millis(1500);
    let running = start(SaslConfig {
        connections_max_reauth: lifetime,
        ..quick()
    })
    .await;
    // No re-authentication: served until the session ends, closed at the next request.
    let mut lazy = Raw::connect(running.sasl).await;
    assert_eq!(lazy.scram_login("alice", "secret").await, Ok(1500));
    assert!(lazy.metadata().await);
    // Re-authenticating twice within each lifetime.
    let mut diligent = Raw::connect(running.sasl).await;
    assert_eq!(diligent.scram_login("alice", "secret").await, Ok(1500));
    for _ in 0..2 {
        tokio::time::sleep(lifetime / 2 + Duration::from_millis(100)).await;
        assert_eq!(diligent.scram_login("alice", "secret").await, Ok(1500));
        assert!(diligent.metadata().await);
    }
    // Both are now past the first session's end.
    assert!(!lazy.metadata().await, "expired session closed");
    assert!(diligent.metadata().await, "re-authenticated session served");

    // Re-authenticating as someone else is refused.
    let store = running.broker.credentials().clone();
    tokio::task::spawn_blocking(move || {
        let c = ScramCredential::new(ScramMechanism::Sha512, "pw", 4096).unwrap();
        store
            .alter(vec![CredentialChange::Upsert {
                user: "bob".to_owned(),
                mechanism: SaslMechanism::ScramSha512,
                credential: StoredCredential {
                    salt: c.salt,
                    iterations: c.iterations,
                    stored_key: c.stored_key,
                    server_key: c.server_key,
                },
            }])
            .unwrap();
    })
    .await
    .unwrap();
    let mut switcher = Raw::connect(running.sasl).await;
    assert_eq!(switcher.scram_login("alice", "secret").await, Ok(1500));
    assert_eq!(switcher.scram_login("bob", "pw").await, Err(FAILED));
    assert!(switcher.is_closed().await);
    running.stop().await;
}

#[tokio::test]
async fn without_reauth_a_second_handshake_is_illegal_and_the_session_lasts() {
    let running = start(quick()).await;
    let mut raw = Raw::connect(running.sasl).await;
    assert_eq!(raw.scram_login("alice", "secret").await, Ok(0));
    assert_eq!(raw.handshake("SCRAM-SHA-512").await, ILLEGAL_SASL_STATE);
    assert!(raw.metadata().await);
    running.stop().await;
}

#[tokio::test]
async fn scram_credentials_are_managed_through_the_admin_apis() {
    let running = start(quick()).await;
    let mut admin = login(
        running.sasl,
        &security(SaslMechanism::Plain, "alice", "secret"),
    )
    .await
    .unwrap();
    let m = ScramMechanism::Sha256;
    let salt = b"0123456789abcdef".to_vec();
    let salted = m.salted_password(b"carols-pw", &salt, 4096);
    let answer = admin
        .call(
            AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("carol"))
                    .with_mechanism(m.kafka_type())
                    .with_iterations(4096)
                    .with_salt(salt.clone().into())
                    .with_salted_password(salted.into()),
                ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("dave"))
                    .with_mechanism(m.kafka_type())
                    .with_iterations(100)
                    .with_salt(salt.into())
                    .with_salted_password(vec![0; 32].into()),
            ]),
        )
        .await
        .unwrap();
    let codes: Vec<(String, i16)> = answer
        .results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![("carol".to_owned(), 0), ("dave".to_owned(), 93)]
    );
    // Carol logs in at once, with SCRAM-SHA-256 and PLAIN.
    for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::Plain] {
        login(running.sasl, &security(mechanism, "carol", "carols-pw"))
            .await
            .unwrap();
    }
    let described = admin
        .call(DescribeUserScramCredentialsRequest::default())
        .await
        .unwrap();
    let users: Vec<(String, Vec<(i8, i32)>)> = described
        .results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.credential_infos
                    .iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        users,
        vec![
            ("alice".to_owned(), vec![(1, 4096), (2, 4096)]),
            ("carol".to_owned(), vec![(1, 4096)]),
        ]
    );
    let deletion = |name: &'static str| {
        AlterUserScramCredentialsRequest::default().with_deletions(vec![
            ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str(name))
                .with_mechanism(m.kafka_type()),
        ])
    };
    let answer = admin.call(deletion("carol")).await.unwrap();
    assert_eq!(answer.results[0].error_code, 0);
    let answer = admin.call(deletion("carol")).await.unwrap();
    assert_eq!(answer.results[0].error_code, 91, "RESOURCE_NOT_FOUND");
    assert!(matches!(
        login(
            running.sasl,
            &security(SaslMechanism::ScramSha256, "carol", "carols-pw")
        )
        .await,
        Err(ClientError::Authentication { .. })
    ));
    running.stop().await;
}
