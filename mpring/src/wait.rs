//! Waiting for entries: blocking waits with a deadline, the async
//! [`Ready`] future, and how long a wait polls before it sleeps. The
//! handshake with the producers is `crate::sleep`'s.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::{Consumer, Entry, Metadata, WaitError, WakeHandle};

/// How long a blocking wait polls before it sleeps, unless set otherwise.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(5);

/// Polls shorter than this are not worth their clock reads: none at all.
const MIN_SPIN: Duration = Duration::from_nanos(500);

/// The next, shorter poll after one that found nothing.
fn halve(spin: Duration) -> Duration {
    let half = spin / 2;
    if half < MIN_SPIN {
        Duration::ZERO
    } else {
        half
    }
}

/// # Waiting
impl<M: Metadata> Consumer<M> {
    /// Blocks until an entry is ready to read, every producer is gone (and
    /// the ring drained), or a [`WakeHandle`] wakes the consumer.
    ///
    /// `Ok(())` means an entry is ready, unless a [`WakeHandle`] ended the
    /// wait: then the next [`read`](Consumer::read) may find nothing (ready
    /// entries still come first). A consumer that never made a handle gets
    /// `Ok` only with an entry ready.
    ///
    /// The wait polls for a few microseconds first ([`set_spin`](Consumer::set_spin)),
    /// then sleeps. While the consumer is busy, producers pay only a fence
    /// and a flag load per commit; the first commit after the consumer
    /// fell asleep wakes it (a lock and an unpark).
    ///
    /// # Errors
    /// [`WaitError::Disconnected`].
    pub fn wait(&mut self) -> Result<(), WaitError> {
        self.wait_until(None)
    }

