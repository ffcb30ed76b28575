//! Finding records by timestamp without reading the log (Kafka's ListOffsets): each segment
//! knows its largest batch max-timestamp, and its time index (`max_ts_before` per entry)
//! leads to the first batch that reaches a timestamp. [`Inner::offset_for_timestamp`] walks
//! the headers after one index entry and reads one batch.
//!
//! For the first record with the largest timestamp (timestamp -3), the segment with the
//! largest max timestamp is the one to search. That lookup reads the headers of the batches
//! between two index entries at most three times (once in the winning whole segment, twice
//! in the segment `end` falls inside), and one batch whole.
//!
//! Only whole batches ending at or before the caller's `end` count (a broker passes its high
//! watermark). Segments wholly below `end` answer from their max timestamps; the one segment
//! that `end` falls inside (a follower's or a leader's active segment) answers from its index up
//! to the last entry at or before `end` and from the headers after that entry.

use std::sync::Arc;

use staunch_core::{Offset, RecordBatch};

use super::Inner;
use super::segment::{Segment, peek_header, read_batch_at};
use crate::LogError;
use crate::io::SegmentFile;
use crate::store::TimestampOffset;
use crate::validate::first_record_at_or_after;

/// A segment's file, taken under the state lock and read after it is released.
struct SegmentFileRef {
    file: Arc<dyn SegmentFile>,
    name: String,
    /// Bytes of valid batches when it was taken.
    size: u64,
}

impl SegmentFileRef {
    fn of(segment: &Segment) -> Self {
        SegmentFileRef {
            file: Arc::clone(&segment.file),
            name: segment.name(),
            size: segment.size,
        }
    }

    /// The position and size of the first batch from `from` on whose max timestamp is at
    /// least `timestamp`, among the batches ending at or before `end`.
    fn first_reaching(
        &self,
        from: u64,
        timestamp: i64,
        end: Offset,
    ) -> Result<Option<(u64, u64)>, LogError> {
        let mut position = from;
        while position < self.size {
            let header = peek_header(&*self.file, &self.name, position, self.size)?;
            if header.next_offset > end {
                break;
            }
            if header.max_timestamp >= timestamp {
                return Ok(Some((position, header.size)));
            }
            position += header.size;
        }
        Ok(None)
    }

    /// The largest batch max-timestamp from `from` on among the batches ending at or before
    /// `end`, with the position and size of the first batch that has it.
    fn largest_from(&self, from: u64, end: Offset) -> Result<Option<(i64, u64, u64)>, LogError> {
        let mut best: Option<(i64, u64, u64)> = None;
        let mut position = from;
        while position < self.size {
            let header = peek_header(&*self.file, &self.name, position, self.size)?;
            if header.next_offset > end {
                break;
            }
            if best.is_none_or(|(ts, _, _)| header.max_timestamp > ts) {
                best = Some((header.max_timestamp, position, header.size));
            }
            position += header.size;
        }
        Ok(best)
    }
}

/// Where to look in the segment wholly below `end` with the largest max timestamp.
struct WholeSegment {
    file: SegmentFileRef,
    max_timestamp: i64,
    /// A batch position at or before the first batch reaching `max_timestamp`.
    search_from: u64,
}

/// Where to look in the segment that `end` falls inside.
struct StraddlingSegment {
    file: SegmentFileRef,
    /// The last index entry at or before `end`: its position, and the largest max timestamp
    /// of the batches before it.
    tail_from: u64,
    max_before_tail: i64,
    /// A batch position at or before the first batch reaching `max_before_tail`.
    search_from: u64,
}

/// The batch holding the answer: its file, position, size and max timestamp.
struct Found {
    file: SegmentFileRef,
    position: u64,
    size: u64,
    max_timestamp: i64,
}

impl Found {
    /// Reads the batch (CRC-checked) and answers with its first record at or after
    /// `timestamp` (the batch's first offset if none is).
    fn record_at_or_after(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        let file = &self.file;
        let bytes = read_batch_at(&*file.file, &file.name, self.position, self.size)?;
        let batch = RecordBatch::parse(&bytes).map_err(|e| LogError::Corrupt {
            file: file.name.clone(),
            position: self.position,
            reason: e.to_string(),
        })?;
        Ok(first_record_at_or_after(&batch, timestamp)
            .map(|(offset, timestamp)| TimestampOffset { offset, timestamp }))
    }
}

