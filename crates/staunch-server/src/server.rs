//! Accepting connections and shutting down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use staunch_broker::Broker;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::admission::Admission;
use crate::budget::RequestBudget;
use crate::connection::serve_connection;
use crate::listener::ListenerConfig;
use crate::metrics::ConnectionGauge;
use crate::sasl::{SaslConfig, SaslShared};
use crate::tls::{ServerTls, TlsSettings};

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request frame accepted; a larger one closes the connection
    /// (`socket.request.max.bytes`). Default 100 MiB.
    pub max_request_bytes: usize,
    /// A connection with no request for this long is closed (`connections.max.idle.ms`).
    /// Default 10 min.
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing connections. Default 10 s.
    pub shutdown_grace: Duration,
    /// Bytes of request memory all connections together may hold: frames being read, decoded
    /// and waiting for their answer to be written (`queued.max.request.bytes`). A frame is
    /// charged its length plus the most its decoded form may take,
    /// [`staunch_protocol::decoded_bytes_limit`]: 47 times its length, at least 16 KiB and at
    /// most 64 MiB, enforced by the decoder (a frame of tiny elements that would decode to more
    /// is refused; real requests decode to a few times their size, 100,000 partitions to
    /// ~10 MiB). A charge is never more than the whole budget. When it is spent, connections
    /// are not read until answers are written. The most request memory held at once is
    /// therefore this or `max_request_bytes + 64 MiB`, whichever is larger: with the defaults,
    /// 512 MiB (a 100 MiB frame is charged 164 MiB).
    /// Default 512 MiB: room for ten 1 MiB produce requests decoding at their worst at once
    /// (48 MiB each), thousands of typical small ones, and a bound well inside a small
    /// server's memory. 0 turns the limit off.
    pub queued_max_request_bytes: usize,
    /// Requests one connection may have unanswered; it reads no further request until the
    /// oldest is answered. Default 16 (an idempotent Kafka producer keeps at most 5 in flight).
    pub max_in_flight_requests: usize,
    /// Connections served at once (`max.connections`); one more is accepted and closed at
    /// once, with a warning logged at most every 10 s. Default 10,000.
    pub max_connections: usize,
    /// Certificate, key and client-certificate settings of the SSL and SASL_SSL listeners;
    /// required when there is one. Default none.
    pub tls: Option<TlsSettings>,
    /// SASL settings of the SASL_PLAINTEXT and SASL_SSL listeners.
    pub sasl: SaslConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: staunch_protocol::DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            queued_max_request_bytes: 512 << 20,
            max_in_flight_requests: 16,
            max_connections: 10_000,
            tls: None,
            sasl: SaslConfig::default(),
        }
    }
}

/// What a connection knows of the listener it came in on.
#[derive(Debug)]
pub(crate) struct ListenerInfo {
    /// The listener as configured.
    pub(crate) config: ListenerConfig,
    /// The address actually bound.
    pub(crate) bound: SocketAddr,
    /// The TLS configuration of an SSL or SASL_SSL listener.
    pub(crate) tls: Option<Arc<ServerTls>>,
    /// SASL settings and failure counts, shared by every listener.
    pub(crate) sasl: Arc<SaslShared>,
}

/// One or more bound listeners serving one broker.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<(TcpListener, Arc<ListenerInfo>)>,
    config: Arc<ServerConfig>,
    tls: Option<Arc<ServerTls>>,
}

