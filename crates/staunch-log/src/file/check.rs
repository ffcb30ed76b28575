//! Offline checking and repair of a log directory, for a log that no process has open (a
//! stopped broker's partition): the way out when [`FileLog`](super::FileLog) refuses to open
//! because recovery would have to cut data that was durable (see the `recovery` module).
//!
//! - [`check`] reads every segment batch by batch — also the sealed ones that an open trusts
//!   without reading — and lists every damaged stretch (file, byte position, the offset
//!   expected there, why), the offsets missing between segments, and what an open would do.
//!   Kafka's anchor is `kafka-dump-log.sh --deep-iteration` (`DumpLogSegments`).
//! - [`repair`] cuts the log at its first damage and *moves* everything from there on into
//!   `damaged-<unix-ms>/` inside the log directory, deleting nothing, so that the log opens
//!   again as the valid prefix before the damage.
//!
//! # Why repair keeps only the prefix
//! A log's offsets are contiguous: recovery stops a segment at the first batch whose base
//! offset is not the one expected, and treats a segment that does not start where the previous
//! one ended as damage. So valid batches *after* damage cannot stay in the log: their offsets
//! would leave a gap the log neither opens with nor serves. Kafka resolves the same situation
//! the same way: its recovery truncates a segment at the first invalid batch. The moved-aside
//! files keep every byte (the damaged segment is copied whole before it is cut), so the records
//! after the damage can still be read out of `damaged-*` (e.g. with `kafka-dump-log.sh`, the
//! segment format being Kafka's) and produced again.

use std::path::Path;

use staunch_core::Offset;

use super::meta::{self, CLEAN_SHUTDOWN, RECOVERY_POINT, TRUNCATE_INTENT};
use super::recovery::{TailCut, inspect};
use super::segment::{index_name, log_name, parse_log_name};
use super::walk::{Chunks, Region, walk_from, walk_segment};
use crate::LogError;
use crate::config::LogConfig;
use crate::io::{FsSegmentIo, FsStorage, SegmentIo, StorageIo, join_path, read_file, write_all_at};

/// What [`check`] found in one log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogCheck {
    /// Every segment, in offset order.
    pub segments: Vec<SegmentCheck>,
    /// Every damaged stretch and every offset gap, in log order.
    pub damage: Vec<Damage>,
    /// The offset below which the log recorded everything as durable, if its recovery point is
    /// valid.
    pub recovery_point: Option<Offset>,
    /// The target of a truncation a crash interrupted, if any: the next open finishes it, so
    /// segments at or above it are not checked (the open deletes them).
    pub pending_truncation: Option<Offset>,
    /// Whether the last shutdown was clean (a valid clean-shutdown marker).
    pub clean_shutdown: bool,
    /// What opening the log would do.
    pub on_open: OnOpen,
}

impl LogCheck {
    /// Whether anything is wrong: damage, an offset gap, or an open that would refuse.
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty() || matches!(self.on_open, OnOpen::Refuses { .. })
    }

    /// The offset after the last valid batch of the last segment (the log end an intact log
    /// would open with).
    pub fn end_offset(&self) -> Option<Offset> {
        self.segments.last().map(|s| s.next_offset)
    }
}

/// One segment file as [`check`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentCheck {
    /// The segment file, e.g. `00000000000000000000.log`.
    pub file: String,
    /// The base offset its name gives.
    pub base_offset: Offset,
    /// The file's length.
    pub bytes: u64,
    /// Valid batches in it.
    pub batches: u64,
    /// Records in the valid batches.
    pub records: u64,
    /// The offset after its last valid batch (its base offset if it has none).
    pub next_offset: Offset,
    /// Whether its index file is there and describes it.
    pub index: IndexState,
}

/// The state of a segment's index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    /// Present, intact, and recording the segment's exact length: an open trusts the segment
    /// without reading it.
    Valid,
    /// Absent (the active segment, or one never sealed): an open scans the segment.
    Missing,
    /// Damaged, or describing another length: ignored; an open scans the segment.
    Invalid,
}

