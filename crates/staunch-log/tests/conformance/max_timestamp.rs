//! ListOffsets -3 from the file log: random batches with tied, negative, `i64::MIN` and
//! out-of-order timestamps in tiny segments with a dense index agree with a plain scan, for
//! every end, also after the index was rebuilt by a reopen; and a lookup reads a few headers
//! and one batch, not the log, also when the end falls inside the last segment.

use proptest::prelude::*;
use staunch_core::batch::Compression;
use staunch_core::{BatchBuilder, Offset};
use staunch_log::{LogConfig, LogStore, TimestampOffset};
use staunch_testkit::{CrashMode, FaultyIo};

/// Tiny segments (about eight batches each) and an index entry every other batch or so.
fn config(index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        max_batch_bytes: 1024,
        index_interval_bytes,
        ..LogConfig::default()
    }
}

fn encode(timestamps: &[i64], gzip: bool) -> Vec<u8> {
    let compression = if gzip {
        Compression::Gzip
    } else {
        Compression::None
    };
    let mut builder = BatchBuilder::new(timestamps[0]).compression(compression);
    for &ts in timestamps {
        builder.push(ts, None, Some(b"value"), []);
    }
    builder.build()
}

/// The answer by a plain scan of `batches` (base offset, record timestamps): the first batch
/// with the largest max timestamp among those ending at or before `end`, and in it the first
/// record with that timestamp.
fn scanned(batches: &[(Offset, Vec<i64>)], end: Offset) -> Option<TimestampOffset> {
    let mut best: Option<(Offset, &Vec<i64>, i64)> = None;
    for (base, timestamps) in batches {
        if base + timestamps.len() as i64 > end {
            break;
        }
        let max = *timestamps.iter().max()?;
        if best.is_none_or(|(_, _, m)| max > m) {
            best = Some((*base, timestamps, max));
        }
    }
    let (base, timestamps, max) = best?;
    let i = timestamps.iter().position(|&ts| ts == max)?;
    Some(TimestampOffset {
        offset: base + i as i64,
        timestamp: max,
    })
}

fn check_every_end(
    log: &dyn LogStore,
    batches: &[(Offset, Vec<i64>)],
) -> Result<(), TestCaseError> {
    let log_end = log.log_end();
    for end in 0..=log_end + 1 {
        prop_assert_eq!(
            log.offset_of_max_timestamp(end).unwrap(),
            scanned(batches, end),
            "end {}",
            end
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn offset_of_max_timestamp_agrees_with_a_scan(
        appended in proptest::collection::vec(
            (
                prop_oneof![
                    8 => proptest::collection::vec(-5i64..40, 1..5),
                    // `i64::MIN` is also the index's "nothing before"; a whole batch of it
                    // (mixed with others, the timestamp deltas would overflow).
                    1 => proptest::collection::vec(Just(i64::MIN), 1..3),
                ],
                any::<bool>(),
            ),
            1..80,
        ),
        index_interval_bytes in 1u32..300,
    ) {
        let io = FaultyIo::new();
        let log = io.open_log(config(index_interval_bytes));
        let mut batches = Vec::new();
        for (timestamps, gzip) in &appended {
            let info = log.append(&mut encode(timestamps, *gzip), 0).unwrap();
            batches.push((info.base_offset, timestamps.clone()));
        }
        check_every_end(&log, &batches)?;
        // A kill -9 leaves the last segment's index to be rebuilt by scanning it.
        let io = io.crash(CrashMode::KeepPageCache);
        drop(log);
        let log = io.open_log(config(index_interval_bytes));
        check_every_end(&log, &batches)?;
        log.close().unwrap();
        drop(log);
        let log = io.open_log(config(index_interval_bytes));
        check_every_end(&log, &batches)?;
    }
}

/// The lookup reads the headers between two index entries and one batch, not the partition
/// (nor the rest of the segment): 200 batches of 1 KiB in four segments, an index entry per
/// batch, cost a few headers and one batch of reads.
#[test]
fn offset_of_max_timestamp_reads_a_few_headers_and_one_batch() {
    let io = FaultyIo::new();
    let log = io.open_log(LogConfig {
        segment_bytes: 64 << 10,
        max_batch_bytes: 4096,
        index_interval_bytes: 1,
        ..LogConfig::default()
    });
    let value = [7u8; 1000];
    let mut largest = None;
    for i in 0..200i64 {
        // Timestamps rise and fall; the largest is in the middle of the log.
        let ts = 1_000 + (i * 37) % 101;
        let mut builder = BatchBuilder::new(ts);
        builder.push(ts, None, Some(&value), []);
        let info = log.append(&mut builder.build(), 0).unwrap();
        if largest.is_none_or(|(_, max)| ts > max) {
            largest = Some((info.base_offset, ts));
        }
    }
    let (offset, timestamp) = largest.unwrap();
    // At the log end every segment is whole; one short of it the last segment is cut by the
    // end (as by a high watermark below the log end) and answers from its index and tail.
    for end in [log.log_end(), log.log_end() - 1] {
        let before = io.bytes_read();
        let found = log.offset_of_max_timestamp(end).unwrap();
        let read = io.bytes_read() - before;
        assert_eq!(
            found,
            Some(TimestampOffset { offset, timestamp }),
            "end {end}"
        );
        assert!(
            read < 2 * 1024,
            "end {end}: read {read} bytes of a {} byte log",
            200 * 1024
        );
    }
}
