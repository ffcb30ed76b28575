//! Bit rot against torn tails: damage to data that was durable (below the recovery point, in a
//! closed segment under `always`, or followed by valid batches further than the log ever leaves
//! unsynced) makes the open fail with `Corrupt` — naming file and byte, and changing no file —
//! while a true torn tail is cut as before, with the loss reported. And power cuts at every
//! operation of a workload never produce a false `Corrupt`, nor lose an acknowledged record.

use std::time::{Duration, Instant};

use staunch_log::{Durability, FileLog, FlushPolicy, LogConfig, LogError, LogStore};
use staunch_testkit::log_store_suite::{batch, records_of};
use staunch_testkit::{CrashMode, FaultyIo};

use super::{Record, config, open, open_configured, values};

const FIRST: &str = "00000000000000000000.log";

/// Every file of the directory: name, live bytes, durable length.
type Snapshot = Vec<(String, Vec<u8>, usize)>;

fn snapshot(io: &FaultyIo) -> Snapshot {
    io.names()
        .into_iter()
        .map(|n| {
            let live = io.live_bytes(&n).unwrap();
            let durable = io.durable_len(&n).unwrap();
            (n, live, durable)
        })
        .collect()
}

/// Flush `always`, segments large enough that nothing rolls, and an unsynced window of 2 KiB
/// (the largest batch), so a few dozen small batches reach past it.
fn small_window() -> LogConfig {
    LogConfig {
        max_unsynced_bytes: 1024,
        ..no_roll()
    }
}

/// Flush `always` with segments large enough that nothing rolls.
fn no_roll() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        ..config(FlushPolicy::Always)
    }
}

/// Appends `n` four-record batches (tags from `from`) and returns the byte position of each.
fn append(log: &FileLog, from: u32, n: u32) -> Vec<u64> {
    (from..from + n)
        .map(|i| {
            let position = log.size_bytes();
            let info = log.append(&mut batch(i, 4, 1_000), 0).unwrap();
            assert_eq!(info.durability, Durability::OnDisk);
            position
        })
        .collect()
}

fn expect_corrupt(result: Result<FileLog, LogError>) -> (String, u64, String) {
    match result {
        Err(LogError::Corrupt {
            file,
            position,
            reason,
        }) => (file, position, reason),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(log) => panic!("expected Corrupt, the log opened at {}", log.log_end()),
    }
}

/// The case: a bit flips in an acknowledged batch with more acknowledged batches after
/// it, and the machine crashes. The old recovery cut the log there and dropped everything after
/// it; now the open fails naming the file and the batch's byte, and every file is byte for
/// byte as it was.
#[test]
fn flipped_bit_below_the_recovery_point_refuses_to_open_and_changes_nothing() {
    let io = FaultyIo::new();
    let log = open_configured(&io, no_roll()).unwrap();
    let positions = append(&log, 0, 10);
    log.close().unwrap(); // records the recovery point at the log end
    drop(log);
    let log = open_configured(&io, no_roll()).unwrap();
    append(&log, 10, 5); // acknowledged, then the power goes
    let image = io.crash(CrashMode::DropUnsynced);
    drop(log);
    image.flip_bit(FIRST, positions[3] as usize + 70, 2);
    let before = snapshot(&image);

    let (file, position, reason) = expect_corrupt(open_configured(&image, no_roll()));
    assert_eq!(file, FIRST);
    assert_eq!(position, positions[3], "the damaged batch's byte");
    assert!(reason.contains("recovery point"), "{reason}");
    assert!(reason.contains("staunch log repair"), "{reason}");
    assert_eq!(snapshot(&image), before, "no file was modified");
    // Still refused, still unchanged, however often it is tried.
    expect_corrupt(open_configured(&image, no_roll()));
    assert_eq!(snapshot(&image), before);
}

