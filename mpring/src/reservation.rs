//! Space claimed by a producer, written in place.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};

use crate::ring::{Claim, Shared};
use crate::{Metadata, Producer};

/// Space reserved in the ring by [`Producer::reserve`](crate::Producer::reserve),
/// written in place and then published.
///
/// Derefs to `&mut [u8]`: exactly the reserved length, all zero when handed
/// out. Then:
/// - [`commit`](Reservation::commit) publishes all of it;
/// - [`commit_len`](Reservation::commit_len) (or [`truncate`](Reservation::truncate)
///   then `commit`) publishes a prefix; the rest is given back to the ring
///   when nothing was reserved after it, else stepped over by the consumer
///   (zeroed by whichever side reclaims it, so it costs a `memset` of the
///   unused part: reserve about what you need). In read-around mode
///   ([`Builder::read_around_open`](crate::Builder::read_around_open)) it is
///   never given back: it stays claimed until the consumer passes it;
/// - dropping it (also by a panic unwinding through the writer) aborts it:
///   the consumer steps over its bytes.
///
/// It also implements [`io::Write`]: writes fill it from the start, and
/// [`commit_written`](Reservation::commit_written) publishes exactly what
/// was written.
///
/// Entries are read in reservation order, so a reservation holds up every
/// entry reserved after it until it is committed or dropped: fill it
/// promptly (a UDP listener waits until its socket is readable *before* it
/// reserves, never blocks in `recv` while holding one). Leaking a
/// reservation (`mem::forget`) is safe, but its header is never published,
/// so the consumer stops there for good and the entries reserved after it
/// are never read. In read-around mode the consumer reads past it, so the
/// entries after it are still read, but its space and everything after it
/// is never released: producers see [`Full`](crate::ReserveError::Full)
/// once the rest of the ring is claimed.
///
/// On a ring with [`Metadata`], commit with [`commit_with`](Reservation::commit_with)
/// or [`commit_len_with`](Reservation::commit_len_with), which take the
/// entry's record.
///
/// [`Producer::reserve_owned`](crate::Producer::reserve_owned) makes an
/// [`OwnedReservation`] instead: the same, with no borrow of the producer.
#[must_use = "a reservation is aborted when dropped; call `commit` to publish it"]
pub struct Reservation<'a, M = ()> {
    ring: &'a Shared<M>,
    /// `None` once finished (only inside `commit` and `drop`).
    claim: Option<Claim>,
    len: usize,
    /// Bytes written through `io::Write`, from the start.
    written: usize,
}

impl<'a, M: Metadata> Reservation<'a, M> {
    pub(crate) fn new(ring: &'a Shared<M>, claim: Claim, len: usize) -> Reservation<'a, M> {
        Reservation {
            ring,
            claim: Some(claim),
            len,
            written: 0,
        }
    }

    /// Publishes the entry with its metadata record: the consumer can read
    /// both from now on.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::builder(1024).metadata::<[u16; 2]>().build()?;
    /// let mut r = producer.reserve(2)?;
    /// r.copy_from_slice(b"hi");
    /// r.commit_with([4433, 1]);
    /// assert_eq!(consumer.read().unwrap().meta(), &[4433, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn commit_with(mut self, meta: M) {
        let (ring, claim, len) = (self.ring, self.claim.take(), self.len);
        // Nothing is left to drop (the claim is out), and skipping the drop
        // glue keeps this path free of a call and of spills.
        std::mem::forget(self);
        if let Some(claim) = claim {
            ring.commit(claim, len, meta);
        }
    }

    /// Publishes only the first `len` bytes, with the entry's metadata
    /// record; the rest goes back to the ring, or is stepped over (see
    /// [`Reservation`]).
    ///
    /// # Panics
    /// If `len` is larger than the reservation (a caller bug; the entry is
    /// then aborted, and the panic points at the caller).
    #[inline]
    #[track_caller]
    pub fn commit_len_with(mut self, len: usize, meta: M) {
        assert!(
            len <= self.len,
            "commit_len_with({len}) on a reservation of {} bytes",
            self.len
        );
        self.len = len;
        self.commit_with(meta);
    }

