//! [`Producer`]: the cheap, cloneable handle callers send through.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use staunch_core::BrokerApi;
use staunch_core::batch::HEADER_SIZE;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::accumulator::{Accepted, Completion};
use crate::config::{ConfigError, ProducerConfig};
use crate::error::{ProduceError, SendError, SendResult};
use crate::metrics::{Metrics, ProducerMetrics};
use crate::outbox::{Outbox, OutboxConfig, OutboxError, OutboxStoreError, Pending, Recovered};
use crate::record::{ProducerRecord, RecordMetadata};
use crate::sender::{Command, Replay, Sender, Shared};

/// A producer that never drops a record it accepted: every record handed to `send`,
/// `send_async` or `send_oneway` ends either acknowledged by the broker (with
/// [`ProducerConfig::acks`]) or failed and returned to the caller with its key, value, headers
/// and the last error — never silently lost (oneway records: failures are logged and counted).
///
/// Generic over [`BrokerApi`], so the same producer runs against a remote cluster
/// (`staunch-client`) or an embedded `staunch_broker::Broker`. Cloning is cheap; clones share
/// one sender task, one buffer and one set of counters. Dropping every clone without
/// [`Producer::close`] still delivers what was accepted, in the background.
pub struct Producer<B> {
    inner: Arc<Handle>,
    api: PhantomData<fn() -> B>,
}

#[derive(Debug)]
struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    config: Arc<ProducerConfig>,
    /// The durable outbox, when the producer was opened with one.
    outbox: Option<Outbox>,
}

