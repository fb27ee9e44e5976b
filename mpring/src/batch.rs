//! Room for several entries, claimed at once.

use std::fmt;

use crate::ring::{Claim, Shared};
use crate::Metadata;

/// Room for up to [`count`](BatchReservation::count) entries of up to
/// [`slot_len`](BatchReservation::slot_len) bytes each, claimed by
/// [`Producer::reserve_batch`](crate::Producer::reserve_batch) with one CAS.
///
/// Each slot is a `&mut [u8]` of `slot_len` bytes, all zero when handed
/// out; [`slots_mut`](BatchReservation::slots_mut) gives all of them at once
/// (for example as the buffers of one `recvmmsg` call). Then:
/// - [`commit`](BatchReservation::commit) publishes the first `k` slots,
///   each with its own length, as `k` ordinary entries in slot order; the
///   remaining slots are aborted. The committed entries are moved together
///   first, so the room they did not use goes back to the ring (or, when a
///   later reservation already exists, and always in read-around mode,
///   becomes one skipped span that the consumer steps over);
/// - dropping it (also by a panic unwinding through the writer) aborts all
///   slots.
///
/// Like a [`Reservation`](crate::Reservation), a batch holds up every entry
/// reserved after it until it is committed or dropped (in read-around mode
/// only their release, not their delivery): fill it promptly.
///
/// ```
/// let (producer, mut consumer) = mpring::Ring::new(4096)?;
/// let mut batch = producer.reserve_batch(4, 100)?;
/// for (i, slot) in batch.slots_mut().enumerate().take(3) {
///     slot[0] = i as u8; // say three datagrams of 1, 2 and 3 bytes arrived
/// }
/// batch.commit(&[1, 2, 3]);
/// assert_eq!(&*consumer.read().unwrap(), &[0]);
/// assert_eq!(&*consumer.read().unwrap(), &[1, 0]);
/// assert_eq!(&*consumer.read().unwrap(), &[2, 0, 0]);
/// assert!(consumer.read().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// On a ring with [`Metadata`], [`commit_with`](BatchReservation::commit_with)
/// takes each entry's record with its length.
#[must_use = "a batch is aborted when dropped; call `commit` to publish it"]
pub struct BatchReservation<'a, M = ()> {
    ring: &'a Shared<M>,
    /// `None` for a batch of zero slots, and once finished.
    claim: Option<Claim>,
    count: usize,
    slot_len: usize,
    /// Bytes from one slot's payload to the next (the slot's stride).
    slot: usize,
}

