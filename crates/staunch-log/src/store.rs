//! The [`LogStore`] trait: what any implementation of one partition's log promises.

use std::fmt::Debug;

use bytes::Bytes;

use staunch_core::{LeaderEpoch, Offset};

use crate::LogError;

/// How durable an append was when it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Forced to stable storage (`fdatasync` returned): survives kill -9 and power loss.
    OnDisk,
    /// Written to the operating system's page cache: survives kill -9 of the process, not a
    /// power loss or kernel crash until the next flush.
    PageCache,
    /// Held only in this process's memory: lost when the process exits.
    Memory,
}

/// What [`LogStore::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub base_offset: Offset,
    /// Offset assigned to the last record.
    pub last_offset: Offset,
    /// The broker's clock when the batch was appended (ms since the epoch).
    pub append_time_ms: i64,
    /// How durable the records are now.
    pub durability: Durability,
}

/// Whole batches returned by [`LogStore::read`], exactly as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBatches {
    /// Concatenated v2 batches. The first one contains the requested offset (it may start
    /// before it); empty if the request was at the log end (or, for
    /// [`LogStore::read_within`], if the first batch did not fit). A large read shares a buffer
    /// that is used again once the last clone of these bytes is dropped.
    pub bytes: Bytes,
    /// Offset after the last returned record: where the next read continues.
    pub next_offset: Offset,
}

/// A record found by [`LogStore::offset_for_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Offset of the first record whose timestamp is at or after the one asked for.
    pub offset: Offset,
    /// That record's timestamp.
    pub timestamp: i64,
}

/// What [`LogStore::apply_retention`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Whole segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
    /// The earliest offset after retention.
    pub earliest: Offset,
}

/// One partition's log: an append-only sequence of Kafka v2 record batches with contiguous
/// offsets.
///
/// Implementations are shared between threads (`&self` everywhere). Every method that
/// writes, flushes or truncates is required, not defaulted: a default that pretended to flush
/// or truncate would hide a durability bug. Only read helpers have defaults.
///
/// # Durability
/// - After [`append`](LogStore::append) returns, its records are readable, and they are as
///   durable as the returned [`AppendInfo::durability`] says.
/// - [`durable_end`](LogStore::durable_end) is the offset below which everything is durable to
///   the log's strongest level (on disk for a file log); consumers that must never see data that
///   could vanish in a crash read only below it.
/// - After [`flush`](LogStore::flush) returns `Ok`, everything appended before the call is
///   durable.
/// - After [`truncate_to`](LogStore::truncate_to) returns, the truncation is durable: the removed
///   records do not come back after a crash.
pub trait LogStore: Send + Sync + Debug {
    /// Validates `batches` (one or more v2 batches: magic, CRC-32C, lengths, record counts,
    /// size limit), assigns them the next offsets and stamps `leader_epoch` — both rewritten in
    /// place in `batches`, outside the CRC — then stores the bytes unchanged.
    ///
    /// On error nothing of this call is stored and no offset is used. A truncation running at
    /// the same time may cut the records before they are durable: the append then fails with
    /// [`LogError::Truncated`] and must not be acknowledged.
    fn append(&self, batches: &mut [u8], leader_epoch: LeaderEpoch)
    -> Result<AppendInfo, LogError>;

    /// Returns whole batches starting with the one that contains `from`, at most `max_bytes`
    /// of them — but always at least one whole batch if `from` is below the log end, so a
    /// reader makes progress (Kafka's KIP-74): more than `max_bytes` only when that first
    /// batch alone is larger. Stays within one segment. Every returned batch has
    /// passed its CRC check; a stored batch that fails it is never returned.
    ///
    /// Fails with [`LogError::OffsetOutOfRange`] outside `earliest ..= log_end`.
    fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadBatches, LogError>;

    /// [`LogStore::read`] answered only from memory, without waiting for the disk or for a
    /// writer: `Ok(None)` where it would have to wait (then call `read` from a thread that may
    /// block). Lets an async caller serve reads of hot data without a hop to a blocking
    /// thread. The default always answers `None`.
    fn read_cached(&self, from: Offset, max_bytes: usize) -> Result<Option<ReadBatches>, LogError> {
        let _ = (from, max_bytes);
        Ok(None)
    }

