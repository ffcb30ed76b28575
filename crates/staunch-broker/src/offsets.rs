//! Committed consumer offsets, stored durably in an internal log and reloaded on open.
//!
//! Commits are record batches in `<data_dir>/consumer-offsets/` (a commit of many partitions
//! takes several, each at most half the log's largest batch), a log with flush `always`
//! and no time or size retention: a commit is on disk before it is acknowledged, and a group
//! that commits rarely never loses its position. Each record's key names (group, topic,
//! partition); its value holds the offset, the leader epoch, the commit time and the client's
//! metadata string (the consumer retry layer keeps attempt counts there). A deletion is a record
//! with a null value. The log is compacted by snapshot (see [`OffsetStore`]): every live offset
//! is written again, then the segments wholly before the snapshot are deleted.
//!
//! So that opening does not replay the whole log, every live offset is also written to a
//! snapshot file beside it (`offsets_snapshot`) at compaction and at a clean close; the open
//! loads it and replays only the records after it. A snapshot that does not validate, or that
//! lies outside the log, is ignored (logged) and the whole log replayed, which still holds
//! every live offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use staunch_core::batch::batches;
use staunch_core::{BatchBuilder, Clock, Offset};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogStore, SegmentIo, read_file, replace_file};

use crate::offsets_snapshot;
use crate::storage::Storage;

/// One committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: Offset,
    /// The leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// The client's metadata string, stored verbatim.
    pub metadata: String,
    /// When the commit was made (ms since the epoch).
    pub commit_time_ms: i64,
}

type Key = (String, i32);

/// Offsets to store for one group: (topic, partition, value or `None` to delete).
pub type OffsetWrites = Vec<(String, i32, Option<CommittedOffset>)>;

/// Every group's committed offsets: group → (topic, partition) → offset.
pub(crate) type Groups = HashMap<String, BTreeMap<Key, CommittedOffset>>;

/// The committed offsets of every group, kept in a log of their own.
///
/// The log is compacted as Kafka compacts `__consumer_offsets`: once 200,000 offset records
/// or more were appended since the last snapshot (which counts as appended; and at least
/// twice the live offsets), every live offset is written again as a snapshot and the segments wholly before it
/// are deleted — so the log's size and the replay at start-up follow the number of live
/// offsets, not the number of commits ever made.
#[derive(Debug)]
pub struct OffsetStore {
    log: FileLog,
    /// Held by every writer from its append to the change of the map, so the map changes in
    /// the log's order.
    writer: Mutex<Writer>,
    /// The offsets, as of the last durable write. Readers never wait for an fsync.
    groups: RwLock<Groups>,
    compaction: Compaction,
    /// Stamps each batch's timestamp.
    clock: Arc<dyn Clock>,
    /// Groups with a record the replay could not decode, and why. Their offsets are unknown:
    /// every read or write of them fails (never answered as "nothing committed", which would
    /// send a consumer back to its reset policy), and no compaction runs, so the damaged
    /// record is never dropped by a snapshot that could not include it.
    damaged: BTreeMap<String, String>,
    /// The log's directory, where the snapshot file goes; `None` if it could not be opened
    /// (then no snapshot is written, and every open replays the whole log).
    snapshot_dir: Option<Arc<dyn SegmentIo>>,
}

/// What the writer lock guards besides the order of writes: the counts that say when to
/// compact, kept as the map changes so a commit never walks the groups to decide.
#[derive(Debug)]
struct Writer {
    /// Offset records appended since the last snapshot began (or the log's start).
    since_snapshot: u64,
    /// Live offsets in the map, all groups together.
    live: u64,
}

/// When the offsets log is compacted, and its segment size.
#[derive(Debug, Clone, Copy)]
struct Compaction {
    /// Records appended beyond the last snapshot before the next one is written.
    after_records: u64,
    /// Segment size of the log (only whole segments are deleted).
    segment_bytes: u64,
    /// The log's largest batch: commits, deletions and snapshots are written in batches of at
    /// most half of it.
    max_batch_bytes: u32,
}

impl Default for Compaction {
    /// A snapshot every 200,000 offset records or so (about 35 MB of log) with 16 MiB segments: the
    /// log stays under ~60 MB plus the live offsets.
    fn default() -> Self {
        Compaction {
            after_records: 200_000,
            segment_bytes: 16 << 20,
            max_batch_bytes: LogConfig::default().max_batch_bytes,
        }
    }
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + topic.len() + 10);
    for part in [group, topic] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

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

/// The group a key names, when the rest of it cannot be read.
fn decode_group(mut key: &[u8]) -> Option<String> {
    take_str(&mut key)
}

