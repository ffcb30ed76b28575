//! The retry ledger: attempt counts of records still being retried, kept in the committed
//! offset's metadata string so a restart or rebalance continues the count.
//!
//! Format (version 1): `staunch-retry/1` followed by one `;offset:attempts:first_ms:last_ms`
//! per record, e.g. `staunch-retry/1;42:3:1700000000000:1700000000500`. Only entries at or
//! after the committed offset are kept (earlier records are finished). A string that does not
//! parse (another client's metadata, a newer version) reads as an empty ledger: the count then
//! starts over, which may retry a record more often but never loses it.

use std::collections::BTreeMap;

use staunch_core::Offset;

const TAG: &str = "staunch-retry/1";

/// What is known about one failing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryEntry {
    /// Deliveries that failed so far.
    pub attempts: u32,
    /// When the first delivery failed (ms since the epoch).
    pub first_failure_ms: i64,
    /// When the last delivery failed (ms since the epoch).
    pub last_failure_ms: i64,
}

/// Attempt counts by offset for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryLedger {
    entries: BTreeMap<Offset, RetryEntry>,
}

impl RetryLedger {
    /// Reads a committed metadata string; anything unreadable is an empty ledger.
    pub fn decode(metadata: &str) -> Self {
        let mut ledger = RetryLedger::default();
        let mut parts = metadata.split(';');
        if parts.next() != Some(TAG) {
            return ledger;
        }
        for part in parts {
            let fields: Vec<&str> = part.split(':').collect();
            let [offset, attempts, first, last] = fields.as_slice() else {
                return RetryLedger::default();
            };
            let (Ok(offset), Ok(attempts), Ok(first), Ok(last)) = (
                offset.parse::<i64>(),
                attempts.parse::<u32>(),
                first.parse::<i64>(),
                last.parse::<i64>(),
            ) else {
                return RetryLedger::default();
            };
            ledger.entries.insert(
                offset,
                RetryEntry {
                    attempts,
                    first_failure_ms: first,
                    last_failure_ms: last,
                },
            );
        }
        ledger
    }

    /// The metadata string to commit: empty when nothing is being retried.
    pub fn encode(&self) -> String {
        if self.entries.is_empty() {
            return String::new();
        }
        let mut out = String::from(TAG);
        for (offset, e) in &self.entries {
            out.push_str(&format!(
                ";{offset}:{}:{}:{}",
                e.attempts, e.first_failure_ms, e.last_failure_ms
            ));
        }
        out
    }

    /// The entry of the record at `offset`, if it failed before.
    pub fn get(&self, offset: Offset) -> Option<RetryEntry> {
        self.entries.get(&offset).copied()
    }

    /// Records a failure of the record at `offset`.
    pub fn set(&mut self, offset: Offset, entry: RetryEntry) {
        self.entries.insert(offset, entry);
    }

    /// Forgets the record at `offset` (it succeeded or was forwarded).
    pub fn remove(&mut self, offset: Offset) {
        self.entries.remove(&offset);
    }

    /// Forgets every record below `offset` (they are finished).
    pub fn prune_below(&mut self, offset: Offset) {
        self.entries = self.entries.split_off(&offset);
    }

    /// The lowest offset with an entry.
    pub fn lowest(&self) -> Option<Offset> {
        self.entries.keys().next().copied()
    }

    /// How many records are being retried.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record is being retried.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_foreign_metadata() {
        let mut ledger = RetryLedger::default();
        assert_eq!(ledger.encode(), "");
        let e = RetryEntry {
            attempts: 3,
            first_failure_ms: 10,
            last_failure_ms: 20,
        };
        ledger.set(42, e);
        ledger.set(7, e);
        let s = ledger.encode();
        assert_eq!(s, "staunch-retry/1;7:3:10:20;42:3:10:20");
        assert_eq!(RetryLedger::decode(&s), ledger);
        ledger.prune_below(8);
        assert_eq!(ledger.get(7), None);
        assert_eq!(ledger.get(42), Some(e));
        for foreign in [
            "",
            "hello",
            "staunch-retry/1;x",
            "staunch-retry/1;1:2:3",
            "staunch-retry/2;1:2:3:4",
        ] {
            assert!(RetryLedger::decode(foreign).is_empty(), "{foreign}");
        }
    }
}
