//! Arbitrary bytes through the v2 record-batch view.
//!
//! Every batch `batches()` yields is poked through `validate()`, `verify_integrity()`, every
//! header accessor and its records: none of that may panic ("Accessors never panic on a parsed
//! view"). The iterator must tile the input, and a batch that validates must stay valid after
//! its base offset and leader epoch are rewritten (both lie outside the CRC).
//!
//! `fuzz/regressions/batch_parse/` holds inputs that once panicked here (offset sums near the
//! ends of `i64`); the test script replays them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use staunch_core::RecordBatch;
use staunch_core::batch::{Compression, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2, batches};

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    // The single-batch entry points on the raw input.
    let _ = RecordBatch::peek_size(data);
    if let Ok(b) = RecordBatch::parse(data) {
        touch_header(&b);
    }

    let mut pos = 0usize;
    let mut iter = batches(data);
    for item in iter.by_ref() {
        match item {
            Ok(batch) => {
                // The iterator walks the input front to back, batch after batch.
                let size = batch.size();
                assert!(
                    size >= HEADER_SIZE,
                    "parsed batch smaller than a header: {size}"
                );
                assert_eq!(size, LOG_OVERHEAD + batch.batch_length() as usize);
                assert_eq!(
                    batch.as_bytes(),
                    &data[pos..pos + size],
                    "batch is not the next bytes"
                );
                assert_eq!(RecordBatch::peek_size(&data[pos..]), Some(Ok(size)));
                check_batch(&batch);
                pos += size;
            }
            Err(_) => {
                assert!(pos < data.len(), "error yielded with no bytes left");
                break;
            }
        }
    }
    // After an error or the last byte, the iterator is done.
    assert!(
        iter.next().is_none(),
        "batches() yielded after an error or the end"
    );
}

/// Every header accessor; returns nothing, only must not panic.
fn touch_header(b: &RecordBatch<'_>) {
    let _ = b.as_bytes();
    let _ = b.size();
    let _ = b.base_offset();
    let _ = b.batch_length();
    let _ = b.partition_leader_epoch();
    let _ = b.magic();
    let _ = b.crc();
    let _ = b.attributes();
    let _ = b.compression();
    let _ = b.is_log_append_time();
    let _ = b.is_transactional();
    let _ = b.is_control();
    let _ = b.last_offset_delta();
    let _ = b.last_offset();
    let _ = b.next_offset();
    let _ = b.base_timestamp();
    let _ = b.max_timestamp();
    let _ = b.producer_id();
    let _ = b.producer_epoch();
    let _ = b.base_sequence();
    let _ = b.record_count();
    let _ = b.compute_crc();
}

/// Touches every record; returns how many decoded before the first error (if any).
fn walk_records(b: &RecordBatch<'_>) -> Option<(usize, bool)> {
    let records = b.records().ok()?;
    let mut ok = 0usize;
    let mut failed = false;
    for r in records {
        match r {
            Ok(r) => {
                assert!(!failed, "a record decoded after a failed one");
                let _ = (r.offset, r.timestamp);
                let _ = r.key.map(<[u8]>::len);
                let _ = r.value.map(<[u8]>::len);
                for (k, v) in &r.headers {
                    let _ = (k.len(), v.map(<[u8]>::len));
                }
                ok += 1;
            }
            Err(_) => failed = true,
        }
    }
    Some((ok, failed))
}

fn check_batch(b: &RecordBatch<'_>) {
    touch_header(b);
    let records = walk_records(b);
    assert_eq!(
        records.is_some(),
        b.compression() == Some(Compression::None),
        "records() must work exactly for uncompressed batches"
    );

    let integrity = b.verify_integrity();
    let valid = b.validate();
    if integrity.is_ok() {
        assert_eq!(b.magic(), MAGIC_V2);
        assert_eq!(b.crc(), b.compute_crc());
        assert!(b.compression().is_some());
        assert!(b.record_count() > 0);
        assert_eq!(b.last_offset_delta(), b.record_count() - 1);
    }
    if valid.is_ok() {
        assert!(
            integrity.is_ok(),
            "validate() passed but verify_integrity() failed: {integrity:?}"
        );
        if let Some((ok, failed)) = records {
            assert!(
                !failed,
                "a validated batch has a record that fails to decode"
            );
            assert_eq!(
                ok,
                b.record_count() as usize,
                "validated batch: records != record_count"
            );
        }
        check_rewrite(b);
    }
}

/// The broker rewrites base offset and leader epoch in place; both lie outside the CRC, so the
/// batch must stay valid and nothing else may change.
fn check_rewrite(b: &RecordBatch<'_>) {
    let original = b.as_bytes();
    // Offsets a log could assign (bounded well below i64::MAX) and arbitrary epochs.
    let derived = i64::from(b.crc()) << 8;
    for (offset, epoch) in [
        (0i64, -1i32),
        (1 << 40, 7),
        (derived, b.crc() as i32),
        (i64::from(i32::MAX), i32::MIN),
    ] {
        let mut copy = original.to_vec();
        RecordBatch::set_base_offset(&mut copy, offset).expect("set_base_offset on a valid batch");
        RecordBatch::set_partition_leader_epoch(&mut copy, epoch)
            .expect("set_partition_leader_epoch on a valid batch");
        let r = RecordBatch::parse(&copy).expect("rewritten batch no longer parses");
        assert_eq!(r.size(), original.len());
        assert_eq!(r.base_offset(), offset);
        assert_eq!(r.partition_leader_epoch(), epoch);
        assert_eq!(
            &copy[8..12],
            &original[8..12],
            "rewrite touched the length field"
        );
        assert_eq!(
            &copy[16..],
            &original[16..],
            "rewrite touched bytes beyond the epoch"
        );
        r.verify_integrity()
            .expect("rewritten batch fails verify_integrity");
        r.validate().expect("rewritten batch fails validate");
        assert_eq!(r.last_offset(), offset + i64::from(b.last_offset_delta()));
        if let Some(Ok(first)) = r.records().ok().and_then(|mut it| it.next()) {
            let orig_first = b.records().unwrap().next().unwrap().unwrap();
            // Relative offsets and everything else in the record are unchanged.
            assert_eq!(first.offset - offset, orig_first.offset - b.base_offset());
            assert_eq!(first.key, orig_first.key);
            assert_eq!(first.value, orig_first.value);
        }
    }
}
