//! The durable outbox: records accepted by a producer are written to a local
//! [`staunch_log::FileLog`] before `send` returns, marked finished once their outcome is final,
//! and handed back for sending again when the producer is reopened after a crash.
//!
//! # On disk
//!
//! One log directory holds four kinds of records, all as Kafka v2 records:
//!
//! - an **entry** per accepted record: the record's own key, value, timestamp and headers,
//!   preceded by the headers [`TOPIC_HEADER`] (the topic) and [`PARTITION_HEADER`] (the
//!   partition the caller chose as a big-endian `i32`, or a null value);
//! - a **stamp** ([`STAMP_HEADER`]), written by an idempotent producer *before* a batch of
//!   entries is sent: the partition, producer id, epoch and base sequence the batch is sent
//!   with, and the offsets of its entries, in batch order (layout in [`encode_stamp`]). A batch
//!   sent again under a new identity (an epoch bump) gets a new stamp; the latest one counts;
//! - an **acknowledged marker** ([`ACKED_HEADER`]) and a **done marker** ([`DONE_HEADER`]):
//!   the value lists, as big-endian `i64`s, entries whose record was acknowledged, or failed and
//!   was handed back to the caller.
//!
//! On open, every entry without a marker is pending and is sent again. Whole segments below the
//! oldest pending entry are deleted as records complete, so the directory holds about what is
//! still in flight plus one segment.
//!
//! # What survives what
//!
//! With [`FlushPolicy::Always`] (the default) an entry is fsynced before `send` returns: the
//! record survives kill -9 and power loss. With [`FlushPolicy::Os`] it survives kill -9 only.
//!
//! Stamps and markers are written to the page cache by the producer's sender task, a stamp
//! before its batch's produce request leaves and a marker before the callers hear of the
//! outcome; neither waits for an fsync. So after **kill -9** every batch that may have reached
//! the broker has its stamp on disk. A reopened idempotent producer sends each pending batch
//! again *exactly as stamped* — same records, same producer id, epoch and sequence numbers — and
//! the broker recognises a batch it already wrote and answers with its original offset:
//! **exactly once** across the crash. Entries without a usable stamp (never sent, partly
//! finished, or superseded by a newer identity in their partition) are sent as new records,
//! under the new producer's own identity. After a **power loss** stamps and markers not yet
//! synced may be lost; then delivery is at-least-once: such records are sent again and may be
//! duplicated, never lost. A replayed stamp is only ever reused for its own batch; a recovered
//! partition takes a fresh producer id before it stamps anything new, so a lost stamp can never
//! make the broker take a new batch for an old one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use bytes::Bytes;
#[cfg(test)]
use staunch_core::RecordBatch;
use staunch_core::batch::batches;
use staunch_core::{BatchBuilder, Offset, ProducerIdentity};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogError, LogStore};
use tokio::sync::{Notify, oneshot};

use crate::record::{Header, ProducerRecord};

/// Header naming an entry's topic (always the entry's first header).
pub const TOPIC_HEADER: &str = "staunch.outbox.topic";
/// Header holding the partition the caller chose (big-endian `i32`; null: none chosen), always
/// an entry's second header.
pub const PARTITION_HEADER: &str = "staunch.outbox.partition";
/// Header of a done marker: its value lists entries that failed and were handed back.
pub const DONE_HEADER: &str = "staunch.outbox.done";
/// Header of an acknowledged marker: its value lists entries the broker acknowledged.
pub const ACKED_HEADER: &str = "staunch.outbox.acked";
/// Header of a stamp: the producer fields a batch of entries was sent with.
pub const STAMP_HEADER: &str = "staunch.outbox.stamp";

/// Largest group of records written as one outbox batch; bigger groups are split.
const MAX_GROUP_BYTES: usize = 1 << 20;

/// Room an entry needs beyond the record's own size (placement headers, record framing).
const ENTRY_OVERHEAD: u64 = 1024;

/// Bytes of a stamp's value before its entry offsets: producer id, epoch, base sequence,
/// partition.
const STAMP_FIXED: usize = 8 + 2 + 4 + 4;

/// Settings of the durable outbox (see [`crate::Producer::with_outbox`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Directory of the outbox's log; created if missing. One producer at a time: a second
    /// producer opening the same directory fails (the log locks it).
    pub dir: PathBuf,
    /// When an entry is forced to disk before `send` returns. Default [`FlushPolicy::Always`]:
    /// an accepted record survives power loss. [`FlushPolicy::Os`] survives kill -9 of the
    /// producer process only, and is much faster for one sender awaiting each send.
    pub flush: FlushPolicy,
    /// The outbox directory may grow to about this many bytes; beyond it `send` waits up to
    /// [`crate::ProducerConfig::max_block`] for records to complete, then fails with
    /// [`crate::ProduceError::OutboxFull`]. Default 256 MiB.
    pub max_bytes: u64,
    /// Size of the outbox's log segments: the unit in which finished records' space is given
    /// back. Default 16 MiB.
    pub segment_bytes: u64,
}

