//! Writes seed inputs for the fuzz targets into `fuzz/seeds/<target>/`, and the hand-made
//! reproducers of known bugs into `fuzz/regressions/<target>/` (kept out of the seeds so a fuzz
//! run does not stop on them at once).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! cargo +nightly fuzz run batch_parse fuzz/corpus/batch_parse fuzz/seeds/batch_parse
//! ```
//! The seeds are deterministic, so regenerating them leaves the files unchanged.

use std::path::{Path, PathBuf};

use staunch_core::batch::{Compression, HEADER_SIZE};
use staunch_core::{BatchBuilder, RecordBatch};

const ATTRIBUTES: usize = 21;
const CRC: usize = 17;
const LAST_OFFSET_DELTA: usize = 23;
const RECORD_COUNT: usize = 57;

fn sample(ts: i64) -> Vec<u8> {
    BatchBuilder::new(ts)
        .record(Some(b"k1"), Some(b"v1"))
        .record_at(
            ts + 5,
            None,
            Some(b"v2"),
            &[(b"h", Some(b"x")), (b"n", None)],
        )
        .record_at(ts + 2, Some(b"k3"), None, &[])
        .build()
}

fn small(ts: i64, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts);
    for i in 0..n {
        b = b.record_at(
            ts + i as i64,
            Some(b"key"),
            Some(&[b'v'; 10][..(i % 10)]),
            &[],
        );
    }
    b.build()
}

fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
    bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A header-only batch that passes `verify_integrity()` (not `validate()`) with `count` records.
fn header_only(count: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000).build();
    b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&(count - 1).to_be_bytes());
    b[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    fix_crc(&mut b);
    b
}