    /// [`wait`](Consumer::wait), for at most `timeout`.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] or [`WaitError::Disconnected`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<(), WaitError> {
        // A timeout too large for the clock waits without one.
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// [`wait`](Consumer::wait), until `deadline` (for example the next
    /// QUIC timer).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] or [`WaitError::Disconnected`].
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// let timer = Instant::now() + Duration::from_millis(5);
    /// assert_eq!(consumer.wait_deadline(timer), Err(mpring::WaitError::Timeout));
    /// producer.push(b"datagram")?;
    /// assert_eq!(consumer.wait_deadline(timer), Ok(()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_deadline(&mut self, deadline: Instant) -> Result<(), WaitError> {
        self.wait_until(Some(deadline))
    }

    /// Waits like [`wait_timeout`](Consumer::wait_timeout), then reads the
    /// next entry.
    ///
    /// # Errors
    /// As [`wait_timeout`](Consumer::wait_timeout); a [`WakeHandle`]
    /// wake-up with nothing ready ends it early, as [`WaitError::Timeout`].
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<Entry<'_, M>, WaitError> {
        self.wait_timeout(timeout)?;
        // A ready entry stays ready (only the consumer reads): `None` here
        // is a wake-up on purpose.
        self.read().ok_or(WaitError::Timeout)
    }

    /// Waits like [`wait_deadline`](Consumer::wait_deadline), then reads the
    /// next entry.
    ///
    /// # Errors
    /// As [`wait_deadline`](Consumer::wait_deadline); a [`WakeHandle`]
    /// wake-up with nothing ready ends it early, as [`WaitError::Timeout`].
    pub fn read_deadline(&mut self, deadline: Instant) -> Result<Entry<'_, M>, WaitError> {
        self.wait_deadline(deadline)?;
        self.read().ok_or(WaitError::Timeout)
    }

    /// Waits like [`wait_timeout`](Consumer::wait_timeout), then hands up to
    /// `max` ready entries to `f` as [`read_batch`](Consumer::read_batch)
    /// does. Returns how many: at least one, unless `max` is 0 or a
    /// [`WakeHandle`] woke the consumer.
    ///
    /// # Errors
    /// As [`wait_timeout`](Consumer::wait_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use mpring::WaitError;
    ///
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// let listener = std::thread::spawn(move || producer.push(b"datagram"));
    /// let mut seen = 0;
    /// loop {
    ///     match consumer.read_batch_timeout(64, Duration::from_millis(100), |_| seen += 1) {
    ///         Ok(_) => {}
    ///         Err(WaitError::Timeout) => { /* run timers */ }
    ///         Err(WaitError::Disconnected) => break, // every producer is gone, all read
    ///     }
    /// }
    /// assert_eq!(seen, 1);
    /// listener.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_batch_timeout<F>(
        &mut self,
        max: usize,
        timeout: Duration,
        f: F,
    ) -> Result<usize, WaitError>
    where
        F: FnMut(&[u8]),
    {
        self.wait_timeout(timeout)?;
        Ok(self.read_batch(max, f))
    }

    /// Waits like [`wait_deadline`](Consumer::wait_deadline), then hands up
    /// to `max` ready entries to `f` as [`read_batch`](Consumer::read_batch)
    /// does. Returns how many: at least one, unless `max` is 0 or a
    /// [`WakeHandle`] woke the consumer.
    ///
    /// # Errors
    /// As [`wait_deadline`](Consumer::wait_deadline).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use mpring::WaitError;
    ///
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// producer.push(b"datagram")?;
    /// let next_timer = Instant::now() + Duration::from_millis(10);
    /// let mut lens = Vec::new();
    /// assert_eq!(consumer.read_batch_deadline(64, next_timer, |d| lens.push(d.len())), Ok(1));
    /// // Nothing more before the timer is due.
    /// assert_eq!(consumer.read_batch_deadline(64, next_timer, |_| ()), Err(WaitError::Timeout));
    /// assert_eq!(lens, [8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_batch_deadline<F>(
        &mut self,
        max: usize,
        deadline: Instant,
        f: F,
    ) -> Result<usize, WaitError>
    where
        F: FnMut(&[u8]),
    {
        self.wait_deadline(deadline)?;
        Ok(self.read_batch(max, f))
    }

    /// The async form of [`wait`](Consumer::wait): `Ready(Ok(()))` once an
    /// entry is ready, `Pending` (with the task's waker registered) until
    /// then. Runtime-agnostic.
    ///
    /// One waker is kept: polling from two tasks wakes only the one that
    /// polled last. A `Pending` poll leaves the consumer announced as
    /// asleep, so the next commit pays for a wake-up even if the task has
    /// lost interest; the [`ready`](Consumer::ready) future takes that back
    /// when it is dropped, so prefer it in `select!`.
    ///
    /// `Ready(Ok(()))` also when a [`WakeHandle`] woke the consumer (as for
    /// [`wait`](Consumer::wait)).
    ///
    /// # Errors
    /// `Ready(Err(WaitError::Disconnected))`.
    ///
    /// ```
    /// use std::future::poll_fn;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::sync::Arc;
    /// #     use std::task::{Context, Poll, Wake};
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl Wake for Unpark { fn wake(self: Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         match f.as_mut().poll(&mut cx) { Poll::Ready(v) => return v, Poll::Pending => std::thread::park() }
    /// #     }
    /// # }
    ///
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// let listener = std::thread::spawn(move || producer.push(b"datagram"));
    /// block_on(async {
    ///     // In a hand-written future's `poll`, or through `poll_fn`:
    ///     poll_fn(|cx| consumer.poll_ready(cx)).await.unwrap();
    /// });
    /// assert_eq!(&*consumer.read().unwrap(), b"datagram");
    /// listener.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WaitError>> {
        if let Some(outcome) = self.check() {
            return Poll::Ready(outcome);
        }
        let ring = self.ring.clone();
        let announced = ring
            .sleep()
            .announce_task(cx.waker(), &mut self.barrier_mode);
        match self.check_before_sleep() {
            // The guard's drop takes the announcement back.
            Some(outcome) => Poll::Ready(outcome),
            None if announced.must_bound() => {
                // No commit is sure to wake us this time: poll again soon.
                drop(announced);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            None => {
                // The producer that sees the flag wakes the task.
                announced.keep();
                self.sleeps += 1;
                Poll::Pending
            }
        }
    }

    /// A future for [`poll_ready`](Consumer::poll_ready).
    ///
    /// ```
    /// # // A minimal executor; any runtime (tokio, smol, ...) works the same.
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::sync::Arc;
    /// #     use std::task::{Context, Poll, Wake};
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl Wake for Unpark { fn wake(self: Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         match f.as_mut().poll(&mut cx) { Poll::Ready(v) => return v, Poll::Pending => std::thread::park() }
    /// #     }
    /// # }
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// producer.push(b"datagram")?;
    /// block_on(async {
    ///     consumer.ready().await.unwrap();
    ///     consumer.read_batch(64, |datagram| assert_eq!(datagram, b"datagram"));
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready(&mut self) -> Ready<'_, M> {
        Ready::new(self)
    }

    /// Sets how long a blocking wait polls the ring before it sleeps, at
    /// most (default 5 µs).
    ///
    /// The poll adapts: after each poll that ended in sleep all the same,
    /// the next wait polls half as long (down to not at all); a sleep that
    /// turns out at most twice `spin` restores the full poll. So a consumer
    /// that sleeps long between bursts does not burn the poll (nor, on
    /// some virtual machines, pay a slower wake-up after it) every time.
    ///
    /// Each sleep costs the producer that ends it a system call (a futex
    /// wake), and the consumer one more to sleep. Polling longer suits a
    /// consumer that keeps up with very fast in-memory producers: it then
    /// rarely sleeps. Polling burns CPU, though: a datagram handler fed by
    /// listener threads (a system call per datagram each) gains little and
    /// may prefer less, or zero (sleep at once). BENCHMARKS.md has figures
    /// for both. The async [`poll_ready`](Consumer::poll_ready) never polls.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
        self.spin_now = spin;
    }

    /// A handle that wakes this consumer from another thread.
    pub fn wake_handle(&self) -> WakeHandle<M> {
        WakeHandle::new(self.ring.clone())
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<(), WaitError> {
        // Poll for a while before sleeping: a busy ring refills within
        // microseconds, and every sleep costs the producer that ends it a
        // system call.
        let mut spun = crate::loom::LOOM || self.spin_now.is_zero();
        // When the last sleep began, if this wait slept.
        let mut slept_at = None;
        loop {
            if let Some(outcome) = self.check() {
                if let (Some(at), Ok(())) = (slept_at, &outcome) {
                    self.adapt_after_sleep(at);
                }
                return outcome;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(WaitError::Timeout);
            }
            if !spun {
                spun = true;
                if let Some(outcome) = self.spin(deadline) {
                    // Polling paid: poll longer next time, up to the spin.
                    self.spin_now = self.spin_now.saturating_mul(2).min(self.spin);
                    return outcome;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    continue; // the deadline, not the poll, ran out
                }
                // Polling found nothing: poll less next time.
                self.spin_now = halve(self.spin_now);
                continue;
            }
            // Register, announce, then look again (see `crate::sleep`): a
            // commit after this point sees the flag. Looking again may step
            // over spans published before the flag (no wake-up comes for
            // them): release them, or producers that wait for that room
            // would wait on a sleeping consumer.
            let announced = self.ring.sleep().announce_thread(&mut self.barrier_mode);
            let ready = self.ring.next_before_sleep(&mut self.cursor).is_some();
            if !ready {
                self.ring.release(&mut self.cursor);
            }
            if !ready && !self.ring.sleep().is_woken() && self.ring.producers() != 0 {
                let until = if announced.must_bound() {
                    let bound = Instant::now() + crate::sleep::DEGRADED_SLEEP;
                    Some(deadline.map_or(bound, |d| d.min(bound)))
                } else {
                    deadline
                };
                self.sleeps += 1;
                if !crate::loom::LOOM {
                    slept_at = Some(Instant::now());
                }
                crate::loom::park_until(until);
            }
            drop(announced);
        }
    }

    /// A sleep that began at `at` ended: if an entry ended it within
    /// twice the full spin (the time to wake up is part of what is
    /// measured, and about as long as a default spin), polling would have
    /// caught that entry, so the next wait polls for the full spin again.
    fn adapt_after_sleep(&mut self, at: Instant) {
        if at.elapsed() <= self.spin.saturating_mul(2) && !self.ring.caught_up(&self.cursor) {
            self.spin_now = self.spin;
        }
    }

    /// Polls for up to `self.spin_now` (or until the deadline), pausing
    /// between polls so as not to steal the cache line a producer is
    /// writing. Returns the outcome if waiting ended (an entry is ready,
    /// a wake-up, the end of the stream), `None` when the time is up.
    fn spin(&mut self, deadline: Option<Instant>) -> Option<Result<(), WaitError>> {
        // A spin too long for the clock (`Duration::MAX`) spins until
        // something happens or the deadline passes.
        let spin_end = Instant::now().checked_add(self.spin_now);
        let until = match (deadline, spin_end) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        loop {
            for _ in 0..256 {
                std::hint::spin_loop();
            }
            if let Some(outcome) = self.check() {
                return Some(outcome);
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return None;
            }
        }
    }

    /// [`check`](Consumer::check), as the last look after announcing
    /// sleep: in read-around mode it also reads past claims not announced
    /// yet (`Shared::next_before_sleep`), which no wake-up would signal.
    pub(crate) fn check_before_sleep(&mut self) -> Option<Result<(), WaitError>> {
        if self.ring.next_before_sleep(&mut self.cursor).is_some() {
            return Some(Ok(()));
        }
        self.check()
    }

    /// `Some` when waiting is over: an entry is ready, or an error.
    pub(crate) fn check(&mut self) -> Option<Result<(), WaitError>> {
        if self.ring.next(&mut self.cursor).is_some() {
            return Some(Ok(()));
        }
        // Caught up: hold back no space while waiting.
        self.ring.release(&mut self.cursor);
        if self.ring.sleep().take_woken() {
            // A wake-up on purpose ends the wait, with nothing to read.
            return Some(Ok(()));
        }
        if self.ring.producers() == 0 {
            // The last commits happen before the count's Acquire: look again.
            if self.ring.next(&mut self.cursor).is_some() {
                return Some(Ok(()));
            }
            return Some(Err(WaitError::Disconnected));
        }
        None
    }
}

impl<M> Consumer<M> {
    /// Takes back the announcement of a `poll_ready` that returned
    /// `Pending` and will not be polled again.
    pub(crate) fn cancel_sleep(&mut self) {
        self.ring.sleep().cancel();
    }
}

/// A future that resolves once an entry is ready to read, a
/// [`WakeHandle`](crate::WakeHandle) woke the consumer (both `Ok`), or the
/// stream ended; made
/// by [`Consumer::ready`]. Works with any executor: it only uses the
/// task's `Waker`.
#[must_use = "futures do nothing unless polled"]
pub struct Ready<'a, M = ()> {
    consumer: &'a mut Consumer<M>,
    /// The last poll left the consumer announced as asleep.
    pending: bool,
}

impl<'a, M: Metadata> Ready<'a, M> {
    pub(crate) fn new(consumer: &'a mut Consumer<M>) -> Ready<'a, M> {
        Ready {
            consumer,
            pending: false,
        }
    }
}

impl<M: Metadata> Future for Ready<'_, M> {
    type Output = Result<(), WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let poll = self.consumer.poll_ready(cx);
        self.pending = poll.is_pending();
        poll
    }
}