impl<'a, M: Metadata> BatchReservation<'a, M> {
    pub(crate) fn new(
        ring: &'a Shared<M>,
        claim: Option<Claim>,
        count: usize,
        slot_len: usize,
    ) -> BatchReservation<'a, M> {
        BatchReservation {
            ring,
            claim,
            count,
            slot_len,
            // No slot, no stride: `slot_len` may be anything then (a slot
            // of a real batch is at most the largest payload).
            slot: if count == 0 {
                0
            } else {
                ring.slot_stride(slot_len) as usize
            },
        }
    }

    /// The number of slots.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The size of every slot in bytes.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Slot `i`, to be written in place.
    ///
    /// # Panics
    /// If `i >= self.count()`.
    #[track_caller]
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.count, "slot {i} of a batch of {}", self.count);
        let (slot, len) = (self.slot, self.slot_len);
        match &mut self.claim {
            Some(claim) => &mut self.ring.bytes_mut(claim)[i * slot..i * slot + len],
            None => unreachable!("a batch with slots has a claim"),
        }
    }

    /// All slots at once, in order, each `slot_len` bytes long.
    pub fn slots_mut(&mut self) -> SlotsMut<'_> {
        let (slot, len, count) = (self.slot, self.slot_len, self.count);
        let rest: &mut [u8] = match &mut self.claim {
            Some(claim) => self.ring.bytes_mut(claim),
            None => &mut [],
        };
        SlotsMut {
            rest,
            left: count,
            slot,
            len,
        }
    }

    /// Publishes the first `entries.len()` slots as entries, slot `i` with
    /// its first `entries[i].0` bytes and the record `entries[i].1`; the
    /// other slots are aborted. An empty `entries` aborts the whole batch.
    ///
    /// # Panics
    /// If `entries` has more items than the batch has slots, or a length is
    /// larger than `slot_len` (a caller bug; the batch is then aborted, and
    /// the panic points at the caller).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::builder(4096).metadata::<u16>().build()?;
    /// let mut batch = producer.reserve_batch(4, 100)?;
    /// batch.slot_mut(0)[0] = 1;
    /// batch.slot_mut(1)[..2].copy_from_slice(&[2, 2]);
    /// batch.commit_with(&[(1, 4433), (2, 443)]);
    /// let entry = consumer.read().unwrap();
    /// assert_eq!((&*entry, *entry.meta()), (&[1u8][..], 4433));
    /// drop(entry);
    /// assert_eq!(*consumer.read().unwrap().meta(), 443);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn commit_with(mut self, entries: &[(usize, M)]) {
        self.check(entries.len(), entries.iter().map(|&(len, _)| len));
        if let Some(claim) = self.claim.take() {
            self.ring
                .finish_batch(claim, self.slot as u64, entries.iter().copied());
        }
    }

    #[track_caller]
    fn check(&self, n: usize, mut lens: impl Iterator<Item = usize>) {
        assert!(
            n <= self.count,
            "{n} lengths for a batch of {} slots",
            self.count
        );
        if let Some(len) = lens.find(|&len| len > self.slot_len) {
            panic!("a length of {len} for slots of {} bytes", self.slot_len);
        }
    }

    /// Drops the batch without publishing anything (the same as `drop`).
    pub fn abort(self) {}
}

/// # Without metadata
impl BatchReservation<'_> {
    /// Publishes the first `lens.len()` slots as entries, slot `i` with
    /// its first `lens[i]` bytes; the other slots are aborted. An empty
    /// `lens` aborts the whole batch.
    ///
    /// # Panics
    /// If `lens` has more entries than the batch has slots, or a length is
    /// larger than `slot_len` (a caller bug; the batch is then aborted, and
    /// the panic points at the caller).
    #[track_caller]
    pub fn commit(mut self, lens: &[usize]) {
        self.check(lens.len(), lens.iter().copied());
        if let Some(claim) = self.claim.take() {
            self.ring
                .finish_batch(claim, self.slot as u64, lens.iter().map(|&len| (len, ())));
        }
    }
}

impl<M> Drop for BatchReservation<'_, M> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.ring.abort(claim);
        }
    }
}

impl<M> fmt::Debug for BatchReservation<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchReservation")
            .field("count", &self.count)
            .field("slot_len", &self.slot_len)
            .finish_non_exhaustive()
    }
}

/// The slots of a [`BatchReservation`], in order; made by
/// [`BatchReservation::slots_mut`].
#[derive(Debug)]
pub struct SlotsMut<'a> {
    /// From the next slot's payload to the end of the claim.
    rest: &'a mut [u8],
    left: usize,
    slot: usize,
    len: usize,
}

impl<'a> Iterator for SlotsMut<'a> {
    type Item = &'a mut [u8];

    fn next(&mut self) -> Option<&'a mut [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The claim ends `slot - len - prefix` bytes (the next slot's
        // header and metadata room, and rounding) or more after the last
        // slot's payload, so every slot's `len` bytes are there; what lies
        // between two slots (the next one's header room) is cut off.
        let (slot, rest) = std::mem::take(&mut self.rest).split_at_mut(self.len);
        self.rest = rest.get_mut(self.slot - self.len..).unwrap_or_default();
        Some(slot)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for SlotsMut<'_> {}
