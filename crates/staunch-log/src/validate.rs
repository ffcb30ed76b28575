//! Checking and stamping the batches of an append; shared by every `LogStore`.

use staunch_core::batch::batches;
use staunch_core::{BatchError, LeaderEpoch, Offset, RecordBatch};

use crate::LogError;

/// Where one validated batch lies in an append buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSpan {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) records: i64,
    pub(crate) max_timestamp: i64,
}

/// Validates every batch in `bytes` (full check, including the CRC) and the size limit.
pub(crate) fn check_append(
    bytes: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchSpan>, LogError> {
    let mut spans = Vec::new();
    let mut start = 0;
    for batch in batches(bytes) {
        let batch = batch?;
        if batch.size() > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: batch.size(),
                limit: max_batch_bytes,
            }
            .into());
        }
        batch.validate()?;
        spans.push(BatchSpan {
            start,
            len: batch.size(),
            records: i64::from(batch.last_offset_delta()) + 1,
            max_timestamp: batch.max_timestamp(),
        });
        start += batch.size();
    }
    if spans.is_empty() {
        return Err(LogError::EmptyAppend);
    }
    Ok(spans)
}

/// Writes base offsets from `next` on and the leader epoch into each span; returns the offset
/// after the last record.
pub(crate) fn stamp(
    bytes: &mut [u8],
    spans: &[BatchSpan],
    mut next: Offset,
    epoch: LeaderEpoch,
) -> Offset {
    for span in spans {
        let batch = &mut bytes[span.start..span.start + span.len];
        // Both fields lie outside the CRC, and the spans were parsed from these very bytes.
        RecordBatch::set_base_offset(batch, next).expect("span was validated");
        RecordBatch::set_partition_leader_epoch(batch, epoch).expect("span was validated");
        next += span.records;
    }
    next
}

/// The first record of `batch` at or after `timestamp`, if any.
pub(crate) fn first_record_at_or_after(
    batch: &RecordBatch<'_>,
    timestamp: i64,
) -> Option<(Offset, i64)> {
    if batch.max_timestamp() < timestamp {
        return None;
    }
    let whole_batch = (batch.base_offset(), batch.max_timestamp());
    // A compressed batch is decompressed to find the record, as Kafka does.
    match batch.decompressed() {
        Ok(records) => records
            .records()
            .filter_map(Result::ok)
            .find(|r| r.timestamp >= timestamp)
            .map(|r| (r.offset, r.timestamp))
            .or(Some(whole_batch)),
        // Undecodable (a codec compiled out): answer with the batch, never later than the
        // record asked for.
        Err(_) => Some(whole_batch),
    }
}