fn decode_key(mut key: &[u8]) -> Option<(String, String, i32)> {
    let group = take_str(&mut key)?;
    let topic = take_str(&mut key)?;
    let partition = i32::from_be_bytes(take(&mut key, 4)?.try_into().ok()?);
    Some((group, topic, partition))
}

fn encode_value(c: &CommittedOffset) -> Vec<u8> {
    let mut value = Vec::with_capacity(24 + c.metadata.len());
    value.extend_from_slice(&c.offset.to_be_bytes());
    value.extend_from_slice(&c.leader_epoch.to_be_bytes());
    value.extend_from_slice(&c.commit_time_ms.to_be_bytes());
    value.extend_from_slice(&(c.metadata.len() as u32).to_be_bytes());
    value.extend_from_slice(c.metadata.as_bytes());
    value
}

fn decode_value(mut value: &[u8]) -> Option<CommittedOffset> {
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

impl OffsetStore {
    /// Opens the store in `dir`, recovering the log and replaying it (every record since the
    /// oldest segment compaction kept).
    pub fn open(storage: &Storage, path: &str) -> Result<Self, String> {
        Self::open_with(storage, path, Compaction::default())
    }

    /// [`OffsetStore::open`] with a snapshot after `after_records` offset records and
    /// segments of `segment_bytes` (the broker's `offsets_compaction_records` and
    /// `offsets_segment_bytes`).
    pub fn open_compacting(
        storage: &Storage,
        path: &str,
        after_records: u64,
        segment_bytes: u64,
    ) -> Result<Self, String> {
        let default = Compaction::default();
        let compaction = Compaction {
            after_records,
            segment_bytes,
            max_batch_bytes: default
                .max_batch_bytes
                .min(u32::try_from(segment_bytes / 2).unwrap_or(u32::MAX)),
        };
        Self::open_with(storage, path, compaction)
    }

    fn open_with(storage: &Storage, path: &str, compaction: Compaction) -> Result<Self, String> {
        let config = LogConfig {
            flush: FlushPolicy::Always,
            segment_bytes: compaction.segment_bytes,
            max_batch_bytes: compaction.max_batch_bytes,
            retention_age: None,
            retention_bytes: None,
            ..LogConfig::default()
        };
        let log = storage
            .open_log(path, config)
            .map_err(|e| format!("opening {}: {e}", storage.describe(path)))?;
        let end = log.flush().map_err(|e| e.to_string())?;
        let snapshot_dir = storage
            .files(path)
            .inspect_err(|e| tracing::warn!(error = %e, "no committed-offsets snapshots: opening {}", storage.describe(path)))
            .ok();
        let snapshot = match &snapshot_dir {
            Some(dir) => load_snapshot(&**dir, &log, end, &storage.describe(path))?,
            None => None,
        };
        let (after, mut groups) = snapshot.unwrap_or_default();
        // Keys whose latest record could not be decoded, and groups with a record whose key
        // names the group but nothing else: their offsets are unknown.
        let mut damaged_keys: BTreeMap<(String, String, i32), String> = BTreeMap::new();
        let mut damaged: BTreeMap<String, String> = BTreeMap::new();
        // Records in the log, whatever the snapshot spared the replay: what decides compaction.
        let replayed = (end - log.earliest()).max(0) as u64;
        let mut from = after.max(log.earliest());
        while from < end {
            let read = log.read(from, 1 << 20).map_err(|e| e.to_string())?;
            for batch in batches(&read.bytes) {
                let batch = batch.map_err(|e| e.to_string())?;
                for record in batch.records().map_err(|e| e.to_string())? {
                    let record = record.map_err(|e| e.to_string())?;
                    if record.offset < after {
                        // In the snapshot (a read starts at the batch holding `from`).
                        continue;
                    }
                    let where_ = format!(
                        "offset record {} of {}",
                        record.offset,
                        storage.describe(path)
                    );
                    let Some((group, topic, partition)) = record.key.and_then(decode_key) else {
                        // The group alone goes offline if its name can be read; else nothing
                        // tells which group's offsets are unknown.
                        let Some(group) = record.key.and_then(decode_group) else {
                            return Err(format!("{where_} has a malformed key"));
                        };
                        tracing::error!(%group, "{where_} has a malformed key: the group is offline");
                        damaged.insert(group, format!("{where_} has a malformed key"));
                        continue;
                    };
                    let key = (group, topic, partition);
                    match record.value {
                        Some(value) => {
                            let Some(committed) = decode_value(value) else {
                                tracing::error!(group = %key.0, "{where_} has a malformed value: the group is offline");
                                damaged_keys.insert(key, format!("{where_} has a malformed value"));
                                continue;
                            };
                            // A later good record of the same key supersedes a damaged one.
                            damaged_keys.remove(&key);
                            let (group, topic, partition) = key;
                            groups
                                .entry(group)
                                .or_default()
                                .insert((topic, partition), committed);
                        }
                        None => {
                            damaged_keys.remove(&key);
                            let (group, topic, partition) = key;
                            if let Some(offsets) = groups.get_mut(&group) {
                                offsets.remove(&(topic, partition));
                                if offsets.is_empty() {
                                    groups.remove(&group);
                                }
                            }
                        }
                    }
                }
            }
            if read.next_offset <= from {
                break;
            }
            from = read.next_offset;
        }
        for ((group, _, _), reason) in damaged_keys {
            damaged.entry(group).or_insert(reason);
        }
        let live = groups.values().map(BTreeMap::len).sum::<usize>() as u64;
        Ok(OffsetStore {
            log,
            writer: Mutex::new(Writer {
                since_snapshot: replayed,
                live,
            }),
            groups: RwLock::new(groups),
            compaction,
            clock: storage.clock().clone(),
            damaged,
            snapshot_dir,
        })
    }

    /// Writes every offset in `groups` to the snapshot file as of the log end. Called by the
    /// holder of the writer lock (so `groups` is what the log says through its end), and only
    /// while no group is damaged (a snapshot cannot hold a record it could not decode) and the
    /// log is healthy. Durable when it returns `Ok`.
    fn write_snapshot(&self, groups: &Groups) -> Result<(), String> {
        let Some(dir) = &self.snapshot_dir else {
            return Ok(());
        };
        if !self.damaged.is_empty() {
            return Ok(());
        }
        self.log.check_health().map_err(|e| e.to_string())?;
        let offset = self.log.flush().map_err(|e| e.to_string())?;
        replace_file(
            &**dir,
            offsets_snapshot::FILE,
            &offsets_snapshot::encode(groups, offset),
        )
        .map_err(|e| format!("writing {}: {e}", offsets_snapshot::FILE))
    }

    /// Taken first by every write (see [`OffsetStore::write_locked`]).
    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Groups> {
        self.groups.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores commits for `group`, or deletions where the value is `None`. Durable when it
    /// returns `Ok`: the commits survive a crash. Blocks on fdatasync (once per batch: many
    /// entries take several). On `Err` a leading part of `entries` may be durable, and is
    /// then also visible; each entry is whole or absent, and writing them again is harmless.
    pub fn write(
        &self,
        group: &str,
        entries: &[(String, i32, Option<CommittedOffset>)],
    ) -> Result<(), String> {
        self.check_group(group)?;
        let mut writer = self.writer();
        self.write_locked(&mut writer, group, entries)
    }

    /// Stores the commits for `group` whose partition still `exists` — asked under the
    /// writer lock, so a topic deleted (and its offsets with it, by
    /// [`OffsetStore::delete_topic`], after it left the registry) while the commit was on its
    /// way cannot get an offset written after that deletion. Returns the partitions refused;
    /// durable when it returns `Ok`, as [`OffsetStore::write`].
    pub fn write_where(
        &self,
        group: &str,
        entries: OffsetWrites,
        exists: impl Fn(&str, i32) -> bool,
    ) -> Result<Vec<(String, i32)>, String> {
        self.check_group(group)?;
        let mut writer = self.writer();
        let (kept, gone): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(topic, partition, _)| exists(topic, *partition));
        self.write_locked(&mut writer, group, &kept)?;
        Ok(gone.into_iter().map(|(t, p, _)| (t, p)).collect())
    }

    /// [`OffsetStore::write`] by the holder of the writer lock: the map changes in the same
    /// order as the log, and a caller that chose `entries` from the map under the same hold
    /// (a delete) cannot race a commit made in between. The map itself is locked only to
    /// apply the durable change, so reads never wait for the fsync.
    fn write_locked(
        &self,
        writer: &mut Writer,
        group: &str,
        entries: &[(String, i32, Option<CommittedOffset>)],
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let records = entries.iter().map(|(topic, partition, value)| {
            (
                encode_key(group, topic, *partition),
                value.as_ref().map(encode_value),
            )
        });
        let mut applied = 0;
        self.append_chunked(records, |durable| {
            self.apply(writer, group, &entries[applied..applied + durable]);
            applied += durable;
        })?;
        if writer.since_snapshot >= self.compaction.after_records
            && writer.since_snapshot >= 2 * writer.live
            && self.damaged.is_empty()
        {
            // The commit is durable already: a failed compaction is reported, not returned,
            // and tried again only after as many records more (not on every commit).
            if let Err(e) = self.compact(&self.read()) {
                tracing::warn!(error = %e, "compacting the committed offsets log");
            }
            writer.since_snapshot = writer.live;
        }
        Ok(())
    }

    /// Applies durable `entries` of `group` to the map and the writer's counts.
    fn apply(
        &self,
        writer: &mut Writer,
        group: &str,
        entries: &[(String, i32, Option<CommittedOffset>)],
    ) {
        writer.since_snapshot += entries.len() as u64;
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        for (topic, partition, value) in entries {
            let key = (topic.clone(), *partition);
            match value {
                Some(committed) => {
                    let earlier = groups
                        .entry(group.to_owned())
                        .or_default()
                        .insert(key, committed.clone());
                    if earlier.is_none() {
                        writer.live += 1;
                    }
                }
                None => {
                    if let Some(offsets) = groups.get_mut(group) {
                        if offsets.remove(&key).is_some() {
                            writer.live -= 1;
                        }
                        if offsets.is_empty() {
                            groups.remove(group);
                        }
                    }
                }
            }
        }
    }

    /// Appends (key, value or tombstone) records in order, in as many batches as it takes to
    /// keep each under half the log's largest batch (one commit or deletion may name any
    /// number of partitions). After each batch is durable, `durable` is told how many records
    /// it held. Fails with the first batch that fails; the ones before it stay durable (and
    /// were reported), the rest are not written.
    fn append_chunked(
        &self,
        records: impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        mut durable: impl FnMut(usize),
    ) -> Result<(), String> {
        /// A record's bytes in a batch beyond its key and value, at most.
        const RECORD_OVERHEAD: usize = 32;
        let budget = self.compaction.max_batch_bytes as usize / 2;
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for (key, value) in records {
            let size = key.len() + value.as_ref().map_or(0, Vec::len) + RECORD_OVERHEAD;
            if !chunk.is_empty() && chunk_bytes + size > budget {
                self.append(&chunk)?;
                durable(chunk.len());
                chunk.clear();
                chunk_bytes = 0;
            }
            chunk.push((key, value));
            chunk_bytes += size;
        }
        if !chunk.is_empty() {
            self.append(&chunk)?;
            durable(chunk.len());
        }
        Ok(())
    }

    /// Appends one batch of (key, value or tombstone) records; durable when it returns `Ok`.
    fn append(&self, records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
        let mut builder = BatchBuilder::new(self.clock.now_ms());
        for (key, value) in records {
            builder = builder.record(Some(key), value.as_deref());
        }
        let mut bytes = builder.build();
        self.log.append(&mut bytes, 0).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Writes every live offset in `groups` again (a snapshot, durable before anything is
    /// deleted), then deletes the segments wholly before it. Called by the holder of the writer
    /// lock, so `groups` is what the log says. A replay from any later start
    /// still ends at the same map: the snapshot holds every live offset, and whatever a
    /// deleted segment held was overwritten or deleted by a later record.
    fn compact(&self, groups: &Groups) -> Result<(), String> {
        let start = self.log.log_end();
        let snapshot = groups.iter().flat_map(|(group, offsets)| {
            offsets.iter().map(move |((topic, partition), committed)| {
                (
                    encode_key(group, topic, *partition),
                    Some(encode_value(committed)),
                )
            })
        });
        self.append_chunked(snapshot, |_| {})?;
        // Not needed for the deletion (the log holds every live offset again): a failure is
        // only logged, and the next open replays more.
        if let Err(e) = self.write_snapshot(groups) {
            tracing::warn!(error = %e, "writing the committed-offsets snapshot at compaction");
        }
        let deleted = self
            .log
            .delete_segments_before(start)
            .map_err(|e| e.to_string())?;
        tracing::debug!(
            segments = deleted.segments_deleted,
            bytes = deleted.bytes_deleted,
            "compacted the committed offsets log"
        );
        Ok(())
    }

    /// `Err` with the reason if `group` is offline: a record of it could not be decoded
    /// when the store was opened, so its offsets are unknown.
    pub fn check_group(&self, group: &str) -> Result<(), String> {
        match self.damaged.get(group) {
            Some(reason) => Err(format!(
                "the committed offsets of group '{group}' are offline: {reason}"
            )),
            None => Ok(()),
        }
    }

    /// The committed offset of one partition for `group`; `Err` if the group is offline.
    pub fn get(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CommittedOffset>, String> {
        self.check_group(group)?;
        Ok(self
            .read()
            .get(group)
            .and_then(|offsets| offsets.get(&(topic.to_owned(), partition)))
            .cloned())
    }

    /// Every committed offset of `group`, by topic and partition; `Err` if the group is
    /// offline.
    pub fn all(&self, group: &str) -> Result<Vec<(String, i32, CommittedOffset)>, String> {
        self.check_group(group)?;
        Ok(self
            .read()
            .get(group)
            .map(|offsets| {
                offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every group with at least one committed offset.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<_> = self.read().keys().cloned().collect();
        groups.sort();
        groups
    }

    /// Deletes every committed offset of `group`. Durable when it returns `Ok`; on `Err` some
    /// may be deleted already (see [`OffsetStore::write`]). The offsets to delete are read
    /// under the same hold of the writer lock as the deletion is written, so a commit that
    /// lands after this began is not deleted by it.
    pub fn delete_group(&self, group: &str) -> Result<(), String> {
        self.check_group(group)?;
        let mut writer = self.writer();
        let entries: Vec<_> = self
            .read()
            .get(group)
            .map(|offsets| offsets.keys().map(|(t, p)| (t.clone(), *p, None)).collect())
            .unwrap_or_default();
        self.write_locked(&mut writer, group, &entries)
    }

    /// Deletes every group's committed offsets for `topic` (the topic was deleted), chosen
    /// and written under one hold of the writer lock like [`OffsetStore::delete_group`].
    /// Durable when it returns `Ok`; on `Err` some groups (or part of one) may be deleted
    /// already, and calling it again deletes the rest.
    pub fn delete_topic(&self, topic: &str) -> Result<(), String> {
        let mut writer = self.writer();
        let doomed: Vec<(String, OffsetWrites)> = self
            .read()
            .iter()
            .map(|(group, offsets)| {
                let entries = offsets
                    .keys()
                    .filter(|(t, _)| t == topic)
                    .map(|(t, p)| (t.clone(), *p, None))
                    .collect::<Vec<_>>();
                (group.clone(), entries)
            })
            .filter(|(_, entries)| !entries.is_empty())
            .collect();
        for (group, entries) in doomed {
            self.write_locked(&mut writer, &group, &entries)?;
        }
        Ok(())
    }

    /// Writes the snapshot of every live offset (so the next open replays nothing), then
    /// flushes and closes the log. A failed snapshot is logged, not returned: the next open
    /// replays the log instead.
    pub fn close(&self) -> Result<(), String> {
        let _writer = self.writer();
        if let Err(e) = self.write_snapshot(&self.read()) {
            tracing::warn!(error = %e, "writing the committed-offsets snapshot at close");
        }
        self.log.close().map_err(|e| e.to_string())
    }
}

/// The snapshot in `dir` if it can be used with `log` (whose end is `end`): it validates and
/// its offset lies within the log. One beyond the end (the records it covered are gone) is
/// deleted durably, so it can never be matched with records written later at those offsets;
/// `Err` if that fails. Anything else unusable is logged and ignored.
fn load_snapshot(
    dir: &dyn SegmentIo,
    log: &FileLog,
    end: Offset,
    describe: &str,
) -> Result<Option<(Offset, Groups)>, String> {
    let file = format!("{}/{}", describe, offsets_snapshot::FILE);
    let bytes = match read_file(dir, offsets_snapshot::FILE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(%file, error = %e, "ignoring an unreadable committed-offsets snapshot; replaying the whole log");
            return Ok(None);
        }
    };
    let (offset, groups) = match offsets_snapshot::decode(&bytes) {
        Ok(snapshot) => snapshot,
        Err(reason) => {
            tracing::warn!(%file, %reason, "ignoring a damaged committed-offsets snapshot; replaying the whole log");
            return Ok(None);
        }
    };
    if offset > end {
        tracing::warn!(%file, offset, log_end = end, "deleting a committed-offsets snapshot beyond the log end; replaying the whole log");
        dir.remove(offsets_snapshot::FILE)
            .and_then(|()| dir.sync_dir())
            .map_err(|e| format!("deleting {file}: {e}"))?;
        return Ok(None);
    }
    if offset < log.earliest() {
        // Compaction deleted records after it: the snapshot misses their effects.
        tracing::warn!(%file, offset, log_start = log.earliest(), "ignoring a committed-offsets snapshot older than the log; replaying the whole log");
        return Ok(None);
    }
    Ok(Some((offset, groups)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use staunch_testkit::FaultyIo;

    fn committed(offset: Offset, metadata: &str) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: metadata.to_owned(),
            commit_time_ms: 1,
        })
    }

    /// Many commits of a few offsets: the log is compacted (segments before a snapshot
    /// deleted, so it holds a bounded number of records, not every commit ever made), and a
    /// reopen — which replays from the new start — finds exactly the live offsets.
    #[test]
    fn the_log_is_compacted_and_a_reopen_finds_the_same_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let compaction = Compaction {
            after_records: 50,
            segment_bytes: 4 << 10,
            max_batch_bytes: 1 << 10,
        };
        {
            let store = OffsetStore::open_with(&Storage::fs(dir.path()), "", compaction).unwrap();
            for i in 0..1_000 {
                let meta = format!("attempt={i}");
                store
                    .write("g", &[("t".into(), i as i32 % 20, committed(i, &meta))])
                    .unwrap();
                if i == 500 {
                    store
                        .write("gone", &[("t".into(), 0, committed(1, ""))])
                        .unwrap();
                    store.delete_group("gone").unwrap();
                }
            }
            store
                .write("h", &[("u".into(), 0, committed(42, ""))])
                .unwrap();
            let (start, end) = (store.log.earliest(), store.log.log_end());
            assert!(start > 0, "nothing was deleted (log {start}..{end})");
            // The records since the last snapshot, the snapshot, and at most one segment
            // (about 40 records of ~100 bytes) before it.
            assert!(end - start < 150, "log {start}..{end} was not compacted");
            // The running count of live offsets (what decides compaction) matches the map.
            assert_eq!(store.writer().live, 21);
        }
        let store = OffsetStore::open_with(&Storage::fs(dir.path()), "", compaction).unwrap();
        // 20 live offsets take several snapshot batches of at most 512 bytes.
        for partition in 0..20 {
            let last = 980 + i64::from(partition);
            let got = store.get("g", "t", partition).unwrap().unwrap();
            let meta = format!("attempt={last}");
            assert_eq!((got.offset, got.metadata.as_str()), (last, meta.as_str()));
        }
        assert_eq!(store.get("h", "u", 0).unwrap().unwrap().offset, 42);
        assert_eq!(store.groups(), vec!["g".to_owned(), "h".to_owned()]);
        assert_eq!(store.writer().live, 21);
    }

    /// Batches of at most 1 KiB (a few small offset records each), no compaction.
    const SMALL_BATCHES: Compaction = Compaction {
        after_records: 1 << 20,
        segment_bytes: 1 << 20,
        max_batch_bytes: 1 << 10,
    };

    /// A commit naming more partitions than one batch of the log holds, and the deletion of
    /// a group with that many offsets, are written in several batches: both succeed and
    /// survive a reopen (a single batch was refused as too large).
    #[test]
    fn commits_and_deletions_larger_than_a_batch_are_written_in_several() {
        let dir = tempfile::tempdir().unwrap();
        let compaction = SMALL_BATCHES;
        let metadata = "m".repeat(100);
        let big: Vec<_> = (0..200)
            .map(|p| ("t".to_owned(), p, committed(i64::from(p) + 1, &metadata)))
            .collect();
        {
            let store = OffsetStore::open_with(&Storage::fs(dir.path()), "", compaction).unwrap();
            store.write("big", &big).unwrap();
            store.write("gone", &big).unwrap();
            store.delete_group("gone").unwrap();
            assert_eq!(store.log.log_end(), 600, "three writes of 200 records each");
            assert_eq!(store.writer().live, 200);
            assert_eq!(store.writer().since_snapshot, 600);
        }
        let store = OffsetStore::open_with(&Storage::fs(dir.path()), "", compaction).unwrap();
        for p in 0..200 {
            let got = store.get("big", "t", p).unwrap().unwrap();
            assert_eq!(
                (got.offset, got.metadata.as_str()),
                (i64::from(p) + 1, metadata.as_str())
            );
        }
        assert_eq!(store.groups(), vec!["big".to_owned()]);
        assert_eq!(store.writer().live, 200);
    }

    /// A write whose later batch fails keeps the earlier batches: durable, in the map, and
    /// counted — the map and the counts never run ahead of (or behind) the log.
    #[test]
    fn a_write_that_fails_part_way_keeps_what_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let compaction = SMALL_BATCHES;
        let mut entries: Vec<_> = (0..20)
            .map(|p| ("t".to_owned(), p, committed(i64::from(p), "")))
            .collect();
        // Alone in its batch and still over the log's limit: refused.
        entries.push(("t".to_owned(), 20, committed(20, &"m".repeat(2 << 10))));
        {
            let store = OffsetStore::open_with(&Storage::fs(dir.path()), "", compaction).unwrap();
            assert!(store.write("g", &entries).is_err());
            for p in 0..20 {
                assert_eq!(
                    store.get("g", "t", p).unwrap().unwrap().offset,
                    i64::from(p)
                );
            }
            assert!(store.get("g", "t", 20).unwrap().is_none());
            assert_eq!(store.writer().live, 20);
            assert_eq!(store.writer().since_snapshot, 20);
            assert_eq!(store.log.log_end(), 20);
        }
        let store = OffsetStore::open_with(&Storage::fs(dir.path()), "", compaction).unwrap();
        assert_eq!(store.all("g").unwrap().len(), 20);
        assert!(store.get("g", "t", 20).unwrap().is_none());
    }

    /// `write_where` stores only the commits whose partition still exists (asked under the
    /// writer lock) and names the others.
    #[test]
    fn write_where_refuses_commits_to_partitions_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(&Storage::fs(dir.path()), "").unwrap();
        let gone = store
            .write_where(
                "g",
                vec![
                    ("kept".into(), 0, committed(5, "")),
                    ("deleted".into(), 0, committed(9, "")),
                ],
                |topic, _| topic == "kept",
            )
            .unwrap();
        assert_eq!(gone, vec![("deleted".to_owned(), 0)]);
        assert_eq!(store.get("g", "kept", 0).unwrap().unwrap().offset, 5);
        assert!(store.get("g", "deleted", 0).unwrap().is_none());
    }

    #[test]
    fn commits_and_deletions_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(&Storage::fs(dir.path()), "").unwrap();
            store
                .write(
                    "g",
                    &[
                        ("t".into(), 0, committed(5, "attempt=2")),
                        ("t".into(), 1, committed(7, "")),
                    ],
                )
                .unwrap();
            store
                .write("g", &[("t".into(), 0, committed(6, "attempt=3"))])
                .unwrap();
            store
                .write("h", &[("u".into(), 0, committed(1, ""))])
                .unwrap();
            store.delete_group("h").unwrap();
            store
                .write("k", &[("doomed".into(), 0, committed(3, ""))])
                .unwrap();
            store.delete_topic("doomed").unwrap();
            // No close: reopening must work from what was fsynced.
        }
        let store = OffsetStore::open(&Storage::fs(dir.path()), "").unwrap();
        let got = store.get("g", "t", 0).unwrap().unwrap();
        assert_eq!((got.offset, got.metadata.as_str()), (6, "attempt=3"));
        assert_eq!(store.get("g", "t", 1).unwrap().unwrap().offset, 7);
        assert_eq!(store.groups(), vec!["g".to_owned()]);
        assert!(store.get("h", "u", 0).unwrap().is_none());
    }

    /// A record that cannot be decoded takes only its group offline: its offsets answer an
    /// error (never "nothing committed"), commits to it are refused, compaction (which would
    /// drop the damaged record) does not run, and every other group is served as before.
    #[test]
    fn a_damaged_record_takes_only_its_group_offline() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::fs(dir.path());
        {
            let store = OffsetStore::open(&storage, "").unwrap();
            store
                .write("good", &[("t".into(), 0, committed(5, "ok"))])
                .unwrap();
            store.close().unwrap();
        }
        {
            // A well-framed batch (valid CRC) whose value is garbage, as a bug could write.
            let log = storage.open_log("", LogConfig::default()).unwrap();
            let mut batch = BatchBuilder::new(1)
                .record(Some(&encode_key("bad", "t", 0)), Some(b"xx"))
                .build();
            log.append(&mut batch, 0).unwrap();
            log.close().unwrap();
        }
        let store = OffsetStore::open_compacting(&storage, "", 1, 4096).unwrap();
        assert_eq!(store.get("good", "t", 0).unwrap().unwrap().offset, 5);
        let offline = store.get("bad", "t", 0).unwrap_err();
        assert!(offline.contains("malformed value"), "{offline}");
        assert!(store.all("bad").is_err());
        assert!(
            store
                .write("bad", &[("t".into(), 0, committed(9, ""))])
                .is_err()
        );
        assert!(store.delete_group("bad").is_err());
        // Commits of other groups go on; with the damage present none compacts the log.
        let start = store.log.earliest();
        for i in 0..200 {
            store
                .write("good", &[("t".into(), 0, committed(i, ""))])
                .unwrap();
        }
        assert_eq!(
            store.log.earliest(),
            start,
            "compaction ran over a damaged record"
        );
        assert_eq!(store.get("good", "t", 0).unwrap().unwrap().offset, 199);
        // A clean close writes no snapshot over the damage (it could not hold the damaged
        // record): the group is still offline after a reopen.
        store.close().unwrap();
        let store = OffsetStore::open_compacting(&storage, "", 1, 4096).unwrap();
        assert!(store.get("bad", "t", 0).is_err());
        assert_eq!(store.get("good", "t", 0).unwrap().unwrap().offset, 199);
    }

    type OffsetList = Vec<(String, i32, CommittedOffset)>;

    /// Every group's offsets, sorted, as the store answers them.
    fn everything(store: &OffsetStore) -> Vec<(String, OffsetList)> {
        store
            .groups()
            .into_iter()
            .map(|g| {
                let all = store.all(&g).unwrap();
                (g, all)
            })
            .collect()
    }

    const SNAPSHOTTING: Compaction = Compaction {
        after_records: 50,
        segment_bytes: 4 << 10,
        max_batch_bytes: 1 << 10,
    };

    /// Commits and deletions through several compactions, and a tail after the last.
    fn commit_a_lot(store: &OffsetStore) {
        for i in 0..400 {
            let meta = format!("attempt={i}");
            store
                .write("g", &[("t".into(), i as i32 % 20, committed(i, &meta))])
                .unwrap();
            if i % 97 == 0 {
                store
                    .write("gone", &[("t".into(), 0, committed(1, ""))])
                    .unwrap();
                store.delete_group("gone").unwrap();
            }
        }
        store
            .write("h", &[("u".into(), 0, committed(42, ""))])
            .unwrap();
    }

    /// Offsets to plant in a snapshot that must not be trusted.
    fn wrong_groups() -> Groups {
        let mut groups = Groups::new();
        groups
            .entry("g".to_owned())
            .or_default()
            .insert(("t".to_owned(), 0), committed(-5, "wrong").unwrap());
        groups
    }

    /// Compaction and a clean close write the snapshot; an open after a crash loads the
    /// compaction's snapshot and replays the tail after it, and an open after a clean close
    /// reads (almost) nothing of the log: both find exactly the offsets a full replay finds.
    #[test]
    fn a_snapshot_spares_the_replay_and_finds_the_same_offsets() {
        let disk = FaultyIo::new();
        let storage = Storage::new(Arc::new(disk.clone()), Arc::new(staunch_core::SystemClock));
        let store = OffsetStore::open_with(&storage, "", SNAPSHOTTING).unwrap();
        commit_a_lot(&store);
        let want = everything(&store);
        let (_, at_compaction) =
            offsets_snapshot::decode(&disk.live_bytes(offsets_snapshot::FILE).unwrap()).unwrap();
        assert!(!at_compaction.is_empty());
        drop(store); // no close: the compaction's snapshot plus the tail
        let store = OffsetStore::open_with(&storage, "", SNAPSHOTTING).unwrap();
        assert_eq!(everything(&store), want);
        let size = store.log.size_bytes();
        store.close().unwrap();
        let (offset, _) =
            offsets_snapshot::decode(&disk.live_bytes(offsets_snapshot::FILE).unwrap()).unwrap();
        assert_eq!(
            offset,
            store.log.log_end(),
            "the close's snapshot is at the log end"
        );
        let before = disk.bytes_read();
        let store = OffsetStore::open_with(&storage, "", SNAPSHOTTING).unwrap();
        let snapshot = disk.live_bytes(offsets_snapshot::FILE).unwrap().len() as u64;
        let read = disk.bytes_read() - before - snapshot;
        assert!(
            read < size / 4,
            "read {read} bytes of a {size}-byte log besides the snapshot"
        );
        assert_eq!(everything(&store), want);
        assert_eq!(store.writer().live, 21);
    }

    /// A snapshot bit-flipped, truncated, deleted, beyond the log end (its records torn away)
    /// or older than the log's start is never trusted: the whole log is replayed and finds
    /// every offset; the one beyond the end is deleted durably.
    #[test]
    fn a_damaged_or_misplaced_snapshot_is_ignored_and_the_log_replayed() {
        for damage in [
            "flip",
            "truncate",
            "delete",
            "beyond the end",
            "before the start",
        ] {
            let disk = FaultyIo::new();
            let storage = Storage::new(Arc::new(disk.clone()), Arc::new(staunch_core::SystemClock));
            let store = OffsetStore::open_with(&storage, "", SNAPSHOTTING).unwrap();
            commit_a_lot(&store);
            let want = everything(&store);
            let (start, end) = (store.log.earliest(), store.log.log_end());
            assert!(start > 0, "compaction ran");
            store.close().unwrap();
            let bytes = disk.live_bytes(offsets_snapshot::FILE).unwrap();
            match damage {
                "flip" => disk.flip_bit(offsets_snapshot::FILE, bytes.len() / 2, 5),
                "truncate" => disk.put_file(offsets_snapshot::FILE, &bytes[..bytes.len() / 2]),
                "delete" => SegmentIo::remove(&disk, offsets_snapshot::FILE).unwrap(),
                "beyond the end" => disk.put_file(
                    offsets_snapshot::FILE,
                    &offsets_snapshot::encode(&wrong_groups(), end + 1),
                ),
                _ => disk.put_file(
                    offsets_snapshot::FILE,
                    &offsets_snapshot::encode(&wrong_groups(), start - 1),
                ),
            }
            let store = OffsetStore::open_with(&storage, "", SNAPSHOTTING).unwrap();
            assert_eq!(everything(&store), want, "{damage}");
            if damage == "beyond the end" {
                drop(store);
                let after_cut = disk.crash(staunch_testkit::CrashMode::DropUnsynced);
                assert!(after_cut.live_bytes(offsets_snapshot::FILE).is_none());
            }
        }
    }
}
