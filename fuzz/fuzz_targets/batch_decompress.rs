//! Arbitrary bytes as the records section of a compressed batch: decompression and record
//! iteration must never panic, never produce more than the limit, and agree with each other.
//!
//! Input: byte 0 picks the codec (`(b & 7) % 5`: none, gzip, snappy, lz4, zstd) and, with bit
//! 0x80, the round-trip mode; byte 1 is the record count minus one; the rest is the records
//! section. The target wraps it in a batch header with a matching CRC — what a broker would
//! accept and store, since it never decompresses — then:
//!
//! - `RecordBatch::decompressed_with_limit` fails or yields at most `LIMIT` bytes, exactly what
//!   `compression::decompress` yields for the same bytes; every record it iterates decodes or
//!   the iteration stops at the first error, and never more than the batch's record count;
//! - in round-trip mode the rest is *uncompressed* data instead: compressing and decompressing
//!   it gives it back, and a batch built around it reads back the same way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use staunch_core::batch::{Compression, HEADER_SIZE, RecordBatch};
use staunch_core::compression::{CompressionError, compress, decompress};

/// Decompressed bytes one input may produce.
const LIMIT: usize = 1 << 20;

const ATTRIBUTES: usize = 21;
const CRC: usize = 17;
const LAST_OFFSET_DELTA: usize = 23;
const RECORD_COUNT: usize = 57;

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let [flags, count, rest @ ..] = data else {
        return;
    };
    let codec = Compression::from_id((flags & 7) % 5).expect("ids 0..=4 are defined");
    let count = i32::from(*count) + 1;
    if flags & 0x80 != 0 {
        round_trip(codec, rest);
    } else {
        read(codec, count, rest);
    }
}

/// A batch of `count` records whose records section is `section`, compressed with `codec`,
/// with a CRC that matches.
fn wrap(codec: Compression, count: i32, section: &[u8]) -> Vec<u8> {
    let mut batch = vec![0u8; HEADER_SIZE];
    let length = (HEADER_SIZE - 12 + section.len()) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    batch[16] = 2;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&i16::from(codec.id()).to_be_bytes());
    batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&(count - 1).to_be_bytes());
    batch[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    batch.extend_from_slice(section);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn read(codec: Compression, count: i32, section: &[u8]) {
    let direct = decompress(codec, section, LIMIT);
    if let Ok(out) = &direct {
        assert!(
            out.len() <= LIMIT,
            "{codec}: {} bytes past the limit",
            out.len()
        );
    }
    if let Err(CompressionError::TooLarge { limit, .. }) = &direct {
        assert_eq!(*limit, LIMIT);
    }

    let bytes = wrap(codec, count, section);
    let batch = RecordBatch::parse(&bytes).expect("a well-formed header parses");
    batch
        .verify_integrity()
        .expect("the header and CRC are right");
    match batch.decompressed_with_limit(LIMIT) {
        Ok(records) => {
            if codec == Compression::None {
                assert!(records.is_borrowed());
                assert_eq!(records.as_bytes(), section);
            } else {
                assert_eq!(
                    Ok(records.as_bytes()),
                    direct.as_deref(),
                    "{codec}: batch and direct decompression disagree"
                );
            }
            walk(&records, count);
        }
        Err(_) => assert!(
            codec != Compression::None && direct.is_err(),
            "{codec}: the batch failed where direct decompression did not"
        ),
    }
}

/// Iterates every record; at most `count`, and nothing after the first error.
fn walk(records: &staunch_core::batch::Decompressed<'_>, count: i32) {
    let mut seen = 0i32;
    let mut failed = false;
    for record in records.records() {
        assert!(!failed, "a record after a failed one");
        match record {
            Ok(r) => {
                let _ = (r.offset, r.timestamp, r.key.map(<[u8]>::len));
                let _ = r.value.map(<[u8]>::len);
                for (k, v) in &r.headers {
                    let _ = (k.len(), v.map(<[u8]>::len));
                }
                seen += 1;
            }
            Err(_) => failed = true,
        }
    }
    assert!(seen <= count, "{seen} records from a batch of {count}");
}

fn round_trip(codec: Compression, data: &[u8]) {
    let packed = compress(codec, data).expect("compression of in-memory data succeeds");
    let back = decompress(codec, &packed, data.len()).expect("own output decompresses");
    assert_eq!(back, data, "{codec} does not round-trip");
    let bytes = wrap(codec, 1, &packed);
    let batch = RecordBatch::parse(&bytes).expect("a well-formed header parses");
    let records = batch
        .decompressed_with_limit(data.len())
        .expect("own batch decompresses");
    assert_eq!(records.as_bytes(), data);
    walk(&records, 1);
}
