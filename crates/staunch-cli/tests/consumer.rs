//! The consumer's retry / dead-letter suite (`crates/staunch-consumer/tests/consumer/suite.rs`,
//! the same code its embedded-broker tests run) over the network: `staunch-consumer` on
//! `staunch-client` against a real `staunch serve` child process.
//!
//! - default policy: ten deliveries, then `<topic>.DLT` with the `staunch.dlt.*` headers;
//! - exponential back-off: three deliveries spaced at least as configured, then the DLT;
//! - blocking retry holds the next record; retry topics let it through;
//! - a consumer restarted mid-retry continues the attempt count from the committed metadata.

#![allow(dead_code)]

mod common;

#[path = "../../staunch-consumer/tests/consumer/suite.rs"]
mod suite;
#[path = "../../staunch-consumer/tests/consumer/support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::Staunch;
use staunch_client::{Client, ClientConfig};

/// Runs `body` against a fresh `staunch serve` child through a network client.
fn over_the_network<F, Fut>(body: F)
where
    F: FnOnce(Arc<Client>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            Client::connect(vec![staunch.bootstrap()], ClientConfig::default()),
        )
        .await
        .expect("connect in time")
        .expect("client connects");
        tokio::time::timeout(Duration::from_secs(120), body(Arc::new(client)))
            .await
            .expect("the suite case finished within its bound");
    });
    drop(staunch);
}

#[test]
fn default_policy_ten_deliveries_then_dlt() {
    over_the_network(|api| suite::default_policy(api, "orders"));
}

#[test]
fn exponential_backoff_three_deliveries_then_dlt() {
    over_the_network(|api| suite::exponential_backoff(api, "exp"));
}

#[test]
fn blocking_retry_holds_the_next_record() {
    over_the_network(|api| suite::head_of_line_blocking(api, "hol"));
}

#[test]
fn retry_topics_let_the_next_record_through() {
    over_the_network(|api| suite::retry_topics_do_not_block(api, "rt"));
}

#[test]
fn restart_mid_retry_continues_the_count() {
    over_the_network(|api| suite::restart_mid_retry(api, "restart"));
}
