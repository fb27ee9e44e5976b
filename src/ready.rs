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
}

impl<'a> Ready<'a> {
    pub(crate) fn new(consumer: &'a mut Consumer) -> Ready<'a> {
        Ready { consumer }
    }
}

impl Future for Ready<'_> {
    type Output = Result<(), WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.consumer.poll_ready(cx)
    }
}

impl fmt::Debug for Ready<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready").finish_non_exhaustive()
    }
}
