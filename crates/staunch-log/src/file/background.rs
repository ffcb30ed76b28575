//! The log's background thread: it seals the closed segments a roll queued (`interval`, `os`),
//! zero-fills ahead of the data when asked (`always`, see the `zero_fill` module), under
//! `interval` syncs the log every interval, and records the recovery point (the `checkpoint`
//! module) after sealing and at most every `checkpoint_interval` when the durable end moved.
//! Sealing itself, [`Inner::seal_closed_segments`], is here too; `close` runs it as well.

use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Inner;
use super::meta;
use super::segment::index_name;
use crate::LogError;
use crate::io::replace_file;

/// Requests for the background thread: sealing closed segments (`interval`, `os`) and
/// zero-filling ahead of the data (`always`).
#[derive(Default)]
pub(super) struct Background {
    pub(super) stop: bool,
    pub(super) seal_requested: bool,
    pub(super) zero_fill_requested: bool,
}

/// The background thread of a log: seals closed segments as soon as a roll queues them
/// (`interval`, `os`), zero-fills when asked (`always`), under `interval` syncs the log every
/// `interval`, and records the recovery point.
pub(super) fn spawn_background(inner: Weak<Inner>, interval: Option<Duration>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("staunch-log-bg".into())
        .spawn(move || {
            let mut next_flush = interval.map(|every| Instant::now() + every);
            let checkpoint_every = match inner.upgrade() {
                Some(log) => log.config.checkpoint_interval,
                None => return,
            };
            let mut next_checkpoint = Instant::now() + checkpoint_every;
            loop {
                let Some(log) = inner.upgrade() else { return };
                let zero_fill;
                {
                    let mut bg = log.lock_background();
                    loop {
                        if bg.stop {
                            return;
                        }
                        if bg.seal_requested || bg.zero_fill_requested {
                            break;
                        }
                        let now = Instant::now();
                        let at = next_flush.map_or(next_checkpoint, |f| f.min(next_checkpoint));
                        if at <= now {
                            break;
                        }
                        bg = log
                            .background_signal
                            .wait_timeout(bg, at - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    bg.seal_requested = false;
                    zero_fill = std::mem::take(&mut bg.zero_fill_requested);
                }
                if log.failure.get().is_some() {
                    // A failed log does no more work (a close may not have waited for this
                    // thread: see `FileLog::stop_background`).
                    return;
                }
                if zero_fill && let Err(e) = log.zero_fill_ahead() {
                    tracing::error!(error = %e, "zero-filling failed; log refuses appends");
                    return;
                }
                match log.seal_closed_segments() {
                    // A sealed segment is the roll's moment to record the recovery point.
                    Ok(true) => log.checkpoint_if_moved(),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "sealing a closed segment failed");
                        return;
                    }
                }
                if next_checkpoint <= Instant::now() {
                    next_checkpoint = Instant::now() + checkpoint_every;
                    log.checkpoint_if_moved();
                }
                if let (Some(at), Some(every)) = (next_flush, interval)
                    && at <= Instant::now()
                {
                    next_flush = Some(Instant::now() + every);
                    let target = log.read_state().log_end;
                    match log.sync_through(target) {
                        // Cut meanwhile: the next interval syncs whatever is there then.
                        Ok(_) | Err(LogError::Truncated) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "interval flush failed; log refuses appends");
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawning the log background thread")
}

impl Inner {
    pub(super) fn lock_background(&self) -> std::sync::MutexGuard<'_, Background> {
        self.background.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals queued closed segments, oldest first: fsync (no lock held), then persist the index
    /// and advance the durable end (under the state lock, so a truncation cannot interleave).
    /// Returns whether it sealed any.
    pub(super) fn seal_closed_segments(&self) -> Result<bool, LogError> {
        let mut sealed = false;
        loop {
            let (base, file, name, generation) = {
                let st = self.read_state();
                let Some(&base) = st.unsealed.front() else {
                    return Ok(sealed);
                };
                let segment = &st.segments[&base];
                (base, segment.file.clone(), segment.name(), st.generation)
            };
            if let Err(e) = self.timed_sync(
                || format!("fdatasync of closed segment {name}"),
                || file.sync_data(),
            ) {
                return Err(self.fail(format!("fdatasync of closed segment {name} failed: {e}")));
            }
            let mut st = self.write_state();
            if st.generation != generation || st.unsealed.front() != Some(&base) {
                continue; // truncated meanwhile; look again
            }
            let segment = &st.segments[&base];
            let end = segment.next_offset;
            if let Err(e) = replace_file(&*self.io, &index_name(base), &meta::encode_index(segment))
            {
                // Not fatal: the next open scans a segment whose index is missing.
                tracing::warn!(segment = %name, error = %e, "could not persist segment index");
            }
            st.unsealed.pop_front();
            sealed = true;
            let mut sync = self.lock_sync();
            // Not after a failure: the log may have given up on this fsync (hung).
            if sync.generation == st.generation && self.failure.get().is_none() {
                sync.durable_end = sync.durable_end.max(end);
            }
        }
    }
}
