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
///   (zeroed by whichever side reclaims it, so it costs a `memset` of the
///   unused part: reserve about what you need);
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
/// are never read.
///
/// On a ring with [`Metadata`], commit with [`commit_with`](Reservation::commit_with)
/// or [`commit_len_with`](Reservation::commit_len_with), which take the
/// entry's record.
///
/// [`Producer::reserve_owned`](crate::Producer::reserve_owned) makes an
/// [`OwnedReservation`]: the same type with no borrow, `'static` and
/// `Send`, to be committed later from another thread or task.
#[must_use = "a reservation is aborted when dropped; call `commit` to publish it"]
pub struct Reservation<'a, M = ()> {
    ring: RingRef<'a, M>,
    /// `None` once finished (only inside `commit` and `drop`).
    claim: Option<Claim>,
    len: usize,
    /// Bytes written through `io::Write`, from the start.
    written: usize,
}

/// A reservation that owns its way to the ring (a producer handle of its
/// own) instead of borrowing one: `'static` and `Send`, so it can be
/// stored beside its producer, moved to another thread or task, or handed
/// to a completion-based I/O runtime, and committed there later. Made by
/// [`Producer::reserve_owned`](crate::Producer::reserve_owned).
///
/// Everything [`Reservation`] promises holds: dropping it (a panic
/// included) aborts it; until then it counts as a producer, so the
/// consumer does not see the stream end while it is pending.
///
/// # With completion-based I/O (io_uring)
/// The bytes lie in the ring, not in this value: moving it never moves
/// them, and they go back to the ring only when the value is committed or
/// dropped. A runtime that takes buffers by value and keeps them until
/// the kernel completes the operation (as io_uring runtimes do, even when
/// the task gives up on the operation) therefore never lets the ring reuse
/// a buffer the kernel may still write. Submitting the bytes' address
/// yourself is `unsafe` in any case: keep the reservation alive until the
/// completion arrives.
pub type OwnedReservation<M = ()> = Reservation<'static, M>;

/// How a reservation reaches its ring.
enum RingRef<'a, M> {
    /// Borrowed from the producer that reserved it.
    Borrowed(&'a Shared<M>),
    /// A producer handle of its own (an [`OwnedReservation`]).
    Owned(Producer<M>),
}

impl<M> RingRef<'_, M> {
    #[inline]
    fn get(&self) -> &Shared<M> {
        match self {
            RingRef::Borrowed(ring) => ring,
            RingRef::Owned(producer) => &producer.ring,
        }
    }
}

impl<'a, M: Metadata> Reservation<'a, M> {
    pub(crate) fn new(ring: &'a Shared<M>, claim: Claim, len: usize) -> Reservation<'a, M> {
        Reservation {
            ring: RingRef::Borrowed(ring),
            claim: Some(claim),
            len,
            written: 0,
        }
    }

    pub(crate) fn owned(producer: Producer<M>, claim: Claim, len: usize) -> OwnedReservation<M> {
        Reservation {
            ring: RingRef::Owned(producer),
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
        if let Some(claim) = self.claim.take() {
            self.ring.get().commit(claim, self.len, meta);
        }
        if let RingRef::Borrowed(_) = self.ring {
            // Nothing is left to drop (the claim is out), and skipping the
            // drop glue keeps this path free of a call and of spills. An
            // owned one drops its producer handle after the commit.
            std::mem::forget(self);
        }
    }

    /// Publishes only the first `len` bytes, with the entry's metadata
    /// record; the rest goes back to the ring.
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
        self.ring.get().count_refused();
    }
}

/// # Without metadata
impl Reservation<'_> {
    /// Publishes the entry: the consumer can read it from now on.
    #[inline]
    pub fn commit(self) {
        self.commit_with(());
    }

    /// Publishes only the first `len` bytes; the rest goes back to the ring.
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
            Some(claim) => &self.ring.get().claim_bytes(claim)[..self.len],
            None => &[],
        }
    }
}

impl<M> DerefMut for Reservation<'_, M> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.claim {
            Some(claim) => &mut self.ring.get().bytes_mut(claim)[..self.len],
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
        let at = self.written;
        let n = buf.len().min(self.len - at);
        self[at..at + n].copy_from_slice(&buf[..n]);
        self.written += n;
        Ok(n)
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M> Drop for Reservation<'_, M> {
    #[inline]
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.ring.get().abort(claim);
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
