//! Reading: from the index entry at or before an offset to the batch that holds it, then as many
//! whole batches as fit, each checked against its CRC — from disk, or from memory only without
//! ever blocking ([`ReadFrom::Cache`]).

use bytes::Bytes;
use staunch_core::{Offset, RecordBatch};

use super::Inner;
use super::segment::peek_header_from;
use crate::LogError;
use crate::io::{ReadFrom, read_exact_from};
use crate::read_buffer::ReadBuffer;
#[cfg(doc)]
use crate::store::LogStore;
use crate::store::ReadBatches;

impl Inner {
    /// Reads as [`LogStore::read`] promises if `at_least_one`, else as
    /// [`LogStore::read_within`] (a first batch larger than `max_bytes` is then not read: only
    /// batch headers are, from the index entry up to it), taking bytes `source` where they
    /// may come from: `None` if they are not all in
    /// memory, or a writer holds the log, and `source` is [`ReadFrom::Cache`] (never `None`
    /// from [`ReadFrom::Disk`]).
    pub(super) fn read_from(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
        source: ReadFrom,
    ) -> Result<Option<ReadBatches>, LogError> {
        match self.read_segment(from, max_bytes, at_least_one, source) {
            // Retention deleted the segment after it was picked and the file cache had closed
            // its descriptor: the offset is gone now, and says so.
            Err(LogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let st = self.read_state();
                st.check_range(from)?;
                Err(LogError::io(
                    format!("reading offset {from}: its segment file is missing"),
                    source,
                ))
            }
            other => other,
        }
    }

    /// [`Inner::read_from`], once.
    fn read_segment(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
        source: ReadFrom,
    ) -> Result<Option<ReadBatches>, LogError> {
        let (file, name, mut position, end) = {
            let st = match source {
                ReadFrom::Disk => self.read_state(),
                ReadFrom::Cache => match self.try_read_state() {
                    Some(st) => st,
                    None => return Ok(None),
                },
            };
            if st.closed {
                return Err(LogError::Closed);
            }
            st.check_range(from)?;
            if from == st.log_end {
                return Ok(Some(ReadBatches {
                    bytes: Bytes::new(),
                    next_offset: from,
                }));
            }
            let (_, segment) = st
                .segments
                .range(..=from)
                .next_back()
                .expect("from >= earliest");
            (
                segment.file.clone(),
                segment.name(),
                segment.position_for_offset(from),
                segment.size,
            )
        };
        // Walk batch headers from the index position to the batch that holds `from`.
        let first = loop {
            let Some(header) = peek_header_from(&*file, &name, position, end, source)? else {
                return Ok(None);
            };
            if header.next_offset > from {
                break header;
            }
            position += header.size;
        };
        if !at_least_one && first.size > max_bytes as u64 {
            return Ok(Some(ReadBatches {
                bytes: Bytes::new(),
                next_offset: from,
            }));
        }
        let want = (first.size.max(max_bytes as u64)).min(end - position) as usize;
        let mut buffer = ReadBuffer::new(want);
        let read = read_exact_from(&*file, buffer.as_mut_slice(), position, source)
            .map_err(|e| LogError::io(format!("reading {name} at {position}"), e))?;
        if !read {
            return Ok(None);
        }

        let bytes = buffer.as_ref();
        let mut kept = 0;
        let mut next_offset = from;
        while kept < bytes.len() {
            let Ok(batch) = RecordBatch::parse(&bytes[kept..]) else {
                break;
            };
            if let Err(e) = batch.verify_integrity() {
                if kept == 0 {
                    return Err(LogError::Corrupt {
                        file: name,
                        position,
                        reason: e.to_string(),
                    });
                }
                break;
            }
            next_offset = batch.next_offset();
            kept += batch.size();
        }
        buffer.truncate(kept);
        Ok(Some(ReadBatches {
            bytes: buffer.into_bytes(),
            next_offset,
        }))
    }

    /// [`Inner::read_from`] the disk, which always answers.
    pub(super) fn read_from_disk(
        &self,
        from: Offset,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadBatches, LogError> {
        self.read_from(from, max_bytes, at_least_one, ReadFrom::Disk)?
            .ok_or_else(|| LogError::io("reading", std::io::ErrorKind::WouldBlock.into()))
    }
}
