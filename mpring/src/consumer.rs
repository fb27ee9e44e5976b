//! The consumer side.

use std::fmt;
use std::time::Duration;

use crate::loom::Arc;
use crate::ring::{Cursor, Shared};
use crate::sleep::BarrierMode;
use crate::wait::DEFAULT_SPIN;
use crate::{Entry, Metadata};

/// The consumer side: exactly one per ring, `Send`, not `Clone`.
///
/// Entries come out in reservation order and are read in place. Consumed
/// space is zeroed as it is read and handed back to producers in batches:
/// when a read finds nothing more, at the end of every
/// [`read_batch`](Consumer::read_batch), on [`release`](Consumer::release),
/// or once an eighth of the ring is pending. A consumer that has caught up
/// therefore holds back no space.
///
/// Dropping the consumer makes every later reservation fail with
/// [`ReserveError::Disconnected`](crate::ReserveError::Disconnected).
///
/// `M` is the ring's [`Metadata`] record (none by default), read with each
/// entry: [`Entry::meta`], [`read_batch_meta`](Consumer::read_batch_meta).
pub struct Consumer<M = ()> {
    pub(crate) ring: Arc<Shared<M>>,
    pub(crate) cursor: Cursor,
    /// How long a blocking wait polls before it sleeps, at most.
    pub(crate) spin: Duration,
    /// How long the next blocking wait polls: `spin` while polling pays
    /// off, halved after each poll that ended in sleep all the same.
    pub(crate) spin_now: Duration,
    /// Which barrier pairing the next sleep uses.
    pub(crate) barrier_mode: BarrierMode,
    /// How many times a wait went to sleep (see `sleep_count`).
    pub(crate) sleeps: u64,
    /// The readiness fd, once made.
    #[cfg(target_os = "linux")]
    pub(crate) readiness: Option<crate::readiness::Readiness>,
}

impl<M: Metadata> Consumer<M> {
    pub(crate) fn new(ring: Arc<Shared<M>>) -> Consumer<M> {
        Consumer {
            barrier_mode: BarrierMode::new(ring.sleep()),
            ring,
            cursor: Cursor::default(),
            spin: DEFAULT_SPIN,
            spin_now: DEFAULT_SPIN,
            sleeps: 0,
            #[cfg(target_os = "linux")]
            readiness: None,
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
    pub fn read(&mut self) -> Option<Entry<'_, M>> {
        match self.ring.next(&mut self.cursor) {
            Some(delivery) => Some(Entry::new(&self.ring, &mut self.cursor, delivery)),
            None => {
                // Caught up: hold back no space.
                self.ring.release(&mut self.cursor);
                None
            }
        }
    }

    /// A batch of up to `max` ready entries, read in a loop: each
    /// [`ReadBatch::next`] hands out one [`Entry`] (record included), which
    /// is consumed when dropped, before the next one. Unlike
    /// [`read_batch`](Consumer::read_batch), the loop body can `break`,
    /// `return` or use `?`. Space is released as in `read_batch`: inside a
    /// long batch each time an eighth of the ring is pending, and when the
    /// batch ends (is dropped).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// for i in 0..10u8 {
    ///     producer.push(&[i])?;
    /// }
    /// let mut batch = consumer.batch(64);
    /// while let Some(entry) = batch.next() {
    ///     if entry[0] == 5 {
    ///         break; // entries 6..10 stay for the next batch
    ///     }
    /// }
    /// drop(batch);
    /// assert_eq!(consumer.read().unwrap()[0], 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch(&mut self, max: usize) -> ReadBatch<'_, M> {
        ReadBatch {
            ring: &self.ring,
            cursor: &mut self.cursor,
            left: max,
        }
    }

