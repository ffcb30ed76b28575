//! Group commit: making appends durable, with one `fdatasync` shared by every append of a round.
//!
//! Appends are serialized by the state lock (the `append` module). With [`FlushPolicy::Always`]
//! the appender then waits here until the durable end passes its records. The first waiter
//! becomes the syncer: it notes the log end, releases every lock and calls `fdatasync`; appends
//! that arrive meanwhile write and queue behind it, and the next sync covers all of them. So N
//! concurrent appenders share about one fsync per round, and no append is reported durable
//! before an fsync that started after its write. Under `always` a background thread writes
//! zeros ahead of the data, so those fsyncs need no file-system metadata (see the `zero_fill`
//! module).
//!
//! # Failures: fsyncgate
//! A failed fsync poisons the log ([`Inner::fail`]): every waiting and later append fails with
//! [`LogError::Failed`], and nothing is reported durable again until the log is reopened. There
//! is no retry: Linux may drop the dirty pages of a failed writeback and report success to the
//! next fsync, so a retried fsync would "confirm" data that is gone. A truncation bumps the
//! generation, so a round that started before it cannot mark since-rewritten offsets durable.
//!
//! # Hanging disks: `sync_timeout`
//! A dying disk (or a lost network volume) may not fail an fsync but never finish it. Every fsync
//! of the log — the group commit's, a roll's, sealing, zero-filling, close, truncation, and the
//! directory syncs — runs through [`Inner::timed_sync`], which records when it started. The
//! appenders waiting for a round wait on the `synced` condvar with a timeout, and when the
//! oldest running fsync has run longer than [`LogConfig::sync_timeout`] a waiter poisons the log
//! with a reason naming the file and the limit (`fdatasync of 00000000000000000000.log has not
//! returned within 30s`) and every waiter fails. [`Inner::check_health`] makes the same check
//! without waiting (each write and every non-`always` wait runs it, and the broker before it
//! writes), so a hung fsync is noticed even when no append waits for a round.
//!
//! The thread stuck in the syscall cannot be freed: its own caller waits until the kernel
//! returns, and the broker bounds its own wait for it. When the hung fsync does return — `Ok`
//! or not — the syncer finds the log failed under the sync lock and reports the failure: the
//! durable end is never raised again, by a round, a roll or sealing, so nothing is reported
//! durable after the log told its waiters it had failed. Reopening (restart) runs recovery
//! from what is really on disk. The timeout is real (monotonic) time, not the log's
//! [`Clock`](staunch_core::Clock), which tests move by hand: a hung syscall is a wall-time fact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use staunch_core::Offset;

use super::Inner;
use crate::LogError;
use crate::config::FlushPolicy;
#[cfg(doc)]
use crate::config::LogConfig;
use crate::store::Durability;

pub(super) struct SyncState {
    pub(super) durable_end: Offset,
    pub(super) syncing: bool,
    pub(super) generation: u64,
}

/// The fsyncs of a log that have not returned yet, so that a hung one is noticed.
#[derive(Debug, Default)]
pub(super) struct SyncsInFlight {
    next_id: u64,
    /// By id, which is start order: the first is the oldest.
    running: BTreeMap<u64, (Instant, String)>,
}

