//! Hostile load with the DEFAULT configuration (`max_request_bytes` 100 MiB,
//! `queued_max_request_bytes` 512 MiB): connections send 100 MiB frames of minimal elements,
//! with and without an unknown tagged field each, as many as the frame holds or as many as
//! the decode limit allows (see `hostile::amplifying_frame`), while a well-behaved client
//! keeps producing and fetching.
//!
//! Its own test binary, with this one test, so no other test moves the memory readings.
//!
//! The stated bound: the peak resident memory (VmHWM) stays within [`GROWTH_BOUND`] (the
//! 512 MiB budget plus 64 MiB for everything else) of the idle broker's. Each frame is
//! charged its 100 MiB plus the 64 MiB its decoded form may take, so three are held at once;
//! the decoder refuses each before it takes more than 64 MiB. Without that limit (the server
//! charging 48 times the frame, capped at the budget) a frame of plain members ran alone and
//! decoded to ~4 GB.

use bytes::Bytes;
use staunch_server::ServerConfig;

mod common;
mod hostile;

/// How far the peak resident memory may rise over the idle broker's.
const GROWTH_BOUND: usize = (512 << 20) + (64 << 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_sized_hostile_frames_leave_memory_bounded_and_a_good_client_served() {
    let server = ServerConfig::default();
    assert_eq!(server.max_request_bytes, 100 << 20);
    assert_eq!(server.queued_max_request_bytes, 512 << 20);
    // As many members as the frame holds (refused by the limit before they are allocated),
    // and as many as the limit allows (decoded, then refused), with and without tagged fields.
    let frames =
        [(false, false), (true, false), (false, true), (true, true)].map(|(tagged, at_limit)| {
            let members = at_limit.then(|| hostile::members_at_the_limit(tagged));
            Bytes::from(hostile::amplifying_frame(
                server.max_request_bytes,
                tagged,
                members,
            ))
        });
    hostile::run(hostile::Hostile {
        server,
        frames: frames.into(),
        connections: 4,
        rounds: 2,
        growth_bound: GROWTH_BOUND,
    })
    .await;
}
