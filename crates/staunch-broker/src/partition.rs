//! One partition on this broker: its log, its high watermark and its idempotent-producer state.
//!
//! The producer state survives restarts through snapshots in the partition's directory
//! (`producer_snapshot`): one is written whenever the log rolls a segment and at a clean
//! [`Partition::close`], and [`Partition::open`] loads the newest valid one and replays only the
//! batches after it, so opening reads the log's tail, not all of it.
//!
//! Every method here is synchronous and may block on disk I/O (an append under flush `always`
//! waits for fdatasync); the async broker calls them from blocking threads — all but
//! [`Partition::read_cached`] and [`Partition::log_start_offset_cached`], which never wait.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use staunch_core::batch::batches;
use staunch_core::{BatchError, ErrorCode, Offset};
use staunch_log::{FileLog, LogConfig, LogError, LogStore};

use crate::metrics::PartitionMetrics;
use crate::producer_snapshot::SnapshotDir;
use crate::producer_state::{BatchSeq, ProducerTable, SeqCheck, last_seq_of};
use crate::storage::Storage;

/// Where an appended (or de-duplicated) batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Broker append time (ms), or -1 when the batch keeps producer timestamps.
    pub log_append_time_ms: i64,
    /// The log start offset after the append.
    pub log_start_offset: Offset,
}

/// Records written by [`Partition::write`] whose durability is not yet confirmed; hand it to
/// [`Partition::wait`] before acknowledging them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "written records are acknowledged only after Partition::wait"]
pub struct PendingAppend {
    appended: Appended,
    /// The offset after the last record: everything below it must be durable.
    end: Offset,
    append_time_ms: i64,
}

/// Batches read for a consumer, only below the high watermark.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Whole v2 batches exactly as stored; empty when nothing new is visible.
    pub records: bytes::Bytes,
    /// The high watermark when the read was made.
    pub high_watermark: Offset,
    /// The first offset still in the log.
    pub log_start_offset: Offset,
}

/// A partition hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    log: Arc<FileLog>,
    /// Everything below it is acknowledged and as durable as the flush policy promises; the
    /// only offsets consumers see.
    high_watermark: AtomicI64,
    producers: Mutex<ProducerTable>,
    /// Where producer-state snapshots go; `None` for a partition over a bare log (tests).
    snapshots: Option<SnapshotDir>,
    /// The log's active segment base when the last snapshot was written (or at open): a
    /// different one after an append means the log rolled, and a snapshot is due.
    snapshot_segment: AtomicI64,
    /// Whether the next open rebuilds the producer state without reading the log — the newest
    /// snapshot is at the log end, or the log holds nothing past it — because nothing was
    /// written since the open (or the last truncation). A close then writes no snapshot, so
    /// an idle partition closes without an fsync.
    snapshot_current: AtomicBool,
    /// The topic's record and byte counters (no-ops for a partition opened outside a topic).
    metrics: PartitionMetrics,
    /// `partition{topic, partition}`: entered wherever this partition's work runs on a
    /// blocking thread, so the log lines of that work (the log's own included) name it.
    span: tracing::Span,
}

/// Why a partition refused records or could not acknowledge them: the Kafka error code a
/// producer gets and, where the code alone does not say it (a full disk, a failed or hung
/// disk), a message for the client, which Produce responses carry to it (v8+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendError {
    /// The error code for the produce response.
    pub code: ErrorCode,
    /// What went wrong and what brings the partition back, in words.
    pub message: Option<String>,
}

impl From<ErrorCode> for AppendError {
    /// An error whose code says it all.
    fn from(code: ErrorCode) -> Self {
        AppendError {
            code,
            message: None,
        }
    }
}

impl AppendError {
    /// The error a producer gets for `error`: [`log_error_code`]'s code, and for storage
    /// failures a message saying what happened and what brings the partition back — a full
    /// disk refuses records until space is freed; a failed or hung disk (a failed fsync, or one
    /// that ran past `sync_timeout`) keeps the partition offline until the broker restarts.
    pub fn from_log(error: &LogError) -> Self {
        let message = match error {
            LogError::DiskFull { .. } => Some(format!(
                "{error}; the partition refuses records until space is freed on the disk, \
                 and accepts them again then without a restart"
            )),
            LogError::Failed { reason } => Some(format!(
                "the partition's storage failed; it is offline until the broker restarts: \
                 {reason}"
            )),
            LogError::Io { .. } | LogError::Corrupt { .. } => Some(error.to_string()),
            _ => None,
        };
        AppendError {
            code: log_error_code(error),
            message,
        }
    }
}

