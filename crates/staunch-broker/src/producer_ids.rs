//! Producer ids handed out by `InitProducerId`: unique for the life of the data directory.
//!
//! Ids are reserved in blocks: before the first id of a block is handed out, the block's end is
//! written durably to `producer-ids`. After a crash the allocator starts at the stored end, so
//! an id is never handed out twice even if the crash lost track of how many were used.

use std::sync::{Arc, Mutex};

use staunch_core::ProducerId;
use staunch_log::{SegmentIo, read_file, replace_file};

/// The file holding the end of the reserved block, in the broker's root directory.
const FILE: &str = "producer-ids";

/// How many ids one durable write reserves.
const BLOCK: i64 = 1000;

/// A durable, never-repeating source of producer ids.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    dir: Arc<dyn SegmentIo>,
    state: Mutex<(ProducerId, ProducerId)>,
}

impl ProducerIdAllocator {
    /// Opens (or creates) the allocator state in `dir`.
    pub fn open(dir: Arc<dyn SegmentIo>) -> Result<Self, String> {
        let reserved_end = match read_file(&*dir, FILE) {
            Ok(Some(bytes)) => {
                let text = String::from_utf8_lossy(&bytes);
                let end = text
                    .trim()
                    .parse::<i64>()
                    .map_err(|e| format!("{FILE} holds '{}', not a number: {e}", text.trim()))?;
                // Producer ids are never negative (-1 means "none" on the wire): a negative
                // reservation is damage, not a place to hand ids out from.
                if end < 0 {
                    return Err(format!("{FILE} holds {end}, a negative producer id"));
                }
                end
            }
            Ok(None) => 0,
            Err(e) => return Err(format!("reading {FILE}: {e}")),
        };
        Ok(ProducerIdAllocator {
            dir,
            state: Mutex::new((reserved_end, reserved_end)),
        })
    }

    /// Returns a producer id never returned before by this data directory. Durable: the id is
    /// covered by a reservation on disk before it is returned.
    pub fn next(&self) -> Result<ProducerId, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, reserved_end) = *state;
        if next >= reserved_end {
            // Only a damaged file puts the reservation this close to i64::MAX.
            let new_end = next
                .checked_add(BLOCK)
                .ok_or_else(|| format!("producer ids are exhausted ({FILE} holds {next})"))?;
            replace_file(&*self.dir, FILE, new_end.to_string().as_bytes())
                .map_err(|e| format!("reserving producer ids in {FILE}: {e}"))?;
            state.1 = new_end;
        }
        state.0 = next + 1;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_reopen_or_a_power_cut() {
        let disk = staunch_testkit::FaultyIo::new();
        let a = ProducerIdAllocator::open(Arc::new(disk.clone())).unwrap();
        let first: Vec<_> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        // Only what was made durable survives: the reservation must have been.
        let after_cut = disk.crash(staunch_testkit::CrashMode::DropUnsynced);
        let b = ProducerIdAllocator::open(Arc::new(after_cut.clone())).unwrap();
        let after = b.next().unwrap();
        assert!(after > 2, "id {after} reused after a power cut");
        after_cut.put_file(FILE, b"garbage");
        assert!(ProducerIdAllocator::open(Arc::new(after_cut)).is_err());
    }

    /// A damaged reservation never hands out a negative id, nor panics (or wraps) near
    /// `i64::MAX` (the `producer_ids` fuzz target checks both).
    #[test]
    fn a_negative_or_exhausted_reservation_is_refused() {
        let disk = staunch_testkit::FaultyIo::new();
        disk.put_file(FILE, b"-1000");
        assert!(ProducerIdAllocator::open(Arc::new(disk.clone())).is_err());
        disk.put_file(FILE, i64::MAX.to_string().as_bytes());
        let a = ProducerIdAllocator::open(Arc::new(disk.clone())).unwrap();
        assert!(a.next().is_err());
        disk.put_file(FILE, (i64::MAX - BLOCK).to_string().as_bytes());
        let a = ProducerIdAllocator::open(Arc::new(disk)).unwrap();
        let ids: Vec<_> = (0..BLOCK).map(|_| a.next().unwrap()).collect();
        assert_eq!(ids.last(), Some(&(i64::MAX - 1)));
        assert!(a.next().is_err(), "i64::MAX itself is never handed out");
    }
}
