//! Opening a log: [`recover`] rebuilds the in-memory state from the directory after any
//! shutdown, clean or not — first [`inspect`] decides, reading only, then the plan is carried
//! out — and never serves a torn or corrupt batch, nor cuts data that was durable;
//! [`Recovery`] reports what it found and cut.
//!
//! # Crash-recovery argument
//! Why an acknowledged append survives every crash the log can see (kill -9, power loss, a failed
//! fsync followed by a reopen), and why damage to it is refused rather than cut.
//! `docs/design.md` states the same argument beside the byte layouts; a change to one belongs in
//! the other.
//!
//! Invariants while running:
//!
//! 1. Closed segments are sealed strictly in order, and a segment's index file is written only
//!    after its fsync: under `always` a roll seals the closed segment before it creates the next
//!    one; under `interval` and `os` the roll queues it and the background thread seals the queue
//!    oldest first. So a segment with a valid index is durable, and so is every segment before it.
//!    Under `always` only the last segment can hold unsynced bytes; under `interval`/`os`, only
//!    the last one and the closed-but-unsealed ones right before it.
//! 2. Index files, markers and the recovery point are replaced atomically (temp file, fsync,
//!    rename, fsync dir) and carry a CRC-32C, so a torn or stale one is ignored, never trusted.
//! 3. Offsets are contiguous: each segment starts at the previous one's end.
//! 4. No append is reported durable before an fsync that started after its write, and a
//!    truncation makes its intent durable before it touches anything.
//! 5. The recovery point only records an offset below which everything was durable before the
//!    file was written: after a roll's seal, a close's sync, the sync a truncation or a recovery
//!    ends with, or (background thread) the durable end. A truncation that cuts below it records
//!    its new end before its intent goes, holding the checkpoint lock from before it lowers the
//!    durable end, so the background thread cannot record a removed offset.
//! 6. Under `always` at most W = max(`max_unsynced_bytes`, `max_batch_bytes`) bytes are ever
//!    written but not known fsynced, all at the end of the last segment: a write that would go
//!    past W waits for a group fsync first, and an append larger than W is written in pieces
//!    with an fsync between them. The recovery point records W (0 under `interval`/`os`, which
//!    have no such bound; when there is no valid recovery point, the configuration's W is used).
//! 7. The clean-shutdown marker is on disk only while the files are exactly as the close that
//!    wrote it left them. A close writes it last, atomically, after fsyncing everything it
//!    describes (the active segment, its index, the recovery point). An open that trusted it
//!    and changes nothing leaves it there, and every change after an open — a write, a roll, a
//!    truncation, a segment deletion, a zero-fill or trim of zeros, an index or recovery point
//!    written, a close with something to write — first removes it and fsyncs the directory
//!    (`Inner::before_change`, the `marker` module); if that fails, the change does not
//!    happen. So a valid marker proves that the files it describes were fsynced and have not
//!    changed since, whatever crashed after it was written.
//!
//! On open, recovery first *inspects* the directory, reading only, and decides; only then does it
//! change anything. When it refuses, no file has been modified.
//!
//! 1. Leftover `*.tmp` files are removed.
//! 2. If `truncate-intent` exists, a truncation was interrupted: segments at or above the target
//!    are deleted, and after loading, the last remaining segment is cut at the target. (The
//!    online truncation refuses all further appends if any of its steps fails, so finishing it
//!    at the next open can never delete an append that was acknowledged after the intent was
//!    written.) While the intent exists the recovery point counts only up to its target.
//! 3. Closed segments are trusted when their index file is valid and records the file's exact
//!    length — by invariant 1 they were durable before anything after them existed.
//! 4. The last segment is trusted only if a valid `clean-shutdown` marker names it with its exact
//!    length. Otherwise it is scanned batch by batch (framing, magic 2, CRC-32C, record count vs
//!    offset delta, contiguous offsets) up to the first batch that fails, at byte P where offset
//!    E was expected. Then:
//!    1. E below the recovery point: damage to data that was durable (bit rot, or zeros where
//!       batches were). The open fails with [`LogError::Corrupt`] naming the file and P.
//!    2. Only zeros from P on: blocks reserved or zero-filled ahead of the data, not damage;
//!       trimmed.
//!    3. Under `always` (W > 0) the rest of the segment is walked *past* the damage: a byte by
//!       byte search for the next valid batch (magic 2, a length that fits, CRC-32C, base offset
//!       at least E), then batch by batch again. A torn write damages only the last W bytes
//!       written, and nothing was written after them (invariant 6); so a valid batch ending more
//!       than W bytes past P proves the damage was on disk before it: [`LogError::Corrupt`].
//!    4. Otherwise it is a torn tail, which was never acknowledged under `always` (an
//!       acknowledgement waits for the fsync that covers it): it is cut. [`Recovery`] reports each
//!       cut — file, position, first offset, bytes, and records counted from the batch headers
//!       that are readable there ("at least" when they do not account for every byte) — and it
//!       is logged at WARN.
//! 5. Closed segments without a valid index are scanned the same way. Damage in one, or a gap
//!    after it (it ends short of the next segment's base), is refused with [`LogError::Corrupt`] when it lies
//!    below the recovery point, when the log was written under `always` (every closed segment was
//!    fsynced before the next one was created, so none can have a torn tail), or when a later
//!    segment is sealed (the damage hit data that was on disk). Otherwise (`interval`/`os`, an
//!    unsealed segment that lost unsynced data in a machine crash) it is cut and the unsealed
//!    segments after it are dropped, because offsets must stay contiguous; both are reported as
//!    cuts. Scanned closed segments are sealed before the log opens.
//! 6. A log that ends below its recovery point (a file shortened, a segment missing) has lost
//!    durable data: [`LogError::Corrupt`].
//! 7. The last segment is fsynced (after kill -9 its tail may exist only in the page cache), so
//!    the durable end can start at the log end — unless the marker was trusted and the open
//!    changes nothing: by invariant 7 the segment was fsynced before the marker was written and
//!    has not changed since. The recovery point is rewritten at the log end (unless it already
//!    says exactly that, or the log is empty and has none); then the intent is removed, and so
//!    is the marker unless it was trusted and the open changed nothing, and the directory is
//!    fsynced. A marker left on disk is removed, durably, before the first change (invariant
//!    7), so a crash after any change is noticed; a crash before one finds the marker still
//!    true. A close of a log nothing changed since such an open writes and fsyncs nothing:
//!    the marker on disk already says all that close would write again.
//!
//! What recovery cannot tell apart: damage to data acknowledged after the last recovery point and
//! lying within W of the log end, with no valid batch more than W past it, is exactly what a torn
//! write leaves, and is cut (and reported). The recovery point is rewritten at every roll, at
//! close, and every `checkpoint_interval` (default 10 s) while the durable end moves, and W is
//! 16 MiB by default, so this is damage to data written in the last seconds before a crash.
//!
//! Reads check each batch's CRC before returning it, so a batch damaged after recovery is reported
//! as [`LogError::Corrupt`] and never served.
//!
//! The way out of a refusal is offline: `staunch log check DIR` (the `check` module) lists every damaged batch — also in sealed segments, which an open trusts
//! without reading — and predicts the open with the same inspection code; `staunch log repair DIR
//! --move-aside` cuts the log at its first damage and moves everything from there on into
//! `damaged-<unix-ms>/` in the log directory, deleting nothing. Only the prefix before the damage
//! can stay, because offsets must be contiguous (invariant 3), as Kafka's recovery also truncates
//! at the first invalid batch.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use staunch_core::Offset;