impl OutboxConfig {
    /// The defaults, with the log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OutboxConfig {
            dir: dir.into(),
            flush: FlushPolicy::Always,
            max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
        }
    }
}

impl OutboxConfig {
    /// Checks the settings against the producer's largest record: a segment must hold one.
    pub fn validate(&self, max_request_size: usize) -> Result<(), OutboxError> {
        let needed = max_request_size as u64 + ENTRY_OVERHEAD;
        if self.segment_bytes < needed || self.segment_bytes > u64::from(u32::MAX) {
            return Err(OutboxError::Config(format!(
                "segment_bytes {} must hold the largest record (max_request_size {max_request_size} + {ENTRY_OVERHEAD}) and be at most 4 GiB",
                self.segment_bytes
            )));
        }
        if self.max_bytes < self.segment_bytes {
            return Err(OutboxError::Config(format!(
                "max_bytes {} must be at least segment_bytes {}",
                self.max_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// Why the outbox could not be opened or could not store a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The outbox settings are invalid.
    #[error("invalid outbox configuration: {0}")]
    Config(String),
    /// The outbox log failed (I/O error, disk full, failed fsync, locked by another producer).
    #[error("outbox log: {0}")]
    Log(String),
    /// The outbox holds an entry that cannot be decoded back into a record.
    #[error("outbox entry at offset {offset} is unreadable: {reason}")]
    Corrupt {
        /// The entry's offset in the outbox log.
        offset: Offset,
        /// What is wrong with it.
        reason: String,
    },
    /// The outbox's writer thread is gone (the outbox was closed).
    #[error("the outbox is closed")]
    Closed,
}

impl From<LogError> for OutboxError {
    fn from(e: LogError) -> Self {
        OutboxError::Log(e.to_string())
    }
}

/// A record found pending when the outbox was opened.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Its entry's offset in the outbox log.
    pub(crate) offset: Offset,
    pub(crate) record: ProducerRecord,
}

/// A batch found pending with a usable stamp: to be sent again exactly as stamped.
#[derive(Debug)]
pub(crate) struct PendingBatch {
    pub(crate) partition: i32,
    pub(crate) identity: ProducerIdentity,
    pub(crate) base_sequence: i32,
    /// Its records in batch order.
    pub(crate) records: Vec<Pending>,
}

/// What a newly opened outbox found pending.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Stamped batches, in the order they were first stamped (per partition: sequence order).
    pub(crate) batches: Vec<PendingBatch>,
    /// Records to send as new ones, oldest first.
    pub(crate) records: Vec<Pending>,
}

impl Recovered {
    /// Records in total.
    pub(crate) fn len(&self) -> usize {
        self.records.len() + self.batches.iter().map(|b| b.records.len()).sum::<usize>()
    }
}

/// The open outbox: a handle to its writer thread.
#[derive(Debug)]
pub(crate) struct Outbox {
    ops: std_mpsc::Sender<Op>,
    shared: Arc<Shared>,
    journal: Journal,
}

/// What the writer thread and the handles share.
#[derive(Debug)]
struct Shared {
    /// Bytes in the outbox log now.
    bytes: AtomicU64,
    max_bytes: u64,
    /// Signalled whenever the log shrinks.
    room: Notify,
    closed: AtomicBool,
}

/// The sender task's side of the outbox: writes stamps and markers straight to the log's page
/// cache (no fsync), in the order of the calls.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    log: Arc<FileLog>,
    ops: std_mpsc::Sender<Op>,
}

impl Journal {
    /// Records that the entries at `offsets` (in batch order) are about to be sent to
    /// `partition` with `identity` from `base_sequence` on. Returns once the stamp is in the
    /// page cache: it survives kill -9 of the process from then on.
    pub(crate) fn stamp(
        &self,
        partition: i32,
        identity: ProducerIdentity,
        base_sequence: i32,
        offsets: &[Offset],
    ) -> Result<(), OutboxError> {
        let value = encode_stamp(partition, identity, base_sequence, offsets);
        self.write_marker(STAMP_HEADER, &value)
    }

    /// Records that the entries at `offsets` have a final outcome (`acknowledged`, or failed
    /// and handed back) — written before the callers hear of it — and lets the writer give
    /// their space back. A marker that cannot be written is logged: its records are sent again
    /// after a restart (a possible duplicate, never a loss).
    pub(crate) fn finish(&self, offsets: &[Offset], acknowledged: bool) {
        if offsets.is_empty() {
            return;
        }
        let header = if acknowledged {
            ACKED_HEADER
        } else {
            DONE_HEADER
        };
        if let Err(error) = self.write_marker(header, &encode_offsets(offsets)) {
            tracing::error!(%error, "the producer outbox could not record finished records");
        }
        let _ = self.ops.send(Op::Release(offsets.to_vec()));
    }

    fn write_marker(&self, header: &str, value: &[u8]) -> Result<(), OutboxError> {
        let now = wall_clock_ms();
        let mut builder = BatchBuilder::new(now);
        builder.push(now, None, Some(value), [(header.as_bytes(), None)]);
        let mut bytes = builder.build();
        self.log.write(&mut bytes, 0)?;
        Ok(())
    }
}

enum Op {
    Store(ProducerRecord, oneshot::Sender<Result<Offset, OutboxError>>),
    /// These entries are finished (their marker is written): give their space back.
    Release(Vec<Offset>),
    Close(oneshot::Sender<Result<(), OutboxError>>),
}

impl Outbox {
    /// Opens (creating, or recovering after a crash) the outbox in `config.dir` and returns it
    /// with every pending record. Blocking file I/O.
    pub(crate) fn open(config: &OutboxConfig) -> Result<(Outbox, Recovered), OutboxError> {
        let log_config = LogConfig {
            flush: config.flush,
            segment_bytes: config.segment_bytes,
            retention_age: None,
            retention_bytes: None,
            max_batch_bytes: u32::try_from(config.segment_bytes).unwrap_or(u32::MAX),
            ..LogConfig::default()
        };
        let log = Arc::new(FileLog::open(&config.dir, log_config)?);
        let group_limit = MAX_GROUP_BYTES
            .min(usize::try_from(config.segment_bytes / 4).unwrap_or(MAX_GROUP_BYTES));
        let scanned = scan(&log)?;
        let (ops, receiver) = std_mpsc::channel();
        let journal = Journal {
            log: log.clone(),
            ops: ops.clone(),
        };
        // Batches known acknowledged from a sibling's marker: recorded, so they are final.
        if !scanned.acknowledged.is_empty() {
            journal.write_marker(ACKED_HEADER, &encode_offsets(&scanned.acknowledged))?;
        }
        let recovered = scanned.recovered;
        let pending = recovered
            .records
            .iter()
            .map(|p| p.offset)
            .chain(
                recovered
                    .batches
                    .iter()
                    .flat_map(|b| b.records.iter().map(|p| p.offset)),
            )
            .collect();
        let shared = Arc::new(Shared {
            bytes: AtomicU64::new(log.size_bytes()),
            max_bytes: config.max_bytes,
            room: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let mut writer = Writer {
            log,
            group_limit,
            pending,
            shared: shared.clone(),
            deleted_below: 0,
        };
        writer.release_space();
        std::thread::Builder::new()
            .name("staunch-outbox".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| OutboxError::Log(format!("starting the outbox thread: {e}")))?;
        Ok((
            Outbox {
                ops,
                shared,
                journal,
            },
            recovered,
        ))
    }

    /// The handle the sender task writes stamps and markers through.
    pub(crate) fn journal(&self) -> Journal {
        self.journal.clone()
    }

    /// Writes `record` to the outbox and returns once it is as durable as the flush policy
    /// promises, with its entry's offset. Waits up to `max_block` while the outbox is over its
    /// size limit. A record without a timestamp gets the current time first, so a record sent
    /// again after a crash keeps the time it was accepted.
    pub(crate) async fn store(
        &self,
        mut record: ProducerRecord,
        max_block: Duration,
    ) -> Result<(ProducerRecord, Offset), (ProducerRecord, OutboxStoreError)> {
        if record.timestamp.is_none() {
            record.timestamp = Some(wall_clock_ms());
        }
        if let Err(error) = self.wait_for_room(max_block).await {
            return Err((record, error));
        }
        let (reply, answer) = oneshot::channel();
        if self.ops.send(Op::Store(record.clone(), reply)).is_err() {
            return Err((record, OutboxStoreError::Failed(OutboxError::Closed)));
        }
        match answer.await {
            Ok(Ok(offset)) => Ok((record, offset)),
            Ok(Err(error)) => Err((record, OutboxStoreError::Failed(error))),
            Err(_) => Err((record, OutboxStoreError::Failed(OutboxError::Closed))),
        }
    }

    async fn wait_for_room(&self, max_block: Duration) -> Result<(), OutboxStoreError> {
        let deadline = tokio::time::Instant::now() + max_block;
        loop {
            let notified = self.shared.room.notified();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(OutboxStoreError::Failed(OutboxError::Closed));
            }
            let bytes = self.shared.bytes.load(Ordering::Acquire);
            if bytes < self.shared.max_bytes {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(OutboxStoreError::Full {
                    bytes,
                    max_bytes: self.shared.max_bytes,
                });
            }
        }
    }

    /// Bytes the outbox log holds now (entries still pending, finished ones not yet given
    /// back, stamps and markers).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Acquire)
    }

    /// Syncs and closes the log (marking a clean shutdown) once every earlier store and
    /// release is done. Later stores fail with [`OutboxError::Closed`].
    pub(crate) async fn close(&self) -> Result<(), OutboxError> {
        let (reply, answer) = oneshot::channel();
        if self.ops.send(Op::Close(reply)).is_err() {
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }
}

/// Why [`Outbox::store`] did not store a record.
#[derive(Debug)]
pub(crate) enum OutboxStoreError {
    /// Over the size limit for the whole `max_block`.
    Full { bytes: u64, max_bytes: u64 },
    /// The log refused it.
    Failed(OutboxError),
}

/// The writer thread's state: the log and which entries are still pending.
struct Writer {
    log: Arc<FileLog>,
    /// Largest group written as one batch.
    group_limit: usize,
    pending: BTreeSet<Offset>,
    shared: Arc<Shared>,
    /// Segments wholly below this offset were already deleted.
    deleted_below: Offset,
}

impl Writer {
    fn run(mut self, ops: std_mpsc::Receiver<Op>) {
        while let Ok(first) = ops.recv() {
            let mut stores = Vec::new();
            let mut released = Vec::new();
            let mut close = None;
            let mut group_bytes = 0usize;
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Store(record, reply) => {
                        group_bytes += record.buffered_size();
                        stores.push((record, reply));
                    }
                    Op::Release(offsets) => released.extend(offsets),
                    Op::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if group_bytes < self.group_limit {
                    next = ops.try_recv().ok();
                }
            }
            if !stores.is_empty() {
                self.store(stores);
            }
            if !released.is_empty() {
                for offset in &released {
                    self.pending.remove(offset);
                }
                self.release_space();
            }
            if let Some(reply) = close {
                self.shared.closed.store(true, Ordering::Release);
                self.shared.room.notify_waiters();
                let _ = reply.send(self.log.close().map_err(OutboxError::from));
                return;
            }
        }
        // Every handle and journal is gone without a close: leave the log as a crash would
        // (recovery on the next open), after pushing out what was written.
        let _ = self.log.flush();
    }

    /// Writes one group of entries (one fsync under `always`) and answers each store.
    fn store(
        &mut self,
        stores: Vec<(ProducerRecord, oneshot::Sender<Result<Offset, OutboxError>>)>,
    ) {
        let mut bytes = Vec::new();
        for chunk in chunk_by_size(&stores, self.group_limit) {
            bytes.extend_from_slice(&encode_entries(chunk.iter().map(|(r, _)| r)));
        }
        let appended = self.log.append(&mut bytes, 0);
        // The size is published before any store is answered, so a caller that checks it
        // after its store returned sees its own record counted.
        self.shared
            .bytes
            .store(self.log.size_bytes(), Ordering::Release);
        match appended {
            Ok(info) => {
                for (i, (_, reply)) in stores.into_iter().enumerate() {
                    let offset = info.base_offset + i as Offset;
                    self.pending.insert(offset);
                    let _ = reply.send(Ok(offset));
                }
            }
            Err(error) => {
                tracing::error!(%error, "the producer outbox could not store records");
                let error = OutboxError::from(error);
                for (_, reply) in stores {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Deletes the segments wholly below the oldest pending entry.
    fn release_space(&mut self) {
        let watermark = self
            .pending
            .first()
            .copied()
            .unwrap_or_else(|| self.log.log_end());
        if watermark > self.deleted_below {
            match self.log.delete_segments_before(watermark) {
                Ok(_) => self.deleted_below = watermark,
                Err(error) => tracing::warn!(%error, "the producer outbox could not free space"),
            }
        }
        self.shared
            .bytes
            .store(self.log.size_bytes(), Ordering::Release);
        self.shared.room.notify_waiters();
    }
}

/// Splits a group of stores into runs of at most `limit` bytes (each run one batch; a record
/// bigger than `limit` is a run of its own).
fn chunk_by_size<T>(stores: &[(ProducerRecord, T)], limit: usize) -> Vec<&[(ProducerRecord, T)]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, (record, _)) in stores.iter().enumerate() {
        let record_size = record.buffered_size();
        if i > start && size + record_size > limit {
            chunks.push(&stores[start..i]);
            start = i;
            size = 0;
        }
        size += record_size;
    }
    if start < stores.len() {
        chunks.push(&stores[start..]);
    }
    chunks
}

/// One v2 batch holding an entry per record.
fn encode_entries<'a>(records: impl Iterator<Item = &'a ProducerRecord>) -> Vec<u8> {
    let mut builder: Option<BatchBuilder> = None;
    for record in records {
        let timestamp = record.timestamp.unwrap_or_else(wall_clock_ms);
        let builder = builder.get_or_insert_with(|| BatchBuilder::new(timestamp));
        let partition = record.partition.map(i32::to_be_bytes);
        let placement = [
            (TOPIC_HEADER.as_bytes(), Some(record.topic.as_bytes())),
            (
                PARTITION_HEADER.as_bytes(),
                partition.as_ref().map(|p| &p[..]),
            ),
        ];
        let own = record
            .headers
            .iter()
            .map(|h| (h.key.as_bytes(), h.value.as_deref()));
        builder.push(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            placement.into_iter().chain(own),
        );
    }
    builder.map(BatchBuilder::build).unwrap_or_default()
}

/// What [`scan`] learned from the log.
#[derive(Debug, Default)]
struct Scanned {
    recovered: Recovered,
    /// Entries without a marker whose batch is known acknowledged (a sibling in the same
    /// stamped batch has an acknowledged marker): final, to be marked so.
    acknowledged: Vec<Offset>,
}

/// A stamp as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StampRecord {
    partition: i32,
    identity: ProducerIdentity,
    base_sequence: i32,
    offsets: Vec<Offset>,
}

/// Reads the whole log and sorts what is pending into stamped batches to send again as they
/// were, and records to send as new ones (see the module docs).
fn scan(log: &FileLog) -> Result<Scanned, OutboxError> {
    let mut entries = BTreeMap::new();
    // Entry offset -> acknowledged (true) or failed and handed back (false).
    let mut finished: HashMap<Offset, bool> = HashMap::new();
    let mut stamps: Vec<StampRecord> = Vec::new();
    let mut from = log.earliest();
    let end = log.log_end();
    while from < end {
        let read = log.read(from, 4 << 20)?;
        if read.next_offset <= from {
            break;
        }
        for batch in batches(&read.bytes) {
            let batch = batch.map_err(|e| corrupt(from, e))?;
            let base = batch.base_offset();
            for record in batch.records().map_err(|e| corrupt(base, e))? {
                let record = record.map_err(|e| corrupt(base, e))?;
                if record.offset < from {
                    continue;
                }
                let value = record.value.unwrap_or_default();
                match record.headers.first() {
                    Some((key, _)) if *key == DONE_HEADER.as_bytes() => {
                        for offset in decode_offsets(value) {
                            finished.entry(offset).or_insert(false);
                        }
                    }
                    Some((key, _)) if *key == ACKED_HEADER.as_bytes() => {
                        for offset in decode_offsets(value) {
                            finished.insert(offset, true);
                        }
                    }
                    Some((key, _)) if *key == STAMP_HEADER.as_bytes() => {
                        let stamp = decode_stamp(value)
                            .ok_or_else(|| corrupt(record.offset, "stamp too short"))?;
                        stamps.push(stamp);
                    }
                    _ => {
                        entries.insert(record.offset, decode_entry(&record)?);
                    }
                }
            }
        }
        from = read.next_offset;
    }
    Ok(regroup(entries, &finished, stamps))
}

/// What opening an outbox over `log` finds: see [`replay_plan`].
#[doc(hidden)]
#[derive(Debug)]
pub struct ReplayPlan {
    /// Stamped batches to send again exactly as stamped: partition, producer identity, base
    /// sequence, and the entries (offset, record) in batch order.
    #[allow(clippy::type_complexity)]
    pub batches: Vec<(i32, ProducerIdentity, i32, Vec<(Offset, ProducerRecord)>)>,
    /// Entries to send as new records, oldest first.
    pub records: Vec<(Offset, ProducerRecord)>,
    /// Entries without a marker that are final because their stamped batch was acknowledged.
    pub acknowledged: Vec<Offset>,
}

/// Reads `log` as opening an outbox over it does, and returns what would be sent again, or why
/// the outbox cannot be opened. For the fuzz targets only (`fuzz/fuzz_targets/outbox_replay.rs`):
/// the outbox's public way in, [`crate::Producer::with_outbox`], needs a runtime and a broker
/// and starts sending. Not a stable API.
#[doc(hidden)]
pub fn replay_plan(log: &FileLog) -> Result<ReplayPlan, OutboxError> {
    let scanned = scan(log)?;
    let entries = |records: Vec<Pending>| {
        records
            .into_iter()
            .map(|p| (p.offset, p.record))
            .collect::<Vec<_>>()
    };
    Ok(ReplayPlan {
        batches: scanned
            .recovered
            .batches
            .into_iter()
            .map(|b| (b.partition, b.identity, b.base_sequence, entries(b.records)))
            .collect(),
        records: entries(scanned.recovered.records),
        acknowledged: scanned.acknowledged,
    })
}

/// Sorts the entries without a marker into stamped batches and plain records.
///
/// A stamp is usable when it lists each of its entries once, is the latest stamp of every
/// entry it lists, every one of those entries is still in the log, none has a marker, and its
/// identity is the one its partition was stamped with last. A stamp whose batch has an
/// acknowledged entry makes the rest of the batch acknowledged too (the broker takes a batch
/// whole). Anything else is sent as new.
fn regroup(
    mut entries: BTreeMap<Offset, ProducerRecord>,
    finished: &HashMap<Offset, bool>,
    stamps: Vec<StampRecord>,
) -> Scanned {
    let mut latest: HashMap<Offset, usize> = HashMap::new();
    for (i, stamp) in stamps.iter().enumerate() {
        for offset in &stamp.offsets {
            latest.insert(*offset, i);
        }
    }
    let mut scanned = Scanned::default();
    for (i, stamp) in stamps.iter().enumerate() {
        let current = stamp.offsets.iter().all(|o| latest.get(o) == Some(&i));
        if current && stamp.offsets.iter().any(|o| finished.get(o) == Some(&true)) {
            for offset in &stamp.offsets {
                if entries.remove(offset).is_some() && !finished.contains_key(offset) {
                    scanned.acknowledged.push(*offset);
                }
            }
        }
    }
    entries.retain(|offset, _| !finished.contains_key(offset));
    // The identity each partition (by topic) was stamped with last.
    let mut last_identity: HashMap<(String, i32), ProducerIdentity> = HashMap::new();
    let usable: Vec<bool> = stamps
        .iter()
        .enumerate()
        .map(|(i, stamp)| {
            // A stamp listing an entry twice was never written by a producer: its batch
            // cannot be rebuilt as it was sent, so its entries go out as new records.
            let mut listed = BTreeSet::new();
            !stamp.offsets.is_empty()
                && stamp.offsets.iter().all(|o| listed.insert(*o))
                && stamp
                    .offsets
                    .iter()
                    .all(|o| latest.get(o) == Some(&i) && entries.contains_key(o))
        })
        .collect();
    for (i, stamp) in stamps.iter().enumerate() {
        if usable[i] {
            let topic = entries[&stamp.offsets[0]].topic.clone();
            last_identity.insert((topic, stamp.partition), stamp.identity);
        }
    }
    for (i, stamp) in stamps.into_iter().enumerate() {
        if !usable[i] {
            continue;
        }
        let topic = entries[&stamp.offsets[0]].topic.clone();
        let same_topic = stamp.offsets.iter().all(|o| entries[o].topic == topic);
        if !same_topic || last_identity.get(&(topic, stamp.partition)) != Some(&stamp.identity) {
            continue;
        }
        let records = stamp
            .offsets
            .iter()
            .filter_map(|&offset| {
                entries
                    .remove(&offset)
                    .map(|record| Pending { offset, record })
            })
            .collect();
        scanned.recovered.batches.push(PendingBatch {
            partition: stamp.partition,
            identity: stamp.identity,
            base_sequence: stamp.base_sequence,
            records,
        });
    }
    scanned.recovered.records = entries
        .into_iter()
        .map(|(offset, record)| Pending { offset, record })
        .collect();
    scanned
}

/// A stamp's value: producer id (`i64`), epoch (`i16`), base sequence (`i32`), partition
/// (`i32`), then the entries' offsets (`i64` each), all big-endian.
fn encode_stamp(
    partition: i32,
    identity: ProducerIdentity,
    base_sequence: i32,
    offsets: &[Offset],
) -> Vec<u8> {
    let mut value = Vec::with_capacity(STAMP_FIXED + offsets.len() * 8);
    value.extend_from_slice(&identity.id.to_be_bytes());
    value.extend_from_slice(&identity.epoch.to_be_bytes());
    value.extend_from_slice(&base_sequence.to_be_bytes());
    value.extend_from_slice(&partition.to_be_bytes());
    value.extend_from_slice(&encode_offsets(offsets));
    value
}

fn decode_stamp(value: &[u8]) -> Option<StampRecord> {
    let fixed = value.get(..STAMP_FIXED)?;
    let id = i64::from_be_bytes(fixed[0..8].try_into().ok()?);
    let epoch = i16::from_be_bytes(fixed[8..10].try_into().ok()?);
    let base_sequence = i32::from_be_bytes(fixed[10..14].try_into().ok()?);
    let partition = i32::from_be_bytes(fixed[14..18].try_into().ok()?);
    Some(StampRecord {
        partition,
        identity: ProducerIdentity { id, epoch },
        base_sequence,
        offsets: decode_offsets(&value[STAMP_FIXED..]).collect(),
    })
}

fn encode_offsets(offsets: &[Offset]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_be_bytes()).collect()
}

fn decode_offsets(value: &[u8]) -> impl Iterator<Item = Offset> + '_ {
    value.chunks_exact(8).map(|chunk| {
        let mut be = [0u8; 8];
        be.copy_from_slice(chunk);
        Offset::from_be_bytes(be)
    })
}

