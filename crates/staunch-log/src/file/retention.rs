//! Retention: deleting whole closed segments, by age or total size ([`Inner::apply_retention`])
//! or below an offset ([`Inner::delete_segments_before`]). The active segment is never deleted.

use staunch_core::Offset;

use super::segment::{index_name, log_name};
use super::{Inner, State};
use crate::LogError;
use crate::store::RetentionOutcome;

impl Inner {
    pub(super) fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let st = self.write_state();
        if st.closed {
            return Err(LogError::Closed);
        }
        let mut total: u64 = st.segments.values().map(|s| s.size).sum();
        let mut doomed = Vec::new();
        for segment in st.segments.values().take(st.segments.len() - 1) {
            let too_old = self.config.retention_age.is_some_and(|age| {
                segment.last_append_ms < now_ms.saturating_sub(age.as_millis() as i64)
            });
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - segment.size >= limit);
            if !(too_old || too_big) {
                break;
            }
            total -= segment.size;
            doomed.push(segment.base);
        }
        self.remove_segments(st, &doomed, "retention")
    }

    /// Deletes every closed segment that lies wholly below `offset` (its records all have lower
    /// offsets). The active segment is never deleted.
    pub(super) fn delete_segments_before(
        &self,
        offset: Offset,
    ) -> Result<RetentionOutcome, LogError> {
        let st = self.write_state();
        if st.closed {
            return Err(LogError::Closed);
        }
        let bases: Vec<Offset> = st.segments.keys().copied().collect();
        let doomed: Vec<Offset> = bases
            .windows(2)
            .take_while(|pair| pair[1] <= offset)
            .map(|pair| pair[0])
            .collect();
        self.remove_segments(st, &doomed, "deletion below an offset")
    }

    /// Removes the segments based at `doomed` (closed ones, oldest first) from the state, then
    /// their files, then syncs the directory.
    fn remove_segments(
        &self,
        mut st: std::sync::RwLockWriteGuard<'_, State>,
        doomed: &[Offset],
        why: &str,
    ) -> Result<RetentionOutcome, LogError> {
        if !doomed.is_empty() {
            self.before_change()?;
        }
        let mut outcome = RetentionOutcome::default();
        for base in doomed {
            if let Some(segment) = st.segments.remove(base) {
                outcome.segments_deleted += 1;
                outcome.bytes_deleted += segment.size;
            }
        }
        st.unsealed.retain(|b| !doomed.contains(b));
        outcome.earliest = st.earliest();
        drop(st);
        for base in doomed {
            for name in [index_name(*base), log_name(*base)] {
                self.io
                    .remove(&name)
                    .map_err(|e| LogError::io(format!("removing {name}"), e))?;
            }
        }
        if !doomed.is_empty() {
            self.timed_sync(
                || "fsync of the log directory after deleting segments".to_owned(),
                || self.io.sync_dir(),
            )
            .map_err(|e| LogError::io("syncing the log directory", e))?;
            tracing::info!(
                dir = %self.dir,
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                earliest = outcome.earliest,
                why,
                "deleted segments"
            );
        }
        Ok(outcome)
    }
}
