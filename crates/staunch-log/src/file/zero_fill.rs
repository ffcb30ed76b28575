//! Zero-filling the active segment ahead of its data, under [`FlushPolicy::Always`] only.
//!
//! `fdatasync` of a write that grows a file, or that lands in blocks reserved with
//! `fallocate` (unwritten extents), must also commit file-system metadata: the new length, or
//! the extent's change from unwritten to written. A write into blocks that already hold
//! *written* zeros needs only the data and a cache flush. On this project's ext4 development
//! machine that made `write + fdatasync` of 16 KiB 2.5x and of 128 KiB 2x cheaper (PostgreSQL
//! zero-fills its WAL segments for the same reason).
//!
//! So under `always` the log's background job (on its [`BackgroundPool`](super::BackgroundPool))
//! keeps up to [`zero_fill_bytes`](crate::LogConfig::zero_fill_bytes) past the data of the
//! active segment written with zeros and fsynced, [`ZERO_CHUNK`] at a time. It claims each
//! chunk first (under the state lock, so the claim starts at or after the data's end), then
//! writes it with no lock held; an appender never writes into a claimed range, and a roll,
//! truncation or close waits for the claim to end before it trims the file. The zero tail is
//! what preallocation always left (recovery cuts a tail of zeros, a roll or close trims it),
//! so the on-disk format is unchanged. Zero-filling is best effort: if it fails to write (the
//! disk is full, say) appends simply grow the file again.
//!
//! # The budget
//! Zeros reserve disk, so the logs of one pool share a budget of zero bytes (see the `pool`
//! module): each chunk is taken from it before it is claimed, and a log that gets none does not
//! zero-fill (it tries again at a later append, at most every [`ZERO_RETRY`]). `held` counts
//! what this log took; it is given back as data overwrites the zeros (at the next zero-fill),
//! when the segment rolls, truncates or closes ([`Inner::end_zero_fill`]), when the log was not
//! written for the pool's `zero_fill_idle` ([`Inner::trim_idle_zeros`] cuts the zeros off the
//! file) and when the log is dropped. Recovery treats a tail of zeros as reserved space, not
//! damage, whether it was trimmed or not, so giving zeros back never touches durability.
//!
//! The zeros are written and fsynced through a second handle of the segment file. Linux reports
//! a writeback error to the next fsync of *every* open file description, so a failed fsync of
//! the zeros cannot hide the error from the group commit's fsync of appended data; and it
//! poisons the log like any failed fsync.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use staunch_core::Offset;

use super::pool::ZeroBudget;
use super::{FlushPolicy, Inner, State};
use crate::LogError;
use crate::io::SegmentFile;
use crate::io::write_all_at;

/// Zeros written (and fsynced) per claim, at most; a quarter of `zero_fill_bytes` if smaller.
/// Each claim's fsync occupies the disk, and appends' fsyncs queue behind it: with 2 MiB
/// chunks the consumer benchmark's retry-topic case (1 MiB forwarded per run, in fsynced
/// produce calls) ran ~5 ms (of ~30) slower than with zero-filling off; with 512 KiB chunks
/// the two were within run-to-run noise (four paired runs on the development VM).
const ZERO_CHUNK: u64 = 512 << 10;
/// A claim starts at least this far past the data (at most a chunk), so an appender rarely
/// catches up with a zero-fill in progress and has to wait for it.
const ZERO_GAP: u64 = 256 << 10;
/// Bytes per zero write: a whole chunk at once. The page cache sizes its folios by the write
/// that creates them, and the data later written over the zeros stays in those folios. With
/// 64 KiB writes, reading a zero-filled topic back was ~15 % slower than one never
/// zero-filled (the consumer benchmark's happy case, 21.6–23.3 ms vs 18.2–18.7 per 100 MB);
/// with whole-chunk writes, within run-to-run noise.
const ZERO_BUFFER: usize = ZERO_CHUNK as usize;
/// After the budget refused a log, it asks again no sooner than this.
const ZERO_RETRY: Duration = Duration::from_secs(1);

/// What the background thread knows about the zeros of the active segment.
#[derive(Debug)]
pub(super) struct ZeroFill {
    /// Base offset of the segment this is about; `None` after a roll, truncation or close.
    segment: Option<Offset>,
    /// The zero-filler's own handle of that segment's file.
    file: Option<Arc<dyn SegmentFile>>,
    /// Bytes of the file from the data's end up to here are written, fsynced zeros.
    zeroed: u64,
    /// The range being zero-filled right now; nothing else writes into it.
    claim: Option<Range<u64>>,
    /// A zero write failed in this segment; do not try again until the next segment.
    gave_up: bool,
    /// Bytes of the pool's zero-fill budget this log holds (zeros written or claimed ahead
    /// of the data, counted from the claims: never less than the zeros really there).
    held: u64,
    /// The budget refused a chunk: no new request before this.
    refused_until: Option<Instant>,
}

impl ZeroFill {
    /// Nothing known to be zero-filled.
    pub(super) fn fresh() -> Self {
        Self {
            segment: None,
            file: None,
            zeroed: 0,
            claim: None,
            gave_up: false,
            held: 0,
            refused_until: None,
        }
    }

