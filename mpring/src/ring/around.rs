//! Read-around mode: the consumer delivers committed entries past claims
//! still open (holes), comes back to them, and releases only up to the
//! oldest. The module docs of `ring` say which invariant each step changes
//! and why it stays safe.

use super::header::Header;
use super::{Cursor, Delivery, Shared};
use crate::loom::Ordering;

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
}
