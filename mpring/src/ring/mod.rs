//! The protocol: reserve, commit, abort, shrink, read, release. Every claim
//! of buffer memory is made here, and every ordering of the data path sits
//! in this file, side by side. The memory ([`buffer`]) and the header
//! encoding ([`header`]) are private modules under it; the sleep handshake
//! lives in `crate::sleep`, reached only through `publish`.
//!
//! # Invariants
//! SAFETY comments cite these by name, in brackets.
//! - **Bounds**: `head <= tail <= head + capacity`. `head` only grows;
//!   `tail` grows, except that a producer whose reservation is the last one
//!   may move it back to hand unused bytes back (never below its own
//!   entry's start, so never over a published padding header). A tail value
//!   can therefore recur (ABA), harmlessly: whatever the history, everything
//!   from `tail` to `head + capacity` is zero and unclaimed, and how a
//!   reservation pads depends only on the tail value.
//! - **OwnedSpans**: bytes in `[head, tail)` belong to reservations,
//!   entries, padding or skipped spans, each starting with a header word.
//!   A claim (`[start, start + stride)`, won by one CAS) belongs to its
//!   producer until it publishes the header; a published entry belongs to
//!   the consumer until it releases past it (it may read and write it:
//!   `Entry`'s `DerefMut`; nobody else touches it, producers included).
//! - **NoWrap**: no span crosses the buffer's end.
//! - **AtomicHeaders**: no span covers a header word; a header word that
//!   another party can reach is only accessed atomically, and nobody
//!   zeroes a word the consumer may be polling (hand-backs start past the
//!   header).
//! - **FreeIsZero**: every byte in free space (`[tail, head + capacity)`)
//!   is zero whenever a producer can claim it: the consumer zeroes each
//!   span as it consumes it (an entry, a skipped span; of padding only its
//!   header word, the rest was never written), always before it publishes
//!   a head past it, and a producer zeroes what it hands back before it
//!   moves the tail back.
//! - **CachedHead**: `cached_head <= head`, and whoever reads a cached
//!   value has seen (happens-after) the zeroing it stands for.
//! - **ReadWindow**: `read - head < release_every <= capacity / 2` between
//!   the consumer's steps, so the consumer never reaches the stale header
//!   at `head` a lap later.
//! - **MetaWritten**: every published entry (`Header::Entry`) holds, at
//!   the start of its metadata room, an `M` written by its producer before
//!   the header was stored (`Shared<M>` has one `M` for all its handles, so
//!   the consumer reads the type that was written). Rings without metadata
//!   (`M = ()`) have no room and nothing to write.
//! - **NoLostWakeUp**: a consumer about to sleep sets `sleeping`, then
//!   re-reads the header it waits on; a producer stores its header, then
//!   reads `sleeping`; a full barrier on both sides makes one of the two
//!   see the other's store: SeqCst fences, or (asymmetric mode, see
//!   `crate::barrier`) a process-wide barrier on the consumer's side and a
//!   compiler barrier on the producers'. The wake-up target may be a
//!   readiness fd (`crate::readiness`): a waker takes the registration and
//!   writes the fd's counter under the target's lock, and the consumer
//!   clears the counter and registers again under the same lock before it
//!   announces, so a clear never takes back a notification whose cause the
//!   re-check after announcing would miss.
//!
//! # Batches
//!
//! A batch (`finish_batch`) is one claim, made by one CAS like any other,
//! holding `count` slots of one stride each; it changes no invariant. Until
//! its first header is published the whole claim is the producer's
//! (OwnedSpans), so it moves the committed entries together inside it,
//! ends its span, stores the headers of entries 1.. and of the skipped
//! rest (Relaxed), hands back what it can exactly like a short commit
//! (FreeIsZero: zeroed before the tail moves back), and publishes header 0
//! last: its Release store carries the others, which the consumer can only
//! reach through it.
//!
//! A run of entries pushed together (`push_run`) is a batch whose slots
//! are exactly as long as the entries: nothing to move, nothing to hand
//! back.
//!
//! # Read-around mode
//!
//! Opt-in (`Builder::read_around_open`). What changes, and why it stays
//! safe:
//! - **Announcement.** Right after its CAS a producer stores
//!   `Header::Open(stride)` in its claim's header (Relaxed: it carries no
//!   data, only the claim's length). The word was zero (FreeIsZero), so
//!   between the CAS and this store the consumer still stops there.
//! - **Reading past.** Meeting an open header with something claimed
//!   after it (a Relaxed look at the tail: a hint), the consumer records
//!   the claim as a hole (at most `MAX_HOLES`; at the next one it stops)
//!   and reads on after it. It reads the word at `read` only while
//!   `read - head < capacity`: with holes, `read` may run up to a lap
//!   ahead of `head` (ReadWindow is relaxed to this), never onto the
//!   oldest hole's own word a lap later. Without holes, `next` is the
//!   in-order path and only an open header leaves it, so the mode costs
//!   nothing measurable while nothing stalls.
//! - **Coming back.** While holes exist, every step loads the word at
//!   `read` (Acquire) first, then the holes, oldest first; a hole found
//!   committed makes it look again at the older ones. Having acquired a
//!   commit, the consumer sees every commit its producer made before it,
//!   so one producer's entries come out in its commit order (HoleOrder;
//!   loom's `one_producers_commits_come_out_in_its_order` fails if either
//!   look is taken out). Entries of different producers may come out in
//!   commit order rather than reservation order: this mode relaxes that
//!   promise of the default mode, and only that.
//! - **Consumed, not released.** While a hole exists, an entry consumed
//!   after it keeps its header word, rewritten by the consumer (which owns
//!   it, OwnedSpans) as a skipped span; `settle` walks `settled` from
//!   `head` over such spans, zeroing them, up to the oldest hole, and only
//!   `settled` is released. So `head` never passes an open claim, nothing
//!   is zeroed while a producer may write it, and FreeIsZero holds as
//!   stated.
//! - **No hand-back.** Aborts and short commits leave skipped spans; the
//!   tail never moves back (Bounds without its exception), so a consumer
//!   that read past a claim can never land inside a later one.
//! - **Waking.** Announcements wake nobody; commits and aborts publish
//!   through `publish` as always. The consumer's last look before sleeping
//!   covers the word at `read` and every hole, so NoLostWakeUp holds for
//!   each of them.
//!
//! # Metadata
//!
//! ```text
//!  | header | M, rounded up to the alignment | payload, rounded up | next header
//!  ^ start    ^ start + align                  ^ start + prefix
//! ```
//!
//! With metadata every entry's span grows by the metadata room, which sits
//! between the header and the payload, inside the span: it is claimed,
//! zeroed and released with the entry and changes no invariant but adds
//! MetaWritten. The alignment (8 or 16) is at least `M`'s (checked when the
//! ring is built), so the record is aligned. Without metadata the room is
//! zero bytes, known at compile time: the layout and the code are those of
//! a plain ring.
//!
//! # Orderings
//!
//! | Release (writer, where)              | Acquire (reader, where)                       | carries                                             |
//! |--------------------------------------|-----------------------------------------------|-----------------------------------------------------|
//! | producer: header store, `publish`    | consumer: header load, `next`                 | the payload and metadata (and a skip header, or a batch's later headers, written before it) |
//! | consumer: `head` store, `release`    | producer: `head` load, `reserve`              | the consumer's zeroes (`consume`, `step_over`) and finished reads (FreeIsZero) |
//! | producer: `cached_head` store, `reserve` | producer: `cached_head` load, `reserve`   | the same, passed on between producers (CachedHead)  |
//! | producer: tail CAS, `hand_back`      | producer: tail CAS (success), `reserve`       | the zeroes over handed-back bytes (FreeIsZero)      |
//! | (read-around) producer: `Open` store, `reserve`, Relaxed | consumer: header load, `next_around`  | nothing but the claim's length, in the word itself |
//! | (read-around) consumer: `Skip` rewrite, `consume_around`, Relaxed | consumer: `settle` | (the consumer's own word; producers reach it after the walk zeroed it and a `head` store) |
//! | last producer: count `fetch_sub`     | consumer: count load, `producers`             | the last commits before the disconnection           |
//! | consumer: `sleeping` store, `Sleep::announce` | producer: `sleeping` load, `Sleep::after_publish` | the registered wake-up target            |
//! | waker: `woken` store, `Sleep::wake_on_purpose` | consumer: `woken` load, `Sleep::take_woken` | (a flag; the target slot's mutex orders the rest) |
//!
//! Two barriers, one after the header store in `Sleep::after_publish` and
//! one after the flag store in `Sleep::announce`, make the store-load pair of
//! NoLostWakeUp: two SeqCst fences, or a compiler barrier on the producers'
//! side against `membarrier(2)` plus a fence on the consumer's (asymmetric
//! mode, `crate::barrier`, chosen by `sleep::BarrierMode`). Loom models the
//! fence pairing (it cannot model a process-wide barrier; under loom the
//! ring always runs in fence mode); unit tests in `sleep.rs` run each mode
//! pinned through a ping-pong of commits racing a falling-asleep consumer,
//! and the waiting and stress tests cross the switch. Everything else is
//! Relaxed, each with a comment saying why: a failed CAS, the tail guess
//! before a CAS, counters, the consumer-gone flag, the barrier mode,
//! snapshots.