/// Concatenates batches with contiguous base offsets from `start`.
fn chain(start: i64, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = start;
    for p in parts {
        let mut p = p.clone();
        RecordBatch::set_base_offset(&mut p, next).unwrap();
        next = RecordBatch::parse(&p).unwrap().next_offset();
        out.extend_from_slice(&p);
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let bp = root.join("batch_parse");
    let bd = root.join("batch_decompress");
    let lr = root.join("log_recovery");
    let regressions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let bp_reg = regressions.join("batch_parse");
    let lr_reg = regressions.join("log_recovery");
    let bd_reg = regressions.join("batch_decompress");

    // batch_parse: raw batch bytes.
    write(&bp, "one_batch", &sample(1_000));
    let mut two = chain(5, &[sample(1_000), small(2_000, 4)]);
    write(&bp, "two_batches", &two);
    two.extend_from_slice(&[0, 0, 0, 1, 2, 3]);
    write(&bp, "two_batches_garbage", &two);
    let idem = BatchBuilder::new(3_000)
        .producer(77, 3, 100)
        .record(None, Some(b"x"))
        .build();
    write(&bp, "idempotent", &idem);
    write(&bp, "empty_batch", &BatchBuilder::new(0).build());
    write(&bp, "header_only_integrity", &header_only(3));
    let torn = sample(1_000);
    write(&bp, "torn", &torn[..torn.len() - 3]);

    // batch_parse: compressed batches too (records() refuses them; validate() checks the
    // header and CRC only).
    for codec in [Compression::Gzip, Compression::Zstd] {
        let compressed = BatchBuilder::new(1_000)
            .compression(codec)
            .record(Some(b"k1"), Some(b"v1"))
            .record_at(1_005, None, Some(b"v2"), &[(b"h", Some(b"x"))])
            .build();
        write(&bp, &format!("compressed_{codec}"), &compressed);
    }

    // batch_decompress: byte 0 = codec id (bit 0x80: round-trip mode), byte 1 = record count
    // - 1, then a records section.
    let section = |codec: Compression, batch: &[u8]| {
        let count = RecordBatch::parse(batch).unwrap().record_count();
        let mut v = vec![codec.id(), (count - 1) as u8];
        v.extend_from_slice(&batch[HEADER_SIZE..]);
        v
    };
    let many_records = |codec: Compression| {
        let mut b = BatchBuilder::new(9_000).compression(codec);
        for i in 0..40i64 {
            let value = format!("value {i} {}", "x".repeat(i as usize * 50));
            b.push(
                9_000 + i,
                Some(format!("key-{i}").as_bytes()),
                Some(value.as_bytes()),
                [(&b"h"[..], Some(&b"v"[..]))],
            );
        }
        b.build()
    };
    for codec in Compression::ALL {
        let one = BatchBuilder::new(1_000)
            .compression(codec)
            .record(Some(b"k1"), Some(b"v1"))
            .record_at(
                1_005,
                None,
                Some(b"v2"),
                &[(b"h", Some(b"x")), (b"n", None)],
            )
            .build();
        write(&bd, &format!("{codec}_small"), &section(codec, &one));
        write(
            &bd,
            &format!("{codec}_multi_block"),
            &section(codec, &many_records(codec)),
        );
        let mut round_trip = vec![codec.id() | 0x80, 0];
        round_trip.extend_from_slice(b"some data to compress and back, some data, some data");
        write(&bd, &format!("{codec}_round_trip"), &round_trip);
    }
    // Raw snappy without xerial framing (librdkafka's and older clients' format) and two
    // concatenated xerial streams.
    let plain = BatchBuilder::new(1_000)
        .record(Some(b"k"), Some(b"raw snappy"))
        .build();
    let mut raw = vec![Compression::Snappy.id(), 0];
    raw.extend_from_slice(
        &snap::raw::Encoder::new()
            .compress_vec(&plain[HEADER_SIZE..])
            .unwrap(),
    );
    write(&bd, "snappy_raw", &raw);
    let xerial = BatchBuilder::new(1_000)
        .compression(Compression::Snappy)
        .record(Some(b"k"), Some(b"v"))
        .build();
    let mut twice = vec![Compression::Snappy.id(), 1];
    twice.extend_from_slice(&xerial[HEADER_SIZE..]);
    twice.extend_from_slice(&xerial[HEADER_SIZE..]);
    write(&bd, "snappy_xerial_concatenated", &twice);
    // Bombs: 4 MiB of zeros, past the target's 1 MiB limit.
    let zeros = vec![0u8; 4 << 20];
    for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let mut bomb = vec![codec.id(), 0];
        bomb.extend_from_slice(&staunch_core::compression::compress(codec, &zeros).unwrap());
        write(&bd, &format!("{codec}_bomb"), &bomb);
    }

    // Known hazard (the vendored kafka-protocol's snappy reader allocates whatever a block
    // claims): snappy lengths claiming 4 GiB, raw and inside xerial framing.
    let lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, b'x'];
    let mut raw_lie = vec![Compression::Snappy.id(), 0];
    raw_lie.extend_from_slice(&lie);
    write(&bd_reg, "snappy_raw_claims_4gib", &raw_lie);
    let mut xerial_lie = vec![Compression::Snappy.id(), 0];
    xerial_lie.extend_from_slice(&xerial[HEADER_SIZE..HEADER_SIZE + 16]);
    xerial_lie.extend_from_slice(&(lie.len() as u32).to_be_bytes());
    xerial_lie.extend_from_slice(&lie);
    write(&bd_reg, "snappy_xerial_block_claims_4gib", &xerial_lie);

    // log_recovery: first byte = flags (bit 0 valid prefix, bit 1 index interval 64,
    // bits 2-4 prefix batches - 1), then the segment's bytes.
    let with = |flags: u8, body: &[u8]| {
        let mut v = vec![flags];
        v.extend_from_slice(body);
        v
    };
    let three = chain(0, &[sample(1_000), small(2_000, 2), small(3_000, 5)]);
    write(&lr, "three_valid", &with(0, &three));
    write(&lr, "three_valid_dense_index", &with(2, &three));
    let mut torn_tail = three.clone();
    torn_tail.truncate(three.len() - 7);
    write(&lr, "torn_tail", &with(0, &torn_tail));
    // Flags 1 = a valid prefix of one 2-record batch (offsets 0..=1): the tail continues at 2.
    let continued = chain(2, &[small(4_000, 3), sample(5_000)]);
    let mut garbage = continued.clone();
    garbage.extend_from_slice(b"\x00\x00\x00\x00\x00\x00\x00\x09\xff\xff\xff\xffgarbage");
    write(&lr, "prefix_then_garbage", &with(1, &garbage));
    let mut bad_crc = three.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x40;
    write(&lr, "bad_crc_last", &with(2, &bad_crc));
    let mut gap = three.clone();
    RecordBatch::set_base_offset(&mut gap[..], 1).unwrap();
    write(&lr, "offset_gap", &with(0, &gap));
    // Many small batches: more than one index entry at the default 4 KiB interval.
    let many: Vec<Vec<u8>> = (0..80)
        .map(|i| small(6_000 + i, 1 + (i as usize % 4)))
        .collect();
    write(&lr, "many_batches", &with(0, &chain(0, &many)));
    write(&lr, "empty", &[]);

    // Known bug: header-only batches of huge record counts make a segment span more than 2^32
    // offsets; the scan truncates relative offsets to u32 and reads then skip batches.
    let mut huge: Vec<Vec<u8>> = (0..3).map(|_| header_only(i32::MAX)).collect();
    huge.extend((0..6).map(|i| small(7_000 + i, 2)));
    write(
        &lr_reg,
        "huge_offsets_dense_index",
        &with(2, &chain(0, &huge)),
    );
    let mut huge: Vec<Vec<u8>> = (0..3).map(|_| header_only(i32::MAX)).collect();
    huge.extend((0..80).map(|i| small(8_000 + i, 2)));
    write(&lr_reg, "huge_offsets", &with(0, &chain(0, &huge)));

    // Known bug: offset arithmetic near i64::MAX / i64::MIN overflows.
    let mut at_max = header_only(2);
    RecordBatch::set_base_offset(&mut at_max, i64::MAX).unwrap();
    write(&bp_reg, "last_offset_overflow_base_i64_max", &at_max);
    let mut next_max = header_only(1);
    RecordBatch::set_base_offset(&mut next_max, i64::MAX).unwrap();
    write(&bp_reg, "next_offset_overflow_base_i64_max", &next_max);
    let mut valid_at_max = sample(1_000);
    RecordBatch::set_base_offset(&mut valid_at_max, i64::MAX - 1).unwrap();
    write(&bp_reg, "valid_batch_base_i64_max_minus_1", &valid_at_max);

    println!("seeds written under {}", root.display());
}