impl<B> Clone for Producer<B> {
    fn clone(&self) -> Self {
        Producer {
            inner: self.inner.clone(),
            api: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for Producer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("metrics", &self.inner.shared.metrics.snapshot())
            .field("closed", &self.inner.shared.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl<B: BrokerApi> Producer<B> {
    /// Checks `config` and starts the producer's sender task on the current Tokio runtime.
    /// With idempotence on, the task asks the cluster for a producer id at once; records sent
    /// meanwhile wait in their batches.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like `tokio::spawn`.
    pub fn new(api: B, config: ProducerConfig) -> Result<Self, ConfigError> {
        Ok(Self::start(api, config.validate()?, None))
    }

    /// Like [`Producer::new`], with a **durable outbox** in `outbox.dir`: every record is
    /// written to a local log before `send`, `send_async` or `send_oneway` returns, and marked
    /// done once its outcome is final. A producer process killed with -9 (or, under the default
    /// flush policy, a power loss) loses nothing it accepted: the next `with_outbox` on the same
    /// directory sends every record that had no final outcome again, before any new record, and
    /// reports their outcomes through the returned [`OutboxRecovery`].
    ///
    /// With idempotence (the default) delivery across a kill -9 is **exactly once**: every batch
    /// is stamped in the outbox with its producer id, epoch and sequence numbers before it is
    /// sent, and a batch found pending is sent again exactly as stamped, so the broker
    /// recognizes one it already wrote. Records the dead producer had not sent yet go out as
    /// new ones. After a power loss (stamps are not fsynced), or without idempotence, delivery
    /// across the crash is at-least-once: a record acknowledged just before it may be written
    /// twice, never lost. See the `outbox` module for the details and the on-disk format.
    /// Opening reads the outbox directory with blocking file I/O.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like `tokio::spawn`.
    pub fn with_outbox(
        api: B,
        config: ProducerConfig,
        outbox: OutboxConfig,
    ) -> Result<(Self, OutboxRecovery), OpenError> {
        let config = config.validate()?;
        outbox.validate(config.max_request_size)?;
        let (outbox, recovered) = Outbox::open(&outbox)?;
        let producer = Self::start(api, config, Some(outbox));
        let recovery = producer.replay(recovered);
        Ok((producer, recovery))
    }

    fn start(api: B, config: ProducerConfig, outbox: Option<Outbox>) -> Self {
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            metrics: Metrics::default(),
            buffer: Semaphore::new(config.buffer_memory.min(Semaphore::MAX_PERMITS)),
            closed: AtomicBool::new(false),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let journal = outbox.as_ref().map(Outbox::journal);
        let sender = Sender::new(Arc::new(api), config.clone(), shared.clone(), journal);
        let span = tracing::info_span!("staunch_producer", idempotent = config.idempotence);
        tokio::spawn(sender.run(receiver).instrument(span));
        Producer {
            inner: Arc::new(Handle {
                commands,
                shared,
                config,
                outbox,
            }),
            api: PhantomData,
        }
    }
}

/// Why [`Producer::with_outbox`] could not start a producer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenError {
    /// The producer configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The outbox could not be opened or read.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// The records a producer found in its outbox when it opened, sent again before anything
/// else.
#[derive(Debug)]
pub struct OutboxRecovery {
    /// How many records were pending in the outbox.
    pub replayed: usize,
    /// The outcome of each replayed record, in the order they complete: acknowledged, or failed
    /// with the record back. Failures are also logged. Dropping the receiver discards them.
    pub outcomes: mpsc::UnboundedReceiver<SendResult>,
}

impl<B> Producer<B> {
    /// Sends `record` and waits until it is acknowledged: `Ok` with its partition and offset,
    /// or `Err` with the record back and why it failed (see [`ProduceError`]).
    ///
    /// Waits up to [`ProducerConfig::max_block`] for room in the buffer first. Once accepted,
    /// dropping the returned future does **not** withdraw the record: it is still delivered
    /// (and counted), only its outcome goes unread.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata, SendError> {
        let (tx, rx) = oneshot::channel();
        if let Err((record, _, error)) = self.accept(record, Completion::Reply(tx)).await {
            return Err(SendError::unsent(record, error));
        }
        match rx.await {
            Ok(result) => result,
            // Unreachable in practice: every owed outcome is delivered even when the task is
            // torn down (as `Aborted`).
            Err(_) => Err(SendError::unsent(
                ProducerRecord::new(String::new(), Bytes::new()),
                ProduceError::Aborted,
            )),
        }
    }

    /// Sends `record` and calls `callback` exactly once with its outcome — the same result
    /// [`Producer::send`] would return.
    ///
    /// The returned future resolves once the record is accepted (after waiting up to
    /// [`ProducerConfig::max_block`] for buffer room), not when it is acknowledged. If it is
    /// not accepted (buffer full, closed, too large) the callback runs at once, on the caller's
    /// task; otherwise it runs later on the producer's task, so it should be quick and must not
    /// block (hand heavy work to a channel). A panicking callback is caught and logged.
    pub async fn send_async<F>(&self, record: ProducerRecord, callback: F)
    where
        F: FnOnce(SendResult) + Send + 'static,
    {
        let completion = Completion::Callback(Box::new(callback));
        if let Err((record, completion, error)) = self.accept(record, completion).await {
            completion.complete(Err(SendError::unsent(record, error)));
        }
    }

    /// Sends `record` without any delivery result: **explicitly unreliable** from the caller's
    /// point of view (RocketMQ's `sendOneway`). The record is batched, retried and
    /// de-duplicated like any other, but if it finally fails, the failure is only logged and
    /// counted in [`ProducerMetrics::failed`]; nobody gets it back.
    ///
    /// `Err` only when the record was not accepted (buffer full after `max_block`, closed, too
    /// large), with the record back. Use [`Producer::send`] or [`Producer::send_async`] for
    /// records that must not be lost.
    pub async fn send_oneway(&self, record: ProducerRecord) -> Result<(), SendError> {
        self.accept(record, Completion::None)
            .await
            .map_err(|(record, _, error)| SendError::unsent(record, error))
    }

    /// Waits until every record accepted before this call is acknowledged or failed. Records
    /// waiting for their linger time are sent at once. Records sent concurrently after the call
    /// are not waited for.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops: every record accepted before returns its outcome first, and every
    /// later `send` fails at once with [`ProduceError::Closed`] (the record comes back).
    /// Sends waiting for buffer room fail with `Closed` too. Closing twice is harmless.
    pub async fn close(&self) {
        self.inner.shared.closed.store(true, Ordering::Release);
        self.inner.shared.buffer.close();
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Some(outbox) = &self.inner.outbox
            && let Err(error) = outbox.close().await
        {
            tracing::error!(%error, "closing the producer outbox failed; it recovers on the next open");
        }
    }

    /// Bytes the durable outbox holds now (`None` without an outbox): records still in flight,
    /// plus finished ones whose segment is not yet given back.
    pub fn outbox_bytes(&self) -> Option<u64> {
        self.inner.outbox.as_ref().map(Outbox::size_bytes)
    }

    /// Whether [`Producer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::Acquire)
    }

    /// The counters so far (records sent, acknowledged, retried, failed, possible duplicates).
    pub fn metrics(&self) -> ProducerMetrics {
        self.inner.shared.metrics.snapshot()
    }

    /// The configuration in use (validated).
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Hands what the outbox held to the sender task ahead of any new record: stamped batches
    /// to send again exactly as they were, then the other records, oldest first. They take
    /// buffer room while there is some; the excess is carried on top of the limit (it is
    /// already on disk) and new sends wait until it drains.
    fn replay(&self, recovered: Recovered) -> OutboxRecovery {
        let (results, outcomes) = mpsc::unbounded_channel();
        let replayed = recovered.len();
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                stamped_batches = recovered.batches.len(),
                "sending records found in the producer outbox again"
            );
        }
        let deadline = Instant::now() + self.inner.config.delivery_timeout;
        let accept = |pending: Pending| self.accept_replayed(pending, deadline, &results);
        // The sender task was just started and only stops after close.
        for batch in recovered.batches {
            let records = batch.records.into_iter().map(accept).collect();
            let _ = self.inner.commands.send(Command::Replay(Replay {
                partition: batch.partition,
                identity: batch.identity,
                base_sequence: batch.base_sequence,
                records,
            }));
        }
        for pending in recovered.records {
            let _ = self.inner.commands.send(Command::Send(accept(pending)));
        }
        OutboxRecovery { replayed, outcomes }
    }