/// An entry back as the record the caller gave.
fn decode_entry(record: &staunch_core::batch::Record<'_>) -> Result<ProducerRecord, OutboxError> {
    let offset = record.offset;
    let (topic, partition, own) = match &record.headers[..] {
        [(t, Some(topic)), (p, partition), own @ ..]
            if *t == TOPIC_HEADER.as_bytes() && *p == PARTITION_HEADER.as_bytes() =>
        {
            (topic, partition, own)
        }
        _ => return Err(corrupt(offset, "no topic and partition headers")),
    };
    let topic =
        String::from_utf8(topic.to_vec()).map_err(|_| corrupt(offset, "topic is not UTF-8"))?;
    let partition = match partition {
        None => None,
        Some(be) => {
            Some(i32::from_be_bytes((*be).try_into().map_err(|_| {
                corrupt(offset, "partition header is not 4 bytes")
            })?))
        }
    };
    Ok(ProducerRecord {
        topic,
        partition,
        key: record.key.map(Bytes::copy_from_slice),
        value: record.value.map(Bytes::copy_from_slice),
        headers: own
            .iter()
            .map(|(k, v)| Header {
                key: String::from_utf8_lossy(k).into_owned(),
                value: v.map(Bytes::copy_from_slice),
            })
            .collect(),
        timestamp: Some(record.timestamp),
    })
}