    /// Shortens the reservation to `len` bytes (no effect if it is not
    /// longer); a later `commit` publishes only those.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::new(4096)?;
    /// let mut r = producer.reserve(1500)?;
    /// r[..2].copy_from_slice(b"hi");
    /// r.truncate(2);
    /// assert_eq!(r.len(), 2);
    /// r.commit();
    /// assert_eq!(&*consumer.read().unwrap(), b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.written = self.written.min(self.len);
    }

    /// Drops the reservation without publishing it (the same as `drop`).
    #[inline]
    pub fn abort(self) {}

    /// Aborts the reservation as refused for admission (say, a new
    /// connection's Initial packet received while the ring is above its
    /// [high-water mark](crate::Builder::high_water_mark)): counted in
    /// [`Producer::refused_count`], apart from `Full`.
    pub fn refuse(self) {
        self.ring.count_refused();
    }
}

/// # Without metadata
impl Reservation<'_> {
    /// Publishes the entry: the consumer can read it from now on.
    #[inline]
    pub fn commit(self) {
        self.commit_with(());
    }

    /// Publishes only the first `len` bytes; the rest goes back to the ring,
    /// or is stepped over (see [`Reservation`]).
    ///
    /// # Panics
    /// If `len` is larger than the reservation (a caller bug; the entry is
    /// then aborted, and the panic points at the caller).
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
    #[track_caller]
    pub fn commit_len(mut self, len: usize) {
        assert!(
            len <= self.len,
            "commit_len({len}) on a reservation of {} bytes",
            self.len
        );
        self.len = len;
        self.commit();
    }

    /// Publishes the bytes written through [`io::Write`] (from the start),
    /// whatever else was done to the reservation's bytes.
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let (producer, mut consumer) = mpring::Ring::new(4096)?;
    /// let mut r = producer.reserve(64)?;
    /// write!(r, "{} + {} = {}", 1, 2, 1 + 2)?;
    /// r.commit_written();
    /// assert_eq!(&*consumer.read().unwrap(), b"1 + 2 = 3");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn commit_written(mut self) {
        self.len = self.written;
        self.commit();
    }
}

impl<M> Deref for Reservation<'_, M> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.claim {
            Some(claim) => &self.ring.claim_bytes(claim)[..self.len],
            None => &[],
        }
    }
}

impl<M> DerefMut for Reservation<'_, M> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.claim {
            Some(claim) => &mut self.ring.bytes_mut(claim)[..self.len],
            None => &mut [],
        }
    }
}

/// Fills the reservation from the start; a write past its end writes what
/// fits (and then `Ok(0)`, which `write_all` reports as
/// [`io::ErrorKind::WriteZero`]).
impl<M> io::Write for Reservation<'_, M> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut written = self.written;
        let n = fill(self, &mut written, buf);
        self.written = written;
        Ok(n)
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies what fits of `buf` into `dst` after its first `*written` bytes.
#[inline]
fn fill(dst: &mut [u8], written: &mut usize, buf: &[u8]) -> usize {
    let at = *written;
    let n = buf.len().min(dst.len() - at);
    dst[at..at + n].copy_from_slice(&buf[..n]);
    *written += n;
    n
}

impl<M> Drop for Reservation<'_, M> {
    #[inline]
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.ring.abort(claim);
        }
    }
}

