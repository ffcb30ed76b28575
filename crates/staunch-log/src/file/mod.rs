//! [`FileLog`]: the durable `LogStore`, a directory of segment files.
//!
//! # Layout
//! `<dir>/<base offset, 20 digits>.log` holds v2 batches exactly as producers sent them (base
//! offset and leader epoch stamped). A closed segment also has `<base>.index`. A clean shutdown
//! leaves `clean-shutdown`, which stays until the first change after the next open (the
//! [`marker`] module). See `docs/design.md` for the byte layouts.
//!
//! # Modules
//! This module holds the types ([`FileLog`], `Inner`, `State`), the public API and `close`. Each
//! other job has a module of its own:
//!
//! - [`recovery`]: opening a log after any shutdown, and the crash-recovery argument.
//! - [`append`]: writing batches at the log end, rolling segments.
//! - [`group_commit`]: waiting until appends are durable, one shared fsync per round; poisoning.
//! - [`background`]: a log's background jobs (sealing closed segments, interval syncs, recording
//!   the recovery point, zero-filling), run by a [`BackgroundPool`] shared by many logs.
//! - [`pool`]: the [`BackgroundPool`], its threads, timers and zero-fill budget.
//! - [`checkpoint`]: the recovery point, the offset below which everything is known durable.
//! - [`marker`]: the clean-shutdown marker a clean open keeps until the first change, so that
//!   opening and closing a log nothing was written to costs no fsync.
//! - [`read`]: reading batches.
//! - [`truncate`]: cutting the log back to an offset.
//! - [`retention`]: deleting old segments.
//! - [`timestamps`], [`zero_fill`], [`segment`], [`meta`]: timestamp lookups, zeros ahead of the
//!   data, one segment and its index, the small files beside the segments.
//! - [`walk`]: reading a segment batch by batch without trusting it (recovery and `check`).
//! - [`check`]: the public offline `check` / `repair` of a log directory.
//!
//! # Failures
//! A failed fsync (or a write failing with anything but "disk full") poisons the log: every
//! waiting and later append fails with [`LogError::Failed`]. Linux may drop dirty pages after a
//! failed fsync and report success on the next one, so retrying is never safe; reopening runs
//! recovery from what is really on disk. An fsync that does not return within
//! [`LogConfig::sync_timeout`] poisons the log the same way (see [`group_commit`]). "Disk full"
//! rolls the partial write back and fails only that append.
//!
//! # Recovery
//! Closed segments are trusted when their index matches the file; the last segment is scanned
//! batch by batch unless a valid clean-shutdown marker says exactly how long it is. A torn tail
//! (data that was never durable) is cut; damage to data that was durable — below the recovery
//! point, in a closed segment under `always`, or followed by valid batches further than the log
//! ever leaves unsynced — makes the open fail with [`LogError::Corrupt`] and changes nothing.
//! The whole argument is in the [`recovery`] module.

mod append;
mod background;
pub mod check;
mod checkpoint;
mod group_commit;
mod marker;
mod meta;
mod pool;
mod read;
mod recovery;
mod retention;
mod segment;
mod timestamps;
mod truncate;
mod walk;
mod zero_fill;

pub use pool::{BackgroundPool, PoolConfig};
pub use recovery::{Recovery, TailCut};

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use staunch_core::{Clock, LeaderEpoch, Offset, SystemClock};

use crate::LogError;
use crate::config::{FlushPolicy, LogConfig};
use crate::io::{FsSegmentIo, ReadFrom, SegmentIo, replace_file};
use crate::store::{
    AppendInfo, Durability, LogStore, ReadBatches, RetentionOutcome, TimestampOffset,
};
use background::Background;
use checkpoint::Checkpoint;
use group_commit::{SyncState, SyncsInFlight};
use marker::KeptMarker;
use meta::{CLEAN_SHUTDOWN, CleanShutdown};
use recovery::recover;
use segment::{Segment, index_name};
use zero_fill::ZeroFill;

/// One partition's durable log in a directory of segment files: layout, group commit, zero-filling
/// and crash recovery are described in `docs/design.md`.
pub struct FileLog {
    inner: Arc<Inner>,
    recovery: Recovery,
}

