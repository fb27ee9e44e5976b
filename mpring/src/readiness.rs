//! The readiness fd (Linux): the consumer waits in an event loop
//! (`epoll`, `mio`, any reactor) beside its sockets and timers instead of
//! in [`Consumer::wait`]. Arming is the consumer's announcement of sleep
//! (`crate::sleep`) with the fd as the wake-up target, so producers pay
//! nothing more than for a blocking wait: a flag load per commit, and one
//! `write` to the eventfd for the first commit after arming.

use std::io;
use std::os::fd::RawFd;

use crate::loom::{Arc, EventFd};
use crate::{Consumer, Metadata};

/// The consumer's readiness fd and what it knows of its counter.
pub(crate) struct Readiness {
    fd: Arc<EventFd>,
    /// The counter may be non-zero because the consumer wrote it (arming
    /// found something ready).
    self_notified: bool,
}

/// # Waiting in an event loop (Linux)
impl<M: Metadata> Consumer<M> {
    /// The consumer's readiness fd, made on first call: an eventfd to
    /// register for readability with `epoll` (level- or edge-triggered),
    /// `mio::unix::SourceFd` or any reactor. It stays open, the same
    /// number, as long as the consumer lives; do not close it.
    ///
    /// After [`arm_fd`](Consumer::arm_fd) it is readable while an entry is
    /// ready, every producer is gone or a [`WakeHandle`](crate::WakeHandle)
    /// fired. Use it instead of the blocking and async waits, not beside
    /// them: one way of waiting at a time.
    ///
    /// # Errors
    /// The system's, if it refuses an eventfd (too many open files).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// let fd = consumer.readiness_fd()?;
    /// // Register `fd` with epoll or mio beside the sockets; then, in the loop:
    /// loop {
    ///     if !consumer.arm_fd() {
    ///         // Nothing ready: sleep in epoll_wait / mio::Poll::poll until
    ///         // `fd` (or a socket, or the next timer) is ready.
    /// #       producer.push(b"datagram")?;
    /// #       let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    /// #       assert_eq!(unsafe { libc::poll(&mut poll, 1, 1000) }, 1);
    ///     }
    ///     let n = consumer.read_batch(64, |datagram| assert_eq!(datagram, b"datagram"));
    /// #   if n == 1 { break; }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn readiness_fd(&mut self) -> io::Result<RawFd> {
        let readiness = match self.readiness.take() {
            Some(readiness) => readiness,
            None => Readiness {
                fd: Arc::new(EventFd::new()?),
                self_notified: false,
            },
        };
        let fd = readiness.fd.raw();
        self.readiness = Some(readiness);
        Ok(fd)
    }

    /// Arms the [readiness fd](Consumer::readiness_fd) before the event
    /// loop waits: clears what made it readable last time, then makes it
    /// readable at the next commit, the last producer's drop or a
    /// [`WakeHandle`](crate::WakeHandle) wake-up. Returns `true` when one of
    /// those is the case already: the fd is then made readable at once (so
    /// a wait returns immediately, and a caller may skip waiting).
    ///
    /// Call it each time before waiting, after reading what was ready. A
    /// wait that ended for another source (a socket, a timer) leaves the fd
    /// armed: arming again then only looks at the ring. Otherwise arming
    /// announces sleep like a blocking wait (a fence, or a process-wide
    /// barrier while the consumer sleeps rarely) and counts in
    /// [`sleep_count`](Consumer::sleep_count). A `WakeHandle` wake-up, like
    /// a wait, is taken by the first `arm_fd` after it (which returns
    /// `true`).
    ///
    /// The fd may also turn readable with nothing to read (a producer
    /// published padding or an aborted reservation); the loop then reads
    /// nothing and arms again, which clears it. If the system refused the
    /// process-wide barrier, arming returns `true` for the next 100 ms
    /// (no commit is sure to notify the fd meanwhile): a loop then polls.
    ///
    /// # Panics
    /// If [`readiness_fd`](Consumer::readiness_fd) was never called.
    pub fn arm_fd(&mut self) -> bool {
        let readiness = self
            .readiness
            .as_mut()
            .expect("Consumer::arm_fd: make the fd with Consumer::readiness_fd first");
        let fd = readiness.fd.clone();
        // A counter we wrote ourselves must be cleared; one a waker wrote
        // is cleared because the waker took the registration with it.
        let mut clear = std::mem::take(&mut readiness.self_notified);
        let ready = match self.check() {
            Some(_) => true,
            None => {
                let ring = self.ring.clone();
                let Some(announced) = ring.sleep().announce_fd(&fd, clear, &mut self.barrier_mode)
                else {
                    // Still armed since the last time: nothing to pay.
                    return false;
                };
                clear = false;
                if self.check_before_sleep().is_some() || announced.must_bound() {
                    // Ready after all (the guard's drop takes the
                    // announcement back), or no commit is sure to notify
                    // the fd this time (a refused heavy barrier): readable
                    // now, so that the loop comes back soon.
                    true
                } else {
                    // The producer that sees the flag writes the counter.
                    announced.keep();
                    self.sleeps += 1;
                    false
                }
            }
        };
        if ready {
            fd.notify();
        }
        if let Some(readiness) = self.readiness.as_mut() {
            // Our own notification, or one still to clear.
            readiness.self_notified = ready || clear;
        }
        ready
    }

    /// Under loom: blocks as `epoll_wait` would on the readiness fd alone,
    /// level- or edge-triggered (the models' stand-in for the kernel).
    #[cfg(mpring_loom)]
    #[doc(hidden)]
    pub fn loom_epoll_wait(&self, edge_triggered: bool) {
        self.readiness
            .as_ref()
            .expect("readiness_fd first")
            .fd
            .wait(edge_triggered);
    }

    /// Under loom: whether the readiness fd is readable now.
    #[cfg(mpring_loom)]
    #[doc(hidden)]
    pub fn loom_fd_readable(&self) -> bool {
        self.readiness
            .as_ref()
            .expect("readiness_fd first")
            .fd
            .readable()
    }
}
