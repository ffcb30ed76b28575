//! The clean-shutdown marker a clean open keeps on disk until the first change (the `marker`
//! module of `staunch-log`): opening and closing a log nothing was written to writes and syncs
//! nothing, and a crash at any moment after a clean open — before, during or after the first
//! change — never finds a marker that describes files other than the ones on disk.

use std::collections::{BTreeMap, HashMap};

use staunch_core::Offset;
use staunch_log::{FlushPolicy, LogConfig, LogStore, SegmentIo};
use staunch_testkit::log_store_suite::batch;
use staunch_testkit::{CrashMode, FaultyIo};

use super::{Record, config, open_configured, values};

const MARKER: &str = "clean-shutdown";

/// Every file of `io`'s directory with its (live) bytes.
fn files(io: &FaultyIo) -> BTreeMap<String, Vec<u8>> {
    io.names()
        .into_iter()
        .map(|name| {
            let bytes = io.live_bytes(&name).unwrap();
            (name, bytes)
        })
        .collect()
}

/// A log over a new disk with `batches` four-record batches, closed cleanly, and its records.
fn closed_log(cfg: &LogConfig, batches: u32) -> (FaultyIo, Vec<Record>) {
    let io = FaultyIo::new();
    let log = open_configured(&io, cfg.clone()).unwrap();
    for i in 0..batches {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    let records = values(&log);
    log.close().unwrap();
    (io, records)
}

/// The records of a four-record `batch(tag, ..)` appended at `base`.
fn records_of(tag: u32, base: Offset) -> Vec<Record> {
    (0..4)
        .map(|i| (base + i, format!("{tag}:{i}").into_bytes()))
        .collect()
}

/// Opens the disk a power cut left twice — as it is, and with the marker removed so that the
/// open must scan — and checks both find the same records: a marker never lets an open trust
/// files it does not describe. Returns the records, and whether the disk had a marker.
fn recover_both_ways(after: &FaultyIo, cfg: &LogConfig, what: &str) -> (Vec<Record>, bool) {
    let image = after.crash(CrashMode::KeepPageCache);
    let had_marker = image.names().iter().any(|n| n == MARKER);
    let recovered = open_configured(&image, cfg.clone())
        .unwrap_or_else(|e| panic!("{what}: the open after the power cut failed: {e}"));
    let found = values(&recovered);
    let scan = after.crash(CrashMode::KeepPageCache);
    SegmentIo::remove(&scan, MARKER).unwrap();
    SegmentIo::sync_dir(&scan).unwrap();
    let scanned = open_configured(&scan, cfg.clone()).unwrap();
    assert!(!scanned.recovery().clean);
    assert_eq!(
        values(&scanned),
        found,
        "{what}: the marker made the open trust files that differ from what a scan finds"
    );
    (found, had_marker)
}

/// Opening and closing a cleanly closed log without writing to it writes nothing and syncs
/// nothing (no fsync of the segment at the open, no marker removed, no index, recovery point
/// or marker rewritten at the close), under every flush policy; reads, a flush, a truncation to
/// the end and a deletion of nothing change nothing either. The next open is clean again —
/// also after a power cut, and after a drop without close.
#[test]
fn an_unchanged_log_opens_and_closes_without_writing_or_syncing() {
    for flush in [
        FlushPolicy::Always,
        FlushPolicy::Interval(std::time::Duration::from_millis(1)),
        FlushPolicy::Os,
    ] {
        let cfg = config(flush);
        let (io, before) = closed_log(&cfg, 30);
        let on_disk = files(&io);
        let changes = io.changes();

        let log = open_configured(&io, cfg.clone()).unwrap();
        assert!(log.recovery().clean, "{flush:?}");
        assert_eq!(log.recovery().segments_scanned, 0, "{flush:?}");
        assert_eq!(values(&log), before);
        let end = log.log_end();
        assert_eq!(log.flush().unwrap(), end);
        assert_eq!(log.truncate_to(end).unwrap(), end);
        assert_eq!(log.delete_segments_before(0).unwrap().segments_deleted, 0);
        log.close().unwrap();
        assert_eq!(
            io.changes(),
            changes,
            "{flush:?}: opening and closing an unchanged log wrote or synced something"
        );
        assert_eq!(files(&io), on_disk, "{flush:?}");
        drop(log);

        // Dropped without close, then the power goes: the marker is still true.
        let log = open_configured(&io, cfg.clone()).unwrap();
        assert!(log.recovery().clean, "{flush:?}");
        drop(log);
        assert_eq!(io.changes(), changes, "{flush:?}");
        let after = io.crash(CrashMode::DropUnsynced);
        assert_eq!(files(&after), on_disk, "{flush:?}");
        let again = open_configured(&after, cfg.clone()).unwrap();
        assert!(again.recovery().clean, "{flush:?}");
        assert_eq!(again.recovery().segments_scanned, 0, "{flush:?}");
        assert_eq!(values(&again), before, "{flush:?}");
    }
}

/// A log that never held a byte reopens and closes without a write or an fsync (a broker's
/// thousands of unwritten partitions cost nothing at shutdown or start-up); after a power cut
/// it still opens empty, and an append then works and survives the next cut.
#[test]
fn a_never_written_log_opens_and_closes_without_writing_or_syncing() {
    for flush in [FlushPolicy::Always, FlushPolicy::Os] {
        let cfg = config(flush);
        let io = FaultyIo::new();
        let created = open_configured(&io, cfg.clone()).unwrap();
        let on_disk = files(&io);
        let changes = io.changes();
        created.close().unwrap();
        for _ in 0..2 {
            let log = open_configured(&io, cfg.clone()).unwrap();
            assert_eq!(log.log_end(), 0, "{flush:?}");
            log.close().unwrap();
        }
        assert_eq!(
            io.changes(),
            changes,
            "{flush:?}: opening and closing a never-written log wrote or synced something"
        );
        assert_eq!(files(&io), on_disk, "{flush:?}");
        let after = io.crash(CrashMode::DropUnsynced);
        let log = open_configured(&after, cfg.clone()).unwrap();
        assert_eq!(log.log_end(), 0, "{flush:?}");
        let appended = log.append(&mut batch(1, 7, 1_000), 0).unwrap();
        log.flush().unwrap();
        drop(log);
        let again = open_configured(&after.crash(CrashMode::DropUnsynced), cfg.clone()).unwrap();
        assert_eq!(again.log_end(), appended.last_offset + 1, "{flush:?}");
    }
}

/// After a clean open, appends (rolling a segment) and a close, with the power cut at every
/// operation in turn (dropping unsynced data, tearing it, or keeping the page cache): the
/// recovered log holds every acknowledged append and nothing that was not written; and if the
/// disk still has a marker, it is the one the clean open found with the files exactly as they
/// were, or the one the close wrote after everything — never one the appends made stale.
#[test]
fn a_power_cut_after_a_clean_open_never_finds_a_stale_marker() {
    let cfg = config(FlushPolicy::Always);
    let (base, before) = closed_log(&cfg, 30);
    let base_files = files(&base);
    let end = before.len() as Offset;
    let all: Vec<Record> = before
        .iter()
        .cloned()
        .chain((0..8).flat_map(|k| records_of(100 + k, end + 4 * Offset::from(k))))
        .collect();
    for mode in [
        CrashMode::DropUnsynced,
        CrashMode::TornTail { seed: 7 },
        CrashMode::KeepPageCache,
    ] {
        let mut cuts = 0;
        for n in 1.. {
            let what = format!("{mode:?}, power cut at operation {n}");
            let io = base.crash(CrashMode::KeepPageCache);
            let log = open_configured(&io, cfg.clone()).unwrap();
            assert!(log.recovery().clean);
            io.cut_power_after(n, mode);
            let mut acknowledged = Vec::new();
            for k in 0..8u32 {
                let Ok(info) = log.append(&mut batch(100 + k, 4, 1_000), 0) else {
                    break;
                };
                acknowledged.extend(records_of(100 + k, info.base_offset));
            }
            let closed = log.close().is_ok();
            drop(log);
            let Some(after) = io.after_power_cut() else {
                assert!(closed, "{what}: no cut, so the close succeeded");
                break;
            };
            cuts += 1;
            let after_files = files(&after);
            let (found, had_marker) = recover_both_ways(&after, &cfg, &what);
            assert!(
                found.len() >= before.len() + acknowledged.len() && found[..] == all[..found.len()],
                "{what}: recovered {} records, {} acknowledged after the {} before",
                found.len(),
                acknowledged.len(),
                before.len()
            );
            if had_marker {
                assert!(
                    after_files == base_files || found == all,
                    "{what}: a marker survived a change: the files differ from the clean \
                     close's, and the log is not the one a completed close describes"
                );
            }
        }
        assert!(cuts > 20, "{mode:?}: only {cuts} cuts");
    }
}

/// The workload of [`changes_after_a_clean_open_survive_a_power_cut_at_every_operation`]: a
/// deletion of the oldest segments (if `delete`), a truncation into the middle, appends and a
/// close, after a clean open of a log holding `before`, with the power cut at the `n`-th
/// operation and then checked after recovery. False if the power was not cut.
fn cut_during_changes(
    cfg: &LogConfig,
    base: &FaultyIo,
    before: &[Record],
    delete: bool,
    n: u64,
    mode: CrashMode,
) -> bool {
    let what = format!("{mode:?}, deleting {delete}, power cut at operation {n}");
    let base_files = files(base);
    let old: HashMap<Offset, Vec<u8>> = before.iter().cloned().collect();
    let delete_below = if delete {
        before[before.len() / 2].0
    } else {
        0
    };
    // At a batch boundary (four records each), so the truncation cuts exactly there.
    let target = before[2 * before.len() / 3].0 / 4 * 4;
    let new: HashMap<Offset, Vec<u8>> = (0..6)
        .flat_map(|k| records_of(200 + k, target + 4 * Offset::from(k)))
        .collect();

    let io = base.crash(CrashMode::KeepPageCache);
    let log = open_configured(&io, cfg.clone()).unwrap();
    assert!(log.recovery().clean);
    io.cut_power_after(n, mode);
    let deleted = log.delete_segments_before(delete_below);
    assert!(delete || deleted.as_ref().is_ok_and(|d| d.segments_deleted == 0));
    let truncated = deleted.is_ok() && matches!(log.truncate_to(target), Ok(end) if end == target);
    let mut acknowledged = Vec::new();
    if truncated {
        for k in 0..6u32 {
            let Ok(info) = log.append(&mut batch(200 + k, 4, 1_000), 0) else {
                break;
            };
            acknowledged.extend(records_of(200 + k, info.base_offset));
        }
    }
    let closed = log.close().is_ok();
    drop(log);
    let Some(after) = io.after_power_cut() else {
        assert!(closed, "{what}: no cut, so the close succeeded");
        return false;
    };
    let after_files = files(&after);
    let (found, had_marker) = recover_both_ways(&after, cfg, &what);

    // Contiguous, and each record is either the one there before or the one appended after
    // the truncation — never a torn or wrong batch.
    for pair in found.windows(2) {
        assert_eq!(pair[0].0 + 1, pair[1].0, "{what}: a gap in the offsets");
    }
    for (offset, value) in &found {
        let was = old.get(offset) == Some(value);
        let appended = new.get(offset) == Some(value);
        assert!(
            (was && !(truncated && *offset >= target)) || appended,
            "{what}: offset {offset} holds {:?}",
            String::from_utf8_lossy(value)
        );
    }
    // Nothing durable that no change removed is lost, and every acknowledged append is there.
    let found: HashMap<Offset, Vec<u8>> = found.into_iter().collect();
    for (offset, value) in before {
        if (delete_below..target).contains(offset) {
            assert_eq!(
                found.get(offset),
                Some(value),
                "{what}: offset {offset} lost"
            );
        }
        if *offset < delete_below && deleted.is_err() && found.contains_key(offset) {
            assert_eq!(found.get(offset), Some(value), "{what}");
        }
    }
    for (offset, value) in &acknowledged {
        assert_eq!(
            found.get(offset),
            Some(value),
            "{what}: acknowledged offset {offset} lost"
        );
    }
    if had_marker {
        assert!(
            after_files == base_files || acknowledged.len() == new.len(),
            "{what}: a marker survived a change: the files differ from the clean close's, \
             and the close did not get to write one"
        );
    }
    true
}

/// After a clean open: a deletion of old segments (retention), a truncation, appends and a
/// close, with the power cut at every operation in turn: the reopen always succeeds, never
/// serves a torn or wrong batch, keeps every acknowledged append and everything no completed
/// change removed, and agrees with a scan that ignores the marker. With zero-filling on as
/// well (the background zero-filler and the trim at close are changes too).
#[test]
fn changes_after_a_clean_open_survive_a_power_cut_at_every_operation() {
    let zero_filling = LogConfig {
        zero_fill_bytes: 1024,
        ..config(FlushPolicy::Always)
    };
    for cfg in [config(FlushPolicy::Always), zero_filling] {
        let (base, before) = closed_log(&cfg, 40);
        assert!(base.names().iter().filter(|n| n.ends_with(".log")).count() >= 3);
        // Deleting first, or truncating first: each is the first change after the open.
        for delete in [true, false] {
            for mode in [CrashMode::DropUnsynced, CrashMode::TornTail { seed: 11 }] {
                let mut cuts = 0;
                for n in 1.. {
                    if !cut_during_changes(&cfg, &base, &before, delete, n, mode) {
                        break;
                    }
                    cuts += 1;
                }
                assert!(cuts > 20, "{mode:?}: only {cuts} cuts");
            }
        }
    }
}