impl fmt::Debug for FileLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLog")
            .field("io", &self.inner.io)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// This log, as the pool's queue and timers hold it.
    me: Weak<Inner>,
    /// Runs the background jobs and holds the zero-fill budget.
    pool: BackgroundPool,
    io: Arc<dyn SegmentIo>,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// The fsyncs running now, with their start, so that a hung one is noticed.
    syncs_in_flight: Mutex<SyncsInFlight>,
    failure: OnceLock<String>,
    background: Mutex<Background>,
    /// Signalled when a background job ends.
    background_signal: Condvar,
    /// Whether the flush and checkpoint deadlines a write sets are armed (see `background`).
    write_deadlines_armed: AtomicBool,
    /// The zeros written ahead of the active segment's data (flush `always`).
    zero_fill: Mutex<ZeroFill>,
    zero_fill_done: Condvar,
    /// Bytes of batches written since the open, ever growing (changed under the state lock).
    written_bytes: AtomicU64,
    /// Of `written_bytes`, how many are known fsynced: `written_bytes - synced_bytes` bounds
    /// what a power cut can tear (the `append` module keeps it under `max_unsynced_bytes`).
    synced_bytes: AtomicU64,
    /// The recovery point last recorded. Lock order: state, then this, then sync.
    checkpoint: Mutex<Checkpoint>,
    /// The clean-shutdown marker the open left on disk until the first change (the `marker`
    /// module). Lock order: state, checkpoint, this, sync.
    kept_marker: KeptMarker,
    /// Where this log records fsync latency and group-commit sizes.
    metrics: crate::metrics::LogMetrics,
    /// The log's directory as log lines name it (`dir` field).
    dir: Arc<str>,
}

struct State {
    /// Ordered by base offset; the last is the active segment. Never empty.
    segments: BTreeMap<Offset, Segment>,
    log_end: Offset,
    /// Closed segments not yet fsynced and indexed, oldest first. Under `interval` and `os` a
    /// roll only queues the closed segment here and the background thread seals it, so no append
    /// or read waits for a whole segment's writeback. Sealing is strictly in order.
    unsealed: VecDeque<Offset>,
    /// Bumped by every truncation, so a sync that started before it cannot mark
    /// since-rewritten offsets durable.
    generation: u64,
    closed: bool,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
    fn earliest(&self) -> Offset {
        *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }
    fn check_range(&self, requested: Offset) -> Result<(), LogError> {
        if requested < self.earliest() || requested > self.log_end {
            return Err(LogError::OffsetOutOfRange {
                requested,
                earliest: self.earliest(),
                log_end: self.log_end,
            });
        }
        Ok(())
    }
}

impl FileLog {
    /// Opens (creating if needed) the log in directory `dir` with the system clock, running
    /// crash recovery if the last shutdown was not clean. On return everything in the log is on
    /// disk and [`LogStore::durable_end`] equals [`LogStore::log_end`].
    pub fn open(dir: impl AsRef<std::path::Path>, config: LogConfig) -> Result<Self, LogError> {
        let dir = dir.as_ref();
        let io = FsSegmentIo::open(dir)
            .map_err(|e| LogError::io(format!("opening log directory {}", dir.display()), e))?;
        Self::open_with(Arc::new(io), config, Arc::new(SystemClock))
    }

    /// Opens the log over any [`SegmentIo`] and [`Clock`] (tests inject faults and time here),
    /// with its background work on the [process-wide pool](BackgroundPool::process_default).
    pub fn open_with(
        io: Arc<dyn SegmentIo>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LogError> {
        Self::open_with_pool(io, config, clock, BackgroundPool::process_default())
    }

    /// [`FileLog::open_with`], with its background work (sealing, interval flushes, recovery
    /// points, zero-filling within the pool's budget) on `pool`, shared with the other logs
    /// opened on it. The log starts no thread of its own.
    pub fn open_with_pool(
        io: Arc<dyn SegmentIo>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        pool: &BackgroundPool,
    ) -> Result<Self, LogError> {
        let config = config.validate()?;
        let dir: Arc<str> = io.location().into();
        let (state, recovery, kept_marker) = recover(&*io, &config, clock.now_ms())?;
        let log_end = state.log_end;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            pool: pool.clone(),
            io,
            config,
            clock,
            state: RwLock::new(state),
            sync: Mutex::new(SyncState {
                durable_end: log_end,
                syncing: false,
                generation: 0,
            }),
            synced: Condvar::new(),
            syncs_in_flight: Mutex::new(SyncsInFlight::default()),
            failure: OnceLock::new(),
            background: Mutex::new(Background::default()),
            background_signal: Condvar::new(),
            write_deadlines_armed: AtomicBool::new(false),
            zero_fill: Mutex::new(ZeroFill::fresh()),
            zero_fill_done: Condvar::new(),
            written_bytes: AtomicU64::new(0),
            synced_bytes: AtomicU64::new(0),
            // Recovery left the recovery point at the log end, or there was nothing to record.
            checkpoint: Mutex::new(Checkpoint { recorded: log_end }),
            kept_marker: KeptMarker::new(kept_marker),
            metrics: crate::metrics::LogMetrics::new(),
            dir,
        });
        Ok(Self { inner, recovery })
    }

    /// What the open found: a clean shutdown, or what recovery scanned and cut.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.inner.read_state().segments.len()
    }

    /// The base offset of the active segment (the one appends go to). It changes when the
    /// log rolls to a new segment (or a truncation removes the active one), so a caller can
    /// notice a roll after its append — the broker writes its producer-state snapshots then.
    pub fn active_segment_base(&self) -> Offset {
        self.inner.read_state().active().base
    }

    /// Total bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .read_state()
            .segments
            .values()
            .map(|s| s.size)
            .sum()
    }

    /// The log's configuration.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Stops the log's background work: no job starts any more, and one running now is waited
    /// for — unless the log has failed, or fails meanwhile (an fsync of the job overran
    /// `sync_timeout`): a job stuck in a hung fsync would hang the close too. A failed log
    /// starts no more work; the stuck job ends by itself once the syscall returns.
    fn stop_background(&self) {
        let inner = &self.inner;
        let mut bg = inner.lock_background();
        bg.stop = true;
        while bg.running {
            if inner.failure.get().is_some() {
                tracing::warn!(dir = %self.inner.dir, "leaving the failed log's background job to end by itself");
                return;
            }
            let wait = inner.until_sync_overdue().max(Duration::from_millis(1));
            let (next, timeout) = inner
                .background_signal
                .wait_timeout(bg, wait)
                .unwrap_or_else(|p| p.into_inner());
            bg = next;
            if timeout.timed_out() {
                drop(bg);
                // Fails the log if the job's fsync is overdue; the loop then leaves it.
                let _ = inner.check_health();
                bg = inner.lock_background();
            }
        }
    }
}