/// Without a recovery point that covers it (none written yet), damage followed by valid batches
/// further than the unsynced window cannot be a torn write: bit rot, refused, nothing changed.
#[test]
fn damage_followed_by_more_than_the_unsynced_window_is_bit_rot() {
    let io = FaultyIo::new();
    let log = open_configured(&io, small_window()).unwrap();
    let positions = append(&log, 0, 40);
    assert!(log.size_bytes() - positions[5] > 4096);
    let image = io.crash(CrashMode::DropUnsynced);
    drop(log);
    assert_eq!(
        image.live_bytes("recovery-point"),
        None,
        "nothing recorded yet"
    );
    image.flip_bit(FIRST, positions[5] as usize + 30, 0);
    let before = snapshot(&image);

    let (file, position, reason) = expect_corrupt(open_configured(&image, small_window()));
    assert_eq!((file.as_str(), position), (FIRST, positions[5]));
    assert!(reason.contains("valid batches follow it"), "{reason}");
    assert_eq!(snapshot(&image), before, "no file was modified");
}

/// What replaced `flipped_bit_in_the_tail_is_cut_and_never_served`: damage in the last
/// unsynced-window's worth of bytes after the recovery point, with nothing valid beyond the
/// window, looks exactly like a torn write (a power cut mid-writeback leaves the same bytes).
/// It is cut — and the cut is reported with file, position, bytes and records — and the bad
/// batch is never served.
#[test]
fn damage_within_the_unsynced_window_of_the_tail_is_cut_and_reported() {
    let io = FaultyIo::new();
    let log = open_configured(&io, small_window()).unwrap();
    let positions = append(&log, 0, 40);
    let before = values(&log);
    let end = log.size_bytes();
    drop(log);
    let image = io.crash(CrashMode::DropUnsynced);
    assert!(
        image.live_bytes(FIRST).unwrap().len() as u64 > end,
        "zeros reserved ahead"
    );
    image.flip_bit(FIRST, positions[38] as usize + 70, 3);

    let recovered = open_configured(&image, small_window()).unwrap();
    assert_eq!(recovered.log_end(), 38 * 4);
    assert_eq!(values(&recovered), before[..38 * 4]);
    let recovery = recovered.recovery();
    assert_eq!(recovery.cuts.len(), 1);
    let cut = &recovery.cuts[0];
    assert_eq!((cut.file.as_str(), cut.position), (FIRST, positions[38]));
    assert_eq!(cut.first_offset, 38 * 4);
    assert_eq!(cut.bytes, end - positions[38]);
    assert_eq!((cut.records, cut.records_exact), (8, true));
    assert!(cut.reason.contains("CRC"), "{}", cut.reason);
    assert_eq!(recovery.records_truncated, 8);
    let summary = recovery.summary().unwrap();
    assert!(
        summary.contains(FIRST) && summary.contains("8 records"),
        "{summary}"
    );
}

/// A torn write that left a hole (a page never written) with valid batches after it — writeback
/// need not go in order — is still a torn tail when it lies within the unsynced window: cut,
/// with every record in it counted, and every acknowledged record kept.
#[test]
fn a_torn_write_with_valid_batches_after_a_hole_is_cut() {
    let io = FaultyIo::new();
    let log = open_configured(&io, small_window()).unwrap();
    append(&log, 0, 10);
    let acknowledged = values(&log);
    let hole = log.size_bytes() as usize;
    // Written, never waited for: at most the window is unsynced.
    for i in 10..14 {
        log.write(&mut batch(i, 2, 1_000), 0).unwrap();
    }
    let image = io.crash(CrashMode::KeepPageCache);
    drop(log);
    let mut bytes = image.live_bytes(FIRST).unwrap();
    bytes[hole..hole + 40].fill(0);
    image.put_file(FIRST, &bytes);

    let recovered = open_configured(&image, small_window()).unwrap();
    assert_eq!(values(&recovered), acknowledged);
    let cut = &recovered.recovery().cuts[0];
    assert_eq!(cut.position, hole as u64);
    assert_eq!(
        (cut.records, cut.records_exact),
        (6, false),
        "3 later batches, at least"
    );
}