impl Server {
    /// Binds one PLAINTEXT listener on `addr`. Open the broker afterwards so it can advertise
    /// the bound port (see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Self> {
        Server::bind_listeners(vec![ListenerConfig::plaintext(addr)], config).await
    }

    /// Binds every listener in `listeners` (at least one; names must differ). Fails on the
    /// first that cannot be bound, or when a listener's security protocol is not available:
    /// SSL and SASL_SSL need `config.tls`, whose files must load (the error names the file).
    pub async fn bind_listeners(
        listeners: Vec<ListenerConfig>,
        config: ServerConfig,
    ) -> std::io::Result<Self> {
        let invalid =
            |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        if listeners.is_empty() {
            return Err(invalid("no listener configured".to_owned()));
        }
        let tls = match &config.tls {
            Some(settings) => Some(Arc::new(
                ServerTls::load(settings.clone()).map_err(|e| invalid(e.to_string()))?,
            )),
            None => None,
        };
        let mut bound = Vec::with_capacity(listeners.len());
        let sasl = Arc::new(SaslShared::new(config.sasl.clone()));
        for listener in listeners {
            if bound
                .iter()
                .any(|(_, info): &(TcpListener, Arc<ListenerInfo>)| {
                    info.config.name == listener.name
                })
            {
                return Err(invalid(format!(
                    "two listeners are named {}",
                    listener.name
                )));
            }
            let listener_tls = if listener.protocol.uses_tls() {
                Some(tls.clone().ok_or_else(|| {
                    invalid(format!(
                        "listener {listener}: {} needs a certificate and key \
                         (ssl_certificate_location and ssl_key_location in [tls])",
                        listener.protocol
                    ))
                })?)
            } else {
                None
            };
            let socket = TcpListener::bind(listener.addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("binding listener {listener}: {e}"))
            })?;
            let info = Arc::new(ListenerInfo {
                bound: socket.local_addr()?,
                config: listener,
                tls: listener_tls,
                sasl: sasl.clone(),
            });
            bound.push((socket, info));
        }
        Ok(Server {
            listeners: bound,
            config: Arc::new(config),
            tls,
        })
    }

    /// The TLS side of the SSL listeners, when TLS is configured: call
    /// [`ServerTls::reload_and_log`] on it to reload the certificate now (e.g. on SIGHUP).
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.clone()
    }

    /// The address actually bound by the first listener (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.listeners[0].1.bound)
    }

    /// Every listener with the address it actually bound, in configuration order.
    pub fn listeners(&self) -> Vec<(ListenerConfig, SocketAddr)> {
        self.listeners
            .iter()
            .map(|(_, info)| (info.config.clone(), info.bound))
            .collect()
    }

    /// Serves `broker` until `shutdown` resolves; then stops accepting, lets every connection finish
    /// the request it is handling (up to the grace period), and returns. The caller then shuts
    /// the broker down (flush and mark clean).
    pub async fn run(self, broker: Broker, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut admission = Admission::new(self.config.max_connections);
        let budget = RequestBudget::new(self.config.queued_max_request_bytes);
        // Each listener accepts on its own task and hands its connections over here, where
        // admission, the shared budget and shutdown are decided in one place.
        let (accepted_tx, mut accepted_rx) = mpsc::channel(1);
        let mut acceptors = JoinSet::new();
        for (listener, info) in self.listeners {
            acceptors.spawn(accept_loop(listener, info, accepted_tx.clone()));
        }
        drop(accepted_tx);
        let reloader = self.tls.as_ref().and_then(ServerTls::spawn_reloader);
        tokio::pin!(shutdown);
        // Names each connection's span.
        let mut connection_id: u64 = 0;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some((stream, peer, listener)) = accepted_rx.recv() => {
                    // Past the limit the connection is closed here, not left unserved.
                    let Some(slot) = admission.admit(peer) else {
                        drop(stream);
                        continue;
                    };
                    connection_id += 1;
                    let span = tracing::info_span!(
                        "connection",
                        id = connection_id,
                        peer = %peer,
                        listener = %listener.config.name,
                    );
                    let connection = serve_connection(
                        stream,
                        peer,
                        listener,
                        broker.clone(),
                        self.config.clone(),
                        budget.clone(),
                        stop_rx.clone(),
                    );
                    let gauge = ConnectionGauge::open();
                    connections.spawn(
                        async move {
                            connection.await;
                            drop(slot);
                            drop(gauge);
                        }
                        .instrument(span),
                    );
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        acceptors.shutdown().await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        tracing::info!(
            connections = connections.len(),
            "shutting down: finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period over; closing remaining connections");
            connections.shutdown().await;
        }
    }
}

/// Accepts connections on one listener until the receiving end is gone.
async fn accept_loop(
    listener: TcpListener,
    info: Arc<ListenerInfo>,
    accepted: mpsc::Sender<(TcpStream, SocketAddr, Arc<ListenerInfo>)>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                if accepted.send((stream, peer, info.clone())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(listener = %info.config.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
