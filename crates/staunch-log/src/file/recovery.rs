//! Opening a log: [`recover`] rebuilds the in-memory state from the directory after any
//! shutdown, clean or not, and never serves a torn or corrupt batch; [`Recovery`] reports what
//! it found.
//!
//! # Crash-recovery argument
//! Why an acknowledged append survives every crash the log can see (kill -9, power loss, a failed
//! fsync followed by a reopen). `docs/design.md` states the same argument beside the byte layouts.
//!
//! Invariants while running:
//!
//! 1. Closed segments are sealed strictly in order, and a segment's index file is written only
//!    after its fsync: under `always` a roll seals the closed segment before it creates the next
//!    one (the `append` module); under `interval` and `os` the roll queues it and the background
//!    thread seals the queue oldest first (the `background` module). So a segment with a valid
//!    index is durable, and so is every segment before it. Under `always` only the last segment
//!    can hold unsynced bytes; under `interval`/`os`, only the last one and the
//!    closed-but-unsealed ones right before it.
//! 2. Index files and markers are replaced atomically (temp file, fsync, rename, fsync dir) and
//!    carry a CRC-32C, so a torn or stale one is ignored, never trusted.
//! 3. Offsets are contiguous: each segment starts at the previous one's end.
//! 4. No append is reported durable before an fsync that started after its write (the
//!    `group_commit` module), and a truncation makes its intent durable before it touches
//!    anything (the `truncate` module).
//!
//! On open ([`recover`]):
//!
//! 1. Leftover `*.tmp` files are removed.
//! 2. If `truncate-intent` exists, a truncation was interrupted: segments at or above the target
//!    are deleted, and after loading, the last remaining segment is cut at the target. (The
//!    online truncation refuses all further appends if any of its steps fails, so finishing it
//!    at the next open can never delete an append that was acknowledged after the intent was
//!    written.)
//! 3. Closed segments are trusted when their index file is valid and records the file's exact
//!    length — by invariant 1 they were durable before anything after them existed.
//! 4. The last segment — the only one that can hold unsynced bytes under `always`, so the
//!    checkpoint boundary — is trusted only if a valid `clean-shutdown` marker names it with its
//!    exact length. Otherwise it is scanned batch by batch (framing, magic 2, CRC-32C, record
//!    count vs offset delta, contiguous offsets) and cut at the first batch that fails. A torn
//!    write (a prefix of unsynced bytes reaching the disk) fails the length or CRC check; it was
//!    never acknowledged under `always`, because acknowledgement waits for the fsync that covers
//!    it. A tail of zeros is not damage but blocks reserved ahead of the data (preallocation,
//!    zero-filling), and is trimmed.
//! 5. Closed segments without a valid index (unsealed at the crash) are scanned the same way. If
//!    one is damaged or ends short of the next segment's base, it can only be an unsealed
//!    segment that lost unsynced data (flush `interval`/`os` and a machine crash): it is cut, and
//!    the unsealed segments after it are dropped, because offsets must stay contiguous —
//!    *unless* a later segment is sealed. Then the damage hit data that was on disk; cutting
//!    would silently drop acknowledged segments, so the open fails with [`LogError::Corrupt`],
//!    naming the file and byte. Scanned closed segments are sealed before the log opens.
//! 6. The last segment is fsynced (after kill -9 its tail may exist only in the page cache), so
//!    the durable end can start at the log end; then the marker is removed and the directory
//!    fsynced, so a crash from here on is noticed at the next open.
//!
//! Reads check each batch's CRC before returning it (the `read` module), so a batch damaged after
//! recovery is reported as [`LogError::Corrupt`] and never served.

use std::collections::{BTreeMap, VecDeque};

use staunch_core::Offset;

use super::State;
use super::meta::{self, CLEAN_SHUTDOWN, TRUNCATE_INTENT};
use super::segment::{Segment, index_name, log_name, parse_log_name, scan};
use super::truncate::cut_position;
use crate::LogError;
use crate::config::LogConfig;
use crate::io::{SegmentFile, SegmentIo, read_exact_at, read_file, replace_file};

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
pub(super) fn recover(
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
