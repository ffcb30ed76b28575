//! The producer outbox's replay over a log of arbitrary entries, stamps and markers.
//!
//! The input is a program writing records into an outbox log (an in-memory disk), each record
//! at the next offset from 0; then the log is read as opening the outbox reads it
//! (`staunch_producer::outbox::replay_plan`). Op bytes, until the input ends:
//!
//! - `0`: an entry: topic (selector byte: below 200 `t0`–`t3`, else raw bytes), partition header
//!   (selector: 0 null, 1 an `i32`, 2 raw bytes), key and value (selector byte: 0 null, else a
//!   length byte and bytes), up to 2 headers of its own;
//! - `1`: a stamp: producer id (`i64`), epoch (`i16`), base sequence, partition (`i32`), then up
//!   to 7 entry offsets (a byte each);
//! - `2` / `3`: an acknowledged / done marker listing up to 7 offsets (a byte each), and 0–7
//!   trailing bytes;
//! - `4`: a record with raw headers (up to 3, each a raw key and value) and a raw value;
//! - `5`: the end of the current batch;
//! - anything else is skipped.
//!
//! Checks:
//! - the replay never panics;
//! - it fails exactly when an entry cannot be decoded (no topic and partition headers first, a
//!   topic that is not UTF-8, a partition header not 4 bytes long) or a stamp is shorter than
//!   its 18 fixed bytes;
//! - otherwise every entry ends in exactly one place: finished (a marker lists it), known
//!   acknowledged, in a stamped batch, or a record to send as new — none is lost or doubled;
//! - every record handed back is the entry as written (topic, partition, key, value, headers,
//!   timestamp);
//! - every stamped batch is a stamp as written — same partition, identity, base sequence and
//!   exactly its entries in its order — and its entries share one topic.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use staunch_core::{BatchBuilder, ManualClock, ProducerIdentity};
use staunch_fuzz::Input;
use staunch_log::{FileLog, LogConfig, LogStore};
use staunch_producer::outbox::{
    ACKED_HEADER, DONE_HEADER, PARTITION_HEADER, STAMP_HEADER, TOPIC_HEADER, replay_plan,
};
use staunch_producer::{Header, ProducerRecord};
use staunch_testkit::FaultyIo;

const TS: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
struct Written {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    partition: i32,
    identity: ProducerIdentity,
    base_sequence: i32,
    offsets: Vec<i64>,
}

#[derive(Default)]
struct Model {
    /// Entry offset -> the record it decodes to.
    entries: BTreeMap<i64, ProducerRecord>,
    finished: BTreeSet<i64>,
    stamps: Vec<Stamp>,
    fails: bool,
}

fn optional(input: &mut Input<'_>) -> Option<Vec<u8>> {
    match input.byte() {
        0 => None,
        _ => Some(input.short().to_vec()),
    }
}

fn offsets(input: &mut Input<'_>) -> Vec<i64> {
    let n = input.byte() % 8;
    (0..n).map(|_| i64::from(input.byte())).collect()
}

fn encode_offsets(offsets: &[i64]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_be_bytes()).collect()
}

fn parse(input: &mut Input<'_>) -> Vec<Vec<Written>> {
    let mut batches: Vec<Vec<Written>> = vec![Vec::new()];
    let mut n = 0i64;
    while !input.is_empty() {
        let timestamp = TS + n;
        let record = match input.byte() {
            0 => {
                let topic = match input.byte() {
                    b @ 0..200 => format!("t{}", b % 4).into_bytes(),
                    _ => input.short().to_vec(),
                };
                let partition = match input.byte() % 3 {
                    0 => None,
                    1 => Some(input.i32().to_be_bytes().to_vec()),
                    _ => Some(input.short().to_vec()),
                };
                let key = optional(input);
                let value = optional(input);
                let mut headers = vec![
                    (TOPIC_HEADER.as_bytes().to_vec(), Some(topic)),
                    (PARTITION_HEADER.as_bytes().to_vec(), partition),
                ];
                for _ in 0..input.byte() % 3 {
                    headers.push((input.short().to_vec(), optional(input)));
                }
                Written {
                    key,
                    value,
                    headers,
                    timestamp,
                }
            }
            1 => {
                let mut value = Vec::new();
                value.extend_from_slice(&input.i64().to_be_bytes());
                value.extend_from_slice(input.bytes(2));
                value.extend_from_slice(&input.i32().to_be_bytes());
                value.extend_from_slice(&input.i32().to_be_bytes());
                value.extend_from_slice(&encode_offsets(&offsets(input)));
                marker(STAMP_HEADER, value, timestamp)
            }
            op @ (2 | 3) => {
                let mut value = encode_offsets(&offsets(input));
                let trailing = usize::from(input.byte() % 8);
                value.extend_from_slice(input.bytes(trailing));
                let header = if op == 2 { ACKED_HEADER } else { DONE_HEADER };
                marker(header, value, timestamp)
            }
            4 => {
                let headers = (0..input.byte() % 4)
                    .map(|_| (input.short().to_vec(), optional(input)))
                    .collect();
                Written {
                    key: None,
                    value: optional(input),
                    headers,
                    timestamp,
                }
            }
            5 => {
                batches.push(Vec::new());
                continue;
            }
            _ => continue,
        };
        batches.last_mut().expect("a batch").push(record);
        n += 1;
    }
    batches.retain(|b| !b.is_empty());
    batches
}

