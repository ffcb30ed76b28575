//! Crash recovery of `FileLog` over an arbitrary segment file.
//!
//! Input layout: the first byte is a set of flags, the rest is the segment's raw content.
//! - bit 0: prepend a valid prefix of 1–8 contiguous batches built with `BatchBuilder`
//!   (count from bits 2–4), so "valid prefix + garbage tail" is reached at once;
//! - bit 1: `index_interval_bytes = 64` instead of the default 4 KiB, so small inputs build a
//!   multi-entry sparse index.
//!
//! The bytes are written as `00000000000000000000.log` in a fresh directory (on /dev/shm when
//! there is one: fsync is free there), and the log is opened with `FlushPolicy::Os`. Then:
//! - open must succeed: a single (active) segment is always recoverable by cutting its tail;
//! - recovery keeps exactly a prefix of the file, at least the valid prefix we wrote, and the
//!   file on disk is cut to it;
//! - reading batch by batch from `earliest()` to `log_end()` returns batches that parse, pass
//!   `verify_integrity()`, start exactly at the requested offset and are contiguous, and whose
//!   bytes are the file's bytes; one large read returns the same bytes;
//! - an append of a fresh batch lands at the old log end and reads back stamped;
//! - close succeeds, and a reopen is clean and sees the same log.
//!
//! Recovery and reads check only `verify_integrity()` (magic, CRC, count/delta): a CRC-valid
//! batch with malformed records survives recovery by design. Batches we built ourselves must
//! also pass the full `validate()`; set `STAUNCH_FUZZ_STRICT=1` to demand it of every batch.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use staunch_core::batch::batches;
use staunch_core::{BatchBuilder, RecordBatch};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogError, LogStore};

const SEGMENT: &str = "00000000000000000000.log";

fuzz_target!(|data: &[u8]| run(data));

fn tmp_root() -> &'static Option<PathBuf> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        shm.is_dir().then_some(shm)
    })
}

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("STAUNCH_FUZZ_STRICT").is_some_and(|v| v != "0"))
}

/// `n` valid uncompressed batches with contiguous base offsets from 0; returns the bytes and the
/// offset after the last record.
fn valid_prefix(n: usize, seed: u8) -> (Vec<u8>, i64) {
    let mut out = Vec::new();
    let mut next = 0i64;
    for i in 0..n {
        let records = 1 + (i + usize::from(seed)) % 3;
        let mut b = BatchBuilder::new(1_700_000_000_000 + i as i64);
        for r in 0..records {
            let value = vec![b'a' + (r as u8); (i * 7 + r) % 40];
            b = b.record_at(
                1_700_000_000_000 + (i * 3 + r) as i64,
                Some(b"key"),
                Some(&value),
                &[],
            );
        }
        let mut bytes = b.build();
        RecordBatch::set_base_offset(&mut bytes, next).unwrap();
        RecordBatch::set_partition_leader_epoch(&mut bytes, i as i32).unwrap();
        next += records as i64;
        out.extend_from_slice(&bytes);
    }
    (out, next)
}

