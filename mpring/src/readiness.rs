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
        if self.readiness.is_none() {
            self.readiness = Some(Readiness {
                fd: Arc::new(EventFd::new()?),
                self_notified: false,
            });
        }
        Ok(self.readiness.as_ref().map_or(-1, |r| r.fd.raw()))
    }

    /// Arms the [readiness fd](Consumer::readiness_fd) before the event
    /// loop waits: clears what made it readable last time, then makes it
    /// readable at the next commit, the last producer's drop or a
    /// [`WakeHandle`](crate::WakeHandle) wake-up. Returns `true` when one of
    /// those is the case already: the fd is then made readable at once (so
    /// a wait returns immediately, and a caller may skip waiting).
    ///
    /// Call it each time before waiting, after reading what was ready; a
    /// wait that ended for another source (a socket, a timer) leaves the fd
    /// armed, and arming again then costs no system call. A `WakeHandle`
    /// wake-up, like a wait, is taken by the first `arm_fd` after it (which
    /// returns `true`).
    ///
    /// # Panics
    /// If [`readiness_fd`](Consumer::readiness_fd) was never called.
    pub fn arm_fd(&mut self) -> bool {
        let readiness = self
            .readiness
            .as_mut()
            .expect("Consumer::arm_fd: make the fd with Consumer::readiness_fd first");
        let fd = readiness.fd.clone();
        // What a waker wrote: it takes the registration and writes the
        // counter under the slot's lock, so an empty slot means written.
        // What we wrote: `self_notified`.
        if readiness.self_notified || !self.ring.sleep().holds_fd(&fd) {
            readiness.self_notified = false;
            fd.clear();
        }
        let ready = match self.check() {
            Some(_) => true,
            None => {
                let ring = self.ring.clone();
                let announced = ring.sleep().announce_fd(&fd, &mut self.barrier_mode);
                if self.check().is_some() || announced.must_bound() {
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
            if let Some(readiness) = self.readiness.as_mut() {
                readiness.self_notified = true;
            }
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
