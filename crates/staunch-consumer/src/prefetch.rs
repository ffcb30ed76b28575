//! The next round's fetch, sent while the records of the last one are being handled (what
//! Kafka's consumer does with its fetch buffer): the broker reads the next records while the
//! handler works, instead of after it.
//!
//! A prefetch answers a later round only for partitions that round wants from the **same
//! offset** the prefetch asked for: after a failure, a seek, a pause or a rebalance the
//! position moved, and those partitions are fetched afresh. Fetched records are only read,
//! never committed, so a prefetch that is thrown away loses nothing.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use staunch_core::api::{FetchCall, FetchPosition, FetchedRecords};
use staunch_core::batch::batches;
use staunch_core::{ApiError, BrokerApi, Offset, TopicPartition};

/// The answers of one fetch, per partition.
pub(crate) type FetchAnswers = Vec<(TopicPartition, Result<FetchedRecords, ApiError>)>;

/// The fetch future of a prefetch: owns its broker handle, so it outlives the round.
type FetchFuture = Pin<Box<dyn Future<Output = FetchAnswers> + Send>>;

/// A fetch sent ahead. It is polled once when sent — which starts the broker's work (the
/// embedded broker's read on its blocking pool, a network client's request) without a task of
/// its own, sparing a thread hand-off each way — and then not again until a round waits for
/// it. Dropping it drops the fetch.
pub(crate) struct Prefetch {
    fetch: FetchFuture,
    /// The answer, if the first poll already had it.
    ready: Option<FetchAnswers>,
    /// The offset each partition was asked for.
    from: BTreeMap<TopicPartition, Offset>,
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch")
            .field("from", &self.from)
            .field("ready", &self.ready.is_some())
            .finish_non_exhaustive()
    }
}

impl Prefetch {
    /// Sends `call` and polls it once.
    pub(crate) fn start<B: BrokerApi>(api: &Arc<B>, call: FetchCall) -> Self {
        let from = call
            .partitions
            .iter()
            .map(|p| (p.partition.clone(), p.offset))
            .collect();
        let api = Arc::clone(api);
        let mut fetch: FetchFuture = Box::pin(async move { api.fetch(call).await });
        // Whoever waits for it later polls it again with a waker of its own.
        let mut cx = Context::from_waker(Waker::noop());
        let ready = match fetch.as_mut().poll(&mut cx) {
            Poll::Ready(answers) => Some(answers),
            Poll::Pending => None,
        };
        Prefetch { fetch, ready, from }
    }

    /// Whether this prefetch asked for `position`'s partition at its offset.
    pub(crate) fn covers(&self, position: &FetchPosition) -> bool {
        self.from.get(&position.partition) == Some(&position.offset)
    }

    /// Waits for the answer and returns those of the partitions in `wanted` it covers that
    /// hold records (or an error): a partition that had nothing is left to a fresh fetch,
    /// which may wait for data where a read-ahead does not.
    pub(crate) async fn answers_for(self, wanted: &[FetchPosition]) -> FetchAnswers {
        let Prefetch { fetch, ready, from } = self;
        let answers = match ready {
            Some(answers) => answers,
            None => fetch.await,
        };
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
