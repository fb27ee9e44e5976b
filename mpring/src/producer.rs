//! The producers' handle.

use std::fmt;

use crate::error::ReserveError;
use crate::loom::Arc;
use crate::ring::{Shared, Wake};
use crate::{BatchReservation, Metadata, OwnedReservation, Reservation};

/// The producer side: a handle that every listener thread can share.
///
/// `Producer` is `Clone + Send + Sync`: clone it per thread or share one by
/// reference. No producer ever waits for another or for the consumer: when
/// the ring is full, [`reserve`](Producer::reserve) fails at once with
/// [`ReserveError::Full`].
///
/// When the last handle is dropped the consumer sees
/// [`Consumer::is_disconnected`](crate::Consumer::is_disconnected).
///
/// `M` is the ring's [`Metadata`] record (none by default); on a ring with
/// metadata, entries are committed with the `_with` methods, which take it.
pub struct Producer<M = ()> {
    pub(crate) ring: Arc<Shared<M>>,
}

impl<M: Metadata> Producer<M> {
    pub(crate) fn new(ring: Arc<Shared<M>>) -> Producer<M> {
        Producer { ring }
    }

    /// Reserves space for a `len`-byte entry and returns it to be written in
    /// place.
    ///
    /// The reservation derefs to a `&mut [u8]` of exactly `len` bytes, all
    /// zero. [`commit`](Reservation::commit) it to publish it; commit fewer
    /// bytes with [`commit_len`](Reservation::commit_len) or
    /// [`truncate`](Reservation::truncate); drop it to abort.
    ///
    /// Entries are read in the order of their reservations, so a
    /// reservation holds back every entry reserved after it until it is
    /// committed or dropped (and one leaked with `mem::forget` blocks them
    /// for good). In read-around mode
    /// ([`Builder::read_around_open`](crate::Builder::read_around_open)) it
    /// holds back only the release of their space, not their delivery. Fill it promptly: a UDP listener waits until its socket
    /// is readable, then reserves, receives without blocking and commits;
    /// it never blocks in `recv` while holding a reservation.
    ///
    /// # Errors
    /// - [`ReserveError::Full`]: not enough free space now (retryable);
    /// - [`ReserveError::TooLarge`]: `len > self.max_payload()`;
    /// - [`ReserveError::Disconnected`]: the consumer is gone.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// let mut reservation = producer.reserve(8)?;
    /// reservation.copy_from_slice(&42u64.to_le_bytes());
    /// reservation.commit();
    /// assert_eq!(*consumer.read().unwrap(), 42u64.to_le_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn reserve(&self, len: usize) -> Result<Reservation<'_, M>, ReserveError> {
        let claim = self.ring.reserve(len)?;
        Ok(Reservation::new(&self.ring, claim, len))
    }

    /// [`reserve`](Producer::reserve), as an [`OwnedReservation`]: no borrow
    /// of this producer (it holds a producer handle of its own, one more
    /// reference count), so it can be stored beside the producer, sent to
    /// another thread or task and committed there, or handed to a
    /// completion-based I/O runtime.
    ///
    /// # Errors
    /// As [`reserve`](Producer::reserve).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// let mut pending = producer.reserve_owned(5)?;
    /// drop(producer); // the reservation keeps the stream open
    /// std::thread::spawn(move || {
    ///     pending.copy_from_slice(b"later");
    ///     pending.commit();
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(&*consumer.read().unwrap(), b"later");
    /// assert!(consumer.is_disconnected());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve_owned(&self, len: usize) -> Result<OwnedReservation<M>, ReserveError> {
        let claim = self.ring.reserve(len)?;
        Ok(OwnedReservation::new(self.clone(), claim, len))
    }

    /// Reserves room for up to `count` entries of up to `slot_len` bytes
    /// each with one CAS: a [`BatchReservation`] of `count` slots.
    ///
    /// The slots lie one after the other, each taking the room of one
    /// reservation of `slot_len` bytes (`slot_len` plus a header and any
    /// metadata room, rounded up to the alignment); the batch never crosses
    /// the buffer's end (like a single reservation, it claims the rest of
    /// the lap as padding and starts at the beginning). A batch takes at
    /// most half the ring: `count` times that room, at most
    /// `capacity / 2` (so 16 GRO slots of 64 KiB need a ring of at least
    /// 2 MiB plus rounding).
    ///
    /// What a commit leaves unused goes back to the ring when no later
    /// reservation exists yet; otherwise (and always in read-around mode)
    /// it stays claimed (as one skipped span) until the consumer passes it. With several producers receiving
    /// short datagrams into large slots, that room is lost for a lap:
    /// receive into a buffer of your own and copy with
    /// [`push_batch`](Producer::push_batch), which claims exactly what the
    /// entries need. A batch of 0 slots claims nothing.
    ///
    /// # Errors
    /// - [`ReserveError::Full`]: not enough free space now (retryable; a
    ///   smaller batch may fit);
    /// - [`ReserveError::BatchTooLarge`]: the batch can never fit this
    ///   ring; `max_count` says how many slots of this size can;
    /// - [`ReserveError::Disconnected`]: the consumer is gone.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1 << 16)?;
    /// let mut batch = producer.reserve_batch(16, 1500)?;
    /// batch.slot_mut(0)[..5].copy_from_slice(b"hello");
    /// batch.slot_mut(1)[..5].copy_from_slice(b"world");
    /// batch.commit(&[5, 5]); // 14 slots unused: their room goes back
    /// assert_eq!(&*consumer.read().unwrap(), b"hello");
    /// assert_eq!(&*consumer.read().unwrap(), b"world");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve_batch(
        &self,
        count: usize,
        slot_len: usize,
    ) -> Result<BatchReservation<'_, M>, ReserveError> {
        let ring = &*self.ring;
        if count == 0 {
            return Ok(BatchReservation::new(ring, None, 0, slot_len));
        }
        let half = ring.capacity() / 2;
        let slot = if slot_len <= ring.max_payload() {
            ring.slot_stride(slot_len) as usize
        } else {
            usize::MAX
        };
        let max_count = half / slot;
        if count > max_count {
            return Err(ReserveError::BatchTooLarge {
                count,
                slot_len,
                max_count,
            });
        }
        // One claim over all slots: its payload runs from slot 0's payload
        // to the end of the last slot.
        let claim = ring.reserve(count * slot - ring.prefix())?;
        Ok(BatchReservation::new(ring, Some(claim), count, slot_len))
    }

    /// Copies `payload` and its metadata record into the ring as one entry.
    ///
    /// # Errors
    /// As [`reserve`](Producer::reserve).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::builder(1024).metadata::<u32>().build()?;
    /// producer.push_with(b"datagram", 7)?;
    /// let entry = consumer.read().unwrap();
    /// assert_eq!((&*entry, *entry.meta()), (&b"datagram"[..], 7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn push_with(&self, payload: &[u8], meta: M) -> Result<(), ReserveError> {
        let mut reservation = self.reserve(payload.len())?;
        reservation.copy_from_slice(payload);
        reservation.commit_with(meta);
        Ok(())
    }

    /// Copies `entries` (payload and metadata record each) into the ring
    /// as consecutive entries, claimed with one CAS: all of them, or none.
    ///
    /// See [`push_batch`](Producer::push_batch).
    ///
    /// # Errors
    /// As [`push_batch`](Producer::push_batch).
    pub fn push_batch_with(&self, entries: &[(&[u8], M)]) -> Result<(), ReserveError> {
        self.push_run_with(entries, Wake::Now)
    }

    fn push_run_with(&self, entries: &[(&[u8], M)], wake: Wake) -> Result<(), ReserveError> {
        let total = self.run_room(entries.iter().map(|(payload, _)| payload.len()))?;
        self.ring.push_run(
            total,
            entries.iter().map(|&(payload, meta)| (payload, meta)),
            wake,
        )
    }

    /// [`push_batch_with`](Producer::push_batch_with) without waking a
    /// sleeping consumer: that is left to this thread's next
    /// [`wake_if_asleep`](Producer::wake_if_asleep), which must come before
    /// it waits on anything or stops (or the consumer may sleep on
    /// published entries). For a thread that pushes several runs in a row
    /// (a listener's drain) and wakes each consumer once.
    #[cfg(not(mpring_loom))]
    #[cfg_attr(not(all(feature = "udp", target_os = "linux")), allow(dead_code))]
    pub(crate) fn push_batch_with_wake_later(
        &self,
        entries: &[(&[u8], M)],
    ) -> Result<(), ReserveError> {
        self.push_run_with(entries, Wake::Later)
    }

    /// The same, public for the loom models only.
    #[cfg(mpring_loom)]
    #[doc(hidden)]
    pub fn push_batch_with_wake_later(&self, entries: &[(&[u8], M)]) -> Result<(), ReserveError> {
        self.push_run_with(entries, Wake::Later)
    }

    /// Wakes the consumer if it sleeps: the check every publish makes,
    /// for runs pushed with `push_batch_with_wake_later`.
    #[cfg(not(mpring_loom))]
    #[cfg_attr(not(all(feature = "udp", target_os = "linux")), allow(dead_code))]
    pub(crate) fn wake_if_asleep(&self) {
        self.ring.wake_if_asleep();
    }

    /// The same, public for the loom models only.
    #[cfg(mpring_loom)]
    #[doc(hidden)]
    pub fn wake_if_asleep(&self) {
        self.ring.wake_if_asleep();
    }

    /// The room a run of entries of these lengths needs, if it may be
    /// claimed at once (at most half the ring, like a batch).
    fn run_room<L>(&self, lens: L) -> Result<usize, ReserveError>
    where
        L: Iterator<Item = usize> + Clone,
    {
        let ring = &*self.ring;
        let (mut longest, mut total) = (0, 0usize);
        for len in lens.clone() {
            if len > ring.max_payload() {
                return Err(ReserveError::TooLarge {
                    len,
                    max: ring.max_payload(),
                });
            }
            longest = longest.max(len);
            // Saturating: a total past `usize::MAX` is too large anyway.
            total = total.saturating_add(ring.slot_stride(len) as usize);
        }
        if total > ring.capacity() / 2 {
            return Err(ReserveError::BatchTooLarge {
                count: lens.count(),
                slot_len: longest,
                max_count: ring.capacity() / 2 / ring.slot_stride(longest) as usize,
            });
        }
        Ok(total)
    }
    /// The buffer's size in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The largest payload a reservation can ask for: half the capacity less
    /// one header and the metadata room (`capacity / 2 - alignment` without
    /// metadata). Larger requests fail with [`ReserveError::TooLarge`].
    #[inline]
    pub fn max_payload(&self) -> usize {
        self.ring.max_payload()
    }

    /// How many reservations (of all handles together) were refused with
    /// [`ReserveError::Full`] so far.
    ///
    /// ```
    /// let (producer, _consumer) = mpring::Ring::new(64)?;
    /// while producer.push(&[0; 8]).is_ok() {}
    /// assert_eq!(producer.full_count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn full_count(&self) -> u64 {
        self.ring.full_count()
    }

    /// Bytes of the ring in use now (entries being written or not yet
    /// released by the consumer, with their headers and padding): a
    /// snapshot, for admission decisions. Reads the consumer's cache line.
    pub fn used_bytes(&self) -> usize {
        self.ring.bytes_in_use()
    }

    /// Bytes free for producers now: `capacity - used_bytes()`. A snapshot;
    /// an entry of this size may still not fit where the tail is (it would
    /// need padding to the buffer's end).
    pub fn free_bytes(&self) -> usize {
        self.ring.capacity() - self.ring.bytes_in_use()
    }

    /// Whether more of the ring is in use than its
    /// [high-water mark](crate::Builder::high_water_mark): time to refuse
    /// what can be shed ([`Reservation::refuse`]). Always `false` without
    /// a mark.
    pub fn above_high_water(&self) -> bool {
        self.ring.above_high_water()
    }

    /// How many reservations producers refused for admission
    /// ([`Reservation::refuse`]), counted apart from [`full_count`](Producer::full_count).
    pub fn refused_count(&self) -> u64 {
        self.ring.refused_count()
    }

    /// Whether the consumer has been dropped (every reservation then fails
    /// with [`ReserveError::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        !self.ring.consumer_alive()
    }
}

