//! The durable outbox: records accepted by a producer are written to a local
//! [`staunch_log::FileLog`] before `send` returns, marked done once their outcome is final, and
//! handed back for sending again when the producer is reopened after a crash.
//!
//! # On disk
//!
//! One log directory holds two kinds of records, both as Kafka v2 records:
//!
//! - an **entry** per accepted record: the record's own key, value, timestamp and headers,
//!   preceded by the headers [`TOPIC_HEADER`] (the topic) and [`PARTITION_HEADER`] (the
//!   partition the caller chose as a big-endian `i32`, or a null value);
//! - a **done marker**: a record whose only header is [`DONE_HEADER`], its value the offsets of
//!   the entries that reached a final outcome (acknowledged, or failed and handed back to the
//!   caller), as big-endian `i64`s.
//!
//! On open, every entry without a marker is pending and is sent again. Whole segments below the
//! oldest pending entry are deleted as records complete, so the directory holds about what is
//! still in flight plus one segment.
//!
//! # What survives what
//!
//! With [`FlushPolicy::Always`] (the default) an entry is fsynced before `send` returns: the
//! record survives kill -9 and power loss. With [`FlushPolicy::Os`] it survives kill -9 only.
//! Done markers are written without waiting for an fsync; a marker lost in a crash makes its
//! record be sent once more after restart (**at-least-once**, never lost): a record acknowledged
//! just before a crash can be duplicated.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use bytes::Bytes;
#[cfg(test)]
use staunch_core::RecordBatch;
use staunch_core::batch::batches;
use staunch_core::{BatchBuilder, Offset};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogError, LogStore};
use tokio::sync::{Notify, oneshot};

use crate::record::{Header, ProducerRecord};

/// Header naming an entry's topic (always the entry's first header).
pub const TOPIC_HEADER: &str = "staunch.outbox.topic";
/// Header holding the partition the caller chose (big-endian `i32`; null: none chosen), always
/// an entry's second header.
pub const PARTITION_HEADER: &str = "staunch.outbox.partition";
/// Header marking a done marker; its record value lists finished entry offsets.
pub const DONE_HEADER: &str = "staunch.outbox.done";

/// Largest group of records written as one outbox batch; bigger groups are split.
const MAX_GROUP_BYTES: usize = 1 << 20;

/// Room an entry needs beyond the record's own size (placement headers, record framing).
const ENTRY_OVERHEAD: u64 = 1024;

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

/// A record found pending when the outbox was opened, with its ticket.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: ProducerRecord,
    pub(crate) ticket: Ticket,
}

