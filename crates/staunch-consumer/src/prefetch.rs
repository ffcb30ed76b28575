//! The next round's fetch, sent while the records of the last one are being handled (what
//! Kafka's consumer does with its fetch buffer): the broker reads the next records while the
//! handler works, instead of after it.
//!
//! A prefetch answers a later round only for partitions that round wants from the **same
//! offset** the prefetch asked for: after a failure, a seek, a pause or a rebalance the
//! position moved, and those partitions are fetched afresh. Fetched records are only read,
//! never committed, so a prefetch that is thrown away loses nothing.

use staunch_core::api::{FetchCall, FetchPosition, FetchedRecords};
use staunch_core::batch::batches;
use staunch_core::{ApiError, BrokerApi, Offset, TopicPartition};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::eager::{self, Started};

/// The answers of one fetch, per partition.
pub(crate) type FetchAnswers = Vec<(TopicPartition, Result<FetchedRecords, ApiError>)>;

/// A fetch sent ahead, started with [`eager::start`]: the broker's read begins at once, and a
/// fetch not answered on the spot runs in a task of its own. Dropping it aborts that task.
#[derive(Debug)]
pub(crate) struct Prefetch {
    answer: Started<FetchAnswers>,
    /// The offset each partition was asked for.
    from: BTreeMap<TopicPartition, Offset>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Started::Running(task) = &self.answer {
            task.abort();
        }
    }
}

impl Prefetch {
    /// Sends `call`.
    pub(crate) fn start<B: BrokerApi>(api: &Arc<B>, call: FetchCall) -> Self {
        let from = call
            .partitions
            .iter()
            .map(|p| (p.partition.clone(), p.offset))
            .collect();
        let api = Arc::clone(api);
        let answer = eager::start(async move { api.fetch(call).await });
        Prefetch { answer, from }
    }

    /// Whether this prefetch asked for `position`'s partition at its offset.
    pub(crate) fn covers(&self, position: &FetchPosition) -> bool {
        self.from.get(&position.partition) == Some(&position.offset)
    }

    /// Waits for the answer and returns those of the partitions in `wanted` it covers that
    /// hold records (or an error): a partition that had nothing is left to a fresh fetch,
    /// which may wait for data where a read-ahead does not.
    pub(crate) async fn answers_for(mut self, wanted: &[FetchPosition]) -> FetchAnswers {
        let answers = match &mut self.answer {
            Started::Ready(answers) => std::mem::take(answers),
            Started::Running(task) => match task.await {
                Ok(answers) => answers,
                Err(e) => {
                    tracing::debug!(error = %e, "read-ahead task failed; fetching again");
                    Vec::new()
                }
            },
        };
        let from = &self.from;
        answers
            .into_iter()
            .filter(|(_, answer)| !matches!(answer, Ok(f) if f.records.is_empty()))
            .filter(|(tp, _)| {
                wanted
                    .iter()
                    .any(|w| &w.partition == tp && from.get(tp) == Some(&w.offset))
            })
            .collect()
    }
}

/// Where a partition is read next once every record of `fetched`, asked for from `from`, has
/// been handled: past the last whole batch, or `from` if there was none.
pub(crate) fn next_offset(from: Offset, fetched: &FetchedRecords) -> Offset {
    batches(&fetched.records)
        .map_while(Result::ok)
        .last()
        .map_or(from, |b| b.next_offset().max(from))
}