    /// A record found in the outbox, accepted again with its outcome reported to `results`.
    fn accept_replayed(
        &self,
        pending: Pending,
        deadline: Instant,
        results: &mpsc::UnboundedSender<SendResult>,
    ) -> Accepted {
        let Pending { offset, record } = pending;
        let shared = &self.inner.shared;
        let buffered = u32::try_from(record.buffered_size())
            .ok()
            .filter(|&permits| match shared.buffer.try_acquire_many(permits) {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(0);
        let results = results.clone();
        let report = Completion::Callback(Box::new(move |result: SendResult| {
            if let Err(failed) = &result {
                tracing::error!(error = %failed.error, topic = %failed.record.topic,
                    "a record replayed from the producer outbox failed");
            }
            let _ = results.send(result);
        }));
        Metrics::add(&shared.metrics.sent, 1);
        Accepted {
            record,
            completion: report,
            buffered,
            deadline,
            generation: 0,
            outbox: Some(offset),
        }
    }

    /// Reserves buffer room for `record` and hands it to the sender task.
    async fn accept(
        &self,
        record: ProducerRecord,
        completion: Completion,
    ) -> Result<(), (ProducerRecord, Completion, ProduceError)> {
        let handle = &self.inner;
        let config = &handle.config;
        if handle.shared.closed.load(Ordering::Acquire) {
            return Err((record, completion, ProduceError::Closed));
        }
        let size = record.buffered_size();
        let limit = config.max_request_size.min(config.buffer_memory);
        let permits = match u32::try_from(size) {
            Ok(permits) if size + HEADER_SIZE <= limit => permits,
            _ => {
                let error = ProduceError::RecordTooLarge {
                    size: size + HEADER_SIZE,
                    limit,
                };
                return Err((record, completion, error));
            }
        };
        let acquire = handle.shared.buffer.acquire_many(permits);
        match tokio::time::timeout(config.max_block, acquire).await {
            Ok(Ok(permit)) => permit.forget(),
            Ok(Err(_closed)) => return Err((record, completion, ProduceError::Closed)),
            Err(_elapsed) => {
                let error = ProduceError::BufferFull {
                    buffer_memory: config.buffer_memory,
                    max_block: config.max_block,
                };
                return Err((record, completion, error));
            }
        }
        let (record, entry) = match &handle.outbox {
            None => (record, None),
            Some(outbox) => match outbox.store(record, config.max_block).await {
                Ok((record, offset)) => (record, Some(offset)),
                Err((record, error)) => {
                    handle.shared.buffer.add_permits(permits as usize);
                    let error = match error {
                        OutboxStoreError::Full { bytes, max_bytes } => ProduceError::OutboxFull {
                            bytes,
                            max_bytes,
                            max_block: config.max_block,
                        },
                        OutboxStoreError::Failed(e) => ProduceError::Outbox(e.to_string()),
                    };
                    return Err((record, completion, error));
                }
            },
        };
        let metrics = &handle.shared.metrics;
        // Exported once the sender task has it: an exported counter cannot be undone.
        metrics.sent.add_local(1);
        let accepted = Accepted {
            record,
            completion,
            buffered: permits,
            deadline: Instant::now() + config.delivery_timeout,
            generation: 0,
            outbox: entry,
        };
        if let Err(mpsc::error::SendError(command)) = handle.commands.send(Command::Send(accepted))
        {
            // The sender task is gone (closed): undo the acceptance.
            metrics.sent.sub_local(1);
            handle.shared.buffer.add_permits(permits as usize);
            if let Command::Send(mut accepted) = command {
                // The caller gets the record back: its outbox entry is finished.
                if let (Some(outbox), Some(offset)) = (&handle.outbox, accepted.outbox) {
                    outbox.journal().finish(&[offset], false);
                }
                let (record, completion) = accepted.take();
                return Err((record, completion, ProduceError::Closed));
            }
        }
        metrics.sent.export(1);
        Ok(())
    }
}
