//! The protocol: reserve, commit, abort, shrink, read, release. Every claim
//! of buffer memory is made under this module, and this file holds what
//! every step relies on: the shared state, the invariants and the table of
//! orderings, which every SAFETY and ordering comment under `ring/` cites.
//!
//! The steps live by side, one file each:
//! - `produce`: reserve, commit, abort, shrink, batches and runs, publish,
//!   hand-back (the producers' side, any number of threads);
//! - `consume`: read, step over, deliver, consume, zero, release (the one
//!   consumer, in order);
//! - `around`: read-around mode's holes, the walk that settles them and the
//!   look past a claim not yet announced (the consumer, opt-in);
//! - `buffer` (the memory, the only raw pointers) and `header` (the word
//!   encoding), private to this module.
//!
//! crossbeam-channel keeps a whole algorithm in one file so that a reader
//! sees every ordering side by side. That works while one file fits in a
//! reader's head; here the producers' CAS loop, the in-order consumer and
//! read-around mode had grown into 1,200 lines whose steps a reader of one
//! side never needs. Splitting by side keeps each file to one party's
//! steps, readable on its own, while the side-by-side view that the
//! one-file style buys lives on here, in the invariants and the table of
//! orderings (each row names the file and function of both ends of a
//! pairing). The sleep handshake lives in `crate::sleep`, reached only
//! through `publish` and the consumer's announcements.
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
//!   span it consumed (an entry, a skipped span; of padding only its
//!   header word, the rest was never written), right behind the reader or
//!   at the latest in the release that publishes a head past it, and a
//!   producer zeroes what it hands back before it moves the tail back.
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
//! - **StartsExact** (read-around mode): at an offset in `[head, tail)`,
//!   a claim-start flag holds that offset's lap tag only where a claim of
//!   that lap starts. Flags carry their lap modulo 128; the consumer clears
//!   the flags of what it releases in one lap of 64, before the head store,
//!   so an older flag is less than 64 laps old and its tag differs.
//! - **NoLostWakeUp**: a consumer about to sleep sets `sleeping`, then
//!   re-reads the header it waits on; a producer stores its header, then
//!   reads `sleeping`; a full barrier on both sides makes one of the two
//!   see the other's store: SeqCst fences, or (asymmetric mode, see
//!   `crate::sys::barrier`) a process-wide barrier on the consumer's side and a
//!   compiler barrier on the producers'. The wake-up target may be a
//!   readiness fd (`crate::readiness`): a waker takes the registration and
//!   writes the fd's counter under the target's lock, and the consumer
//!   clears the counter and registers again under the same lock before it
//!   announces, so a clear never takes back a notification whose cause the
//!   re-check after announcing would miss. A run pushed with `Wake::Later`
//!   (the UDP listeners, while coalescing) stores its header without the
//!   barrier and the flag check; the pushing thread makes them later
//!   (`Shared::wake_if_asleep`), once for any number of runs, before it
//!   waits on anything: still after every header store it covers.
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
//! (`around.rs`.) Opt-in (`Builder::read_around_open`). What changes, and
//! why it stays safe:
//! - **Announcement.** Right after its CAS a producer records where its
//!   claim starts (`ClaimStarts`, a flag per alignment unit, Relaxed), then
//!   stores `Header::Open(stride)` in its claim's header (Relaxed: it
//!   carries no data, only the claim's length). The word was zero
//!   (FreeIsZero), so between the CAS and this store the consumer sees a
//!   zero there.
//! - **Reading past.** Meeting an open header with something claimed
//!   after it (a Relaxed look at the tail: a hint), the consumer records
//!   the claim as a hole (at most `MAX_HOLES`; at the next one it stops)
//!   and reads on after it. It reads the word at `read` only while
//!   `read - head < capacity`: with holes, `read` may run up to a lap
//!   ahead of `head` (ReadWindow is relaxed to this), never onto the
//!   oldest hole's own word a lap later. Without holes, `next` is the
//!   in-order path and only an open header leaves it, so the mode costs
//!   nothing measurable while nothing stalls.
//! - **Reading past a claim not announced yet.** A zero word with
//!   something claimed after it is a claim in the window between its CAS
//!   and its announcement (a producer preempted there holds it open for as
//!   long as it is preempted). The consumer does not poll for it: its last
//!   look before sleeping (`next_before_sleep`, used by every blocking
//!   wait, `poll_ready` and `arm_fd`) reads the tail with an RMW and reads
//!   past such a word up to the first start recorded after it, as one hole
//!   (which may hold several claims: a hole whose next word is an
//!   announcement, or a zero with a start recorded after it, splits
//!   there). StartsExact makes every recorded start in `[head, tail)` a
//!   real span boundary, so the consumer never reads a header word inside
//!   a span. A producer that committed an entry behind such a claim
//!   recorded its start before its commit; its publish's barrier pairs
//!   with the consumer's (NoLostWakeUp): either the last look sees the
//!   start and the entry, or the producer sees the sleeping flag and wakes
//!   it. No wake-up per reservation, no timed polling.
//! - **Coming back.** While holes exist, every step loads the word at
//!   `read` (Acquire) first, then the holes, oldest first; a hole found
//!   committed makes it look again at the older ones (a loop: with two
//!   holes, once is not enough). Having acquired a commit, the consumer
//!   sees every commit its producer made before it, so a producer that
//!   commits its reservations in the order it made them sees them
//!   delivered in that order (HoleOrder; loom's
//!   `one_producers_three_commits_come_out_in_its_order` fails when the
//!   look again at the older holes is a single look). Otherwise entries
//!   come out in reservation order, except that an entry committed while
//!   an earlier reservation is open may come out before it: this mode
//!   relaxes that promise of the default mode, and only that.
//! - **Consumed, not released.** While a hole exists, an entry consumed
//!   after it keeps its header word, rewritten by the consumer (which owns
//!   it, OwnedSpans) as a skipped span; `settle` walks `settled` from
//!   `head` over such spans, zeroing them, up to the oldest hole, and only
//!   `settled` is released. So `head` never passes an open claim, nothing
//!   is zeroed while a producer may write it, and FreeIsZero holds as
//!   stated. In one lap of 64, the recorded starts of what is released are
//!   cleared before the head store publishes it (StartsExact).
//! - **No hand-back.** Aborts and short commits leave skipped spans; the
//!   tail never moves back (Bounds without its exception), so a consumer
//!   that read past a claim can never land inside a later one, and every
//!   tail value a CAS moved from stays a span boundary.
//! - **Waking.** Announcements wake nobody; commits and aborts publish
//!   through `publish` as always. The consumer's last look before sleeping
//!   covers the word at `read` (announced or not) and every hole, so
//!   NoLostWakeUp holds for each of them.
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
//! Each row: who writes (file, function), who reads, what the pairing
//! carries, and what checks it. "Loom" names a model in `tests/loom.rs`
//! that runs the pairing; where a mutation was run against it (the
//! ordering weakened by hand), the row says so.
//!
//! | Release (writer, where) | Acquire (reader, where) | carries | checked by |
//! |---|---|---|---|
//! | producer: header store, `produce::publish` | consumer: header load, `consume::next`, `around::next_around`, `around::first_committed_hole` | the payload and metadata (and a skip header, or a batch's later headers, stored Relaxed before it) | loom, every model; weakened to Relaxed: `metadata_of_a_batch_and_a_pushed_run_race_the_consumer` and `batch_committed_in_part_inside_a_hole` fail (a race on the payload words) |
//! | consumer: `head` store, `consume::release` | producer: `head` load, `produce::reserve` | the consumer's zeroes (`consume`, `step_over`, and those `consume` leaves to `release`), the cleared claim starts, in one lap of 64 (StartsExact), and finished reads (FreeIsZero) | loom: `released_space_is_reused_on_the_next_lap`, `lap_over_partial_lines_and_an_old_padding_header`; the deferral's thresholds are scaled down to loom's rings, and a deferral that marks its bytes zeroed without zeroing them fails five models |
//! | producer: `cached_head` store, `produce::reserve` | producer: `cached_head` load, `produce::reserve` | the same, passed on between producers (CachedHead) | loom: `cached_head_handed_from_producer_to_producer` (either side Relaxed fails it) |
//! | producer: tail CAS, `produce::hand_back` | producer: tail CAS (success), `produce::reserve` | the zeroes over handed-back bytes (FreeIsZero) | loom: `abort_and_shrink`, `batch_committed_in_part_races_a_reservation_and_the_consumer` |
//! | (read-around) producer: `Open` store, `produce::reserve`, Relaxed | consumer: header load, `around::next_around` | nothing but the claim's length, in the word itself | loom: `open_reservation_with_a_committed_entry_after_it` |
//! | (read-around) producer: claim start flag, `around::record_start`, Relaxed | consumer: flag load, `around::next_start`, Relaxed, after its sleep barrier | where the claim before ours ends; ordered by the NoLostWakeUp barriers (below), or by the wake-up's lock | loom: `wait_reads_past_a_claim_not_announced_yet` and its `poll_ready` and `arm_fd` forms; `tests/hooks.rs` (a producer held between CAS and announcement); without the record all of them fail; a tag without the lap, or no clearing, fails `starts_recorded_in_earlier_laps_are_not_read_as_boundaries` or `starts_of_laps_long_ago_are_cleared` |
//! | (read-around) consumer: `Skip` rewrite, `around::consume_around`, Relaxed | consumer: `around::settle` | (the consumer's own word; producers reach it after the walk zeroed it and a `head` store) | single-threaded |
//! | last producer: count `fetch_sub`, `Shared::remove_producer` | consumer: count load, `Shared::producers` | the last commits before the disconnection | loom: `disconnection_after_the_last_commit` |
//! | consumer: `sleeping` store, `Sleep::announce` | producer: `sleeping` load, `Sleep::after_publish` (for runs pushed with `Wake::Later`: `Shared::wake_if_asleep`, after them) | the registered wake-up target | loom: the waiting and readiness models; for the deferred check `runs_pushed_without_a_wake_up_are_woken_by_the_check_after_them`, which deadlocks without the check or with its fence weakened to Release |
//! | waker: `woken` store, `Sleep::wake_on_purpose` | consumer: `woken` load, `Sleep::take_woken` | (a flag; the target slot's mutex orders the rest) | loom: `wait_is_woken_by_a_wake_handle` |
//! | (asymmetric mode) consumer: `membarrier(2)`, `Sleep::announce` | producer: compiler barrier, then a Relaxed load of the mode, `Sleep::after_publish` | the store-load pair of NoLostWakeUp without a fence on the producers' side | **not loom** (it cannot model a process-wide barrier): only `sleep::tests::asymmetric_mode_loses_no_wake_up`, a ping-pong of commits racing a falling-asleep consumer, which CI runs in release mode with 200,000 rounds and fails where `membarrier` is missing (`MPRING_REQUIRE_MEMBARRIER`); without the heavy barrier it lost 61 of 200,000 wake-ups |
//!
//! Two barriers, one after the header store in `Sleep::after_publish` and
//! one after the flag store in `Sleep::announce`, make the store-load pair of
//! NoLostWakeUp: two SeqCst fences, or a compiler barrier on the producers'
//! side against `membarrier(2)` plus a fence on the consumer's (asymmetric
//! mode, `crate::sys::barrier`, chosen by `sleep::BarrierMode`). Loom models the
//! fence pairing (it cannot model a process-wide barrier; under loom the
//! ring always runs in fence mode); unit tests in `sleep.rs` run each mode
//! pinned through a ping-pong of commits racing a falling-asleep consumer,
//! and the waiting and stress tests cross the switch. Everything else is
//! Relaxed, each with a comment saying why: a failed CAS, the tail guess
//! before a CAS, counters, the consumer-gone flag, the barrier mode,
//! snapshots.

