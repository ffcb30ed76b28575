//! The produce path: writing each partition's records in order, then acknowledging them once
//! they are as durable as the topic's flush policy promises ([`ProduceInFlight`]).

use staunch_core::ErrorCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Broker, offline_reason};
use crate::partition::Appended;
use crate::types::*;

impl Broker {
    /// Appends each partition's records. With `acks` 1 or -1 each result is returned once the
    /// records are as durable as the topic's flush policy promises (after fdatasync under
    /// `always`, the default); with `acks` 0 the caller sends no answer but the records are still
    /// appended. Retried duplicates from idempotent producers get their original offsets.
    ///
    /// The same as [`write_produce`](Self::write_produce) followed by
    /// [`ProduceInFlight::durable`].
    pub async fn produce(
        &self,
        acks: i16,
        partitions: Vec<ProducePartition>,
    ) -> Vec<ProduceResult> {
        self.write_produce(acks, partitions).await.durable().await
    }

    /// The in-order half of [`produce`](Self::produce), for a connection that pipelines
    /// requests: validates and writes every partition's records, which fixes their offsets and
    /// their order relative to later writes. Nothing is acknowledged yet: the returned
    /// [`ProduceInFlight`] resolves to the results once the records are durable. Writing the next
    /// request while earlier ones wait lets one group fsync cover several requests.
    pub async fn write_produce(
        &self,
        acks: i16,
        partitions: Vec<ProducePartition>,
    ) -> ProduceInFlight {
        let mut results = Vec::with_capacity(partitions.len());
        let mut writes = Vec::new();
        for p in partitions {
            let fail = |error: ErrorCode, message: Option<String>| {
                ProduceResult::failed(p.topic.clone(), p.partition, error, message)
            };
            if !matches!(acks, -1..=1) {
                results.push(Some(fail(ErrorCode::InvalidRequiredAcks, None)));
                continue;
            }
            let topic = match self.topic_or_create(&p.topic).await {
                Ok(topic) => topic,
                Err(code) => {
                    results.push(Some(fail(code, None)));
                    continue;
                }
            };
            let partition = match topic.partition(p.partition) {
                Ok(partition) => partition,
                Err(code) => {
                    results.push(Some(fail(code, offline_reason(&topic, p.partition))));
                    continue;
                }
            };
            let min_isr = topic.config.min_insync_replicas(&self.inner.config);
            if acks == -1 && min_isr > 1 {
                results.push(Some(fail(
                    ErrorCode::NotEnoughReplicas,
                    Some(format!(
                        "topic requires {min_isr} in-sync replicas; this single node has 1"
                    )),
                )));
                continue;
            }
            let index = results.len();
            results.push(None);
            let mut records = p.records;
            // One blocking task writes (reporting back at once, so the connection can go on
            // to its next request) and then waits for durability: one thread hop each way.
            let (written_tx, written) = oneshot::channel();
            let broker = self.clone();
            let task = tokio::task::spawn_blocking(move || {
                let pending = match partition.write(&mut records) {
                    Ok(pending) => pending,
                    Err(error) => {
                        let _ = written_tx.send(Err(error));
                        return Err(error);
                    }
                };
                let _ = written_tx.send(Ok(()));
                let acknowledged = partition.wait(pending);
                if acknowledged.is_ok() {
                    // Wake long-polling fetches: the high watermark moved.
                    broker.inner.data_version.send_modify(|v| *v += 1);
                }
                acknowledged
            });
            writes.push((index, p.topic, p.partition, written, task));
        }
        let mut pending = Vec::with_capacity(writes.len());
        for (index, topic, partition_index, written, task) in writes {
            match written.await.unwrap_or(Err(ErrorCode::UnknownServerError)) {
                Ok(()) => pending.push((index, topic, partition_index, task)),
                Err(error) => {
                    results[index] =
                        Some(ProduceResult::failed(topic, partition_index, error, None));
                }
            }
        }
        ProduceInFlight { results, pending }
    }

    /// [`write_produce`](Self::write_produce) for in-process callers: calls are written in the
    /// order they are first polled (FIFO), as a connection orders its requests.
    pub(crate) async fn write_produce_in_order(
        &self,
        acks: i16,
        partitions: Vec<ProducePartition>,
    ) -> ProduceInFlight {
        let _turn = self.inner.in_process_writes.lock().await;
        self.write_produce(acks, partitions).await
    }
}

/// The blocking task that waits for one partition's written records to become durable.
type DurableWait = JoinHandle<Result<Appended, ErrorCode>>;

/// A produce request whose records are written, in order, but not yet acknowledged (from
/// [`Broker::write_produce`]).
#[derive(Debug)]
#[must_use = "written records are acknowledged only through ProduceInFlight::durable"]
pub struct ProduceInFlight {
    /// One slot per requested partition, in request order; `None` for those still waiting.
    results: Vec<Option<ProduceResult>>,
    /// Written partitions: their slot, name, index, and the task waiting for durability (it
    /// runs whether or not this is polled, and raises the high watermark when it succeeds).
    pending: Vec<(usize, String, i32, DurableWait)>,
}

impl ProduceInFlight {
    /// Whether some partition was refused already when the records were written (unknown
    /// topic, corrupt batch, too large…), before any durability wait.
    pub fn refused_any(&self) -> bool {
        self.results
            .iter()
            .flatten()
            .any(|r| r.error != ErrorCode::None)
    }

    /// Waits until every written partition's records are as durable as its flush policy
    /// promises (their high watermarks are raised by then) and returns one result per requested
    /// partition, in request order. A partition whose log failed while waiting gets
    /// KAFKA_STORAGE_ERROR: its records are not acknowledged.
    pub async fn durable(self) -> Vec<ProduceResult> {
        let ProduceInFlight {
            mut results,
            pending,
        } = self;
        for (index, topic, partition_index, task) in pending {
            let waited = task.await.unwrap_or(Err(ErrorCode::UnknownServerError));
            results[index] = Some(match waited {
                Ok(appended) => ProduceResult {
                    topic,
                    partition: partition_index,
                    error: ErrorCode::None,
                    error_message: None,
                    base_offset: appended.base_offset,
                    log_append_time_ms: appended.log_append_time_ms,
                    log_start_offset: appended.log_start_offset,
                },
                Err(error) => ProduceResult::failed(topic, partition_index, error, None),
            });
        }
        results.into_iter().flatten().collect()
    }
}
