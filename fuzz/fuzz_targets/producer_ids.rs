//! The producer-id allocator over an arbitrary `producer-ids` file.
//!
//! The input is the file's content, put on an in-memory disk. Checks:
//! - `ProducerIdAllocator::open` never panics, and succeeds exactly when the file holds a
//!   non-negative decimal `i64` (surrounding whitespace allowed);
//! - `next()` never panics; the ids it hands out are non-negative, at or above the stored
//!   reservation and strictly increasing; near `i64::MAX` it fails instead of wrapping;
//! - after a power cut, a reopened allocator hands out an id above every id handed out before.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use staunch_broker::producer_ids::ProducerIdAllocator;
use staunch_testkit::{CrashMode, FaultyIo};

fuzz_target!(|data: &[u8]| {
    let disk = FaultyIo::new();
    disk.put_file("producer-ids", data);
    let expected = String::from_utf8_lossy(data)
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|&n| n >= 0);
    let allocator = match ProducerIdAllocator::open(Arc::new(disk.clone())) {
        Ok(a) => a,
        Err(e) => {
            assert!(
                expected.is_none(),
                "a valid reservation {expected:?} was refused: {e}"
            );
            return;
        }
    };
    let start = expected.unwrap_or_else(|| {
        panic!(
            "opened over {:?}, which is no non-negative number",
            String::from_utf8_lossy(data)
        )
    });
    let mut last = None;
    for _ in 0..3 {
        match allocator.next() {
            Ok(id) => {
                assert!(id >= start, "id {id} below the stored reservation {start}");
                assert!(last.is_none_or(|l| id > l), "id {id} after {last:?}");
                last = Some(id);
            }
            Err(_) => break,
        }
    }
    drop(allocator);
    let after = disk.crash(CrashMode::DropUnsynced);
    let reopened = ProducerIdAllocator::open(Arc::new(after))
        .unwrap_or_else(|e| panic!("reopening after a power cut failed: {e}"));
    if let (Some(last), Ok(id)) = (last, reopened.next()) {
        assert!(
            id > last,
            "id {id} handed out again after a power cut (last {last})"
        );
    }
});
