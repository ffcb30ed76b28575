//! The conformance suite every [`LogStore`] must pass.
//!
//! An implementation provides a [`LogStoreBuilder`] that makes a fresh, empty log (plus a guard,
//! e.g. a `TempDir`, that cleans up when dropped) and calls [`test_all`]. Each check panics with
//! a message naming the broken promise.

use std::collections::BTreeSet;
use std::sync::Arc;

use staunch_core::batch::Compression;
use staunch_core::batch::batches;
use staunch_core::{BatchBuilder, RecordBatch};
use staunch_log::{LogError, LogStore, ReadBatches};

/// Makes fresh, empty logs for the suite.
pub trait LogStoreBuilder {
    /// The log type under test.
    type Log: LogStore + 'static;
    /// Kept alive as long as the log; dropped afterwards (cleans up files).
    type Guard;
    /// A new, empty log that accepts batches of a few KiB and rejects batches over 2 MiB.
    fn build(&self) -> (Self::Log, Self::Guard);
}

/// Runs every check against fresh logs from `builder`.
pub fn test_all<B: LogStoreBuilder>(builder: &B) {
    empty_log(builder);
    append_assigns_contiguous_offsets_and_stamps_epoch(builder);
    append_of_several_batches_at_once(builder);
    read_returns_whole_stored_batches(builder);
    read_respects_max_bytes_but_always_progresses(builder);
    read_within_returns_only_batches_that_fit(builder);
    read_out_of_range_is_an_error(builder);
    read_cached_answers_as_read_does_or_not_at_all(builder);
    invalid_batches_are_rejected_and_store_nothing(builder);
    offset_for_timestamp_finds_the_first_record(builder);
    offset_of_max_timestamp_finds_the_first_record_with_the_largest(builder);
    truncate_removes_the_tail(builder);
    truncate_below_earliest_restarts_the_log(builder);
    flush_makes_everything_durable(builder);
    concurrent_appends_get_distinct_contiguous_offsets(builder);
    closed_log_refuses_calls(builder);
}

/// A batch of `n` records whose values encode `tag`, with timestamps `ts, ts+1, …`.
pub fn batch(tag: u32, n: u32, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts);
    for i in 0..n {
        let value = format!("{tag}:{i}");
        b = b.record_at(
            ts + i64::from(i),
            Some(&tag.to_be_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.build()
}

/// An uncompressed batch of `n` records with 1 KiB values (all bytes 7) and timestamp 1000:
/// about `n` KiB, for reads that must span pooled buffers or byte budgets.
pub fn kib_batch(n: usize) -> Vec<u8> {
    let value = [7u8; 1024];
    let mut builder = BatchBuilder::new(1_000);
    for _ in 0..n {
        builder.push(1_000, None, Some(&value), std::iter::empty());
    }
    builder.build()
}

/// Every record in `bytes` as (offset, value).
pub fn records_of(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for b in batches(bytes) {
        let b = b.expect("read returned a malformed batch");
        b.validate().expect("read returned an invalid batch");
        for r in b.records().expect("uncompressed") {
            let r = r.expect("record");
            out.push((r.offset, r.value.unwrap_or_default().to_vec()));
        }
    }
    out
}

/// Reads every record from `from` to the log end.
pub fn read_all(log: &dyn LogStore, from: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end() {
        let read = log.read(next, 64 * 1024).expect("read within range");
        assert!(read.next_offset > next, "read made no progress at {next}");
        out.extend(
            records_of(&read.bytes)
                .into_iter()
                .filter(|(o, _)| *o >= next),
        );
        next = read.next_offset;
    }
    out
}

fn empty_log<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    assert_eq!(log.earliest(), 0, "a new log starts at offset 0");
    assert_eq!(log.log_end(), 0, "a new log is empty");
    let read = log
        .read(0, 1024)
        .expect("reading at the log end is allowed");
    assert!(
        read.bytes.is_empty(),
        "reading at the log end returns nothing"
    );
    assert_eq!(read.next_offset, 0);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
}

fn append_assigns_contiguous_offsets_and_stamps_epoch<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let mut first = batch(1, 3, 1_000);
    let info = log.append(&mut first, 5).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 2));
    let view = RecordBatch::parse(&first).unwrap();
    assert_eq!(
        view.base_offset(),
        0,
        "append rewrites the base offset in place"
    );
    assert_eq!(
        view.partition_leader_epoch(),
        5,
        "append stamps the leader epoch"
    );
    let mut second = batch(2, 2, 2_000);
    let info = log.append(&mut second, 6).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (3, 4));
    assert_eq!(log.log_end(), 5);
    let read = log.read(3, 1 << 20).unwrap();
    assert_eq!(read.bytes, second, "stored bytes are served unchanged");
    assert_eq!(
        RecordBatch::parse(&read.bytes)
            .unwrap()
            .partition_leader_epoch(),
        6
    );
}

