//! SSL listeners: clients connect over TLS beside a PLAINTEXT listener, client certificates
//! are checked when required (an expired one, one from an unknown CA or none is refused) and
//! name the connection's principal, a plaintext client or garbage on the TLS port is closed
//! while the broker keeps serving, and a replaced certificate is used by new connections
//! without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use staunch_broker::{Broker, BrokerConfig};
use staunch_client::kafka_protocol::messages::MetadataRequest;
use staunch_client::{ClientError, Connection, SecurityConfig, SecurityProtocol};
use staunch_server::{ClientAuth, ListenerConfig, Server, ServerConfig, ServerTls, TlsSettings};
use staunch_testkit::pki::{CertFiles, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A broker with a PLAINTEXT and an SSL listener.
struct Running {
    plain: SocketAddr,
    ssl: SocketAddr,
    tls: Arc<ServerTls>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("server stopped in time")
            .unwrap();
    }
}

async fn start(dir: &Path, tls: TlsSettings) -> Running {
    start_with(dir, tls, ServerConfig::default()).await
}

async fn start_with(dir: &Path, tls: TlsSettings, config: ServerConfig) -> Running {
    let any = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind_listeners(
        vec![
            ListenerConfig::plaintext(any),
            ListenerConfig::parse("SSL://127.0.0.1:0", &[]).unwrap(),
        ],
        ServerConfig {
            tls: Some(tls),
            ..config
        },
    )
    .await
    .unwrap();
    let listeners = server.listeners();
    let (plain, ssl) = (listeners[0].1, listeners[1].1);
    let tls = server.tls().expect("TLS configured");
    let config = BrokerConfig {
        data_dir: dir.join("data"),
        advertised_port: plain.port(),
        ..BrokerConfig::default()
    };
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .unwrap()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        server
            .run(broker.clone(), async {
                let _ = stopped.await;
            })
            .await;
        broker.shutdown().await;
    });
    Running {
        plain,
        ssl,
        tls,
        stop,
        task,
    }
}

fn settings(pki: &TestPki, auth: ClientAuth) -> TlsSettings {
    let mut settings = TlsSettings::new(&pki.server.cert, &pki.server.key);
    settings.ca_file = Some(pki.ca.clone());
    settings.client_auth = auth;
    settings.handshake_timeout = Duration::from_secs(2);
    settings.reload_interval = Duration::ZERO;
    settings
}

fn ssl(pki: &TestPki, client: Option<&CertFiles>) -> SecurityConfig {
    let mut config = SecurityConfig {
        protocol: SecurityProtocol::Ssl,
        ..SecurityConfig::default()
    };
    config.tls.ca_file = Some(pki.ca.clone());
    if let Some(client) = client {
        config.tls.cert_file = Some(client.cert.clone());
        config.tls.key_file = Some(client.key.clone());
    }
    config
}

async fn connect(
    addr: SocketAddr,
    host: &str,
    security: &SecurityConfig,
) -> Result<Connection, ClientError> {
    Connection::connect_secured(addr, host, "tls-test", TIMEOUT, security).await
}

/// The connection answers Metadata, naming the port it came in on.
async fn metadata_port(connection: &mut Connection) -> i32 {
    let metadata = connection
        .call(MetadataRequest::default().with_topics(Some(Vec::new())))
        .await
        .expect("metadata");
    metadata.brokers[0].port
}

#[tokio::test]
async fn ssl_listener_serves_beside_plaintext_and_checks_the_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let running = start(dir.path(), settings(&pki, ClientAuth::None)).await;

    let mut over_tls = connect(running.ssl, "127.0.0.1", &ssl(&pki, None))
        .await
        .expect("SSL connection by IP");
    assert_eq!(
        metadata_port(&mut over_tls).await,
        i32::from(running.ssl.port())
    );
    let mut by_name = connect(running.ssl, "localhost", &ssl(&pki, None))
        .await
        .expect("SSL connection by name");
    assert_eq!(
        metadata_port(&mut by_name).await,
        i32::from(running.ssl.port())
    );
    let mut plain = Connection::connect(running.plain, "tls-test", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        metadata_port(&mut plain).await,
        i32::from(running.plain.port())
    );

    // The certificate does not name example.com: refused unless hostname checks are off.
    let wrong_name = connect(running.ssl, "example.com", &ssl(&pki, None)).await;
    assert!(
        matches!(&wrong_name, Err(ClientError::Io { source, .. }) if source.to_string().contains("not valid for name")),
        "{wrong_name:?}"
    );
    let mut lax = ssl(&pki, None);
    lax.tls.verify_hostname = false;
    let mut lax = connect(running.ssl, "example.com", &lax)
        .await
        .expect("hostname verification off");
    metadata_port(&mut lax).await;
    // ... but the chain is still checked: the system roots do not know the test CA.
    let mut system_roots = ssl(&pki, None);
    system_roots.tls.ca_file = None;
    system_roots.tls.verify_hostname = false;
    let unknown = connect(running.ssl, "127.0.0.1", &system_roots).await;
    assert!(
        matches!(&unknown, Err(ClientError::Io { source, .. }) if source.to_string().contains("UnknownIssuer")),
        "{unknown:?}"
    );
    // A TLS client on the PLAINTEXT port fails instead of hanging.
    let cross = connect(running.plain, "127.0.0.1", &ssl(&pki, None)).await;
    assert!(cross.is_err(), "{cross:?}");
    running.stop().await;
}

