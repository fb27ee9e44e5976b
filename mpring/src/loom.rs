//! The one place that chooses between the real thing and loom's models, so
//! that no other module carries a `cfg(mpring_loom)`.
//!
//! Under `cfg(mpring_loom)` the crate runs on loom's atomics, `Arc`, mutex
//! and threads, and every 8-byte word of the buffer gets a loom-tracked cell
//! ([`Words`]) so that loom sees the payload bytes as memory and reports
//! data races on them. Without it [`Words`] and its guards are empty types
//! and compile to nothing.
//!
//! The cfg is named `mpring_loom`, not `loom`, so that turning it on does
//! not also switch other crates of the build into their own loom modes.

#[cfg(mpring_loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(mpring_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(mpring_loom)]
pub(crate) use loom::thread::{current, Thread};

#[cfg(not(mpring_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(mpring_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(mpring_loom))]
pub(crate) use std::thread::{current, Thread};

/// Whether this build runs under loom (which has no clock: waits never
/// spin there).
pub(crate) const LOOM: bool = cfg!(mpring_loom);

/// Called in every retry loop: a CPU pause hint, or a loom yield so that
/// the model checker can schedule the thread we are waiting for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(mpring_loom)]
    loom::thread::yield_now();
    #[cfg(not(mpring_loom))]
    std::hint::spin_loop();
}

/// Parks the current thread until unparked or, outside loom, until
/// `deadline` (loom has no clock: its models wait without one).
pub(crate) fn park_until(deadline: Option<std::time::Instant>) {
    #[cfg(mpring_loom)]
    {
        let _ = deadline;
        loom::thread::park();
    }
    #[cfg(not(mpring_loom))]
    match deadline {
        None => std::thread::park(),
        Some(deadline) => {
            let now = std::time::Instant::now();
            if deadline > now {
                std::thread::park_timeout(deadline - now);
            }
        }
    }
}

pub(crate) use words::{HeaderWord, ReadGuard, Words, WriteGuard};

#[cfg(all(target_os = "linux", not(mpring_loom)))]
pub(crate) use crate::sys::event_fd::EventFd;
#[cfg(mpring_loom)]
pub(crate) use event_fd::EventFd;

/// The readiness fd under loom: a counter behind a mutex, and what
/// `epoll_wait` does with it, level- or edge-triggered. An edge is a
/// notification not yet reported; like the kernel, a report needs the
/// counter to be non-zero when it is made (`ep_send_events` polls the fd
/// again), so an edge left from before a clear is dropped.
#[cfg(mpring_loom)]
mod event_fd {
    use loom::sync::{Condvar, Mutex};

    #[derive(Default)]
    struct State {
        count: u64,
        edge: bool,
    }

    pub(crate) struct EventFd {
        state: Mutex<State>,
        changed: Condvar,
    }

    impl EventFd {
        pub(crate) fn new() -> std::io::Result<EventFd> {
            Ok(EventFd {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            })
        }

        pub(crate) fn raw(&self) -> std::os::fd::RawFd {
            -1
        }

        pub(crate) fn notify(&self) {
            let mut state = self.state.lock().unwrap();
            state.count += 1;
            state.edge = true;
            self.changed.notify_all();
        }

        pub(crate) fn clear(&self) {
            self.state.lock().unwrap().count = 0;
        }

        pub(crate) fn readable(&self) -> bool {
            self.state.lock().unwrap().count > 0
        }

        /// Blocks like `epoll_wait` on this fd alone: until it is readable
        /// (level-triggered) or until an edge can be reported
        /// (edge-triggered, which takes the edge).
        pub(crate) fn wait(&self, edge_triggered: bool) {
            let mut state = self.state.lock().unwrap();
            loop {
                if state.count > 0 && (!edge_triggered || state.edge) {
                    state.edge = false;
                    return;
                }
                if state.count == 0 {
                    state.edge = false;
                }
                state = self.changed.wait(state).unwrap();
            }
        }
    }
}

/// The buffer's words as loom sees them. Outside loom: nothing.
#[cfg(not(mpring_loom))]
mod words {
    use std::sync::atomic::AtomicU64;

    use super::Ordering;

    pub(crate) struct Words;

    /// Held by a write span for as long as it lives.
    pub(crate) struct WriteGuard;

    /// Held by a read span for as long as it lives.
    pub(crate) struct ReadGuard;

    impl Words {
        pub(crate) fn new(_capacity: usize) -> Words {
            Words
        }

        /// The header word at `pos`, given the real word there.
        #[inline]
        pub(crate) fn header<'a>(&'a self, real: &'a AtomicU64, _pos: usize) -> HeaderWord<'a> {
            HeaderWord(real)
        }

        #[inline]
        pub(crate) fn check_claimed_zero(&self, _pos: usize, _len: usize) {}

        #[inline]
        pub(crate) fn write(&self, _pos: usize, _len: usize) -> WriteGuard {
            WriteGuard
        }

        #[inline]
        pub(crate) fn read(&self, _pos: usize, _len: usize) -> ReadGuard {
            ReadGuard
        }

