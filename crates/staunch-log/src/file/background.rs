//! A log's background work, run by a [`BackgroundPool`](super::BackgroundPool) worker: it seals
//! the closed segments a roll queued (`interval`, `os`), zero-fills ahead of the data when asked
//! (`always`, see the `zero_fill` module), under `interval` syncs the log an interval after it
//! was written, records the recovery point (the `checkpoint` module) after sealing and
//! `checkpoint_interval` after a write, and trims zeros the log has held unwritten for the
//! pool's `zero_fill_idle`. Sealing itself, [`Inner::seal_closed_segments`], is here too;
//! `close` runs it as well.
//!
//! The log asks for a job by queueing itself on the pool ([`Inner::request`]) and keeps its
//! deadlines in [`Background`], armed as one timer in the pool. Deadlines exist only while
//! there is something to do: a write arms the flush and checkpoint deadlines if they are not
//! armed yet (one atomic flag per write), so an idle log costs the pool nothing. One job per
//! log at a time: `queued` and `running` are changed only under the log's background lock.
//! A failed log does no more work.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::meta;
use super::segment::index_name;
use super::{FlushPolicy, Inner};
use crate::LogError;
use crate::io::replace_file;

/// What a log asked of the pool, and where its job stands. Changed under the background lock.
#[derive(Default)]
pub(super) struct Background {
    /// The log is closing or dropped: no job starts any more.
    pub(super) stop: bool,
    pub(super) seal_requested: bool,
    pub(super) zero_fill_requested: bool,
    /// In the pool's ready queue.
    queued: bool,
    /// A worker runs this log's job now.
    pub(super) running: bool,
    /// Under `interval`: when the written data is synced.
    next_flush: Option<Instant>,
    /// When the recovery point is recorded (if the durable end moved).
    next_checkpoint: Option<Instant>,
    /// When the zeros ahead of the data are trimmed, if the log was not written since
    /// `trim_written`.
    trim_at: Option<Instant>,
    trim_written: u64,
    /// The earliest deadline that has a timer in the pool.
    armed: Option<Instant>,
}