impl Inner {
    pub(super) fn lock_sync(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, SyncsInFlight> {
        self.syncs_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Poisons the log: every later append and every waiter fails with `reason` (or with the
    /// first reason, if the log had failed already).
    ///
    /// Must not be called with the sync lock held; it takes it, so that no waiter sits between
    /// checking for a failure and waiting (which would lose this wake-up).
    pub(super) fn fail(&self, reason: String) -> LogError {
        let first = {
            let _sync = self.lock_sync();
            self.failure.set(reason.clone()).is_ok()
        };
        if first {
            tracing::error!(dir = %self.dir, %reason, "log failed; refusing further appends");
        }
        self.synced.notify_all();
        LogError::Failed {
            reason: self.failure.get().cloned().unwrap_or(reason),
        }
    }

    /// Runs `sync` (an fsync described by `what`, e.g. `fdatasync of <file>`), registered as
    /// running so that [`Inner::check_health`] can tell when it hangs. The result is the
    /// fsync's own: a caller that gets `Ok` must still check for a failure of the log before
    /// reporting anything durable (the fsync may have returned after the log gave up on it).
    pub(super) fn timed_sync(
        &self,
        what: impl FnOnce() -> String,
        sync: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let id = {
            let mut in_flight = self.lock_in_flight();
            let id = in_flight.next_id;
            in_flight.next_id += 1;
            in_flight.running.insert(id, (Instant::now(), what()));
            id
        };
        let started = Instant::now();
        let result = sync();
        self.metrics
            .fsync_seconds
            .record(started.elapsed().as_secs_f64());
        self.lock_in_flight().running.remove(&id);
        result
    }

    /// How long until the oldest running fsync overruns [`LogConfig::sync_timeout`]: zero if
    /// it has, the whole timeout if none is running.
    pub(super) fn until_sync_overdue(&self) -> Duration {
        let timeout = self.config.sync_timeout;
        match self.lock_in_flight().running.values().next() {
            Some((started, _)) => timeout.saturating_sub(started.elapsed()),
            None => timeout,
        }
    }

    /// `Err(LogError::Failed)` if the log has failed, or if one of its fsyncs has been running
    /// longer than [`LogConfig::sync_timeout`] — which fails it now ("fdatasync of X has not
    /// returned within 30s"). Never waits for the disk.
    pub(super) fn check_health(&self) -> Result<(), LogError> {
        if let Some(reason) = self.failure.get() {
            return Err(LogError::Failed {
                reason: reason.clone(),
            });
        }
        let timeout = self.config.sync_timeout;
        let overdue = self
            .lock_in_flight()
            .running
            .values()
            .next()
            .filter(|(started, _)| started.elapsed() >= timeout)
            .map(|(_, what)| what.clone());
        match overdue {
            Some(what) => Err(self.fail(format!(
                "{what} has not returned within {}",
                humantime_serde::re::humantime::format_duration(timeout)
            ))),
            None => Ok(()),
        }
    }

    pub(super) fn durable_end(&self) -> Offset {
        self.lock_sync().durable_end
    }

    /// Bytes written but not known fsynced (an upper bound on what a power cut could tear).
    pub(super) fn unsynced_bytes(&self) -> u64 {
        let synced = self.synced_bytes.load(Ordering::Acquire);
        self.written_bytes
            .load(Ordering::Acquire)
            .saturating_sub(synced)
    }

    /// Notes that every byte written so far is fsynced. The caller holds the state lock (so no
    /// write is in progress) and has just synced every file holding unsynced bytes.
    pub(super) fn note_all_synced(&self) {
        let written = self.written_bytes.load(Ordering::Acquire);
        self.synced_bytes.fetch_max(written, Ordering::AcqRel);
    }

    /// Lets appenders that are about to write join the coming fsync. Appenders released by the
    /// previous round come straight back with their next batch; starting the fsync at once would
    /// leave them for the round after, and the rounds would alternate between two half-size
    /// groups. So the new syncer yields while the log end keeps moving — a handful of yields at
    /// most, and just one check for a lone appender.
    fn gather_group(&self) {
        const MAX_YIELDS: usize = 16;
        let mut seen = self.read_state().log_end;
        for _ in 0..MAX_YIELDS {
            std::thread::yield_now();
            let now = self.read_state().log_end;
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// One fsync round: syncs the closed segments still waiting to be sealed (oldest first)
    /// and the active segment. Returns the log end and generation it covers, the outcome and
    /// the file it last synced.
    fn sync_round(&self) -> (Offset, u64, std::io::Result<()>, String) {
        // Everything written so far is below `goal`: writes happen under the state lock.
        let (goal, generation, files, written) = {
            let st = self.read_state();
            let written = self.written_bytes.load(Ordering::Acquire);
            let files: Vec<_> = st
                .unsealed
                .iter()
                .map(|base| &st.segments[base])
                .chain(std::iter::once(st.active()))
                .map(|segment| (segment.file.clone(), segment.name()))
                .collect();
            (st.log_end, st.generation, files, written)
        };
        let mut result = Ok(());
        let mut name = String::new();
        for (file, file_name) in files {
            result = self.timed_sync(|| format!("fdatasync of {file_name}"), || file.sync_data());
            name = file_name;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            // Counted in bytes written, not positions, so a truncation meanwhile changes
            // nothing: it syncs everything it leaves and notes that itself.
            let before = self.synced_bytes.fetch_max(written, Ordering::AcqRel);
            if written > before {
                self.metrics
                    .group_commit_bytes
                    .record((written - before) as f64);
            }
        }
        (goal, generation, result, name)
    }

    /// Blocks until everything below `target` is durable, joining or starting a group sync.
    /// Fails with [`LogError::Truncated`] if a truncation happens first: the offsets below
    /// `target` may then hold other records, or none, so they can never be confirmed.
    pub(super) fn sync_through(&self, target: Offset) -> Result<Offset, LogError> {
        let mut sync = self.lock_sync();
        let generation = sync.generation;
        loop {
            if let Some(reason) = self.failure.get() {
                return Err(LogError::Failed {
                    reason: reason.clone(),
                });
            }
            if sync.durable_end >= target {
                return Ok(sync.durable_end);
            }
            if sync.generation != generation {
                return Err(LogError::Truncated);
            }
            if sync.syncing {
                // A timed wait: if the round's fsync hangs, no wake-up ever comes.
                let wait = self.until_sync_overdue();
                if !wait.is_zero() {
                    sync = self
                        .synced
                        .wait_timeout(sync, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
                drop(sync);
                // Fails the log if the fsync is still running; the loop then returns it.
                let _ = self.check_health();
                sync = self.lock_sync();
                continue;
            }
            sync.syncing = true;
            drop(sync);
            self.gather_group();
            // A syncer whose own records are durable runs one more round at once if appends
            // are already waiting for it: the disk goes straight on to their fsync instead of
            // idling until one of them wakes up and starts it. Just one, so its own caller
            // waits at most one round longer.
            let mut extra_round = true;
            loop {
                let (goal, round_generation, result, name) = self.sync_round();
                // Read before taking the sync lock (the state lock comes first).
                let more_waiting = extra_round && self.read_state().log_end > goal;
                sync = self.lock_sync();
                if result.is_ok()
                    && let Some(reason) = self.failure.get()
                {
                    // Another fsync of this log (the zero-filler's) failed meanwhile: its lost
                    // pages may be ours, so this one's success proves nothing. Or this fsync hung
                    // and a waiter gave up on it (`sync_timeout`): the log told everyone it
                    // failed, and it does not go back on that.
                    let reason = reason.clone();
                    self.release_syncer(sync);
                    return Err(LogError::Failed { reason });
                }
                match result {
                    Ok(()) if sync.generation == round_generation => {
                        if goal > sync.durable_end {
                            self.metrics
                                .group_commit_records
                                .record((goal - sync.durable_end) as f64);
                        }
                        sync.durable_end = sync.durable_end.max(goal);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        // Set while still holding the lock: no other thread may start a new
                        // fsync now, which Linux could report as successful after dropping
                        // dirty pages.
                        let reason = format!("fdatasync of {name} failed: {e}");
                        let _ = self.failure.set(reason.clone());
                        self.release_syncer(sync);
                        tracing::error!(dir = %self.dir, %reason, "log failed; refusing further appends");
                        return Err(LogError::Failed {
                            reason: self.failure.get().cloned().unwrap_or(reason),
                        });
                    }
                }
                if goal < target {
                    // The log end was below `target` when this round started: a truncation cut
                    // those records (nothing else lowers it), so no sync can ever reach it.
                    self.release_syncer(sync);
                    return Err(LogError::Truncated);
                }
                if more_waiting && sync.durable_end >= target {
                    extra_round = false;
                    drop(sync);
                    self.synced.notify_all();
                    continue;
                }
                self.release_syncer(sync);
                break;
            }
            sync = self.lock_sync();
        }
    }

    /// Ends this thread's turn as the syncer and wakes every waiter, so one of them may start
    /// the next round.
    fn release_syncer(&self, mut sync: std::sync::MutexGuard<'_, SyncState>) {
        sync.syncing = false;
        drop(sync);
        self.synced.notify_all();
    }

    /// Waits until everything below `end` is as durable as the flush policy promises.
    pub(super) fn wait_durable(&self, end: Offset) -> Result<Durability, LogError> {
        match self.config.flush {
            FlushPolicy::Always => {
                self.sync_through(end)?;
                Ok(Durability::OnDisk)
            }
            FlushPolicy::Interval(_) | FlushPolicy::Os => {
                // Nobody waits for an fsync here; a hung background one is noticed this way.
                self.check_health()?;
                Ok(Durability::PageCache)
            }
        }
    }
}