use super::State;
use super::meta::{
    self, CLEAN_SHUTDOWN, CleanShutdown, RECOVERY_POINT, RecoveryPoint, TRUNCATE_INTENT,
};
use super::segment::{Segment, index_name, log_name, parse_log_name};
use super::truncate::cut_position;
use super::walk::{Chunks, Region, scan, walk_from, walk_segment};
use crate::LogError;
use crate::config::LogConfig;
use crate::io::{SegmentIo, read_file, replace_file};

/// How an open found the log: a clean shutdown, or what recovery scanned and cut. For logs,
/// operators (the broker shows it) and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// A valid clean-shutdown marker was found, so the last segment was not scanned; or the
    /// log never held a byte (its one segment was found empty), so there was nothing to
    /// recover.
    pub clean: bool,
    /// Segments scanned batch by batch.
    pub segments_scanned: usize,
    /// Bytes cut from the tail because they were torn or invalid (dropped segments included;
    /// zeros reserved ahead of the data, also cut, are not counted).
    pub bytes_truncated: u64,
    /// Records in the bytes cut, counted from the batch headers that could be read there: a
    /// lower bound unless [`Recovery::records_truncated_exact`]. Records that never reached the
    /// disk at all (unsynced writes a power cut dropped whole) cannot be counted.
    pub records_truncated: u64,
    /// Whether readable batch headers accounted for every byte cut.
    pub records_truncated_exact: bool,
    /// Closed but unsealed segments dropped because an earlier one lost its unsynced tail.
    pub segments_dropped: usize,
    /// Why the (last) tail was cut, if one was: `<file> at byte <position>: <reason>`.
    pub truncation_reason: Option<String>,
    /// Every cut, in log order: the torn tail of a segment, or a whole dropped segment.
    pub cuts: Vec<TailCut>,
}

