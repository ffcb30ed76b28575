//! The committed-offsets store replaying a log of arbitrary records.
//!
//! The input is a program that writes record batches into the offsets log
//! (`consumer-offsets/` on an in-memory disk), then opens `OffsetStore` over it. Byte 0 is a set
//! of flags (bit 0: open with compaction after every record and 4 KiB segments, else with
//! none and 64 KiB segments; bit 1: compress every batch with gzip, which the store cannot
//! read). Then, until the input ends, an op byte:
//!
//! - `0`: a commit: group (`g` + 1 byte), topic (`t` + 1 byte), partition (byte), offset
//!   (`i64`), leader epoch (`i32`), commit time (`i64`), metadata (length byte + raw bytes,
//!   possibly not UTF-8);
//! - `1`: a deletion (null value) of such a key;
//! - `2`: a record whose key and value are raw bytes (length byte each; a value length of 255
//!   is a null value);
//! - `3`: the end of the current batch (a batch holds at most 64 records);
//! - anything else is skipped.
//!
//! A model replays the same records by the format the `offsets` module documents (trailing
//! bytes after a key's partition or a value's metadata are ignored, as there). Checks:
//! - the open never panics;
//! - it fails only if a record's key names no readable group or a batch cannot be read
//!   (compressed), and then fails;
//! - otherwise every group the model saw a malformed record for (whose latest record of that
//!   key was malformed, or whose key was malformed past the group name) is offline: `get`,
//!   `all` and `write` fail; every other group serves exactly the model's offsets;
//!   `groups()` lists the model's groups;
//! - a commit to a fresh group is durable and, after a reopen (which may compact first), every
//!   group is as before.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use staunch_broker::offsets::OffsetStore;
use staunch_broker::{CommittedOffset, Storage};
use staunch_core::batch::Compression;
use staunch_core::{BatchBuilder, ManualClock};
use staunch_fuzz::{Input, offsets_key, offsets_value};
use staunch_log::{LogConfig, LogStore};
use staunch_testkit::FaultyIo;

const PATH: &str = "consumer-offsets";

type Record = (Option<Vec<u8>>, Option<Vec<u8>>);

fuzz_target!(|data: &[u8]| run(data));

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

fn take_str(buf: &mut &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(take(buf, 4)?.try_into().ok()?) as usize;
    String::from_utf8(take(buf, len)?.to_vec()).ok()
}

fn model_key(mut key: &[u8]) -> Result<(String, String, i32), Option<String>> {
    let group = take_str(&mut key).ok_or(None)?;
    let rest = (|| {
        let topic = take_str(&mut key)?;
        let partition = i32::from_be_bytes(take(&mut key, 4)?.try_into().ok()?);
        Some((topic, partition))
    })();
    match rest {
        Some((topic, partition)) => Ok((group, topic, partition)),
        None => Err(Some(group)),
    }
}

fn model_value(mut value: &[u8]) -> Option<CommittedOffset> {
    let offset = i64::from_be_bytes(take(&mut value, 8)?.try_into().ok()?);
    let leader_epoch = i32::from_be_bytes(take(&mut value, 4)?.try_into().ok()?);
    let commit_time_ms = i64::from_be_bytes(take(&mut value, 8)?.try_into().ok()?);
    let metadata = take_str(&mut value)?;
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_time_ms,
    })
}

#[derive(Default)]
struct Model {
    /// The whole store must fail to open.
    fails: bool,
    groups: BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    damaged_keys: BTreeSet<(String, String, i32)>,
    damaged_groups: BTreeSet<String>,
}

impl Model {
    fn apply(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key else {
            self.fails = true;
            return;
        };
        let (group, topic, partition) = match model_key(key) {
            Ok(k) => k,
            Err(Some(group)) => {
                self.damaged_groups.insert(group);
                return;
            }
            Err(None) => {
                self.fails = true;
                return;
            }
        };
        let k = (group.clone(), topic.clone(), partition);
        match value {
            Some(value) => match model_value(value) {
                Some(committed) => {
                    self.damaged_keys.remove(&k);
                    self.groups
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), committed);
                }
                None => {
                    self.damaged_keys.insert(k);
                }
            },
            None => {
                self.damaged_keys.remove(&k);
                if let Some(offsets) = self.groups.get_mut(&group) {
                    offsets.remove(&(topic, partition));
                    if offsets.is_empty() {
                        self.groups.remove(&group);
                    }
                }
            }
        }
    }

    fn offline(&self) -> BTreeSet<String> {
        let mut offline = self.damaged_groups.clone();
        offline.extend(self.damaged_keys.iter().map(|(g, _, _)| g.clone()));
        offline
    }
}

fn name(prefix: &str, b: u8) -> Vec<u8> {
    format!("{prefix}{}", b % 8).into_bytes()
}