    /// Hands up to `max` ready entries to `f`, in order, and returns how
    /// many entries `f` saw.
    ///
    /// Space is released (handed back to producers) at the end
    /// of the batch and, inside a long batch, each time an eighth of the
    /// ring has been consumed: producers never see `Full` for as long as a
    /// batch lasts.
    ///
    /// If `f` panics, the entries before the one it panicked on are
    /// consumed and released; that one is not (it is read again next time).
    ///
    /// Called in a loop of the caller's own, pause a little after a call
    /// that returned 0 (or use [`read_batch_timeout`](Consumer::read_batch_timeout)):
    /// every poll of an empty ring reads the cache line a producer is
    /// about to write, and re-polling at once slows that producer.
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
        self.read_batch_meta(max, |_, payload| f(payload))
    }

    /// Like [`read_batch`](Consumer::read_batch), handing `f` each entry's
    /// metadata record with its payload.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::builder(1024).metadata::<u8>().build()?;
    /// for i in 0..10u8 {
    ///     producer.push_with(&[i; 3], i % 2)?;
    /// }
    /// let mut odd = 0;
    /// let n = consumer.read_batch_meta(64, |&parity, payload| {
    ///     assert_eq!(payload[0] % 2, parity);
    ///     odd += u32::from(parity);
    /// });
    /// assert_eq!((n, odd), (10, 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn read_batch_meta<F>(&mut self, max: usize, mut f: F) -> usize
    where
        F: FnMut(&M, &[u8]),
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
            f(batch.ring.meta(&delivery), batch.ring.bytes(&delivery));
            batch.ring.consume(batch.cursor, delivery);
            n += 1;
        }
        n
    }

    /// Hands the space of every consumed entry back to the producers now,
    /// instead of when an eighth of the ring is pending or the consumer
    /// catches up.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// producer.push(b"one")?;
    /// producer.push(b"two")?;
    /// drop(consumer.read()); // consumed, not yet released
    /// assert!(consumer.used_bytes() > 16);
    /// consumer.release();
    /// assert_eq!(consumer.used_bytes(), 16); // only "two" is left
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        self.ring.caught_up(&self.cursor)
    }

    /// Bytes not free for producers right now: entries (committed or still
    /// being written) with their headers and padding, including consumed
    /// entries whose space is not released yet. A snapshot.
    pub fn used_bytes(&self) -> usize {
        self.ring.unread_bytes(&self.cursor) + self.ring.pending_bytes(&self.cursor)
    }

    /// How far the consumer has read, in bytes of ring space since the ring
    /// was built: every entry with its header, metadata room and rounding,
    /// and every padding and skipped span it stepped over. A running total.
    ///
    /// Set against the payload bytes read in the same time, it shows how
    /// much room entries really take, for example when several producers
    /// commit reservations shorter than they asked for.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// producer.push(&[1; 60])?; // 8-byte header + 60, rounded: 72
    /// drop(consumer.read());
    /// assert_eq!(consumer.read_offset(), 72);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_offset(&self) -> u64 {
        self.ring.read_offset(&self.cursor)
    }

    /// In read-around mode ([`Builder::read_around_open`](crate::Builder::read_around_open)):
    /// how many reservations the consumer has read past while they were
    /// open and still waits for, and how long ago it first met the oldest
    /// of them (measured on the consumer's side, when it read past it), so
    /// that a handler can log a stuck listener. `(0, None)` otherwise.
    /// Reservations read past before they were announced (their producer
    /// was preempted right after claiming) may count as one until the
    /// consumer looks at them again.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (producer, mut consumer) = mpring::Ring::builder(4096).read_around_open(true).build()?;
    /// let held = producer.reserve(8)?;
    /// producer.push(b"next")?;
    /// drop(consumer.read());
    /// let (open, oldest) = consumer.open_reservations();
    /// assert_eq!(open, 1);
    /// if oldest.is_some_and(|t| t > Duration::from_millis(100)) {
    ///     eprintln!("a listener holds a reservation for too long");
    /// }
    /// drop(held); // aborted: stepped over
    /// assert!(consumer.read().is_none());
    /// assert_eq!(consumer.open_reservations(), (0, None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_reservations(&self) -> (usize, Option<Duration>) {
        self.ring.open_claims(&self.cursor)
    }

    /// How many times this consumer went to sleep: a blocking wait that
    /// parked its thread, or a [`poll_ready`](Consumer::poll_ready) that
    /// returned `Pending`. Each sleep costs the producer that ends it a
    /// wake-up (a system call); set against the entries read, it shows
    /// whether the spin ([`set_spin`](Consumer::set_spin)) fits the load.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (_producer, mut consumer) = mpring::Ring::new(1024)?;
    /// consumer.set_spin(Duration::ZERO);
    /// assert!(consumer.wait_timeout(Duration::from_millis(1)).is_err());
    /// assert!(consumer.sleep_count() >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sleep_count(&self) -> u64 {
        self.sleeps
    }

    /// How many reservations producers refused for admission
    /// ([`Reservation::refuse`](crate::Reservation::refuse)), for the
    /// handler's statistics.
    pub fn refused_count(&self) -> u64 {
        self.ring.refused_count()
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

/// Up to a number of entries, read one at a time in a loop; made by
/// [`Consumer::batch`]. Dropping it releases the space of what was read.
pub struct ReadBatch<'a, M = ()> {
    ring: &'a Shared<M>,
    cursor: &'a mut Cursor,
    left: usize,
}

impl<M> ReadBatch<'_, M> {
    /// The next ready entry, or `None` when the batch is used up or the
    /// next entry is not committed yet. The entry borrows the batch: it is
    /// consumed (dropped) before the next call.
    #[inline]
    #[allow(clippy::should_implement_trait)] // a lending iterator: `Iterator` cannot express it
    pub fn next(&mut self) -> Option<Entry<'_, M>> {
        if self.left == 0 {
            return None;
        }
        match self.ring.next(self.cursor) {
            Some(delivery) => {
                self.left -= 1;
                Some(Entry::new(self.ring, self.cursor, delivery))
            }
            None => None,
        }
    }
}

impl<M> Drop for ReadBatch<'_, M> {
    fn drop(&mut self) {
        self.ring.release(self.cursor);
    }
}

impl<M> fmt::Debug for ReadBatch<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBatch")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// Releases at the end of a batch, also when the callback panics.
struct Batch<'a, M> {
    ring: &'a Shared<M>,
    cursor: &'a mut Cursor,
}

impl<M> Drop for Batch<'_, M> {
    fn drop(&mut self) {
        self.ring.release(self.cursor);
    }
}

impl<M> Drop for Consumer<M> {
    fn drop(&mut self) {
        self.ring.sleep().clear_target();
        self.ring.close_consumer();
    }
}

impl<M> fmt::Debug for Consumer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", &*self.ring)
            .field("cursor", &self.cursor)
            .finish()
    }
}
