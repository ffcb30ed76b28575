//! The recovery point: a small file (`recovery-point`, see the `meta` module) recording an
//! offset below which every record is known durable, so that recovery can tell damage to
//! acknowledged data (bit rot: refuse to open) from a torn tail (never acknowledged: cut it).
//! Kafka keeps the same fact per data directory in `recovery-point-offset-checkpoint`.
//!
//! It only ever records an offset that was durable before the write started, and it is written
//! atomically (temp file, fsync, rename, fsync dir) with a CRC, so a torn or damaged one is
//! ignored rather than trusted. Writing it costs a small file and two fsyncs, so it is written
//! when that is cheap: at a segment roll (flush `always`; under `interval` / `os`, once the
//! background thread sealed the rolled segment), at a truncation, at a clean close, at the end
//! of a recovery, and by the background thread at most every
//! [`LogConfig::checkpoint_interval`](crate::LogConfig::checkpoint_interval) when the durable
//! end moved.
//!
//! Lock order: the state lock, then the checkpoint lock, then the sync lock. A truncation holds
//! the checkpoint lock from before it lowers the durable end until it recorded the lowered one,
//! so the background thread can never record an offset the truncation removed.

use staunch_core::Offset;

use super::Inner;
use super::meta::{self, RECOVERY_POINT, RecoveryPoint};
use crate::LogError;
use crate::io::replace_file;

/// What the log last recorded as its recovery point.
#[derive(Debug)]
pub(super) struct Checkpoint {
    /// The offset in the `recovery-point` file (or the log end at open, if there was nothing
    /// to record).
    pub(super) recorded: Offset,
}

impl Inner {
    pub(super) fn lock_checkpoint(&self) -> std::sync::MutexGuard<'_, Checkpoint> {
        self.checkpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `offset`, which must be durable, as the recovery point (holding the checkpoint
    /// lock, `checkpoint`).
    pub(super) fn record_recovery_point(
        &self,
        checkpoint: &mut Checkpoint,
        offset: Offset,
    ) -> Result<(), LogError> {
        self.before_change()?;
        let point = RecoveryPoint {
            offset,
            unsynced_window: self.config.unsynced_window(),
        };
        replace_file(
            &*self.io,
            RECOVERY_POINT,
            &meta::encode_recovery_point(&point),
        )
        .map_err(|e| LogError::io("writing the recovery point", e))?;
        checkpoint.recorded = offset;
        Ok(())
    }

    /// Records the durable end as the recovery point if it moved since the last record. Not
    /// fatal if it fails: an older recovery point only protects less.
    pub(super) fn checkpoint_if_moved(&self) {
        let mut checkpoint = self.lock_checkpoint();
        if self.failure.get().is_some() {
            return;
        }
        let durable = self.durable_end();
        if durable == checkpoint.recorded {
            return;
        }
        if let Err(e) = self.record_recovery_point(&mut checkpoint, durable) {
            tracing::warn!(dir = %self.dir, error = %e, "could not record the recovery point");
        }
    }
}