fn corrupt(offset: Offset, reason: impl ToString) -> OutboxError {
    OutboxError::Corrupt {
        offset,
        reason: reason.to_string(),
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<ProducerRecord> {
        vec![
            ProducerRecord::new("orders", "v0").with_key("k0"),
            ProducerRecord {
                topic: "payments".into(),
                partition: Some(3),
                key: Some(Bytes::new()),
                value: None,
                headers: vec![
                    Header::new("trace", "abc"),
                    Header {
                        key: "empty".into(),
                        value: None,
                    },
                ],
                timestamp: Some(1_700_000_000_000),
            },
            ProducerRecord::new("orders", vec![7u8; 3000]),
        ]
    }

    fn config(dir: &std::path::Path) -> OutboxConfig {
        OutboxConfig {
            segment_bytes: 4096,
            ..OutboxConfig::new(dir)
        }
    }

    /// Opens the outbox, retrying while the previous writer thread still holds the lock.
    fn reopen(config: &OutboxConfig) -> (Outbox, Recovered) {
        for _ in 0..200 {
            match Outbox::open(config) {
                Ok(opened) => return opened,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Outbox::open(config).expect("outbox reopens")
    }

    async fn store_all(outbox: &Outbox, records: Vec<ProducerRecord>) -> Vec<Offset> {
        let mut offsets = Vec::new();
        for record in records {
            offsets.push(
                outbox
                    .store(record, Duration::from_secs(1))
                    .await
                    .unwrap()
                    .1,
            );
        }
        offsets
    }

    fn id(id: i64, epoch: i16) -> ProducerIdentity {
        ProducerIdentity { id, epoch }
    }

    #[tokio::test]
    async fn stored_records_come_back_exactly_until_they_are_done() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (outbox, recovered) = Outbox::open(&config).unwrap();
        assert_eq!(recovered.len(), 0);
        let mut stored = Vec::new();
        let mut offsets = Vec::new();
        for record in records() {
            let (record, offset) = outbox.store(record, Duration::from_secs(1)).await.unwrap();
            assert!(record.timestamp.is_some(), "stamped at acceptance");
            stored.push(record);
            offsets.push(offset);
        }
        // The first record finishes; the others are still owed when the "process dies".
        outbox.journal().finish(&offsets[..1], true);
        drop(outbox);
        let (outbox, recovered) = reopen(&config);
        assert!(recovered.batches.is_empty(), "nothing was stamped");
        let back: Vec<ProducerRecord> =
            recovered.records.iter().map(|p| p.record.clone()).collect();
        assert_eq!(back, stored[1..]);
        // Finish them all and close cleanly: nothing is pending any more.
        let rest: Vec<Offset> = recovered.records.iter().map(|p| p.offset).collect();
        outbox.journal().finish(&rest, false);
        outbox.close().await.unwrap();
        let (_outbox, recovered) = reopen(&config);
        assert_eq!(recovered.len(), 0);
    }

    #[tokio::test]
    async fn stamped_batches_come_back_as_they_were_sent() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (outbox, _) = Outbox::open(&config).unwrap();
        let values = |n: usize| {
            (0..n)
                .map(|i| ProducerRecord::new("t", format!("v{i}")))
                .collect::<Vec<_>>()
        };
        let o = store_all(&outbox, values(12)).await;
        let journal = outbox.journal();
        // Partition 0 under (7, 0): [0, 2] acknowledged, [1, 3] pending, [4] pending;
        // [5] stamped under (7, 0), then again under (7, 1): the newer stamp counts.
        journal.stamp(0, id(7, 0), 0, &[o[0], o[2]]).unwrap();
        journal.stamp(0, id(7, 0), 2, &[o[1], o[3]]).unwrap();
        journal.stamp(1, id(7, 0), 0, &[o[4]]).unwrap();
        journal.stamp(2, id(7, 0), 0, &[o[5]]).unwrap();
        journal.stamp(2, id(7, 1), 0, &[o[5]]).unwrap();
        journal.finish(&[o[0], o[2]], true);
        // Partition 3: one of two acknowledged before the crash: the other is too.
        journal.stamp(3, id(7, 0), 0, &[o[6], o[7]]).unwrap();
        journal.finish(&[o[6]], true);
        // Partition 4: one of two failed and handed back: the other is sent as new.
        journal.stamp(4, id(7, 0), 0, &[o[8], o[9]]).unwrap();
        journal.finish(&[o[8]], false);
        // Partition 5: an older identity's stamp behind a newer one is not reused.
        journal.stamp(5, id(7, 0), 0, &[o[10]]).unwrap();
        journal.stamp(5, id(8, 0), 0, &[o[11]]).unwrap();
        drop(journal);
        drop(outbox);

        let (outbox, recovered) = reopen(&config);
        let batches: Vec<(i32, ProducerIdentity, i32, Vec<Offset>)> = recovered
            .batches
            .iter()
            .map(|b| {
                let offsets = b.records.iter().map(|p| p.offset).collect();
                (b.partition, b.identity, b.base_sequence, offsets)
            })
            .collect();
        assert_eq!(
            batches,
            vec![
                (0, id(7, 0), 2, vec![o[1], o[3]]),
                (1, id(7, 0), 0, vec![o[4]]),
                (2, id(7, 1), 0, vec![o[5]]),
                (5, id(8, 0), 0, vec![o[11]]),
            ]
        );
        assert_eq!(
            recovered.batches[0].records[1].record.value.as_deref(),
            Some(&b"v3"[..])
        );
        let plain: Vec<Offset> = recovered.records.iter().map(|p| p.offset).collect();
        assert_eq!(plain, vec![o[9], o[10]]);
        // The inferred acknowledgement of o[7] was recorded: the next open agrees without it.
        drop(outbox);
        let (_outbox, again) = reopen(&config);
        assert_eq!(again.len(), recovered.len());
        assert!(again.records.iter().all(|p| p.offset != o[7]));
    }

    #[tokio::test]
    async fn finished_records_give_their_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(&config(dir.path())).unwrap();
        let records = (0..100)
            .map(|i| ProducerRecord::new("t", vec![i as u8; 500]))
            .collect();
        let offsets = store_all(&outbox, records).await;
        let full = outbox.size_bytes();
        assert!(full > 50_000, "{full}");
        // One old record still pending pins everything after it.
        outbox.journal().finish(&offsets[1..], true);
        outbox.close().await.unwrap();
        let (outbox, recovered) = reopen(&config(dir.path()));
        assert_eq!(recovered.len(), 1);
        assert!(
            outbox.size_bytes() > full / 2,
            "the pending head keeps its segments"
        );
        outbox
            .journal()
            .finish(&[recovered.records[0].offset], true);
        // The close waits behind the release in the writer's queue.
        outbox.close().await.unwrap();
        let (outbox, recovered) = reopen(&config(dir.path()));
        assert_eq!(recovered.len(), 0);
        assert!(
            outbox.size_bytes() < 8192,
            "at most the active segment is left: {}",
            outbox.size_bytes()
        );
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_after_max_block_and_takes_records_again_once_drained() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_bytes: 8 * 1024,
            ..config(dir.path())
        };
        let (outbox, _) = Outbox::open(&config).unwrap();
        let mut offsets = Vec::new();
        while outbox.size_bytes() < config.max_bytes {
            let record = ProducerRecord::new("t", vec![1u8; 1000]);
            offsets.push(
                outbox
                    .store(record, Duration::from_secs(1))
                    .await
                    .unwrap()
                    .1,
            );
        }
        let refused = outbox
            .store(ProducerRecord::new("t", "late"), Duration::from_millis(50))
            .await;
        assert!(matches!(refused, Err((_, OutboxStoreError::Full { .. }))));
        outbox.journal().finish(&offsets, true);
        let accepted = outbox
            .store(ProducerRecord::new("t", "late"), Duration::from_secs(5))
            .await;
        assert!(accepted.is_ok(), "room again once the records finished");
    }

    #[test]
    fn stamps_round_trip() {
        let value = encode_stamp(-1, id(i64::MAX, 3), i32::MAX, &[0, 5, i64::MAX]);
        assert_eq!(
            decode_stamp(&value),
            Some(StampRecord {
                partition: -1,
                identity: id(i64::MAX, 3),
                base_sequence: i32::MAX,
                offsets: vec![0, 5, i64::MAX],
            })
        );
        assert_eq!(decode_stamp(&value[..STAMP_FIXED - 1]), None);
    }

    /// A stamp that lists an entry twice (damage: no producer writes one) is not reused: the
    /// batch could not be rebuilt as it was sent, so its entries go out as new records.
    #[test]
    fn a_stamp_listing_an_entry_twice_is_not_reused() {
        let entries: BTreeMap<Offset, ProducerRecord> = (0..2)
            .map(|o| (o, ProducerRecord::new("t", "v").with_partition(1)))
            .collect();
        let stamp = StampRecord {
            partition: 1,
            identity: id(5, 0),
            base_sequence: 0,
            offsets: vec![0, 0, 1],
        };
        let scanned = regroup(entries.clone(), &HashMap::new(), vec![stamp.clone()]);
        assert!(scanned.recovered.batches.is_empty());
        let sent_as_new: Vec<Offset> = scanned.recovered.records.iter().map(|p| p.offset).collect();
        assert_eq!(sent_as_new, vec![0, 1]);
        // Without the duplicate the same stamp is reused.
        let stamp = StampRecord {
            offsets: vec![0, 1],
            ..stamp
        };
        let scanned = regroup(entries, &HashMap::new(), vec![stamp]);
        assert_eq!(scanned.recovered.batches.len(), 1);
        assert!(scanned.recovered.records.is_empty());
    }

    #[test]
    fn an_entry_without_its_placement_headers_is_reported_corrupt() {
        let bytes = BatchBuilder::new(0)
            .record_at(0, None, Some(b"v"), &[(b"other", None)])
            .build();
        let batch = RecordBatch::parse(&bytes).unwrap();
        let record = batch.records().unwrap().next().unwrap().unwrap();
        assert!(matches!(
            decode_entry(&record),
            Err(OutboxError::Corrupt { .. })
        ));
    }
}