        #[inline]
        pub(crate) fn end_write(&self, _pos: usize, _written: &[u8]) {}

        #[inline]
        pub(crate) fn zero(&self, _pos: usize, _len: usize) {}
    }

    /// A header word: an atomic over the buffer's memory.
    pub(crate) struct HeaderWord<'a>(&'a AtomicU64);

    impl HeaderWord<'_> {
        #[inline]
        pub(crate) fn load(&self, order: Ordering) -> u64 {
            self.0.load(order)
        }

        #[inline]
        pub(crate) fn store(&self, value: u64, order: Ordering) {
            self.0.store(value, order)
        }
    }
}

/// The buffer's words as loom sees them: a loom atomic for every word (the
/// header model) and a loom cell for every word (the payload model).
///
/// A span holds loom's access guards on its words for as long as it lives,
/// so loom reports a data race whenever the protocol lets two spans (or a
/// span and a zeroing) overlap in time. Header words are modelled by the
/// separate atomics, which mirror the bytes a producer wrote when its span
/// ends, so a stale payload word still looks like garbage to a header read,
/// as it would on real hardware.
#[cfg(mpring_loom)]
mod words {
    use loom::cell::{MutPtr, UnsafeCell};

    use super::{AtomicU64, Ordering};

    pub(crate) struct Words {
        headers: Box<[AtomicU64]>,
        cells: Box<[UnsafeCell<()>]>,
    }

    pub(crate) struct WriteGuard(#[allow(dead_code)] Vec<MutPtr<()>>);

    pub(crate) struct ReadGuard(#[allow(dead_code)] Vec<MutPtr<()>>);

    fn words(pos: usize, len: usize) -> std::ops::Range<usize> {
        pos / 8..(pos + len).div_ceil(8)
    }

    impl Words {
        pub(crate) fn new(capacity: usize) -> Words {
            Words {
                headers: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
                cells: (0..capacity / 8).map(|_| UnsafeCell::new(())).collect(),
            }
        }

        pub(crate) fn header<'a>(
            &'a self,
            _real: &'a std::sync::atomic::AtomicU64,
            pos: usize,
        ) -> HeaderWord<'a> {
            HeaderWord {
                atomic: &self.headers[pos / 8],
                cell: &self.cells[pos / 8],
            }
        }

        /// Checks invariant `FreeIsZero` over a whole claim, header words
        /// included: every word a CAS just claimed reads 0.
        pub(crate) fn check_claimed_zero(&self, pos: usize, len: usize) {
            for w in words(pos, len) {
                assert_eq!(
                    self.headers[w].load(Ordering::Relaxed),
                    0,
                    "claimed a word that is not zero"
                );
            }
        }

        /// Checks invariant `FreeIsZero` (every claimed word reads 0), then
        /// takes the words for writing.
        pub(crate) fn write(&self, pos: usize, len: usize) -> WriteGuard {
            for w in words(pos, len) {
                assert_eq!(
                    self.headers[w].load(Ordering::Relaxed),
                    0,
                    "claimed a word that is not zero"
                );
            }
            WriteGuard(words(pos, len).map(|w| self.cells[w].get_mut()).collect())
        }

        /// Takes the words of a delivered entry for the consumer. For
        /// writing: the consumer owns them until it consumes the entry and
        /// may write them (`Entry`'s `DerefMut`), so loom checks that no
        /// one else touches them meanwhile, reads included.
        pub(crate) fn read(&self, pos: usize, len: usize) -> ReadGuard {
            ReadGuard(words(pos, len).map(|w| self.cells[w].get_mut()).collect())
        }

        /// Mirrors the written bytes into the header models (the span's
        /// guard is still held).
        pub(crate) fn end_write(&self, pos: usize, written: &[u8]) {
            debug_assert!(pos % 8 == 0);
            for (w, chunk) in words(pos, written.len()).zip(written.chunks(8)) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                self.headers[w].store(u64::from_ne_bytes(word), Ordering::Relaxed);
            }
        }

        /// Checks that no span holds these words, and zeroes their models.
        pub(crate) fn zero(&self, pos: usize, len: usize) {
            for w in words(pos, len) {
                self.cells[w].with_mut(|_| ());
                self.headers[w].store(0, Ordering::Relaxed);
            }
        }
    }

    /// A header word. Every access is also recorded as a read of the
    /// word's cell, so that loom checks each atomic header access against
    /// the non-atomic zeroing of the same word (both must be ordered).
    pub(crate) struct HeaderWord<'a> {
        atomic: &'a AtomicU64,
        cell: &'a UnsafeCell<()>,
    }

    impl HeaderWord<'_> {
        pub(crate) fn load(&self, order: Ordering) -> u64 {
            let value = self.atomic.load(order);
            // After the load, so that an Acquire orders it before what the
            // reader does next.
            self.cell.with(|_| ());
            value
        }

        pub(crate) fn store(&self, value: u64, order: Ordering) {
            // Before the store, so that a Release publishes it.
            self.cell.with(|_| ());
            self.atomic.store(value, order)
        }
    }
}