fn parse(input: &mut Input<'_>) -> Vec<Vec<Record>> {
    let mut batches = vec![Vec::new()];
    while !input.is_empty() {
        let record = match input.byte() {
            0 => {
                let (g, t, p) = (input.byte(), input.byte(), input.byte());
                let (offset, epoch, time) = (input.i64(), input.i32(), input.i64());
                let metadata = input.short();
                let key = offsets_key(&name("g", g), &name("t", t), i32::from(p % 4));
                Some((
                    Some(key),
                    Some(offsets_value(offset, epoch, time, metadata)),
                ))
            }
            1 => {
                let (g, t, p) = (input.byte(), input.byte(), input.byte());
                Some((
                    Some(offsets_key(&name("g", g), &name("t", t), i32::from(p % 4))),
                    None,
                ))
            }
            2 => {
                let key = input.short().to_vec();
                let value = match input.byte() {
                    255 => None,
                    n => Some(input.bytes(usize::from(n)).to_vec()),
                };
                Some((Some(key), value))
            }
            3 => {
                batches.push(Vec::new());
                None
            }
            _ => None,
        };
        if let Some(record) = record {
            let current = batches.last_mut().expect("one batch at least");
            if current.len() == 64 {
                batches.push(Vec::new());
            }
            batches.last_mut().expect("one batch at least").push(record);
        }
    }
    batches.retain(|b| !b.is_empty());
    batches
}

/// `OffsetStore::open` with small segments (on the in-memory disk every fsync copies the whole
/// file, and the default 16 MiB segments are zero-filled 8 MiB ahead): never compacting, or
/// compacting after every record with 4 KiB segments.
fn open(storage: &Storage, compacting: bool) -> Result<OffsetStore, String> {
    if compacting {
        OffsetStore::open_compacting(storage, PATH, 1, 4096)
    } else {
        OffsetStore::open_compacting(storage, PATH, u64::MAX, 64 << 10)
    }
}

fn check(store: &OffsetStore, model: &Model, offline: &BTreeSet<String>) {
    for group in offline {
        assert!(
            store.get(group, "t0", 0).is_err(),
            "group {group} is damaged but online"
        );
        assert!(
            store.all(group).is_err(),
            "group {group} is damaged but online"
        );
    }
    for (group, offsets) in &model.groups {
        if offline.contains(group) {
            continue;
        }
        let all = store
            .all(group)
            .unwrap_or_else(|e| panic!("group {group} is offline: {e}"));
        let expected: Vec<_> = offsets
            .iter()
            .map(|((t, p), c)| (t.clone(), *p, c.clone()))
            .collect();
        assert_eq!(all, expected, "offsets of group {group}");
        for ((topic, partition), committed) in offsets {
            assert_eq!(
                store.get(group, topic, *partition).unwrap().as_ref(),
                Some(committed)
            );
        }
    }
    let groups: Vec<String> = model.groups.keys().cloned().collect();
    assert_eq!(store.groups(), groups);
}

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let compacting = flags & 1 != 0;
    let compressed = flags & 2 != 0;
    let written = parse(&mut input);

    let disk = FaultyIo::new();
    let storage = Storage::new(
        Arc::new(disk),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    );
    let mut model = Model::default();
    {
        let log = storage
            .open_log(
                PATH,
                LogConfig {
                    segment_bytes: 1 << 20,
                    max_batch_bytes: 1 << 20,
                    zero_fill_bytes: 0,
                    ..LogConfig::default()
                },
            )
            .expect("opening the offsets log to write it");
        for batch in &written {
            let mut builder = BatchBuilder::new(1_700_000_000_000);
            if compressed {
                builder = builder.compression(Compression::Gzip);
            }
            for (key, value) in batch {
                builder = builder.record(key.as_deref(), value.as_deref());
                model.apply(key.as_deref(), value.as_deref());
            }
            let mut bytes = builder.build();
            log.append(&mut bytes, 0)
                .expect("appending to the offsets log");
        }
        log.close().expect("closing the offsets log");
    }
    if compressed && !written.is_empty() {
        model.fails = true;
    }

    let store = match open(&storage, compacting) {
        Ok(store) => store,
        Err(e) => {
            assert!(model.fails, "the store failed to open: {e}");
            return;
        }
    };
    assert!(
        !model.fails,
        "the store opened over a record naming no group"
    );
    let offline = model.offline();
    check(&store, &model, &offline);
    for group in &offline {
        let commit = [("t0".to_owned(), 0, None)];
        assert!(
            store.write(group, &commit).is_err(),
            "a write to damaged group {group}"
        );
    }

    // A commit to a healthy group (compaction may run after it), then a reopen.
    if offline.contains("fresh") {
        return;
    }
    let fresh = CommittedOffset {
        offset: 42,
        leader_epoch: 1,
        metadata: "fresh".into(),
        commit_time_ms: 7,
    };
    store
        .write("fresh", &[("t".into(), 0, Some(fresh.clone()))])
        .unwrap_or_else(|e| panic!("a commit to a fresh group failed: {e}"));
    model
        .groups
        .entry("fresh".into())
        .or_default()
        .insert(("t".into(), 0), fresh);
    store.close().expect("closing the store");
    drop(store);
    let store = open(&storage, compacting).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    check(&store, &model, &offline);
    let _ = store.close();
}