impl<M> fmt::Debug for Reservation<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A reservation that owns its way to the ring (a producer handle of its
/// own) instead of borrowing a producer: `'static` and `Send`, so it can be
/// stored beside its producer, moved to another thread or task, or handed
/// to a completion-based I/O runtime, and committed there later. Made by
/// [`Producer::reserve_owned`](crate::Producer::reserve_owned).
///
/// It works like a [`Reservation`] (deref to the bytes, `io::Write`, the
/// same commits) and keeps its guarantees: dropping it, a panic included,
/// aborts it; until it is committed or dropped it counts as a producer, so
/// the consumer does not see the stream end while it is pending (leaking
/// one with `mem::forget` therefore also keeps the stream open for good).
///
/// # With completion-based I/O (io_uring)
/// The bytes lie in the ring, not in this value: moving it never moves
/// them, and they go back to the ring only when the value is committed or
/// dropped. A runtime that takes buffers by value and keeps them until the
/// kernel completes the operation (as io_uring runtimes do, even when the
/// task gives up on the operation) therefore never lets the ring reuse a
/// buffer the kernel may still write. Submitting the bytes' address
/// yourself is `unsafe` in any case: keep the reservation alive until the
/// completion arrives.
#[must_use = "a reservation is aborted when dropped; call `commit` to publish it"]
pub struct OwnedReservation<M = ()> {
    producer: Producer<M>,
    /// `None` once finished.
    claim: Option<Claim>,
    len: usize,
    written: usize,
}

impl<M: Metadata> OwnedReservation<M> {
    pub(crate) fn new(producer: Producer<M>, claim: Claim, len: usize) -> OwnedReservation<M> {
        OwnedReservation {
            producer,
            claim: Some(claim),
            len,
            written: 0,
        }
    }

    /// The claim as a borrowed reservation, to finish it with. `self`
    /// drops after it (with nothing left to abort), so its producer handle
    /// goes only after the commit.
    fn borrowed(&mut self) -> Reservation<'_, M> {
        Reservation {
            ring: &self.producer.ring,
            claim: self.claim.take(),
            len: self.len,
            written: self.written,
        }
    }

    /// As [`Reservation::commit_with`].
    #[inline]
    pub fn commit_with(mut self, meta: M) {
        self.borrowed().commit_with(meta);
    }

    /// As [`Reservation::commit_len_with`].
    ///
    /// # Panics
    /// If `len` is larger than the reservation (the entry is then aborted).
    #[track_caller]
    pub fn commit_len_with(mut self, len: usize, meta: M) {
        self.borrowed().commit_len_with(len, meta);
    }

    /// As [`Reservation::truncate`].
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.written = self.written.min(self.len);
    }

    /// Drops the reservation without publishing it (the same as `drop`).
    pub fn abort(self) {}

    /// As [`Reservation::refuse`].
    pub fn refuse(mut self) {
        self.borrowed().refuse();
    }
}

/// # Without metadata
impl OwnedReservation {
    /// As [`Reservation::commit`].
    #[inline]
    pub fn commit(mut self) {
        self.borrowed().commit();
    }

    /// As [`Reservation::commit_len`].
    ///
    /// # Panics
    /// If `len` is larger than the reservation (the entry is then aborted).
    #[track_caller]
    pub fn commit_len(mut self, len: usize) {
        self.borrowed().commit_len(len);
    }

    /// As [`Reservation::commit_written`].
    pub fn commit_written(mut self) {
        self.borrowed().commit_written();
    }
}

impl<M> Deref for OwnedReservation<M> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.claim {
            Some(claim) => &self.producer.ring.claim_bytes(claim)[..self.len],
            None => &[],
        }
    }
}

impl<M> DerefMut for OwnedReservation<M> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.claim {
            Some(claim) => &mut self.producer.ring.bytes_mut(claim)[..self.len],
            None => &mut [],
        }
    }
}

/// As for [`Reservation`]: fills it from the start.
impl<M> io::Write for OwnedReservation<M> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut written = self.written;
        let n = fill(self, &mut written, buf);
        self.written = written;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M> Drop for OwnedReservation<M> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.producer.ring.abort(claim);
        }
    }
}

impl<M> fmt::Debug for OwnedReservation<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedReservation")
            .field("len", &self.len)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}