fn append_of_several_batches_at_once<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let mut both = batch(1, 2, 1_000);
    both.extend_from_slice(&batch(2, 3, 1_000));
    let info = log.append(&mut both, 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 4));
    let offsets: Vec<i64> = read_all(&log, 0).into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
}

fn read_returns_whole_stored_batches<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    for tag in 0..10 {
        log.append(&mut batch(tag, 4, 1_000), 0).unwrap();
    }
    let read = log.read(13, 1 << 20).unwrap();
    let first = RecordBatch::parse(&read.bytes).unwrap();
    assert_eq!(
        first.base_offset(),
        12,
        "read starts with the batch containing the offset"
    );
    assert_eq!(read.next_offset, 40);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 40);
    for (i, (offset, value)) in all.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(value, format!("{}:{}", i / 4, i % 4).as_bytes());
    }
}

fn read_respects_max_bytes_but_always_progresses<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let one = batch(0, 4, 1_000);
    for tag in 0..5 {
        log.append(&mut batch(tag, 4, 1_000), 0).unwrap();
    }
    let read = log.read(0, 1).unwrap();
    assert_eq!(
        read.bytes.len(),
        one.len(),
        "at least one whole batch, even over max_bytes"
    );
    assert_eq!(read.next_offset, 4);
    let read = log.read(0, one.len() * 2 + 1).unwrap();
    assert_eq!(
        read.bytes.len(),
        one.len() * 2,
        "only whole batches that fit"
    );
    assert_eq!(read.next_offset, 8);
}

/// `read_within` (and `read_cached_within`, when it answers) returns what `read` does where
/// that fits in `max_bytes`, and nothing — staying at `from` — where the first batch alone
/// does not fit; errors as `read`.
fn read_within_returns_only_batches_that_fit<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let one = batch(0, 4, 1_000);
    for tag in 0..5 {
        log.append(&mut batch(tag, 4, 1_000), 0).unwrap();
    }
    let nothing = ReadBatches {
        bytes: bytes::Bytes::new(),
        next_offset: 5,
    };
    for (from, max_bytes, expected) in [
        (5, 1, nothing.clone()),
        (5, one.len() - 1, nothing),
        (5, one.len(), log.read(5, one.len()).unwrap()),
        (
            0,
            one.len() * 2 + 1,
            log.read(0, one.len() * 2 + 1).unwrap(),
        ),
        (20, 1, log.read(20, 1).unwrap()),
    ] {
        let within = log.read_within(from, max_bytes).unwrap();
        assert_eq!(within, expected, "from {from}, max {max_bytes}");
        if let Some(cached) = log.read_cached_within(from, max_bytes).unwrap() {
            assert_eq!(cached, expected, "cached, from {from}, max {max_bytes}");
        }
    }
    assert_eq!(log.read_within(5, one.len()).unwrap().next_offset, 8);
    assert!(matches!(
        log.read_within(21, 1024),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

/// `read_cached` may decline (`None`), but when it answers, it answers exactly what `read`
/// does, errors included.
fn read_cached_answers_as_read_does_or_not_at_all<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let one = batch(0, 4, 1_000);
    for tag in 0..5 {
        log.append(&mut batch(tag, 4, 1_000), 0).unwrap();
    }
    for (from, max_bytes) in [(0, 1), (0, one.len() * 2 + 1), (5, 1 << 20), (20, 1 << 20)] {
        if let Some(cached) = log.read_cached(from, max_bytes).unwrap() {
            assert_eq!(cached, log.read(from, max_bytes).unwrap(), "from {from}");
        }
    }
    assert!(matches!(
        log.read_cached(21, 1024),
        Ok(None) | Err(LogError::OffsetOutOfRange { .. })
    ));
    if let Some(bounds) = log.try_bounds() {
        assert_eq!(bounds, (log.earliest(), log.log_end()));
    }
}

/// Reads large enough to reuse buffers (see `staunch-log`'s read buffers) return each read's
/// own bytes, whichever buffer an earlier read gave back. Not in [`test_all`]: it needs a log
/// that takes batches of 200 KiB.
pub fn large_reads_one_after_another_never_mix_contents<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let big = |fill: u8| {
        let value = vec![fill; 200 << 10];
        BatchBuilder::new(1_000)
            .record_at(1_000, None, Some(&value[..]), &[])
            .build()
    };
    log.append(&mut big(b'a'), 0).unwrap();
    log.append(&mut big(b'b'), 0).unwrap();
    for round in 0..3 {
        for (offset, fill) in [(0, b'a'), (1, b'b')] {
            let read = log.read(offset, 1).unwrap();
            let records = records_of(&read.bytes);
            assert_eq!(records.len(), 1, "round {round}");
            let value = records[0].1.as_slice();
            assert!(
                value.len() == 200 << 10 && value.iter().all(|&v| v == fill),
                "round {round}: offset {offset} holds its own bytes"
            );
        }
    }
}

