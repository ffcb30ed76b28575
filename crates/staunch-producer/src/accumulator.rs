//! Records on their way to the broker: [`Accepted`] (handed over, not yet in a batch),
//! [`OpenBatch`] (a partition's batch still taking records) and [`Batch`] (closed, sent or
//! waiting to be sent again), with the per-record [`Completion`] each one owes the caller.
//!
//! A record's payload lives in exactly one place at a time: in its [`Accepted`] until it is
//! partitioned, then encoded in its batch's bytes (compressed, with the configured codec, when
//! the batch is first sent). On failure the payload is decoded back from the batch — after
//! decompressing it — (key, value, headers and timestamp round-trip exactly), so the producer
//! keeps one copy of every record, not two.
//!
//! Every [`Accepted`] and every [`Batch`] completes each of its records exactly once: through
//! the sender's explicit success / failure paths, or — if it is dropped with records still
//! owed, because the runtime shut down or the task panicked — through `Drop`, which reports
//! [`ProduceError::Aborted`].

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use staunch_core::batch::Compression;
use staunch_core::{ApiError, BatchBuilder, Offset, ProducerIdentity, RecordBatch, TopicPartition};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{ProduceError, SendError, SendResult};
use crate::record::{Header, ProducerRecord, RecordMetadata};

/// A callback given to `send_async`.
pub(crate) type Callback = Box<dyn FnOnce(SendResult) + Send + 'static>;

/// How a record's outcome reaches the caller.
pub(crate) enum Completion {
    /// `send_oneway`: nobody is told (failures are logged and counted).
    None,
    /// `send`: the awaiting future.
    Reply(oneshot::Sender<SendResult>),
    /// `send_async`: the caller's callback, run on the producer's task.
    Callback(Callback),
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Completion::None => "None",
            Completion::Reply(_) => "Reply",
            Completion::Callback(_) => "Callback",
        })
    }
}

impl Completion {
    /// Whether anyone will read a failure's record (so it is worth decoding).
    pub(crate) fn wants_record(&self) -> bool {
        !matches!(self, Completion::None)
    }

    /// Delivers the outcome. A panicking callback is caught and logged: it must not take the
    /// producer (and every other record's outcome) down with it.
    pub(crate) fn complete(self, result: SendResult) {
        match self {
            Completion::None => {}
            Completion::Reply(tx) => {
                // The caller may have stopped waiting; the outcome is still counted.
                let _ = tx.send(result);
            }
            Completion::Callback(callback) => {
                if catch_unwind(AssertUnwindSafe(|| callback(result))).is_err() {
                    tracing::error!("a send_async callback panicked");
                }
            }
        }
    }
}

/// A record the handle accepted (buffer space reserved, counted as sent), not yet placed in a
/// partition's batch.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) record: ProducerRecord,
    pub(crate) completion: Completion,
    /// Buffer bytes reserved for it.
    pub(crate) buffered: u32,
    /// When it fails at the latest: acceptance + delivery timeout.
    pub(crate) deadline: Instant,
    /// Flush generation it arrived in (set by the sender).
    pub(crate) generation: u64,
    /// Its entry in the durable outbox, if the producer has one.
    pub(crate) outbox: Option<Offset>,
}

impl Accepted {
    /// Takes the completion out, leaving `None` so `Drop` does nothing.
    pub(crate) fn take(&mut self) -> (ProducerRecord, Completion) {
        (
            std::mem::replace(
                &mut self.record,
                ProducerRecord::new(String::new(), Bytes::new()),
            ),
            std::mem::replace(&mut self.completion, Completion::None),
        )
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if !matches!(self.completion, Completion::None) {
            let (record, completion) = self.take();
            completion.complete(Err(SendError::unsent(record, ProduceError::Aborted)));
        }
    }
}

/// `Entry::flags`: the caller chose the partition.
const EXPLICIT_PARTITION: u8 = 1;

