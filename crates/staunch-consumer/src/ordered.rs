//! Ordered mode's parking lot: park the *key*, not the partition.
//!
//! When a keyed record fails and will be retried, its key is blocked: later records with the
//! same key are parked in memory behind it, in offset order, while records of every other key
//! keep flowing. When the head finally succeeds (or is dead-lettered), the key's parked records
//! are handled in order. The committed offset never passes the lowest offset still in the lot,
//! so a restart redelivers every unfinished record (and, at-least-once, some finished ones
//! after it). A record that failed before the restart blocks its key again when it comes
//! back, until the back-off since its last failure (kept in the committed metadata) is over.
//!
//! **Policy when full:** the lot holds at most `capacity` records. When a record of a blocked
//! key arrives and the lot is full, the whole partition waits (is not read; the records not
//! handed out are kept in memory) until a blocked key finishes — back-pressure instead of
//! unbounded memory. The same happens while 64 failed records are being retried, as their
//! attempt counts must fit the committed metadata. Records without a key are
//! never parked behind each other: each is its own key.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use staunch_core::Offset;

use crate::handler::ConsumerRecord;

/// What a record is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ParkKey {
    Key(Bytes),
    Unkeyed(Offset),
}

impl ParkKey {
    pub(crate) fn of(record: &ConsumerRecord) -> Self {
        match &record.key {
            Some(k) => ParkKey::Key(k.clone()),
            None => ParkKey::Unkeyed(record.offset),
        }
    }
}

#[derive(Debug)]
struct Blocked {
    records: VecDeque<ConsumerRecord>,
    due_ms: i64,
}

/// The blocked keys of one partition and the records waiting behind them.
#[derive(Debug)]
pub(crate) struct ParkingLot {
    keys: HashMap<ParkKey, Blocked>,
    len: usize,
    capacity: usize,
}

impl ParkingLot {
    pub(crate) fn new(capacity: usize) -> Self {
        ParkingLot {
            keys: HashMap::new(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn is_blocked(&self, key: &ParkKey) -> bool {
        self.keys.contains_key(key)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Blocks `key` with `head` as its failing record (or moves the due time of an already
    /// blocked key whose head is `head`).
    pub(crate) fn block(&mut self, key: ParkKey, mut head: ConsumerRecord, due_ms: i64) {
        head.detach();
        match self.keys.get_mut(&key) {
            Some(b) if b.records.front().map(|r| r.offset) == Some(head.offset) => {
                b.due_ms = due_ms;
                if let Some(front) = b.records.front_mut() {
                    *front = head;
                }
            }
            Some(b) => {
                b.records.push_front(head);
                b.due_ms = due_ms;
                self.len += 1;
            }
            None => {
                self.keys.insert(
                    key,
                    Blocked {
                        records: VecDeque::from([head]),
                        due_ms,
                    },
                );
                self.len += 1;
            }
        }
    }

    /// Parks `record` behind its blocked key.
    pub(crate) fn park(&mut self, key: &ParkKey, mut record: ConsumerRecord) {
        if let Some(b) = self.keys.get_mut(key) {
            record.detach();
            b.records.push_back(record);
            self.len += 1;
        }
    }

    /// The key's head (the record to retry next).
    pub(crate) fn head(&self, key: &ParkKey) -> Option<&ConsumerRecord> {
        self.keys.get(key).and_then(|b| b.records.front())
    }

    /// Removes the key's head (it is finished); unblocks the key when nothing is left.
    /// Returns the next record of the key, which becomes the head, if any.
    pub(crate) fn pop(&mut self, key: &ParkKey) -> Option<&ConsumerRecord> {
        let b = self.keys.get_mut(key)?;
        if b.records.pop_front().is_some() {
            self.len -= 1;
        }
        if b.records.is_empty() {
            self.keys.remove(key);
            return None;
        }
        self.keys.get(key).and_then(|b| b.records.front())
    }

    /// Blocked keys whose head is due at `now_ms`.
    pub(crate) fn due(&self, now_ms: i64) -> Vec<ParkKey> {
        self.keys
            .iter()
            .filter(|(_, b)| b.due_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// When the blocked `key`'s head is due to be retried.
    pub(crate) fn due_ms(&self, key: &ParkKey) -> Option<i64> {
        self.keys.get(key).map(|b| b.due_ms)
    }

    /// The earliest due time of any blocked key.
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.keys.values().map(|b| b.due_ms).min()
    }

    /// The lowest offset not finished in the lot.
    pub(crate) fn lowest(&self) -> Option<Offset> {
        self.keys
            .values()
            .filter_map(|b| b.records.front().map(|r| r.offset))
            .min()
    }
}
