//! The limit on open connections (Kafka's `max.connections`).
//!
//! Each served connection holds a [`Slot`]; a connection accepted when none is free is closed
//! at once, and the refusals are logged as one warning line per [`WARN_EVERY`] at most (a flood
//! of refused connections does not become a flood of log lines).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most one warning about refused connections per this long.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connection slots of one server, and the refusals not yet logged.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    refused_unlogged: u64,
    last_warning: Option<Instant>,
}

/// A connection's place among the open ones; freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// Room for `max` connections at once (at least one).
    pub(crate) fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            refused_unlogged: 0,
            last_warning: None,
        }
    }

    /// A slot for a new connection, or `None` when every slot is taken (the refusal is counted
    /// and logged at most once per [`WARN_EVERY`], with how many were refused since).
    pub(crate) fn admit(&mut self, peer: std::net::SocketAddr) -> Option<Slot> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(Slot { _permit: permit });
        }
        self.refused_unlogged += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            tracing::warn!(
                %peer,
                refused = self.refused_unlogged,
                max_connections = self.max,
                "connection limit reached: closing new connections (raise max_connections to allow more)"
            );
            self.refused_unlogged = 0;
            self.last_warning = Some(now);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_past_the_limit_is_refused_until_a_slot_frees() {
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut admission = Admission::new(2);
        let first = admission.admit(peer).expect("first");
        let _second = admission.admit(peer).expect("second");
        assert!(admission.admit(peer).is_none());
        assert!(admission.admit(peer).is_none());
        // Only the first refusal was logged; the second waits for the next warning.
        assert_eq!(admission.refused_unlogged, 1);
        drop(first);
        assert!(admission.admit(peer).is_some());
    }
}
