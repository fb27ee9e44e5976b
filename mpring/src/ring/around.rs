//! Read-around mode: the consumer delivers committed entries past claims
//! still open (holes), comes back to them, and releases only up to the
//! oldest. The module docs of `ring` say which invariant each step changes
//! and why it stays safe.

use super::header::Header;
use super::{Cursor, Delivery, Shared};
use crate::loom::{AtomicU8, Ordering};

/// Most claims the consumer reads past at once; at the next one it stops.
const MAX_HOLES: usize = 32;

/// Claims read past while open, oldest first.
#[derive(Debug, Default)]
pub(super) struct Holes {
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
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn remove(&mut self, i: usize) {
        self.list.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    fn is_full(&self) -> bool {
        self.len == MAX_HOLES
    }

    /// Splits hole `i` at `at` (inside it, a claim's start): `[start, at)`
    /// stays, `[at, end)` becomes hole `i + 1`. The caller checked room.
    fn split(&mut self, i: usize, at: u64) {
        debug_assert!(!self.is_full() && self.list[i].pos < at && at < self.list[i].end);
        self.list.copy_within(i + 1..self.len, i + 2);
        self.len += 1;
        self.list[i + 1] = Hole {
            start: at,
            pos: at,
            end: self.list[i].end,
            since: self.list[i].since,
        };
        self.list[i].end = at;
    }

    /// Adds a hole after every other one.
    fn push(&mut self, start: u64, end: u64) {
        debug_assert!(!self.is_full());
        self.list[self.len] = Hole {
            start,
            pos: start,
            end,
            since: Some(std::time::Instant::now()),
        };
        self.len += 1;
    }
}

/// Where claims start: one flag per alignment unit of the buffer, set by a
/// producer right after its CAS for the offset it claimed from (read-around
/// mode only; empty otherwise).
///
/// A claim's `Open` header is stored after its CAS, so for a moment (or,
/// when its producer is preempted, for a while) its word is still zero and
/// says nothing of its length. The next claim's producer knows where that
/// claim ends: its own start, which it records here before it commits. A
/// consumer about to sleep on such a zero word finds the next recorded
/// start and reads past (`next_before_sleep`), so a committed entry never
/// waits for an earlier claim's announcement.
///
/// A flag holds the lap of the claim that set it ([`lap_tag`]: the lap
/// number modulo 128, plus one; 0 is "never set"). The consumer does not
/// clear flags as it goes (that would move their cache lines between it and
/// the producers on every lap); it clears the flags of what it releases
/// only in every 64th lap ([`CLEAR_EVERY_LAPS`]), before the head store.
///
/// Invariant **StartsExact**: at offset `q` in `[head, tail)`, the flag
/// equals `lap_tag(q)` only if a claim of `q`'s lap starts at `q` (a
/// producer's CAS moved the tail from it; the tail never moves back in
/// this mode). Why: a flag at `q`'s position was cleared when the head
/// passed that position in one of the 64 laps before `q`'s (every
/// position is released once per lap, and one lap in 64 clears); since
/// then only claims of later laps, up to `q`'s own, set it. So a flag
/// from another lap is less than 64 laps older, and its tag differs.
pub(super) struct ClaimStarts {
    flags: Box<[AtomicU8]>,
}

/// The consumer clears the flags of what it releases in one lap of this
/// many; at most half the tags, so tags of laps a clearing apart differ.
const CLEAR_EVERY_LAPS: u64 = 64;

/// The tag a claim of lap `lap` stores in its flag: never 0.
#[inline]
fn lap_tag(lap: u64) -> u8 {
    (lap % (2 * CLEAR_EVERY_LAPS)) as u8 + 1
}

impl ClaimStarts {
    /// Flags for `units` alignment units (0: not in read-around mode).
    pub(super) fn new(units: usize) -> ClaimStarts {
        ClaimStarts {
            flags: (0..units).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// Clears flags `[from, from + len)` (no wrap).
    fn clear(&self, from: usize, len: usize) {
        let flags = &self.flags[from..from + len];
        #[cfg(mpring_loom)]
        for flag in flags {
            flag.store(0, Ordering::Relaxed);
        }
        // One plain write vectorises, unlike one atomic store per flag; the
        // pointer comes from the whole slice, whose bytes are `UnsafeCell`s
        // (an atomic's), so writing through it is allowed.
        #[cfg(not(mpring_loom))]
        // SAFETY: [StartsExact, OwnedSpans] flags of spans consumed, not yet
        // released: their producers published later headers, which we
        // acquired, and the next lap's producers wait for our head store;
        // the consumer alone reads them, so a plain write is race-free.
        unsafe {
            std::ptr::write_bytes(flags.as_ptr().cast::<u8>().cast_mut(), 0, flags.len())
        };
    }
}

impl<M> Shared<M> {
    /// The next committed entry in read-around mode: the oldest committed
    /// entry in a claim read past while it was open (a hole), else the next
    /// one at `read`, which goes past claims still open.
    pub(super) fn next_around(&self, cursor: &mut Cursor) -> Option<Delivery> {
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
                    if tail <= cursor.read + span as u64 || cursor.holes.is_full() {
                        return None;
                    }
                    if cursor.holes.is_empty() {
                        // Everything before the first hole is consumed.
                        cursor.settled = cursor.read;
                    }
                    cursor.holes.push(cursor.read, cursor.read + span as u64);
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
                Header::Padding => {
                    // A claim of a hole read past unannounced
                    // (`read_past_unannounced`) padded the lap: its first,
                    // whose padding header was not stored yet when we read
                    // past it, or a later one.
                    cursor.holes.list[i].pos += (self.capacity() - pos) as u64;
                    if cursor.holes.list[i].pos == hole.end {
                        self.close_hole(cursor, i);
                        limit -= 1;
                    }
                }
                Header::Open(span) => {
                    // Still open. A hole read past unannounced may hold more
                    // claims after this one: they become a hole of their own,
                    // so that their commits need not wait for this one.
                    let next = hole.pos + span as u64;
                    if next < hole.end && !cursor.holes.is_full() {
                        cursor.holes.split(i, next);
                        limit += 1;
                    }
                    i += 1;
                }
                // Claimed, not announced yet: `read_past_unannounced`.
                Header::NotReady => i += 1,
            }
        }
        None
    }

