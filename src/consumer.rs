//! The consumer side.

use std::fmt;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::loom::Arc;
use crate::ring::Cursor;
use crate::{Entry, Ready, Ring, WaitError, WakeHandle};

/// How long a blocking wait polls before it sleeps, unless set otherwise.
const DEFAULT_SPIN: Duration = Duration::from_micros(5);

/// The consumer side: exactly one per ring, `Send`, not `Clone`.
///
/// Entries come out in reservation order and are read in place. Consumed
/// space is zeroed and handed back to producers in batches: when a read
/// finds nothing more, at the end of every [`read_batch`](Consumer::read_batch),
/// on [`release`](Consumer::release), or once an eighth of the ring is
/// pending. A consumer that has caught up therefore holds back no space.
///
/// Dropping the consumer makes every later reservation fail with
/// [`ReserveError::Disconnected`](crate::ReserveError::Disconnected).
pub struct Consumer {
    ring: Arc<Ring>,
    cursor: Cursor,
    /// How long a blocking wait polls before it sleeps.
    spin: Duration,
}

impl Consumer {
    pub(crate) fn new(ring: Arc<Ring>) -> Consumer {
        Consumer {
            ring,
            cursor: Cursor::default(),
            spin: DEFAULT_SPIN,
        }
    }

    /// The next entry, read in place, or `None` when the next entry in
    /// reservation order is not committed yet (or there is none).
    ///
    /// The entry is consumed when the returned guard is dropped; a guard
    /// leaked with `mem::forget` leaves the entry unread (it comes back on the
    /// next call).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// producer.push(b"one")?;
    /// producer.push(b"two")?;
    /// while let Some(entry) = consumer.read() {
    ///     println!("{} bytes", entry.len());
    /// }
    /// assert!(consumer.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn read(&mut self) -> Option<Entry<'_>> {
        match self.ring.next(&mut self.cursor) {
            Some(delivery) => Some(Entry::new(&self.ring, &mut self.cursor, delivery)),
            None => {
                // Caught up: hold back no space.
                self.ring.release(&mut self.cursor);
                None
            }
        }
    }

    /// Hands up to `max` ready entries to `f`, in order, and returns how
    /// many entries `f` saw.
    ///
    /// Space is released (zeroed and handed back to producers) at the end
    /// of the batch and, inside a long batch, each time an eighth of the
    /// ring has been consumed: producers never see `Full` for as long as a
    /// batch lasts.
    ///
    /// If `f` panics, the entries before the one it panicked on are
    /// consumed and released; that one is not (it is read again next time).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// for i in 0..10u8 {
    ///     producer.push(&[i; 3])?;
    /// }
    /// let mut sum = 0u32;
    /// let n = consumer.read_batch(64, |entry| sum += u32::from(entry[0]));
    /// assert_eq!((n, sum), (10, 45));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn read_batch<F>(&mut self, max: usize, mut f: F) -> usize
    where
        F: FnMut(&[u8]),
    {
        let batch = Batch {
            ring: &self.ring,
            cursor: &mut self.cursor,
        };
        let mut n = 0;
        while n < max {
            let Some(delivery) = batch.ring.next(batch.cursor) else {
                break;
            };
            f(batch.ring.bytes(&delivery));
            batch.ring.consume(batch.cursor, delivery);
            n += 1;
        }
        n
    }

    /// Zeroes the space of every consumed entry and hands it back to the
    /// producers now, instead of at the next batch boundary.
    pub fn release(&mut self) {
        self.ring.release(&mut self.cursor);
    }

    /// Whether nothing is left to read: no entry committed or reserved
    /// after the ones already consumed. A snapshot: producers may reserve
    /// right after.
    ///
    /// Also `false` while only padding or a skipped span (an aborted or
    /// shortened reservation) lies ahead: the next [`read`](Consumer::read)
    /// steps over it and then returns `None`.
    pub fn is_empty(&self) -> bool {
        self.ring.unread_bytes(&self.cursor) == 0
    }

    /// Bytes not free for producers right now: entries (committed or still
    /// being written) with their headers and padding, including consumed
    /// entries whose space is not released yet. A snapshot.
    pub fn used_bytes(&self) -> usize {
        self.ring.unread_bytes(&self.cursor) + self.ring.pending_bytes(&self.cursor)
    }

    /// Whether every [`Producer`](crate::Producer) handle has been dropped.
    /// Entries committed before that can still be read: the stream has
    /// ended once this is true and [`read`](Consumer::read) returns `None`.
    pub fn is_disconnected(&self) -> bool {
        self.ring.producers() == 0
    }

    /// The buffer's size in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }
}

/// # Waiting
impl Consumer {
    /// Blocks until an entry is ready to read, every producer is gone (and
    /// the ring drained), or a [`WakeHandle`] wakes the consumer.
    ///
    /// The wait polls for a few microseconds first ([`set_spin`](Consumer::set_spin)),
    /// then sleeps. While the consumer is busy, producers pay only a fence
    /// and a flag load per commit; the first commit after the consumer
    /// fell asleep wakes it (a lock and an unpark).
    ///
    /// # Errors
    /// [`WaitError::Disconnected`] or [`WaitError::Woken`].
    pub fn wait(&mut self) -> Result<(), WaitError> {
        self.wait_until(None)
    }

