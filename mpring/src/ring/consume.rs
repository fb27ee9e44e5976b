//! The consumer's side of the protocol, in order: read, step over, deliver,
//! consume, zero, release. Read-around mode (`super::around`) takes over
//! from here only at an open header or while a hole exists.

use std::num::NonZeroU64;

use super::header::Header;
use super::{Cursor, Delivery, Shared};
use crate::loom::{HeaderWord, Ordering};

/// Entries of at least this stride (header included) that a consumer
/// reads right after an empty poll are zeroed at release, not right behind
/// the reader: see [`Shared::consume`].
#[cfg(not(mpring_loom))]
const DEFER_ZEROING_STRIDE: u64 = 1024;

/// How far past the position of the last empty poll counts as "right
/// after": about four entries of 1,350 bytes.
#[cfg(not(mpring_loom))]
const DEFER_ZEROING_BYTES: u64 = 6 << 10;

/// Under loom, rings of 32-128 bytes: a 24-byte payload (stride 32) right
/// after an empty poll is deferred, an 8-byte one (stride 16), or one read
/// further on, is not, so that the models take both branches.
#[cfg(mpring_loom)]
const DEFER_ZEROING_STRIDE: u64 = 32;
#[cfg(mpring_loom)]
const DEFER_ZEROING_BYTES: u64 = 32;

impl<M> Shared<M> {
    /// The header word at the consumer's read position.
    #[inline]
    pub(super) fn read_header(&self, cursor: &Cursor) -> (usize, HeaderWord<'_>) {
        // Every step releases once `release_every` (under a lap) is
        // pending, so `read` never reaches the stale header at `head`.
        debug_assert!(cursor.read - cursor.head < self.capacity() as u64);
        let pos = self.position(cursor.read);
        // SAFETY: [ReadWindow, AtomicHeaders] `read` is a span boundary less than a lap ahead of `head`
        // (free space, or a claim's header, which producers only access
        // atomically); no span covers a header word and no producer zeroes
        // a word the consumer can poll (hand-backs start past the header).
        let word = unsafe { self.buffer.header(pos) };
        (pos, word)
    }

    /// Moves the cursor past padding or a skipped span at `pos`, zeroing
    /// what it must; `false` for any other header.
    #[inline]
    pub(super) fn step_over(&self, cursor: &mut Cursor, pos: usize, header: Header) -> bool {
        let (span, dirty) = match header {
            // Only the header word was written: the rest of the lap was
            // free space, all zero, when the padding claimed it.
            Header::Padding => (self.capacity() - pos, self.align),
            // An aborted claim or a commit's unused tail: anything may have
            // been written there.
            Header::Skip(span) => {
                debug_assert!(span % self.align == 0 && pos + span <= self.capacity());
                (span, span)
            }
            Header::NotReady | Header::Entry(_) | Header::Open(_) => return false,
        };
        let start = cursor.read;
        cursor.read += span as u64;
        self.zero_consumed(cursor, start + dirty as u64);
        if dirty < span {
            // The rest of the padding is still zero.
            cursor.zeroed = cursor.read;
        }
        self.zero_behind(cursor);
        self.release_if_due(cursor);
        true
    }

    /// The next committed entry at the cursor, stepping over padding and
    /// skipped spans; `None` when the next header is not published yet.
    ///
    /// Without holes this is the in-order path, in both modes: an open
    /// header (announced in read-around mode only) or a hole hands over to
    /// `next_around`, so that the common case costs what it costs in order.
    ///
    /// The delivery does not move `cursor.read`: it must be dropped or
    /// consumed before the next call, so that at most one delivery (one
    /// span over an entry, which its holder may write) exists at a time.
    /// Every caller does so (`Entry` and `ReadBatch` hold the cursor).
    #[inline]
    pub(crate) fn next(&self, cursor: &mut Cursor) -> Option<Delivery> {
        if !cursor.holes.is_empty() {
            return self.next_around(cursor);
        }
        loop {
            let (pos, word) = self.read_header(cursor);
            // Acquire: pairs with the producer's Release, so the payload it
            // wrote is visible before we read it.
            let header = Header::decode(word.load(Ordering::Acquire));
            if self.step_over(cursor, pos, header) {
                continue;
            }
            let len = match header {
                Header::Entry(len) => len,
                // Only announced in read-around mode.
                Header::Open(_) => return self.next_around(cursor),
                _ => {
                    // `consume` zeroes by how far past this it reads.
                    cursor.empty_at = cursor.read;
                    return None;
                }
            };
            return Some(self.deliver(pos, cursor.read, len));
        }
    }