/// What a batch keeps per record besides its encoded bytes.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) completion: Completion,
    /// The create timestamp it was sent with.
    pub(crate) timestamp: i64,
    /// Flush generation it was accepted in.
    pub(crate) generation: u64,
    /// Buffer bytes reserved for it.
    pub(crate) buffered: u32,
    /// Its entry in the durable outbox, if the producer has one.
    pub(crate) outbox: Option<Offset>,
    flags: u8,
}

/// The outcome of one record of a finished batch, for the sender's bookkeeping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    pub(crate) generation: u64,
    pub(crate) buffered: u32,
    /// Its entry in the durable outbox, to be marked finished.
    pub(crate) outbox: Option<Offset>,
}

impl Finished {
    /// The bookkeeping of a record finished before it was put in a batch.
    pub(crate) fn of(accepted: &Accepted) -> Self {
        Finished {
            generation: accepted.generation,
            buffered: accepted.buffered,
            outbox: accepted.outbox,
        }
    }
}

/// The bookkeeping of `entries`, settled (counted, buffer released) before their outcomes are
/// delivered, so a caller who sees an outcome also sees it counted.
fn finished(entries: &[Entry]) -> Vec<Finished> {
    entries
        .iter()
        .map(|e| Finished {
            generation: e.generation,
            buffered: e.buffered,
            outbox: e.outbox,
        })
        .collect()
}

/// A partition's batch that is still taking records.
#[derive(Debug)]
pub(crate) struct OpenBatch {
    builder: BatchBuilder,
    entries: Vec<Entry>,
    pub(crate) created: Instant,
    pub(crate) deadline: Instant,
}

impl OpenBatch {
    /// An empty batch whose first record will have `timestamp`, compressed with `compression`
    /// when it is sent.
    pub(crate) fn new(
        timestamp: i64,
        now: Instant,
        deadline: Instant,
        compression: Compression,
    ) -> Self {
        OpenBatch {
            builder: BatchBuilder::new(timestamp).compression(compression),
            entries: Vec::new(),
            created: now,
            deadline,
        }
    }

    /// Encoded size so far, before compression: what `batch_size` limits.
    pub(crate) fn encoded_len(&self) -> usize {
        self.builder.encoded_len()
    }

    /// Records in it.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Encodes `accepted` into the batch, keeping only its completion and bookkeeping.
    pub(crate) fn push(&mut self, mut accepted: Accepted, now_ms: i64) {
        let (record, completion) = accepted.take();
        let timestamp = record.timestamp.unwrap_or(now_ms);
        self.builder.push(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            record
                .headers
                .iter()
                .map(|h| (h.key.as_bytes(), h.value.as_deref())),
        );
        let flags = if record.partition.is_some() {
            EXPLICIT_PARTITION
        } else {
            0
        };
        self.deadline = self.deadline.min(accepted.deadline);
        self.entries.push(Entry {
            completion,
            timestamp,
            generation: accepted.generation,
            buffered: accepted.buffered,
            outbox: accepted.outbox,
            flags,
        });
    }

    /// Closes the batch: no more records go in.
    pub(crate) fn seal(self, partition: TopicPartition) -> Batch {
        Batch {
            partition,
            body: Body::Open(self.builder),
            entries: self.entries,
            deadline: self.deadline,
            stamp: None,
            attempts: 0,
            failures: 0,
            first_failure: None,
            retry_at: None,
            last_error: None,
            may_have_been_appended: false,
            ambiguous_since_stamp: false,
            ambiguous_since_send: false,
            sent_behind: false,
        }
    }

    /// Fails every record (the batch never got sealed).
    pub(crate) fn fail(
        self,
        partition: TopicPartition,
        error: ProduceError,
        settle: impl FnOnce(&[Finished]),
    ) {
        self.seal(partition).fail(error, settle)
    }
}

