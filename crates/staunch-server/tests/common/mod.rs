//! An in-process server and broker on a loopback port, shared by this crate's tests.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod requests;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use staunch_broker::{Broker, BrokerConfig, Storage};
use staunch_server::{Server, ServerConfig};
use tokio::task::JoinHandle;

/// How long stopping a server may take.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A running server over one data directory.
pub(crate) struct Running {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The broker it serves.
    pub(crate) broker: Broker,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts a server on `addr` (port 0: any free port) over the data in `dir`, with `broker`'s
/// settings except its data directory and advertised port.
pub(crate) async fn start_server(
    dir: &Path,
    addr: SocketAddr,
    server: ServerConfig,
    broker: BrokerConfig,
) -> Running {
    let storage = Storage::fs(dir);
    let broker = BrokerConfig {
        data_dir: dir.to_owned(),
        ..broker
    };
    start_server_on(storage, addr, server, broker).await
}

/// Starts a server on `addr` over a broker keeping its files in `storage` (a `FaultyIo` disk,
/// say), with `broker`'s settings except its advertised port.
pub(crate) async fn start_server_on(
    storage: Storage,
    addr: SocketAddr,
    server: ServerConfig,
    broker: BrokerConfig,
) -> Running {
    let server = Server::bind(addr, server).await.unwrap();
    let addr = server.local_addr().unwrap();
    let config = BrokerConfig {
        advertised_port: addr.port(),
        ..broker
    };
    let broker = tokio::task::spawn_blocking(move || Broker::open_with(config, storage))
        .await
        .unwrap()
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
        addr,
        broker,
        stop,
        task,
    }
}

impl Running {
    /// Stops the server (letting connections finish) and closes the broker.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(STOP_LIMIT, self.task)
            .await
            .expect("server stopped in time")
            .unwrap();
        drop(self.broker);
    }
}