fn run(data: &[u8]) {
    let (flags, tail) = match data.split_first() {
        Some((&f, rest)) => (f, rest),
        None => (0, data),
    };
    let (mut file, prefix_end) = if flags & 1 != 0 {
        valid_prefix(1 + usize::from((flags >> 2) & 7), flags)
    } else {
        (Vec::new(), 0)
    };
    let prefix_len = file.len() as u64;
    file.extend_from_slice(tail);

    let config = LogConfig {
        flush: FlushPolicy::Os,
        index_interval_bytes: if flags & 2 != 0 {
            64
        } else {
            LogConfig::default().index_interval_bytes
        },
        ..LogConfig::default()
    };

    let dir = match tmp_root() {
        Some(root) => tempfile::tempdir_in(root),
        None => tempfile::tempdir(),
    }
    .expect("creating a temp dir");
    let seg_path = dir.path().join(SEGMENT);
    std::fs::write(&seg_path, &file).expect("writing the segment");

    let log = match FileLog::open(dir.path(), config.clone()) {
        Ok(log) => log,
        Err(e) => {
            panic!("open failed on a lone active segment (recovery should cut the tail): {e}")
        }
    };

    // --- Recovery kept a prefix of the file, at least our valid prefix, and cut the file to it.
    let rec = log.recovery().clone();
    // No clean-shutdown marker was written: the open is clean only for a log that never held
    // a byte (nothing kept, nothing cut; a run of zeros is no data).
    assert_eq!(
        rec.clean,
        log.size_bytes() == 0 && rec.bytes_truncated == 0,
        "{rec:?}"
    );
    assert_eq!(rec.segments_scanned, 1);
    assert_eq!(log.segment_count(), 1);
    let kept = log.size_bytes();
    // What was cut is counted as lost bytes, except a run of zeros at the very end (blocks
    // reserved ahead of the data, never data); a tail of nothing but zeros is no cut at all.
    let uncounted = (file.len() as u64)
        .checked_sub(kept + rec.bytes_truncated)
        .unwrap_or_else(|| panic!("kept + truncated > file length ({rec:?})"));
    assert!(
        file[file.len() - uncounted as usize..].iter().all(|&b| b == 0),
        "{uncounted} cut bytes not counted, and not all zeros ({rec:?})"
    );
    assert_eq!(
        rec.truncation_reason.is_some(),
        !rec.cuts.is_empty(),
        "{rec:?}"
    );
    assert_eq!(rec.cuts.iter().map(|c| c.bytes).sum::<u64>(), rec.bytes_truncated);
    if let Some(cut) = rec.cuts.first() {
        assert_eq!((cut.position, cut.first_offset), (kept, log.log_end()), "{rec:?}");
    }
    assert!(
        kept >= prefix_len,
        "recovery cut into the valid prefix: kept {kept} < {prefix_len} ({rec:?})"
    );
    let on_disk = std::fs::metadata(&seg_path)
        .expect("segment metadata")
        .len();
    assert_eq!(on_disk, kept, "segment file not cut to the recovered size");

    assert_eq!(log.earliest(), 0);
    let end = log.log_end();
    assert!(
        end >= prefix_end,
        "log end {end} below the valid prefix's end {prefix_end}"
    );
    assert_eq!(log.durable_end(), end, "durable_end != log_end after open");

    // --- Batch-by-batch read from earliest to log end.
    let mut served = Vec::with_capacity(kept as usize);
    let mut from = log.earliest();
    while from < end {
        let r = log
            .read(from, 1)
            .unwrap_or_else(|e| panic!("read({from}) below log end {end} failed: {e}"));
        assert!(
            !r.bytes.is_empty(),
            "read({from}) below log end returned nothing"
        );
        let mut expect = from;
        for item in batches(&r.bytes) {
            let b = item.unwrap_or_else(|e| panic!("read({from}) returned unparsable bytes: {e}"));
            b.verify_integrity()
                .unwrap_or_else(|e| panic!("read({from}) served a bad batch: {e}"));
            assert_eq!(
                b.base_offset(),
                expect,
                "read({from}): batch at {} where {expect} was expected",
                b.base_offset()
            );
            let pos = served.len() as u64;
            if strict() || pos < prefix_len {
                b.validate().unwrap_or_else(|e| {
                    panic!("read({from}) served a batch failing validate(): {e}")
                });
            }
            expect = b.next_offset();
            served.extend_from_slice(b.as_bytes());
        }
        assert_eq!(
            r.next_offset, expect,
            "read({from}).next_offset disagrees with its batches"
        );
        assert!(r.next_offset > from, "read({from}) made no progress");
        assert!(
            r.next_offset <= end,
            "read({from}) went past the log end {end}"
        );
        from = r.next_offset;
    }
    assert_eq!(from, end);
    assert_eq!(
        served.len() as u64,
        kept,
        "reads served a different amount than recovery kept"
    );
    assert!(
        served == file[..kept as usize],
        "served bytes differ from the segment's bytes"
    );

    // One big read serves the same bytes (single segment, well under the limit).
    if end > 0 {
        let all = log.read(0, 1 << 20).expect("big read from 0");
        assert!(
            all.bytes == served,
            "a big read differs from the batch-by-batch reads"
        );
        assert_eq!(all.next_offset, end);
    }
    let at_end = log.read(end, 1 << 20).expect("read at the log end");
    assert!(at_end.bytes.is_empty() && at_end.next_offset == end);
    assert!(matches!(
        log.read(end + 1, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    // Timestamp lookups over the recovered data must not fail or panic.
    for ts in [i64::MIN, 0, 1_700_000_000_000, i64::MAX] {
        let found = log
            .offset_for_timestamp(ts)
            .unwrap_or_else(|e| panic!("offset_for_timestamp({ts}) failed: {e}"));
        if strict() {
            if let Some(t) = found {
                assert!(
                    (0..end).contains(&t.offset),
                    "offset_for_timestamp({ts}) = {t:?} outside 0..{end}"
                );
            }
        }
    }

    // --- Append a fresh batch at the old log end and read it back.
    let mut fresh = BatchBuilder::new(1_800_000_000_000)
        .record(Some(b"k"), Some(b"fresh"))
        .record_at(
            1_800_000_000_005,
            None,
            Some(b"second"),
            &[(b"h", Some(b"v"))],
        )
        .build();
    let info = log
        .append(&mut fresh, 42)
        .unwrap_or_else(|e| panic!("append after recovery failed: {e}"));
    assert_eq!(info.base_offset, end);
    assert_eq!(info.last_offset, end + 1);
    assert_eq!(log.log_end(), end + 2);
    let back = log
        .read(end, 1 << 20)
        .unwrap_or_else(|e| panic!("read({end}) of the appended batch failed: {e}"));
    assert!(
        back.bytes.starts_with(&fresh),
        "appended batch does not read back as stamped"
    );
    let b = RecordBatch::parse(&back.bytes).expect("appended batch parses");
    b.validate().expect("appended batch validates");
    assert_eq!((b.base_offset(), b.partition_leader_epoch()), (end, 42));
    assert_eq!(back.next_offset, end + 2);

    log.close().unwrap_or_else(|e| panic!("close failed: {e}"));
    drop(log);

    // --- A clean reopen sees the same log.
    let log = FileLog::open(dir.path(), config)
        .unwrap_or_else(|e| panic!("reopen after close failed: {e}"));
    assert!(
        log.recovery().clean,
        "reopen after close was not clean: {:?}",
        log.recovery()
    );
    assert_eq!(log.log_end(), end + 2);
    assert_eq!(log.earliest(), 0);
    let again = log
        .read(end, 1 << 20)
        .unwrap_or_else(|e| panic!("read({end}) after reopen failed: {e}"));
    assert!(
        again.bytes.starts_with(&fresh),
        "appended batch changed across a clean reopen"
    );
    if end > 0 {
        let first = log.read(0, 1).expect("read(0) after reopen");
        assert!(
            served.starts_with(&first.bytes),
            "recovered data changed across a clean reopen"
        );
    }
    log.close()
        .unwrap_or_else(|e| panic!("second close failed: {e}"));
}