/// The producer fields a batch is sent with: its place in the partition's send order and, for
/// an idempotent producer, its producer id, epoch and first sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Order of first send within the partition under the current producer identity; a retry
    /// keeps it.
    pub(crate) ordinal: u64,
    /// Producer identity and base sequence (idempotent producers only).
    pub(crate) sequence: Option<(ProducerIdentity, i32)>,
}

#[derive(Debug)]
enum Body {
    /// Not encoded yet: the producer fields are written when it is first sent.
    Open(BatchBuilder),
    /// Encoded with the current stamp.
    Built(Bytes),
}

/// A closed batch of one partition: waiting to be sent, in flight, or waiting to be retried.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) partition: TopicPartition,
    body: Body,
    entries: Vec<Entry>,
    /// When its records fail at the latest (its first record's deadline).
    pub(crate) deadline: Instant,
    pub(crate) stamp: Option<Stamp>,
    /// Produce requests made for it.
    pub(crate) attempts: u32,
    /// Retriable failures counted by the back-off policy.
    pub(crate) failures: u32,
    pub(crate) first_failure: Option<Instant>,
    /// Not to be sent again before this.
    pub(crate) retry_at: Option<Instant>,
    pub(crate) last_error: Option<ApiError>,
    /// Some attempt ended ambiguously (the records may be in the log).
    pub(crate) may_have_been_appended: bool,
    /// Some attempt under the current stamp ended ambiguously: re-stamping it may duplicate.
    pub(crate) ambiguous_since_stamp: bool,
    /// The last attempt ended ambiguously: without de-duplication, sending again may duplicate.
    pub(crate) ambiguous_since_send: bool,
    /// When last sent, an earlier batch of the partition was unacknowledged: an
    /// out-of-order-sequence answer is explained by that batch, not by lost broker state.
    pub(crate) sent_behind: bool,
}

impl Batch {
    /// Records in it.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records as the count in a sequence range.
    pub(crate) fn record_count(&self) -> i32 {
        i32::try_from(self.entries.len()).unwrap_or(i32::MAX)
    }

    /// The outbox entries of its records, in batch order, if every record has one.
    pub(crate) fn outbox_offsets(&self) -> Option<Vec<Offset>> {
        self.entries.iter().map(|e| e.outbox).collect()
    }

    /// Whether it has been sent before (a retry).
    pub(crate) fn is_retry(&self) -> bool {
        self.attempts > 0
    }

    /// Sets the producer fields. An already encoded batch is re-stamped in place (rare: only
    /// after a producer-id reset): its header fields and CRC are rewritten, its records —
    /// compressed or not — are kept as they are. Fails only if its own bytes do not parse.
    pub(crate) fn set_stamp(&mut self, stamp: Stamp) -> Result<(), ApiError> {
        let previous = self.stamp.replace(stamp);
        if previous.and_then(|s| s.sequence) == stamp.sequence {
            return Ok(());
        }
        if let Body::Built(bytes) = &self.body {
            let rebuilt = rebuild(bytes, stamp.sequence).map_err(|e| {
                ApiError::Protocol(format!(
                    "cannot re-encode a batch for a new producer id: {e}"
                ))
            })?;
            self.body = Body::Built(Bytes::from(rebuilt));
        }
        self.ambiguous_since_stamp = false;
        Ok(())
    }

    /// Forgets the stamp; the batch gets a new one when next sent.
    pub(crate) fn clear_stamp(&mut self) {
        self.stamp = None;
    }

    /// The bytes to send, encoding (and compressing) them with the stamp on first use.
    pub(crate) fn bytes(&mut self) -> Bytes {
        match std::mem::replace(&mut self.body, Body::Built(Bytes::new())) {
            Body::Built(bytes) => {
                self.body = Body::Built(bytes.clone());
                bytes
            }
            Body::Open(mut builder) => {
                if let Some((identity, sequence)) = self.stamp.and_then(|s| s.sequence) {
                    builder = builder.producer(identity.id, identity.epoch, sequence);
                }
                let bytes = Bytes::from(builder.build());
                self.body = Body::Built(bytes.clone());
                bytes
            }
        }
    }

