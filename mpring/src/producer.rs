//! The producers' handle.

use std::fmt;

use crate::error::ReserveError;
use crate::loom::Arc;
use crate::ring::Shared;
use crate::{BatchReservation, Reservation};

/// The producer side: a handle that every listener thread can share.
///
/// `Producer` is `Clone + Send + Sync`: clone it per thread or share one by
/// reference. No producer ever waits for another or for the consumer: when
/// the ring is full, [`reserve`](Producer::reserve) fails at once with
/// [`ReserveError::Full`].
///
/// When the last handle is dropped the consumer sees
/// [`Consumer::is_disconnected`](crate::Consumer::is_disconnected).
pub struct Producer {
    ring: Arc<Shared>,
}

impl Producer {
    pub(crate) fn new(ring: Arc<Shared>) -> Producer {
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
    /// for good). Fill it promptly: a UDP listener waits until its socket
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
    pub fn reserve(&self, len: usize) -> Result<Reservation<'_>, ReserveError> {
        let claim = self.ring.reserve(len)?;
        Ok(Reservation::new(&self.ring, claim, len))
    }

    /// Reserves room for up to `count` entries of up to `slot_len` bytes
    /// each with one CAS: a [`BatchReservation`] of `count` slots.
    ///
    /// The slots lie one after the other, each taking the room of one
    /// reservation of `slot_len` bytes (`slot_len` plus a header, rounded
    /// up to the alignment); the batch never crosses the buffer's end (like
    /// a single reservation, it claims the rest of the lap as padding and
    /// starts at the beginning). A batch takes at most half the ring:
    /// `count * (slot_len + 8)`, rounded, at most `capacity / 2` (so 64 KiB
    /// GRO slots need a ring of at least `count * 128 KiB` plus rounding).
    /// What a commit leaves unused goes back to the ring. A batch of 0
    /// slots claims nothing.
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
    ) -> Result<BatchReservation<'_>, ReserveError> {
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
        let claim = ring.reserve(count * slot - ring.align())?;
        Ok(BatchReservation::new(ring, Some(claim), count, slot_len))
    }

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
    /// example a small metadata header followed by a datagram, without
    /// building the whole entry first.
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

    /// The buffer's size in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The largest payload a reservation can ask for: half the capacity less
    /// one header (`capacity / 2 - alignment`). Larger requests fail with
    /// [`ReserveError::TooLarge`].
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

    /// Whether the consumer has been dropped (every reservation then fails
    /// with [`ReserveError::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        !self.ring.consumer_alive()
    }
}

impl Clone for Producer {
    fn clone(&self) -> Producer {
        self.ring.add_producer();
        Producer {
            ring: self.ring.clone(),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.ring.remove_producer();
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("ring", &*self.ring)
            .finish()
    }
}
