//! Truncation: cutting the log back to an offset, crash-safely. A durable intent comes first, then
//! the segment files are cut or removed, and the intent goes only once all of that is durable;
//! recovery finishes a truncation a crash interrupted, using [`cut_position`] as well.

use staunch_core::Offset;

use super::checkpoint::Checkpoint;
use super::meta::{self, TRUNCATE_INTENT};
use super::segment::{Segment, index_name, log_name, peek_header};
use super::{Inner, State};
use crate::LogError;
use crate::io::replace_file;

/// Shrinks `segment`'s extent and index to the batches that end before `offset` and returns the
/// new size. Reads batch headers from the nearest index entry only.
pub(super) fn cut_position(
    segment: &mut Segment,
    offset: Offset,
    name: &str,
) -> Result<u64, LogError> {
    let base = segment.base;
    let mut entries = segment.index.partition_point(|e| e.offset < offset);
    let from = entries.checked_sub(1).map(|i| segment.index[i]);
    let (mut position, mut next, mut max_ts) = from.map_or((0, base, i64::MIN), |e| {
        (u64::from(e.position), e.offset, e.max_ts_before)
    });
    let start = position;
    while position < segment.size {
        let header = peek_header(&*segment.file, name, position, segment.size)?;
        if header.next_offset > offset {
            break;
        }
        position += header.size;
        next = header.next_offset;
        max_ts = max_ts.max(header.max_timestamp);
    }
    if position == start && entries > 0 {
        entries -= 1; // the indexed batch itself straddles `offset`
    }
    segment.index.truncate(entries);
    segment.size = position;
    segment.next_offset = next;
    segment.max_timestamp = max_ts;
    segment.bytes_since_index = segment
        .index
        .last()
        .map_or(0, |e| position - u64::from(e.position));
    Ok(position)
}

impl Inner {
    pub(super) fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        self.check_usable(&st)?;
        if offset >= st.log_end {
            return Ok(st.log_end);
        }
        self.before_change()?;
        // Held until the durable end is lowered, so the background thread cannot record a
        // recovery point this truncation removes (the `checkpoint` module).
        let mut checkpoint = self.lock_checkpoint();
        st.generation += 1;
        // Crash safety: the steps below can be interrupted anywhere; the durable intent makes
        // the next open finish the truncation instead of finding half of it.
        replace_file(
            &*self.io,
            TRUNCATE_INTENT,
            &meta::encode_truncate_intent(offset),
        )
        .map_err(|e| LogError::io("writing the truncation intent", e))?;
        if let Err(e) = self.truncate_segments(&mut st, offset, now, &mut checkpoint) {
            // The intent is on disk: a log that went on appending would lose those appends
            // when the next open finishes the truncation. Refuse everything instead.
            return Err(self.fail(format!("truncation to offset {offset} failed: {e}")));
        }
        st.log_end = st.active().next_offset;
        let mut sync = self.lock_sync();
        sync.generation = st.generation;
        sync.durable_end = sync.durable_end.min(st.log_end);
        Ok(st.log_end)
    }

    /// The steps of a truncation after its intent is durable; see [`Inner::truncate_to`].
    fn truncate_segments(
        &self,
        st: &mut State,
        offset: Offset,
        now: i64,
        checkpoint: &mut Checkpoint,
    ) -> Result<(), LogError> {
        self.end_zero_fill();
        let removed: Vec<Offset>;
        if offset <= st.earliest() {
            // Everything goes; the log restarts at `offset` in a fresh segment.
            let new_name = log_name(offset);
            removed = st
                .segments
                .keys()
                .copied()
                .filter(|&b| b != offset)
                .collect();
            let file = self
                .io
                .open(&new_name, true)
                .map_err(|e| LogError::io(format!("creating {new_name}"), e))?;
            file.set_len(0)
                .map_err(|e| LogError::io(format!("truncating {new_name}"), e))?;
            st.segments.clear();
            st.segments
                .insert(offset, Segment::empty(offset, file, now));
        } else {
            // The segment holding `offset - 1` becomes the active one; later ones go.
            let keep = *st
                .segments
                .range(..offset)
                .next_back()
                .expect("offset > earliest")
                .0;
            removed = st.segments.range(keep + 1..).map(|(b, _)| *b).collect();
            for base in &removed {
                st.segments.remove(base);
            }
            let active = st.active_mut();
            let name = active.name();
            let size = cut_position(active, offset, &name)?;
            active
                .file
                .set_len(size)
                .map_err(|e| LogError::io(format!("truncating {name}"), e))?;
            active.allocated = size;
        }
        let active = st.active();
        let name = active.name();
        self.timed_sync(
            || format!("fdatasync of {name} after truncation"),
            || active.file.sync_data(),
        )
        .map_err(|e| LogError::io(format!("fdatasync of {name} after truncation"), e))?;
        for base in &removed {
            let _ = self.io.remove(&index_name(*base));
            self.io
                .remove(&log_name(*base))
                .map_err(|e| LogError::io(format!("removing {}", log_name(*base)), e))?;
        }
        // The active segment may have been a closed one: its index file is stale now.
        let _ = self.io.remove(&index_name(active.base));
        let active_base = active.base;
        let segments = &st.segments;
        st.unsealed
            .retain(|b| *b != active_base && segments.contains_key(b));
        self.io
            .sync_dir()
            .map_err(|e| LogError::io("syncing the log directory after truncation", e))?;
        // A recovery point above the new end would call the next torn tail there damage: it
        // is lowered before the intent (which overrides it at an open) goes.
        let end = st.active().next_offset;
        if st.unsealed.is_empty() {
            self.note_all_synced();
        }
        if checkpoint.recorded > end {
            let durable = if st.unsealed.is_empty() {
                end
            } else {
                end.min(self.durable_end())
            };
            self.record_recovery_point(checkpoint, durable)?;
        }
        // The intent goes only once everything it describes is durable.
        self.io
            .remove(TRUNCATE_INTENT)
            .and_then(|()| self.io.sync_dir())
            .map_err(|e| LogError::io("syncing the log directory after truncation", e))?;
        Ok(())
    }
}
