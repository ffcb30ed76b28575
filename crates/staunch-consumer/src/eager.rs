//! Starting a broker call at once, on the caller's thread, and keeping it driven.
//!
//! [`start`] polls a future once where it is created — which starts the broker's work there
//! and then (the embedded broker's write on its blocking pool, a network client's request
//! queued), and fixes its place among calls to the same partition, since the broker appends
//! calls naming a partition in the order they were first polled — and hands a future still
//! pending to a task of its own, so it runs to the end (releasing whatever it holds, such as a
//! client's metadata lock) whether or not anyone waits for it. A call answered on the spot
//! needs no task.

use std::pin::Pin;
use std::task::{Context, Waker};

/// Polls `call` once and, if it is still pending, spawns it (see the [module docs](self)).
/// Its outcome is for `call` itself to deliver (through a channel).
pub(crate) fn start(call: impl Future<Output = ()> + Send + 'static) {
    let mut call: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(call);
    // The task polls it again with a waker of its own.
    if call
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
    {
        tokio::spawn(call);
    }
}
