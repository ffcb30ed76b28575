//! [`FileLog`]: the durable `LogStore`, a directory of segment files.
//!
//! # Layout
//! `<dir>/<base offset, 20 digits>.log` holds v2 batches exactly as producers sent them (base
//! offset and leader epoch stamped). A closed segment also has `<base>.index`. A clean shutdown
//! leaves `clean-shutdown`. See `docs/design.md` for the byte layouts.
//!
//! # Writes and group commit
//! Appends are serialized by the state lock: validate (outside the lock), assign offsets, write
//! at the segment's end, update the index. With [`FlushPolicy::Always`] the appender then waits
//! until the durable end passes its records. The first waiter becomes the syncer: it notes the
//! log end, releases every lock and calls `fdatasync`; appends that arrive meanwhile write and
//! queue behind it, and the next sync covers all of them. So N concurrent appenders share about
//! one fsync per round, and no append is reported durable before an fsync that started after its
//! write. Under `always` a background thread writes zeros ahead of the data, so those fsyncs
//! need no file-system metadata (see the `zero_fill` module).
//!
//! # Failures
//! A failed fsync (or a write failing with anything but "disk full") poisons the log: every
//! waiting and later append fails with [`LogError::Failed`]. Linux may drop dirty pages after a
//! failed fsync and report success on the next one, so retrying is never safe; reopening runs
//! recovery from what is really on disk. "Disk full" rolls the partial write back and fails only
//! that append.
//!
//! # Recovery
//! Closed segments were fsynced before the next one was created, and their index files say how
//! long they are; they are trusted when the index matches the file. The last segment — the only
//! one that can hold unsynced bytes — is the checkpoint boundary: it is scanned batch by batch
//! (framing, magic, CRC-32C, contiguous offsets) and cut at the first torn or invalid batch,
//! unless a valid clean-shutdown marker says exactly how long it is.

mod meta;
mod segment;
mod timestamps;
mod zero_fill;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_core::{Clock, LeaderEpoch, Offset, RecordBatch, SystemClock};

use crate::LogError;
use crate::config::{FlushPolicy, LogConfig};
use crate::error::is_out_of_space;
use crate::io::{
    FsSegmentIo, ReadFrom, SegmentFile, SegmentIo, read_exact_at, read_exact_from, read_file,
    replace_file, write_all_at,
};
use crate::read_buffer::ReadBuffer;
use crate::store::{
    AppendInfo, Durability, LogStore, ReadBatches, RetentionOutcome, TimestampOffset,
};
use crate::validate::{check_append, stamp};
use meta::{CLEAN_SHUTDOWN, CleanShutdown, TRUNCATE_INTENT};
use segment::{Segment, index_name, log_name, parse_log_name, peek_header, peek_header_from, scan};
use zero_fill::ZeroFill;

/// How far ahead of the data the active segment reserves disk blocks.
const PREALLOCATE_STEP: u64 = 64 << 20;

/// How an open found the log; for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// A valid clean-shutdown marker was found, so nothing was scanned.
    pub clean: bool,
    /// Segments scanned batch by batch.
    pub segments_scanned: usize,
    /// Bytes cut from the tail because they were torn or invalid (dropped segments included).
    pub bytes_truncated: u64,
    /// Closed but unsealed segments dropped because an earlier one lost its unsynced tail.
    pub segments_dropped: usize,
    /// Why the tail was cut, if it was.
    pub truncation_reason: Option<String>,
}

/// One partition's durable log in a directory of segment files: layout, group commit, zero-filling
/// and crash recovery are described in `docs/design.md`.
pub struct FileLog {
    inner: Arc<Inner>,
    background: Mutex<Option<JoinHandle<()>>>,
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
    io: Arc<dyn SegmentIo>,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    failure: OnceLock<String>,
    background: Mutex<Background>,
    background_signal: Condvar,
    /// The zeros written ahead of the active segment's data (flush `always`).
    zero_fill: Mutex<ZeroFill>,
    zero_fill_done: Condvar,
}

/// Requests for the background thread: sealing closed segments (`interval`, `os`) and
/// zero-filling ahead of the data (`always`).
#[derive(Default)]
struct Background {
    stop: bool,
    seal_requested: bool,
    zero_fill_requested: bool,
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

struct SyncState {
    durable_end: Offset,
    syncing: bool,
    generation: u64,
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