mod around;
mod buffer;
mod consume;
mod header;
mod produce;

use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::num::NonZeroU64;

use crossbeam_utils::CachePadded;

use self::around::{ClaimStarts, Holes};
use self::buffer::{Buffer, ReadSpan, WriteSpan};
pub(crate) use self::produce::Wake;
use crate::error::BuildError;
use crate::loom::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sleep::Sleep;

/// The state that the [`Producer`](crate::Producer) handles and the
/// [`Consumer`](crate::Consumer) share. `M` is the type of every entry's
/// metadata record (`()`: none, and no room for it).
pub(crate) struct Shared<M = ()> {
    /// Written by producers on every reservation.
    producers_line: CachePadded<ProducersLine>,
    /// Next byte the consumer has not released; written by each release
    /// (at the end of a batch, when the consumer catches up, and whenever
    /// an eighth of the ring is pending).
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
    /// Read-around mode: where claims start (empty in the default mode).
    starts: ClaimStarts,
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
    /// `read` at the last in-order poll that found nothing: when `consume`
    /// zeroes a large entry.
    empty_at: u64,
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
            starts: ClaimStarts::new(if around { capacity / align } else { 0 }),
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

    // ---- lifecycle ------------------------------------------------------

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
        // Relaxed: a flag with no data behind it (see `reserve`).
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
}

impl<M> fmt::Debug for Shared<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed (both): a snapshot for display.
        f.debug_struct("Shared")
            .field("capacity", &self.capacity())
            .field("align", &self.align)
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.producers_line.tail.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
