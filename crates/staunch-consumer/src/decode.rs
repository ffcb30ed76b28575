//! Fetched bytes to owned records, compressed batches included.

use bytes::Bytes;
use staunch_core::batch::batches;
use staunch_core::{Offset, TopicPartition};

use crate::handler::ConsumerRecord;
use crate::headers::ForwardFacts;
use crate::ledger::RetryLedger;

/// The records at or after `from` in `bytes`, and the offset after the last whole batch read
/// (control batches and skipped records included), or `None` if no batch was whole. A cut
/// last batch is dropped (it comes whole in the next fetch); a broken first batch is an error.
pub(crate) fn decode(
    tp: &TopicPartition,
    bytes: &[u8],
    from: Offset,
    ledger: &RetryLedger,
) -> Result<(Vec<ConsumerRecord>, Option<Offset>), String> {
    let mut out = Vec::new();
    let mut end = None;
    for batch in batches(bytes) {
        let batch = match batch {
            Ok(b) => b,
            Err(e) if end.is_none() => return Err(e.to_string()),
            Err(_) => break,
        };
        end = Some(batch.next_offset());
        if batch.is_control() || batch.last_offset() < from {
            continue;
        }
        let records = batch.decompressed().map_err(|e| e.to_string())?;
        for record in records.records() {
            let record = record.map_err(|e| e.to_string())?;
            if record.offset < from {
                continue;
            }
            let headers: Vec<(Bytes, Option<Bytes>)> = record
                .headers
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k), v.map(Bytes::copy_from_slice)))
                .collect();
            let mut r = ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key.map(Bytes::copy_from_slice),
                value: record.value.map(Bytes::copy_from_slice),
                headers,
                delivery_attempt: 1,
            };
            r.delivery_attempt = attempt_of(&r, ledger);
            out.push(r);
        }
    }
    Ok((out, end))
}

/// Which delivery of `record` comes next: after the failures in the ledger, else after the
/// failures its forward headers count (a record in a retry topic), else the first.
pub(crate) fn attempt_of(record: &ConsumerRecord, ledger: &RetryLedger) -> u32 {
    if let Some(e) = ledger.get(record.offset) {
        return e.attempts.saturating_add(1);
    }
    record
        .forward_facts()
        .map_or(1, |f| f.attempts.saturating_add(1))
}

/// The due time of a record read from a retry topic.
pub(crate) fn due_of(record: &ConsumerRecord) -> Option<i64> {
    record
        .headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == crate::headers::DUE.as_bytes())
        .and_then(|(_, v)| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

/// Forward facts for `record`, or facts naming the record itself when it was never forwarded.
pub(crate) fn origin(record: &ConsumerRecord) -> Option<ForwardFacts> {
    record.forward_facts()
}