/// Under `os` (and `interval`) a torn tail is cut as before, and the loss is reported: bytes,
/// and records counted from the torn batch's header, or "at least" when no header is readable.
#[test]
fn under_os_a_torn_tail_is_cut_and_the_loss_reported() {
    for (keep, records, exact) in [(100usize, 3u64, true), (20, 0, false)] {
        let io = FaultyIo::new();
        let log = open(&io, FlushPolicy::Os).unwrap();
        for i in 0..5 {
            log.append(&mut batch(i, 3, 1_000), 0).unwrap();
        }
        let kept = values(&log);
        let size = log.size_bytes() as usize;
        drop(log);
        let mut bytes = io.live_bytes(FIRST).unwrap();
        bytes.truncate(size);
        bytes.extend_from_slice(&batch(5, 3, 1_000)[..keep]);
        io.put_file(FIRST, &bytes);

        let recovered = open(&io, FlushPolicy::Os).unwrap();
        assert_eq!(values(&recovered), kept);
        let recovery = recovered.recovery();
        assert_eq!(recovery.bytes_truncated, keep as u64);
        assert_eq!(
            (recovery.records_truncated, recovery.records_truncated_exact),
            (records, exact)
        );
        let cut = &recovery.cuts[0];
        assert_eq!((cut.file.as_str(), cut.position), (FIRST, size as u64));
        let summary = recovery.summary().unwrap();
        let expected = if exact {
            "(3 records)".to_owned()
        } else {
            "(at least 0 records)".to_owned()
        };
        assert!(summary.contains(&expected), "{summary}");
    }
}

/// A bit flip in a sealed segment never leads to truncating the segments after it: with the
/// index intact the segment is trusted (the open succeeds and the read of that batch fails);
/// with the index damaged too it is scanned, and the open refuses, changing nothing.
#[test]
fn a_flip_in_a_sealed_segment_never_truncates_later_segments() {
    for flush in [FlushPolicy::Always, FlushPolicy::Os] {
        let io = FaultyIo::new();
        let log = open(&io, flush).unwrap();
        for i in 0..60 {
            log.append(&mut batch(i, 4, 1_000), 0).unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 3);
        // Under `os` the background thread seals (fsync, index) and then records the
        // recovery point.
        let indexes = || io.names().iter().filter(|n| n.ends_with(".index")).count();
        wait_until(|| indexes() == segments - 1 && recorded(&io));
        let all = values(&log);
        let image = io.crash(CrashMode::DropUnsynced);
        drop(log);
        let second = image
            .names()
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .nth(1)
            .unwrap();
        image.flip_bit(&second, 30, 4); // the segment's first batch

        let trusting = open(&image.crash(CrashMode::DropUnsynced), flush).unwrap();
        assert!(
            trusting.log_end() >= 40,
            "{flush}: nothing after it was cut"
        );
        assert!(trusting.segment_count() >= segments - 1);
        let from = second[..20].parse::<i64>().unwrap();
        assert!(matches!(
            trusting.read(from, 1 << 20),
            Err(LogError::Corrupt { .. })
        ));

        let index = second.replace(".log", ".index");
        image.flip_bit(&index, 12, 0);
        let before = snapshot(&image);
        let (file, position, _) = expect_corrupt(open(&image, flush));
        assert_eq!((file.as_str(), position), (second.as_str(), 0), "{flush}");
        assert_eq!(snapshot(&image), before, "{flush}: no file was modified");
        assert!(all.len() > 160);
    }
}

/// Whether the log has recorded a recovery point.
fn recorded(io: &FaultyIo) -> bool {
    io.live_bytes("recovery-point").is_some()
}

/// The offset the recovery point records (`"STRP" | version | offset i64 | ...`, as
/// `docs/design.md` has it).
fn recorded_offset(io: &FaultyIo) -> Option<i64> {
    let bytes = io.live_bytes("recovery-point")?;
    Some(i64::from_be_bytes(bytes.get(5..13)?.try_into().ok()?))
}

fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The background thread records the recovery point at most every `checkpoint_interval` when
/// the durable end moved, which then protects the active segment too.
#[test]
fn the_background_thread_records_the_recovery_point() {
    let io = FaultyIo::new();
    let cfg = LogConfig {
        checkpoint_interval: Duration::from_millis(5),
        ..config(FlushPolicy::Always)
    };
    let log = open_configured(&io, cfg.clone()).unwrap();
    assert!(!recorded(&io), "an empty log records nothing");
    let positions = append(&log, 0, 6);
    wait_until(|| recorded_offset(&io) == Some(24));
    // Let a round pass that finds nothing new.
    std::thread::sleep(Duration::from_millis(30));
    let image = io.crash(CrashMode::DropUnsynced);
    drop(log);
    image.flip_bit(FIRST, positions[5] as usize + 65, 1); // the last batch
    let (file, position, _) = expect_corrupt(open_configured(&image, cfg));
    assert_eq!((file.as_str(), position), (FIRST, positions[5]));
}

/// A damaged recovery point is ignored, never trusted: the log recovers as without one.
#[test]
fn a_damaged_recovery_point_is_ignored() {
    let io = FaultyIo::new();
    let log = open(&io, FlushPolicy::Always).unwrap();
    append(&log, 0, 5);
    log.close().unwrap();
    drop(log);
    let log = open(&io, FlushPolicy::Always).unwrap();
    let kept = values(&log);
    log.write(&mut batch(9, 3, 1_000), 0).unwrap();
    let data = log.size_bytes() as usize;
    let image = io.crash(CrashMode::KeepPageCache);
    drop(log);
    // Trusted, it would say offsets far beyond the log end were durable.
    image.flip_bit("recovery-point", 5, 6);
    let mut bytes = image.live_bytes(FIRST).unwrap();
    bytes.truncate(data - 10); // and the unacknowledged batch is torn
    image.put_file(FIRST, &bytes);
    let recovered = open(&image, FlushPolicy::Always).unwrap();
    assert_eq!(values(&recovered), kept);
}

/// Under `always` no write leaves more than the unsynced window written but not fsynced — also
/// pipelined writes nobody waits for, and one append larger than the window (written in
/// pieces): a power cut keeps everything but the last window's worth.
#[test]
fn no_write_leaves_more_than_the_window_unsynced() {
    let io = FaultyIo::new();
    let cfg = small_window();
    let window = 2048; // max(max_unsynced_bytes, max_batch_bytes)
    let log = open_configured(&io, cfg.clone()).unwrap();
    for i in 0..60 {
        log.write(&mut batch(i, 4, 1_000), 0).unwrap();
        let kept = open_configured(&io.crash(CrashMode::DropUnsynced), cfg.clone())
            .unwrap()
            .size_bytes();
        assert!(
            log.size_bytes() - kept <= window,
            "{} bytes unsynced after write {i}",
            log.size_bytes() - kept
        );
    }
    // One append of 40 batches, about 5 KiB: pieces with an fsync between them.
    let mut big: Vec<u8> = (100..140).flat_map(|i| batch(i, 4, 1_000)).collect();
    assert!(big.len() > 2 * window as usize);
    let syncs = io.file_syncs();
    log.write(&mut big, 0).unwrap();
    assert!(io.file_syncs() > syncs, "the earlier pieces were synced");
    let image = io.crash(CrashMode::DropUnsynced);
    let kept = open_configured(&image, cfg).unwrap().size_bytes();
    assert!(log.size_bytes() - kept <= window);
}