impl Inner {
    /// [`LogStore::offset_for_timestamp`](crate::LogStore::offset_for_timestamp) of the file
    /// log: the first segment whose max timestamp reaches `timestamp`, searched from its index.
    pub(super) fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let (file, search_from) = {
            let st = self.read_state();
            if st.closed {
                return Err(LogError::Closed);
            }
            let Some(segment) = st.segments.values().find(|s| s.max_timestamp >= timestamp) else {
                return Ok(None);
            };
            (
                SegmentFileRef::of(segment),
                segment.position_for_timestamp(timestamp),
            )
        };
        match file.first_reaching(search_from, timestamp, Offset::MAX)? {
            Some((position, size)) => Found {
                file,
                position,
                size,
                max_timestamp: timestamp,
            }
            .record_at_or_after(timestamp),
            None => Ok(None),
        }
    }

    /// [`LogStore::offset_of_max_timestamp`](crate::LogStore::offset_of_max_timestamp) of the
    /// file log (see the [module docs](self)).
    pub(super) fn offset_of_max_timestamp(
        &self,
        end: Offset,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let (whole, straddling) = {
            let st = self.read_state();
            if st.closed {
                return Err(LogError::Closed);
            }
            // Segments are in offset order: a later segment wins only with a larger timestamp.
            let mut whole: Option<&Segment> = None;
            let mut straddling: Option<&Segment> = None;
            for segment in st.segments.values() {
                if segment.is_empty() || segment.base >= end {
                    continue;
                }
                if segment.next_offset <= end {
                    if whole.is_none_or(|w| segment.max_timestamp > w.max_timestamp) {
                        whole = Some(segment);
                    }
                } else {
                    straddling = Some(segment);
                }
            }
            (
                whole.map(|s| WholeSegment {
                    file: SegmentFileRef::of(s),
                    max_timestamp: s.max_timestamp,
                    search_from: s.position_for_timestamp(s.max_timestamp),
                }),
                straddling.map(|s| {
                    let (tail_from, max_before_tail) = s.index_entry_for_offset(end);
                    StraddlingSegment {
                        file: SegmentFileRef::of(s),
                        tail_from,
                        max_before_tail,
                        search_from: s.position_for_timestamp(max_before_tail),
                    }
                }),
            )
        };
        let whole = whole.map(find_in_whole).transpose()?;
        let straddling = match straddling {
            Some(s) => find_in_straddling(s, end)?,
            None => None,
        };
        // The straddling segment comes after every whole one: it wins only with a larger one.
        let found = match (whole, straddling) {
            (Some(w), Some(s)) if s.max_timestamp > w.max_timestamp => Some(s),
            (Some(w), _) => Some(w),
            (None, s) => s,
        };
        match found {
            Some(found) => found.record_at_or_after(found.max_timestamp),
            None => Ok(None),
        }
    }
}

/// The first batch of a segment wholly below `end` reaching its max timestamp; the index and
/// the segment disagree if there is none.
fn find_in_whole(w: WholeSegment) -> Result<Found, LogError> {
    match w
        .file
        .first_reaching(w.search_from, w.max_timestamp, Offset::MAX)?
    {
        Some((position, size)) => Ok(Found {
            file: w.file,
            position,
            size,
            max_timestamp: w.max_timestamp,
        }),
        None => Err(LogError::Corrupt {
            file: w.file.name.clone(),
            position: w.search_from,
            reason: format!(
                "no batch has the segment's largest timestamp {}",
                w.max_timestamp
            ),
        }),
    }
}

/// The first batch ending at or before `end` with the largest max timestamp in the segment
/// `end` falls inside: after the tail's index entry if the tail holds a larger one than the
/// batches before it, else before it.
fn find_in_straddling(s: StraddlingSegment, end: Offset) -> Result<Option<Found>, LogError> {
    // With no batch before the tail, `max_before_tail` is `i64::MIN` only as a placeholder:
    // a tail batch of that very timestamp wins.
    if let Some((max_timestamp, position, size)) = s.file.largest_from(s.tail_from, end)?
        && (s.tail_from == 0 || max_timestamp > s.max_before_tail)
    {
        return Ok(Some(Found {
            file: s.file,
            position,
            size,
            max_timestamp,
        }));
    }
    if s.tail_from == 0 {
        // No batch before the tail.
        return Ok(None);
    }
    let (position, size) = s
        .file
        .first_reaching(s.search_from, s.max_before_tail, end)?
        .ok_or_else(|| LogError::Corrupt {
            file: s.file.name.clone(),
            position: s.search_from,
            reason: format!(
                "no batch has the index's largest timestamp {}",
                s.max_before_tail
            ),
        })?;
    Ok(Some(Found {
        file: s.file,
        position,
        size,
        max_timestamp: s.max_before_tail,
    }))
}