impl Drop for FileLog {
    /// Stops the background work. Dropping a log that was changed since it was opened without
    /// [`LogStore::close`] leaves no clean-shutdown marker, so the next open runs recovery (one
    /// that was not changed still has the marker its open found, which is still true).
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Inner {
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, unless a writer holds it (or waits for it).
    fn try_read_state(&self) -> Option<RwLockReadGuard<'_, State>> {
        match self.state.try_read() {
            Ok(st) => Some(st),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check_usable(&self, st: &State) -> Result<(), LogError> {
        if st.closed {
            return Err(LogError::Closed);
        }
        if let Some(reason) = self.failure.get() {
            return Err(LogError::Failed {
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    fn close(&self) -> Result<(), LogError> {
        {
            let mut st = self.write_state();
            if st.closed {
                return Ok(());
            }
            self.check_usable(&st)?;
            if self.close_unchanged(&mut st) {
                // The marker the open found is still on disk and true: nothing to write.
                return Ok(());
            }
            if self.close_empty(&mut st) {
                return Ok(());
            }
        }
        let target = self.read_state().log_end;
        self.sync_through(target)?;
        self.seal_closed_segments()?;
        let mut st = self.write_state();
        if st.closed {
            return Ok(());
        }
        self.check_usable(&st)?;
        self.before_change()?;
        self.end_zero_fill();
        let active = st.active_mut();
        // Trim the blocks reserved ahead, so the marker's size is the file's exact length.
        active
            .file
            .set_len(active.size)
            .map_err(|e| LogError::io(format!("trimming {} at close", active.name()), e))?;
        active.allocated = active.size;
        let active = st.active();
        let name = active.name();
        self.timed_sync(
            || format!("fdatasync of {name} at close"),
            || active.file.sync_data(),
        )
        .map_err(|e| self.fail(format!("fdatasync of {name} at close failed: {e}")))?;
        // A log that gave up on a hung fsync meanwhile does not claim a clean shutdown.
        self.check_usable(&st)?;
        replace_file(
            &*self.io,
            &index_name(active.base),
            &meta::encode_index(active),
        )
        .map_err(|e| LogError::io(format!("writing {}", index_name(active.base)), e))?;
        let log_end = st.log_end;
        self.record_recovery_point(&mut self.lock_checkpoint(), log_end)?;
        let active = st.active();
        let marker = CleanShutdown {
            log_end: st.log_end,
            active_base: active.base,
            active_size: active.size,
        };
        replace_file(
            &*self.io,
            CLEAN_SHUTDOWN,
            &meta::encode_clean_shutdown(&marker),
        )
        .map_err(|e| LogError::io("writing the clean-shutdown marker", e))?;
        st.closed = true;
        Ok(())
    }
}

impl FileLog {
    /// The first half of [`LogStore::append`], for callers that pipeline appends: validates
    /// `batches`, assigns offsets and stamps `leader_epoch` exactly as `append` does, and writes
    /// them to the page cache. When it returns the records are readable and their offsets are
    /// final, but **nothing is durable yet** (the returned durability says `PageCache`): call
    /// [`wait_durable`](Self::wait_durable) with `last_offset + 1` before acknowledging them.
    ///
    /// Appends are ordered by the calls to `write`, so a caller can write several batches in
    /// order and then wait for all of them at once; their waits share one group fsync.
    ///
    /// Under flush `always`, `write` itself waits for a group fsync of earlier writes when more
    /// than [`LogConfig::max_unsynced_bytes`] would otherwise be written but unsynced, and an
    /// append larger than that is written in pieces with an fsync between them (recovery
    /// relies on the bound to tell a torn tail from damaged durable data).
    pub fn write(
        &self,
        batches: &mut [u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, LogError> {
        self.inner.write(batches, leader_epoch)
    }

    /// The second half of [`LogStore::append`]: blocks until everything below `end` is as
    /// durable as the flush policy promises (on disk under `always`, joining or starting a group
    /// fsync; the page cache otherwise) and returns that durability. Fails if the log has
    /// failed (an fsync or write error): the records must then not be acknowledged. Fails with
    /// [`LogError::Truncated`] if a truncation cut the log below `end` first (or happened while
    /// waiting). A truncation *and* new writes past `end` between `write` and this call cannot
    /// be told apart from the original records: do not truncate records still being waited for.
    pub fn wait_durable(&self, end: Offset) -> Result<Durability, LogError> {
        self.inner.wait_durable(end)
    }

    /// Whether the log still accepts appends, without waiting for the disk: `Ok` unless it has
    /// failed ([`LogError::Failed`]: a write or fsync failed, or an fsync ran longer than
    /// [`LogConfig::sync_timeout`]). An fsync that has been running longer than the timeout
    /// fails the log here and now, so a caller can refuse work for a hung disk at once instead of
    /// queueing it behind the stuck syscall. Once `Err`, always `Err` until the log is reopened.
    pub fn check_health(&self) -> Result<(), LogError> {
        self.inner.check_health()
    }

    /// Deletes every closed segment whose records all lie below `offset`, as a consumer of the
    /// log that has finished with everything before `offset` wants (Kafka's `DeleteRecords`
    /// moves the log start the same way, but only at whole-segment granularity here). The
    /// active segment is never deleted, so [`LogStore::earliest`] may stay below `offset`.
    /// When it returns the deletion is durable (the directory was synced).
    pub fn delete_segments_before(&self, offset: Offset) -> Result<RetentionOutcome, LogError> {
        self.inner.delete_segments_before(offset)
    }
}

impl LogStore for FileLog {
    fn append(
        &self,
        batches: &mut [u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, LogError> {
        let mut info = self.inner.write(batches, leader_epoch)?;
        info.durability = self.inner.wait_durable(info.last_offset + 1)?;
        Ok(info)
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadBatches, LogError> {
        self.inner.read_from_disk(from, max_bytes, true)
    }

    fn read_cached(&self, from: Offset, max_bytes: usize) -> Result<Option<ReadBatches>, LogError> {
        self.inner.read_from(from, max_bytes, true, ReadFrom::Cache)
    }

    /// Reads the batches that fit; of a first batch that does not, only batch headers (from
    /// the index entry up to it).
    fn read_within(&self, from: Offset, max_bytes: usize) -> Result<ReadBatches, LogError> {
        self.inner.read_from_disk(from, max_bytes, false)
    }

    /// As [`LogStore::read_within`] here, from memory only.
    fn read_cached_within(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Option<ReadBatches>, LogError> {
        self.inner
            .read_from(from, max_bytes, false, ReadFrom::Cache)
    }

    fn try_bounds(&self) -> Option<(Offset, Offset)> {
        let st = self.inner.try_read_state()?;
        Some((st.earliest(), st.log_end))
    }

    fn earliest(&self) -> Offset {
        self.inner.read_state().earliest()
    }

    fn log_end(&self) -> Offset {
        self.inner.read_state().log_end
    }

    fn durable_end(&self) -> Offset {
        self.inner.durable_end()
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        self.inner.offset_for_timestamp(timestamp)
    }

    fn offset_of_max_timestamp(&self, end: Offset) -> Result<Option<TimestampOffset>, LogError> {
        self.inner.offset_of_max_timestamp(end)
    }

    fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        self.inner.truncate_to(offset)
    }

    fn flush(&self) -> Result<Offset, LogError> {
        let st = self.inner.read_state();
        self.inner.check_usable(&st)?;
        let target = st.log_end;
        drop(st);
        self.inner.sync_through(target)
    }

    fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        self.inner.apply_retention(now_ms)
    }

    fn close(&self) -> Result<(), LogError> {
        self.stop_background();
        self.inner.close()?;
        self.inner
            .io
            .release()
            .map_err(|e| LogError::io("releasing the log directory lock", e))
    }
}