    /// Forgets everything, giving the budget held back (no claim may be running).
    fn forget(&mut self, budget: &ZeroBudget) {
        budget.give_back(self.held);
        *self = ZeroFill::fresh();
    }

    /// Starts over if these facts are about another segment than the one at `base`.
    fn about(&mut self, base: Offset, budget: &ZeroBudget) {
        if self.segment != Some(base) {
            self.forget(budget);
            self.segment = Some(base);
        }
    }
}

impl Inner {
    /// Whether this log zero-fills ahead of its data.
    pub(super) fn zero_fills(&self) -> bool {
        self.config.flush == FlushPolicy::Always && self.config.zero_fill_bytes > 0
    }

    /// Takes `extra` bytes of the pool's budget for blocks reserved ahead of the data of the
    /// active segment at `base` (preallocation, which a log that does not zero-fill does
    /// instead): held like zeros, and given back with them at a roll, truncation, close or
    /// drop. False if the budget is spent: the caller reserves nothing (appends work without).
    pub(super) fn take_preallocation_budget(&self, base: Offset, extra: u64) -> bool {
        let budget = self.pool.budget();
        let mut zeros = self.lock_zero_fill();
        zeros.about(base, budget);
        if !budget.try_take(extra) {
            return false;
        }
        zeros.held += extra;
        true
    }

    /// Gives back what [`Inner::take_preallocation_budget`] took for a reservation that failed.
    pub(super) fn return_preallocation_budget(&self, extra: u64) {
        let mut zeros = self.lock_zero_fill();
        let back = extra.min(zeros.held);
        zeros.held -= back;
        self.pool.budget().give_back(back);
    }

    fn lock_zero_fill(&self) -> std::sync::MutexGuard<'_, ZeroFill> {
        self.zero_fill.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by an appender holding the state lock before it writes `position..needed` of the
    /// active segment: waits while that range is being zero-filled, refreshes the segment's
    /// `allocated` (its known zero end) and asks the background thread for more zeros when they
    /// run low. Cheap (no lock) unless the write comes within half of `zero_fill_bytes` of the
    /// zeros' end.
    pub(super) fn before_zero_filled_write(&self, st: &mut State, position: u64, needed: u64) {
        let low_water = self.config.zero_fill_bytes / 2;
        if !self.zero_fills() || needed + low_water <= st.active().allocated {
            return;
        }
        let active = st.active_mut();
        let mut zeros = self.lock_zero_fill();
        zeros.about(active.base, self.pool.budget());
        while zeros
            .claim
            .as_ref()
            .is_some_and(|c| c.start < needed && position < c.end)
        {
            zeros = self
                .zero_fill_done
                .wait(zeros)
                .unwrap_or_else(|p| p.into_inner());
        }
        active.allocated = active.allocated.max(zeros.zeroed);
        let wanted = zeros.claim.is_none()
            && !zeros.gave_up
            && zeros.zeroed < self.config.segment_bytes
            && zeros
                .refused_until
                .is_none_or(|until| Instant::now() >= until);
        drop(zeros);
        if wanted {
            self.request(|bg| bg.zero_fill_requested = true);
        }
    }

    /// Bytes of the pool's zero-fill budget this log holds.
    pub(super) fn zero_fill_held(&self) -> u64 {
        self.lock_zero_fill().held
    }

    /// Trims the zeros ahead of the data of a log that was not written for a while, giving
    /// their budget back. Not fatal if the file cannot be cut: recovery trims a zero tail.
    pub(super) fn trim_idle_zeros(&self) {
        let mut st = self.write_state();
        if st.closed || self.failure.get().is_some() {
            return;
        }
        // The segment's `allocated` learns of zeros only at the next write: the zero-filler
        // knows where they end. No claim starts while this holds the state lock.
        let zero_end = {
            let mut zeros = self.lock_zero_fill();
            while zeros.claim.is_some() {
                zeros = self
                    .zero_fill_done
                    .wait(zeros)
                    .unwrap_or_else(|p| p.into_inner());
            }
            zeros.zeroed
        };
        let active = st.active_mut();
        if active.allocated.max(zero_end) > active.size {
            if let Err(e) = self.before_change() {
                tracing::warn!(dir = %self.dir, error = %e, "could not trim idle zeros");
                return;
            }
            let active = st.active_mut();
            if let Err(e) = active.file.set_len(active.size) {
                tracing::warn!(dir = %self.dir, segment = %active.name(), error = %e, "could not trim idle zeros");
            }
            active.allocated = active.size;
            // Synced, so the idle file is clean and the file cache may close its descriptor.
            let name = active.name();
            let file = active.file.clone();
            if let Err(e) = self.timed_sync(
                || format!("fdatasync of {name} after trimming idle zeros"),
                || file.sync_data(),
            ) {
                let failed = self.fail(format!(
                    "fdatasync of {name} after trimming idle zeros failed: {e}"
                ));
                tracing::error!(dir = %self.dir, error = %failed, "the log refuses appends");
            }
        }
        // Only now: the budget never counts less than the zeros on disk.
        self.end_zero_fill();
    }

