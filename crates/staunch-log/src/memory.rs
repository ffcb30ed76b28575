//! [`MemoryLog`]: a `LogStore` held in process memory, for tests and embedded use where
//! durability is not wanted. It keeps the same offset, read and truncation semantics as the file
//! log and reports [`Durability::Memory`] for every append.

use std::sync::Mutex;

use staunch_core::{Clock, LeaderEpoch, Offset, RecordBatch, SystemClock};

use crate::store::{
    AppendInfo, Durability, LogStore, ReadBatches, RetentionOutcome, TimestampOffset,
};
use crate::validate::{check_append, first_record_at_or_after, stamp};
use crate::{LogConfig, LogError};

#[derive(Debug)]
struct StoredBatch {
    base: Offset,
    next: Offset,
    append_ms: i64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    batches: Vec<StoredBatch>,
    start: Offset,
    end: Offset,
    closed: bool,
}

/// A log kept in a `Vec` of batches. Retention treats each batch like a closed segment (the
/// newest batch is never removed).
#[derive(Debug)]
pub struct MemoryLog {
    config: LogConfig,
    clock: Box<dyn Clock>,
    state: Mutex<State>,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new(LogConfig::default())
    }
}

impl MemoryLog {
    /// An empty log starting at offset 0.
    pub fn new(config: LogConfig) -> Self {
        Self::with_clock(config, Box::new(SystemClock))
    }

    /// An empty log reading time from `clock`.
    pub fn with_clock(config: LogConfig, clock: Box<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, LogError> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return Err(LogError::Closed);
        }
        Ok(st)
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogStore for MemoryLog {
    fn append(&self, bytes: &mut [u8], leader_epoch: LeaderEpoch) -> Result<AppendInfo, LogError> {
        let spans = check_append(bytes, self.config.max_batch_bytes as usize)?;
        let now = self.clock.now_ms();
        let mut st = self.state()?;
        let base = st.end;
        let end = stamp(bytes, &spans, base, leader_epoch);
        let mut next = base;
        for span in &spans {
            st.batches.push(StoredBatch {
                base: next,
                next: next + span.records,
                append_ms: now,
                bytes: bytes[span.start..span.start + span.len].to_vec(),
            });
            next += span.records;
        }
        st.end = end;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: end - 1,
            append_time_ms: now,
            durability: Durability::Memory,
        })
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadBatches, LogError> {
        let st = self.state()?;
        if from < st.start || from > st.end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                earliest: st.start,
                log_end: st.end,
            });
        }
        let first = st.batches.partition_point(|b| b.next <= from);
        let (mut bytes, mut next_offset) = (Vec::new(), from);
        for batch in &st.batches[first..] {
            if !bytes.is_empty() && bytes.len() + batch.bytes.len() > max_bytes {
                break;
            }
            bytes.extend_from_slice(&batch.bytes);
            next_offset = batch.next;
        }
        Ok(ReadBatches {
            bytes: bytes.into(),
            next_offset,
        })
    }

    /// A writer holds the lock only to copy its batch: waiting for it is not waiting for a
    /// disk.
    fn try_bounds(&self) -> Option<(Offset, Offset)> {
        let st = self.locked();
        Some((st.start, st.end))
    }

    /// Memory never waits: the same as [`LogStore::read`].
    fn read_cached(&self, from: Offset, max_bytes: usize) -> Result<Option<ReadBatches>, LogError> {
        self.read(from, max_bytes).map(Some)
    }

    fn earliest(&self) -> Offset {
        self.locked().start
    }

    fn log_end(&self) -> Offset {
        self.locked().end
    }

    fn durable_end(&self) -> Offset {
        self.locked().end
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        let st = self.state()?;
        for stored in &st.batches {
            let batch = RecordBatch::parse(&stored.bytes)?;
            if let Some((offset, timestamp)) = first_record_at_or_after(&batch, timestamp) {
                return Ok(Some(TimestampOffset { offset, timestamp }));
            }
        }
        Ok(None)
    }

    fn offset_of_max_timestamp(&self, end: Offset) -> Result<Option<TimestampOffset>, LogError> {
        let st = self.state()?;
        // The first batch with the largest max timestamp (a later one must be larger).
        let mut best: Option<RecordBatch<'_>> = None;
        for stored in st.batches.iter().take_while(|b| b.next <= end) {
            let batch = RecordBatch::parse(&stored.bytes)?;
            if best
                .as_ref()
                .is_none_or(|b| batch.max_timestamp() > b.max_timestamp())
            {
                best = Some(batch);
            }
        }
        Ok(best.and_then(|batch| {
            first_record_at_or_after(&batch, batch.max_timestamp())
                .map(|(offset, timestamp)| TimestampOffset { offset, timestamp })
        }))
    }

    fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut st = self.state()?;
        if offset < st.start {
            st.batches.clear();
            st.start = offset;
            st.end = offset;
            return Ok(offset);
        }
        let keep = st.batches.partition_point(|b| b.next <= offset);
        st.batches.truncate(keep);
        st.end = st.batches.last().map_or(st.start, |b| b.next);
        Ok(st.end)
    }

    fn flush(&self) -> Result<Offset, LogError> {
        Ok(self.state()?.end)
    }

    fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let mut st = self.state()?;
        let mut outcome = RetentionOutcome::default();
        let mut total: u64 = st.batches.iter().map(|b| b.bytes.len() as u64).sum();
        let mut remove = 0;
        while remove + 1 < st.batches.len() {
            let b = &st.batches[remove];
            let too_old = self
                .config
                .retention_age
                .is_some_and(|age| b.append_ms < now_ms - age.as_millis() as i64);
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - b.bytes.len() as u64 >= limit);
            if !(too_old || too_big) {
                break;
            }
            total -= b.bytes.len() as u64;
            outcome.bytes_deleted += b.bytes.len() as u64;
            outcome.segments_deleted += 1;
            remove += 1;
        }
        st.batches.drain(..remove);
        if let Some(first) = st.batches.first() {
            st.start = first.base;
        }
        outcome.earliest = st.start;
        Ok(outcome)
    }

    fn close(&self) -> Result<(), LogError> {
        self.state()?.closed = true;
        Ok(())
    }
}
