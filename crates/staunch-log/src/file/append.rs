//! Appending: validating, stamping and writing batches at the log end ([`Inner::write`]), and
//! rolling to a new segment when the active one is full or old ([`Inner::roll`]). Waiting for
//! durability is the `group_commit` module's job, with one exception: under flush `always` a
//! write never leaves more than [`LogConfig::unsynced_window`] bytes written but unsynced (it
//! waits for a group fsync first, and an append larger than that is written in pieces with an
//! fsync between them), because recovery relies on that bound to tell a torn tail from damage
//! to durable data (the `recovery` module).

use std::sync::atomic::Ordering;

use staunch_core::LeaderEpoch;

#[cfg(doc)]
use super::FileLog;
use super::segment::{Segment, index_name, log_name};
use super::{Inner, State, meta};
use crate::LogError;
use crate::config::FlushPolicy;
#[cfg(doc)]
use crate::config::LogConfig;
use crate::error::is_out_of_space;
use crate::io::{replace_file, write_all_at};
use crate::store::{AppendInfo, Durability};
use crate::validate::{BatchSpan, check_append, stamp};

/// How far ahead of the data the active segment reserves disk blocks.
const PREALLOCATE_STEP: u64 = 64 << 20;

/// Where an append's bytes are split so that no piece but a single batch is larger than
/// `window` (0: no limit): the end of each piece, the last one being the end of the append.
/// Only called for an append larger than a non-zero window.
fn pieces(spans: &[BatchSpan], window: u64) -> Vec<usize> {
    let end = spans.last().map_or(0, |s| s.start + s.len);
    let mut ends = Vec::new();
    let mut start = 0;
    for span in spans {
        let span_end = span.start + span.len;
        if span_end - start > window as usize && span.start > start {
            ends.push(span.start);
            start = span.start;
        }
        if span_end == end {
            ends.push(end);
        }
    }
    ends
}

impl Inner {
    /// Closes the active segment and starts a new one at the log end. Under `always` the closed
    /// segment is sealed (fsync — at most one group commit's worth of data — and index) right
    /// here; under `interval` and `os` it is queued for the log's background job.
    fn roll(&self, st: &mut State, now_ms: i64) -> Result<(), LogError> {
        let seal_now = self.config.flush == FlushPolicy::Always;
        self.end_zero_fill();
        let active = st.active_mut();
        let name = active.name();
        // A closed segment is exactly as long as its data: recovery and the index rely on it.
        if let Err(e) = active.file.set_len(active.size) {
            return Err(self.fail(format!("trimming {name} while rolling failed: {e}")));
        }
        active.allocated = active.size;
        let active = st.active();
        let closed_base = active.base;
        let closed_end = active.next_offset;
        if seal_now {
            if let Err(e) = self.timed_sync(
                || format!("fdatasync of {name} while rolling"),
                || active.file.sync_data(),
            ) {
                return Err(self.fail(format!("fdatasync of {name} while rolling failed: {e}")));
            }
            if let Err(e) = replace_file(
                &*self.io,
                &index_name(active.base),
                &meta::encode_index(active),
            ) {
                // Not fatal: the next open scans a segment whose index is missing.
                tracing::warn!(dir = %self.dir, segment = %name, error = %e, "could not persist segment index");
            }
        }
        let base = st.log_end;
        let new_name = log_name(base);
        let file = self.io.open(&new_name, true).map_err(|e| {
            if is_out_of_space(&e) {
                LogError::DiskFull {
                    file: new_name.clone(),
                    source: e,
                }
            } else {
                LogError::io(format!("creating {new_name}"), e)
            }
        })?;
        if let Err(e) = self.timed_sync(
            || format!("fsync of the log directory after creating {new_name}"),
            || self.io.sync_dir(),
        ) {
            return Err(self.fail(format!(
                "fsync of the log directory after creating {new_name} failed: {e}"
            )));
        }
        st.segments.insert(base, Segment::empty(base, file, now_ms));
        if seal_now {
            self.note_all_synced();
            {
                let mut sync = self.lock_sync();
                // Not after a failure: the log may have given up on one of these fsyncs (hung).
                if sync.generation == st.generation && self.failure.get().is_none() {
                    sync.durable_end = sync.durable_end.max(closed_end);
                }
            }
            // The closed segment is durable: a cheap moment to record it (not fatal if it
            // fails: an older recovery point only protects less). Never after a failure: one
            // of its fsyncs may have been given up on.
            if self.failure.get().is_none()
                && let Err(e) = self.record_recovery_point(&mut self.lock_checkpoint(), closed_end)
            {
                tracing::warn!(dir = %self.dir, segment = %name, error = %e, "could not record the recovery point");
            }
        } else {
            st.unsealed.push_back(closed_base);
            self.request(|bg| bg.seal_requested = true);
        }
        Ok(())
    }