fn read_out_of_range_is_an_error<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    log.append(&mut batch(0, 2, 1_000), 0).unwrap();
    assert!(matches!(
        log.read(3, 1024),
        Err(LogError::OffsetOutOfRange {
            requested: 3,
            earliest: 0,
            log_end: 2
        })
    ));
    assert!(matches!(
        log.read(-1, 1024),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

fn invalid_batches_are_rejected_and_store_nothing<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    log.append(&mut batch(0, 2, 1_000), 0).unwrap();
    let good = batch(1, 2, 1_000);

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x40;
    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    let mut good_then_bad = good.clone();
    good_then_bad.extend_from_slice(&bad_crc);
    let mut truncated = good[..good.len() - 3].to_vec();
    let mut empty_batch = BatchBuilder::new(0).build();
    let big_value = vec![7u8; 2 << 20];
    let mut too_large = BatchBuilder::new(0).record(None, Some(&big_value)).build();

    for (what, bytes) in [
        ("a CRC mismatch", &mut bad_crc),
        ("magic 1", &mut bad_magic),
        (
            "a valid batch followed by a corrupt one",
            &mut good_then_bad,
        ),
        ("a truncated batch", &mut truncated),
        ("a batch with no records", &mut empty_batch),
        ("a batch over the size limit", &mut too_large),
        ("no bytes at all", &mut Vec::new()),
    ] {
        let result = log.append(bytes, 0);
        assert!(result.is_err(), "append accepted {what}");
        assert_eq!(log.log_end(), 2, "a rejected append ({what}) used offsets");
    }
    assert_eq!(
        read_all(&log, 0).len(),
        2,
        "rejected appends stored nothing"
    );
    let info = log.append(&mut good.clone(), 0).unwrap();
    assert_eq!(info.base_offset, 2, "offsets continue after rejections");
}

fn offset_for_timestamp_finds_the_first_record<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    log.append(&mut batch(0, 3, 1_000), 0).unwrap(); // ts 1000..1002, offsets 0..2
    log.append(&mut batch(1, 3, 2_000), 0).unwrap(); // ts 2000..2002, offsets 3..5
    let at = |ts| {
        log.offset_for_timestamp(ts)
            .unwrap()
            .map(|t| (t.offset, t.timestamp))
    };
    assert_eq!(at(0), Some((0, 1_000)));
    assert_eq!(at(1_001), Some((1, 1_001)));
    assert_eq!(at(1_003), Some((3, 2_000)));
    assert_eq!(at(2_002), Some((5, 2_002)));
    assert_eq!(at(2_003), None);
    // Inside a compressed batch the answer is the record, not the batch's first offset.
    let mut compressed = BatchBuilder::new(3_000).compression(Compression::Gzip);
    for i in 0..3 {
        compressed = compressed.record_at(3_000 + 10 * i, None, Some(b"z"), &[]);
    }
    log.append(&mut compressed.build(), 0).unwrap(); // ts 3000, 3010, 3020, offsets 6..8
    assert_eq!(at(3_005), Some((7, 3_010)));
    assert_eq!(at(3_020), Some((8, 3_020)));
}