impl Background {
    fn earliest_deadline(&self) -> Option<Instant> {
        [self.next_flush, self.next_checkpoint, self.trim_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The deadline to add a pool timer for, if no earlier one is armed.
    fn deadline_to_arm(&mut self) -> Option<Instant> {
        let at = self.earliest_deadline()?;
        if self.armed.is_some_and(|armed| armed <= at) {
            return None;
        }
        self.armed = Some(at);
        Some(at)
    }

    /// Marks the log queued if it may be: not stopped, not queued, not running.
    fn take_queue_slot(&mut self) -> bool {
        if self.stop || self.queued || self.running {
            return false;
        }
        self.queued = true;
        true
    }
}

/// Takes a deadline that has come.
fn take_due(deadline: &mut Option<Instant>, now: Instant) -> bool {
    if deadline.is_some_and(|at| at <= now) {
        *deadline = None;
        return true;
    }
    false
}

impl Inner {
    fn me(&self) -> Weak<Inner> {
        self.me.clone()
    }

    /// Asks the pool for a job after `ask` records what is wanted.
    pub(super) fn request(&self, ask: impl FnOnce(&mut Background)) {
        let queue = {
            let mut bg = self.lock_background();
            ask(&mut bg);
            bg.take_queue_slot()
        };
        if queue {
            self.pool.enqueue(self.me());
        }
    }

    /// Called by a write (holding the state lock, right after it wrote): arms the flush and
    /// checkpoint deadlines if they are not armed since the last job took them.
    pub(super) fn after_write(&self) -> bool {
        !self.write_deadlines_armed.swap(true, Ordering::AcqRel)
    }

    /// Arms the deadlines a write sets (called without the state lock, when
    /// [`Inner::after_write`] said so).
    pub(super) fn arm_write_deadlines(&self) {
        let now = Instant::now();
        let arm = {
            let mut bg = self.lock_background();
            if bg.stop {
                return;
            }
            if let FlushPolicy::Interval(every) = self.config.flush {
                bg.next_flush.get_or_insert(now + every);
            }
            bg.next_checkpoint
                .get_or_insert(now + self.config.checkpoint_interval);
            bg.deadline_to_arm()
        };
        if let Some(at) = arm {
            self.pool.add_timer(at, self.me());
        }
    }

    /// The pool's timer at `at` for this log fired. A timer that is no longer the armed one
    /// (an earlier one was armed after it) is stale: the job of the earlier one armed whatever
    /// deadline is left.
    pub(super) fn timer_fired(&self, at: Instant) {
        let queue = {
            let mut bg = self.lock_background();
            if bg.armed != Some(at) {
                return;
            }
            bg.armed = None;
            bg.take_queue_slot()
        };
        if queue {
            self.pool.enqueue(self.me());
        }
    }

    /// A worker is about to run this log's job: false if the log stopped meanwhile.
    pub(super) fn begin_job(&self) -> bool {
        let mut bg = self.lock_background();
        bg.queued = false;
        if bg.stop || bg.running {
            drop(bg);
            self.background_signal.notify_all();
            return false;
        }
        bg.running = true;
        true
    }

    /// The job ended: queue the log again if more was asked meanwhile or a deadline came, arm
    /// the next deadline, and wake a `close` waiting for the job.
    pub(super) fn end_job(&self) {
        let (queue, arm) = {
            let mut bg = self.lock_background();
            bg.running = false;
            if self.failure.get().is_some() {
                bg.next_flush = None;
                bg.next_checkpoint = None;
                bg.trim_at = None;
            }
            let due = bg
                .earliest_deadline()
                .is_some_and(|at| at <= Instant::now());
            let queue =
                (bg.seal_requested || bg.zero_fill_requested || due) && bg.take_queue_slot();
            let arm = if queue || bg.stop {
                None
            } else {
                bg.deadline_to_arm()
            };
            (queue, arm)
        };
        self.background_signal.notify_all();
        if queue {
            self.pool.enqueue(self.me());
        }
        if let Some(at) = arm {
            self.pool.add_timer(at, self.me());
        }
    }

    /// One job: whatever was asked and whatever deadline came. Errors fail the log (they are
    /// fsync errors, which poison it), after which it does no more work.
    pub(super) fn run_job(self: &Arc<Self>) {
        let now = Instant::now();
        let (zero_fill, flush_due, checkpoint_due, trim_due, trim_written) = {
            let mut bg = self.lock_background();
            // Sealing runs at every job: it only reads the queue when nothing is to seal.
            bg.seal_requested = false;
            (
                std::mem::take(&mut bg.zero_fill_requested),
                take_due(&mut bg.next_flush, now),
                take_due(&mut bg.next_checkpoint, now),
                take_due(&mut bg.trim_at, now),
                bg.trim_written,
            )
        };
        if flush_due || checkpoint_due {
            // Before the flush reads the log end: a write after this arms them again.
            self.write_deadlines_armed.store(false, Ordering::Release);
        }
        if self.failure.get().is_some() {
            return;
        }
        if zero_fill {
            if let Err(e) = self.zero_fill_ahead() {
                tracing::error!(dir = %self.dir, error = %e, "zero-filling failed; log refuses appends");
                return;
            }
            self.arm_zero_trim();
        }
        match self.seal_closed_segments() {
            // A sealed segment is the roll's moment to record the recovery point.
            Ok(true) => self.checkpoint_if_moved(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dir = %self.dir, error = %e, "sealing a closed segment failed");
                return;
            }
        }
        if checkpoint_due {
            self.checkpoint_if_moved();
        }
        if flush_due {
            let target = self.read_state().log_end;
            match self.sync_through(target) {
                // Cut meanwhile: the next write arms another flush.
                Ok(_) | Err(LogError::Truncated) => {}
                Err(e) => {
                    tracing::error!(dir = %self.dir, error = %e, "interval flush failed; log refuses appends");
                    return;
                }
            }
            // The durable end moved: make sure the recovery point follows.
            if self.durable_end() > self.lock_checkpoint().recorded {
                let mut bg = self.lock_background();
                bg.next_checkpoint
                    .get_or_insert(Instant::now() + self.config.checkpoint_interval);
            }
        }
        if trim_due {
            if self.written_bytes.load(Ordering::Acquire) == trim_written {
                self.trim_idle_zeros();
            } else {
                self.arm_zero_trim();
            }
        }
    }

    /// While the log holds zeros ahead of its data, sets the deadline at which it trims them
    /// if it is not written until then.
    fn arm_zero_trim(&self) {
        if self.zero_fill_held() == 0 {
            return;
        }
        let written = self.written_bytes.load(Ordering::Acquire);
        let mut bg = self.lock_background();
        if bg.trim_at.is_none() {
            bg.trim_at = Some(Instant::now() + self.pool.config().zero_fill_idle);
            bg.trim_written = written;
        }
    }
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
            self.before_change()?;
            let segment = &st.segments[&base];
            let end = segment.next_offset;
            if let Err(e) = replace_file(&*self.io, &index_name(base), &meta::encode_index(segment))
            {
                // Not fatal: the next open scans a segment whose index is missing.
                tracing::warn!(dir = %self.dir, segment = %name, error = %e, "could not persist segment index");
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