    /// Validates, stamps and writes `bytes` (not yet synced); see [`FileLog::write`].
    pub(super) fn write(
        &self,
        bytes: &mut [u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, LogError> {
        let spans = check_append(bytes, self.config.max_batch_bytes as usize)?;
        let max_timestamp = spans
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(i64::MIN);
        let now = self.clock.now_ms();
        // Before the state lock, which a hung fsync (a roll's) may hold.
        self.check_health()?;
        let window = self.config.unsynced_window();
        let mut st = self.write_state();
        self.check_usable(&st)?;
        // The first write after a clean open removes the clean-shutdown marker first.
        self.before_change()?;
        // Keep what a power cut could tear within the window: wait for a group fsync of what is
        // there first if this write would go past it.
        while window > 0 && {
            let unsynced = self.unsynced_bytes();
            unsynced > 0 && unsynced.saturating_add(bytes.len() as u64) > window
        } {
            let target = st.log_end;
            drop(st);
            match self.sync_through(target) {
                Ok(_) | Err(LogError::Truncated) => {}
                Err(e) => return Err(e),
            }
            st = self.write_state();
            self.check_usable(&st)?;
            if self.durable_end() >= st.log_end {
                // Everything written is on disk, whoever synced it.
                self.note_all_synced();
            }
        }

        let active = st.active();
        let full = active.size + bytes.len() as u64 > self.config.segment_bytes;
        let old =
            now.saturating_sub(active.created_ms) >= self.config.segment_age.as_millis() as i64;
        let rolled = !active.is_empty() && (full || old);
        if rolled {
            self.roll(&mut st, now)?;
        }

        let base = st.log_end;
        let end = stamp(bytes, &spans, base, leader_epoch);
        let segment_bytes = self.config.segment_bytes;
        let active = st.active_mut();
        let position = active.size;
        let needed = position + bytes.len() as u64;
        self.before_zero_filled_write(&mut st, position, needed);
        let active = st.active_mut();
        if needed > active.allocated && !self.zero_fills() {
            // Reserve blocks ahead: fdatasync of writes into reserved blocks skips most of the
            // file-system metadata work of growing the file (measured 2-3x cheaper for 128 KiB
            // groups on ext4). Best effort: without it appends still work.
            // Within the pool's budget, shared with zero-fill: thousands of partitions do not
            // reserve 64 MiB each.
            let want = needed.max((active.allocated + PREALLOCATE_STEP).min(segment_bytes));
            let extra = want - active.allocated;
            if self.take_preallocation_budget(active.base, extra) {
                match active.file.preallocate(want) {
                    Ok(()) => active.allocated = want,
                    Err(e) => {
                        self.return_preallocation_budget(extra);
                        tracing::debug!(error = %e, "preallocation failed; appending without");
                    }
                }
            }
        }
        let mut done = 0;
        let whole = [bytes.len()];
        let split;
        let ends: &[usize] = if window > 0 && bytes.len() as u64 > window {
            split = pieces(&spans, window);
            &split
        } else {
            &whole
        };
        for &piece in ends {
            if done > 0 {
                // A piece of an append larger than the window: the earlier pieces are fsynced
                // first (under the state lock; such appends are rare and large).
                let name = active.name();
                if let Err(e) = self.timed_sync(
                    || format!("fdatasync of {name} within an append"),
                    || active.file.sync_data(),
                ) {
                    return Err(
                        self.fail(format!("fdatasync of {name} within an append failed: {e}"))
                    );
                }
                // The log may have given up on that fsync (hung) meanwhile.
                self.check_health()?;
                self.note_all_synced();
            }
            if let Err(e) = write_all_at(&*active.file, &bytes[done..piece], position + done as u64)
            {
                let name = active.name();
                // Cut off whatever part of the write landed; later writes go to `position`
                // anyway. If earlier pieces were fsynced, so is the cut, or they would come
                // back after a crash.
                let cut = active.file.set_len(position);
                active.allocated = position;
                let synced = || {
                    self.timed_sync(
                        || format!("fdatasync of {name} after a failed write"),
                        || active.file.sync_data(),
                    )
                };
                if done > 0 && cut.and_then(|()| synced()).is_err() {
                    return Err(self.fail(format!(
                        "write to {name} failed ({e}) and cutting it off failed"
                    )));
                }
                return Err(if is_out_of_space(&e) {
                    LogError::DiskFull {
                        file: name,
                        source: e,
                    }
                } else {
                    self.fail(format!("write to {name} failed: {e}"))
                });
            }
            self.written_bytes
                .fetch_add((piece - done) as u64, Ordering::AcqRel);
            done = piece;
        }
        let interval = u64::from(self.config.index_interval_bytes);
        let mut next = base;
        for span in &spans {
            active.note_batch(
                position + span.start as u64,
                span.len as u64,
                next,
                next + span.records,
                span.max_timestamp,
                interval,
            );
            next += span.records;
        }
        debug_assert_eq!(next, end);
        active.max_timestamp = active.max_timestamp.max(max_timestamp);
        active.last_append_ms = now;
        st.log_end = end;
        let arm = self.after_write();
        drop(st);
        if arm {
            self.arm_write_deadlines();
        }

        if rolled {
            // A roll closes a segment, which is when retention can have something to delete.
            if let Err(e) = self.apply_retention(now) {
                tracing::warn!(dir = %self.dir, error = %e, "retention after a segment roll failed");
            }
        }
        Ok(AppendInfo {
            base_offset: base,
            last_offset: end - 1,
            append_time_ms: now,
            durability: Durability::PageCache,
        })
    }
}