#[tokio::test]
async fn required_client_certificates_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let running = start(dir.path(), settings(&pki, ClientAuth::Required)).await;

    let mut good = connect(running.ssl, "127.0.0.1", &ssl(&pki, Some(&pki.client)))
        .await
        .expect("a valid client certificate is accepted");
    metadata_port(&mut good).await;

    for (what, client) in [
        ("no certificate", None),
        ("an expired certificate", Some(&pki.expired_client)),
        ("an unknown CA's certificate", Some(&pki.unknown_client)),
    ] {
        // In TLS 1.3 the client finishes its side first; the refusal then arrives as an
        // alert instead of the ApiVersions answer. Either way the connection fails.
        let refused = connect(running.ssl, "127.0.0.1", &ssl(&pki, client)).await;
        assert!(refused.is_err(), "{what} was let in");
    }
    // The broker kept serving, the open connection and new ones.
    metadata_port(&mut good).await;
    let mut again = connect(running.ssl, "127.0.0.1", &ssl(&pki, Some(&pki.client)))
        .await
        .expect("a valid client certificate is still accepted");
    metadata_port(&mut again).await;
    running.stop().await;
}

#[tokio::test]
async fn requested_client_certificates_are_optional_but_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let running = start(dir.path(), settings(&pki, ClientAuth::Requested)).await;
    let mut anonymous = connect(running.ssl, "127.0.0.1", &ssl(&pki, None))
        .await
        .expect("no certificate is fine when only requested");
    metadata_port(&mut anonymous).await;
    let mut with_cert = connect(running.ssl, "127.0.0.1", &ssl(&pki, Some(&pki.client)))
        .await
        .expect("a valid certificate");
    metadata_port(&mut with_cert).await;
    let unknown = connect(
        running.ssl,
        "127.0.0.1",
        &ssl(&pki, Some(&pki.unknown_client)),
    )
    .await;
    assert!(unknown.is_err(), "an unknown CA's certificate was let in");
    running.stop().await;
}

/// Reads until the peer closes, within the test timeout; returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("the broker did not close the connection within {TIMEOUT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
        assert!(seen.len() < 1 << 20, "the broker keeps sending");
    }
}

#[tokio::test]
async fn plaintext_clients_and_garbage_on_the_tls_port_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let running = start(dir.path(), settings(&pki, ClientAuth::None)).await;
    let mut good = connect(running.ssl, "127.0.0.1", &ssl(&pki, None))
        .await
        .unwrap();

    // A Kafka client speaking plaintext: an ApiVersions v0 request frame, which the
    // PLAINTEXT port answers.
    let frame = [
        0, 0, 0, 14, 0, 18, 0, 0, 0, 0, 0, 1, 0, 4, b't', b'e', b's', b't',
    ];
    let mut on_plain = TcpStream::connect(running.plain).await.unwrap();
    on_plain.write_all(&frame).await.unwrap();
    let mut size = [0u8; 4];
    on_plain.read_exact(&mut size).await.unwrap();
    assert!(
        u32::from_be_bytes(size) > 8,
        "no ApiVersions answer on PLAINTEXT"
    );
    let mut raw = TcpStream::connect(running.ssl).await.unwrap();
    raw.write_all(&frame).await.unwrap();
    let answer = read_until_closed(&mut raw).await;
    // Whatever came back (a TLS alert at most) is not a Kafka answer to the request.
    assert!(answer.len() < 64, "{answer:?}");

    let mut rng = fastrand::Rng::with_seed(26);
    for size in [1usize, 5, 300, 20_000] {
        let garbage: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        let mut raw = TcpStream::connect(running.ssl).await.unwrap();
        // The broker may close before all is written.
        let _ = raw.write_all(&garbage).await;
        read_until_closed(&mut raw).await;
    }
    // A record header of a TLS handshake, then silence: closed by the handshake timeout.
    let mut stalled = TcpStream::connect(running.ssl).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = Instant::now();
    read_until_closed(&mut stalled).await;
    assert!(started.elapsed() >= Duration::from_secs(1));

    // The broker keeps serving: the open TLS connection and new ones.
    metadata_port(&mut good).await;
    let mut again = connect(running.ssl, "127.0.0.1", &ssl(&pki, None))
        .await
        .unwrap();
    metadata_port(&mut again).await;
    running.stop().await;
}

