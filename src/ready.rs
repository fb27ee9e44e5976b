//! The consumer's wait as a future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{Consumer, WaitError};

/// A future that resolves once an entry is ready to read (or the stream
/// ended, or a [`WakeHandle`](crate::WakeHandle) woke the consumer); made
/// by [`Consumer::ready`]. Works with any executor: it only uses the
/// task's `Waker`.
#[must_use = "futures do nothing unless polled"]
pub struct Ready<'a> {
    consumer: &'a mut Consumer,
    /// The last poll left the consumer announced as asleep.
    pending: bool,
}

impl<'a> Ready<'a> {
    pub(crate) fn new(consumer: &'a mut Consumer) -> Ready<'a> {
        Ready {
            consumer,
            pending: false,
        }
    }
}

impl Future for Ready<'_> {
    type Output = Result<(), WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let poll = self.consumer.poll_ready(cx);
        self.pending = poll.is_pending();
        poll
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        // Dropped while pending (a `select!` took another branch): take the
        // sleeping flag and the waker back, so that the next commit does
        // not pay for a wake-up nobody waits for.
        if self.pending {
            self.consumer.cancel_sleep();
        }
    }
}

impl fmt::Debug for Ready<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready").finish_non_exhaustive()
    }
}
