//! `FileLog` recovery over a damaged index file, clean-shutdown marker, truncation intent or
//! recovery point.
//!
//! A log of several 1 KiB segments (an index entry every 64 bytes) is written once and closed
//! cleanly, so every segment has its `<base>.index`, the `clean-shutdown` marker names the
//! active one, and the `recovery-point` (the durable-end checkpoint) is at the log end. Each
//! input damages a copy of that disk:
//!
//! - byte 0 picks the file replaced, modulo the segment count + 3: `k` below the segment
//!   count is segment `k`'s index; then the clean-shutdown marker; then the truncation intent
//!   (not there after a clean close); then the recovery point;
//! - byte 1 is a set of flags. Bit 0: reseal: the rest of the input is the file's *body*,
//!   framed with its magic, version and a valid CRC-32C (so the decoder, not only the CRC
//!   check, sees arbitrary fields); without it the rest is the file as is. Bit 1: make the
//!   clean-shutdown marker invalid as well (an unclean shutdown). Bit 2: append a batch after
//!   the open.
//!
//! Checks:
//! - the open never panics;
//! - a file that does not pass its CRC is ignored: the open succeeds and the log serves exactly
//!   the batches written, at their offsets (an index or marker is a hint, never trusted over
//!   the data);
//! - a CRC-valid file may make the open fail, but every batch a read serves passes its CRC and is
//!   byte for byte one of the batches written; timestamp lookups and an append never panic
//!   (and, without one, answer offsets inside the log).

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use staunch_core::batch::batches;
use staunch_core::{BatchBuilder, ManualClock};
use staunch_fuzz::{
    INDEX_LOG_CLOCK_MS, INDEX_MAGIC, INTENT_MAGIC, Input, MARKER_MAGIC, RECOVERY_POINT_MAGIC,
    index_log, index_log_config, seal, unseal,
};
use staunch_log::{FileLog, LogStore};
use staunch_testkit::{CrashMode, FaultyIo};

struct Base {
    disk: FaultyIo,
    batches: Vec<Vec<u8>>,
    indexes: Vec<String>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let (disk, batches) = index_log();
        let mut indexes: Vec<String> = disk
            .names()
            .into_iter()
            .filter(|n| n.ends_with(".index"))
            .collect();
        indexes.sort();
        Base {
            disk,
            batches,
            indexes,
        }
    })
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let base = base();
    let mut input = Input::new(data);
    let segments = base.indexes.len();
    let which = usize::from(input.byte()) % (segments + 3);
    let flags = input.byte();
    let body = input.rest();

    let (name, magic) = if which < segments {
        (base.indexes[which].as_str(), INDEX_MAGIC)
    } else if which == segments {
        ("clean-shutdown", MARKER_MAGIC)
    } else if which == segments + 1 {
        ("truncate-intent", INTENT_MAGIC)
    } else {
        ("recovery-point", RECOVERY_POINT_MAGIC)
    };
    let bytes = if flags & 1 != 0 {
        seal(magic, body)
    } else {
        body.to_vec()
    };
    let trusted = unseal(&bytes, magic).is_some();

    let disk = base.disk.crash(CrashMode::KeepPageCache);
    disk.put_file(name, &bytes);
    if flags & 2 != 0 {
        disk.put_file("clean-shutdown", b"");
    }

    let clock = Arc::new(ManualClock::new(INDEX_LOG_CLOCK_MS + 1_000));
    let log = match FileLog::open_with(Arc::new(disk.clone()), index_log_config(), clock) {
        Ok(log) => log,
        Err(e) => {
            assert!(
                trusted,
                "a {name} that fails its CRC must be ignored, but the open failed: {e}"
            );
            return;
        }
    };

    // Every batch served is one that was written; without a CRC-valid file, all of them are,
    // at their offsets.
    let mut served = Vec::new();
    let (earliest, end) = (log.earliest(), log.log_end());
    let mut from = earliest;
    for _ in 0..64 {
        if from >= end {
            break;
        }
        match log.read(from, 1) {
            Ok(read) => {
                for batch in batches(&read.bytes) {
                    let batch = batch.unwrap_or_else(|e| {
                        panic!("read({from}) served bytes that do not parse: {e}")
                    });
                    batch
                        .verify_integrity()
                        .unwrap_or_else(|e| panic!("read({from}) served a bad batch: {e}"));
                    assert!(
                        base.batches.iter().any(|b| b[..] == *batch.as_bytes()),
                        "read({from}) served a batch that was never written (base offset {})",
                        batch.base_offset()
                    );
                    served.push(batch.as_bytes().to_vec());
                }
                if read.next_offset <= from {
                    assert!(trusted, "read({from}) made no progress");
                    break;
                }
                from = read.next_offset;
            }
            Err(e) => {
                assert!(trusted, "read({from}) failed on an intact log: {e}");
                from += 1;
            }
        }
    }
    if !trusted {
        assert_eq!(earliest, 0);
        assert!(
            served == base.batches,
            "a damaged {name} changed what the log serves"
        );
    }

    for ts in [i64::MIN, 0, INDEX_LOG_CLOCK_MS + 50, i64::MAX] {
        let found = log.offset_for_timestamp(ts);
        if !trusted {
            let found = found.unwrap_or_else(|e| panic!("offset_for_timestamp({ts}): {e}"));
            if let Some(t) = found {
                assert!(
                    (0..end).contains(&t.offset),
                    "offset_for_timestamp({ts}) = {t:?}"
                );
            }
        }
    }

    for upto in [end, end / 2] {
        let found = log.offset_of_max_timestamp(upto);
        if !trusted {
            let found = found.unwrap_or_else(|e| panic!("offset_of_max_timestamp({upto}): {e}"));
            if let Some(t) = found {
                assert!(
                    (0..upto).contains(&t.offset),
                    "offset_of_max_timestamp({upto}) = {t:?}"
                );
            }
        }
    }

    if flags & 4 != 0 {
        let mut fresh = BatchBuilder::new(INDEX_LOG_CLOCK_MS + 2_000)
            .record(Some(b"k"), Some(b"after the damage"))
            .build();
        let appended = log.append(&mut fresh, 9);
        if !trusted {
            let info = appended.unwrap_or_else(|e| panic!("append after recovery: {e}"));
            assert_eq!(info.base_offset, end);
        }
    }
    let _ = log.close();
}