mod buffer;
mod header;

use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::num::NonZeroU64;

use crossbeam_utils::{Backoff, CachePadded};

use self::buffer::{Buffer, ReadSpan, WriteSpan};
use self::header::Header;
use crate::error::{BuildError, ReserveError};
use crate::loom::{AtomicBool, AtomicU64, AtomicUsize, HeaderWord, Ordering};
use crate::sleep::Sleep;

/// The state that the [`Producer`](crate::Producer) handles and the
/// [`Consumer`](crate::Consumer) share. `M` is the type of every entry's
/// metadata record (`()`: none, and no room for it).
pub(crate) struct Shared<M = ()> {
    /// Written by producers on every reservation.
    producers_line: CachePadded<ProducersLine>,
    /// Next byte the consumer has not released; written at most once per
    /// eighth of the ring consumed.
    head: CachePadded<AtomicU64>,
    /// Who is still there; written only when handles come and go.
    lifecycle: CachePadded<Lifecycle>,
    /// The sleeping flag and the wake-up target.
    sleep: Sleep,
    buffer: Buffer,
    /// `capacity - 1`.
    mask: u64,
    /// Alignment of every span, which is also the header's size.
    align: usize,
    /// Room for an `M` after the header: its size rounded up to `align`
    /// (0 for `()`).
    meta_room: usize,
    /// `align + meta_room + align - 1`: header, metadata and rounding, in
    /// one add.
    stride_bias: usize,
    max_payload: usize,
    /// The consumer releases at least this often (in bytes).
    release_every: u64,
    /// The consumer zeroes what it consumed up to a multiple of this (a
    /// cache line), leaving the line at its read position alone.
    zero_line: u64,
    /// Read-around mode: producers announce their claims, the consumer
    /// delivers committed entries past claims still open.
    around: bool,
    /// Producers' admission threshold in bytes in use (`Builder::high_water_mark`).
    high_water: u64,
    /// Any `M` may go in and come out (`Shared` holds none itself).
    _meta: PhantomData<fn(M) -> M>,
}