    /// Opens the log over any [`SegmentIo`] and [`Clock`] (tests inject faults and time here).
    pub fn open_with(
        io: Arc<dyn SegmentIo>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LogError> {
        let config = config.validate()?;
        let (state, recovery) = recover(&*io, &config, clock.now_ms())?;
        let log_end = state.log_end;
        let inner = Arc::new(Inner {
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
            failure: OnceLock::new(),
            background: Mutex::new(Background::default()),
            background_signal: Condvar::new(),
            zero_fill: Mutex::new(ZeroFill::fresh()),
            zero_fill_done: Condvar::new(),
        });
        let background = match inner.config.flush {
            FlushPolicy::Always => Some(spawn_background(Arc::downgrade(&inner), None)),
            FlushPolicy::Interval(every) => {
                Some(spawn_background(Arc::downgrade(&inner), Some(every)))
            }
            FlushPolicy::Os => Some(spawn_background(Arc::downgrade(&inner), None)),
        };
        Ok(Self {
            inner,
            background: Mutex::new(background),
            recovery,
        })
    }

    /// What the open found: a clean shutdown, or what recovery scanned and cut.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.inner.read_state().segments.len()
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

    fn stop_background(&self) {
        self.inner.lock_background().stop = true;
        self.inner.background_signal.notify_all();
        if let Some(handle) = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for FileLog {
    /// Stops the background thread. Dropping without [`LogStore::close`] leaves no clean-shutdown
    /// marker, so the next open runs recovery.
    fn drop(&mut self) {
        self.stop_background();
    }
}

/// Shrinks `segment`'s extent and index to the batches that end before `offset` and returns the
/// new size. Reads batch headers from the nearest index entry only.
fn cut_position(segment: &mut Segment, offset: Offset, name: &str) -> Result<u64, LogError> {
    let base = segment.base;
    let mut entries = segment.index.partition_point(|e| e.offset < offset);
    let from = entries.checked_sub(1).map(|i| segment.index[i]);
    let (mut position, mut next, mut max_ts) = from.map_or((0, base, i64::MIN), |e| {
        (u64::from(e.position), e.offset, e.max_ts_before)
    });
    let start = position;
    while position < segment.size {
        let header = peek_header(&*segment.file, name, position, segment.size)?;
        if header.next_offset > offset {
            break;
        }
        position += header.size;
        next = header.next_offset;
        max_ts = max_ts.max(header.max_timestamp);
    }
    if position == start && entries > 0 {
        entries -= 1; // the indexed batch itself straddles `offset`
    }
    segment.index.truncate(entries);
    segment.size = position;
    segment.next_offset = next;
    segment.max_timestamp = max_ts;
    segment.bytes_since_index = segment
        .index
        .last()
        .map_or(0, |e| position - u64::from(e.position));
    Ok(position)
}

/// The background thread of an `interval` or `os` log: seals closed segments as soon as a roll
/// queues them, and under `interval` syncs the log every `interval`.
fn spawn_background(inner: Weak<Inner>, interval: Option<Duration>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("staunch-log-bg".into())
        .spawn(move || {
            let mut next_flush = interval.map(|every| Instant::now() + every);
            loop {
                let Some(log) = inner.upgrade() else { return };
                let zero_fill;
                {
                    let mut bg = log.lock_background();
                    loop {
                        if bg.stop {
                            return;
                        }
                        if bg.seal_requested || bg.zero_fill_requested {
                            break;
                        }
                        let now = Instant::now();
                        bg = match next_flush {
                            Some(at) if at <= now => break,
                            Some(at) => {
                                log.background_signal
                                    .wait_timeout(bg, at - now)
                                    .unwrap_or_else(|p| p.into_inner())
                                    .0
                            }
                            None => log
                                .background_signal
                                .wait(bg)
                                .unwrap_or_else(|p| p.into_inner()),
                        };
                    }
                    bg.seal_requested = false;
                    zero_fill = std::mem::take(&mut bg.zero_fill_requested);
                }
                if zero_fill && let Err(e) = log.zero_fill_ahead() {
                    tracing::error!(error = %e, "zero-filling failed; log refuses appends");
                    return;
                }
                if let Err(e) = log.seal_closed_segments() {
                    tracing::error!(error = %e, "sealing a closed segment failed");
                    return;
                }
                if let (Some(at), Some(every)) = (next_flush, interval)
                    && at <= Instant::now()
                {
                    next_flush = Some(Instant::now() + every);
                    let target = log.read_state().log_end;
                    match log.sync_through(target) {
                        // Cut meanwhile: the next interval syncs whatever is there then.
                        Ok(_) | Err(LogError::Truncated) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "interval flush failed; log refuses appends");
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawning the log background thread")
}

/// Whether bytes `from..to` of a segment are all zero: the unused part of a preallocation.
fn is_zero_tail(file: &dyn SegmentFile, from: u64, to: u64, name: &str) -> Result<bool, LogError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(buf.len() as u64) as usize;
        read_exact_at(file, &mut buf[..n], pos)
            .map_err(|e| LogError::io(format!("reading {name} at {pos}"), e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Deletes the unsealed segments `bases` (and any index files), durably, and counts them.
fn drop_segments(
    io: &dyn SegmentIo,
    bases: &[Offset],
    recovery: &mut Recovery,
) -> Result<(), LogError> {
    for &b in bases {
        let name = log_name(b);
        if let Ok(f) = io.open(&name, false) {
            recovery.bytes_truncated += f.size().unwrap_or(0);
        }
        io.remove(&index_name(b))
            .and_then(|()| io.remove(&name))
            .map_err(|e| LogError::io(format!("removing {name}"), e))?;
        recovery.segments_dropped += 1;
    }
    io.sync_dir()
        .map_err(|e| LogError::io("syncing the log directory", e))?;
    if !bases.is_empty() {
        tracing::error!(
            dropped = bases.len(),
            "unsealed segments lost data in a machine crash under flush interval/os; \
             dropping them from the first gap on"
        );
    }
    Ok(())
}

/// Whether segment `base` has a valid index file recording exactly its file's length, i.e. it
/// was sealed (fsynced, then indexed).
fn sealed_on_disk(io: &dyn SegmentIo, base: Offset) -> bool {
    let Ok(file) = io.open(&log_name(base), false) else {
        return false;
    };
    let Ok(len) = file.size() else { return false };
    read_file(io, &index_name(base))
        .ok()
        .flatten()
        .and_then(|b| meta::decode_index(&b))
        .is_some_and(|idx| idx.base == base && idx.size == len)
}

/// Opens every segment, trusting closed ones with a matching index and scanning the rest.
fn recover(
    io: &dyn SegmentIo,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(State, Recovery), LogError> {
    let names = io
        .list()
        .map_err(|e| LogError::io("listing the log directory", e))?;
    for name in names.iter().filter(|n| n.ends_with(".tmp")) {
        io.remove(name)
            .map_err(|e| LogError::io(format!("removing {name}"), e))?;
    }
    let mut bases: Vec<Offset> = names.iter().filter_map(|n| parse_log_name(n)).collect();
    bases.sort_unstable();

    // A truncation interrupted by a crash is finished first: its intent names the target.
    let intent = read_file(io, TRUNCATE_INTENT)
        .map_err(|e| LogError::io("reading the truncation intent", e))?
        .and_then(|b| meta::decode_truncate_intent(&b));
    if let Some(target) = intent {
        tracing::warn!(target, "finishing a truncation interrupted by a crash");
        for base in bases.iter().filter(|&&b| b >= target) {
            for name in [index_name(*base), log_name(*base)] {
                io.remove(&name)
                    .map_err(|e| LogError::io(format!("removing {name}"), e))?;
            }
        }
        bases.retain(|&b| b < target);
        io.sync_dir()
            .map_err(|e| LogError::io("syncing the log directory", e))?;
    }

    let marker = read_file(io, CLEAN_SHUTDOWN)
        .map_err(|e| LogError::io("reading the clean-shutdown marker", e))?
        .and_then(|b| meta::decode_clean_shutdown(&b));
    let mut recovery = Recovery {
        clean: marker.is_some(),
        segments_scanned: 0,
        bytes_truncated: 0,
        segments_dropped: 0,
        truncation_reason: None,
    };
    let interval = u64::from(config.index_interval_bytes);

    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        let base = intent.unwrap_or(0);
        let file = io
            .open(&log_name(base), true)
            .map_err(|e| LogError::io("creating the first segment", e))?;
        io.sync_dir()
            .map_err(|e| LogError::io("syncing the log directory", e))?;
        segments.insert(base, Segment::empty(base, file, now_ms));
    }
    let mut scanned_closed = Vec::new();
    let mut stop_after = false;
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let name = log_name(base);
        if let Some((_, prev)) = segments.last_key_value() {
            let prev: &Segment = prev;
            if prev.next_offset != base {
                // An unsealed closed segment may have lost whole batches at its end; the
                // segments after it were unsealed too and go with them. A gap before a sealed
                // segment is damage to data that was on disk.
                let rest = &bases[i..];
                if rest.iter().any(|&b| sealed_on_disk(io, b)) {
                    return Err(LogError::Corrupt {
                        file: name,
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {}",
                            prev.next_offset
                        ),
                    });
                }
                drop_segments(io, rest, &mut recovery)?;
                scanned_closed.retain(|&b| b != prev.base);
                break;
            }
        }
        let file = io
            .open(&name, false)
            .map_err(|e| LogError::io(format!("opening {name}"), e))?;
        let file_len = file
            .size()
            .map_err(|e| LogError::io(format!("reading length of {name}"), e))?;
        let mut segment = Segment::empty(base, file, now_ms);

        let trusted = read_file(io, &index_name(base))
            .ok()
            .flatten()
            .and_then(|b| meta::decode_index(&b))
            .filter(|idx| idx.base == base && idx.size == file_len)
            .filter(|_| {
                !last || marker.is_some_and(|m| m.active_base == base && m.active_size == file_len)
            });
        if let Some(idx) = trusted {
            segment.size = idx.size;
            segment.next_offset = idx.next_offset;
            segment.max_timestamp = idx.max_timestamp;
            segment.last_append_ms = idx.last_append_ms;
            segment.index = idx.entries;
            segment.bytes_since_index =
                idx.size - segment.index.last().map_or(0, |e| u64::from(e.position));
        } else {
            recovery.segments_scanned += 1;
            let mut found = scan(&mut segment, file_len, interval)?;
            if found.stopped.is_some()
                && is_zero_tail(&*segment.file, found.valid_bytes, file_len, &name)?
            {
                // Not damage: blocks reserved ahead of the data (preallocation) read as zeros.
                segment
                    .file
                    .set_len(found.valid_bytes)
                    .and_then(|()| segment.file.sync_data())
                    .map_err(|e| LogError::io(format!("trimming {name}"), e))?;
                found.stopped = None;
            }
            if let Some(reason) = found.stopped {
                if !last {
                    // A closed segment not yet sealed (flush `interval` / `os`) may lose its
                    // unsynced tail in a power loss, and then so do the segments after it,
                    // which were not sealed either (sealing is in order). But damage before a
                    // *sealed* segment hit data that was on disk: refuse to guess.
                    let later = &bases[i + 1..];
                    if later.iter().any(|&b| sealed_on_disk(io, b)) {
                        return Err(LogError::Corrupt {
                            file: name,
                            position: found.valid_bytes,
                            reason: format!(
                                "closed segment is damaged ({reason}); refusing to drop the \
                                 acknowledged data after it — move the damaged segment aside to \
                                 proceed"
                            ),
                        });
                    }
                    drop_segments(io, later, &mut recovery)?;
                    stop_after = true;
                }
                let cut = file_len - found.valid_bytes;
                tracing::warn!(segment = %name, bytes = cut, %reason, "truncating torn or invalid log tail");
                segment
                    .file
                    .set_len(found.valid_bytes)
                    .and_then(|()| segment.file.sync_data())
                    .map_err(|e| LogError::io(format!("truncating {name}"), e))?;
                recovery.bytes_truncated += cut;
                recovery.truncation_reason = Some(reason);
            } else if !last {
                scanned_closed.push(base);
            }
        }
        segment.allocated = segment.size; // every path above left the file exactly this long
        segments.insert(base, segment);
        if stop_after {
            break;
        }
    }
    // Closed segments that had to be scanned (never sealed before the crash) are sealed now.
    for base in scanned_closed {
        let segment = &segments[&base];
        segment
            .file
            .sync_data()
            .map_err(|e| LogError::io(format!("syncing {}", segment.name()), e))?;
        replace_file(io, &index_name(base), &meta::encode_index(segment))
            .map_err(|e| LogError::io(format!("writing {}", index_name(base)), e))?;
    }

    let mut state = State {
        log_end: 0,
        segments,
        unsealed: VecDeque::new(),
        generation: 0,
        closed: false,
    };
    if let Some(target) = intent {
        let active = state.active_mut();
        if active.next_offset > target {
            let name = active.name();
            let size = cut_position(active, target, &name)?;
            active
                .file
                .set_len(size)
                .map_err(|e| LogError::io(format!("truncating {name}"), e))?;
        }
        let stale_index = index_name(state.active().base);
        io.remove(&stale_index)
            .and_then(|()| io.remove(TRUNCATE_INTENT))
            .map_err(|e| LogError::io("finishing the interrupted truncation", e))?;
    }
    state.log_end = state.active().next_offset;
    // The recovered tail may sit only in the page cache (after kill -9): make it durable so
    // durable_end can start at log_end. Then forget the marker, so a crash from here on is
    // noticed at the next open.
    let active = state.active();
    active
        .file
        .sync_data()
        .map_err(|e| LogError::io(format!("syncing {}", active.name()), e))?;
    if marker.is_some() {
        io.remove(CLEAN_SHUTDOWN)
            .map_err(|e| LogError::io("removing the clean-shutdown marker", e))?;
    }
    if marker.is_some() || intent.is_some() {
        io.sync_dir()
            .map_err(|e| LogError::io("syncing the log directory", e))?;
    }
    // A brand-new, empty log has no marker either; that is not worth a line.
    let had_data = state.log_end > 0 || recovery.segments_scanned > 0;
    if recovery.bytes_truncated > 0 || (!recovery.clean && had_data) {
        tracing::info!(
            log_end = state.log_end,
            scanned = recovery.segments_scanned,
            truncated = recovery.bytes_truncated,
            "log recovered after an unclean shutdown"
        );
    }
    Ok((state, recovery))
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

    fn lock_sync(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_background(&self) -> std::sync::MutexGuard<'_, Background> {
        self.background.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals queued closed segments, oldest first: fsync (no lock held), then persist the index
    /// and advance the durable end (under the state lock, so a truncation cannot interleave).
    fn seal_closed_segments(&self) -> Result<(), LogError> {
        loop {
            let (base, file, name, generation) = {
                let st = self.read_state();
                let Some(&base) = st.unsealed.front() else {
                    return Ok(());
                };
                let segment = &st.segments[&base];
                (base, segment.file.clone(), segment.name(), st.generation)
            };
            if let Err(e) = file.sync_data() {
                return Err(self.fail(format!("fdatasync of closed segment {name} failed: {e}")));
            }
            let mut st = self.write_state();
            if st.generation != generation || st.unsealed.front() != Some(&base) {
                continue; // truncated meanwhile; look again
            }
            let segment = &st.segments[&base];
            let end = segment.next_offset;
            if let Err(e) = replace_file(&*self.io, &index_name(base), &meta::encode_index(segment))
            {
                // Not fatal: the next open scans a segment whose index is missing.
                tracing::warn!(segment = %name, error = %e, "could not persist segment index");
            }
            st.unsealed.pop_front();
            let mut sync = self.lock_sync();
            if sync.generation == st.generation {
                sync.durable_end = sync.durable_end.max(end);
            }
        }
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

    /// Poisons the log: every later append and every waiter fails with `reason`.
    ///
    /// Must not be called with the sync lock held; it takes it, so that no waiter sits between
    /// checking for a failure and waiting (which would lose this wake-up).
    fn fail(&self, reason: String) -> LogError {
        tracing::error!(%reason, "log failed; refusing further appends");
        {
            let _sync = self.lock_sync();
            let _ = self.failure.set(reason);
        }
        self.synced.notify_all();
        LogError::Failed {
            reason: self.failure.get().cloned().unwrap_or_default(),
        }
    }

    fn durable_end(&self) -> Offset {
        self.lock_sync().durable_end
    }

    /// Lets appenders that are about to write join the coming fsync. Appenders released by the
    /// previous round come straight back with their next batch; starting the fsync at once would
    /// leave them for the round after, and the rounds would alternate between two half-size
    /// groups. So the new syncer yields while the log end keeps moving — a handful of yields at
    /// most, and just one check for a lone appender.
    fn gather_group(&self) {
        const MAX_YIELDS: usize = 16;
        let mut seen = self.read_state().log_end;
        for _ in 0..MAX_YIELDS {
            std::thread::yield_now();
            let now = self.read_state().log_end;
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// One fsync round: syncs the closed segments still waiting to be sealed (oldest first)
    /// and the active segment. Returns the log end and generation it covers, the outcome and
    /// the file it last synced.
    fn sync_round(&self) -> (Offset, u64, std::io::Result<()>, String) {
        // Everything written so far is below `goal`: writes happen under the state lock.
        let (goal, generation, files) = {
            let st = self.read_state();
            let files: Vec<_> = st
                .unsealed
                .iter()
                .map(|base| &st.segments[base])
                .chain(std::iter::once(st.active()))
                .map(|segment| (segment.file.clone(), segment.name()))
                .collect();
            (st.log_end, st.generation, files)
        };
        let mut result = Ok(());
        let mut name = String::new();
        for (file, file_name) in files {
            name = file_name;
            result = file.sync_data();
            if result.is_err() {
                break;
            }
        }
        (goal, generation, result, name)
    }

    /// Blocks until everything below `target` is durable, joining or starting a group sync.
    /// Fails with [`LogError::Truncated`] if a truncation happens first: the offsets below
    /// `target` may then hold other records, or none, so they can never be confirmed.
    fn sync_through(&self, target: Offset) -> Result<Offset, LogError> {
        let mut sync = self.lock_sync();
        let generation = sync.generation;
        loop {
            if let Some(reason) = self.failure.get() {
                return Err(LogError::Failed {
                    reason: reason.clone(),
                });
            }
            if sync.durable_end >= target {
                return Ok(sync.durable_end);
            }
            if sync.generation != generation {
                return Err(LogError::Truncated);
            }
            if sync.syncing {
                sync = self.synced.wait(sync).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            sync.syncing = true;
            drop(sync);
            self.gather_group();
            // A syncer whose own records are durable runs one more round at once if appends
            // are already waiting for it: the disk goes straight on to their fsync instead of
            // idling until one of them wakes up and starts it. Just one, so its own caller
            // waits at most one round longer.
            let mut extra_round = true;
            loop {
                let (goal, round_generation, result, name) = self.sync_round();
                // Read before taking the sync lock (the state lock comes first).
                let more_waiting = extra_round && self.read_state().log_end > goal;
                sync = self.lock_sync();
                if result.is_ok()
                    && let Some(reason) = self.failure.get()
                {
                    // Another fsync of this log (the zero-filler's) failed meanwhile: its lost
                    // pages may be ours, so this one's success proves nothing.
                    let reason = reason.clone();
                    self.release_syncer(sync);
                    return Err(LogError::Failed { reason });
                }
                match result {
                    Ok(()) if sync.generation == round_generation => {
                        sync.durable_end = sync.durable_end.max(goal);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        // Set while still holding the lock: no other thread may start a new
                        // fsync now, which Linux could report as successful after dropping
                        // dirty pages.
                        let reason = format!("fdatasync of {name} failed: {e}");
                        let _ = self.failure.set(reason.clone());
                        self.release_syncer(sync);
                        tracing::error!(%reason, "log failed; refusing further appends");
                        return Err(LogError::Failed {
                            reason: self.failure.get().cloned().unwrap_or(reason),
                        });
                    }
                }
                if goal < target {
                    // The log end was below `target` when this round started: a truncation cut
                    // those records (nothing else lowers it), so no sync can ever reach it.
                    self.release_syncer(sync);
                    return Err(LogError::Truncated);
                }
                if more_waiting && sync.durable_end >= target {
                    extra_round = false;
                    drop(sync);
                    self.synced.notify_all();
                    continue;
                }
                self.release_syncer(sync);
                break;
            }
            sync = self.lock_sync();
        }
    }

    /// Ends this thread's turn as the syncer and wakes every waiter, so one of them may start
    /// the next round.
    fn release_syncer(&self, mut sync: std::sync::MutexGuard<'_, SyncState>) {
        sync.syncing = false;
        drop(sync);
        self.synced.notify_all();
    }

    /// Closes the active segment and starts a new one at the log end. Under `always` the closed
    /// segment is sealed (fsync — at most one group commit's worth of data — and index) right
    /// here; under `interval` and `os` it is queued for the background thread.
    fn roll(&self, st: &mut State, now_ms: i64) -> Result<(), LogError> {
        let seal_now = self.config.flush == FlushPolicy::Always;
        self.end_zero_fill();
        let active = st.active_mut();
        let name = active.name();
        // A closed segment is exactly as long as its data: recovery and the index rely on it.
        if let Err(e) = active.file.set_len(active.size) {
            return Err(self.fail(format!("trimming {name} while rolling failed: {e}")));
        }
        active.allocated = active.size;
        let active = st.active();
        let closed_base = active.base;
        let closed_end = active.next_offset;
        if seal_now {
            if let Err(e) = active.file.sync_data() {
                return Err(self.fail(format!("fdatasync of {name} while rolling failed: {e}")));
            }
            if let Err(e) = replace_file(
                &*self.io,
                &index_name(active.base),
                &meta::encode_index(active),
            ) {
                // Not fatal: the next open scans a segment whose index is missing.
                tracing::warn!(segment = %name, error = %e, "could not persist segment index");
            }
        }
        let base = st.log_end;
        let new_name = log_name(base);
        let file = self.io.open(&new_name, true).map_err(|e| {
            if is_out_of_space(&e) {
                LogError::DiskFull {
                    file: new_name.clone(),
                    source: e,
                }
            } else {
                LogError::io(format!("creating {new_name}"), e)
            }
        })?;
        if let Err(e) = self.io.sync_dir() {
            return Err(self.fail(format!(
                "fsync of the log directory after creating {new_name} failed: {e}"
            )));
        }
        st.segments.insert(base, Segment::empty(base, file, now_ms));
        if seal_now {
            let mut sync = self.lock_sync();
            if sync.generation == st.generation {
                sync.durable_end = sync.durable_end.max(closed_end);
            }
        } else {
            st.unsealed.push_back(closed_base);
            self.lock_background().seal_requested = true;
            self.background_signal.notify_all();
        }
        Ok(())
    }

    /// Validates, stamps and writes `bytes` (not yet synced); see [`FileLog::write`].
    fn write(&self, bytes: &mut [u8], leader_epoch: LeaderEpoch) -> Result<AppendInfo, LogError> {
        let spans = check_append(bytes, self.config.max_batch_bytes as usize)?;
        let max_timestamp = spans
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(i64::MIN);
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        self.check_usable(&st)?;

        let active = st.active();
        let full = active.size + bytes.len() as u64 > self.config.segment_bytes;
        let old =
            now.saturating_sub(active.created_ms) >= self.config.segment_age.as_millis() as i64;
        let rolled = !active.is_empty() && (full || old);
        if rolled {
            self.roll(&mut st, now)?;
        }

        let base = st.log_end;
        let end = stamp(bytes, &spans, base, leader_epoch);
        let segment_bytes = self.config.segment_bytes;
        let active = st.active_mut();
        let position = active.size;
        let needed = position + bytes.len() as u64;
        self.before_zero_filled_write(&mut st, position, needed);
        let active = st.active_mut();
        if needed > active.allocated && !self.zero_fills() {
            // Reserve blocks ahead: fdatasync of writes into reserved blocks skips most of the
            // file-system metadata work of growing the file (measured 2-3x cheaper for 128 KiB
            // groups on ext4). Best effort: without it appends still work.
            let want = needed.max((active.allocated + PREALLOCATE_STEP).min(segment_bytes));
            match active.file.preallocate(want) {
                Ok(()) => active.allocated = want,
                Err(e) => tracing::debug!(error = %e, "preallocation failed; appending without"),
            }
        }
        if let Err(e) = write_all_at(&*active.file, bytes, position) {
            let name = active.name();
            // Cut off whatever part of the write landed; later writes go to `position` anyway.
            let _ = active.file.set_len(position);
            active.allocated = position;
            return Err(if is_out_of_space(&e) {
                LogError::DiskFull {
                    file: name,
                    source: e,
                }
            } else {
                self.fail(format!("write to {name} failed: {e}"))
            });
        }
        let interval = u64::from(self.config.index_interval_bytes);
        let mut next = base;
        for span in &spans {
            active.note_batch(
                position + span.start as u64,
                span.len as u64,
                next,
                next + span.records,
                span.max_timestamp,
                interval,
            );
            next += span.records;
        }
        debug_assert_eq!(next, end);
        active.max_timestamp = active.max_timestamp.max(max_timestamp);
        active.last_append_ms = now;
        st.log_end = end;
        drop(st);

        if rolled {
            // A roll closes a segment, which is when retention can have something to delete.
            if let Err(e) = self.apply_retention(now) {
                tracing::warn!(error = %e, "retention after a segment roll failed");
            }
        }
        Ok(AppendInfo {
            base_offset: base,
            last_offset: end - 1,
            append_time_ms: now,
            durability: Durability::PageCache,
        })
    }

    /// Waits until everything below `end` is as durable as the flush policy promises.
    fn wait_durable(&self, end: Offset) -> Result<Durability, LogError> {
        match self.config.flush {
            FlushPolicy::Always => {
                self.sync_through(end)?;
                Ok(Durability::OnDisk)
            }
            FlushPolicy::Interval(_) | FlushPolicy::Os => {
                if let Some(reason) = self.failure.get() {
                    return Err(LogError::Failed {
                        reason: reason.clone(),
                    });
                }
                Ok(Durability::PageCache)
            }
        }
    }

    /// Reads as [`LogStore::read`] promises if `at_least_one`, else as
    /// [`LogStore::read_within`] (a first batch larger than `max_bytes` is then not read: only
    /// batch headers are, from the index entry up to it), taking bytes `source` where they
    /// may come from: `None` if they are not all in
    /// memory, or a writer holds the log, and `source` is [`ReadFrom::Cache`] (never `None`
    /// from [`ReadFrom::Disk`]).
    fn read_from(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
        source: ReadFrom,
    ) -> Result<Option<ReadBatches>, LogError> {
        let (file, name, mut position, end) = {
            let st = match source {
                ReadFrom::Disk => self.read_state(),
                ReadFrom::Cache => match self.try_read_state() {
                    Some(st) => st,
                    None => return Ok(None),
                },
            };
            if st.closed {
                return Err(LogError::Closed);
            }
            st.check_range(from)?;
            if from == st.log_end {
                return Ok(Some(ReadBatches {
                    bytes: Bytes::new(),
                    next_offset: from,
                }));
            }
            let (_, segment) = st
                .segments
                .range(..=from)
                .next_back()
                .expect("from >= earliest");
            (
                segment.file.clone(),
                segment.name(),
                segment.position_for_offset(from),
                segment.size,
            )
        };
        // Walk batch headers from the index position to the batch that holds `from`.
        let first = loop {
            let Some(header) = peek_header_from(&*file, &name, position, end, source)? else {
                return Ok(None);
            };
            if header.next_offset > from {
                break header;
            }
            position += header.size;
        };
        if !at_least_one && first.size > max_bytes as u64 {
            return Ok(Some(ReadBatches {
                bytes: Bytes::new(),
                next_offset: from,
            }));
        }
        let want = (first.size.max(max_bytes as u64)).min(end - position) as usize;
        let mut buffer = ReadBuffer::new(want);
        let read = read_exact_from(&*file, buffer.as_mut_slice(), position, source)
            .map_err(|e| LogError::io(format!("reading {name} at {position}"), e))?;
        if !read {
            return Ok(None);
        }

        let bytes = buffer.as_ref();
        let mut kept = 0;
        let mut next_offset = from;
        while kept < bytes.len() {
            let Ok(batch) = RecordBatch::parse(&bytes[kept..]) else {
                break;
            };
            if let Err(e) = batch.verify_integrity() {
                if kept == 0 {
                    return Err(LogError::Corrupt {
                        file: name,
                        position,
                        reason: e.to_string(),
                    });
                }
                break;
            }
            next_offset = batch.next_offset();
            kept += batch.size();
        }
        buffer.truncate(kept);
        Ok(Some(ReadBatches {
            bytes: buffer.into_bytes(),
            next_offset,
        }))
    }

    /// [`Inner::read_from`] the disk, which always answers.
    fn read_from_disk(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadBatches, LogError> {
        self.read_from(from, max_bytes, at_least_one, ReadFrom::Disk)?
            .ok_or_else(|| LogError::io("reading", std::io::ErrorKind::WouldBlock.into()))
    }

    fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        self.check_usable(&st)?;
        if offset >= st.log_end {
            return Ok(st.log_end);
        }
        st.generation += 1;
        // Crash safety: the steps below can be interrupted anywhere; the durable intent makes
        // the next open finish the truncation instead of finding half of it.
        replace_file(
            &*self.io,
            TRUNCATE_INTENT,
            &meta::encode_truncate_intent(offset),
        )
        .map_err(|e| LogError::io("writing the truncation intent", e))?;
        if let Err(e) = self.truncate_segments(&mut st, offset, now) {
            // The intent is on disk: a log that went on appending would lose those appends
            // when the next open finishes the truncation. Refuse everything instead.
            return Err(self.fail(format!("truncation to offset {offset} failed: {e}")));
        }
        st.log_end = st.active().next_offset;
        let mut sync = self.lock_sync();
        sync.generation = st.generation;
        sync.durable_end = sync.durable_end.min(st.log_end);
        Ok(st.log_end)
    }

    /// The steps of a truncation after its intent is durable; see [`Inner::truncate_to`].
    fn truncate_segments(&self, st: &mut State, offset: Offset, now: i64) -> Result<(), LogError> {
        self.end_zero_fill();
        let removed: Vec<Offset>;
        if offset <= st.earliest() {
            // Everything goes; the log restarts at `offset` in a fresh segment.
            let new_name = log_name(offset);
            removed = st
                .segments
                .keys()
                .copied()
                .filter(|&b| b != offset)
                .collect();
            let file = self
                .io
                .open(&new_name, true)
                .map_err(|e| LogError::io(format!("creating {new_name}"), e))?;
            file.set_len(0)
                .map_err(|e| LogError::io(format!("truncating {new_name}"), e))?;
            st.segments.clear();
            st.segments
                .insert(offset, Segment::empty(offset, file, now));
        } else {
            // The segment holding `offset - 1` becomes the active one; later ones go.
            let keep = *st
                .segments
                .range(..offset)
                .next_back()
                .expect("offset > earliest")
                .0;
            removed = st.segments.range(keep + 1..).map(|(b, _)| *b).collect();
            for base in &removed {
                st.segments.remove(base);
            }
            let active = st.active_mut();
            let name = active.name();
            let size = cut_position(active, offset, &name)?;
            active
                .file
                .set_len(size)
                .map_err(|e| LogError::io(format!("truncating {name}"), e))?;
            active.allocated = size;
        }
        let active = st.active();
        active.file.sync_data().map_err(|e| {
            LogError::io(
                format!("fdatasync of {} after truncation", active.name()),
                e,
            )
        })?;
        for base in &removed {
            let _ = self.io.remove(&index_name(*base));
            self.io
                .remove(&log_name(*base))
                .map_err(|e| LogError::io(format!("removing {}", log_name(*base)), e))?;
        }
        // The active segment may have been a closed one: its index file is stale now.
        let _ = self.io.remove(&index_name(active.base));
        let active_base = active.base;
        let segments = &st.segments;
        st.unsealed
            .retain(|b| *b != active_base && segments.contains_key(b));
        // The intent goes only once everything it describes is durable.
        self.io
            .sync_dir()
            .and_then(|()| self.io.remove(TRUNCATE_INTENT))
            .and_then(|()| self.io.sync_dir())
            .map_err(|e| LogError::io("syncing the log directory after truncation", e))?;
        Ok(())
    }

    fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let st = self.write_state();
        if st.closed {
            return Err(LogError::Closed);
        }
        let mut total: u64 = st.segments.values().map(|s| s.size).sum();
        let mut doomed = Vec::new();
        for segment in st.segments.values().take(st.segments.len() - 1) {
            let too_old = self.config.retention_age.is_some_and(|age| {
                segment.last_append_ms < now_ms.saturating_sub(age.as_millis() as i64)
            });
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - segment.size >= limit);
            if !(too_old || too_big) {
                break;
            }
            total -= segment.size;
            doomed.push(segment.base);
        }
        self.remove_segments(st, &doomed, "retention")
    }

    /// Deletes every closed segment that lies wholly below `offset` (its records all have lower
    /// offsets). The active segment is never deleted.
    fn delete_segments_before(&self, offset: Offset) -> Result<RetentionOutcome, LogError> {
        let st = self.write_state();
        if st.closed {
            return Err(LogError::Closed);
        }
        let bases: Vec<Offset> = st.segments.keys().copied().collect();
        let doomed: Vec<Offset> = bases
            .windows(2)
            .take_while(|pair| pair[1] <= offset)
            .map(|pair| pair[0])
            .collect();
        self.remove_segments(st, &doomed, "deletion below an offset")
    }

    /// Removes the segments based at `doomed` (closed ones, oldest first) from the state, then
    /// their files, then syncs the directory.
    fn remove_segments(
        &self,
        mut st: std::sync::RwLockWriteGuard<'_, State>,
        doomed: &[Offset],
        why: &str,
    ) -> Result<RetentionOutcome, LogError> {
        let mut outcome = RetentionOutcome::default();
        for base in doomed {
            if let Some(segment) = st.segments.remove(base) {
                outcome.segments_deleted += 1;
                outcome.bytes_deleted += segment.size;
            }
        }
        st.unsealed.retain(|b| !doomed.contains(b));
        outcome.earliest = st.earliest();
        drop(st);
        for base in doomed {
            for name in [index_name(*base), log_name(*base)] {
                self.io
                    .remove(&name)
                    .map_err(|e| LogError::io(format!("removing {name}"), e))?;
            }
        }
        if !doomed.is_empty() {
            self.io
                .sync_dir()
                .map_err(|e| LogError::io("syncing the log directory", e))?;
            tracing::info!(
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                earliest = outcome.earliest,
                why,
                "deleted segments"
            );
        }
        Ok(outcome)
    }

    fn close(&self) -> Result<(), LogError> {
        if self.read_state().closed {
            return Ok(());
        }
        let target = self.read_state().log_end;
        self.sync_through(target)?;
        self.seal_closed_segments()?;
        let mut st = self.write_state();
        if st.closed {
            return Ok(());
        }
        self.check_usable(&st)?;
        self.end_zero_fill();
        let active = st.active_mut();
        // Trim the blocks reserved ahead, so the marker's size is the file's exact length.
        active
            .file
            .set_len(active.size)
            .map_err(|e| LogError::io(format!("trimming {} at close", active.name()), e))?;
        active.allocated = active.size;
        let active = st.active();
        active.file.sync_data().map_err(|e| {
            self.fail(format!(
                "fdatasync of {} at close failed: {e}",
                active.name()
            ))
        })?;
        replace_file(
            &*self.io,
            &index_name(active.base),
            &meta::encode_index(active),
        )
        .map_err(|e| LogError::io(format!("writing {}", index_name(active.base)), e))?;
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
