//! The ring's memory: one zero-initialised allocation, touched through raw
//! pointers here and nowhere else.
//!
//! Two kinds of access exist:
//! - header words, always through atomics ([`Buffer::header`]);
//! - payload bytes, through a [`WriteSpan`] (one producer) or a [`ReadSpan`]
//!   (the consumer). A span is a token: it can only be made by an `unsafe`
//!   claim whose caller (the protocol, under `ring/`) promises
//!   exclusivity, and owning it is what makes [`Buffer::bytes_mut`] and
//!   [`Buffer::bytes`] safe.
//!
//! This module is private to `ring`: nothing else can make a span or reach
//! the memory. Under loom, [`Words`] checks every span and header access
//! for data races; otherwise it is an empty type.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use crate::loom::{HeaderWord, ReadGuard, Words, WriteGuard};

/// The buffer is aligned to this, so header words never straddle cache lines
/// and position 0 starts a line.
const BUFFER_ALIGN: usize = 128;

/// One contiguous, zero-initialised, heap-allocated byte buffer.
pub(super) struct Buffer {
    ptr: NonNull<u8>,
    capacity: usize,
    words: Words,
}

// SAFETY: the buffer is plain bytes owned by this value. Every concurrent
// access goes through an atomic header word or through a span, and the
// protocol hands out spans only for disjoint, exclusively owned ranges (the
// contract of `claim_write` / `claim_read`).
unsafe impl Send for Buffer {}
// SAFETY: as above: shared access only ever happens through atomics or
// through spans whose exclusivity the claim's caller guarantees.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Allocates `capacity` zeroed bytes, or `None` when the size is not
    /// representable or the allocator refuses it (never aborts).
    pub(super) fn new(capacity: usize) -> Option<Buffer> {
        debug_assert!(capacity.is_power_of_two() && capacity >= 16);
        let layout = Layout::from_size_align(capacity, BUFFER_ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size (capacity >= 16).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)?;
        Some(Buffer {
            ptr,
            capacity,
            words: Words::new(capacity),
        })
    }

    /// Size in bytes.
    #[inline]
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The header word at byte position `pos`.
    ///
    /// # Safety
    /// `pos` is a multiple of 8 below `capacity`, and no live span covers the
    /// word at `pos` (so every access to it, while the returned handle
    /// lives, is atomic, or ordered by happens-before with this one).
    #[inline]
    pub(super) unsafe fn header(&self, pos: usize) -> HeaderWord<'_> {
        debug_assert!(pos % 8 == 0 && pos < self.capacity);
        // SAFETY: in bounds and 8-aligned (the buffer is 128-aligned and
        // `pos` a multiple of 8), the memory lives as long as `self`, and
        // the caller guarantees no non-atomic access races with this one.
        let real = unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(pos).cast::<u64>()) };
        self.words.header(real, pos)
    }

    /// Hints the CPU to fetch the cache line at `pos` for writing soon.
    #[inline]
    pub(super) fn prefetch_write(&self, pos: usize) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            let at = self.ptr.as_ptr().wrapping_add(pos & (self.capacity - 1));
            // SAFETY: PREFETCHW only hints the cache (executes as a NOP
            // where unsupported), reads and writes no memory, cannot fault
            // and touches no register but the address input.
            unsafe {
                core::arch::asm!("prefetchw [{}]", in(reg) at, options(nostack, preserves_flags, readonly));
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = pos;
    }

    /// Under loom, checks that every word of a fresh claim
    /// `[pos, pos + len)` reads zero (invariant FreeIsZero, header words
    /// included); nothing otherwise.
    #[inline]
    pub(super) fn check_claimed_zero(&self, pos: usize, len: usize) {
        self.words.check_claimed_zero(pos, len);
    }

    /// Claims `len` payload bytes at `pos` for writing.
    ///
    /// # Safety
    /// `[pos, pos + len)` lies inside this buffer, the span is used with
    /// this buffer only, and until the returned span is dropped no other
    /// span covers it and no one else reads or writes those bytes (header
    /// words inside it included).
    #[inline]
    pub(super) unsafe fn claim_write(&self, pos: usize, len: usize) -> WriteSpan {
        WriteSpan {
            pos,
            len,
            _guard: self.words.write(pos, len),
        }
    }

    /// Claims `len` payload bytes at `pos` for reading.
    ///
    /// # Safety
    /// `[pos, pos + len)` lies inside this buffer, the span is used with this
    /// buffer only, its bytes were published to this thread
    /// (happens-before), and until the returned span is dropped no other
    /// span covers them and no one else reads or writes them (the holder
    /// may write them: [`Buffer::bytes_read_mut`]).
    #[inline]
    pub(super) unsafe fn claim_read(&self, pos: usize, len: usize) -> ReadSpan {
        ReadSpan {
            pos,
            len,
            _guard: self.words.read(pos, len),
        }
    }

    /// The bytes a write span owns.
    #[inline]
    pub(super) fn bytes_mut<'a>(&'a self, span: &'a mut WriteSpan) -> &'a mut [u8] {
        debug_assert!(span.pos <= self.capacity && span.len <= self.capacity - span.pos);
        // SAFETY: the span's claim guarantees that it is in bounds and that
        // nothing else accesses these bytes while the span lives; the
        // returned borrow cannot outlive the span.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(span.pos), span.len) }
    }

    /// The bytes a write span owns, for reading back.
    #[inline]
    pub(super) fn bytes_written<'a>(&'a self, span: &'a WriteSpan) -> &'a [u8] {
        debug_assert!(span.pos <= self.capacity && span.len <= self.capacity - span.pos);
        // SAFETY: the span's claim guarantees that it is in bounds and that
        // nothing else accesses these bytes while the span lives; the shared
        // borrow of the span excludes `bytes_mut` while this lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(span.pos), span.len) }
    }

    /// The bytes a read span covers.
    #[inline]
    pub(super) fn bytes<'a>(&'a self, span: &'a ReadSpan) -> &'a [u8] {
        debug_assert!(span.pos <= self.capacity && span.len <= self.capacity - span.pos);
        // SAFETY: the span's claim guarantees that it is in bounds, and that
        // the bytes were published to us and stay unwritten while it lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(span.pos), span.len) }
    }

    /// The bytes a read span covers, for the holder to change in place.
    #[inline]
    pub(super) fn bytes_read_mut<'a>(&'a self, span: &'a mut ReadSpan) -> &'a mut [u8] {
        debug_assert!(span.pos <= self.capacity && span.len <= self.capacity - span.pos);
        // SAFETY: the span's claim guarantees that it is in bounds, that the
        // bytes were published to us, and that no one else reads or writes
        // them while it lives; the exclusive borrow of the span excludes
        // `bytes` while this lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(span.pos), span.len) }
    }

    /// Writes `value` at `offset` bytes into a write span (nothing for a
    /// zero-sized `T`).
    ///
    /// # Panics
    /// If the value does not fit the span or would be misaligned (a bug in
    /// the protocol: every metadata room is aligned and inside its span).
    #[inline]
    pub(super) fn write_value<T: Copy>(&self, span: &mut WriteSpan, offset: usize, value: T) {
        if std::mem::size_of::<T>() == 0 {
            return;
        }
        assert!(offset <= span.len && std::mem::size_of::<T>() <= span.len - offset);
        // SAFETY: the span's claim makes `[pos, pos + len)` ours alone and
        // in bounds, and the value lies inside it (checked above).
        let at = unsafe { self.ptr.as_ptr().add(span.pos + offset) }.cast::<T>();
        assert!(
            at as usize % std::mem::align_of::<T>() == 0,
            "misaligned metadata"
        );
        // SAFETY: in bounds, aligned, and owned by the span (see above);
        // `T: Copy` has no drop to skip for whatever was there.
        unsafe { at.write(value) };
    }

    /// The `T` at `offset` bytes into a read span.
    ///
    /// # Safety
    /// A `T` was written at that offset (by [`Buffer::write_value`], before
    /// the span's bytes were published to this thread), and `[offset,
    /// offset + size_of::<T>())` lies inside the span.
    #[inline]
    pub(super) unsafe fn read_value<'a, T>(&'a self, span: &'a ReadSpan, offset: usize) -> &'a T {
        if std::mem::size_of::<T>() == 0 {
            // SAFETY: a zero-sized `T` occupies no memory; any aligned,
            // non-null pointer is a valid reference to one.
            return unsafe { std::ptr::NonNull::<T>::dangling().as_ref() };
        }
        debug_assert!(offset + std::mem::size_of::<T>() <= span.len);
        // SAFETY: the caller guarantees that a `T` was written there and
        // published to us; the span keeps it from being written or zeroed
        // while the returned borrow lives.
        unsafe { &*self.ptr.as_ptr().add(span.pos + offset).cast::<T>() }
    }

    /// Ends a write span (under loom, the written words then show in the
    /// header models, as a stale word would on real hardware).
    #[inline]
    pub(super) fn end_write(&self, span: WriteSpan) {
        self.words.end_write(span.pos, self.bytes_written(&span));
        // The span, and under loom its guard, ends here.
    }

    /// Writes zeroes over `[pos, pos + len)`.
    ///
    /// # Safety
    /// The range lies inside the buffer, `pos` and `len` are multiples of 8,
    /// and the caller owns the range exclusively: no span covers it and no one
    /// else accesses it until a later release/acquire hands it over.
    #[inline]
    pub(super) unsafe fn zero(&self, pos: usize, len: usize) {
        debug_assert!(pos % 8 == 0 && len % 8 == 0 && pos + len <= self.capacity);
        self.words.zero(pos, len);
        // SAFETY: in bounds, and the caller owns the range exclusively.
        // Spans of up to 128 bytes (every small entry, zeroed one by one as
        // it is consumed) take two fixed-size, possibly overlapping stores
        // each instead of a call to `memset`; both stay inside the range.
        unsafe {
            let at = self.ptr.as_ptr().add(pos);
            match len {
                0..=8 => std::ptr::write_bytes(at, 0, len),
                9..=32 => {
                    std::ptr::write_bytes(at, 0, 16);
                    std::ptr::write_bytes(at.add(len - 16), 0, 16);
                }
                33..=64 => {
                    std::ptr::write_bytes(at, 0, 32);
                    std::ptr::write_bytes(at.add(len - 32), 0, 32);
                }
                65..=128 => {
                    std::ptr::write_bytes(at, 0, 64);
                    std::ptr::write_bytes(at.add(len - 64), 0, 64);
                }
                _ => std::ptr::write_bytes(at, 0, len),
            }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity, BUFFER_ALIGN)
            .expect("layout was valid at allocation");
        // SAFETY: allocated in `new` with this very layout, freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// Exclusive write access to a payload range; made only by
/// [`Buffer::claim_write`].
pub(super) struct WriteSpan {
    pos: usize,
    len: usize,
    _guard: WriteGuard,
}

/// The consumer's access to a published payload range, reading and (for
/// `Entry`'s `DerefMut`) writing; made only by [`Buffer::claim_read`].
pub(super) struct ReadSpan {
    pos: usize,
    len: usize,
    _guard: ReadGuard,
}

#[cfg(test)]
mod tests {
    use super::Buffer;
    use crate::loom::Ordering;

    #[test]
    fn starts_zeroed_and_aligned() {
        let buf = Buffer::new(256).unwrap();
        assert_eq!(buf.ptr.as_ptr() as usize % super::BUFFER_ALIGN, 0);
        for pos in (0..256).step_by(8) {
            // SAFETY: no spans exist.
            assert_eq!(unsafe { buf.header(pos) }.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn spans_see_their_own_bytes_and_zero_clears() {
        let buf = Buffer::new(64).unwrap();
        // SAFETY: single thread, no other span over [8, 24).
        let mut w = unsafe { buf.claim_write(8, 16) };
        buf.bytes_mut(&mut w).copy_from_slice(&[7; 16]);
        buf.end_write(w);
        {
            // SAFETY: written above by this thread, no writer left.
            let r = unsafe { buf.claim_read(8, 16) };
            assert_eq!(buf.bytes(&r), &[7; 16]);
        }
        // SAFETY: no spans alive.
        unsafe { buf.zero(8, 16) };
        // SAFETY: as above.
        assert_eq!(unsafe { buf.header(8) }.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn refuses_impossible_sizes() {
        assert!(Buffer::new(1 << (usize::BITS - 1)).is_none());
    }
}