/// What kind of problem a [`Damage`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// Bytes that are not valid batches continuing the offsets before them: bit rot, or (at
    /// the end of the last segment, after a crash) a torn write that was never acknowledged.
    Batch,
    /// A segment does not start where the previous one ends: offsets are missing.
    Gap,
    /// The log ends before its recovery point: data that was durable is gone.
    Missing,
}

/// One damaged stretch of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// What kind of problem it is.
    pub kind: DamageKind,
    /// The segment file.
    pub file: String,
    /// Byte position in the file where the damage starts.
    pub position: u64,
    /// Bytes up to the next valid batch (or the end of the file).
    pub bytes: u64,
    /// The offset the batch at `position` should have started with.
    pub expected_offset: Offset,
    /// The base offset of the next valid batch after the damage, if there is one.
    pub resumes_at: Option<Offset>,
    /// Records counted from the batch headers readable in the damaged bytes.
    pub records: u64,
    /// Whether those headers account for every damaged byte (else `records` is a lower bound).
    pub records_exact: bool,
    /// What is wrong.
    pub reason: String,
}

/// What opening a log would do, as [`check`] predicts it (the same decision code as the open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnOpen {
    /// It opens with nothing cut.
    Opens,
    /// It opens after cutting these tails, which were never durable.
    Cuts(Vec<TailCut>),
    /// It refuses with [`LogError::Corrupt`] (and changes nothing): this file, byte and reason.
    Refuses {
        /// The segment file.
        file: String,
        /// The byte position.
        position: u64,
        /// Why.
        reason: String,
    },
}

fn index_state(io: &dyn SegmentIo, base: Offset, len: u64) -> IndexState {
    match read_file(io, &index_name(base)) {
        Ok(None) => IndexState::Missing,
        Ok(Some(bytes)) => match meta::decode_index(&bytes) {
            Some(idx) if idx.base == base && idx.size == len => IndexState::Valid,
            _ => IndexState::Invalid,
        },
        Err(_) => IndexState::Invalid,
    }
}