    /// [`wait`](Consumer::wait), for at most `timeout`.
    ///
    /// # Errors
    /// [`WaitError::Timeout`], [`WaitError::Disconnected`] or
    /// [`WaitError::Woken`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<(), WaitError> {
        // A timeout too large for the clock waits without one.
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// [`wait`](Consumer::wait), until `deadline` (for example the next
    /// QUIC timer).
    ///
    /// # Errors
    /// [`WaitError::Timeout`], [`WaitError::Disconnected`] or
    /// [`WaitError::Woken`].
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
    /// As [`wait_timeout`](Consumer::wait_timeout).
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<Entry<'_>, WaitError> {
        self.wait_timeout(timeout)?;
        Ok(self
            .read()
            .expect("a ready entry stays ready: only the consumer reads"))
    }

    /// Waits like [`wait_deadline`](Consumer::wait_deadline), then reads the
    /// next entry.
    ///
    /// # Errors
    /// As [`wait_deadline`](Consumer::wait_deadline).
    pub fn read_deadline(&mut self, deadline: Instant) -> Result<Entry<'_>, WaitError> {
        self.wait_deadline(deadline)?;
        Ok(self
            .read()
            .expect("a ready entry stays ready: only the consumer reads"))
    }

    /// Waits like [`wait_timeout`](Consumer::wait_timeout), then hands up to
    /// `max` ready entries to `f` as [`read_batch`](Consumer::read_batch)
    /// does. Returns how many (at least one, unless `max` is 0).
    ///
    /// # Errors
    /// As [`wait_timeout`](Consumer::wait_timeout).
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
    /// does. Returns how many (at least one, unless `max` is 0).
    ///
    /// # Errors
    /// As [`wait_deadline`](Consumer::wait_deadline).
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
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WaitError>> {
        if let Some(outcome) = self.check() {
            return Poll::Ready(outcome);
        }
        // Register, announce, then look again (see `Waiter` and `Ring::publish`).
        self.ring.waiter().register_task(cx.waker());
        self.ring.announce_sleep();
        match self.check() {
            Some(outcome) => {
                self.ring.end_sleep();
                self.ring.waiter().clear();
                Poll::Ready(outcome)
            }
            // The producer that sees the flag wakes the task.
            None => Poll::Pending,
        }
    }

    /// Takes back the announcement of a `poll_ready` that returned
    /// `Pending` and will not be polled again.
    pub(crate) fn cancel_sleep(&mut self) {
        self.ring.end_sleep();
        self.ring.waiter().clear();
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
    pub fn ready(&mut self) -> Ready<'_> {
        Ready::new(self)
    }

    /// Sets how long a blocking wait polls the ring before it sleeps
    /// (default 5 µs).
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
    }

    /// A handle that wakes this consumer from another thread.
    pub fn wake_handle(&self) -> WakeHandle {
        WakeHandle::new(self.ring.clone())
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<(), WaitError> {
        // Poll for a while before sleeping: a busy ring refills within
        // microseconds, and every sleep costs the producer that ends it a
        // system call.
        let mut spun = cfg!(mpring_loom) || self.spin.is_zero();
        loop {
            if let Some(outcome) = self.check() {
                return outcome;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(WaitError::Timeout);
            }
            if !spun {
                spun = true;
                if let Some(outcome) = self.spin(deadline) {
                    return outcome;
                }
                continue;
            }
            // Register, announce, then look again (see `Waiter` and
            // `Ring::publish`): a commit after this point sees the flag.
            self.ring.waiter().register_thread();
            self.ring.announce_sleep();
            if self.ring.next(&mut self.cursor).is_none()
                && !self.ring.waiter().is_woken()
                && self.ring.producers() != 0
            {
                crate::loom::park_until(deadline);
            }
            self.ring.end_sleep();
            self.ring.waiter().clear();
        }
    }

    /// Polls for up to `self.spin` (or until the deadline), pausing
    /// between polls so as not to steal the cache line a producer is
    /// writing. Returns the outcome if waiting ended (an entry is ready,
    /// a wake-up, the end of the stream), `None` when the time is up.
    fn spin(&mut self, deadline: Option<Instant>) -> Option<Result<(), WaitError>> {
        // A spin too long for the clock (`Duration::MAX`) spins until
        // something happens or the deadline passes.
        let spin_end = Instant::now().checked_add(self.spin);
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

    /// `Some` when waiting is over: an entry is ready, or an error.
    fn check(&mut self) -> Option<Result<(), WaitError>> {
        if self.ring.next(&mut self.cursor).is_some() {
            return Some(Ok(()));
        }
        // Caught up: hold back no space while waiting.
        self.ring.release(&mut self.cursor);
        if self.ring.waiter().take_woken() {
            return Some(Err(WaitError::Woken));
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

/// Releases at the end of a batch, also when the callback panics.
struct Batch<'a> {
    ring: &'a Ring,
    cursor: &'a mut Cursor,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.ring.release(self.cursor);
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.ring.waiter().clear();
        self.ring.close_consumer();
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", &*self.ring)
            .field("cursor", &self.cursor)
            .finish()
    }
}
