//! The clean-shutdown marker kept after a clean open, and removed lazily: just before the first
//! change of the log's files.
//!
//! A valid marker says: at the close that wrote it, every byte of the log was fsynced, the
//! active segment was exactly `active_size` bytes long with a valid index file, and the log ended
//! at `log_end`. That stays true for as long as nothing in the directory changes. So an open that
//! trusted the marker (the `recovery` module) leaves it on disk, and [`Inner::before_change`]
//! removes it — durably: remove, then fsync the directory — before the first change after the
//! open: an append, a roll, a truncation, a retention deletion, a zero-fill or a trim of zeros,
//! an index written, a recovery point recorded, a close that has something to write. Every path
//! of the `file` module that writes through the log's [`SegmentIo`](crate::io::SegmentIo) or a
//! segment file calls it first; after the first time it costs one atomic load.
//!
//! While the marker is on disk, then, the directory is exactly what the close left, and
//!
//! - a crash (kill -9 or power cut) finds the marker and the files it describes: the next open
//!   trusts them, as after the clean close;
//! - a close writes and fsyncs nothing ([`Inner::close_unchanged`]): the marker on disk already
//!   says everything a close would write again.
//!
//! Once a change may have reached the disk, the marker is gone from it (its removal was durable
//! before the change started), so a crash from then on is noticed and recovered by a scan.
//!
//! Failures follow the log's rules: if the removal fails, the change does not happen and its
//! caller gets the error; if the directory fsync fails (or hangs past `sync_timeout`), the log
//! fails, since what that fsync left on disk is unknown. The marker counts as on disk until its
//! removal was durable, so a failed removal is tried again by the next change.
//!
//! Concurrency: appends, truncations and retention hold the state lock, background jobs may not;
//! removal is serialised by the marker's own lock (lock order: state, checkpoint, marker, sync),
//! and the flag is cleared only after the removal was durable, so a caller that sees it cleared
//! may change the files at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::meta::{CLEAN_SHUTDOWN, CleanShutdown};
use super::{Inner, State};
use crate::LogError;

/// The clean-shutdown marker an open left on disk, if it did.
#[derive(Debug)]
pub(super) struct KeptMarker {
    /// Whether the marker may still be on disk. Cleared (release) only once its removal is
    /// durable; read (acquire) by every change before it touches a file.
    on_disk: AtomicBool,
    /// What the marker says, until its removal is durable. Removal happens under this lock.
    marker: Mutex<Option<CleanShutdown>>,
}

impl KeptMarker {
    /// `marker`: what the open left on disk (`None`: it left no marker).
    pub(super) fn new(marker: Option<CleanShutdown>) -> Self {
        Self {
            on_disk: AtomicBool::new(marker.is_some()),
            marker: Mutex::new(marker),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CleanShutdown>> {
        self.marker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Must be called before anything changes the log's files (see the module docs): removes
    /// the clean-shutdown marker an open left on disk, durably, the first time. Returns the
    /// error that removing it met; the caller must then change nothing.
    pub(super) fn before_change(&self) -> Result<(), LogError> {
        if !self.kept_marker.on_disk.load(Ordering::Acquire) {
            return Ok(());
        }
        self.remove_kept_marker()
    }

    #[cold]
    fn remove_kept_marker(&self) -> Result<(), LogError> {
        let mut marker = self.kept_marker.lock();
        if marker.is_none() {
            return Ok(()); // another thread removed it meanwhile
        }
        self.check_health()?;
        self.io
            .remove(CLEAN_SHUTDOWN)
            .map_err(|e| LogError::io("removing the clean-shutdown marker", e))?;
        let what = "fsync of the log directory after removing the clean-shutdown marker";
        if let Err(e) = self.timed_sync(|| what.to_owned(), || self.io.sync_dir()) {
            return Err(self.fail(format!("{what} failed: {e}")));
        }
        // The log may have given up on that fsync (hung) meanwhile: it then stays failed.
        self.check_health()?;
        *marker = None;
        self.kept_marker.on_disk.store(false, Ordering::Release);
        Ok(())
    }

    /// If the log has never held a byte — one empty segment, nothing reserved ahead, nothing
    /// unsynced — marks it closed (under the state lock `st`) and returns true: a close has
    /// nothing worth writing, since the next open scans an empty segment in no time. A broker
    /// with thousands of partitions never written closes them without an fsync each.
    pub(super) fn close_empty(&self, st: &mut State) -> bool {
        let active = st.active();
        let empty = st.log_end == 0
            && st.segments.len() == 1
            && active.size == 0
            && active.allocated == 0
            && st.unsealed.is_empty()
            && self.durable_end() == 0
            && active.file.size().is_ok_and(|len| len == 0);
        if empty {
            st.closed = true;
        }
        empty
    }

    /// If nothing changed since a clean open — the marker it found is still on disk, and
    /// still describes the log — marks the log closed (under the state lock `st`) and returns
    /// true: the close has nothing to write or fsync. False otherwise: the caller closes as
    /// usual, removing the marker first.
    pub(super) fn close_unchanged(&self, st: &mut State) -> bool {
        if !self.kept_marker.on_disk.load(Ordering::Acquire) {
            return false;
        }
        let marker = self.kept_marker.lock();
        let Some(marker) = *marker else {
            return false;
        };
        let active = st.active();
        // Every change removes the marker first, so this holds; checked anyway, as the claim
        // a close leaves behind must never be a stale one.
        let unchanged = marker.log_end == st.log_end
            && marker.active_base == active.base
            && marker.active_size == active.size
            && active.allocated == active.size
            && st.unsealed.is_empty()
            && self.durable_end() == st.log_end;
        if unchanged {
            st.closed = true;
        }
        unchanged
    }
}