impl Recovery {
    fn new(clean: bool) -> Self {
        Recovery {
            clean,
            segments_scanned: 0,
            bytes_truncated: 0,
            records_truncated: 0,
            records_truncated_exact: true,
            segments_dropped: 0,
            truncation_reason: None,
            cuts: Vec::new(),
        }
    }

    fn add_cut(&mut self, cut: TailCut) {
        self.bytes_truncated += cut.bytes;
        self.records_truncated = self.records_truncated.saturating_add(cut.records);
        self.records_truncated_exact &= cut.records_exact;
        self.truncation_reason = Some(format!(
            "{} at byte {}: {}",
            cut.file, cut.position, cut.reason
        ));
        self.cuts.push(cut);
    }

    /// One line saying what was lost, e.g. `cut 180 bytes (3 records) from offset 17 on:
    /// 00000000000000000000.log at byte 4242: record batch CRC mismatch …`; `None` if nothing
    /// was cut.
    pub fn summary(&self) -> Option<String> {
        let first = self.cuts.first()?;
        let records = if self.records_truncated_exact {
            format!("{} records", self.records_truncated)
        } else {
            format!("at least {} records", self.records_truncated)
        };
        Some(format!(
            "cut {} bytes ({records}) from offset {} on: {} at byte {}: {}",
            self.bytes_truncated, first.first_offset, first.file, first.position, first.reason
        ))
    }
}

/// One stretch of bytes recovery cut: the torn tail of a segment from a position on, or a whole
/// unsealed segment dropped after an earlier one lost its tail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailCut {
    /// The segment file.
    pub file: String,
    /// Byte position of the cut in the file (0 for a dropped segment).
    pub position: u64,
    /// The offset the first cut batch had or should have had; the log ends here now.
    pub first_offset: Offset,
    /// Bytes cut, not counting zeros at the end (blocks reserved ahead of the data).
    pub bytes: u64,
    /// Records counted from the readable batch headers in the cut bytes.
    pub records: u64,
    /// Whether those headers accounted for every cut byte (else `records` is a lower bound).
    pub records_exact: bool,
    /// Why the bytes there are not a valid batch.
    pub reason: String,
}

impl fmt::Display for TailCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_least = if self.records_exact { "" } else { "at least " };
        write!(
            f,
            "{} at byte {}: {} bytes ({at_least}{} records) from offset {} on: {}",
            self.file, self.position, self.bytes, self.records, self.first_offset, self.reason
        )
    }
}

/// What an open will do, decided by [`inspect`] before anything on disk is changed.
pub(super) struct Plan {
    tmp_files: Vec<String>,
    intent: Option<Offset>,
    /// Segments at or above the truncation intent's target: deleted.
    doomed_by_intent: Vec<Offset>,
    marker: bool,
    /// The clean-shutdown marker, if it was valid and the last segment was trusted because it
    /// names it with its exact length.
    marker_trusted: Option<CleanShutdown>,
    pub(super) recovery_point: Option<RecoveryPoint>,
    pub(super) segments: Vec<Planned>,
    /// Unsealed segments after a cut: deleted.
    dropped: Vec<Offset>,
    pub(super) recovery: Recovery,
}

/// One segment the log keeps, as [`inspect`] found it.
pub(super) struct Planned {
    pub(super) segment: Segment,
    /// The file's length; `segment.size` is the valid part.
    file_len: u64,
    /// The file is cut to `segment.size`: a tail of zeros or a torn tail.
    trim: bool,
    /// A closed segment that had to be scanned: it is fsynced and indexed before the log opens.
    reseal: bool,
}

