//! Space claimed by a producer, written in place.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::ring::Claim;
use crate::Ring;

/// Space reserved in the ring by [`Producer::reserve`](crate::Producer::reserve),
/// written in place and then published.
///
/// Derefs to `&mut [u8]`: exactly the reserved length, all zero when handed
/// out. Then:
/// - [`commit`](Reservation::commit) publishes all of it;
/// - [`commit_len`](Reservation::commit_len) (or [`truncate`](Reservation::truncate)
///   then `commit`) publishes a prefix; the rest is given back to the ring
///   (zeroed by whichever side reclaims it, so it costs a `memset` of the
///   unused part: reserve about what you need);
/// - dropping it (also by a panic unwinding through the writer) aborts it:
///   the consumer steps over its bytes.
///
/// Leaking a reservation (`mem::forget`) is safe, but its header is never
/// published, so the consumer stops there for good and the entries reserved
/// after it are never read.
#[must_use = "a reservation is aborted when dropped; call `commit` to publish it"]
pub struct Reservation<'a> {
    ring: &'a Ring,
    /// `None` once finished (only inside `commit` and `drop`).
    claim: Option<Claim>,
    len: usize,
}

impl<'a> Reservation<'a> {
    pub(crate) fn new(ring: &'a Ring, claim: Claim, len: usize) -> Reservation<'a> {
        Reservation {
            ring,
            claim: Some(claim),
            len,
        }
    }

    /// Publishes the entry: the consumer can read it from now on.
    #[inline]
    pub fn commit(mut self) {
        let (ring, claim, len) = (self.ring, self.claim.take(), self.len);
        // Nothing is left to drop (the claim is out), and skipping the drop
        // glue keeps this path free of a call and of spills.
        std::mem::forget(self);
        if let Some(claim) = claim {
            ring.finish(claim, Some(len));
        }
    }

    /// Publishes only the first `len` bytes.
    ///
    /// # Panics
    /// If `len` is larger than the reservation (the entry is then aborted).
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(4096)?;
    /// let mut r = producer.reserve(1500)?;
    /// r[..3].copy_from_slice(b"abc"); // say a datagram of 3 bytes arrived
    /// r.commit_len(3);
    /// assert_eq!(&*consumer.read().unwrap(), b"abc");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn commit_len(mut self, len: usize) {
        assert!(
            len <= self.len,
            "commit_len({len}) on a reservation of {} bytes",
            self.len
        );
        self.len = len;
        self.commit();
    }

    /// Shortens the reservation to `len` bytes (no effect if it is not
    /// longer); a later `commit` publishes only those.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Drops the reservation without publishing it (the same as `drop`).
    #[inline]
    pub fn abort(self) {}
}

impl Deref for Reservation<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.claim {
            Some(claim) => &self.ring.claim_bytes(claim)[..self.len],
            None => &[],
        }
    }
}

impl DerefMut for Reservation<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.claim {
            Some(claim) => &mut self.ring.bytes_mut(claim)[..self.len],
            None => &mut [],
        }
    }
}

impl Drop for Reservation<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.ring.finish(claim, None);
        }
    }
}

impl fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
