//! The producers' side of the protocol: reserve, commit, abort, shrink,
//! batches and runs, publishing, hand-backs; admission figures.

use crossbeam_utils::Backoff;

use super::header::Header;
use super::{Claim, Shared};
use crate::error::ReserveError;
use crate::loom::{HeaderWord, Ordering};

/// How far past its own entry a producer prefetches for writing, and the
/// largest stride that prefetches at all.
const PREFETCH_AHEAD: usize = 256;

/// Whether publishing a run checks for a sleeping consumer at once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wake {
    /// After the header store, as every publish does.
    Now,
    /// Left to the publisher's [`Shared::wake_if_asleep`], which must come
    /// before it waits on anything (NoLostWakeUp, deferred).
    #[cfg_attr(
        not(any(mpring_loom, all(feature = "udp", target_os = "linux"))),
        allow(dead_code)
    )]
    Later,
}
impl<M> Shared<M> {
    /// Claims space for a `len`-byte payload.
    #[inline]
    pub(crate) fn reserve(&self, len: usize) -> Result<Claim, ReserveError> {
        if len > self.max_payload {
            return Err(ReserveError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        // Relaxed: a flag with no data behind it; seeing it late only lets
        // one more entry into a ring nobody reads.
        if !self.lifecycle.consumer_alive.load(Ordering::Relaxed) {
            return Err(ReserveError::Disconnected);
        }
        let line = &*self.producers_line;
        let capacity = self.capacity() as u64;
        let stride = self.stride(len);
        let backoff = Backoff::new();
        // Relaxed: only a guess; the CAS below checks it.
        let mut tail = line.tail.load(Ordering::Relaxed);
        let (start, pad) = loop {
            let to_end = capacity - (tail & self.mask);
            // An entry never crosses the buffer's end: claim the rest of the
            // lap as padding and start at position 0.
            let pad = if stride <= to_end { 0 } else { to_end };
            let new_tail = tail + pad + stride;
            // Acquire (both loads): the consumer zeroed and stopped reading
            // these bytes before it published the head we compare with; the
            // cached copy is stored with Release by a producer that acquired
            // it, so the chain carries that to us too.
            let cached = line.cached_head.load(Ordering::Acquire);
            // saturating: a stale `tail` may be behind a fresh head; the CAS
            // then fails and we retry with the real tail.
            if new_tail.saturating_sub(cached) > capacity {
                let head = self.head.load(Ordering::Acquire);
                line.cached_head.store(head, Ordering::Release);
                if new_tail.saturating_sub(head) > capacity {
                    line.full.fetch_add(1, Ordering::Relaxed);
                    return Err(ReserveError::Full);
                }
            }
            // Acquire on success: pairs with a hand-back's Release, whose
            // zeroes we are about to overwrite (every tail write is an RMW,
            // so that chain passes through later CASes too). We publish
            // nothing here. Relaxed on failure: we only retry.
            match line.tail.compare_exchange_weak(
                tail,
                new_tail,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break (tail + pad, pad),
                Err(actual) => {
                    tail = actual;
                    crate::loom::spin_hint();
                    backoff.spin();
                }
            }
        };
        // The lines a producer of small entries writes next were zeroed by
        // the consumer a lap earlier and sit modified in the other core's
        // cache: fetch them for writing ahead of time. Not for large
        // entries (the hardware prefetcher follows a producer that streams
        // through its own lines; the extra request cost 5-10% at 1,350 B).
        // BENCHMARKS.md, "Hot path".
        if stride <= PREFETCH_AHEAD as u64 {
            self.buffer
                .prefetch_write(self.position(start + stride) + PREFETCH_AHEAD);
        }
        // Test builds only: lets a test hold this producer between its
        // claim and its announcement.
        crate::hooks::after_claim();
        if self.around {
            // Where our claim starts (its padding, if any) is where the
            // claim before ours ends, which may not be announced yet.
            // Before anything of ours is published: the consumer clears
            // this flag only in a release past our claim, which needs a
            // header we publish later (StartsExact), and its last look
            // before sleeping sees the flag (NoLostWakeUp).
            self.record_start(tail);
        }
        // Loom only: FreeIsZero over the whole claim, header words too
        // (the padding, if any, ends the lap; the entry starts the next).
        self.buffer
            .check_claimed_zero(self.position(tail), pad as usize);
        self.buffer
            .check_claimed_zero(self.position(start), stride as usize);
        if pad > 0 {
            // SAFETY: [OwnedSpans, AtomicHeaders] `tail`'s word starts the
            // padding our CAS just claimed; the consumer reads it only
            // atomically, nobody else touches it.
            let word = unsafe { self.buffer.header(self.position(tail)) };
            self.publish(&word, Header::Padding);
        }
        if self.around {
            // SAFETY: [OwnedSpans, AtomicHeaders] `start`'s word is our own
            // claim's header; the consumer reads it only atomically.
            let word = unsafe { self.buffer.header(self.position(start)) };
            // Relaxed: it carries no data, only the claim's length, which
            // lets the consumer read past it; what lies after the claim it
            // reads through that span's own header.
            word.store(Header::Open(stride as usize).encode(), Ordering::Relaxed);
        }
        // The consumer will not look into our claim until we publish its
        // header, which happens after this span is ended.
        // SAFETY: [OwnedSpans, NoWrap, FreeIsZero] our CAS claimed
        // `[start, start + stride)` for us alone, within one lap, all zero.
        let span = unsafe {
            self.buffer
                .claim_write(self.position(start) + self.align, self.meta_room() + len)
        };
        Ok(Claim {
            start,
            stride,
            span,
        })
    }

    /// The payload bytes of a claim (for a batch: from slot 0's payload to
    /// the claim's end).
    #[inline]
    pub(crate) fn bytes_mut<'a>(&'a self, claim: &'a mut Claim) -> &'a mut [u8] {
        let room = self.meta_room();
        &mut self.buffer.bytes_mut(&mut claim.span)[room..]
    }

    /// The payload bytes of a claim, for reading back.
    #[inline]
    pub(crate) fn claim_bytes<'a>(&'a self, claim: &'a Claim) -> &'a [u8] {
        &self.buffer.bytes_written(&claim.span)[self.meta_room()..]
    }

    /// Publishes the first `len` bytes of a claim with its metadata
    /// record; unused bytes are handed back or become a skipped span.
    #[inline]
    pub(crate) fn commit(&self, claim: Claim, len: usize, meta: M)
    where
        M: Copy,
    {
        let Claim {
            start,
            stride,
            mut span,
        } = claim;
        // MetaWritten: the record goes in before the header publishes it.
        self.buffer.write_value(&mut span, 0, meta);
        self.buffer.end_write(span);
        self.publish_run(start, start + stride, len, std::iter::empty(), Wake::Now);
    }

    /// Aborts a claim: hands it back, or makes it a skipped span.
    #[inline]
    pub(crate) fn abort(&self, claim: Claim) {
        let Claim {
            start,
            stride,
            span,
        } = claim;
        self.buffer.end_write(span);
        // Our header word stays zero (or open): the consumer may be polling
        // it. Nothing goes back in read-around mode: the consumer may have
        // read past the claim, and must never land inside a later one.
        if !self.around && self.hand_back(start, start + self.align as u64, start + stride) {
            return;
        }
        // SAFETY: [AtomicHeaders] `start` is our own header word; the
        // consumer only loads it atomically.
        let word = unsafe { self.buffer.header(self.position(start)) };
        self.publish(&word, Header::Skip(stride as usize));
    }

    /// Publishes the first slots of a batch claim as entries, one per item
    /// of `commits` (slot `i` holds its payload at `i * slot` bytes into
    /// the claim's payload; the item gives its length and metadata), moved
    /// together so that each follows the one before; the room left after
    /// them is handed back or skipped. No item: an abort. `slot` is the
    /// stride of one slot; every length fits it.
    pub(crate) fn finish_batch<I>(&self, claim: Claim, slot: u64, commits: I)
    where
        M: Copy,
        I: Iterator<Item = (usize, M)> + Clone,
    {
        let Some((first, _)) = commits.clone().next() else {
            return self.abort(claim);
        };
        let Claim {
            start,
            stride,
            mut span,
        } = claim;
        let (room, slot) = (self.meta_room(), slot as usize);
        // Compaction, inside our own claim: entry `i` moves from slot `i`
        // to right after entry `i - 1`. Every move goes towards the start,
        // in order, and an entry never reaches past its own slot, so no
        // source is overwritten before it is moved. The span starts at
        // slot 0's metadata room (the claim's start plus one header).
        let bytes = self.buffer.bytes_mut(&mut span);
        let mut to = 0;
        for (i, (len, _)) in commits.clone().enumerate() {
            debug_assert!(self.stride(len) as usize <= slot);
            let from = i * slot;
            if to != from {
                bytes.copy_within(from + room..from + room + len, to + room);
            }
            to += self.stride(len) as usize;
        }
        // MetaWritten: each record at its entry's final place, before the
        // headers publish them; after all moves, so none is moved over.
        let mut at = 0;
        for (len, meta) in commits.clone() {
            self.buffer.write_value(&mut span, at, meta);
            at += self.stride(len) as usize;
        }
        self.buffer.end_write(span);
        self.publish_run(
            start,
            start + stride,
            first,
            commits.skip(1).map(|(len, _)| len),
            Wake::Now,
        );
    }

    /// Claims exact room for `entries` with one CAS (`total` is the sum of
    /// their strides, at most half the ring), copies each payload and
    /// record into place and publishes them as consecutive entries.
    pub(crate) fn push_run<'p, I>(
        &self,
        total: usize,
        entries: I,
        wake: Wake,
    ) -> Result<(), ReserveError>
    where
        M: Copy,
        I: Iterator<Item = (&'p [u8], M)> + Clone,
    {
        let Some((first, _)) = entries.clone().next() else {
            return Ok(());
        };
        debug_assert!(total <= self.capacity() / 2 && total % self.align == 0);
        let Claim {
            start,
            stride,
            mut span,
        } = self.reserve(total - self.prefix())?;
        debug_assert_eq!(stride as usize, total);
        let room = self.meta_room();
        let bytes = self.buffer.bytes_mut(&mut span);
        let mut at = 0;
        for (payload, _) in entries.clone() {
            bytes[at + room..at + room + payload.len()].copy_from_slice(payload);
            at += self.stride(payload.len()) as usize;
        }
        // MetaWritten: before the headers publish them.
        let mut at = 0;
        for (payload, meta) in entries.clone() {
            self.buffer.write_value(&mut span, at, meta);
            at += self.stride(payload.len()) as usize;
        }
        self.buffer.end_write(span);
        let rest = entries.skip(1).map(|(payload, _)| payload.len());
        self.publish_run(start, start + stride, first.len(), rest, wake);
        Ok(())
    }

    /// Publishes a run of entries laid out one after the other in our claim
    /// `[start, end)`, the first of `first` bytes, then one per item of
    /// `rest`: stores headers 1.., hands back or skips the room after the
    /// run, and publishes header 0 last. Payloads and records are in place
    /// and the claim's span has ended.
    #[inline]
    fn publish_run<R>(&self, start: u64, end: u64, first: usize, rest: R, wake: Wake)
    where
        R: Iterator<Item = usize>,
    {
        // Headers 1.. before header 0: the consumer reaches them only
        // through header 0, whose Release store publishes them.
        let mut at = start + self.stride(first);
        for len in rest {
            // SAFETY: [OwnedSpans, AtomicHeaders] inside our claim, which
            // the consumer cannot enter before header 0 is published; the
            // span over it has ended.
            let word = unsafe { self.buffer.header(self.position(at)) };
            // Relaxed: published by the Release store of header 0.
            word.store(Header::Entry(len).encode(), Ordering::Relaxed);
            at += self.stride(len);
        }
        debug_assert!(at <= end);
        // Read-around mode hands nothing back (see `abort`).
        if at < end && (self.around || !self.hand_back(at, at, end)) {
            // SAFETY: as above.
            let word = unsafe { self.buffer.header(self.position(at)) };
            // Relaxed: as above.
            word.store(
                Header::Skip((end - at) as usize).encode(),
                Ordering::Relaxed,
            );
        }
        // SAFETY: [AtomicHeaders] `start` is our own header word; the
        // consumer only loads it atomically.
        let word = unsafe { self.buffer.header(self.position(start)) };
        match wake {
            Wake::Now => self.publish(&word, Header::Entry(first)),
            Wake::Later => self.store_header(&word, Header::Entry(first)),
        }
    }

    /// The stride of one slot of `len` bytes, for batches.
    #[inline]
    pub(crate) fn slot_stride(&self, len: usize) -> u64 {
        self.stride(len)
    }

    /// The room before a payload: the header and the metadata room. A
    /// claim for a run of entries asks for its total stride less this.
    #[inline]
    pub(crate) fn prefix(&self) -> usize {
        self.align + self.meta_room()
    }

    /// Stores a header the consumer may be waiting on, and wakes the
    /// consumer if it sleeps.
    #[inline]
    fn publish(&self, word: &HeaderWord<'_>, header: Header) {
        self.store_header(word, header);
        // NoLostWakeUp: the fence and the flag check come after the store.
        self.sleep.after_publish();
    }

    /// The store half of `publish`.
    #[inline]
    fn store_header(&self, word: &HeaderWord<'_>, header: Header) {
        // Release: the payload (and any skip header) must be visible to the
        // consumer once it acquires this word; the consumer also zeroes the
        // word after reading it.
        word.store(header.encode(), Ordering::Release);
    }

    /// The wake-up half of `publish`, for runs published with
    /// [`Wake::Later`]: after their header stores, as `publish` does it
    /// after its one (NoLostWakeUp), so a consumer that fell asleep on any
    /// of them is woken here. One check covers any number of runs.
    #[inline]
    #[cfg_attr(
        not(any(mpring_loom, all(feature = "udp", target_os = "linux"))),
        allow(dead_code)
    )]
    pub(crate) fn wake_if_asleep(&self) {
        self.sleep.after_publish();
    }