/// Reads every segment of the log in `io` batch by batch (framing, magic 2, CRC-32C, record
/// count, contiguous offsets) and reports what it finds, changing nothing. `config` is the
/// log's configuration (the default is right unless the log ran with other limits); it only
/// matters for predicting the open of a log without a valid recovery point.
///
/// A tail of zeros after the last valid batch is not damage (blocks reserved ahead of the
/// data). Fails only if the directory cannot be read.
pub fn check(io: &dyn SegmentIo, config: &LogConfig) -> Result<LogCheck, LogError> {
    let names = io
        .list()
        .map_err(|e| LogError::io("listing the log directory", e))?;
    let mut bases: Vec<Offset> = names.iter().filter_map(|n| parse_log_name(n)).collect();
    bases.sort_unstable();
    let read =
        |name: &str| read_file(io, name).map_err(|e| LogError::io(format!("reading {name}"), e));
    let pending_truncation = read(TRUNCATE_INTENT)?.and_then(|b| meta::decode_truncate_intent(&b));
    let clean_shutdown = read(CLEAN_SHUTDOWN)?
        .and_then(|b| meta::decode_clean_shutdown(&b))
        .is_some();
    let recovery_point = read(RECOVERY_POINT)?
        .and_then(|b| meta::decode_recovery_point(&b))
        .map(|p| p.offset);
    if let Some(target) = pending_truncation {
        bases.retain(|&b| b < target);
    }
    let below_target = |offset: Offset| pending_truncation.is_none_or(|t| offset < t);

    let mut segments: Vec<SegmentCheck> = Vec::new();
    let mut damage = Vec::new();
    for &base in &bases {
        let name = log_name(base);
        if let Some(prev) = segments.last()
            && prev.next_offset != base
        {
            damage.push(Damage {
                kind: DamageKind::Gap,
                file: name.clone(),
                position: 0,
                bytes: 0,
                expected_offset: prev.next_offset,
                resumes_at: Some(base),
                records: 0,
                records_exact: false,
                reason: format!(
                    "the segment starts at offset {base} but the one before ends at {}",
                    prev.next_offset
                ),
            });
        }
        let (len, regions) = walk_segment(io, base)?;
        let mut report = SegmentCheck {
            file: name.clone(),
            base_offset: base,
            bytes: len,
            batches: 0,
            records: 0,
            next_offset: base,
            index: index_state(io, base, len),
        };
        for region in regions {
            match region {
                Region::Batches {
                    next_offset,
                    batches,
                    records,
                    ..
                } => {
                    report.batches += batches;
                    report.records = report.records.saturating_add(records);
                    report.next_offset = next_offset;
                }
                // Zeros to the end of the file: reserved blocks, not damage.
                Region::Damaged(d) if d.zeros && d.end == len => {}
                Region::Damaged(d) if below_target(d.expected_offset) => {
                    let reason = if d.zeros {
                        format!("zeros where batches should be ({})", d.reason)
                    } else {
                        d.reason
                    };
                    damage.push(Damage {
                        kind: DamageKind::Batch,
                        file: name.clone(),
                        position: d.start,
                        bytes: d.end - d.start,
                        expected_offset: d.expected_offset,
                        resumes_at: d.resumes_at,
                        records: d.records,
                        records_exact: d.records_exact,
                        reason,
                    });
                }
                Region::Damaged(_) => {} // the pending truncation removes it
            }
        }
        segments.push(report);
    }
    if let (Some(point), Some(last), true) = (recovery_point, segments.last(), damage.is_empty())
        && last.next_offset < point.min(pending_truncation.unwrap_or(Offset::MAX))
    {
        damage.push(Damage {
            kind: DamageKind::Missing,
            file: last.file.clone(),
            position: last.bytes,
            bytes: 0,
            expected_offset: last.next_offset,
            resumes_at: None,
            records: 0,
            records_exact: false,
            reason: format!(
                "the log ends at offset {} but its recovery point says every offset below \
                 {point} was on disk",
                last.next_offset
            ),
        });
    }

    let on_open = match inspect(io, config, 0) {
        Ok(plan) if plan.recovery.cuts.is_empty() => OnOpen::Opens,
        Ok(plan) => OnOpen::Cuts(plan.recovery.cuts),
        Err(LogError::Corrupt {
            file,
            position,
            reason,
        }) => OnOpen::Refuses {
            file,
            position,
            reason,
        },
        Err(e) => return Err(e),
    };
    Ok(LogCheck {
        segments,
        damage,
        recovery_point,
        pending_truncation,
        clean_shutdown,
        on_open,
    })
}

/// [`check`] of the log in directory `dir` on the real file system, with the default
/// configuration. Takes the log's lock, so it fails (changing nothing) while a broker has the
/// log open; never creates anything but the lock file.
pub fn check_dir(dir: &Path) -> Result<LogCheck, LogError> {
    let io = open_existing(dir)?;
    check(&io, &LogConfig::default())
}