/// # Without metadata
impl Producer {
    /// Copies `payload` into the ring as one entry.
    ///
    /// # Errors
    /// As [`reserve`](Producer::reserve).
    ///
    /// ```
    /// use mpring::{ReserveError, Ring};
    ///
    /// let (producer, mut consumer) = Ring::new(64)?;
    /// producer.push(b"datagram")?;
    /// // The largest payload is half the ring less a header.
    /// assert_eq!(producer.push(&[0; 64]), Err(ReserveError::TooLarge { len: 64, max: 24 }));
    /// assert_eq!(&*consumer.read().unwrap(), b"datagram");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn push(&self, payload: &[u8]) -> Result<(), ReserveError> {
        let mut reservation = self.reserve(payload.len())?;
        reservation.copy_from_slice(payload);
        reservation.commit();
        Ok(())
    }

    /// Copies the concatenation of `parts` into the ring as one entry, for
    /// example a small header followed by a datagram, without building the
    /// whole entry first. (For a record of fixed type with every entry, a
    /// ring with [`Metadata`] needs no packing at all.)
    ///
    /// # Errors
    /// As [`reserve`](Producer::reserve), for the total length.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(1024)?;
    /// producer.push_parts(&[&[7u8], b"datagram"])?;
    /// assert_eq!(&*consumer.read().unwrap(), b"\x07datagram");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_parts(&self, parts: &[&[u8]]) -> Result<(), ReserveError> {
        // Saturating: a sum past usize::MAX is too large either way.
        let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        let mut reservation = self.reserve(len)?;
        let mut at = 0;
        for part in parts {
            reservation[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        reservation.commit();
        Ok(())
    }

    /// Copies `payloads` into the ring as consecutive entries, claimed with
    /// one CAS: all of them, or none.
    ///
    /// This is how a listener that received several datagrams into
    /// buffers of its own (one `recvmmsg` call) hands them over: the ring
    /// claims exactly the room the entries need, however short they are and
    /// however many producers claim at the same time, at the price of one
    /// copy. [`reserve_batch`](Producer::reserve_batch) receives in place
    /// instead, and wastes the unused part of its slots when another
    /// producer claimed after it.
    ///
    /// # Errors
    /// - [`ReserveError::Full`]: the entries do not fit the free space now
    ///   (retryable; fewer may fit);
    /// - [`ReserveError::TooLarge`]: one payload is larger than
    ///   [`max_payload`](Producer::max_payload);
    /// - [`ReserveError::BatchTooLarge`]: together they take more than half
    ///   the ring; `slot_len` is the longest payload and `max_count` how
    ///   many entries of that length fit;
    /// - [`ReserveError::Disconnected`]: the consumer is gone.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(4096)?;
    /// let datagrams: [&[u8]; 3] = [b"a", b"bc", b"def"];
    /// producer.push_batch(&datagrams)?;
    /// for expected in datagrams {
    ///     assert_eq!(&*consumer.read().unwrap(), expected);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_batch(&self, payloads: &[&[u8]]) -> Result<(), ReserveError> {
        let total = self.run_room(payloads.iter().map(|payload| payload.len()))?;
        self.ring.push_run(
            total,
            payloads.iter().map(|&payload| (payload, ())),
            Wake::Now,
        )
    }
}

impl<M> Clone for Producer<M> {
    fn clone(&self) -> Producer<M> {
        self.ring.add_producer();
        Producer {
            ring: self.ring.clone(),
        }
    }
}

impl<M> Drop for Producer<M> {
    fn drop(&mut self) {
        self.ring.remove_producer();
    }
}

impl<M> fmt::Debug for Producer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("ring", &*self.ring)
            .finish()
    }
}
