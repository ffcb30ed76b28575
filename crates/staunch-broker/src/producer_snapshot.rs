//! Producer-state snapshots: the idempotent-producer table of one partition as of a log offset,
//! kept beside the partition's segments so that opening the partition reads only the log after
//! the snapshot, not the whole log (Kafka's `<offset>.snapshot` files).
//!
//! File `<offset, 20 digits>.snapshot` in the partition's directory, big-endian:
//! `"STPS" | version u8 | offset i64 | count u32 |
//!  count × (producer_id i64 | epoch i16 | n u8 | n × (first_seq i32 | last_seq i32 |
//!  base_offset i64 | last_offset i64 | append_time_ms i64)) | crc32c u32`
//!
//! A snapshot at offset `O` holds exactly what replaying every batch below `O` gives (and
//! producers whose batches retention has since deleted). It is written atomically and durably
//! ([`replace_file`]: temp file, fdatasync, rename, fsync of the directory) when the log rolls
//! a segment and at a clean shutdown; the newest [`KEEP`] are kept.
//!
//! A snapshot is never trusted blindly: one that fails its checksum, version, name or any
//! bound is deleted (logged) and the next older one is tried, down to the whole log; one whose
//! offset is beyond the recovered log end (the tail it described was torn away by a power cut,
//! or truncated) is deleted durably before the partition accepts a write, so that new data at
//! those offsets can never be matched with it.

use crate::byte_reader::ByteReader;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::Arc;

use staunch_core::{Offset, ProducerEpoch, ProducerId};
use staunch_log::{SegmentIo, read_file, replace_file};

use crate::producer_state::{BatchSeq, ProducerTable, RETAINED_BATCHES};
use crate::storage::Storage;

const MAGIC: &[u8; 4] = b"STPS";
const VERSION: u8 = 1;
const SUFFIX: &str = ".snapshot";
/// Header: magic, version, offset, count.
const HEADER: usize = 4 + 1 + 8 + 4;
/// One producer without batches: id, epoch, batch count.
const PRODUCER: usize = 8 + 2 + 1;
/// One batch.
const BATCH: usize = 4 + 4 + 8 + 8 + 8;

/// How many snapshots a partition keeps: the newest, and one older in case it is damaged.
pub const KEEP: usize = 2;

/// The file name of the snapshot at `offset`.
pub fn file_name(offset: Offset) -> String {
    format!("{offset:020}{SUFFIX}")
}