fn corrupt(file: impl Into<String>, position: u64, reason: String) -> LogError {
    LogError::Corrupt {
        file: file.into(),
        position,
        reason,
    }
}

/// What to tell the operator after a refusal.
const WAY_OUT: &str = "nothing was truncated; with the broker stopped, `staunch log check` lists \
                       the damage and `staunch log repair --move-aside` moves it aside";

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

/// Records the regions of a cut hold (zeros hold none), and whether the count is exact.
fn count(regions: &[Region]) -> (u64, bool) {
    let mut records = 0u64;
    let mut exact = true;
    for region in regions {
        match region {
            Region::Batches { records: n, .. } => records = records.saturating_add(*n),
            Region::Damaged(d) if d.zeros => {}
            Region::Damaged(d) => {
                records = records.saturating_add(d.records);
                exact &= d.records_exact;
            }
        }
    }
    (records, exact)
}

/// What a whole segment that is dropped held.
fn dropped_cut(io: &dyn SegmentIo, base: Offset) -> Result<TailCut, LogError> {
    let name = log_name(base);
    let (len, regions) = walk_segment(io, base)?;
    let (records, records_exact) = count(&regions);
    Ok(TailCut {
        file: name,
        position: 0,
        first_offset: base,
        bytes: len,
        records,
        records_exact,
        reason: "an unsealed segment after one that lost its tail: offsets must stay contiguous"
            .into(),
    })
}