    /// The payload of a delivery.
    #[inline]
    pub(crate) fn bytes<'a>(&'a self, delivery: &'a Delivery) -> &'a [u8] {
        &self.buffer.bytes(&delivery.span)[self.meta_room()..]
    }

    /// The payload of a delivery, to change in place: the consumer owns it
    /// until it consumes the delivery (no producer touches it before the
    /// release that follows).
    #[inline]
    pub(crate) fn delivered_bytes_mut<'a>(&'a self, delivery: &'a mut Delivery) -> &'a mut [u8] {
        let room = self.meta_room();
        &mut self.buffer.bytes_read_mut(&mut delivery.span)[room..]
    }

    /// The metadata record of a delivery.
    #[inline]
    pub(crate) fn meta<'a>(&'a self, delivery: &'a Delivery) -> &'a M {
        // SAFETY: [MetaWritten] every published entry's producer wrote an
        // `M` (this ring's one metadata type) at the start of its room,
        // which this span covers, before the Release store we acquired.
        unsafe { self.buffer.read_value(&delivery.span, 0) }
    }

    /// Marks a delivery consumed and zeroes it (all but the cache line it
    /// shares with the next span); releases when enough is pending.
    ///
    /// A large entry read within a few KiB of an empty poll is left
    /// for the release to zero (at the end of the batch, or when the
    /// consumer catches up). Such a consumer is at the producers' heels:
    /// zeroing the twenty-odd lines of a 1,350-byte entry right after
    /// reading them, while a producer writes the next entry, left it at
    /// 0.52-0.68x of Aeron's ring in the slow thread placement, 0.68-0.75x
    /// with this (BENCHMARKS.md, "The regime table with Aeron's ring"). Small
    /// entries, and entries read deep in a backlog, are still zeroed right
    /// behind the reader, where their lines are close: leaving everything
    /// to the release cost mixed sizes 15%.
    #[inline]
    pub(crate) fn consume(&self, cursor: &mut Cursor, delivery: Delivery) {
        if !cursor.holes.is_empty() {
            return self.consume_around(cursor, delivery);
        }
        let stride = delivery.stride.get();
        cursor.read += stride;
        // The delivery (and under loom its guards) ends here, before its
        // bytes are zeroed.
        #[allow(clippy::drop_non_drop)] // holds loom guards under mpring_loom
        drop(delivery);
        // The stride first: small entries pay one comparison.
        if stride < DEFER_ZEROING_STRIDE || cursor.read - cursor.empty_at > DEFER_ZEROING_BYTES {
            self.zero_behind(cursor);
        }
        self.release_if_due(cursor);
    }

    /// Zeroes what was consumed, up to the start of the cache line at the
    /// read position.
    ///
    /// Right behind the reader, while its lines are still close: zeroing an
    /// eighth of the ring at once, long after it was read, cost a light
    /// consumer a third of its throughput on mixed sizes. But not the line
    /// at `read`: a producer may be writing the next entry in it, and an
    /// eager consumer that zeroed it would pull it away entry after entry
    /// (BENCHMARKS.md, "Consumer regimes").
    #[inline]
    fn zero_behind(&self, cursor: &mut Cursor) {
        self.zero_consumed(cursor, self.settled(cursor) & !(self.zero_line - 1));
    }

