//! The fetch path: reading partitions below their high watermarks (inline when the data is
//! small and in memory, else on the blocking pool), long polls, and offset look-ups
//! (ListOffsets, OffsetForLeaderEpoch).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_core::{ErrorCode, Offset};

use super::{Broker, blocking};
use crate::types::*;

/// A fetch asking for more than this many bytes reads on the blocking pool, and so does one
/// that has read more than this many on the async thread (it starts over there), so an
/// async worker is held by a read from memory for at most this much and one more partition's
/// read (0.25–0.35 ms per MiB here, CRC checks included). Two partitions at Kafka's default
/// 1 MiB each (a topic and its retry topic) still read inline.
const INLINE_READ_MAX: usize = 2 << 20;
/// A fetch of more partitions than this reads on the blocking pool.
const INLINE_PARTITIONS_MAX: usize = 8;

/// Counts one fetch in `Inner::fetches_waiting` while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Broker {
    /// Reads from each partition, only below its high watermark — so a consumer never sees a
    /// record that could vanish in a crash. Waits up to `max_wait` for at least `min_bytes` in
    /// all, but answers as soon as that much is there (at once for `min_bytes` 0, as Kafka).
    pub async fn fetch(
        &self,
        max_wait: Duration,
        min_bytes: i32,
        max_bytes: i32,
        partitions: Vec<FetchPartition>,
    ) -> Vec<FetchResult> {
        let start = Instant::now();
        // A wait too long for a deadline to hold (e.g. `Duration::MAX`) waits about 30 years.
        let deadline = start
            .checked_add(max_wait)
            .unwrap_or_else(|| start + Duration::from_secs(30 * 365 * 24 * 3600));
        let mut version = self.inner.data_version.subscribe();
        let mut closing = self.inner.closing.subscribe();
        let partitions = Arc::new(partitions);
        loop {
            version.mark_unchanged();
            let results = match self.read_partitions_inline(&partitions, max_bytes) {
                Some(results) => results,
                None => {
                    let broker = self.clone();
                    let wanted = partitions.clone();
                    blocking(move || broker.read_partitions(&wanted, max_bytes))
                        .await
                        .unwrap_or_default()
                }
            };
            let total: usize = results.iter().map(|r| r.records.len()).sum();
            let has_error = results.iter().any(|r| r.error != ErrorCode::None);
            let now = Instant::now();
            if total >= min_bytes.max(0) as usize
                || has_error
                || now >= deadline
                || *closing.borrow()
            {
                return results;
            }
            let _waiting = Waiting::new(&self.inner.fetches_waiting);
            tokio::select! {
                _ = tokio::time::sleep_until((deadline).into()) => {}
                _ = version.changed() => {}
                _ = closing.changed() => {}
            }
        }
    }

    /// How many fetches are waiting for data now: each has read too little and will be woken
    /// by the next high-watermark move (or its deadline). For tests and metrics.
    pub fn fetches_waiting(&self) -> usize {
        self.inner.fetches_waiting.load(Ordering::SeqCst)
    }

    /// [`Broker::read_partitions`] on the calling (async) thread if it is small (at most
    /// [`INLINE_PARTITIONS_MAX`] partitions asking for at most [`INLINE_READ_MAX`] bytes) and
    /// every byte of it is in memory; `None` otherwise, or as soon as the bytes read pass
    /// [`INLINE_READ_MAX`] (the first partition with data reads at least one whole batch,
    /// whatever it asked for).
    /// Serving hot data here spares two thread hand-offs per fetch (to the blocking pool and
    /// back), measured at 70–90 µs per 1 MiB fetch on the 2-core development machine (the
    /// consumer benchmark's plain fetch loop went from 2.5–2.9 to 3.1–3.6 M records/s).
    fn read_partitions_inline(
        &self,
        wanted: &[FetchPartition],
        max_bytes: i32,
    ) -> Option<Vec<FetchResult>> {
        let most: usize = wanted.iter().map(|w| w.max_bytes.max(0) as usize).sum();
        if wanted.len() > INLINE_PARTITIONS_MAX
            || most.min(max_bytes.max(0) as usize) > INLINE_READ_MAX
        {
            return None;
        }
        self.read_partitions_from(wanted, max_bytes, true)
    }

    /// Reads each wanted partition (from the disk if need be: call from a thread that may
    /// block).
    fn read_partitions(&self, wanted: &[FetchPartition], max_bytes: i32) -> Vec<FetchResult> {
        self.read_partitions_from(wanted, max_bytes, false)
            .unwrap_or_default()
    }

    /// Reads each wanted partition, only from memory if `cached_only` (then `None` if any of
    /// them would wait).
    fn read_partitions_from(
        &self,
        wanted: &[FetchPartition],
        max_bytes: i32,
        cached_only: bool,
    ) -> Option<Vec<FetchResult>> {
        let mut budget = max_bytes.max(0) as usize;
        let mut read_so_far = 0;
        let mut at_least_one = true;
        wanted
            .iter()
            .map(|want| {
                if cached_only && read_so_far > INLINE_READ_MAX {
                    return None;
                }
                let result = |error, hw, start, records| FetchResult {
                    topic: want.topic.clone(),
                    partition: want.partition,
                    error,
                    high_watermark: hw,
                    log_start_offset: start,
                    records,
                };
                if want.current_leader_epoch > 0 {
                    return Some(result(ErrorCode::UnknownLeaderEpoch, -1, -1, Bytes::new()));
                }
                let partition = match self.partition(&want.topic, want.partition) {
                    Ok(partition) => partition,
                    Err(code) => return Some(result(code, -1, -1, Bytes::new())),
                };
                // Kafka's rule: until a partition has brought data, the next one returns at
                // least one batch whatever the limits, so a consumer always makes progress;
                // after that the request's budget binds (an exhausted one reads nothing).
                let limit = (want.max_bytes.max(0) as usize).min(budget);
                let _span = partition.span().enter();
                let read = if cached_only {
                    partition
                        .read_cached(want.fetch_offset, limit, at_least_one)
                        .transpose()?
                } else {
                    partition.read(want.fetch_offset, limit, at_least_one)
                };
                Some(match read {
                    Ok(fetched) => {
                        if !fetched.records.is_empty() {
                            at_least_one = false;
                        }
                        budget = budget.saturating_sub(fetched.records.len());
                        read_so_far += fetched.records.len();
                        result(
                            ErrorCode::None,
                            fetched.high_watermark,
                            fetched.log_start_offset,
                            fetched.records,
                        )
                    }
                    Err(error) => result(
                        error,
                        partition.high_watermark(),
                        if cached_only {
                            partition.log_start_offset_cached()?
                        } else {
                            partition.log_start_offset()
                        },
                        Bytes::new(),
                    ),
                })
            })
            .collect()
    }

    /// Kafka's ListOffsets for one partition: `timestamp` -1 is the latest visible offset (the
    /// high watermark), -2 the earliest, -3 the first record with the largest timestamp (from the
    /// segments' largest timestamps and time indexes), anything else the first offset with a timestamp at or
    /// after it. Returns (offset, timestamp); (-1, -1) when no record is that recent (or, for
    /// -3, none is visible).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<(Offset, i64), ErrorCode> {
        let p = self.partition(topic, partition)?;
        match timestamp {
            -1 => Ok((p.high_watermark(), -1)),
            -2 => Ok((p.log_start_offset(), -1)),
            -3 => {
                let found = blocking(move || p.offset_of_max_timestamp()).await??;
                Ok(found.unwrap_or((-1, -1)))
            }
            ts if ts >= 0 => {
                let found = blocking(move || p.offset_for_timestamp(ts)).await??;
                Ok(found.unwrap_or((-1, -1)))
            }
            _ => Err(ErrorCode::UnsupportedVersion),
        }
    }

    /// The end offset of `leader_epoch` on a partition (Kafka's OffsetForLeaderEpoch). Staunch
    /// is single-node so every batch carries epoch 0: epoch 0 ends at the high watermark and
    /// any other epoch is unknown, answered as (-1, -1).
    pub fn epoch_end_offset(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<(i32, Offset), ErrorCode> {
        let p = self.partition(topic, partition)?;
        if current_leader_epoch > 0 {
            return Err(ErrorCode::UnknownLeaderEpoch);
        }
        Ok(if leader_epoch == 0 {
            (0, p.high_watermark())
        } else {
            (-1, -1)
        })
    }
}