struct ProducersLine {
    /// Next byte a producer will reserve.
    tail: AtomicU64,
    /// A recent value of `head`, so that producers read the consumer's
    /// cache line only when this copy says the ring is full.
    cached_head: AtomicU64,
    /// Reservations refused by their producers for admission
    /// (`Reservation::refuse`).
    refused: AtomicU64,
    /// Reservations refused with `Full`.
    full: AtomicU64,
}

struct Lifecycle {
    producers: AtomicUsize,
    consumer_alive: AtomicBool,
}

/// How far past its own entry a producer prefetches for writing, and the
/// largest stride that prefetches at all.
const PREFETCH_AHEAD: usize = 256;

/// Bytes claimed by one reservation. `start` is the offset of its header.
pub(crate) struct Claim {
    start: u64,
    stride: u64,
    span: WriteSpan,
}

/// The consumer's offsets: `head` as published, `read` how far it has
/// read (`[head, read)` is consumed but not yet released), `zeroed` how far
/// it has zeroed what it consumed (`head <= zeroed <= read`).
///
/// In read-around mode `holes` lists the claims `read` went past while they
/// were open, oldest first; while there is one, only `[head, settled)` is
/// known to be consumed (`settled` <= the oldest hole's start), and what was
/// consumed after it keeps its header, rewritten as a skipped span, for the
/// walk that settles it (`settle`). Without holes, `settled` is `read`.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    head: u64,
    zeroed: u64,
    read: u64,
    settled: u64,
    holes: Holes,
}

