//! `staunch_log::check`: the offline way out of a log that refuses to open. `check` lists every
//! damaged batch and predicts the open, changing nothing; `repair` cuts the log at the first
//! damage and moves everything from there on aside (deleting nothing), after which the log opens
//! with every record before the damage.

use staunch_log::check::{self, DamageKind, IndexState, OnOpen};
use staunch_log::{FlushPolicy, LogConfig, LogError, LogStore, SegmentIo};
use staunch_testkit::log_store_suite::batch;
use staunch_testkit::{CrashMode, FaultyIo};

use super::{Record, config, open_configured, values};

fn cfg() -> LogConfig {
    config(FlushPolicy::Always)
}

/// A log of 60 four-record batches in 2 KiB segments, left without a clean shutdown; its
/// records, and its segment files in order (at least four, the first three closed).
fn damaged_later(io: &FaultyIo) -> (Vec<Record>, Vec<String>) {
    let log = open_configured(io, cfg()).unwrap();
    for i in 0..60 {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    assert!(log.segment_count() >= 4);
    let records = values(&log);
    drop(log);
    let segments = io
        .names()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    (records, segments)
}

fn files(io: &FaultyIo) -> Vec<(String, Vec<u8>)> {
    io.names()
        .into_iter()
        .map(|n| {
            let bytes = io.live_bytes(&n).unwrap();
            (n, bytes)
        })
        .collect()
}

fn base_of(segment: &str) -> i64 {
    segment[..20].parse().unwrap()
}

/// Byte position of the `k`-th batch of a segment (from its headers).
fn batch_position(io: &FaultyIo, segment: &str, k: usize) -> usize {
    let bytes = io.live_bytes(segment).unwrap();
    let mut pos = 0;
    for _ in 0..k {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        pos += 12 + len as usize;
    }
    pos
}

#[test]
fn check_lists_every_damaged_batch_and_predicts_the_open_changing_nothing() {
    let io = FaultyIo::new();
    let (_, segments) = damaged_later(&io);
    let (second, third) = (&segments[1], &segments[2]);
    let p1 = batch_position(&io, second, 2);
    let p2 = batch_position(&io, third, 1);
    io.flip_bit(second, p1 + 40, 1);
    io.flip_bit(third, p2 + 40, 1);
    let before = files(&io);

    let report = check::check(&io, &cfg()).unwrap();
    assert_eq!(report.segments.len(), segments.len());
    assert!(report.segments.iter().all(|s| s.file.ends_with(".log")));
    assert_eq!(report.segments[0].index, IndexState::Valid);
    assert_eq!(report.damage.len(), 2, "{:?}", report.damage);
    let d = &report.damage[0];
    assert_eq!(
        (d.kind, d.file.as_str()),
        (DamageKind::Batch, second.as_str())
    );
    assert_eq!(d.position, p1 as u64);
    assert_eq!(d.expected_offset, base_of(second) + 8);
    assert_eq!(d.resumes_at, Some(base_of(second) + 12));
    assert_eq!((d.records, d.records_exact), (4, true));
    assert!(d.reason.contains("CRC"), "{}", d.reason);
    assert_eq!(report.damage[1].file, *third);
    assert_eq!(report.damage[1].position, p2 as u64);
    // The sealed segments are trusted by an open, which does not read them: it would open.
    assert_eq!(report.on_open, OnOpen::Opens);
    assert!(report.is_damaged());

    // With the index damaged as well the open scans the segment, and refuses.
    let index = second.replace(".log", ".index");
    io.flip_bit(&index, 20, 0);
    let before = {
        let mut b = before;
        b.iter_mut()
            .find(|(n, _)| *n == index)
            .unwrap()
            .1
            .clone_from(&io.live_bytes(&index).unwrap());
        b
    };
    let report = check::check(&io, &cfg()).unwrap();
    assert_eq!(report.segments[1].index, IndexState::Invalid);
    let OnOpen::Refuses { file, position, .. } = &report.on_open else {
        panic!("{:?}", report.on_open)
    };
    assert_eq!((file, *position), (second, p1 as u64));
    assert_eq!(files(&io), before, "check changes nothing");
    assert!(matches!(
        open_configured(&io, cfg()),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn repair_moves_the_damage_aside_and_the_log_opens_with_everything_before_it() {
    let io = FaultyIo::new();
    let (records, segments) = damaged_later(&io);
    let second = &segments[1];
    let p = batch_position(&io, second, 3);
    io.flip_bit(second, p + 50, 6);
    io.flip_bit(&second.replace(".log", ".index"), 20, 0);
    let original = files(&io);
    let end = records.last().unwrap().0 + 1;
    assert!(open_configured(&io, cfg()).is_err());

    let repair = check::repair(&io, "", &cfg(), 1_234).unwrap();
    assert_eq!(repair.aside.as_deref(), Some("damaged-1234"));
    let cut = repair.cut.clone().unwrap();
    assert_eq!(
        (cut.file.as_str(), cut.position),
        (second.as_str(), p as u64)
    );
    let from = base_of(second) + 12;
    assert_eq!((cut.from_offset, cut.to_offset), (from, end));
    assert_eq!(
        (cut.records, cut.records_exact),
        ((end - from) as u64, true)
    );
    assert_eq!(repair.copied, vec![second.clone()]);
    for later in &segments[2..] {
        assert!(
            repair.moved.contains(later),
            "{later} moved: {:?}",
            repair.moved
        );
    }
    assert!(repair.moved.contains(&"recovery-point".to_owned()));

    // Nothing deleted: every original byte is in the log directory or aside.
    let aside = io.subdir("damaged-1234");
    for (name, bytes) in &original {
        let kept = if repair.moved.contains(name) || repair.copied.contains(name) {
            aside.live_bytes(name)
        } else {
            io.live_bytes(name)
        };
        assert_eq!(kept.as_ref(), Some(bytes), "{name}");
    }

    let reopened = open_configured(&io, cfg()).unwrap();
    assert_eq!(reopened.log_end(), from);
    assert_eq!(values(&reopened), records[..from as usize]);
    let info = reopened.append(&mut batch(77, 1, 1_000), 0).unwrap();
    assert_eq!(info.base_offset, from, "the log goes on from the cut");
    drop(reopened);
    let report = check::check(&io.crash(CrashMode::DropUnsynced), &cfg()).unwrap();
    assert!(!report.is_damaged(), "{:?}", report.damage);

    // Repairing an intact log does nothing.
    let again = check::repair(&io, "", &cfg(), 5_678).unwrap();
    assert_eq!((again.aside, again.cut), (None, None));
    assert!(io.list_dirs_named("damaged-5678").is_empty());
}

#[test]
fn a_missing_segment_is_a_gap_and_repair_moves_the_segments_after_it_aside() {
    let io = FaultyIo::new();
    let (records, segments) = damaged_later(&io);
    let lost = &segments[1];
    let bytes = io.live_bytes(lost).unwrap();
    SegmentIo::remove(&io, lost).unwrap();
    let report = check::check(&io, &cfg()).unwrap();
    let gap = &report.damage[0];
    assert_eq!(gap.kind, DamageKind::Gap);
    assert_eq!(
        (gap.expected_offset, gap.resumes_at),
        (base_of(lost), Some(base_of(&segments[2])))
    );
    assert!(matches!(report.on_open, OnOpen::Refuses { .. }));

    let repair = check::repair(&io, "", &cfg(), 1).unwrap();
    assert_eq!(repair.cut.unwrap().from_offset, base_of(lost));
    let reopened = open_configured(&io, cfg()).unwrap();
    assert_eq!(values(&reopened), records[..base_of(lost) as usize]);
    assert!(bytes.len() > 100);
}

#[test]
fn a_torn_tail_is_reported_and_the_open_predicted_to_cut_it() {
    let io = FaultyIo::new();
    let log = open_configured(&io, config(FlushPolicy::Os)).unwrap();
    for i in 0..5 {
        log.append(&mut batch(i, 3, 1_000), 0).unwrap();
    }
    let size = log.size_bytes() as usize;
    drop(log);
    let first = "00000000000000000000.log";
    let mut bytes = io.live_bytes(first).unwrap();
    bytes.truncate(size);
    bytes.extend_from_slice(&batch(5, 3, 1_000)[..90]);
    io.put_file(first, &bytes);
    let report = check::check(&io, &config(FlushPolicy::Os)).unwrap();
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].position, size as u64);
    assert!(
        report.damage[0].reason.contains("torn"),
        "{}",
        report.damage[0].reason
    );
    let OnOpen::Cuts(cuts) = &report.on_open else {
        panic!("{:?}", report.on_open)
    };
    assert_eq!((cuts[0].position, cuts[0].records), (size as u64, 3));
}

#[test]
fn repair_works_on_a_log_anywhere_in_a_data_directory() {
    let root = FaultyIo::new();
    staunch_log::StorageIo::create_dir_all(&root, "topics/orders/0").unwrap();
    let dir = root.subdir("topics/orders/0");
    let (records, segments) = damaged_later(&dir);
    let p = batch_position(&dir, &segments[0], 5);
    dir.flip_bit(&segments[0], p + 33, 2);
    let repair = check::repair(&root, "topics/orders/0", &cfg(), 42).unwrap();
    assert_eq!(repair.cut.unwrap().from_offset, 20);
    assert!(dir.subdir("damaged-42").live_bytes(&segments[0]).is_some());
    let reopened = open_configured(&dir, cfg()).unwrap();
    assert_eq!(values(&reopened), records[..20]);
}

/// Names of directories in `io`'s directory, for checking what `repair` created.
trait ListDirs {
    fn list_dirs_named(&self, name: &str) -> Vec<String>;
}

impl ListDirs for FaultyIo {
    fn list_dirs_named(&self, name: &str) -> Vec<String> {
        staunch_log::StorageIo::list_dirs(self, "")
            .unwrap()
            .into_iter()
            .filter(|d| d == name)
            .collect()
    }
}