    /// Gives `[new_tail, end)` back when nothing was reserved after it:
    /// zeroes `[zero_from, end)` and moves the tail back to `new_tail`.
    /// Returns `false` (having changed nothing that matters) otherwise.
    /// Out of line: a producer whose entry fills its claim never calls it,
    /// and inlined it made the producers' path slower (BENCHMARKS.md).
    #[inline(never)]
    fn hand_back(&self, new_tail: u64, zero_from: u64, end: u64) -> bool {
        let tail = &self.producers_line.tail;
        // Relaxed: a hint to skip the zeroing when the CAS cannot succeed.
        if tail.load(Ordering::Relaxed) != end {
            return false;
        }
        // SAFETY: [OwnedSpans, NoWrap] `[zero_from, end)` is inside our unpublished claim (within
        // one lap, after our header word): only we access it. Both ends are
        // multiples of the alignment.
        unsafe {
            self.buffer
                .zero(self.position(zero_from), (end - zero_from) as usize)
        };
        // Release: the next producer to claim these bytes (with an Acquire
        // CAS) must see our zeroes. Relaxed on failure: nothing to see.
        tail.compare_exchange(end, new_tail, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Bytes not free for producers now: from the last released head to
    /// the tail. A snapshot for admission decisions; reserving never
    /// relies on it.
    pub(crate) fn bytes_in_use(&self) -> usize {
        // Relaxed (both): a snapshot of two locations, which may be of
        // different moments: a tail older than the head is covered by the
        // saturating subtraction, a head older than a lap by the `min`.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.producers_line.tail.load(Ordering::Relaxed);
        tail.saturating_sub(head).min(self.capacity() as u64) as usize
    }

    /// Whether more than the high-water mark is in use.
    pub(crate) fn above_high_water(&self) -> bool {
        self.bytes_in_use() as u64 > self.high_water
    }

    /// Counts a reservation refused for admission.
    pub(crate) fn count_refused(&self) {
        // Relaxed: a statistic.
        self.producers_line.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused_count(&self) -> u64 {
        // Relaxed: a statistic.
        self.producers_line.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn full_count(&self) -> u64 {
        // Relaxed: a statistic.
        self.producers_line.full.load(Ordering::Relaxed)
    }
}
