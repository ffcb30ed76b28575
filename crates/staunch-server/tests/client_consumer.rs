//! `staunch_client::Client` as a consumer's `BrokerApi` against a real server over loopback:
//! the `broker_api_suite` checks over TCP (fetch across partitions byte for byte, long poll,
//! list offsets, topic creation, the group protocol through a rebalance — with two clients,
//! and with two members sharing one client — and committed offsets with metadata), plus
//! committed metadata surviving a server restart, read back by the same client (which must
//! find the coordinator again) and by a fresh one.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use staunch_broker::BrokerConfig;
use staunch_client::{Client, ClientConfig};
use staunch_core::api::GroupMembership;
use staunch_core::{ApiError, BrokerApi, TopicPartition};
use staunch_server::ServerConfig;
use staunch_testkit::broker_api_suite as suite;

mod common;

use common::Running;

/// The bound on every test body: a hang fails instead of stalling the run.
const LIMIT: Duration = Duration::from_secs(90);

async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, body)
        .await
        .expect("the test did not finish within its bound")
}

/// A server on `addr` (port 0: any free port) over `dir`; topics exist only when created, and
/// rebalances complete as soon as every member is in.
async fn start(dir: &std::path::Path, addr: SocketAddr) -> Running {
    let broker = BrokerConfig {
        auto_create_topics: false,
        group_initial_rebalance_delay: Duration::ZERO,
        ..BrokerConfig::default()
    };
    common::start_server(dir, addr, ServerConfig::default(), broker).await
}

async fn client(addr: SocketAddr) -> Client {
    let config = ClientConfig {
        client_id: "consumer-calls-test".to_owned(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    tokio::time::timeout(LIMIT, Client::connect(vec![addr.to_string()], config))
        .await
        .expect("connected in time")
        .expect("the server answers")
}

/// Runs `check` with a client of a fresh server, then stops the server.
async fn with_client<F: Future<Output = ()>>(check: impl FnOnce(Client, SocketAddr) -> F) {
    let dir = tempfile::tempdir().unwrap();
    bounded(async {
        let running = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
        check(client(running.addr).await, running.addr).await;
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_across_partitions_returns_the_stored_batches_byte_for_byte() {
    with_client(|client, _| async move {
        suite::fetch_returns_the_stored_batches(&client, "orders").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_over_tcp_answers_when_a_produce_on_the_same_client_lands() {
    with_client(|client, _| async move {
        suite::a_long_poll_answers_when_data_arrives(&client, "events").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_over_tcp() {
    with_client(|client, _| async move {
        suite::list_offsets_by_spec(&client, "timed").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_on_two_clients_rebalance_and_leave() {
    with_client(|a, addr| async move {
        let b = client(addr).await;
        suite::two_members_rebalance_and_leave(&a, &b, "workers", "work").await;
    })
    .await;
}

/// Both members' blocking joins and syncs go through one client: neither waits behind the
/// other's (they would deadlock until the rebalance timeout on one shared connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_sharing_one_client_rebalance_without_waiting_on_each_other() {
    with_client(|client, _| async move {
        suite::two_members_rebalance_and_leave(&client, &client, "sharing", "shared").await;
    })
    .await;
}

/// Commits with metadata, then the server stops: group calls fail as retriable transport
/// errors, never hang. A server on the same port over the same data then has every commit,
/// metadata byte for byte — for the same client, which finds the coordinator again, and for a
/// fresh client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_metadata_survives_a_restart_and_the_coordinator_is_found_again() {
    let dir = tempfile::tempdir().unwrap();
    bounded(async {
        let running = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
        let addr = running.addr;
        let first = client(addr).await;
        suite::commit_offsets_with_metadata(&first, "orders", "retrying").await;
        running.stop().await;

        let member = GroupMembership::simple("retrying");
        let down = first
            .fetch_committed_offsets("retrying", vec![TopicPartition::new("orders", 0)])
            .await;
        let error = down[0].1.as_ref().unwrap_err();
        assert!(
            matches!(error, ApiError::NotSent { .. } | ApiError::NoAnswer { .. }),
            "{error}"
        );
        assert!(error.is_retriable());
        let error = first.heartbeat(&member).await.unwrap_err();
        assert!(error.is_retriable(), "{error}");

        let running = start(dir.path(), addr).await;
        assert_eq!(running.addr, addr);
        suite::committed_offsets_are_as_committed(&first, "orders", "retrying").await;
        let fresh = client(addr).await;
        suite::committed_offsets_are_as_committed(&fresh, "orders", "retrying").await;
        running.stop().await;
    })
    .await;
}