    /// [`LogStore::read`] without the first-batch exception (Kafka's `minOneMessage = false`),
    /// for a reader that owes no batch (one that already holds part of an answer, or a later
    /// partition of a fetch that has its data): only whole batches that fit in
    /// `max_bytes` — none (empty bytes, `next_offset` = `from`) if the batch holding `from`
    /// does not. An implementation should find that out without reading the batch; the
    /// default reads it and throws it away.
    fn read_within(&self, from: Offset, max_bytes: usize) -> Result<ReadBatches, LogError> {
        Ok(fitting(self.read(from, max_bytes)?, from, max_bytes))
    }

    /// [`LogStore::read_within`] answered only from memory, as [`LogStore::read_cached`] is.
    /// The default trims what `read_cached` answers.
    fn read_cached_within(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Option<ReadBatches>, LogError> {
        Ok(self
            .read_cached(from, max_bytes)?
            .map(|read| fitting(read, from, max_bytes)))
    }

    /// [`LogStore::earliest`] and [`LogStore::log_end`], if they can be had without waiting
    /// for a writer (for the same async callers as [`LogStore::read_cached`]). The default
    /// always answers `None`.
    fn try_bounds(&self) -> Option<(Offset, Offset)> {
        None
    }

    /// The first offset in the log (moves up with retention).
    fn earliest(&self) -> Offset;

    /// The offset the next appended record will get.
    fn log_end(&self) -> Offset;

    /// Everything below this offset is durable to the log's strongest level.
    fn durable_end(&self) -> Offset;

    /// The first record whose timestamp is `>= timestamp` (for a compressed batch, its first
    /// record), or `None` if every record is older.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError>;

    /// The first record with the largest timestamp among the whole batches that end at or
    /// before `end` (Kafka's ListOffsets timestamp -3, KIP-734; a broker passes its high
    /// watermark), or `None` if there is no such batch. "Largest" goes by the batches'
    /// max timestamps; within the first batch holding it, the answer is its first record at
    /// or after that timestamp (the batch's first offset if none is). The file log reads the headers
    /// of a few batches and one batch whole, not the log. Errors: `Closed`, a read that
    /// failed, or `Corrupt` for a batch that fails its CRC or a segment whose batches do not
    /// match its index.
    fn offset_of_max_timestamp(&self, end: Offset) -> Result<Option<TimestampOffset>, LogError>;

    /// Removes every batch that ends at or after `offset` (a batch straddling `offset` goes
    /// whole), durably, and returns the new log end (`<= offset`). If `offset` is below the
    /// earliest offset the log is emptied and restarts at `offset`. Replication uses this to cut a
    /// follower back to where it agrees with the leader.
    fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError>;

    /// Makes everything appended so far durable; returns the new durable end. Fails with
    /// [`LogError::Truncated`] if a truncation at the same time cut below that end first.
    fn flush(&self) -> Result<Offset, LogError>;

    /// Deletes whole closed segments past the retention limits (total size, and age: the time
    /// since the broker appended the segment's newest batch, relative to `now_ms`). Never deletes the active segment. The file log also
    /// applies retention whenever it rolls a segment; an owner calls this periodically so idle
    /// logs expire too.
    fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError>;

    /// Flushes, records a clean shutdown so the next open is fast, and refuses further calls.
    fn close(&self) -> Result<(), LogError>;
}

/// Compile-time check that `LogStore` stays usable as `Box<dyn LogStore>`.
fn _obj_safe(_: Box<dyn LogStore>) {}

/// `read` (of at least one batch) cut to what fits in `max_bytes`: a read returns more only
/// when its first batch alone is larger, so that is all or nothing.
fn fitting(read: ReadBatches, from: Offset, max_bytes: usize) -> ReadBatches {
    if read.bytes.len() > max_bytes {
        ReadBatches {
            bytes: Bytes::new(),
            next_offset: from,
        }
    } else {
        read
    }
}
