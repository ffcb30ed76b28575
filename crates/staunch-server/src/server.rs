//! Accepting connections and shutting down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use staunch_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admission::Admission;
use crate::budget::RequestBudget;
use crate::connection::serve_connection;

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
        }
    }
}

/// A bound listener serving one broker.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Arc<ServerConfig>,
}

impl Server {
    /// Binds `addr`. Open the broker afterwards so it can advertise the bound port (see
    /// [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            config: Arc::new(config),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `broker` until `shutdown` resolves; then stops accepting, lets every connection finish
    /// the request it is handling (up to the grace period), and returns. The caller then shuts
    /// the broker down (flush and mark clean).
    pub async fn run(self, broker: Broker, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut admission = Admission::new(self.config.max_connections);
        let budget = RequestBudget::new(self.config.queued_max_request_bytes);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Past the limit the connection is closed here, not left unserved.
                        let Some(slot) = admission.admit(peer) else {
                            drop(stream);
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let connection = serve_connection(
                            stream,
                            peer,
                            broker.clone(),
                            self.config.clone(),
                            budget.clone(),
                            stop_rx.clone(),
                        );
                        connections.spawn(async move {
                            connection.await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE; back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
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