/// Most claims the consumer reads past at once; at the next one it stops.
const MAX_HOLES: usize = 32;

/// Claims read past while open, oldest first.
#[derive(Debug, Default)]
struct Holes {
    list: [Hole; MAX_HOLES],
    len: usize,
}

/// A claim read past while open: `[start, end)`, read up to `pos` once
/// committed (a batch holds several entries).
#[derive(Clone, Copy, Debug, Default)]
struct Hole {
    start: u64,
    pos: u64,
    end: u64,
    /// When the consumer first met it open.
    since: Option<std::time::Instant>,
}

impl Holes {
    #[inline]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn remove(&mut self, i: usize) {
        self.list.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }
}

/// A committed entry handed to the consumer: its span covers its metadata
/// room and its payload; `at` is its header's offset. The stride is never
/// 0 (it counts the header), which gives `Option<Delivery>` (an `Entry`'s)
/// no tag of its own.
pub(crate) struct Delivery {
    span: ReadSpan,
    stride: NonZeroU64,
    at: u64,
}

impl<M> Shared<M> {
    /// Allocates the buffer (zeroed, once). `align` is 8 or 16; `around`
    /// chooses read-around mode.
    pub(crate) fn new(
        capacity: usize,
        align: usize,
        around: bool,
        high_water: usize,
    ) -> Result<Shared<M>, BuildError> {
        debug_assert!(align == 8 || align == 16);
        if mem::align_of::<M>() > align {
            return Err(BuildError::MetadataAlignment {
                align: mem::align_of::<M>(),
                entry_align: align,
            });
        }
        let meta_room = mem::size_of::<M>().next_multiple_of(align);
        // Header and metadata, twice: the largest entry takes half the ring.
        let min = 2 * (align + meta_room);
        if capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if !capacity.is_power_of_two() {
            return Err(BuildError::NotPowerOfTwo { capacity });
        }
        if capacity < min {
            return Err(BuildError::TooSmall { capacity, min });
        }
        let buffer = Buffer::new(capacity).ok_or(BuildError::TooLarge { capacity })?;
        Ok(Shared {
            producers_line: CachePadded::new(ProducersLine {
                tail: AtomicU64::new(0),
                cached_head: AtomicU64::new(0),
                full: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
            head: CachePadded::new(AtomicU64::new(0)),
            lifecycle: CachePadded::new(Lifecycle {
                producers: AtomicUsize::new(1),
                consumer_alive: AtomicBool::new(true),
            }),
            sleep: Sleep::new(),
            buffer,
            mask: capacity as u64 - 1,
            align,
            meta_room,
            stride_bias: 2 * align + meta_room - 1,
            // A stride of at most half the buffer fits an empty ring at any
            // position: the padding before it is then shorter than it.
            max_payload: capacity / 2 - align - meta_room,
            // ReadWindow: at most half the buffer, at least one unit.
            release_every: (capacity as u64 / 8).max(align as u64),
            // Half the ring at most, so that tiny rings (loom's) also leave
            // a partial line behind and exercise the catch-up in `release`.
            zero_line: (capacity as u64 / 2).min(64),
            around,
            high_water: high_water as u64,
            _meta: PhantomData,
        })
    }

    /// The metadata room: 0, known at compile time, without metadata.
    #[inline]
    fn meta_room(&self) -> usize {
        if mem::size_of::<M>() == 0 {
            0
        } else {
            self.meta_room
        }
    }

    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Header, metadata room and payload, rounded up to the alignment. `len` is at most
    /// `max_payload`, so this cannot overflow.
    #[inline]
    fn stride(&self, len: usize) -> u64 {
        ((len + self.stride_bias) & !(self.align - 1)) as u64
    }

    #[inline]
    fn position(&self, offset: u64) -> usize {
        (offset & self.mask) as usize
    }

    // ---- producers --------------------------------------------------------

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
        // through its own lines; the extra request cost 5-10% at 1,350 B),
        // nor when another producer has claimed past us (the lines are its
        // to write). BENCHMARKS.md, "Hot path". Relaxed: a hint.
        if stride <= PREFETCH_AHEAD as u64 {
            self.buffer
                .prefetch_write(self.position(start + stride) + PREFETCH_AHEAD);
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
        self.publish_run(start, start + stride, len, std::iter::empty());
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
        );
    }

    /// Claims exact room for `entries` with one CAS (`total` is the sum of
    /// their strides, at most half the ring), copies each payload and
    /// record into place and publishes them as consecutive entries.
    pub(crate) fn push_run<'p, I>(&self, total: usize, entries: I) -> Result<(), ReserveError>
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
        self.publish_run(start, start + stride, first.len(), rest);
        Ok(())
    }

