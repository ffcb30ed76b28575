//! Hostile load shared by the memory tests: several connections send decode-amplifying frames
//! while a well-behaved client keeps producing and fetching, and the process's peak resident
//! memory must stay within a stated bound. Each test using it is its own test binary with
//! that one test, so no other test moves the memory readings.

use crate::common::requests::{fetch_request, one_record, produce_request};
use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_broker::BrokerConfig;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::ApiKey;
use staunch_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bound on every wait.
const LIMIT: Duration = Duration::from_secs(60);

/// One hostile-load run.
pub(crate) struct Hostile {
    /// The server's configuration.
    pub(crate) server: ServerConfig,
    /// The frames sent (size prefix included); connection `i` sends `frames[i % len]`.
    pub(crate) frames: Vec<Bytes>,
    /// Hostile connections at once.
    pub(crate) connections: usize,
    /// Frames each hostile connection sends, one connection each.
    pub(crate) rounds: usize,
    /// How far the peak resident memory may rise over the idle broker's.
    pub(crate) growth_bound: usize,
}

/// `field` of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
pub(crate) fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A LeaveGroup v4 frame (size prefix included) of `frame_len` bytes with `members` members
/// (`None`: as many as the frame holds), each 3 bytes (empty member id, null group instance
/// id, no tagged fields) that decode to 120, or with `tagged` 5 bytes (one empty unknown
/// tagged field, a B-tree node of ~540 bytes more). The last member is cut short (its member
/// id claims more bytes than the frame has; the rest of the frame is padding), so the whole
/// array is decoded before the frame is refused (and the connection closed). The same
/// raw-bytes technique as `wire.rs`'s malformed frames.
pub(crate) fn amplifying_frame(frame_len: usize, tagged: bool, members: Option<usize>) -> Vec<u8> {
    let member: &[u8] = if tagged { &[1, 0, 1, 7, 0] } else { &[1, 0, 0] };
    let mut frame = Vec::with_capacity(frame_len + 4);
    frame.extend_from_slice(&(frame_len as i32).to_be_bytes());
    frame.extend_from_slice(&(ApiKey::LeaveGroup as i16).to_be_bytes());
    frame.extend_from_slice(&4i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    frame.push(0); // header tagged fields
    frame.extend_from_slice(&[2, b'g']); // group id "g"
    let header_len = frame.len() - 4;
    let fit = (frame_len - header_len - 3 - 5) / member.len() + 1;
    let members = members.map_or(fit, |m| m.min(fit));
    let put_varint = |frame: &mut Vec<u8>, mut n: u64| {
        while n >= 0x80 {
            frame.push((n as u8) | 0x80);
            n >>= 7;
        }
        frame.push(n as u8);
    };
    put_varint(&mut frame, members as u64 + 1); // compact array: count + 1
    for _ in 1..members {
        frame.extend_from_slice(member);
    }
    // The last member: a member id longer than the frame.
    put_varint(&mut frame, frame_len as u64 + 1);
    frame.resize(frame_len + 4, 1);
    frame
}

/// The most minimal members (with `tagged`, one unknown tagged field each) whose decoded form
/// fits the decoder's largest limit (`staunch_protocol::MAX_DECODED_BYTES`): the worst frame
/// for a server with that limit, decoding to all it allows before it is refused.
pub(crate) fn members_at_the_limit(tagged: bool) -> usize {
    use staunch_client::kafka_protocol::messages::leave_group_request::MemberIdentity;
    use staunch_client::kafka_protocol::protocol::types::{
        ALLOCATION_OVERHEAD, UNKNOWN_TAGGED_FIELD_BYTES,
    };
    let per_member = std::mem::size_of::<MemberIdentity>()
        + if tagged {
            UNKNOWN_TAGGED_FIELD_BYTES
        } else {
            0
        };
    (staunch_protocol::MAX_DECODED_BYTES - ALLOCATION_OVERHEAD) / per_member
}

/// Sends `frame` on a new connection and waits for the broker to close it (it must not
/// answer a frame that does not decode).
pub(crate) async fn send_hostile(addr: std::net::SocketAddr, frame: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The broker may close before reading all of it once it refuses the frame.
    let _ = stream.write_all(frame).await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the broker answered a malformed frame with {n} bytes"),
        Err(_) => panic!("the hostile connection was still open after {LIMIT:?}"),
    }
}

/// Starts a server with `hostile.server`, sends the hostile frames while a good client
/// produces and fetches (every answer checked), and asserts the peak resident memory rose at
/// most `hostile.growth_bound` over the idle broker's.
pub(crate) async fn run(hostile: Hostile) {
    let dir = tempfile::tempdir().unwrap();
    let any_port = "127.0.0.1:0".parse().unwrap();
    let running = crate::common::start_server(
        dir.path(),
        any_port,
        hostile.server,
        BrokerConfig::default(),
    )
    .await;
    let mut good = Connection::connect(running.addr, "good", Duration::from_secs(20))
        .await
        .unwrap();
    // Warm up the good path (topic created, buffers allocated) before the baseline.
    let first = good
        .call(produce_request("steady", -1, one_record(b"0")))
        .await
        .unwrap();
    assert_eq!(first.responses[0].partition_responses[0].error_code, 0);
    let baseline = status_bytes("VmRSS:");

    let tasks: Vec<_> = (0..hostile.connections)
        .map(|i| {
            let frame = hostile.frames[i % hostile.frames.len()].clone();
            let rounds = hostile.rounds;
            let addr = running.addr;
            tokio::spawn(async move {
                for _ in 0..rounds {
                    send_hostile(addr, &frame).await;
                }
            })
        })
        .collect();

    // The good client keeps producing and reading back while the hostile frames are handled.
    let started = Instant::now();
    let mut served = 0usize;
    let mut next_offset = 1i64;
    // Served at least once, starting while the hostile connections are being opened.
    while served == 0 || tasks.iter().any(|h| !h.is_finished()) {
        assert!(
            started.elapsed() < LIMIT * 3,
            "hostile load still running after {:?}",
            LIMIT * 3
        );
        assert!(served < 100_000, "bounded loop");
        let value = format!("v{served}");
        let produced = good
            .call(produce_request("steady", -1, one_record(value.as_bytes())))
            .await
            .unwrap();
        let p = &produced.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce during hostile load");
        assert_eq!(p.base_offset, next_offset);
        let fetched = good
            .call(fetch_request("steady", next_offset, 0))
            .await
            .unwrap();
        let partition = &fetched.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "fetch during hostile load");
        let records = partition.records.clone().unwrap_or_default();
        let batch = staunch_core::batch::batches(&records)
            .next()
            .expect("the record just produced")
            .unwrap();
        let record = batch.records().unwrap().next().unwrap().unwrap();
        assert_eq!(record.value, Some(value.as_bytes()));
        next_offset += 1;
        served += 1;
    }
    for h in tasks {
        h.await.unwrap();
    }
    let peak = status_bytes("VmHWM:");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "resident memory: {} MiB idle, {} MiB peak (growth {} MiB, bound {} MiB); \
         the good client was served {served} produce + fetch pairs",
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        hostile.growth_bound >> 20
    );
    assert!(
        growth <= hostile.growth_bound,
        "peak resident memory rose {} MiB over the idle broker's, over the bound of {} MiB",
        growth >> 20,
        hostile.growth_bound >> 20
    );
    running.stop().await;
}