    /// Consumes a delivery while holes are open: its header becomes a
    /// skipped span, zeroed by the walk that settles it.
    pub(super) fn consume_around(&self, cursor: &mut Cursor, delivery: Delivery) {
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
        if cursor.holes.is_empty() {
            // Back in order, where `read_header` needs `read` within a lap
            // of `head`: a hole a whole lap behind the reader held the head
            // back, and the wait paths may read in order before releasing.
            self.release_if_due(cursor);
        }
    }

    /// Walks `settled` forward over consumed and skipped spans, zeroing
    /// them, up to the oldest hole (or `read`, when none is left).
    pub(super) fn settle(&self, cursor: &mut Cursor) {
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

    // ---- claims not announced yet ------------------------------------------

    /// Records that a claim starts at offset `from` (the tail our CAS moved).
    #[inline]
    pub(super) fn record_start(&self, from: u64) {
        let Some(flag) = self.start_flag(from) else {
            return;
        };
        // Relaxed: the consumer looks for it only on its last look before
        // sleeping, after its barrier of NoLostWakeUp; our later publish
        // (fence or compiler barrier, then the flag load) orders this store
        // before that look, or finds the consumer asleep and wakes it
        // through the target's lock.
        flag.store(lap_tag(self.lap(from)), Ordering::Relaxed);
    }

    /// Clears the recorded starts of `[from, to)`, about to be released,
    /// where they lie in a lap that clears (StartsExact). `to - from` is
    /// at most a lap.
    pub(super) fn clear_starts(&self, from: u64, to: u64) {
        let lap_bytes = self.capacity() as u64;
        let mut at = from;
        while at < to {
            let lap_end = (self.lap(at) + 1) * lap_bytes;
            let end = to.min(lap_end);
            if self.lap(at) % CLEAR_EVERY_LAPS == 0 {
                let shift = self.align.trailing_zeros();
                let first = self.position(at) >> shift;
                self.starts.clear(first, ((end - at) >> shift) as usize);
            }
            at = end;
        }
    }

    /// The lap of `offset`.
    #[inline]
    fn lap(&self, offset: u64) -> u64 {
        offset >> self.capacity().trailing_zeros()
    }

    /// The flag of the alignment unit at `offset` (`None` outside
    /// read-around mode, where there are none).
    #[inline]
    fn start_flag(&self, offset: u64) -> Option<&AtomicU8> {
        // A shift, not a division: the alignment is a power of two.
        let unit = self.position(offset) >> self.align.trailing_zeros();
        self.starts.flags.get(unit)
    }

    /// The first recorded start in `(after, before)`, both offsets less than
    /// a lap apart and in `[head, tail]`.
    fn next_start(&self, after: u64, before: u64) -> Option<u64> {
        let mut at = after + self.align as u64;
        while at < before {
            let flag = self.start_flag(at)?;
            // Relaxed: see `record_start`; what lies at `at` is then read
            // through its header word, with Acquire where it is delivered.
            if flag.load(Ordering::Relaxed) == lap_tag(self.lap(at)) {
                return Some(at);
            }
            at += self.align as u64;
        }
        None
    }

    /// The consumer's last look before it sleeps: [`next`](Shared::next),
    /// and in read-around mode also past claims whose `Open` is not stored
    /// yet (see [`ClaimStarts`]). Every blocking wait, `poll_ready` and
    /// `arm_fd` look with this after announcing sleep: the producer of an
    /// entry behind such a claim committed before the announcement (this
    /// look then sees its start), or it sees the announcement and wakes us.
    pub(crate) fn next_before_sleep(&self, cursor: &mut Cursor) -> Option<Delivery> {
        if let Some(delivery) = self.next(cursor) {
            return Some(delivery);
        }
        if !self.around {
            return None;
        }
        while self.read_past_unannounced(cursor) {
            if let Some(delivery) = self.next_around(cursor) {
                return Some(delivery);
            }
        }
        None
    }

    /// Splits holes whose next header is still zero at the first start
    /// recorded inside them, and reads past a zero header at `read` with
    /// something claimed after it, up to the first start recorded after
    /// it. Returns whether anything changed.
    fn read_past_unannounced(&self, cursor: &mut Cursor) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < cursor.holes.len && !cursor.holes.is_full() {
            let hole = cursor.holes.list[i];
            if self.is_unannounced(hole.pos) {
                if let Some(at) = self.next_start(hole.pos, hole.end) {
                    cursor.holes.split(i, at);
                    changed = true;
                }
            }
            i += 1;
        }
        // At a full lap past `head` the word at `read` is the oldest hole's.
        if cursor.holes.is_full() || cursor.read - cursor.head >= self.capacity() as u64 {
            return changed;
        }
        // An RMW, not a load: it reads the newest tail, so a claim made
        // before our barrier is seen even where a plain load after a fence
        // may return an older value in loom's model (it models SeqCst fences
        // with RMWs incompletely); once per sleep, in this mode only.
        // Relaxed: what lies past `read` is read through its headers.
        let tail = self.producers_line.tail.fetch_add(0, Ordering::Relaxed);
        let end = match self.header_at(cursor.read) {
            // Announced: `next_around` reads past it only when a fresh
            // enough tail says something was claimed after it; this one is.
            Header::Open(span) if cursor.read + (span as u64) < tail => cursor.read + span as u64,
            Header::NotReady if cursor.read < tail => match self.next_start(cursor.read, tail) {
                Some(at) => at,
                None => return changed,
            },
            _ => return changed,
        };
        if cursor.holes.is_empty() {
            // Everything before the first hole is consumed.
            cursor.settled = cursor.read;
        }
        cursor.holes.push(cursor.read, end);
        cursor.read = end;
        true
    }

    /// Whether the header word at `offset` (a span boundary less than a lap
    /// ahead of `head`) is still zero.
    fn is_unannounced(&self, offset: u64) -> bool {
        self.header_at(offset) == Header::NotReady
    }

    /// The header at `offset` (a span boundary less than a lap ahead of
    /// `head`), loaded Relaxed: the caller acts only on a zero or an
    /// announcement, which carry no data; what is delivered there later is
    /// loaded again with Acquire.
    fn header_at(&self, offset: u64) -> Header {
        // SAFETY: [ReadWindow (as relaxed by this mode), AtomicHeaders] a
        // span boundary in `[head, head + capacity)`: free space or a
        // claim's header word, only ever accessed atomically.
        let word = unsafe { self.buffer.header(self.position(offset)) };
        Header::decode(word.load(Ordering::Relaxed))
    }
}
