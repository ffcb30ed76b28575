//! Idempotence state of one partition: which producer identity its batches carry, the next
//! sequence number, and whether the sequence chain must be restarted.
//!
//! The rules, as the sender applies them:
//!
//! 1. A batch gets its stamp (ordinal, and for an idempotent producer the identity and base
//!    sequence) when it is *first sent*, in queue order, so sequences have no gaps for batches
//!    that expire before leaving. A retry keeps its stamp, so the broker recognizes it as a
//!    duplicate if the first attempt was written, and answers with the original offset.
//! 2. Until the broker has acknowledged one batch under an identity, only one batch of the
//!    partition is in flight: a broker that does not know the producer yet accepts any
//!    sequence, so two racing first batches could be written out of order.
//! 3. After that at most [`crate::ProducerConfig::max_in_flight_per_partition`] (≤ 5) batches
//!    are outstanding, counted from the oldest unacknowledged one: the broker remembers the
//!    last five batches per producer, so any retry is still recognized.
//! 4. When a batch fails retriably it goes back to the queue in ordinal order and nothing new
//!    is sent for the partition until every in-flight batch has answered; then the queued
//!    retries go one at a time, oldest first.
//! 5. `OUT_OF_ORDER_SEQUENCE_NUMBER` / `UNKNOWN_PRODUCER_ID` for a batch that was sent while
//!    an earlier one was unacknowledged is explained by that batch and simply retried. If no
//!    earlier batch explains it, or a sequenced batch failed for good (fatal error, delivery
//!    timeout — a gap the broker would refuse forever), the partition *resets*: once nothing is
//!    in flight it bumps its producer epoch locally (KIP-360, as the Java producer does for an
//!    idempotent producer; a broker takes a newer epoch starting at sequence 0, per partition)
//!    and restamps its unacknowledged batches from sequence 0. Only when the epoch is
//!    exhausted (`i16::MAX`) does it take a new producer id instead. A batch
//!    whose earlier attempt under the old id may have been written can then be written twice;
//!    such records are counted in `possible_duplicates`.
//! 6. Batches recovered from the durable outbox keep the identity and sequence they were
//!    stamped with before the crash, so the broker recognizes those it already wrote
//!    ([`SequenceState::adopt`]). The recovered identity is used for nothing else: before the
//!    partition stamps a new batch, or when it must reset, it waits until nothing is in flight
//!    and takes the producer's own fresh identity. A stamp lost in a power failure therefore
//!    cannot make the broker mistake a new batch for an old one.

use staunch_core::ProducerIdentity;

use crate::accumulator::Stamp;

/// One partition's producer identity and sequence counters.
#[derive(Debug, Default)]
pub(crate) struct SequenceState {
    /// The identity this partition's batches carry (`None`: not yet assigned, or not idempotent).
    identity: Option<ProducerIdentity>,
    next_sequence: i32,
    next_ordinal: u64,
    /// The broker acknowledged a batch under the current identity.
    confirmed: bool,
    /// The sequence chain must restart under a new identity before anything more is sent.
    pub(crate) needs_reset: bool,
    /// The identity was recovered from the outbox (rule 6): only adopted batches use it.
    recovered: bool,
}

impl SequenceState {
    /// The identity in use, if any.
    pub(crate) fn identity(&self) -> Option<ProducerIdentity> {
        self.identity
    }

    /// Whether the broker acknowledged a batch under the current identity (see rule 2).
    pub(crate) fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// The ordinal the next stamped batch gets.
    pub(crate) fn next_ordinal(&self) -> u64 {
        self.next_ordinal
    }

    /// Whether the identity was recovered from the outbox and must be replaced before a new
    /// batch is stamped (rule 6).
    pub(crate) fn recovered(&self) -> bool {
        self.recovered
    }

    /// Starts a new identity (first use, or a reset): sequences restart at 0.
    pub(crate) fn start(&mut self, identity: ProducerIdentity) {
        self.identity = Some(identity);
        self.next_sequence = 0;
        self.confirmed = false;
        self.needs_reset = false;
        self.recovered = false;
    }

    /// The stamp of a batch of `count` records recovered from the outbox, sent before with
    /// `identity` from `base` on (rule 6). The partition's identity becomes `identity`
    /// (unconfirmed) if it was another one.
    pub(crate) fn adopt(&mut self, identity: ProducerIdentity, base: i32, count: i32) -> Stamp {
        if self.identity != Some(identity) || !self.recovered {
            self.identity = Some(identity);
            self.confirmed = false;
            self.needs_reset = false;
            self.recovered = true;
        }
        self.next_sequence = next_sequence(base, count);
        let ordinal = self.next_ordinal;
        self.next_ordinal += 1;
        Stamp {
            ordinal,
            sequence: Some((identity, base)),
        }
    }

    /// Stamps the next batch of `count` records; with `idempotent` it carries the identity
    /// (which must have been started) and the next sequence.
    pub(crate) fn stamp(&mut self, count: i32, idempotent: bool) -> Stamp {
        let ordinal = self.next_ordinal;
        self.next_ordinal += 1;
        let sequence = match (idempotent, self.identity) {
            (true, Some(identity)) => {
                let base = self.next_sequence;
                self.next_sequence = next_sequence(base, count);
                Some((identity, base))
            }
            _ => None,
        };
        Stamp { ordinal, sequence }
    }

    /// The broker acknowledged a batch under the current identity.
    pub(crate) fn acknowledged(&mut self) {
        self.confirmed = true;
    }
}

/// The sequence after a batch of `count` records starting at `base`; sequences wrap from
/// `i32::MAX` to 0, as Kafka's do.
pub(crate) fn next_sequence(base: i32, count: i32) -> i32 {
    let next = i64::from(base) + i64::from(count);
    (next % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_by_record_count_and_wrap() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 5), 3);
        let mut s = SequenceState::default();
        let id = ProducerIdentity { id: 3, epoch: 0 };
        s.start(id);
        assert_eq!(s.stamp(4, true).sequence, Some((id, 0)));
        let second = s.stamp(2, true);
        assert_eq!((second.ordinal, second.sequence), (1, Some((id, 4))));
        assert!(!s.confirmed());
        s.acknowledged();
        assert!(s.confirmed());
        let other = ProducerIdentity { id: 4, epoch: 0 };
        s.start(other);
        assert!(!s.confirmed());
        let third = s.stamp(1, true);
        assert_eq!((third.ordinal, third.sequence), (2, Some((other, 0))));
        assert_eq!(s.stamp(1, false).sequence, None);

        let old = ProducerIdentity { id: 1, epoch: 2 };
        let adopted = s.adopt(old, 10, 3);
        assert_eq!((adopted.ordinal, adopted.sequence), (4, Some((old, 10))));
        assert!(s.recovered() && !s.confirmed());
        assert_eq!(s.adopt(old, 13, 1).sequence, Some((old, 13)));
        s.start(other);
        assert!(!s.recovered());
    }
}
