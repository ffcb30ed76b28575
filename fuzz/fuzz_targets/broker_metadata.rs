//! `Broker::open_with` over a data directory with one damaged metadata file.
//!
//! The in-memory disk holds topic `healthy` (a valid `topic.toml`, 2 partitions) and topic
//! `damaged`. Byte 0 picks the file the rest of the input becomes (modulo 3):
//!
//! - `0`: `topics/damaged/topic.toml`. The broker must open; `healthy` serves (no error, both
//!   partitions online); `damaged` is either offline (KAFKA_STORAGE_ERROR, no partitions) or,
//!   if the file is a valid one, online with 1 to 100,000 partitions. (A valid file asking for
//!   65 to 100,000 partitions is skipped: it is legal and only slow.)
//! - `1`: `cluster-id`. The broker must open, with the file's trimmed text as its cluster id.
//! - `2`: `producer-ids`. The broker opens exactly when the file holds a non-negative decimal
//!   `i64`.
//!
//! Never a panic. The metadata future is polled once: it must not wait for anything.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use staunch_broker::{Broker, BrokerConfig, ClusterMetadata, Storage};
use staunch_core::{ErrorCode, ManualClock};
use staunch_testkit::FaultyIo;

const HEALTHY: &str = "id = \"5f0c2a1e-8b7d-4c3e-9a61-2d4b6e8f0a13\"\npartitions = 2\n\n[config]\n\"retention.ms\" = \"60000\"\n";

fuzz_target!(|data: &[u8]| run(data));

fn metadata(broker: &Broker) -> ClusterMetadata {
    let mut future = pin!(broker.metadata(None, false));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(metadata) => metadata,
        Poll::Pending => panic!("metadata of the known topics waited"),
    }
}

/// A valid-looking topic.toml asking for many partitions: legal, and only slow to open.
fn many_partitions(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    table
        .get("partitions")
        .and_then(toml::Value::as_integer)
        .is_some_and(|n| (65..=100_000).contains(&n))
}

fn run(data: &[u8]) {
    let (which, bytes) = match data.split_first() {
        Some((&w, rest)) => (w % 3, rest),
        None => (0, data),
    };
    if which == 0 && many_partitions(bytes) {
        return;
    }
    let disk = FaultyIo::new();
    disk.subdir("topics/healthy")
        .put_file("topic.toml", HEALTHY.as_bytes());
    disk.subdir("topics/damaged")
        .put_file("topic.toml", HEALTHY.replace("5f0c", "6f0c").as_bytes());
    match which {
        0 => disk.subdir("topics/damaged").put_file("topic.toml", bytes),
        1 => disk.put_file("cluster-id", bytes),
        _ => disk.put_file("producer-ids", bytes),
    }
    let storage = Storage::new(
        Arc::new(disk),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    );
    let broker = match Broker::open_with(BrokerConfig::default(), storage) {
        Ok(broker) => broker,
        Err(e) => {
            let valid_ids = String::from_utf8_lossy(bytes)
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| n >= 0);
            assert!(
                which == 2 && !valid_ids,
                "the broker failed to open over a damaged file {which}: {e}"
            );
            return;
        }
    };
    if which == 2 {
        let valid_ids = String::from_utf8_lossy(bytes)
            .trim()
            .parse::<i64>()
            .is_ok_and(|n| n >= 0);
        assert!(valid_ids, "the broker opened over producer-ids {bytes:?}");
    }
    if which == 1 {
        assert_eq!(
            broker.cluster_id(),
            String::from_utf8_lossy(bytes).trim(),
            "cluster id"
        );
    }
    let metadata = metadata(&broker);
    assert_eq!(metadata.cluster_id, broker.cluster_id());
    let topic = |name: &str| {
        metadata
            .topics
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("topic {name} is not listed"))
    };
    let healthy = topic("healthy");
    assert_eq!(
        healthy.error,
        ErrorCode::None,
        "the healthy topic is offline"
    );
    assert_eq!(healthy.partitions.len(), 2);
    assert!(
        healthy
            .partitions
            .iter()
            .all(|p| p.error == ErrorCode::None)
    );
    let damaged = topic("damaged");
    match damaged.error {
        ErrorCode::None => {
            assert!(
                (1..=100_000).contains(&damaged.partitions.len()),
                "topic.toml made {} partitions",
                damaged.partitions.len()
            );
        }
        ErrorCode::KafkaStorageError => {
            assert!(which == 0, "a damaged {which} took a topic offline");
            assert!(damaged.partitions.is_empty());
        }
        other => panic!("the damaged topic answers {other:?}"),
    }
}