    /// Waits until no zero-fill is running, so the caller (holding the state lock) may trim
    /// or replace the active segment, then forgets what was zero-filled (or preallocated) and
    /// gives its budget back.
    pub(super) fn end_zero_fill(&self) {
        if !self.zero_fills() {
            // No zero-filler runs: give back what preallocation held.
            self.lock_zero_fill().forget(self.pool.budget());
            return;
        }
        let mut zeros = self.lock_zero_fill();
        while zeros.claim.is_some() {
            zeros = self
                .zero_fill_done
                .wait(zeros)
                .unwrap_or_else(|p| p.into_inner());
        }
        zeros.forget(self.pool.budget());
    }

    /// Background work: zero-fills the active segment until `zero_fill_bytes` past its data are
    /// zeros (or the segment's maximum size is reached, or the pool's budget is spent). Fails
    /// only if an fsync failed, which has poisoned the log.
    pub(super) fn zero_fill_ahead(&self) -> Result<(), LogError> {
        if let Err(e) = self.before_change() {
            // Best effort, unless removing the marker failed the log.
            return match self.failure.get() {
                Some(_) => Err(e),
                None => Ok(()),
            };
        }
        loop {
            let (segment, file, name, range) = {
                let st = self.read_state();
                if st.closed || self.failure.get().is_some() {
                    return Ok(());
                }
                let active = st.active();
                let mut zeros = self.lock_zero_fill();
                let budget = self.pool.budget();
                zeros.about(active.base, budget);
                // Zeros the data has overwritten are disk the data holds now.
                let ahead = zeros.zeroed.saturating_sub(active.size);
                if zeros.claim.is_none() && zeros.held > ahead {
                    budget.give_back(zeros.held - ahead);
                    zeros.held = ahead;
                }
                let chunk = ZERO_CHUNK.min(self.config.zero_fill_bytes / 4).max(1);
                // A gap this leaves (in a new segment, or when appends outran the zeros) is
                // written by appends as without zero-filling.
                let start = zeros.zeroed.max(active.size + ZERO_GAP.min(chunk));
                let target =
                    (active.size + self.config.zero_fill_bytes).min(self.config.segment_bytes);
                if !self.zero_fills() || zeros.gave_up || zeros.claim.is_some() || start >= target {
                    return Ok(());
                }
                let file = match &zeros.file {
                    Some(file) => file.clone(),
                    None => match self.io.open(&active.name(), false) {
                        Ok(file) => zeros.file.insert(file).clone(),
                        Err(e) => {
                            tracing::debug!(error = %e, "zero-filling: cannot open the segment");
                            zeros.gave_up = true;
                            return Ok(());
                        }
                    },
                };
                let range = start..(start + chunk).min(target);
                if !budget.try_take(range.end - range.start) {
                    zeros.refused_until = Some(Instant::now() + ZERO_RETRY);
                    return Ok(());
                }
                zeros.refused_until = None;
                zeros.held += range.end - range.start;
                zeros.claim = Some(range.clone());
                (Some(active.base), file, active.name(), range)
            };
            // A claim is at most one chunk, `ZERO_CHUNK` bytes: one write of `ZEROS`.
            let len = usize::try_from(range.end - range.start)
                .map_or(ZERO_BUFFER, |n| n.min(ZERO_BUFFER));
            let written = write_all_at(&*file, &ZEROS[..len], range.start);
            let synced = match written {
                Ok(()) => self
                    .timed_sync(
                        || format!("fdatasync of {name} after zero-filling"),
                        || file.sync_data(),
                    )
                    .map_err(|e| {
                        self.fail(format!(
                            "fdatasync of {name} after zero-filling failed: {e}"
                        ))
                    }),
                Err(ref e) => {
                    tracing::debug!(segment = %name, error = %e, "zero-filling stopped");
                    Ok(())
                }
            };
            {
                let mut zeros = self.lock_zero_fill();
                zeros.claim = None;
                if zeros.segment == segment {
                    if written.is_ok() && synced.is_ok() {
                        zeros.zeroed = range.end;
                    } else {
                        zeros.gave_up = true;
                    }
                }
                if written.is_err() {
                    // Nothing was reserved (a partly written claim is at most a few blocks,
                    // and the next roll, close or trim cuts it).
                    let taken = (range.end - range.start).min(zeros.held);
                    self.pool.budget().give_back(taken);
                    zeros.held -= taken;
                }
            }
            self.zero_fill_done.notify_all();
            synced?;
        }
    }
}

/// The zeros [`Inner::zero_fill_ahead`] writes: one buffer for every log, in zero-initialised
/// static memory (no allocation, and no resident memory beyond what the kernel reads of it).
static ZEROS: [u8; ZERO_BUFFER] = [0; ZERO_BUFFER];

impl Drop for Inner {
    /// Gives the zero-fill budget back (a log dropped without `close` leaves its zeros on
    /// disk until the next open trims them).
    fn drop(&mut self) {
        let zeros = self.zero_fill.get_mut().unwrap_or_else(|p| p.into_inner());
        self.pool.budget().give_back(zeros.held);
        zeros.held = 0;
    }
}
