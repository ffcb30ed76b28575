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
///
/// Keys, values and headers of uncompressed batches are slices of `bytes` (no copy; a record
/// keeps the fetched buffer alive); those of a compressed batch share one copy of its
/// decompressed records.
pub(crate) fn decode(
    tp: &TopicPartition,
    bytes: &Bytes,
    from: Offset,
    ledger: &RetryLedger,
) -> Result<(Vec<ConsumerRecord>, Option<Offset>), String> {
    let mut out = Vec::new();
    let mut end = None;
    let topic: std::sync::Arc<str> = tp.topic.as_str().into();
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
        // Room for the batch's records up front (the count is the sender's word: bounded).
        out.reserve(usize::try_from(batch.record_count()).unwrap_or(0).min(4096));
        let share = if records.is_borrowed() {
            Shared::new(bytes, bytes.clone())
        } else {
            Shared::new(
                records.as_bytes(),
                Bytes::copy_from_slice(records.as_bytes()),
            )
        };
        for record in records.records() {
            let record = record.map_err(|e| e.to_string())?;
            if record.offset < from {
                continue;
            }
            let headers: Vec<(Bytes, Option<Bytes>)> = record
                .headers
                .iter()
                .map(|(k, v)| (share.get(k), v.map(|v| share.get(v))))
                .collect();
            let mut r = ConsumerRecord {
                topic: topic.clone(),
                partition: tp.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key.map(|k| share.get(k)),
                value: record.value.map(|v| share.get(v)),
                headers,
                delivery_attempt: 1,
            };
            r.delivery_attempt = attempt_of(&r, ledger);
            out.push(r);
        }
    }
    Ok((out, end))
}

/// Hands out slices of `base` as [`Bytes`] sharing `owner`, which holds the same bytes
/// (`base` itself, or a copy of it).
struct Shared<'a> {
    base: &'a [u8],
    owner: Bytes,
}

impl<'a> Shared<'a> {
    fn new(base: &'a [u8], owner: Bytes) -> Self {
        debug_assert_eq!(base.len(), owner.len());
        Shared { base, owner }
    }

    /// `part`, a slice of `base`, as the same range of `owner`.
    fn get(&self, part: &[u8]) -> Bytes {
        let start = (part.as_ptr() as usize).wrapping_sub(self.base.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= self.base.len() => self.owner.slice(start..end),
            // Not a slice of `base` (cannot happen for records parsed from it): copy.
            _ => Bytes::copy_from_slice(part),
        }
    }
}

/// Which delivery of `record` comes next: after the failures in the ledger, else after the
/// failures its forward headers count (a record in a retry topic), else the first.
pub(crate) fn attempt_of(record: &ConsumerRecord, ledger: &RetryLedger) -> u32 {
    if let Some(e) = ledger.get(record.offset) {
        return e.attempts.saturating_add(1);
    }
    if record.headers.is_empty() {
        // No forward headers (the usual record of a source topic): its first delivery.
        return 1;
    }
    ForwardFacts::attempts_in(
        record
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_deref())),
    )
    .map_or(1, |attempts| attempts.saturating_add(1))
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

#[cfg(test)]
mod tests {
    use staunch_core::BatchBuilder;
    use staunch_core::compression::Compression;

    use super::*;

    fn fetched(codec: Compression) -> Bytes {
        let mut builder = BatchBuilder::new(1_000).compression(codec);
        for i in 0..3u8 {
            let value = [b'v', b'0' + i];
            builder.push(
                1_000 + i64::from(i),
                Some(&b"key"[..]),
                Some(&value[..]),
                [(&b"h"[..], Some(&b"x"[..])), (&b"null"[..], None)],
            );
        }
        Bytes::from(builder.build())
    }

    fn inside(part: &Bytes, buffer: &Bytes) -> bool {
        let (start, end) = (
            buffer.as_ptr() as usize,
            buffer.as_ptr() as usize + buffer.len(),
        );
        (start..end).contains(&(part.as_ptr() as usize))
    }

    #[test]
    fn records_share_the_fetched_buffer_or_one_decompressed_copy() {
        let tp = TopicPartition::new("t", 2);
        let mut ledger = RetryLedger::default();
        ledger.set(
            2,
            crate::ledger::RetryEntry {
                attempts: 4,
                first_failure_ms: 0,
                last_failure_ms: 0,
            },
        );
        for codec in [Compression::None, Compression::Lz4] {
            let bytes = fetched(codec);
            let (records, end) = decode(&tp, &bytes, 1, &ledger).unwrap();
            assert_eq!(end, Some(3));
            let summary: Vec<(i64, i64, &[u8], u32)> = records
                .iter()
                .map(|r| {
                    let value: &[u8] = r.value.as_deref().unwrap();
                    (r.offset, r.timestamp, value, r.delivery_attempt)
                })
                .collect();
            assert_eq!(
                summary,
                [(1, 1_001, &b"v1"[..], 1), (2, 1_002, &b"v2"[..], 5)],
                "{codec:?}"
            );
            for r in &records {
                assert_eq!((&*r.topic, r.partition), ("t", 2));
                assert_eq!(r.key.as_deref(), Some(&b"key"[..]));
                assert_eq!(
                    r.headers,
                    [
                        (Bytes::from_static(b"h"), Some(Bytes::from_static(b"x"))),
                        (Bytes::from_static(b"null"), None)
                    ]
                );
                let value = r.value.as_ref().unwrap();
                assert_eq!(
                    inside(value, &bytes),
                    codec == Compression::None,
                    "{codec:?}: uncompressed values are slices of the fetch, others copies"
                );
            }
        }
    }
}