impl<M> Drop for Ready<'_, M> {
    fn drop(&mut self) {
        // Dropped while pending (a `select!` took another branch): take the
        // sleeping flag and the waker back, so that the next commit does
        // not pay for a wake-up nobody waits for.
        if self.pending {
            self.consumer.cancel_sleep();
        }
    }
}

impl<M> fmt::Debug for Ready<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(mpring_loom)))]
mod tests {
    use std::time::Duration;

    use crate::{Ring, WaitError};

    /// Each poll that ends in sleep all the same halves the next one, down
    /// to none.
    #[test]
    fn polls_that_find_nothing_shrink_to_none() {
        let (_producer, mut consumer) = Ring::new(1024).unwrap();
        consumer.set_spin(Duration::from_micros(4));
        let mut seen = Vec::new();
        for _ in 0..5 {
            assert_eq!(
                consumer.wait_timeout(Duration::from_millis(50)),
                Err(WaitError::Timeout)
            );
            seen.push(consumer.spin_now.as_nanos());
        }
        assert_eq!(seen, [2_000, 1_000, 500, 0, 0]);
    }

    /// A sleep of at most twice the full spin means polling would have
    /// caught the entry: the next wait polls for the full spin again.
    #[test]
    fn a_short_sleep_restores_the_full_poll() {
        let (producer, mut consumer) = Ring::new(1024).unwrap();
        let spin = Duration::from_secs(5);
        consumer.set_spin(spin);
        consumer.spin_now = Duration::ZERO;
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            producer.push(b"soon").unwrap();
        });
        assert_eq!(consumer.wait(), Ok(()));
        assert!(consumer.sleep_count() >= 1);
        assert_eq!(consumer.spin_now, spin);
        pusher.join().unwrap();
    }
}
