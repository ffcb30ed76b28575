//! Hostile load with small frames: several connections send the worst decode-amplifying
//! frame known (see `vendor/kafka-protocol/PATCHES.md` and `src/budget.rs`) while a
//! well-behaved client keeps producing and fetching; the process's peak resident memory stays
//! under the stated bound.
//!
//! Its own test binary, with this one test, so no other test moves the memory readings.
//!
//! The stated bound, for this configuration (`max_request_bytes` 2 MiB,
//! `queued_max_request_bytes` 128 MiB, eight hostile connections): the peak resident memory
//! (VmHWM) stays within [`GROWTH_BOUND`] (192 MiB: the budget plus 64 MiB for everything else)
//! of the resident memory of the idle broker. Each hostile frame decodes to the 64 MiB decode
//! limit (all the members it allows, then one cut short) and is charged 66 MiB, so only one
//! decodes at a time; with the budget off, several decode at once and the peak goes past the
//! bound.

use bytes::Bytes;
use staunch_server::ServerConfig;

mod common;
mod hostile;

/// Largest request frame of this test's server.
const MAX_REQUEST_BYTES: usize = 2 << 20;
/// This test's request budget.
const BUDGET: usize = 128 << 20;
/// How far the peak resident memory may rise over the idle broker's.
const GROWTH_BOUND: usize = BUDGET + (64 << 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_frames_leave_memory_bounded_and_a_good_client_served() {
    hostile::run(hostile::Hostile {
        server: ServerConfig {
            max_request_bytes: MAX_REQUEST_BYTES,
            queued_max_request_bytes: BUDGET,
            ..ServerConfig::default()
        },
        frames: vec![Bytes::from(hostile::amplifying_frame(
            MAX_REQUEST_BYTES,
            false,
            Some(hostile::members_at_the_limit(false)),
        ))],
        connections: 8,
        rounds: 2,
        growth_bound: GROWTH_BOUND,
    })
    .await;
}
