//! Accepting connections and shutting down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use staunch_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: staunch_protocol::DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
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
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            broker.clone(),
                            self.config.clone(),
                            stop_rx.clone(),
                        ));
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
