//! Idempotent-producer state of one partition: for each producer id, its epoch and the last
//! five batches' sequence ranges and offsets, so a retried batch gets its original offset back
//! and a gap is refused.
//!
//! The rules are Kafka's (`ProducerStateManager`): a newer epoch must start at sequence 0, an
//! older epoch is fenced, a batch that repeats one of the last five is a duplicate, anything else
//! must continue exactly where the last batch ended. The state survives restarts: on open it is
//! loaded from the newest valid snapshot (`producer_snapshot`) and brought up to date by
//! [`ProducerTable::observe`] of the batches the log holds after it.

use std::collections::{HashMap, VecDeque};

use staunch_core::{ErrorCode, Offset, ProducerEpoch, ProducerId, RecordBatch};

/// How many recent batches per producer are remembered, as Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence.
pub const RETAINED_BATCHES: usize = 5;

/// A batch's producer fields and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeq {
    /// First sequence number.
    pub first_seq: i32,
    /// Last sequence number (wraps at `i32::MAX` to 0, as Kafka's).
    pub last_seq: i32,
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// Broker append time of the batch.
    pub append_time_ms: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: ProducerEpoch,
    batches: VecDeque<BatchSeq>,
    /// A batch that passed the check and is being appended; later batches chain after it.
    pending: Option<(i32, i32)>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Append it; call [`ProducerTable::complete`] or [`ProducerTable::abort`] afterwards.
    Append,
    /// A retry of a batch already stored: answer with its original placement.
    Duplicate(BatchSeq),
    /// Refuse it with this error.
    Reject(ErrorCode),
}

/// The producer states of one partition.
#[derive(Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<ProducerId, ProducerEntry>,
}

