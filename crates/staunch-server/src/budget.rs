//! The broker-wide budget of request memory (Kafka's `queued.max.request.bytes`).
//!
//! A connection takes a [`Charge`] for a request frame before reading its body and keeps it
//! until the answer is written (or the request is dropped). When the budget is spent,
//! connections wait for it before reading on: back-pressure instead of growing memory.
//!
//! The charge is not the frame's size but what the frame can grow to once decoded: the frame
//! itself plus [`decoded_bytes_limit`] of its length, the most memory `decode_request` lets
//! its decoded form take (47 bytes per byte of frame, at least 16 KiB, at most 64 MiB; past
//! it the frame is refused). The codec turns each element of an array into a struct of 24–200
//! bytes that may take 2–3 bytes of the frame (LeaveGroup v4 members: 40 times the frame), so
//! without that limit a 100 MiB frame decoded to ~4 GB; with it, no frame takes more than its
//! length plus 64 MiB (see `vendor/kafka-protocol/PATCHES.md`).

use std::sync::Arc;

use staunch_protocol::decoded_bytes_limit;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget counts in units of this many bytes, so budgets beyond 4 GiB fit the
/// semaphore's `u32` acquisitions.
const UNIT: usize = 1024;

/// Shared by every connection of one server.
#[derive(Debug, Clone)]
pub(crate) struct RequestBudget {
    /// `None` when the budget is off (`queued_max_request_bytes` 0).
    units: Option<(Arc<Semaphore>, u32)>,
}

/// Budget held for one request; returned when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestBudget {
    /// A budget of `bytes` (rounded up to a KiB); 0 turns it off.
    pub(crate) fn new(bytes: usize) -> Self {
        if bytes == 0 {
            return RequestBudget { units: None };
        }
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        RequestBudget {
            units: Some((Arc::new(Semaphore::new(units as usize)), units)),
        }
    }

    /// What a frame of `frame_len` bytes is charged, in bytes: the frame plus the most its
    /// decoded form may take, but never more than the whole budget, so that one frame larger
    /// than the budget waits until it has the budget to itself instead of waiting for ever.
    #[cfg(test)]
    fn charge_for(&self, frame_len: usize) -> usize {
        match &self.units {
            None => 0,
            Some((_, total)) => self.units_for(frame_len, *total) as usize * UNIT,
        }
    }

    fn units_for(&self, frame_len: usize, total: u32) -> u32 {
        let bytes = frame_len.saturating_add(decoded_bytes_limit(frame_len));
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, total)
    }

    /// Waits until the budget has room for a frame of `frame_len` bytes and takes it. Waiters
    /// are served in order, so a large frame is not starved by a stream of small ones.
    pub(crate) async fn charge(&self, frame_len: usize) -> Charge {
        let Some((semaphore, total)) = &self.units else {
            return Charge { _permit: None };
        };
        let units = self.units_for(frame_len, *total);
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = semaphore.clone().acquire_many_owned(units).await.ok();
        Charge { _permit: permit }
    }

    /// Bytes of the budget not charged at the moment (`None` when the budget is off).
    #[cfg(test)]
    fn available(&self) -> Option<usize> {
        self.units
            .as_ref()
            .map(|(s, _)| s.available_permits() * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_charge_is_the_frame_and_its_decoded_limit_and_returns_when_dropped() {
        let budget = RequestBudget::new(1 << 30);
        // Small frames: at least 16 KiB for the decoded form.
        assert_eq!(budget.charge_for(100), 17 << 10);
        // Mid-sized frames: 47 bytes decoded per byte, 48 in all.
        assert_eq!(budget.charge_for(64 << 10), 48 * (64 << 10));
        // Large frames: the frame plus at most 64 MiB, not 48 times the frame (4.8 GB for
        // 100 MiB).
        assert_eq!(budget.charge_for(100 << 20), (100 << 20) + (64 << 20));
        let charge = budget.charge(64 << 10).await;
        assert_eq!(budget.available(), Some((1 << 30) - 48 * (64 << 10)));
        drop(charge);
        assert_eq!(budget.available(), Some(1 << 30));
    }

    #[tokio::test]
    async fn a_spent_budget_makes_the_next_frame_wait() {
        let budget = RequestBudget::new(100 * 1024);
        let first = budget.charge(2000).await; // 94 KiB of 100: the frame and 47 times it
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(2000).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second frame did not wait");
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the second frame got the budget once the first returned it")
            .unwrap();
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_takes_all_of_it_instead_of_waiting_for_ever() {
        let budget = RequestBudget::new(64 * 1024);
        assert_eq!(budget.charge_for(100 << 20), 64 * 1024);
        let charge = tokio::time::timeout(Duration::from_secs(10), budget.charge(100 << 20))
            .await
            .expect("charged");
        assert_eq!(budget.available(), Some(0));
        drop(charge);
        assert_eq!(budget.available(), Some(64 * 1024));
    }

    #[tokio::test]
    async fn a_zero_budget_is_off() {
        let budget = RequestBudget::new(0);
        assert_eq!(budget.charge_for(1 << 20), 0);
        let _held: Vec<Charge> = vec![budget.charge(100 << 20).await, budget.charge(1).await];
        assert_eq!(budget.available(), None);
    }
}
