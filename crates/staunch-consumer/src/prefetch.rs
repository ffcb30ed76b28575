//! Reading ahead of the handler (what Kafka's consumer does with its fetch buffer): a task
//! that fetches the next records of the partitions being read while the records of the last
//! fetch are being handled, and starts each fetch as soon as the one before it is answered —
//! so the broker reads back to back instead of waiting for the consumer between reads.
//!
//! The task holds at most [`AHEAD`] answers the consumer has not taken, plus the fetch it is
//! sending: with the records being handled, up to three fetches' worth of records
//! (`fetch_max_bytes` each) per consumer.
//!
//! A read-ahead answers a round only for partitions that round wants from **the same offset**
//! the read-ahead asked for: after a failure, a seek, a pause or a rebalance the position
//! moved, and those partitions are fetched afresh (and the read-ahead is started again from
//! where the consumer now reads). Fetched records are only read, never committed, so a
//! read-ahead that is thrown away loses nothing. It never waits for data: a partition without
//! any rides along while others bring records, and once none does the read-ahead ends and
//! the next round fetches afresh, waiting as usual.

use staunch_core::api::{FetchCall, FetchPosition, FetchedRecords};
use staunch_core::batch::batches;
use staunch_core::{ApiError, BrokerApi, Offset, TopicPartition};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The answers of one fetch, per partition.
pub(crate) type FetchAnswers = Vec<(TopicPartition, Result<FetchedRecords, ApiError>)>;

/// Where each partition of a fetch was asked to start.
type Positions = BTreeMap<TopicPartition, Offset>;

/// Answers fetched ahead that the consumer has not taken yet, at most.
const AHEAD: usize = 1;

/// One fetch of the read-ahead: where it asked each partition to start, the answers, and
/// where its next fetch starts (their [`continuation`]).
#[derive(Debug)]
struct Fetched {
    from: Positions,
    answers: FetchAnswers,
    next: Positions,
}

/// The read-ahead of a consumer: a task fetching from the positions it was started at, then
/// on from where each answer leaves its partition, for as long as partitions answer with
/// records. Dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Prefetch {
    fetched: mpsc::Receiver<Fetched>,
    task: JoinHandle<()>,
    /// Where the next answer to be taken asked each partition to start.
    next_from: Positions,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prefetch {
    /// Starts reading ahead with `call` (its `max_wait` is ignored: a read-ahead never waits
    /// for data).
    pub(crate) fn start<B: BrokerApi>(api: &Arc<B>, mut call: FetchCall) -> Self {
        call.max_wait = std::time::Duration::ZERO;
        let next_from = positions(&call.partitions);
        let (sender, fetched) = mpsc::channel(AHEAD);
        let api = Arc::clone(api);
        let partition_max_bytes = call.partitions.first().map_or(0, |p| p.max_bytes);
        let task = tokio::spawn(async move {
            let mut turn = 0;
            while !call.partitions.is_empty() {
                let from = positions(&call.partitions);
                let answers = api.fetch(call.clone()).await;
                let next = continuation(&from, &answers);
                call.partitions = next
                    .iter()
                    .map(|(partition, &offset)| FetchPosition {
                        partition: partition.clone(),
                        offset,
                        max_bytes: partition_max_bytes,
                    })
                    .collect();
                turn += 1;
                take_turns(&mut call.partitions, turn);
                if sender
                    .send(Fetched {
                        from,
                        answers,
                        next,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Prefetch {
            fetched,
            task,
            next_from,
        }
    }

    /// Whether the next answer of the read-ahead asks for `position`'s partition at its
    /// offset.
    pub(crate) fn covers(&self, position: &FetchPosition) -> bool {
        self.next_from.get(&position.partition) == Some(&position.offset)
    }

    /// Whether the read-ahead goes on from exactly `positions` (the consumer would ask for
    /// nothing else next): then it is kept, else started again.
    pub(crate) fn continues_at(&self, positions: &[FetchPosition]) -> bool {
        positions.len() == self.next_from.len() && positions.iter().all(|p| self.covers(p))
    }

    /// Takes the next answer (waiting for it) and returns those of the partitions in
    /// `wanted` it covers — if at least one of them holds records. If none does, returns
    /// nothing: those partitions are left to a fresh fetch, which may wait for data where a
    /// read-ahead does not.
    pub(crate) async fn answers_for(&mut self, wanted: &[FetchPosition]) -> FetchAnswers {
        let Some(Fetched {
            from,
            answers,
            next,
        }) = self.fetched.recv().await
        else {
            // The read-ahead ended (no partition answered with records).
            self.next_from.clear();
            return Vec::new();
        };
        self.next_from = next;
        let covered: FetchAnswers = answers
            .into_iter()
            .filter(|(tp, _)| {
                wanted
                    .iter()
                    .any(|w| &w.partition == tp && from.get(tp) == Some(&w.offset))
            })
            .collect();
        if covered.iter().any(|(_, answer)| has_records(answer)) {
            covered
        } else {
            Vec::new()
        }
    }
}

/// Where the consumer reads next after this round's `answers` to a fetch of `wanted`: the
/// read-ahead it wants (see [`continuation`]).
pub(crate) fn next_positions(
    wanted: &[FetchPosition],
    answers: &FetchAnswers,
) -> Vec<FetchPosition> {
    let from: Positions = positions(wanted);
    continuation(&from, answers)
        .into_iter()
        .filter_map(|(partition, offset)| {
            let max_bytes = wanted.iter().find(|w| w.partition == partition)?.max_bytes;
            Some(FetchPosition {
                partition,
                offset,
                max_bytes,
            })
        })
        .collect()
}

/// Rotates `partitions` by `turn`, so that each partition in turn comes first in a fetch: the
/// broker reads them in order and only the first with data may exceed its share of
/// `max_bytes` (Kafka's rule), so a partition whose next batch is larger than its
/// `partition_max_bytes` is read only when it comes first — with a fixed order it would wait
/// for the partitions before it to run dry (Kafka's consumer rotates the same way).
pub(crate) fn take_turns(partitions: &mut [FetchPosition], turn: usize) {
    if !partitions.is_empty() {
        let by = turn % partitions.len();
        partitions.rotate_left(by);
    }
}

fn has_records(answer: &Result<FetchedRecords, ApiError>) -> bool {
    matches!(answer, Ok(f) if !f.records.is_empty())
}

fn positions(partitions: &[FetchPosition]) -> Positions {
    partitions
        .iter()
        .map(|p| (p.partition.clone(), p.offset))
        .collect()
}

/// Where the read-ahead goes on after `answers` to a fetch from `from`: if any partition
/// answered with records, every partition that answered without an error — from past its
/// records, or where it was for one that had none (it rides along at no cost, so the
/// read-ahead need not be started again when its records come) — else nowhere: the
/// read-ahead ends rather than ask again and again for data that is not there.
fn continuation(from: &Positions, answers: &FetchAnswers) -> Positions {
    if !answers.iter().any(|(_, answer)| has_records(answer)) {
        return Positions::new();
    }
    answers
        .iter()
        .filter_map(|(tp, answer)| {
            let fetched = answer.as_ref().ok()?;
            let from = *from.get(tp)?;
            Some((tp.clone(), next_offset(from, fetched)))
        })
        .collect()
}

/// Where a partition is read next once every record of `fetched`, asked for from `from`, has
/// been handled: past the last whole batch, or `from` if there was none.
fn next_offset(from: Offset, fetched: &FetchedRecords) -> Offset {
    batches(&fetched.records)
        .map_while(Result::ok)
        .last()
        .map_or(from, |b| b.next_offset().max(from))
}