/// The sequence of a batch's last record (sequences wrap from `i32::MAX` to 0).
pub(crate) fn last_seq_of(first_seq: i32, record_count: i32) -> i32 {
    // Sequences wrap from i32::MAX to 0.
    let last = i64::from(first_seq) + i64::from(record_count) - 1;
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerTable {
    /// Checks a batch from an idempotent producer (`producer_id >= 0`) before it is appended.
    pub fn check(&mut self, batch: &RecordBatch<'_>) -> SeqCheck {
        let id = batch.producer_id();
        let epoch = batch.producer_epoch();
        let first_seq = batch.base_sequence();
        let last_seq = last_seq_of(first_seq, batch.record_count());
        let entry = self.producers.entry(id).or_default();
        let known = !entry.batches.is_empty() || entry.pending.is_some();
        if known && epoch < entry.epoch {
            return SeqCheck::Reject(ErrorCode::InvalidProducerEpoch);
        }
        if known && epoch > entry.epoch {
            if first_seq != 0 {
                return SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber);
            }
            if entry.pending.is_some() {
                // The old epoch's batch is still being written; let the producer retry.
                return SeqCheck::Reject(ErrorCode::RequestTimedOut);
            }
            entry.batches.clear();
        }
        if known && epoch == entry.epoch {
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            {
                return SeqCheck::Duplicate(*dup);
            }
            if entry.pending == Some((first_seq, last_seq)) {
                // The same batch is being appended right now; the retry will find it done.
                return SeqCheck::Reject(ErrorCode::RequestTimedOut);
            }
            let last = entry
                .pending
                .map(|(_, last)| last)
                .or(entry.batches.back().map(|b| b.last_seq));
            if let Some(last) = last
                && first_seq != next_seq(last)
            {
                return SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber);
            }
            if entry.pending.is_some() {
                // One append per producer at a time keeps the chain simple; clients keep
                // batches for one partition in order on one connection anyway.
                return SeqCheck::Reject(ErrorCode::RequestTimedOut);
            }
        }
        entry.epoch = epoch;
        entry.pending = Some((first_seq, last_seq));
        SeqCheck::Append
    }

    /// Records where a checked batch landed.
    pub fn complete(&mut self, batch_producer: (ProducerId, ProducerEpoch), placed: BatchSeq) {
        let entry = self.producers.entry(batch_producer.0).or_default();
        entry.pending = None;
        entry.epoch = batch_producer.1;
        entry.batches.push_back(placed);
        while entry.batches.len() > RETAINED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Forgets a checked batch whose append failed, so a retry is accepted.
    pub fn abort(&mut self, producer_id: ProducerId) {
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            entry.pending = None;
            if entry.batches.is_empty() {
                self.producers.remove(&producer_id);
            }
        }
    }

    /// Replays a stored batch (at open), keeping the newest state per producer.
    pub fn observe(&mut self, batch: &RecordBatch<'_>, append_time_ms: i64) {
        let id = batch.producer_id();
        if id < 0 {
            return;
        }
        let epoch = batch.producer_epoch();
        let entry = self.producers.entry(id).or_default();
        if epoch > entry.epoch || entry.batches.is_empty() {
            if epoch != entry.epoch {
                entry.batches.clear();
            }
            entry.epoch = epoch;
        } else if epoch < entry.epoch {
            return;
        }
        let first_seq = batch.base_sequence();
        entry.batches.push_back(BatchSeq {
            first_seq,
            last_seq: last_seq_of(first_seq, batch.record_count()),
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            append_time_ms,
        });
        while entry.batches.len() > RETAINED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Every producer's id, epoch and remembered batches (oldest first), in no particular
    /// order: what a snapshot stores. Batches being appended right now are not included.
    pub fn producers(
        &self,
    ) -> impl Iterator<Item = (ProducerId, ProducerEpoch, &VecDeque<BatchSeq>)> {
        self.producers
            .iter()
            .filter(|(_, e)| !e.batches.is_empty())
            .map(|(id, e)| (*id, e.epoch, &e.batches))
    }

    /// Sets a producer's state as a snapshot stored it: its epoch and its last batches,
    /// oldest first (only the newest [`RETAINED_BATCHES`] are kept).
    pub fn restore(&mut self, id: ProducerId, epoch: ProducerEpoch, batches: Vec<BatchSeq>) {
        let mut batches = VecDeque::from(batches);
        while batches.len() > RETAINED_BATCHES {
            batches.pop_front();
        }
        self.producers.insert(
            id,
            ProducerEntry {
                epoch,
                batches,
                pending: None,
            },
        );
    }

    /// Number of producers with state.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer has state.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staunch_core::BatchBuilder;

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(0).producer(pid, epoch, seq);
        for _ in 0..n {
            b = b.record(None, Some(b"v"));
        }
        b.build()
    }

    fn append(table: &mut ProducerTable, bytes: &[u8], base: Offset) -> SeqCheck {
        let b = RecordBatch::parse(bytes).unwrap();
        let verdict = table.check(&b);
        if verdict == SeqCheck::Append {
            let last_seq = last_seq_of(b.base_sequence(), b.record_count());
            table.complete(
                (b.producer_id(), b.producer_epoch()),
                BatchSeq {
                    first_seq: b.base_sequence(),
                    last_seq,
                    base_offset: base,
                    last_offset: base + i64::from(b.record_count()) - 1,
                    append_time_ms: 0,
                },
            );
        }
        verdict
    }

    #[test]
    fn duplicates_get_their_offsets_and_gaps_are_refused() {
        let mut t = ProducerTable::default();
        assert_eq!(append(&mut t, &batch(7, 0, 0, 3), 0), SeqCheck::Append);
        assert_eq!(append(&mut t, &batch(7, 0, 3, 2), 3), SeqCheck::Append);
        match append(&mut t, &batch(7, 0, 0, 3), 99) {
            SeqCheck::Duplicate(b) => assert_eq!((b.base_offset, b.last_offset), (0, 2)),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(
            append(&mut t, &batch(7, 0, 9, 1), 5),
            SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(append(&mut t, &batch(7, 0, 5, 1), 5), SeqCheck::Append);
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut t = ProducerTable::default();
        assert_eq!(append(&mut t, &batch(1, 2, 0, 1), 0), SeqCheck::Append);
        assert_eq!(
            append(&mut t, &batch(1, 1, 1, 1), 1),
            SeqCheck::Reject(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            append(&mut t, &batch(1, 3, 5, 1), 1),
            SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(append(&mut t, &batch(1, 3, 0, 1), 1), SeqCheck::Append);
    }

    #[test]
    fn an_aborted_append_can_be_retried_and_only_five_batches_are_kept() {
        let mut t = ProducerTable::default();
        let b = batch(4, 0, 0, 1);
        let parsed = RecordBatch::parse(&b).unwrap();
        assert_eq!(t.check(&parsed), SeqCheck::Append);
        t.abort(4);
        assert_eq!(append(&mut t, &b, 0), SeqCheck::Append);
        for i in 1..8 {
            assert_eq!(
                append(&mut t, &batch(4, 0, i, 1), i64::from(i)),
                SeqCheck::Append
            );
        }
        // Sequence 0 fell out of the window of five: no longer a known duplicate.
        assert_eq!(
            append(&mut t, &batch(4, 0, 0, 1), 9),
            SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert!(matches!(
            append(&mut t, &batch(4, 0, 7, 1), 9),
            SeqCheck::Duplicate(_)
        ));
    }

    #[test]
    fn state_is_rebuilt_by_observing_the_log() {
        let mut t = ProducerTable::default();
        let mut bytes = batch(9, 0, 0, 2);
        RecordBatch::set_base_offset(&mut bytes, 10).unwrap();
        t.observe(&RecordBatch::parse(&bytes).unwrap(), 0);
        match t.check(&RecordBatch::parse(&batch(9, 0, 0, 2)).unwrap()) {
            SeqCheck::Duplicate(b) => assert_eq!(b.base_offset, 10),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(
            t.check(&RecordBatch::parse(&batch(9, 0, 2, 1)).unwrap()),
            SeqCheck::Append
        );
    }
}