/// Reads the directory and decides what recovery will do, changing nothing. Fails with
/// [`LogError::Corrupt`] if opening would cut data that was durable (see the module docs).
pub(super) fn inspect(
    io: &dyn SegmentIo,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Plan, LogError> {
    let names = io
        .list()
        .map_err(|e| LogError::io("listing the log directory", e))?;
    let tmp_files: Vec<String> = names
        .iter()
        .filter(|n| n.ends_with(".tmp"))
        .cloned()
        .collect();
    let mut bases: Vec<Offset> = names.iter().filter_map(|n| parse_log_name(n)).collect();
    bases.sort_unstable();

    // A truncation interrupted by a crash is finished first: its intent names the target.
    let intent = read_file(io, TRUNCATE_INTENT)
        .map_err(|e| LogError::io("reading the truncation intent", e))?
        .and_then(|b| meta::decode_truncate_intent(&b));
    let doomed_by_intent = match intent {
        Some(target) => bases.iter().copied().filter(|&b| b >= target).collect(),
        None => Vec::new(),
    };
    if let Some(target) = intent {
        bases.retain(|&b| b < target);
    }

    let marker = read_file(io, CLEAN_SHUTDOWN)
        .map_err(|e| LogError::io("reading the clean-shutdown marker", e))?
        .and_then(|b| meta::decode_clean_shutdown(&b));
    let recovery_point = read_file(io, RECOVERY_POINT)
        .map_err(|e| LogError::io("reading the recovery point", e))?
        .and_then(|b| meta::decode_recovery_point(&b));
    // Every offset below `durable` was on disk; at most `window` bytes were not (0: no bound).
    let durable = recovery_point
        .map_or(0, |p| p.offset)
        .min(intent.unwrap_or(Offset::MAX));
    let window = recovery_point.map_or_else(|| config.unsynced_window(), |p| p.unsynced_window);
    // Written under flush `always`: every closed segment was sealed before the next existed.
    let strict = window > 0;
    let interval = u64::from(config.index_interval_bytes);
    let mut recovery = Recovery::new(marker.is_some());

    let mut segments: Vec<Planned> = Vec::new();
    let mut dropped = Vec::new();
    let mut marker_trusted = None;
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let name = log_name(base);
        if let Some(prev) = segments.last_mut() {
            let end = prev.segment.next_offset;
            if end != base {
                let why =
                    format!("segment starts at offset {base} but the previous one ends at {end}");
                if end < durable {
                    return Err(corrupt(
                        name,
                        0,
                        format!(
                            "{why}, and every offset below {durable} was on disk (recovery \
                             point): acknowledged data is missing; {WAY_OUT}"
                        ),
                    ));
                }
                if strict {
                    return Err(corrupt(
                        name,
                        0,
                        format!(
                            "{why}; under flush `always` every closed segment was fsynced before \
                             the next one was created, so this is damage, not a lost tail; \
                             {WAY_OUT}"
                        ),
                    ));
                }
                // An unsealed closed segment may have lost whole batches at its end; the
                // segments after it were unsealed too and go with them. A gap before a sealed
                // segment is damage to data that was on disk.
                let rest = &bases[i..];
                if rest.iter().any(|&b| sealed_on_disk(io, b)) {
                    return Err(corrupt(name, 0, format!("{why}; {WAY_OUT}")));
                }
                prev.reseal = false; // it is the last segment now
                for &b in rest {
                    recovery.add_cut(dropped_cut(io, b)?);
                    recovery.segments_dropped += 1;
                    dropped.push(b);
                }
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
            if last {
                marker_trusted = marker;
            }
            segment.size = idx.size;
            segment.next_offset = idx.next_offset;
            segment.max_timestamp = idx.max_timestamp;
            segment.last_append_ms = idx.last_append_ms;
            segment.index = idx.entries;
            segment.bytes_since_index =
                idx.size - segment.index.last().map_or(0, |e| u64::from(e.position));
            segments.push(Planned {
                segment,
                file_len,
                trim: false,
                reseal: false,
            });
            continue;
        }

        recovery.segments_scanned += 1;
        let found = scan(&mut segment, file_len, interval)?;
        let mut planned = Planned {
            segment,
            file_len,
            trim: false,
            reseal: !last,
        };
        let Some(stop) = found.stopped else {
            segments.push(planned);
            continue;
        };
        let file = planned.segment.file.clone();
        let mut chunks = Chunks::new(&*file, &name, file_len);
        let zeros = chunks.all_zero(stop.position, file_len)?;
        if stop.expected_offset < durable {
            let what = if zeros {
                "zeros where batches were".to_owned()
            } else {
                stop.reason.clone()
            };
            return Err(corrupt(
                name,
                stop.position,
                format!(
                    "{what}, below the recovery point: every offset below {durable} was on disk, \
                     so this is damage to acknowledged data (expected offset {} here), not a \
                     torn write; {WAY_OUT}",
                    stop.expected_offset
                ),
            ));
        }
        if zeros {
            // Not damage: blocks reserved or zero-filled ahead of the data read as zeros. A
            // closed segment that ends short of the next one is caught by the gap check.
            planned.trim = true;
            segments.push(planned);
            continue;
        }
        if !last {
            if strict {
                return Err(corrupt(
                    name,
                    stop.position,
                    format!(
                        "closed segment is damaged ({}, expected offset {}); under flush `always` \
                         it was fsynced before the next segment was created, so this is damage \
                         to data that was on disk; {WAY_OUT}",
                        stop.reason, stop.expected_offset
                    ),
                ));
            }
            // A closed segment not yet sealed (flush `interval` / `os`) may lose its unsynced
            // tail in a power loss, and then so do the segments after it, which were not
            // sealed either (sealing is in order). But damage before a *sealed* segment hit
            // data that was on disk: refuse to guess.
            if bases[i + 1..].iter().any(|&b| sealed_on_disk(io, b)) {
                return Err(corrupt(
                    name,
                    stop.position,
                    format!(
                        "closed segment is damaged ({}); refusing to drop the sealed segments \
                         after it; {WAY_OUT}",
                        stop.reason
                    ),
                ));
            }
        }
        let regions = walk_from(&mut chunks, stop.position, stop.expected_offset)?;
        if strict {
            // A torn write damages only the last `window` bytes written: valid batches further
            // on prove the damage was on disk before them.
            let beyond = regions.iter().find_map(|r| match r {
                Region::Batches {
                    start,
                    end,
                    base_offset,
                    ..
                } if *end > stop.position.saturating_add(window) => Some((*start, *base_offset)),
                _ => None,
            });
            if let Some((at, offset)) = beyond {
                return Err(corrupt(
                    name,
                    stop.position,
                    format!(
                        "{} (expected offset {}); valid batches follow it (offset {offset} at \
                         byte {at}) more than {window} bytes past it, further than this log ever \
                         leaves unsynced, so this is damage to acknowledged data, not a torn \
                         write; {WAY_OUT}",
                        stop.reason, stop.expected_offset
                    ),
                ));
            }
        }
        let (records, records_exact) = count(&regions);
        // Zeros at the end were never data: not counted as lost.
        let data_end = match regions.last() {
            Some(Region::Damaged(d)) if d.zeros => d.start,
            _ => file_len,
        };
        recovery.add_cut(TailCut {
            file: name,
            position: stop.position,
            first_offset: stop.expected_offset,
            bytes: data_end - stop.position,
            records,
            records_exact,
            reason: stop.reason,
        });
        planned.trim = true;
        planned.reseal = false; // if it was closed, it is the last segment now
        segments.push(planned);
        if !last {
            for &b in &bases[i + 1..] {
                recovery.add_cut(dropped_cut(io, b)?);
                recovery.segments_dropped += 1;
                dropped.push(b);
            }
            break;
        }
    }

    let end = segments
        .last()
        .map_or(intent.unwrap_or(0), |p| p.segment.next_offset);
    if end < durable {
        let (file, position) = segments.last().map_or_else(
            || (log_name(intent.unwrap_or(0)), 0),
            |p| (p.segment.name(), p.segment.size),
        );
        return Err(corrupt(
            file,
            position,
            format!(
                "the log ends at offset {end}, but every offset below {durable} was on disk \
                 (recovery point): acknowledged data is missing; {WAY_OUT}"
            ),
        ));
    }
    Ok(Plan {
        tmp_files,
        intent,
        doomed_by_intent,
        marker: marker.is_some(),
        marker_trusted,
        recovery_point,
        segments,
        dropped,
        recovery,
    })
}

/// Opens every segment, trusting closed ones with a matching index and scanning the rest: first
/// [`inspect`] decides (and refuses, changing nothing, if that would cut durable data), then
/// the plan is carried out. Also returns the clean-shutdown marker if the open left it on disk
/// (it trusted it and changed nothing): the `marker` module removes it before the first change.
pub(super) fn recover(
    io: &dyn SegmentIo,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(State, Recovery, Option<CleanShutdown>), LogError> {
    let plan = inspect(io, config, now_ms)?;
    apply(io, config, plan, now_ms)
}

/// Carries out a [`Plan`]: the only part of recovery that changes the directory.
fn apply(
    io: &dyn SegmentIo,
    config: &LogConfig,
    plan: Plan,
    now_ms: i64,
) -> Result<(State, Recovery, Option<CleanShutdown>), LogError> {
    // A clean shutdown whose marker names the last segment with its exact length, and nothing
    // to repair: the marker's claim — every byte was fsynced before it was written, and the
    // files are as it describes — still holds after this open, which changes no file (unless
    // it must rewrite the recovery point, below).
    let untouched = plan.marker_trusted.filter(|_| {
        plan.tmp_files.is_empty()
            && plan.intent.is_none()
            && plan.dropped.is_empty()
            && !plan.segments.is_empty()
            && plan.segments.iter().all(|p| !p.trim && !p.reseal)
    });
    let sync_dir = || {
        io.sync_dir()
            .map_err(|e| LogError::io("syncing the log directory", e))
    };
    for name in &plan.tmp_files {
        io.remove(name)
            .map_err(|e| LogError::io(format!("removing {name}"), e))?;
    }
    if let Some(target) = plan.intent {
        tracing::warn!(target, "finishing a truncation interrupted by a crash");
        for base in &plan.doomed_by_intent {
            for name in [index_name(*base), log_name(*base)] {
                io.remove(&name)
                    .map_err(|e| LogError::io(format!("removing {name}"), e))?;
            }
        }
        sync_dir()?;
    }
    let mut recovery = plan.recovery;
    let mut segments = BTreeMap::new();
    if plan.segments.is_empty() {
        let base = plan.intent.unwrap_or(0);
        let file = io
            .open(&log_name(base), true)
            .map_err(|e| LogError::io("creating the first segment", e))?;
        sync_dir()?;
        segments.insert(base, Segment::empty(base, file, now_ms));
    }
    if !plan.dropped.is_empty() {
        for &b in &plan.dropped {
            let name = log_name(b);
            io.remove(&index_name(b))
                .and_then(|()| io.remove(&name))
                .map_err(|e| LogError::io(format!("removing {name}"), e))?;
        }
        sync_dir()?;
        tracing::error!(
            dropped = plan.dropped.len(),
            "unsealed segments lost data in a machine crash under flush interval/os; \
             dropping them from the first gap on"
        );
    }
    for cut in &recovery.cuts {
        tracing::warn!(
            file = %cut.file,
            position = cut.position,
            first_offset = cut.first_offset,
            bytes = cut.bytes,
            records = cut.records,
            records_exact = cut.records_exact,
            reason = %cut.reason,
            "cut a torn or invalid log tail (data never made durable): {cut}"
        );
    }
    let mut resealed = Vec::new();
    for planned in plan.segments {
        let Planned {
            mut segment,
            file_len,
            trim,
            reseal,
        } = planned;
        let name = segment.name();
        if trim && file_len != segment.size {
            segment
                .file
                .set_len(segment.size)
                .and_then(|()| segment.file.sync_data())
                .map_err(|e| LogError::io(format!("truncating {name}"), e))?;
        }
        segment.allocated = segment.size; // every path above left the file exactly this long
        if reseal {
            resealed.push(segment.base);
        }
        segments.insert(segment.base, segment);
    }
    // Closed segments that had to be scanned (never sealed before the crash) are sealed now.
    for base in resealed {
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
    if let Some(target) = plan.intent {
        let active = state.active_mut();
        if active.next_offset > target {
            let name = active.name();
            let size = cut_position(active, target, &name)?;
            active
                .file
                .set_len(size)
                .map_err(|e| LogError::io(format!("truncating {name}"), e))?;
            active.allocated = size;
        }
    }
    state.log_end = state.active().next_offset;
    // The recovered tail may sit only in the page cache (after kill -9): make it durable so
    // durable_end can start at log_end. Not after a clean shutdown whose marker is trusted:
    // the close fsynced the segment before it wrote the marker, and no change since (each
    // removes the marker first) can have left anything unsynced.
    let active = state.active();
    // Nor when reopening a log that never held a byte (its one segment found empty, nothing
    // cut): there is nothing to make durable, and nothing was unclean (a close of such a log
    // writes no marker, see `Inner::close_empty`). A brand-new log is still synced once.
    let never_written = recovery.segments_scanned == 1
        && state.log_end == 0
        && state.segments.len() == 1
        && recovery.bytes_truncated == 0
        && active.file.size().is_ok_and(|len| len == 0);
    if never_written {
        recovery.clean = true;
    }
    if untouched.is_none() && !never_written {
        active
            .file
            .sync_data()
            .map_err(|e| LogError::io(format!("syncing {}", active.name()), e))?;
    }
    if plan.intent.is_some() {
        let stale_index = index_name(active.base);
        io.remove(&stale_index)
            .map_err(|e| LogError::io(format!("removing {stale_index}"), e))?;
    }
    // Everything is on disk now: record it, unless the recovery point already says so (a clean
    // shutdown) or there is nothing to protect yet. Before the intent goes, so a recovery point
    // above a truncation's target never outlives the intent that overrides it.
    let point = RecoveryPoint {
        offset: state.log_end,
        unsynced_window: config.unsynced_window(),
    };
    let empty = state.log_end == state.earliest();
    let stale = plan.recovery_point != Some(point);
    let rewrite_point = stale && !(empty && plan.recovery_point.is_none());
    if rewrite_point {
        replace_file(io, RECOVERY_POINT, &meta::encode_recovery_point(&point))
            .map_err(|e| LogError::io("writing the recovery point", e))?;
    }
    // Then forget the intent, and the marker unless this open changed nothing (the `marker`
    // module removes it before the first change), so a crash from here on is noticed at the
    // next open.
    let kept_marker = untouched.filter(|_| !rewrite_point);
    let remove_marker = plan.marker && kept_marker.is_none();
    if plan.intent.is_some() {
        io.remove(TRUNCATE_INTENT)
            .map_err(|e| LogError::io("finishing the interrupted truncation", e))?;
    }
    if remove_marker {
        io.remove(CLEAN_SHUTDOWN)
            .map_err(|e| LogError::io("removing the clean-shutdown marker", e))?;
    }
    if remove_marker || plan.intent.is_some() {
        sync_dir()?;
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
    Ok((state, recovery, kept_marker))
}