fn marker(header: &str, value: Vec<u8>, timestamp: i64) -> Written {
    Written {
        key: None,
        value: Some(value),
        headers: vec![(header.as_bytes().to_vec(), None)],
        timestamp,
    }
}

fn decode_offsets(value: &[u8]) -> Vec<i64> {
    value
        .chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

impl Model {
    fn apply(&mut self, offset: i64, w: &Written) {
        let value = w.value.clone().unwrap_or_default();
        match w.headers.first() {
            Some((k, _)) if k == DONE_HEADER.as_bytes() || k == ACKED_HEADER.as_bytes() => {
                self.finished.extend(decode_offsets(&value));
            }
            Some((k, _)) if k == STAMP_HEADER.as_bytes() => {
                if value.len() < 18 {
                    self.fails = true;
                    return;
                }
                self.stamps.push(Stamp {
                    identity: ProducerIdentity {
                        id: i64::from_be_bytes(value[0..8].try_into().unwrap()),
                        epoch: i16::from_be_bytes(value[8..10].try_into().unwrap()),
                    },
                    base_sequence: i32::from_be_bytes(value[10..14].try_into().unwrap()),
                    partition: i32::from_be_bytes(value[14..18].try_into().unwrap()),
                    offsets: decode_offsets(&value[18..]),
                });
            }
            _ => match entry(w) {
                Some(record) => {
                    self.entries.insert(offset, record);
                }
                None => self.fails = true,
            },
        }
    }
}

/// The record an entry decodes to, by the format the outbox documents.
fn entry(w: &Written) -> Option<ProducerRecord> {
    let [(t, Some(topic)), (p, partition), own @ ..] = &w.headers[..] else {
        return None;
    };
    if t != TOPIC_HEADER.as_bytes() || p != PARTITION_HEADER.as_bytes() {
        return None;
    }
    let topic = String::from_utf8(topic.clone()).ok()?;
    let partition = match partition {
        None => None,
        Some(be) => Some(i32::from_be_bytes(be[..].try_into().ok()?)),
    };
    Some(ProducerRecord {
        topic,
        partition,
        key: w.key.clone().map(Bytes::from),
        value: w.value.clone().map(Bytes::from),
        headers: own
            .iter()
            .map(|(k, v)| Header {
                key: String::from_utf8_lossy(k).into_owned(),
                value: v.clone().map(Bytes::from),
            })
            .collect(),
        timestamp: Some(w.timestamp),
    })
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let batches = parse(&mut Input::new(data));
    let disk = FaultyIo::new();
    // Small segments without zeros written ahead: on the in-memory disk, every fsync copies
    // the whole file, preallocation included.
    let config = LogConfig {
        retention_age: None,
        retention_bytes: None,
        segment_bytes: 1 << 20,
        max_batch_bytes: 1 << 20,
        zero_fill_bytes: 0,
        ..LogConfig::default()
    };
    let log = FileLog::open_with(Arc::new(disk), config, Arc::new(ManualClock::new(TS)))
        .expect("opening the outbox log");
    let mut model = Model::default();
    let mut offset = 0i64;
    for batch in &batches {
        let mut builder = BatchBuilder::new(TS);
        for w in batch {
            builder.push(
                w.timestamp,
                w.key.as_deref(),
                w.value.as_deref(),
                w.headers.iter().map(|(k, v)| (&k[..], v.as_deref())),
            );
            model.apply(offset, w);
            offset += 1;
        }
        let mut bytes = builder.build();
        log.append(&mut bytes, 0)
            .expect("appending to the outbox log");
    }

    let plan = match replay_plan(&log) {
        Ok(plan) => plan,
        Err(e) => {
            assert!(model.fails, "the outbox refused a readable log: {e}");
            return;
        }
    };
    assert!(
        !model.fails,
        "the outbox read a log with an unreadable entry"
    );

    // Every entry in exactly one place.
    let mut seen = BTreeSet::new();
    let mut place = |offset: i64, what: &str| {
        assert!(
            model.entries.contains_key(&offset),
            "{what} {offset} is not an entry"
        );
        assert!(seen.insert(offset), "entry {offset} handed back twice");
    };
    for (offset, record) in &plan.records {
        place(*offset, "record");
        assert!(
            !model.finished.contains(offset),
            "finished entry {offset} sent again"
        );
        assert_eq!(record, &model.entries[offset], "record at {offset}");
    }
    for (partition, identity, base_sequence, records) in &plan.batches {
        assert!(!records.is_empty(), "an empty stamped batch");
        let topic = &records[0].1.topic;
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        for (offset, record) in records {
            place(*offset, "batched record");
            assert!(
                !model.finished.contains(offset),
                "finished entry {offset} sent again"
            );
            assert_eq!(record, &model.entries[offset], "record at {offset}");
            assert_eq!(&record.topic, topic, "a stamped batch over two topics");
        }
        let stamp = Stamp {
            partition: *partition,
            identity: *identity,
            base_sequence: *base_sequence,
            offsets,
        };
        assert!(
            model.stamps.contains(&stamp),
            "stamped batch {stamp:?} is no stamp that was written"
        );
    }
    for offset in &plan.acknowledged {
        place(*offset, "acknowledged");
        assert!(
            !model.finished.contains(offset),
            "entry {offset} finished twice"
        );
    }
    for offset in model.entries.keys() {
        assert!(
            seen.contains(offset) || model.finished.contains(offset),
            "entry {offset} was lost"
        );
    }
    let _ = log.close();
}