/// The open outbox: a handle to its writer thread.
#[derive(Debug)]
pub(crate) struct Outbox {
    ops: std_mpsc::Sender<Op>,
    shared: Arc<Shared>,
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

/// The right to mark one entry done. Dropped without [`Ticket::done`] (the producer stopped
/// before the record's outcome was final), the entry stays pending and is sent again on the
/// next open.
#[derive(Debug)]
pub(crate) struct Ticket {
    ops: std_mpsc::Sender<Op>,
    offset: Offset,
}

impl Ticket {
    /// The record reached a final outcome the caller was given: its entry is finished.
    pub(crate) fn done(self) {
        // A closed outbox cannot record it; the entry is then sent again on the next open.
        let _ = self.ops.send(Op::Done(self.offset));
    }
}

enum Op {
    Store(ProducerRecord, oneshot::Sender<Result<Offset, OutboxError>>),
    Done(Offset),
    Close(oneshot::Sender<Result<(), OutboxError>>),
}

impl Outbox {
    /// Opens (creating, or recovering after a crash) the outbox in `config.dir` and returns it
    /// with every pending record, oldest first. Blocking file I/O.
    pub(crate) fn open(config: &OutboxConfig) -> Result<(Outbox, Vec<Pending>), OutboxError> {
        let log_config = LogConfig {
            flush: config.flush,
            segment_bytes: config.segment_bytes,
            retention_age: None,
            retention_bytes: None,
            max_batch_bytes: u32::try_from(config.segment_bytes).unwrap_or(u32::MAX),
            ..LogConfig::default()
        };
        let log = FileLog::open(&config.dir, log_config)?;
        let group_limit = MAX_GROUP_BYTES
            .min(usize::try_from(config.segment_bytes / 4).unwrap_or(MAX_GROUP_BYTES));
        let pending_records = scan(&log)?;
        let pending = pending_records.iter().map(|(offset, _)| *offset).collect();
        let shared = Arc::new(Shared {
            bytes: AtomicU64::new(log.size_bytes()),
            max_bytes: config.max_bytes,
            room: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let (ops, receiver) = std_mpsc::channel();
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
        let pending = pending_records
            .into_iter()
            .map(|(offset, record)| Pending {
                record,
                ticket: Ticket {
                    ops: ops.clone(),
                    offset,
                },
            })
            .collect();
        Ok((Outbox { ops, shared }, pending))
    }

    /// Writes `record` to the outbox and returns once it is as durable as the flush policy
    /// promises, with the ticket that finishes it. Waits up to `max_block` while the outbox is
    /// over its size limit. A record without a timestamp gets the current time first, so a
    /// record sent again after a crash keeps the time it was accepted.
    pub(crate) async fn store(
        &self,
        mut record: ProducerRecord,
        max_block: Duration,
    ) -> Result<(ProducerRecord, Ticket), (ProducerRecord, OutboxStoreError)> {
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
            Ok(Ok(offset)) => Ok((
                record,
                Ticket {
                    ops: self.ops.clone(),
                    offset,
                },
            )),
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
    /// back, and done markers).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Acquire)
    }

    /// Writes the remaining done markers, syncs and closes the log (marking a clean shutdown).
    /// Later stores fail with [`OutboxError::Closed`].
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
    log: FileLog,
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
            let mut done = Vec::new();
            let mut close = None;
            let mut group_bytes = 0usize;
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Store(record, reply) => {
                        group_bytes += record.buffered_size();
                        stores.push((record, reply));
                    }
                    Op::Done(offset) => done.push(offset),
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
            if !done.is_empty() {
                self.finish(&done);
            }
            if let Some(reply) = close {
                self.shared.closed.store(true, Ordering::Release);
                self.shared.room.notify_waiters();
                let _ = reply.send(self.log.close().map_err(OutboxError::from));
                return;
            }
        }
        // Every handle and ticket is gone without a close: leave the log as a crash would
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
        match self.log.append(&mut bytes, 0) {
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
        self.shared
            .bytes
            .store(self.log.size_bytes(), Ordering::Release);
    }

    /// Records that `offsets` are finished and gives back the space below the oldest pending
    /// entry.
    fn finish(&mut self, offsets: &[Offset]) {
        for offset in offsets {
            self.pending.remove(offset);
        }
        let mut value = Vec::with_capacity(offsets.len() * 8);
        for offset in offsets {
            value.extend_from_slice(&offset.to_be_bytes());
        }
        let mut builder = BatchBuilder::new(wall_clock_ms());
        builder.push(
            wall_clock_ms(),
            None,
            Some(&value),
            [(DONE_HEADER.as_bytes(), None)],
        );
        let mut marker = builder.build();
        // Not waited for: a lost marker means a duplicate after a crash, never a loss. The next
        // store's fsync (or the close) makes it durable.
        if let Err(error) = self.log.write(&mut marker, 0) {
            tracing::error!(%error, "the producer outbox could not record finished records");
        }
        self.release_space();
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

/// Reads the whole log: the pending entries, decoded, oldest first.
fn scan(log: &FileLog) -> Result<Vec<(Offset, ProducerRecord)>, OutboxError> {
    let mut entries = std::collections::BTreeMap::new();
    let mut finished = BTreeSet::new();
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
                match record.headers.first() {
                    Some((key, _)) if *key == DONE_HEADER.as_bytes() => {
                        for chunk in record.value.unwrap_or_default().chunks_exact(8) {
                            let mut be = [0u8; 8];
                            be.copy_from_slice(chunk);
                            finished.insert(Offset::from_be_bytes(be));
                        }
                    }
                    _ => {
                        entries.insert(record.offset, decode_entry(&record)?);
                    }
                }
            }
        }
        from = read.next_offset;
    }
    entries.retain(|offset, _| !finished.contains(offset));
    Ok(entries.into_iter().collect())
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
    fn reopen(config: &OutboxConfig) -> (Outbox, Vec<Pending>) {
        for _ in 0..200 {
            match Outbox::open(config) {
                Ok(opened) => return opened,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Outbox::open(config).expect("outbox reopens")
    }

    #[tokio::test]
    async fn stored_records_come_back_exactly_until_they_are_done() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (outbox, pending) = Outbox::open(&config).unwrap();
        assert!(pending.is_empty());
        let mut stored = Vec::new();
        let mut tickets = Vec::new();
        for record in records() {
            let (record, ticket) = outbox.store(record, Duration::from_secs(1)).await.unwrap();
            assert!(record.timestamp.is_some(), "stamped at acceptance");
            stored.push(record);
            tickets.push(ticket);
        }
        // The first record finishes; the others are still owed when the "process dies".
        tickets.remove(0).done();
        drop(tickets);
        drop(outbox);
        let (outbox, pending) = reopen(&config);
        let back: Vec<ProducerRecord> = pending.iter().map(|p| p.record.clone()).collect();
        assert_eq!(back, stored[1..]);
        // Finish them all and close cleanly: nothing is pending any more.
        for p in pending {
            p.ticket.done();
        }
        outbox.close().await.unwrap();
        let (_outbox, pending) = reopen(&config);
        assert!(pending.is_empty());
    }

    #[tokio::test]
    async fn finished_records_give_their_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(&config(dir.path())).unwrap();
        let mut tickets = Vec::new();
        for i in 0..100 {
            let record = ProducerRecord::new("t", vec![i as u8; 500]);
            tickets.push(
                outbox
                    .store(record, Duration::from_secs(1))
                    .await
                    .unwrap()
                    .1,
            );
        }
        let full = outbox.size_bytes();
        assert!(full > 50_000, "{full}");
        // One old record still pending pins everything after it.
        let oldest = tickets.remove(0);
        for ticket in tickets {
            ticket.done();
        }
        outbox.close().await.unwrap();
        let (outbox, pending) = reopen(&config(dir.path()));
        assert_eq!(pending.len(), 1);
        assert!(
            outbox.size_bytes() > full / 2,
            "the pending head keeps its segments"
        );
        drop(oldest);
        for p in pending {
            p.ticket.done();
        }
        let (reply, answer) = oneshot::channel();
        // A store after the done marks waits behind them in the writer's queue.
        outbox.ops.send(Op::Close(reply)).unwrap();
        answer.await.unwrap().unwrap();
        let (outbox, pending) = reopen(&config(dir.path()));
        assert!(pending.is_empty());
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
        let mut tickets = Vec::new();
        while outbox.size_bytes() < config.max_bytes {
            let record = ProducerRecord::new("t", vec![1u8; 1000]);
            tickets.push(
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
        for ticket in tickets {
            ticket.done();
        }
        let accepted = outbox
            .store(ProducerRecord::new("t", "late"), Duration::from_secs(5))
            .await;
        assert!(accepted.is_ok(), "room again once the records finished");
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