    /// How far everything is consumed: `read`, unless a hole is open.
    #[inline]
    fn settled(&self, cursor: &Cursor) -> u64 {
        if cursor.holes.is_empty() {
            cursor.read
        } else {
            cursor.settled
        }
    }

    /// Zeroes `[cursor.zeroed, to)` (if `to` is ahead), split at the
    /// buffer's end. `to <= cursor.read`, less than a lap past `zeroed`.
    #[inline]
    pub(super) fn zero_consumed(&self, cursor: &mut Cursor, to: u64) {
        if to <= cursor.zeroed {
            return;
        }
        debug_assert!(to <= cursor.read && to - cursor.zeroed <= self.capacity() as u64);
        let len = (to - cursor.zeroed) as usize;
        let from = self.position(cursor.zeroed);
        let first = len.min(self.capacity() - from);
        // Both ends are multiples of 8 (span or line boundaries); at most a
        // lap, split at the buffer's end.
        // SAFETY: [OwnedSpans, FreeIsZero] `[zeroed, to)` lies in consumed
        // `[head, read)`, owned by the consumer, no delivery over it.
        unsafe {
            self.buffer.zero(from, first);
            if len > first {
                self.buffer.zero(0, len - first);
            }
        }
        cursor.zeroed = to;
    }

    /// Releases once `release_every` bytes (an eighth of the ring) are
    /// consumed but not released, so producers never wait on a long batch.
    #[inline]
    pub(super) fn release_if_due(&self, cursor: &mut Cursor) {
        if cursor.read - cursor.head >= self.release_every {
            self.release(cursor);
        }
    }

    /// Zeroes the rest of what was consumed and publishes the new head:
    /// all of it goes back to the producers.
    #[inline]
    pub(crate) fn release(&self, cursor: &mut Cursor) {
        let to = if cursor.holes.is_empty() {
            cursor.read
        } else {
            self.settle(cursor);
            cursor.settled
        };
        if to == cursor.head {
            return;
        }
        self.zero_consumed(cursor, to);
        if self.around {
            self.clear_starts(cursor.head, to);
        }
        // Release: producers acquire the head before they write into these
        // bytes, so our zeroes (and reads) happen before their writes.
        self.head.store(to, Ordering::Release);
        cursor.head = to;
    }

    /// Bytes read past since the ring was built.
    pub(crate) fn read_offset(&self, cursor: &Cursor) -> u64 {
        cursor.read
    }

    /// Hands out the entry of `len` bytes whose header, at offset `at`, is
    /// at position `pos` and was published to us (acquired).
    #[inline]
    pub(super) fn deliver(&self, pos: usize, at: u64, len: usize) -> Delivery {
        debug_assert!(len <= self.max_payload);
        // SAFETY: [OwnedSpans] published to us (the Release we acquired);
        // no producer touches them until we release past them, and the
        // consumer holds one delivery at a time (`next`): no other span.
        let span = unsafe {
            self.buffer
                .claim_read(pos + self.align, self.meta_room() + len)
        };
        Delivery {
            span,
            // A stride counts the header: never 0.
            stride: NonZeroU64::new(self.stride(len)).unwrap_or(NonZeroU64::MIN),
            at,
        }
    }

    /// Bytes consumed but not released yet.
    pub(crate) fn pending_bytes(&self, cursor: &Cursor) -> usize {
        (cursor.read - cursor.head) as usize
    }

    /// Whether nothing is left to read: no claim after `read`, no hole.
    pub(crate) fn caught_up(&self, cursor: &Cursor) -> bool {
        self.unread_bytes(cursor) == 0 && cursor.holes.is_empty()
    }

    /// Bytes between the consumer's read position and the tail.
    pub(crate) fn unread_bytes(&self, cursor: &Cursor) -> usize {
        // Relaxed: a snapshot; entries are read through header acquires.
        let tail = self.producers_line.tail.load(Ordering::Relaxed);
        tail.saturating_sub(cursor.read) as usize
    }
}