    /// Completes every record as acknowledged at `base_offset` (`-1`: unknown), with the
    /// broker's append time when it sent one.
    pub(crate) fn acknowledge(
        mut self,
        base_offset: i64,
        log_append_time_ms: i64,
        settle: impl FnOnce(&[Finished]),
    ) {
        let entries = std::mem::take(&mut self.entries);
        settle(&finished(&entries));
        for (i, entry) in entries.into_iter().enumerate() {
            let offset = if base_offset >= 0 {
                base_offset + i as i64
            } else {
                -1
            };
            let timestamp = if log_append_time_ms >= 0 {
                log_append_time_ms
            } else {
                entry.timestamp
            };
            entry.completion.complete(Ok(RecordMetadata {
                partition: self.partition.clone(),
                offset,
                timestamp,
            }));
        }
    }

    /// Completes every record as failed, each with its payload decoded from the batch.
    pub(crate) fn fail(mut self, error: ProduceError, settle: impl FnOnce(&[Finished])) {
        let entries = std::mem::take(&mut self.entries);
        settle(&finished(&entries));
        let wanted = entries.iter().any(|e| e.completion.wants_record());
        let bytes = if wanted { Some(self.bytes()) } else { None };
        // The producer's own bytes: no decompression limit is needed to guard against them.
        let records = bytes
            .as_deref()
            .and_then(|b| RecordBatch::parse(b).ok())
            .and_then(|b| b.decompressed_with_limit(usize::MAX).ok());
        let mut decoded = records.as_ref().map(|r| r.records());
        for entry in entries {
            let stored = decoded.as_mut().and_then(Iterator::next);
            if !entry.completion.wants_record() {
                // A oneway record: nobody to tell; the sender logs the batch's failure once.
                continue;
            }
            let mut record = ProducerRecord {
                topic: self.partition.topic.clone(),
                partition: (entry.flags & EXPLICIT_PARTITION != 0)
                    .then_some(self.partition.partition),
                key: None,
                value: None,
                headers: Vec::new(),
                timestamp: Some(entry.timestamp),
            };
            if let Some(Ok(stored)) = stored {
                record.key = stored.key.map(Bytes::copy_from_slice);
                record.value = stored.value.map(Bytes::copy_from_slice);
                record.headers = stored
                    .headers
                    .iter()
                    .map(|(k, v)| Header {
                        key: String::from_utf8_lossy(k).into_owned(),
                        value: v.map(Bytes::copy_from_slice),
                    })
                    .collect();
            }
            entry.completion.complete(Err(SendError {
                record,
                error: error.clone(),
                may_have_been_appended: self.may_have_been_appended,
            }));
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            let partition = self.partition.clone();
            let body = std::mem::replace(&mut self.body, Body::Built(Bytes::new()));
            let stray = Batch {
                partition,
                body,
                entries: std::mem::take(&mut self.entries),
                deadline: self.deadline,
                stamp: self.stamp,
                attempts: self.attempts,
                failures: self.failures,
                first_failure: self.first_failure,
                retry_at: self.retry_at,
                last_error: self.last_error.take(),
                may_have_been_appended: self.may_have_been_appended,
                ambiguous_since_stamp: false,
                ambiguous_since_send: false,
                sent_behind: false,
            };
            stray.fail(ProduceError::Aborted, |_| {});
        }
    }
}