/// Maps a log error to the Kafka error a producer or consumer gets, logging what is not the
/// client's fault.
pub fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::InvalidBatch(BatchError::TooLarge { .. }) => ErrorCode::MessageTooLarge,
        LogError::InvalidBatch(BatchError::CrcMismatch { .. }) => ErrorCode::CorruptMessage,
        LogError::InvalidBatch(_) | LogError::EmptyAppend => ErrorCode::CorruptMessage,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::DiskFull { .. } | LogError::Failed { .. } | LogError::Corrupt { .. } => {
            ErrorCode::KafkaStorageError
        }
        LogError::Closed => ErrorCode::NotLeaderOrFollower,
        _ => ErrorCode::KafkaStorageError,
    }
}

impl Partition {
    /// Opens the partition's log in directory `path` of `storage` (running crash recovery),
    /// makes everything recovered durable, and rebuilds the producer state: from the newest
    /// valid producer-state snapshot at or below the recovered log end plus the batches after
    /// it, or from the whole log if there is none. Snapshots beyond the log end are deleted
    /// durably before this returns; damaged ones are ignored (see `producer_snapshot`).
    pub fn open(storage: &Storage, path: &str, config: LogConfig) -> Result<Self, LogError> {
        let log = storage.open_log(path, config)?;
        Self::with_log(log, Some(SnapshotDir::new(storage.clone(), path)))
    }

    /// [`Partition::open`] of partition `index` of `topic`: its records and bytes count in the
    /// topic's metrics ([`crate::metrics`]), and the open (recovery included) and its later
    /// blocking work run in a `partition` span with `topic` and `partition` fields.
    pub fn open_in_topic(
        storage: &Storage,
        topic: &str,
        index: i32,
        path: &str,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        let span = tracing::info_span!(parent: None, "partition", topic, partition = index);
        let mut partition = span.in_scope(|| Self::open(storage, path, config))?;
        partition.metrics = PartitionMetrics::for_topic(topic);
        partition.span = span;
        Ok(partition)
    }

    /// The partition's span (see [`Partition::open_in_topic`]); disabled for a partition
    /// opened outside a topic.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// [`Partition::open`] of an opened log, with its snapshots in `snapshots` (or none).
    fn with_log(log: FileLog, snapshots: Option<SnapshotDir>) -> Result<Self, LogError> {
        // What recovery kept may still be only in the page cache; make it durable before it
        // becomes visible to consumers.
        let end = log.flush()?;
        let (producers, current) = load_producers(&log, snapshots.as_ref(), end)?;
        Ok(Partition {
            snapshot_current: AtomicBool::new(current),
            snapshot_segment: AtomicI64::new(log.active_segment_base()),
            log: Arc::new(log),
            high_watermark: AtomicI64::new(end),
            producers: Mutex::new(producers),
            snapshots,
            metrics: PartitionMetrics::none(),
            span: tracing::Span::none(),
        })
    }