    /// Publishes a run of entries laid out one after the other in our claim
    /// `[start, end)`, the first of `first` bytes, then one per item of
    /// `rest`: stores headers 1.., hands back or skips the room after the
    /// run, and publishes header 0 last. Payloads and records are in place
    /// and the claim's span has ended.
    #[inline]
    fn publish_run<R>(&self, start: u64, end: u64, first: usize, rest: R)
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
        self.publish(&word, Header::Entry(first));
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
        // Release: the payload (and any skip header) must be visible to the
        // consumer once it acquires this word; the consumer also zeroes the
        // word after reading it.
        word.store(header.encode(), Ordering::Release);
        // NoLostWakeUp: the fence and the flag check come after the store.
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
        self.producers_line.full.load(Ordering::Relaxed)
    }

    pub(crate) fn add_producer(&self) {
        // Relaxed: the clone is made from a live handle, so the count cannot
        // reach zero concurrently (the same argument as `Arc::clone`).
        self.lifecycle.producers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove_producer(&self) {
        // Release: pairs with the consumer's Acquire in `producers`, so the
        // last producer's commits are visible when it sees zero.
        if self.lifecycle.producers.fetch_sub(1, Ordering::Release) == 1 {
            // The last one: a waiting consumer must learn it.
            self.sleep.wake();
        }
    }

    pub(crate) fn producers(&self) -> usize {
        self.lifecycle.producers.load(Ordering::Acquire)
    }

    pub(crate) fn consumer_alive(&self) -> bool {
        self.lifecycle.consumer_alive.load(Ordering::Relaxed)
    }

    pub(crate) fn sleep(&self) -> &Sleep {
        &self.sleep
    }

    pub(crate) fn close_consumer(&self) {
        // Relaxed: see `reserve`.
        self.lifecycle
            .consumer_alive
            .store(false, Ordering::Relaxed);
    }

    // ---- the consumer -----------------------------------------------------

    /// The header word at the consumer's read position.
    #[inline]
    fn read_header(&self, cursor: &Cursor) -> (usize, HeaderWord<'_>) {
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
    fn step_over(&self, cursor: &mut Cursor, pos: usize, header: Header) -> bool {
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
                _ => return None,
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
    #[inline]
    pub(crate) fn consume(&self, cursor: &mut Cursor, delivery: Delivery) {
        if !cursor.holes.is_empty() {
            return self.consume_around(cursor, delivery);
        }
        cursor.read += delivery.stride.get();
        // The delivery (and under loom its guards) ends here, before its
        // bytes are zeroed.
        #[allow(clippy::drop_non_drop)] // holds loom guards under mpring_loom
        drop(delivery);
        self.zero_behind(cursor);
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
    fn zero_consumed(&self, cursor: &mut Cursor, to: u64) {
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
    fn release_if_due(&self, cursor: &mut Cursor) {
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
        // Release: producers acquire the head before they write into these
        // bytes, so our zeroes (and reads) happen before their writes.
        self.head.store(to, Ordering::Release);
        cursor.head = to;
    }

    /// Bytes read past since the ring was built.
    pub(crate) fn read_offset(&self, cursor: &Cursor) -> u64 {
        cursor.read
    }

    // ---- the consumer, read-around mode ----------------------------------

    /// The next committed entry in read-around mode: the oldest committed
    /// entry in a claim read past while it was open (a hole), else the next
    /// one at `read`, which goes past claims still open.
    fn next_around(&self, cursor: &mut Cursor) -> Option<Delivery> {
        loop {
            // The word at `read` first, the holes after it: a producer's
            // commits made before the one we acquire at `read` are then
            // visible in the holes, so its entries come out in its order.
            // At a full lap past `head` the word at `read` is the oldest
            // hole's own: stop there.
            let ahead = if cursor.read - cursor.head < self.capacity() as u64 {
                let (pos, word) = self.read_header(cursor);
                // Acquire: pairs with the producer's Release (its payload).
                Some((pos, Header::decode(word.load(Ordering::Acquire))))
            } else {
                None
            };
            if let Some(delivery) = self.next_in_holes(cursor) {
                return Some(delivery);
            }
            let (pos, header) = ahead?;
            match header {
                Header::Entry(len) => return Some(self.deliver(pos, cursor.read, len)),
                Header::NotReady => return None, // free, or claimed and not announced yet
                Header::Open(span) => {
                    // Nothing claimed after it: reading past gains nothing
                    // (the claim is most likely being written right now).
                    // Relaxed: a hint; a stale tail only delays reading
                    // past until the next look.
                    let tail = self.producers_line.tail.load(Ordering::Relaxed);
                    if tail <= cursor.read + span as u64 || cursor.holes.len == MAX_HOLES {
                        return None;
                    }
                    if cursor.holes.is_empty() {
                        // Everything before the first hole is consumed.
                        cursor.settled = cursor.read;
                    }
                    cursor.holes.list[cursor.holes.len] = Hole {
                        start: cursor.read,
                        pos: cursor.read,
                        end: cursor.read + span as u64,
                        since: Some(std::time::Instant::now()),
                    };
                    cursor.holes.len += 1;
                    cursor.read += span as u64;
                }
                Header::Padding | Header::Skip(_) => {
                    if cursor.holes.is_empty() {
                        self.step_over(cursor, pos, header);
                    } else {
                        // Left with its header for the walk that settles it.
                        cursor.read += match header {
                            Header::Skip(span) => span,
                            _ => self.capacity() - pos,
                        } as u64;
                    }
                }
            }
        }
    }

    /// The oldest committed entry inside a hole, dropping holes that were
    /// aborted or are read to their end.
    fn next_in_holes(&self, cursor: &mut Cursor) -> Option<Delivery> {
        // Found one: look again at the older holes, which we may have seen
        // open before this one's commit. Having acquired this commit, we
        // now see every commit its producer made before it: its entries
        // come out in its order.
        let mut found = None;
        let mut older = cursor.holes.len;
        while let Some((i, pos, at, len)) = self.first_committed_hole(cursor, older) {
            found = Some((pos, at, len));
            older = i;
        }
        found.map(|(pos, at, len)| self.deliver(pos, at, len))
    }

    /// The first of holes `0..limit` whose next header is a committed
    /// entry: its index, position, offset and length.
    fn first_committed_hole(
        &self,
        cursor: &mut Cursor,
        mut limit: usize,
    ) -> Option<(usize, usize, u64, usize)> {
        let mut i = 0;
        while i < limit.min(cursor.holes.len) {
            let hole = cursor.holes.list[i];
            let pos = self.position(hole.pos);
            // SAFETY: [OwnedSpans, AtomicHeaders] `hole.pos` is the header
            // of a claim we read past, or an entry boundary inside it that
            // its producer published before its first header; header words
            // are only accessed atomically and no span covers them.
            let word = unsafe { self.buffer.header(pos) };
            // Acquire: pairs with the producer's Release (its commit).
            match Header::decode(word.load(Ordering::Acquire)) {
                Header::Entry(len) => return Some((i, pos, hole.pos, len)),
                Header::Skip(span) => {
                    // Aborted, or a commit's unused end: left for the walk.
                    cursor.holes.list[i].pos += span as u64;
                    if cursor.holes.list[i].pos == hole.end {
                        self.close_hole(cursor, i);
                        limit -= 1;
                    }
                }
                // Still open (only a claim's first header is ever open).
                Header::Open(_) => i += 1,
                Header::NotReady | Header::Padding => {
                    debug_assert!(false, "a hole's header cannot go back to {pos}");
                    i += 1;
                }
            }
        }
        None
    }

    /// Hands out the entry of `len` bytes whose header, at offset `at`, is
    /// at position `pos` and was published to us (acquired).
    #[inline]
    fn deliver(&self, pos: usize, at: u64, len: usize) -> Delivery {
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

    /// Consumes a delivery while holes are open: its header becomes a
    /// skipped span, zeroed by the walk that settles it.
    fn consume_around(&self, cursor: &mut Cursor, delivery: Delivery) {
        let (at, stride) = (delivery.at, delivery.stride.get());
        #[allow(clippy::drop_non_drop)] // holds loom guards under mpring_loom
        drop(delivery);
        // SAFETY: [OwnedSpans, AtomicHeaders] the header of an entry
        // published to us: ours until we release past it; header words are
        // only accessed atomically.
        let word = unsafe { self.buffer.header(self.position(at)) };
        // Relaxed: only this thread reads it again (`settle`); a producer
        // reaches the word only after the walk zeroed it and a head store
        // (Release) published that.
        word.store(Header::Skip(stride as usize).encode(), Ordering::Relaxed);
        if at == cursor.read {
            cursor.read += stride;
        } else {
            // Inside a hole: the one whose read position it was.
            let Some(i) = cursor.holes.list[..cursor.holes.len]
                .iter()
                .position(|h| h.pos == at)
            else {
                unreachable!("a delivery is at `read` or in a hole");
            };
            cursor.holes.list[i].pos += stride;
            if cursor.holes.list[i].pos == cursor.holes.list[i].end {
                self.close_hole(cursor, i);
            }
        }
        self.release_if_due(cursor);
    }

    /// Drops hole `i`, read to its end; the oldest one lets the walk go on.
    fn close_hole(&self, cursor: &mut Cursor, i: usize) {
        cursor.holes.remove(i);
        if i == 0 {
            self.settle(cursor);
        }
    }

    /// Walks `settled` forward over consumed and skipped spans, zeroing
    /// them, up to the oldest hole (or `read`, when none is left).
    fn settle(&self, cursor: &mut Cursor) {
        let bound = match cursor.holes.list[..cursor.holes.len].first() {
            Some(hole) => hole.start,
            None => cursor.read,
        };
        while cursor.settled < bound {
            let pos = self.position(cursor.settled);
            // SAFETY: [OwnedSpans, AtomicHeaders] a span boundary in
            // `[head, read)` outside every hole: a span we consumed or
            // stepped over, the consumer's own; only accessed atomically.
            let word = unsafe { self.buffer.header(pos) };
            // Relaxed: we wrote this word, or acquired it when we read past.
            let (span, dirty) = match Header::decode(word.load(Ordering::Relaxed)) {
                Header::Skip(span) => (span, span),
                Header::Padding => (self.capacity() - pos, self.align),
                other => unreachable!("{other:?} in consumed space"),
            };
            let start = cursor.settled;
            cursor.settled += span as u64;
            self.zero_consumed(cursor, start + dirty as u64);
            if dirty < span {
                // The rest of the padding is still zero.
                cursor.zeroed = cursor.settled;
            }
        }
    }

    /// Claims read past while open, and how long ago the consumer met the
    /// oldest of them.
    pub(crate) fn open_claims(&self, cursor: &Cursor) -> (usize, Option<std::time::Duration>) {
        let oldest = cursor.holes.list[..cursor.holes.len]
            .first()
            .and_then(|h| h.since)
            .map(|since| since.elapsed());
        (cursor.holes.len, oldest)
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

impl<M> fmt::Debug for Shared<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("capacity", &self.capacity())
            .field("align", &self.align)
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.producers_line.tail.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