/// The serial number of the certificate the broker at `addr` presents now.
async fn served_serial(pki: &TestPki, addr: SocketAddr) -> Vec<u8> {
    use x509_cert::der::Decode;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
    cert.tbs_certificate.serial_number.as_bytes().to_vec()
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let mut tls = settings(&pki, ClientAuth::None);
    tls.reload_interval = Duration::from_millis(100);
    let running = start(dir.path(), tls).await;
    assert_eq!(served_serial(&pki, running.ssl).await, [1]);
    let mut old = connect(running.ssl, "localhost", &ssl(&pki, None))
        .await
        .unwrap();

    // A broken replacement is refused; the old certificate stays.
    std::fs::write(&pki.server.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let refused = running.tls.reload();
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(served_serial(&pki, running.ssl).await, [1]);

    // A good one is picked up by the poller.
    let next = pki.new_server_cert("server-2", 2);
    std::fs::copy(&next.key, &pki.server.key).unwrap();
    std::fs::copy(&next.cert, &pki.server.cert).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if served_serial(&pki, running.ssl).await == [2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before still works; new ones verify against the new certificate.
    metadata_port(&mut old).await;
    let mut new = connect(running.ssl, "localhost", &ssl(&pki, None))
        .await
        .unwrap();
    metadata_port(&mut new).await;
    // Reloading unchanged files replaces nothing.
    assert!(!running.tls.reload().unwrap());
    running.stop().await;
}

/// Log lines of this test binary, for the principal the server logs per TLS connection.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("staunch_server=debug")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_client_certificate_names_the_principal() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let running = start(dir.path(), settings(&pki, ClientAuth::Requested)).await;
    let mut with_cert = connect(running.ssl, "127.0.0.1", &ssl(&pki, Some(&pki.client)))
        .await
        .unwrap();
    metadata_port(&mut with_cert).await;
    let mut without = connect(running.ssl, "127.0.0.1", &ssl(&pki, None))
        .await
        .unwrap();
    metadata_port(&mut without).await;
    running.stop().await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let principals: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("TLS handshake done"))
        .filter_map(|line| line.split("principal=").nth(1))
        .map(|rest| rest.split(' ').next().unwrap_or(rest))
        .collect();
    assert!(
        principals.contains(&"User:CN=client,O=Staunch"),
        "{principals:?}\n{logs}"
    );
    assert!(principals.contains(&"User:ANONYMOUS"), "{principals:?}");
}

fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&77i32.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// The bad-input battery of `wire.rs`, sent inside established TLS connections: each closes
/// only its own connection, unanswered, and the broker keeps serving.
#[tokio::test]
async fn bad_frames_inside_tls_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let config = ServerConfig {
        max_request_bytes: 1 << 20,
        ..ServerConfig::default()
    };
    let running = start_with(dir.path(), settings(&pki, ClientAuth::None), config).await;
    let security = ssl(&pki, None);
    let mut good = connect(running.ssl, "127.0.0.1", &security).await.unwrap();

    let mut random = vec![0u8; 4096];
    fastrand::Rng::with_seed(7).fill(&mut random);
    random[..4].copy_from_slice(&1000i32.to_be_bytes());
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1; 20]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", random, false),
        (
            "a frame claiming 2 GiB",
            i32::MAX.to_be_bytes().to_vec(),
            false,
        ),
        (
            "a negative frame size",
            (-1i32).to_be_bytes().to_vec(),
            false,
        ),
        (
            "a frame larger than the configured maximum",
            (2i32 << 20).to_be_bytes().to_vec(),
            false,
        ),
        ("an unknown API key", frame(999, 0, &[0, 0]), false),
        (
            "a known key at an unsupported version",
            frame(3, 99, &[]),
            false,
        ),
        (
            "a header shorter than 8 bytes",
            vec![0, 0, 0, 3, 0, 3, 0],
            false,
        ),
        (
            "a valid header with a malformed body",
            frame(3, 1, &[0xff, 0xff, 0x03, 0x00, 0x00, 0x00]),
            false,
        ),
        ("a truncated frame, then a hang-up", truncated, true),
    ];
    for (what, bytes, hang_up) in cases {
        let mut bad = connect(running.ssl, "127.0.0.1", &security).await.unwrap();
        bad.write_raw(&bytes).await.unwrap();
        if !hang_up {
            match bad.read_frame().await {
                Err(ClientError::Io { .. }) => {}
                other => panic!("{what}: expected the connection closed, got {other:?}"),
            }
        }
        drop(bad);
        assert_eq!(
            metadata_port(&mut good).await,
            i32::from(running.ssl.port()),
            "after {what}"
        );
        let mut fresh = connect(running.ssl, "127.0.0.1", &security).await.unwrap();
        metadata_port(&mut fresh).await;
    }
    running.stop().await;
}