fn open_existing(dir: &Path) -> Result<FsSegmentIo, LogError> {
    if !dir.is_dir() {
        return Err(LogError::io(
            format!("opening log directory {}", dir.display()),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    FsSegmentIo::open(dir)
        .map_err(|e| LogError::io(format!("opening log directory {}", dir.display()), e))
}

/// What [`repair`] did to one log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repair {
    /// The directory (inside the log directory) everything removed was moved into; `None` if
    /// there was nothing to repair.
    pub aside: Option<String>,
    /// Where the log was cut, if it was.
    pub cut: Option<RepairCut>,
    /// Files moved into `aside`, whole.
    pub moved: Vec<String>,
    /// Files copied into `aside` whole before being cut in the log directory.
    pub copied: Vec<String>,
}

/// Where [`repair`] cut a log, and what the log lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairCut {
    /// The segment file cut (or moved aside whole, if the damage was at its start and it was
    /// not the first segment).
    pub file: String,
    /// The byte position of the cut in that file.
    pub position: u64,
    /// The first offset no longer in the log: the log ends here now.
    pub from_offset: Offset,
    /// The offset after the last valid batch found in what was removed (`from_offset` if none
    /// was readable): offsets `from_offset..to_offset` left the log.
    pub to_offset: Offset,
    /// Bytes removed from the log (the cut tail and the segments after it), not counting
    /// zeros at the end of a segment (blocks reserved ahead of the data).
    pub bytes: u64,
    /// Records counted in the removed bytes (valid batches and readable headers).
    pub records: u64,
    /// Whether `records` is exact (else a lower bound).
    pub records_exact: bool,
}

/// Repairs the log in directory `path` of `storage` so that it opens again, deleting nothing:
/// it cuts the log at its first damage (see [`check`]; the module docs say why only the prefix
/// before the damage can stay) and moves everything from there on into
/// `<path>/damaged-<now_ms>/`: the segments after the damage whole, the damaged segment as a
/// full copy (then cut in place at the damage), its index file, and the clean-shutdown marker
/// and recovery point (both describe the log before the cut; the next open writes new ones). A
/// pending truncation is left for the open to finish, and damage at or above its target is
/// ignored (the open removes it anyway).
///
/// A log with no damage is left alone (`Repair::aside` is `None`). A log that only ends before
/// its recovery point (durable data missing, nothing to cut) gets its recovery point moved
/// aside, accepting the loss, so that it opens. Takes the log's lock: fails while a process
/// has the log open. Each step is durable before the next; after a crash, run it again.
pub fn repair(
    storage: &dyn StorageIo,
    path: &str,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Repair, LogError> {
    let io = storage.open_dir(path, true).map_err(|e| {
        LogError::io(
            format!("opening log directory {}", storage.describe(path)),
            e,
        )
    })?;
    let result = repair_locked(storage, &*io, path, config, now_ms);
    let released = io
        .release()
        .map_err(|e| LogError::io("releasing the log directory lock", e));
    let repair = result?;
    released?;
    Ok(repair)
}

fn repair_locked(
    storage: &dyn StorageIo,
    io: &dyn SegmentIo,
    path: &str,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Repair, LogError> {
    let report = check(io, config)?;
    let mut repair = Repair {
        aside: None,
        cut: None,
        moved: Vec::new(),
        copied: Vec::new(),
    };
    let first = report.damage.iter().find(|d| d.kind != DamageKind::Missing);
    let missing = report.damage.iter().any(|d| d.kind == DamageKind::Missing);
    if first.is_none() && !missing {
        return Ok(repair);
    }
    let sync = |dir: &str| {
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io(format!("syncing {}", storage.describe(dir)), e))
    };

    // A fresh directory for what is moved aside.
    let existing = storage
        .list_dirs(path)
        .map_err(|e| LogError::io(format!("listing {}", storage.describe(path)), e))?;
    let mut aside = format!("damaged-{now_ms}");
    let mut n = 1;
    while existing.contains(&aside) {
        aside = format!("damaged-{now_ms}-{n}");
        n += 1;
    }
    let aside_path = join_path(path, &aside);
    storage
        .create_dir_all(&aside_path)
        .map_err(|e| LogError::io(format!("creating {}", storage.describe(&aside_path)), e))?;
    sync(path)?;
    let move_aside = |name: &str, moved: &mut Vec<String>| -> Result<(), LogError> {
        match storage.rename_file(&join_path(path, name), &join_path(&aside_path, name)) {
            Ok(()) => {
                moved.push(name.to_owned());
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(format!("moving {name} aside"), e)),
        }
    };
    // The metadata describes the log before the cut: first out of the way.
    move_aside(RECOVERY_POINT, &mut repair.moved)?;
    move_aside(CLEAN_SHUTDOWN, &mut repair.moved)?;

    if let Some(first) = first {
        let at = report
            .segments
            .iter()
            .position(|s| s.file == first.file)
            .unwrap_or(0);
        let damaged = &report.segments[at];
        let later = &report.segments[at + 1..];
        // The valid batches found in what is removed, for the report.
        let mut records = 0u64;
        let mut records_exact = true;
        let mut to_offset = first.expected_offset;
        let mut bytes = 0u64;
        for d in report.damage.iter().filter(|d| d.kind == DamageKind::Batch) {
            let removed =
                d.file > first.file || (d.file == first.file && d.position >= first.position);
            if removed {
                records = records.saturating_add(d.records);
                records_exact &= d.records_exact;
            }
        }
        for segment in std::iter::once(damaged).chain(later) {
            let file = io
                .open(&segment.file, false)
                .map_err(|e| LogError::io(format!("opening {}", segment.file), e))?;
            let mut chunks = Chunks::new(&*file, &segment.file, segment.bytes);
            let from = if segment.file == first.file {
                first.position
            } else {
                0
            };
            let regions = if from == 0 {
                walk_from(&mut chunks, 0, segment.base_offset)?
            } else {
                walk_from(&mut chunks, from, first.expected_offset)?
            };
            // Zeros at the end (blocks reserved ahead of the data) were never data.
            let data_end = match regions.last() {
                Some(Region::Damaged(d)) if d.zeros && d.end == segment.bytes => d.start,
                _ => segment.bytes,
            };
            bytes += data_end.saturating_sub(from);
            for region in regions {
                if let Region::Batches {
                    next_offset,
                    records: n,
                    ..
                } = region
                {
                    records = records.saturating_add(n);
                    to_offset = to_offset.max(next_offset);
                }
            }
        }
        // Later segments go first, the last one first, so the log stays a prefix at each step.
        for segment in later.iter().rev() {
            move_aside(&index_name(segment.base_offset), &mut repair.moved)?;
            move_aside(&segment.file, &mut repair.moved)?;
        }
        let whole = first.position == 0 && at > 0;
        move_aside(&index_name(damaged.base_offset), &mut repair.moved)?;
        if whole {
            move_aside(&damaged.file, &mut repair.moved)?;
            sync(&aside_path)?;
            sync(path)?;
        } else {
            // Copied whole (and durable) first, then cut: no byte is ever only in memory.
            let source = io
                .open(&damaged.file, false)
                .map_err(|e| LogError::io(format!("opening {}", damaged.file), e))?;
            let target_dir = storage.open_dir(&aside_path, false).map_err(|e| {
                LogError::io(format!("opening {}", storage.describe(&aside_path)), e)
            })?;
            let copy = target_dir
                .open(&damaged.file, true)
                .map_err(|e| LogError::io(format!("creating the copy of {}", damaged.file), e))?;
            let mut chunks = Chunks::new(&*source, &damaged.file, damaged.bytes);
            let mut pos = 0;
            while pos < damaged.bytes {
                let bytes = chunks.get(pos, 8 << 20)?;
                if bytes.is_empty() {
                    break;
                }
                let n = bytes.len() as u64;
                write_all_at(&*copy, bytes, pos)
                    .map_err(|e| LogError::io(format!("copying {}", damaged.file), e))?;
                pos += n;
            }
            copy.sync_data()
                .map_err(|e| LogError::io(format!("syncing the copy of {}", damaged.file), e))?;
            repair.copied.push(damaged.file.clone());
            sync(&aside_path)?;
            sync(path)?;
            source
                .set_len(first.position)
                .and_then(|()| source.sync_data())
                .map_err(|e| LogError::io(format!("cutting {}", damaged.file), e))?;
        }
        repair.cut = Some(RepairCut {
            file: damaged.file.clone(),
            position: first.position,
            from_offset: first.expected_offset,
            to_offset,
            bytes,
            records,
            records_exact,
        });
    } else {
        sync(&aside_path)?;
        sync(path)?;
    }
    repair.aside = Some(aside);
    tracing::warn!(
        dir = %storage.describe(path),
        cut = ?repair.cut,
        moved = ?repair.moved,
        "repaired a damaged log by moving its damaged part aside"
    );
    Ok(repair)
}

/// [`repair`] of the log in directory `dir` on the real file system, with the default
/// configuration and the current time.
pub fn repair_dir(dir: &Path) -> Result<Repair, LogError> {
    drop(open_existing(dir)?); // exists, and no one else has it open
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    repair(&FsStorage::new(dir), "", &LogConfig::default(), now_ms)
}
