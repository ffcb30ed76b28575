//! The produce path: writing each partition's records in order, then acknowledging them once
//! they are as durable as the topic's flush policy promises ([`ProduceInFlight`]).
//!
//! # Failing and hanging disks
//! A partition whose log failed (a failed write or fsync, or an fsync that ran past the log's
//! `sync_timeout`) refuses records with KAFKA_STORAGE_ERROR before any blocking thread is
//! used, and every produce waiting for it gets the same: never success. A full disk refuses
//! records with KAFKA_STORAGE_ERROR and a message saying so, until space is freed. The thread
//! that called a hung fsync stays stuck in the kernel, so the broker bounds its own waits
//! ([`Partition::durable_wait_bound`]): a produce whose write or durability wait has not
//! finished by then is answered KAFKA_STORAGE_ERROR if the log has failed meanwhile, else
//! REQUEST_TIMED_OUT — not acknowledged either way (the records may still be stored; a retry
//! may store them twice, which an idempotent producer's sequence numbers prevent).

use std::sync::Arc;

use staunch_core::ErrorCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Broker, offline_reason};
use crate::partition::{AppendError, Appended, Partition};
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
        let mut writes: Vec<Written> = Vec::new();
        let mut pending = Vec::with_capacity(partitions.len());
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
            // A failed (or hung, past its timeout) log refuses at once: no blocking thread
            // queues behind a stuck fsync.
            if let Err(refused) = partition.check_health() {
                results.push(Some(fail(refused.code, refused.message)));
                continue;
            }
            // Two batches for one partition in one call (possible in process, not on the wire)
            // are written in the call's order: the earlier ones settle first.
            if writes
                .iter()
                .any(|w| w.waiting.topic == p.topic && w.waiting.partition_index == p.partition)
            {
                settle_writes(std::mem::take(&mut writes), &mut results, &mut pending).await;
            }
            let index = results.len();
            results.push(None);
            let deadline = Instant::now() + partition.durable_wait_bound();
            // A thread for the write and the fsync wait, among `io_threads`.
            let permit = match tokio::time::timeout_at(
                deadline,
                self.inner.io_permits.clone().acquire_owned(),
            )
            .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => {
                    results[index] = Some(fail(ErrorCode::UnknownServerError, None));
                    continue;
                }
                Err(_) => {
                    let refused = timed_out(&partition, "written");
                    results[index] = Some(fail(refused.code, refused.message));
                    continue;
                }
            };
            let mut records = p.records;
            // One blocking task writes (reporting back at once, so the connection can go on
            // to its next request) and then waits for durability: one thread hop each way.
            let (written_tx, written) = oneshot::channel();
            let broker = self.clone();
            let writer = partition.clone();
            let task = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let partition = writer;
                let _span = partition.span().enter();
                let pending = match partition.write(&mut records) {
                    Ok(pending) => pending,
                    Err(error) => {
                        let _ = written_tx.send(Err(error.clone()));
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
            writes.push(Written {
                waiting: Waiting {
                    index,
                    topic: p.topic,
                    partition_index: p.partition,
                    partition,
                    deadline,
                    task,
                },
                written,
            });
        }
        settle_writes(writes, &mut results, &mut pending).await;
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

/// Waits until each of `writes` is written (or has failed, or ran past its deadline): a written
/// one moves to `pending` to wait for durability, a failed one gets its result.
async fn settle_writes(
    writes: Vec<Written>,
    results: &mut [Option<ProduceResult>],
    pending: &mut Vec<Waiting>,
) {
    for Written { waiting, written } in writes {
        // Bounded: a write can wait for the log's state lock, which a roll's hung fsync
        // holds.
        let outcome = match tokio::time::timeout_at(waiting.deadline, written).await {
            Ok(written) => written.unwrap_or_else(|_| Err(ErrorCode::UnknownServerError.into())),
            Err(_) => Err(timed_out(&waiting.partition, "written")),
        };
        match outcome {
            Ok(()) => pending.push(waiting),
            Err(error) => {
                results[waiting.index] = Some(ProduceResult::failed(
                    waiting.topic,
                    waiting.partition_index,
                    error.code,
                    error.message,
                ));
            }
        }
    }
}

/// The blocking task that waits for one partition's written records to become durable.
type DurableWait = JoinHandle<Result<Appended, AppendError>>;

/// One partition's records handed to a blocking task, not yet known to be written: once
/// `written` says so, `waiting` waits for their durability.
struct Written {
    waiting: Waiting,
    written: oneshot::Receiver<Result<(), AppendError>>,
}

/// One partition's written records waiting to become durable.
#[derive(Debug)]
struct Waiting {
    /// The slot of the result.
    index: usize,
    topic: String,
    partition_index: i32,
    partition: Arc<Partition>,
    /// When the broker stops waiting (the task goes on, and may still raise the high
    /// watermark).
    deadline: Instant,
    /// Runs whether or not this is polled, and raises the high watermark when it succeeds.
    task: DurableWait,
}

/// The answer for records whose write or durability wait (`what`) did not finish in time:
/// KAFKA_STORAGE_ERROR if the log has failed by now — which a hung fsync past its
/// `sync_timeout` does here, if no waiter noticed it first — else REQUEST_TIMED_OUT.
fn timed_out(partition: &Partition, what: &str) -> AppendError {
    if let Err(failed) = partition.check_health() {
        return failed;
    }
    let bound = partition.durable_wait_bound();
    partition.span().in_scope(|| {
        tracing::warn!(
            ?bound,
            "produce not {what} in time; answered REQUEST_TIMED_OUT"
        )
    });
    AppendError {
        code: ErrorCode::RequestTimedOut,
        message: Some(format!(
            "the records were not {what} within {bound:?}; they are not acknowledged (they may \
             still be stored)"
        )),
    }
}
/// A produce request whose records are written, in order, but not yet acknowledged (from
/// [`Broker::write_produce`]).
#[derive(Debug)]
#[must_use = "written records are acknowledged only through ProduceInFlight::durable"]
pub struct ProduceInFlight {
    /// One slot per requested partition, in request order; `None` for those still waiting.
    results: Vec<Option<ProduceResult>>,
    /// Written partitions waiting for durability.
    pending: Vec<Waiting>,
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
    /// KAFKA_STORAGE_ERROR, with the reason in `error_message`: its records are not
    /// acknowledged. The wait is bounded ([`Partition::durable_wait_bound`] from the write):
    /// records not durable by then — their fsync hangs — get KAFKA_STORAGE_ERROR if the log
    /// has failed by then, else REQUEST_TIMED_OUT, and are not acknowledged either.
    pub async fn durable(self) -> Vec<ProduceResult> {
        let ProduceInFlight {
            mut results,
            pending,
        } = self;
        for w in pending {
            let waited = match tokio::time::timeout_at(w.deadline, w.task).await {
                Ok(joined) => joined.unwrap_or_else(|_| Err(ErrorCode::UnknownServerError.into())),
                Err(_) => Err(timed_out(&w.partition, "durable")),
            };
            results[w.index] = Some(match waited {
                Ok(appended) => ProduceResult {
                    topic: w.topic,
                    partition: w.partition_index,
                    error: ErrorCode::None,
                    error_message: None,
                    base_offset: appended.base_offset,
                    log_append_time_ms: appended.log_append_time_ms,
                    log_start_offset: appended.log_start_offset,
                },
                Err(error) => {
                    ProduceResult::failed(w.topic, w.partition_index, error.code, error.message)
                }
            });
        }
        results.into_iter().flatten().collect()
    }
}