/// The offset a snapshot file name stands for, or `None` if `name` is not one.
fn parse_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The bytes of a snapshot of `table` at `offset`.
pub fn encode(table: &ProducerTable, offset: Offset) -> Vec<u8> {
    let mut producers: Vec<(ProducerId, ProducerEpoch, &VecDeque<BatchSeq>)> =
        table.producers().collect();
    producers.sort_unstable_by_key(|(id, _, _)| *id);
    let mut out =
        Vec::with_capacity(HEADER + producers.len() * (PRODUCER + RETAINED_BATCHES * BATCH) + 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
    for (id, epoch, batches) in producers {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        // A table never holds more than RETAINED_BATCHES (5) per producer.
        out.push(batches.len() as u8);
        for b in batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
            out.extend_from_slice(&b.append_time_ms.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The producer table a snapshot file named for `offset` holds, or why it cannot be trusted
/// (checksum, magic, version, an offset other than its name's, or a value out of bounds).
/// Never panics, whatever the bytes.
pub fn decode(bytes: &[u8], offset: Offset) -> Result<ProducerTable, String> {
    let mut r = ByteReader::checksummed(bytes, HEADER)?;
    if &r.array::<4>()? != MAGIC {
        return Err("not a producer-state snapshot (magic)".to_owned());
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(format!("format version {version}, not {VERSION}"));
    }
    let stored = r.i64()?;
    if stored != offset {
        return Err(format!("holds offset {stored}, its name says {offset}"));
    }
    let count = r.count(PRODUCER)?;
    let mut table = ProducerTable::default();
    let mut seen = HashSet::with_capacity(count);
    for _ in 0..count {
        let id = r.i64()?;
        let epoch = r.i16()?;
        let n = r.u8()?;
        if id < 0 || !seen.insert(id) {
            return Err(format!("producer id {id} is negative or repeated"));
        }
        if n == 0 || usize::from(n) > RETAINED_BATCHES {
            return Err(format!("producer {id} has {n} batches"));
        }
        let mut batches = Vec::with_capacity(usize::from(n));
        let mut after = 0;
        for _ in 0..n {
            let b = BatchSeq {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                base_offset: r.i64()?,
                last_offset: r.i64()?,
                append_time_ms: r.i64()?,
            };
            if b.first_seq < 0
                || b.last_seq < 0
                || b.base_offset < after
                || b.last_offset < b.base_offset
                || b.last_offset >= offset
            {
                return Err(format!(
                    "producer {id} has a batch out of bounds: {b:?} (snapshot at {offset})"
                ));
            }
            after = b.last_offset + 1;
            batches.push(b);
        }
        table.restore(id, epoch, batches);
    }
    if r.remaining() > 0 {
        return Err(format!("{} bytes after the last producer", r.remaining()));
    }
    Ok(table)
}

/// The snapshots in one partition's directory. Holds no open file or directory between
/// calls (a partition must not cost a descriptor for them).
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    storage: Storage,
    path: String,
}

impl SnapshotDir {
    /// The snapshots in directory `path` of `storage` (the partition's log directory).
    pub fn new(storage: Storage, path: &str) -> Self {
        SnapshotDir {
            storage,
            path: path.to_owned(),
        }
    }

    fn dir(&self) -> io::Result<Arc<dyn SegmentIo>> {
        self.storage.files(&self.path)
    }

    fn describe(&self, offset: Offset) -> String {
        self.storage
            .describe(&staunch_log::join_path(&self.path, &file_name(offset)))
    }

    /// The offsets of the snapshot files present, lowest first.
    pub fn offsets(&self) -> io::Result<Vec<Offset>> {
        let mut offsets: Vec<Offset> = self
            .dir()?
            .list()?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Whether the newest snapshot present is at `offset` (a listing, no read: whether it
    /// validates is for [`SnapshotDir::load`] to find out).
    pub fn newest_is_at(&self, offset: Offset) -> bool {
        self.offsets()
            .is_ok_and(|offsets| offsets.last() == Some(&offset))
    }

    /// Writes the snapshot of `table` at `offset`, then deletes all but the newest [`KEEP`].
    /// When it returns `Ok` the snapshot is durable (file and directory entry fsynced);
    /// the deletions may not be, which is harmless (an older snapshot stays valid).
    pub fn write(&self, table: &ProducerTable, offset: Offset) -> io::Result<()> {
        let dir = self.dir()?;
        replace_file(&*dir, &file_name(offset), &encode(table, offset))?;
        let offsets = self.offsets()?;
        for old in offsets.iter().rev().skip(KEEP) {
            dir.remove(&file_name(*old))?;
        }
        Ok(())
    }

    /// Deletes every snapshot above `offset`, durably (the directory is fsynced) when it
    /// returns `Ok`: done before the log is cut to `offset` or written past a recovered end,
    /// so no snapshot can ever describe offsets whose data was replaced. Returns how many
    /// were deleted.
    pub fn delete_above(&self, offset: Offset) -> io::Result<usize> {
        let doomed: Vec<Offset> = self
            .offsets()?
            .into_iter()
            .filter(|&o| o > offset)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let dir = self.dir()?;
        for o in &doomed {
            tracing::info!(
                file = %self.describe(*o),
                log_end = offset,
                "deleting a producer-state snapshot beyond the log end"
            );
            dir.remove(&file_name(*o))?;
        }
        dir.sync_dir()?;
        Ok(doomed.len())
    }

    /// The newest snapshot that validates and whose offset is at most `log_end`, with its
    /// offset; `None` if there is none (then the whole log is replayed). Snapshots above
    /// `log_end` are deleted durably first ([`SnapshotDir::delete_above`]); damaged ones are
    /// deleted and unreadable ones skipped, each logged. `Err` only if the directory cannot
    /// be listed or a snapshot beyond the end cannot be deleted: the partition must not open
    /// then.
    pub fn load(&self, log_end: Offset) -> io::Result<Option<(Offset, ProducerTable)>> {
        self.delete_above(log_end)?;
        let dir = self.dir()?;
        for offset in self.offsets()?.into_iter().rev() {
            let file = self.describe(offset);
            match read_file(&*dir, &file_name(offset)) {
                Ok(Some(bytes)) => match decode(&bytes, offset) {
                    Ok(table) => return Ok(Some((offset, table))),
                    Err(reason) => {
                        tracing::warn!(%file, %reason, "ignoring a damaged producer-state snapshot; rebuilding from the log");
                        if let Err(e) = dir.remove(&file_name(offset)) {
                            tracing::warn!(%file, error = %e, "deleting the damaged snapshot");
                        }
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%file, error = %e, "ignoring an unreadable producer-state snapshot");
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staunch_core::{BatchBuilder, RecordBatch};

    fn table() -> ProducerTable {
        let mut t = ProducerTable::default();
        for (pid, base) in [(3, 0), (9, 10), (3, 20), (3, 30)] {
            let mut bytes = BatchBuilder::new(0)
                .producer(pid, 1, (base / 10) as i32 * 2)
                .record(None, Some(b"a"))
                .record(None, Some(b"b"))
                .build();
            RecordBatch::set_base_offset(&mut bytes, base).unwrap();
            t.observe(&RecordBatch::parse(&bytes).unwrap(), 7);
        }
        t
    }

    fn entries(t: &ProducerTable) -> Vec<(ProducerId, ProducerEpoch, Vec<BatchSeq>)> {
        let mut v: Vec<_> = t
            .producers()
            .map(|(id, e, b)| (id, e, b.iter().copied().collect()))
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v
    }

    #[test]
    fn a_snapshot_round_trips() {
        let t = table();
        let back = decode(&encode(&t, 40), 40).unwrap();
        assert_eq!(entries(&back), entries(&t));
        assert_eq!(back.len(), 2);
        assert_eq!(parse_name(&file_name(40)), Some(40));
        assert_eq!(parse_name("00000000000000000040.snapshot.tmp"), None);
        assert_eq!(parse_name("40.snapshot"), None);
    }

    /// Any flipped bit, any cut, a wrong name and batches at or past the offset are refused,
    /// never panicking.
    #[test]
    fn damaged_truncated_or_misnamed_snapshots_are_refused() {
        let bytes = encode(&table(), 40);
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad, 40).is_err(), "flip of byte {byte} bit {bit}");
            }
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], 40).is_err(), "cut at {len}");
        }
        assert!(
            decode(&bytes, 41).is_err(),
            "another offset than its name's"
        );
        // Well sealed, but it claims batches at or past its own offset.
        assert!(decode(&encode(&table(), 31), 31).is_err());
        assert!(decode(&encode(&table(), 32), 32).is_ok());
    }
}
