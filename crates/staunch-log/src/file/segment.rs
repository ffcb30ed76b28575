//! One segment: a file of batches named by its base offset, with a sparse in-memory index.
//!
//! The index holds one entry per `index_interval_bytes` of batches: the entry's batch offset
//! (absolute, so a segment may span any number of offsets),
//! its byte position, and the largest timestamp of every batch *before* it. The first serves
//! offset lookups, the last serves timestamp lookups (all batches before an entry are older than
//! its `max_ts_before`, so a search for timestamp `t` may start at the last entry whose
//! `max_ts_before < t`). One structure, two lookups.

use std::sync::Arc;

use staunch_core::batch::{HEADER_SIZE, LOG_OVERHEAD};
use staunch_core::{Offset, RecordBatch};

use crate::LogError;
use crate::io::{ReadFrom, SegmentFile, read_exact_at, read_exact_from};

/// One index entry; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) offset: Offset,
    pub(crate) position: u32,
    pub(crate) max_ts_before: i64,
}

/// A segment's file handle, extent and index.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: Offset,
    pub(crate) file: Arc<dyn SegmentFile>,
    /// Bytes of valid batches; the file is never read past this.
    pub(crate) size: u64,
    /// File length including blocks reserved ahead of the data (active segment only); closed
    /// segments are trimmed to `size`.
    pub(crate) allocated: u64,
    /// Offset after the last record in the segment.
    pub(crate) next_offset: Offset,
    /// Largest batch max-timestamp, `i64::MIN` when empty.
    pub(crate) max_timestamp: i64,
    /// When the segment was created or reopened (ms), for rolling by age.
    pub(crate) created_ms: i64,
    /// Broker time (ms) of the newest append, for retention by age. For a segment recovered by
    /// scanning it is the open time: retention may keep data longer, never shorter.
    pub(crate) last_append_ms: i64,
    pub(crate) index: Vec<IndexEntry>,
    pub(crate) bytes_since_index: u64,
}

/// File name of the segment data for `base`.
pub(crate) fn log_name(base: Offset) -> String {
    format!("{base:020}.log")
}

/// File name of the persisted index for `base`.
pub(crate) fn index_name(base: Offset) -> String {
    format!("{base:020}.index")
}

/// The base offset a segment file name encodes, if it is one.
pub(crate) fn parse_log_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    /// An empty segment.
    pub(crate) fn empty(base: Offset, file: Arc<dyn SegmentFile>, now_ms: i64) -> Self {
        Self {
            base,
            file,
            size: 0,
            allocated: 0,
            next_offset: base,
            max_timestamp: i64::MIN,
            created_ms: now_ms,
            last_append_ms: now_ms,
            index: Vec::new(),
            bytes_since_index: 0,
        }
    }

    pub(crate) fn name(&self) -> String {
        log_name(self.base)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Accounts for a batch written at `position`.
    pub(crate) fn note_batch(
        &mut self,
        position: u64,
        size: u64,
        base_offset: Offset,
        next_offset: Offset,
        max_timestamp: i64,
        index_interval: u64,
    ) {
        if self.index.is_empty() || self.bytes_since_index >= index_interval {
            self.index.push(IndexEntry {
                offset: base_offset,
                position: position as u32,
                max_ts_before: self.max_timestamp,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
        self.size = position + size;
        self.next_offset = next_offset;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// Byte position of a batch at or before the one containing `offset`.
    pub(crate) fn position_for_offset(&self, offset: Offset) -> u64 {
        self.index_entry_for_offset(offset).0
    }

    /// The last index entry at or before `offset`: the byte position of a batch at or before
    /// the one containing `offset`, and the largest batch max-timestamp before that position
    /// (`i64::MIN` if none). `(0, i64::MIN)` if no entry is.
    pub(crate) fn index_entry_for_offset(&self, offset: Offset) -> (u64, i64) {
        let i = self.index.partition_point(|e| e.offset <= offset);
        match i.checked_sub(1).map(|i| &self.index[i]) {
            Some(e) => (u64::from(e.position), e.max_ts_before),
            None => (0, i64::MIN),
        }
    }

    /// Byte position of a batch at or before the first one with a record at or after `timestamp`.
    pub(crate) fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let i = self.index.partition_point(|e| e.max_ts_before < timestamp);
        if i == 0 {
            0
        } else {
            u64::from(self.index[i - 1].position)
        }
    }
}

/// The `size` bytes of the batch at `position`, read and CRC-checked.
pub(crate) fn read_batch_at(
    file: &dyn SegmentFile,
    name: &str,
    position: u64,
    size: u64,
) -> Result<Vec<u8>, LogError> {
    let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    read_exact_at(file, &mut bytes, position)
        .map_err(|e| LogError::io(format!("reading {name} at {position}"), e))?;
    RecordBatch::parse(&bytes)
        .and_then(|b| b.verify_integrity())
        .map_err(|e| LogError::Corrupt {
            file: name.to_owned(),
            position,
            reason: e.to_string(),
        })?;
    Ok(bytes)
}

/// The fixed header of the batch at `position`, read and sanity-checked (not CRC-checked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderPeek {
    pub(crate) next_offset: Offset,
    pub(crate) size: u64,
    pub(crate) max_timestamp: i64,
}

/// Reads the header of the batch at `position` of a segment whose valid bytes end at `end`.
pub(crate) fn peek_header(
    file: &dyn SegmentFile,
    name: &str,
    position: u64,
    end: u64,
) -> Result<HeaderPeek, LogError> {
    peek_header_from(file, name, position, end, ReadFrom::Disk)?.ok_or_else(|| {
        LogError::io(
            format!("reading {name} at {position}"),
            std::io::ErrorKind::WouldBlock.into(),
        )
    })
}

/// [`peek_header`] reading `from` where it may: `None` if the header is not in memory and
/// `from` is [`ReadFrom::Cache`].
pub(crate) fn peek_header_from(
    file: &dyn SegmentFile,
    name: &str,
    position: u64,
    end: u64,
    from: ReadFrom,
) -> Result<Option<HeaderPeek>, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        file: name.to_owned(),
        position,
        reason,
    };
    if position + HEADER_SIZE as u64 > end {
        return Err(corrupt("batch header runs past the segment end".into()));
    }
    let mut header = [0u8; HEADER_SIZE];
    let read = read_exact_from(file, &mut header, position, from)
        .map_err(|e| LogError::io(format!("reading {name} at {position}"), e))?;
    if !read {
        return Ok(None);
    }
    let size = match RecordBatch::peek_size(&header) {
        Some(Ok(size)) => size as u64,
        Some(Err(e)) => return Err(corrupt(e.to_string())),
        None => return Err(corrupt("short header".into())),
    };
    if position + size > end {
        return Err(corrupt("batch runs past the segment end".into()));
    }
    // A fake size of exactly the header lets us use the accessors on the header alone.
    let mut view = header;
    view[8..12].copy_from_slice(&((HEADER_SIZE - LOG_OVERHEAD) as i32).to_be_bytes());
    let batch = RecordBatch::parse(&view).map_err(|e| corrupt(e.to_string()))?;
    if batch.last_offset_delta() < 0 {
        return Err(corrupt("negative last offset delta".into()));
    }
    Ok(Some(HeaderPeek {
        next_offset: batch.next_offset(),
        size,
        max_timestamp: batch.max_timestamp(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(log_name(42), "00000000000000000042.log");
        assert_eq!(parse_log_name(&log_name(42)), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
    }
}