fn offset_of_max_timestamp_finds_the_first_record_with_the_largest<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let at = |end| {
        log.offset_of_max_timestamp(end)
            .unwrap()
            .map(|t| (t.offset, t.timestamp))
    };
    assert_eq!(at(0), None, "an empty log has none");
    let with_timestamps = |timestamps: &[i64], compression| {
        let mut builder = BatchBuilder::new(timestamps[0]).compression(compression);
        for &ts in timestamps {
            builder.push(ts, None, Some(b"v"), []);
        }
        builder.build()
    };
    let appended = |timestamps: &[i64], compression| {
        log.append(&mut with_timestamps(timestamps, compression), 0)
            .unwrap()
    };
    appended(&[100, 300, 200], Compression::None); // offsets 0..2
    appended(&[250, 500, 400, 500], Compression::Gzip); // 3..6
    appended(&[500], Compression::None); // 7: ties with 4, which comes first
    appended(&[50], Compression::None); // 8
    for (end, expected, why) in [
        (9, Some((4, 500)), "the record inside its compressed batch"),
        (
            100,
            Some((4, 500)),
            "an end past the log end is the log end",
        ),
        (3, Some((1, 300)), "only whole batches before the end count"),
        (
            5,
            Some((1, 300)),
            "a batch the end falls inside does not count",
        ),
    ] {
        assert_eq!(at(end), expected, "end {end}: {why}");
    }
    assert_eq!(at(2), None);
    log.append(&mut batch(9, 2, 900), 0).unwrap(); // 9, 10: timestamps 900, 901
    assert_eq!(at(11), Some((10, 901)));
    assert_eq!(at(9), Some((4, 500)));
}

fn truncate_removes_the_tail<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    for tag in 0..6 {
        log.append(&mut batch(tag, 4, 1_000 + i64::from(tag)), 0)
            .unwrap();
    }
    assert_eq!(
        log.truncate_to(30).unwrap(),
        24,
        "truncating past the end changes nothing"
    );
    assert_eq!(
        log.truncate_to(16).unwrap(),
        16,
        "truncating at a batch boundary"
    );
    assert_eq!(log.log_end(), 16);
    assert_eq!(
        log.truncate_to(10).unwrap(),
        8,
        "a batch straddling the offset goes whole"
    );
    assert_eq!(log.log_end(), 8);
    assert_eq!(read_all(&log, 0).len(), 8);
    assert!(
        log.read(9, 100).is_err(),
        "truncated offsets are out of range"
    );
    let info = log.append(&mut batch(9, 2, 5_000), 0).unwrap();
    assert_eq!(info.base_offset, 8, "appends continue at the new end");
    let values: Vec<_> = read_all(&log, 8).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, vec![b"9:0".to_vec(), b"9:1".to_vec()]);
    assert_eq!(
        log.offset_for_timestamp(1_005).unwrap().map(|t| t.offset),
        Some(8)
    );
}

fn truncate_below_earliest_restarts_the_log<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    log.append(&mut batch(0, 4, 1_000), 0).unwrap();
    assert_eq!(log.truncate_to(0).unwrap(), 0);
    assert_eq!((log.earliest(), log.log_end()), (0, 0));
    assert_eq!(
        log.append(&mut batch(1, 1, 1_000), 0).unwrap().base_offset,
        0
    );
}

fn flush_makes_everything_durable<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    log.append(&mut batch(0, 4, 1_000), 0).unwrap();
    assert_eq!(log.flush().unwrap(), 4);
    assert_eq!(log.durable_end(), 4);
}

fn concurrent_appends_get_distinct_contiguous_offsets<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    let log = Arc::new(log);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50u32)
                    .map(|i| {
                        let info = log.append(&mut batch(t * 1000 + i, 3, 1_000), 0).unwrap();
                        (info.base_offset, info.last_offset)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets = BTreeSet::new();
    for t in threads {
        for (base, last) in t.join().unwrap() {
            assert_eq!(last - base, 2);
            for o in base..=last {
                assert!(offsets.insert(o), "offset {o} handed out twice");
            }
        }
    }
    assert_eq!(
        offsets.into_iter().collect::<Vec<_>>(),
        (0..600).collect::<Vec<_>>()
    );
    assert_eq!(read_all(&*log, 0).len(), 600);
    assert!(log.durable_end() <= log.log_end());
}

fn closed_log_refuses_calls<B: LogStoreBuilder>(b: &B) {
    let (log, _g) = b.build();
    log.append(&mut batch(0, 1, 1_000), 0).unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append(&mut batch(1, 1, 1_000), 0),
        Err(LogError::Closed)
    ));
    assert!(matches!(log.read(0, 100), Err(LogError::Closed)));
}