/// A workload of appends (with rolls), a clean close, a reopen, more appends, a truncation
/// below the recovery point and more appends, with the power cut at every single operation of it in turn, dropping what was
/// unsynced or keeping a torn part of it (several seeds): every image opens — no torn tail is
/// ever mistaken for bit rot — and keeps every record acknowledged before the cut.
#[test]
fn power_cut_at_every_operation_never_refuses_and_never_loses_an_acknowledged_record() {
    let total = {
        let io = FaultyIo::new();
        let start = io.operations();
        workload(&io);
        io.operations() - start
    };
    assert!(total > 100, "{total} operations");
    let mut images = 0;
    for n in 1..=total {
        let modes = [
            CrashMode::DropUnsynced,
            CrashMode::TornTail { seed: n },
            CrashMode::TornTail { seed: n * 7 + 1 },
            CrashMode::TornTail { seed: n * 13 + 5 },
        ];
        for mode in modes {
            let io = FaultyIo::new();
            io.cut_power_after(n, mode);
            let acknowledged = workload(&io);
            let Some(image) = io.after_power_cut() else {
                continue; // the workload ended first
            };
            images += 1;
            let recovered = match open_configured(&image, power_cut_config()) {
                Ok(log) => log,
                Err(e) => panic!("cut at operation {n} ({mode:?}): {e}"),
            };
            let found: std::collections::HashMap<_, _> = values(&recovered).into_iter().collect();
            for (offset, value) in &acknowledged {
                assert_eq!(
                    found.get(offset),
                    Some(value),
                    "cut at operation {n} ({mode:?}): acknowledged offset {offset} lost"
                );
            }
            // And it goes on: an append, a clean close, a reopen.
            let end = recovered.log_end();
            assert_eq!(
                recovered
                    .append(&mut batch(999, 1, 1), 0)
                    .unwrap()
                    .base_offset,
                end
            );
            recovered.close().unwrap();
            drop(recovered);
            let reopened = open_configured(&image, power_cut_config()).unwrap();
            assert_eq!(reopened.log_end(), end + 1);
        }
    }
    assert!(images as u64 > total * 3);
}

/// Small segments (rolls) and a 1 KiB unsynced window, so every rule of recovery is in play.
fn power_cut_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        max_batch_bytes: 1024,
        max_unsynced_bytes: 512,
        ..config(FlushPolicy::Always)
    }
}

/// Appends one batch; on success notes its records as acknowledged.
fn ack(log: &FileLog, acknowledged: &mut Vec<Record>, tag: u32, n: u32) -> bool {
    let mut bytes = batch(tag, n, 1_000);
    match log.append(&mut bytes, 0) {
        Ok(info) => {
            for (k, (_, value)) in records_of(&bytes).into_iter().enumerate() {
                acknowledged.push((info.base_offset + k as i64, value));
            }
            true
        }
        Err(_) => false,
    }
}

/// The workload of the power-cut test; returns the records acknowledged (as durable) before the
/// first failure, keyed by offset, minus those a truncation (maybe) removed.
fn workload(io: &FaultyIo) -> Vec<Record> {
    let mut acknowledged = Vec::new();
    let Ok(log) = open_configured(io, power_cut_config()) else {
        return acknowledged;
    };
    // The truncation below goes back to here: below the recovery point the close records, so
    // the truncation has to lower it.
    let mut mark = 0;
    for i in 0..14 {
        if i == 10 {
            mark = log.log_end();
        }
        if !ack(&log, &mut acknowledged, i, 1 + i % 4) {
            return acknowledged;
        }
    }
    if log.close().is_err() {
        return acknowledged;
    }
    drop(log);
    let Ok(log) = open_configured(io, power_cut_config()) else {
        return acknowledged;
    };
    for i in 14..22 {
        if !ack(&log, &mut acknowledged, i, 3) {
            return acknowledged;
        }
    }
    // Truncated or not, the records from `mark` on are not promised any more.
    let truncated = log.truncate_to(mark);
    acknowledged.retain(|(offset, _)| *offset < mark);
    if truncated.is_err() {
        return acknowledged;
    }
    for i in 22..26 {
        if !ack(&log, &mut acknowledged, i, 2) {
            return acknowledged;
        }
    }
    acknowledged
}
