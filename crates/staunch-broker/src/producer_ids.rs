//! Producer ids handed out by `InitProducerId`: unique for the life of the data directory.
//!
//! Ids are reserved in blocks: before the first id of a block is handed out, the block's end is
//! written durably to `producer-ids`. After a crash the allocator starts at the stored end, so
//! an id is never handed out twice even if the crash lost track of how many were used.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use staunch_core::ProducerId;

use crate::durable_file::write_atomic;

/// How many ids one durable write reserves.
const BLOCK: i64 = 1000;

/// A durable, never-repeating source of producer ids.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    state: Mutex<(ProducerId, ProducerId)>,
}

impl ProducerIdAllocator {
    /// Opens (or creates) the allocator state in `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let path = dir.join("producer-ids");
        let reserved_end = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|e| {
                format!(
                    "{} holds '{}', not a number: {e}",
                    path.display(),
                    text.trim()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new((reserved_end, reserved_end)),
        })
    }

    /// Returns a producer id never returned before by this data directory. Durable: the id is
    /// covered by a reservation on disk before it is returned.
    pub fn next(&self) -> Result<ProducerId, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, reserved_end) = *state;
        if next >= reserved_end {
            let new_end = next + BLOCK;
            write_atomic(&self.path, new_end.to_string().as_bytes())
                .map_err(|e| format!("reserving producer ids in {}: {e}", self.path.display()))?;
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
    fn ids_are_never_reused_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let first: Vec<_> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        let after = b.next().unwrap();
        assert!(after > 2, "id {after} reused after reopen");
        std::fs::write(dir.path().join("producer-ids"), "garbage").unwrap();
        assert!(ProducerIdAllocator::open(dir.path()).is_err());
    }
}