/// A copy of a batch with other producer fields (`None`: not idempotent). Only the header
/// changes (and the CRC over it): a compressed batch is not decompressed.
fn rebuild(
    bytes: &[u8],
    sequence: Option<(ProducerIdentity, i32)>,
) -> Result<Vec<u8>, staunch_core::BatchError> {
    let mut rebuilt = bytes.to_vec();
    let (id, epoch, base_sequence) = match sequence {
        Some((identity, sequence)) => (identity.id, identity.epoch, sequence),
        None => (-1, -1, -1),
    };
    RecordBatch::set_producer(&mut rebuilt, id, epoch, base_sequence)?;
    Ok(rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(record: ProducerRecord, completion: Completion) -> Accepted {
        Accepted {
            record,
            completion,
            buffered: 10,
            deadline: Instant::now(),
            generation: 0,
            outbox: None,
        }
    }

    #[tokio::test]
    async fn failed_records_come_back_with_their_payload() {
        for codec in Compression::ALL {
            failed_records_come_back_with_their_payload_with(codec).await;
        }
    }

    async fn failed_records_come_back_with_their_payload_with(codec: Compression) {
        let now = Instant::now();
        let mut open = OpenBatch::new(1_000, now, now, codec);
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let first = ProducerRecord::new("t", "v1")
            .with_key("k1")
            .with_header("h", "x")
            .with_partition(3);
        open.push(accepted(first.clone(), Completion::Reply(tx1)), 1_000);
        let mut second = ProducerRecord::new("t", "v2");
        second.value = None;
        open.push(accepted(second, Completion::Reply(tx2)), 1_007);
        let mut batch = open.seal(TopicPartition::new("t", 3));
        let identity = ProducerIdentity { id: 4, epoch: 0 };
        batch
            .set_stamp(Stamp {
                ordinal: 0,
                sequence: Some((identity, 0)),
            })
            .unwrap();
        let sent = batch.bytes();
        let parsed = RecordBatch::parse(&sent).unwrap();
        assert_eq!(parsed.producer_id(), 4);
        assert_eq!(parsed.compression(), Some(codec));
        // A producer-id reset re-encodes the same records with the new fields.
        let other = ProducerIdentity { id: 9, epoch: 0 };
        batch
            .set_stamp(Stamp {
                ordinal: 0,
                sequence: Some((other, 5)),
            })
            .unwrap();
        let resent = batch.bytes();
        let parsed = RecordBatch::parse(&resent).unwrap();
        parsed.validate().unwrap();
        assert_eq!((parsed.producer_id(), parsed.base_sequence()), (9, 5));
        assert_eq!(parsed.compression(), Some(codec));
        // Re-stamping rewrote the header only: the (compressed) records are the same bytes.
        assert_eq!(resent.len(), sent.len());
        assert_eq!(
            parsed.records_section(),
            RecordBatch::parse(&sent).unwrap().records_section()
        );

        let mut settled = 0;
        batch.fail(ProduceError::Closed, |f| settled = f.len());
        assert_eq!(settled, 2);
        let e1 = rx1.await.unwrap().unwrap_err();
        assert_eq!(
            e1.record,
            ProducerRecord {
                timestamp: Some(1_000),
                ..first
            }
        );
        let e2 = rx2.await.unwrap().unwrap_err();
        assert_eq!(e2.record.value, None);
        assert_eq!(e2.record.partition, None);
        assert_eq!(e2.record.timestamp, Some(1_007));
    }

    #[tokio::test]
    async fn dropped_batches_and_records_still_complete() {
        let now = Instant::now();
        let mut open = OpenBatch::new(0, now, now, Compression::None);
        let (tx, rx) = oneshot::channel();
        open.push(
            accepted(ProducerRecord::new("t", "v"), Completion::Reply(tx)),
            0,
        );
        drop(open.seal(TopicPartition::new("t", 0)));
        let err = rx.await.unwrap().unwrap_err();
        assert_eq!(err.error, ProduceError::Aborted);
        assert_eq!(err.record.value.as_deref(), Some(&b"v"[..]));

        let (tx, rx) = oneshot::channel();
        drop(accepted(
            ProducerRecord::new("t", "w"),
            Completion::Reply(tx),
        ));
        let err = rx.await.unwrap().unwrap_err();
        assert_eq!(err.error, ProduceError::Aborted);
        assert_eq!(err.record.value.as_deref(), Some(&b"w"[..]));
    }
}