    /// The offset below which records are acknowledged and visible to consumers.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        self.log.earliest()
    }

    /// [`Partition::log_start_offset`], unless that would wait for a writer.
    pub fn log_start_offset_cached(&self) -> Option<Offset> {
        self.log.try_bounds().map(|(earliest, _)| earliest)
    }

    /// The next offset the log assigns.
    pub fn log_end_offset(&self) -> Offset {
        self.log.log_end()
    }

    /// The underlying log.
    pub fn log(&self) -> &FileLog {
        &self.log
    }

    /// Appends the batches of one produce request for this partition: [`write`](Self::write)
    /// then [`wait`](Self::wait). Returns once the records are as durable as the flush policy
    /// promises (after fdatasync under `always`), with the high watermark raised over them.
    pub fn append(&self, records: &mut [u8]) -> Result<Appended, AppendError> {
        let pending = self.write(records)?;
        self.wait(pending)
    }

    /// The in-order half of an append: checks and writes the batches of one produce request,
    /// which fixes their offsets, but does **not** make them durable or visible to consumers —
    /// acknowledge only what [`wait`](Self::wait) returns. Writes to one partition happen in the
    /// order of these calls, so a connection can write its pipelined requests in order and wait
    /// for their durability together (one group fsync).
    ///
    /// Batches from an idempotent producer are checked first: a retry of a stored batch is not
    /// written again (the wait returns the stored batch's offset once it is durable), a gap or a
    /// fenced epoch is refused, and an idempotent request must hold exactly one batch (as in
    /// Kafka).
    pub fn write(&self, records: &mut [u8]) -> Result<PendingAppend, AppendError> {
        let mut count = 0;
        let mut producer = None;
        for batch in batches(records) {
            // Header framing only: the log validates every batch (CRC, records) on append.
            let batch = batch.map_err(|e| log_error_code(&LogError::InvalidBatch(e)))?;
            count += 1;
            if batch.is_transactional() || batch.is_control() {
                // Transactions are not implemented; storing such a batch without markers would
                // show uncommitted data to read_committed consumers.
                return Err(ErrorCode::InvalidRecord.into());
            }
            if batch.producer_id() >= 0 {
                producer = Some(batch);
            }
        }
        if count == 0 {
            return Err(ErrorCode::CorruptMessage.into());
        }
        let Some(batch) = producer else {
            let written = self.write_checked(records);
            if written.is_ok() && self.log.active_segment_base() != self.snapshot_segment() {
                self.snapshot_if_rolled(&self.producers());
            }
            return written;
        };
        if count > 1 {
            return Err(ErrorCode::InvalidRecord.into());
        }
        // Held across check and write: the producer's sequence chain and the log's order agree.
        let mut producers = self.producers();
        let verdict = producers.check(&batch);
        if verdict != SeqCheck::Append
            && let Err(e) = batch.verify_integrity()
        {
            // Answering a corrupt batch as a duplicate (or a gap) would be wrong: nothing is
            // stored, and the producer is told the batch is corrupt. The CRC is checked here
            // only when the log will not check it.
            return Err(log_error_code(&LogError::InvalidBatch(e)).into());
        }
        match verdict {
            SeqCheck::Reject(code) => Err(code.into()),
            // The original may still be waiting for its fsync: the duplicate's answer waits
            // for the same durability.
            SeqCheck::Duplicate(stored) => Ok(PendingAppend {
                appended: Appended {
                    base_offset: stored.base_offset,
                    log_append_time_ms: -1,
                    log_start_offset: self.log.earliest(),
                },
                end: stored.last_offset + 1,
                append_time_ms: stored.append_time_ms,
            }),
            SeqCheck::Append => {
                let key = (batch.producer_id(), batch.producer_epoch());
                let (first_seq, count) = (batch.base_sequence(), batch.record_count());
                let written = self.write_checked(records);
                match &written {
                    Ok(pending) => producers.complete(
                        key,
                        BatchSeq {
                            first_seq,
                            last_seq: last_seq_of(first_seq, count),
                            base_offset: pending.appended.base_offset,
                            last_offset: pending.end - 1,
                            append_time_ms: pending.append_time_ms,
                        },
                    ),
                    Err(_) => producers.abort(key.0),
                }
                if written.is_ok() {
                    self.snapshot_if_rolled(&producers);
                }
                written
            }
        }
    }

    /// Writes a producer-state snapshot at the log end if the log rolled a segment since the
    /// last one. Called with the producer table locked, so the table is exactly the state of
    /// every batch below the log end (idempotent batches are written under the same lock; other
    /// batches do not change it). A failed snapshot is logged, not returned: the log still
    /// holds everything, and the next roll tries again.
    fn snapshot_if_rolled(&self, producers: &ProducerTable) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        let active = self.log.active_segment_base();
        if self.snapshot_segment.swap(active, Ordering::AcqRel) == active {
            return;
        }
        let offset = self.log.log_end();
        if let Err(error) = snapshots.write(producers, offset) {
            tracing::warn!(%error, offset, "writing a producer-state snapshot failed");
        }
    }

    /// The second half of an append: blocks until the written records are as durable as the
    /// flush policy promises, then raises the high watermark over them (making them visible to
    /// consumers) and returns where they landed. Fails if the log failed (an fsync error, or an
    /// fsync that ran past the log's `sync_timeout`): the records must not be acknowledged then.
    /// While the disk hangs this blocks as long as the stuck fsync's caller does: the broker
    /// bounds its own wait (see `ProduceInFlight::durable`).
    pub fn wait(&self, pending: PendingAppend) -> Result<Appended, AppendError> {
        if let Err(error) = self.log.wait_durable(pending.end) {
            tracing::error!(%error, "append not made durable");
            return Err(AppendError::from_log(&error));
        }
        self.high_watermark.fetch_max(pending.end, Ordering::AcqRel);
        Ok(pending.appended)
    }

    fn snapshot_segment(&self) -> Offset {
        self.snapshot_segment.load(Ordering::Acquire)
    }

    fn producers(&self) -> std::sync::MutexGuard<'_, ProducerTable> {
        self.producers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err` if the partition's log refuses appends: it failed (a failed write or fsync), or one
    /// of its fsyncs has run past `sync_timeout` (which fails it now). Never waits for the disk,
    /// so the async produce path can refuse records for a failed disk at once, without queueing
    /// them on a blocking thread behind a hung fsync.
    pub fn check_health(&self) -> Result<(), AppendError> {
        self.log
            .check_health()
            .map_err(|e| AppendError::from_log(&e))
    }

    /// How long the broker waits for this partition's records to become durable before it
    /// answers REQUEST_TIMED_OUT: twice the log's `sync_timeout`. A produce may wait for the
    /// round in progress and then for its own, each of which the log lets run up to
    /// `sync_timeout`; a hung fsync fails the log (and its waiters) sooner than this, so this
    /// bound answers only a produce whose thread is itself stuck in the hung syscall, or one
    /// queued behind it.
    pub fn durable_wait_bound(&self) -> std::time::Duration {
        self.log.config().sync_timeout.saturating_mul(2)
    }

    fn write_checked(&self, records: &mut [u8]) -> Result<PendingAppend, AppendError> {
        self.snapshot_current.store(false, Ordering::Release);
        match self.log.write(records, 0) {
            Ok(info) => {
                self.metrics
                    .records_in
                    .increment((info.last_offset + 1 - info.base_offset) as u64);
                self.metrics.bytes_in.increment(records.len() as u64);
                Ok(PendingAppend {
                    appended: Appended {
                        base_offset: info.base_offset,
                        log_append_time_ms: -1,
                        log_start_offset: self.log.earliest(),
                    },
                    end: info.last_offset + 1,
                    append_time_ms: info.append_time_ms,
                })
            }
            Err(error) => {
                let refused = AppendError::from_log(&error);
                if refused.code == ErrorCode::KafkaStorageError {
                    tracing::error!(%error, "append failed");
                }
                Err(refused)
            }
        }
    }

    /// Reads whole batches from `from`, up to `max_bytes` — or, if `at_least_one`, at least
    /// the first visible batch whatever its size (Kafka's rule for the first partition of a
    /// fetch that has data, so a consumer always makes progress) — never at or beyond the high
    /// watermark.
    pub fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Fetched, ErrorCode> {
        self.read_from(from, max_bytes, at_least_one, false)?
            .ok_or(ErrorCode::UnknownServerError)
    }

    /// [`Partition::read`] answered only from memory, never waiting for the disk or for a
    /// writer of the log: `None` where it would (then call `read` from a thread that may
    /// block).
    pub fn read_cached(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Option<Fetched>, ErrorCode> {
        self.read_from(from, max_bytes, at_least_one, true)
    }

    fn read_from(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
        cached_only: bool,
    ) -> Result<Option<Fetched>, ErrorCode> {
        let high_watermark = self.high_watermark();
        let (log_start_offset, log_end) = if cached_only {
            match self.log.try_bounds() {
                Some(bounds) => bounds,
                None => return Ok(None),
            }
        } else {
            (self.log.earliest(), self.log.log_end())
        };
        if from < log_start_offset || from > log_end {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        // The answer: one read's bytes in the common case (no copy), else one copy of the
        // parts of several (a read stays within a segment).
        let mut parts: Vec<bytes::Bytes> = Vec::new();
        let mut len = 0;
        let mut next = from;
        let mut kept_records = 0u64;
        // The first batch may exceed `max_bytes` only if one is owed.
        let owed = |len: usize| len == 0 && at_least_one;
        while next < high_watermark && (owed(len) || len < max_bytes) {
            let budget = max_bytes.saturating_sub(len).max(1);
            // Past what is owed, a batch that does not fit is not read at all (reading it
            // only to drop it doubled the broker's work per fetch of 1 MiB batches).
            let read = if cached_only {
                let read = if owed(len) {
                    self.log.read_cached(next, budget)
                } else {
                    self.log.read_cached_within(next, budget)
                };
                match read {
                    Ok(Some(read)) => read,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(log_error_code(&e)),
                }
            } else if owed(len) {
                self.log
                    .read(next, budget)
                    .map_err(|e| log_error_code(&e))?
            } else {
                self.log
                    .read_within(next, budget)
                    .map_err(|e| log_error_code(&e))?
            };
            let mut kept = 0;
            for batch in batches(&read.bytes) {
                let Ok(batch) = batch else { break };
                if batch.base_offset() >= high_watermark
                    || (!owed(len + kept) && len + kept + batch.size() > max_bytes)
                {
                    break;
                }
                kept += batch.size();
                kept_records += batch.record_count().max(0) as u64;
                next = batch.next_offset();
            }
            if kept == 0 {
                break;
            }
            len += kept;
            parts.push(if read.bytes.len() - kept > read.bytes.len() / 8 {
                // A small part of the read: a copy of its own, so the answer does not keep
                // alive much more memory than it holds.
                bytes::Bytes::copy_from_slice(&read.bytes[..kept])
            } else {
                read.bytes.slice(..kept)
            });
        }
        if len > 0 {
            self.metrics.records_out.increment(kept_records);
            self.metrics.bytes_out.increment(len as u64);
        }
        let records = match parts.len() {
            0 | 1 => parts.pop().unwrap_or_default(),
            _ => parts.concat().into(),
        };
        Ok(Some(Fetched {
            records,
            high_watermark,
            log_start_offset,
        }))
    }

    /// The offset of the first record with a timestamp at or after `timestamp` that is visible
    /// to consumers, with that record's timestamp; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(Offset, i64)>, ErrorCode> {
        let found = self
            .log
            .offset_for_timestamp(timestamp)
            .map_err(|e| log_error_code(&e))?;
        Ok(found
            .filter(|t| t.offset < self.high_watermark())
            .map(|t| (t.offset, t.timestamp)))
    }

    /// The first record with the largest timestamp among those visible to consumers, with
    /// that timestamp (Kafka's ListOffsets timestamp -3, KIP-734); `None` if no record is
    /// visible. Answered from the segments' largest timestamps and time indexes
    /// ([`LogStore::offset_of_max_timestamp`]): it reads a few batch headers and one batch,
    /// however long the partition.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(Offset, i64)>, ErrorCode> {
        let found = self
            .log
            .offset_of_max_timestamp(self.high_watermark())
            .map_err(|e| log_error_code(&e))?;
        Ok(found.map(|t| (t.offset, t.timestamp)))
    }

    /// Deletes closed segments past the retention limits.
    pub fn apply_retention(&self, now_ms: i64) -> Result<(), LogError> {
        self.log.apply_retention(now_ms).map(|_| ())
    }

    /// Cuts the log back so that `offset` is its end (see [`LogStore::truncate_to`]), first
    /// deleting (durably) the producer-state snapshots above it, then rebuilding the producer
    /// state for the shortened log. Returns the new log end. Records being waited for must not
    /// be truncated (see [`FileLog::wait_durable`]).
    pub fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut producers = self.producers();
        if let Some(snapshots) = &self.snapshots {
            snapshots
                .delete_above(offset)
                .map_err(|source| LogError::Io {
                    op: "deleting producer-state snapshots above the truncation point".into(),
                    source,
                })?;
        }
        let end = self.log.truncate_to(offset)?;
        self.high_watermark.fetch_min(end, Ordering::AcqRel);
        let (rebuilt, current) = load_producers(&self.log, self.snapshots.as_ref(), end)?;
        *producers = rebuilt;
        self.snapshot_current.store(current, Ordering::Release);
        self.snapshot_segment
            .store(self.log.active_segment_base(), Ordering::Release);
        Ok(end)
    }

    /// Writes a producer-state snapshot at the log end (if the log is healthy and everything
    /// in it durable, and the next open would not rebuild the state without reading the log
    /// anyway), then flushes and closes the log, marking it cleanly shut down. A failed
    /// snapshot is logged, not returned: the next open replays more of the log instead.
    pub fn close(&self) -> Result<(), LogError> {
        let _span = self.span.enter();
        if let Some(snapshots) = &self.snapshots
            && !self.snapshot_current.load(Ordering::Acquire)
        {
            let producers = self.producers();
            // Under the lock no idempotent batch is written, so the table is the state at
            // whatever end the flush made durable.
            match self.log.flush() {
                // Nothing to write: an empty log has nothing to replay, and a snapshot at the
                // end already holds this table (it changes only as the end moves). A broker
                // with thousands of idle partitions closes them without an fsync each.
                Ok(end) if end == 0 || snapshots.newest_is_at(end) => {}
                Ok(end) => {
                    if let Err(error) = snapshots.write(&producers, end) {
                        tracing::warn!(%error, offset = end, "writing a producer-state snapshot at close failed");
                    }
                }
                Err(LogError::Closed) => {}
                Err(error) => {
                    tracing::warn!(%error, "no producer-state snapshot at close: the log cannot flush");
                }
            }
        }
        self.log.close()
    }
}

/// The producer state of `log` (whose end is `end`): the newest usable snapshot in `snapshots`
/// plus every batch after it, or every batch of the log; and whether there was no batch to
/// read after the snapshot (or in the log).
fn load_producers(
    log: &FileLog,
    snapshots: Option<&SnapshotDir>,
    end: Offset,
) -> Result<(ProducerTable, bool), LogError> {
    let loaded = match snapshots {
        Some(snapshots) => snapshots.load(end).map_err(|source| LogError::Io {
            op: "loading producer-state snapshots".into(),
            source,
        })?,
        None => None,
    };
    let (after, mut producers) = loaded.unwrap_or_default();
    // Retention may have deleted segments past the snapshot: what they held is in it.
    let mut from = after.max(log.earliest());
    let current = from >= end;
    while from < end {
        let read = log.read(from, 1 << 20)?;
        for batch in batches(&read.bytes) {
            let batch = batch?;
            // A read starts at the batch holding `from`; the snapshot has what ends before.
            if batch.last_offset() >= after {
                producers.observe(&batch, batch.max_timestamp());
            }
        }
        if read.next_offset <= from {
            break;
        }
        from = read.next_offset;
    }
    Ok((producers, current))
}

#[cfg(test)]
mod tests {
    use staunch_log::{FlushPolicy, LogConfig, LogStore};
    use staunch_testkit::FaultyIo;
    use staunch_testkit::log_store_suite::kib_batch;

    use super::Partition;

    /// A fetch whose byte budget ends inside the second batch answers the first and reads no
    /// more of the second than its first read's window (and a header); it used to read the
    /// whole second batch again only to drop it. Cached reads (the async path) as well.
    #[test]
    fn a_fetch_does_not_read_a_batch_it_has_no_room_for() {
        let io = FaultyIo::new();
        let log = io.open_log(LogConfig {
            flush: FlushPolicy::Os,
            ..LogConfig::default()
        });
        let big = kib_batch(100);
        for _ in 0..3 {
            log.append(&mut big.clone(), 0).unwrap();
        }
        let partition = Partition::with_log(log, None).unwrap();
        let max_bytes = big.len() * 3 / 2;
        for cached in [false, true] {
            let before = io.bytes_read();
            let fetched = if cached {
                partition.read_cached(0, max_bytes, true).unwrap().unwrap()
            } else {
                partition.read(0, max_bytes, true).unwrap()
            };
            let read = io.bytes_read() - before;
            assert_eq!(fetched.records.len(), big.len(), "cached: {cached}");
            assert!(
                read < max_bytes as u64 + 1024,
                "cached: {cached}: read {read} bytes for a fetch of at most {max_bytes}"
            );
        }
        // A later partition of a fetch owes nothing: a batch over its budget is not read.
        let before = io.bytes_read();
        let fetched = partition.read(0, big.len() - 1, false).unwrap();
        assert!(fetched.records.is_empty());
        assert!(io.bytes_read() - before < 1024);
    }
}

/// Producer-state snapshots as the partition uses them: written at rolls and close, the newest
/// valid one at or below the log end loaded, and the log replayed after it.
#[cfg(test)]
mod snapshot_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use staunch_core::{BatchBuilder, ErrorCode, ManualClock};
    use staunch_log::{LogConfig, SegmentIo};
    use staunch_testkit::{CrashMode, FaultyIo};

    use super::Partition;
    use crate::producer_snapshot::file_name;
    use crate::storage::Storage;

    const NOW: i64 = 1_750_000_000_000;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 4096,
            max_batch_bytes: 2048,
            zero_fill_bytes: 0,
            ..LogConfig::default()
        }
    }

    fn open(disk: &FaultyIo, config: LogConfig) -> Partition {
        let storage = Storage::new(Arc::new(disk.clone()), Arc::new(ManualClock::new(NOW)));
        let p = Partition::open(&storage, "p", config).expect("the partition opens");
        // The directory's entry, as topic creation makes it durable.
        storage.io().sync_dir("").unwrap();
        p
    }

    /// A batch of producer `pid` (epoch 0) at sequence `seq`, of ~170 bytes.
    fn batch(pid: i64, seq: i32) -> Vec<u8> {
        BatchBuilder::new(NOW)
            .producer(pid, 0, seq)
            .record(None, Some(&[b'v'; 100]))
            .build()
    }

    fn snapshots(disk: &FaultyIo) -> Vec<String> {
        let mut names: Vec<_> = disk
            .subdir("p")
            .names()
            .into_iter()
            .filter(|n| n.ends_with(".snapshot"))
            .collect();
        names.sort();
        names
    }

    /// Producers 0..4 each append `rounds` batches; their offsets by (producer, sequence).
    fn fill(p: &Partition, rounds: i32) -> BTreeMap<(i64, i32), i64> {
        let mut placed = BTreeMap::new();
        for seq in 0..rounds {
            for pid in 0..4 {
                let at = p.append(&mut batch(pid, seq)).unwrap().base_offset;
                placed.insert((pid, seq), at);
            }
        }
        placed
    }

    /// Closing a partition not written since it opened writes no snapshot: the one at the end
    /// already holds its table (so thousands of idle partitions close without an fsync each).
    #[test]
    fn an_unchanged_partition_closes_without_writing_a_snapshot() {
        let disk = FaultyIo::new();
        let p = open(&disk, config());
        let placed = fill(&p, 3);
        p.close().unwrap();
        let end_snapshot = file_name(placed.values().max().unwrap() + 1);
        assert_eq!(snapshots(&disk).last(), Some(&end_snapshot));
        let p = open(&disk, config());
        // Whatever is in the file now would be replaced by a snapshot written at close.
        disk.subdir("p").put_file(&end_snapshot, b"sentinel");
        p.close().unwrap();
        assert_eq!(
            disk.subdir("p").live_bytes(&end_snapshot).as_deref(),
            Some(&b"sentinel"[..]),
            "an idle close rewrote the snapshot"
        );
        // The next open finds it damaged, rebuilds from the log, and still deduplicates.
        let p = open(&disk, config());
        retries_are_deduplicated(&p, &placed, 2);
    }

    /// Each producer's last batch, sent again, gets its original offset and stores nothing;
    /// its next one is appended at the log end.
    fn retries_are_deduplicated(p: &Partition, placed: &BTreeMap<(i64, i32), i64>, last: i32) {
        let end = p.log_end_offset();
        for pid in 0..4 {
            let again = p.append(&mut batch(pid, last)).unwrap();
            assert_eq!(again.base_offset, placed[&(pid, last)], "producer {pid}");
            assert_eq!(
                p.log_end_offset(),
                end,
                "producer {pid}'s retry was stored again"
            );
        }
        for pid in 0..4 {
            let next = p.append(&mut batch(pid, last + 1)).unwrap();
            assert_eq!(next.base_offset, end + pid, "producer {pid}'s next batch");
        }
    }

    /// Rolls write snapshots (the newest two kept), close writes one at the log end, and a
    /// reopen after a clean shutdown reads (almost) nothing of the log to rebuild the state;
    /// without snapshots it reads all of it.
    #[test]
    fn snapshots_are_written_at_rolls_and_close_and_spare_the_replay() {
        let disk = FaultyIo::new();
        let p = open(&disk, config());
        let placed = fill(&p, 30);
        assert!(p.log().segment_count() > 4, "the log rolled");
        assert_eq!(snapshots(&disk).len(), 2, "{:?}", snapshots(&disk));
        let end = p.log_end_offset();
        p.close().unwrap();
        assert_eq!(snapshots(&disk).last(), Some(&file_name(end)));
        let size = p.log().size_bytes();

        let before = disk.bytes_read();
        let p = open(&disk, config());
        let read = disk.bytes_read() - before;
        assert!(read < size / 4, "read {read} bytes of a {size}-byte log");
        retries_are_deduplicated(&p, &placed, 29);
        p.close().unwrap();

        let dir = disk.subdir("p");
        for name in snapshots(&disk) {
            dir.remove(&name).unwrap();
        }
        let before = disk.bytes_read();
        let p = open(&disk, config());
        let read = disk.bytes_read() - before;
        assert!(
            read >= size,
            "without snapshots the whole log is read ({read} of {size})"
        );
        assert_eq!(p.producers().len(), 4);
    }

    /// A partition reopened after a clean shutdown and closed again without a write — its
    /// log's clean-shutdown marker still true, its newest snapshot at the log end — writes and
    /// fsyncs nothing at the open or the close (a broker of thousands of idle partitions
    /// restarts without an fsync each), and the next open still finds the producer state.
    #[test]
    fn an_idle_partition_reopens_and_closes_without_a_write_or_an_fsync() {
        let disk = FaultyIo::new();
        let p = open(&disk, config());
        let placed = fill(&p, 30);
        p.close().unwrap();
        let storage = Storage::new(Arc::new(disk.clone()), Arc::new(ManualClock::new(NOW)));
        let changes = disk.changes();
        for _ in 0..2 {
            let p = Partition::open(&storage, "p", config()).unwrap();
            assert!(p.log().recovery().clean);
            p.close().unwrap();
        }
        assert_eq!(
            disk.changes(),
            changes,
            "an idle reopen and close wrote or synced"
        );
        // Also after a power cut: the marker and the snapshot on disk are still true.
        let p = open(&disk.crash(CrashMode::DropUnsynced), config());
        assert!(p.log().recovery().clean);
        retries_are_deduplicated(&p, &placed, 29);
    }

    /// The newest snapshot bit-flipped, truncated or deleted, or every snapshot deleted: the
    /// partition rebuilds from an older one or the whole log, never trusting the bad one, and
    /// an idempotent retry of each producer's last acknowledged batch is still de-duplicated.
    #[test]
    fn a_damaged_truncated_or_missing_snapshot_is_rebuilt_from_the_log() {
        for damage in ["flip", "truncate", "delete", "delete all"] {
            let disk = FaultyIo::new();
            let p = open(&disk, config());
            let mut placed = fill(&p, 20);
            // A tail after the newest roll snapshot, which only the log holds.
            for pid in 0..4 {
                let at = p.append(&mut batch(pid, 20)).unwrap().base_offset;
                placed.insert((pid, 20), at);
            }
            p.close().unwrap();
            let names = snapshots(&disk);
            let newest = names.last().unwrap().clone();
            let dir = disk.subdir("p");
            let bytes = dir.live_bytes(&newest).unwrap();
            match damage {
                "flip" => dir.flip_bit(&newest, bytes.len() / 2, 3),
                "truncate" => dir.put_file(&newest, &bytes[..bytes.len() - 9]),
                "delete" => dir.remove(&newest).unwrap(),
                _ => names.iter().for_each(|n| dir.remove(n).unwrap()),
            }
            let p = open(&disk, config());
            assert!(
                !snapshots(&disk).contains(&newest),
                "{damage}: the damaged snapshot is deleted"
            );
            retries_are_deduplicated(&p, &placed, 20);
        }
    }

    /// A power cut tears away the tail a snapshot described: the snapshot (its offset beyond
    /// the recovered log end) is ignored and deleted, durably, so the producer's lost batch is
    /// appended again instead of answered as a duplicate of records that are gone.
    #[test]
    fn a_snapshot_beyond_the_log_end_after_a_power_cut_is_ignored_and_deleted() {
        let config = LogConfig {
            // Every batch rolls the log (and so writes a snapshot before its append returns).
            segment_bytes: 1024,
            max_batch_bytes: 1024,
            ..config()
        };
        let batch = |pid, seq| {
            BatchBuilder::new(NOW)
                .producer(pid, 0, seq)
                .record(None, Some(&[b'v'; 600]))
                .build()
        };
        let disk = FaultyIo::new();
        let p = open(&disk, config.clone());
        assert_eq!(p.append(&mut batch(7, 0)).unwrap().base_offset, 0);
        assert_eq!(p.append(&mut batch(7, 1)).unwrap().base_offset, 1);
        // Written (and a snapshot at 3 written at its roll), never made durable.
        let pending = p.write(&mut batch(7, 2)).unwrap();
        assert_eq!(snapshots(&disk).last(), Some(&file_name(3)));
        let disk = disk.crash(CrashMode::DropUnsynced);
        drop((p, pending));

        let p = open(&disk, config.clone());
        assert_eq!(p.log_end_offset(), 2, "the unsynced batch is gone");
        assert!(!snapshots(&disk).contains(&file_name(3)));
        // Trusting the snapshot would answer this as a duplicate at offset 2: records that
        // are not there.
        assert_eq!(p.append(&mut batch(7, 2)).unwrap().base_offset, 2);
        assert_eq!(p.log_end_offset(), 3);
        // The deletion was durable: a power cut now does not bring the stale snapshot back.
        let disk = disk.crash(CrashMode::DropUnsynced);
        drop(p);
        let p = open(&disk, config);
        assert_eq!(p.append(&mut batch(7, 2)).unwrap().base_offset, 2);
        assert_eq!(p.append(&mut batch(7, 3)).unwrap().base_offset, 3);
    }

    /// Retention deletes the segments holding a producer's batches: its state survives a
    /// restart in the snapshots, and its retry is still de-duplicated.
    #[test]
    fn retention_does_not_lose_producer_state_a_snapshot_holds() {
        let config = LogConfig {
            retention_bytes: Some(8192),
            ..config()
        };
        let disk = FaultyIo::new();
        let p = open(&disk, config.clone());
        let early = p.append(&mut batch(99, 0)).unwrap().base_offset;
        fill(&p, 30);
        p.apply_retention(NOW).unwrap();
        assert!(
            p.log_start_offset() > early,
            "retention deleted the early batch"
        );
        p.close().unwrap();
        let p = open(&disk, config);
        assert_eq!(p.append(&mut batch(99, 0)).unwrap().base_offset, early);
        assert_eq!(
            p.append(&mut batch(99, 5)).unwrap_err().code,
            ErrorCode::OutOfOrderSequenceNumber
        );
    }

    /// Truncation deletes the snapshots above the new end first and rebuilds the producer
    /// state for the shorter log, in memory and after a reopen.
    #[test]
    fn truncation_deletes_snapshots_above_the_new_end() {
        let disk = FaultyIo::new();
        let p = open(&disk, config());
        let placed = fill(&p, 30);
        let cut = placed[&(0, 10)];
        assert!(p.truncate_to(cut).unwrap() == cut);
        assert!(
            snapshots(&disk).iter().all(|n| *n <= file_name(cut)),
            "{:?} above {cut}",
            snapshots(&disk)
        );
        for p in [p, open(&disk, config())] {
            // Producer 0's batch 9 is the last one kept; batch 10 is appended anew.
            assert_eq!(
                p.append(&mut batch(0, 9)).unwrap().base_offset,
                placed[&(0, 9)]
            );
            assert_eq!(p.append(&mut batch(0, 10)).unwrap().base_offset, cut);
            p.truncate_to(cut).unwrap();
        }
    }
}
