//! The process-wide memory barrier that lets producers publish without a
//! fence (Linux's `membarrier(2)`, private expedited).
//!
//! NoLostWakeUp (see `ring/mod.rs`) is a store-load pair: the consumer
//! stores its sleeping flag then loads a header, a producer stores a header
//! then loads the flag, and each side needs a full barrier between its two
//! steps. Producers publish millions of times a second; the consumer
//! announces sleep rarely. So the consumer issues [`heavy`]: when it
//! returns, every other thread of the process that was running has
//! executed a full barrier (and one that was not running did at its
//! context switch). A producer then needs only a compiler barrier: if its
//! flag load comes after the barrier point in its program order, the flag
//! (stored before the call) is visible to it; if it comes before, so did
//! its header store, which the barrier made visible before `heavy`
//! returned, so the consumer's re-check sees the header. The same pairing
//! is known from liburcu and folly's `asymmetric_thread_fence_heavy`.
//!
//! Where the call is missing (other systems, Miri, loom, a seccomp filter
//! that refuses it), [`register`] says so and both sides use SeqCst fences,
//! the pairing that the loom models check.

use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const MISSING: u8 = 2;

/// Whether this process is registered for [`heavy`] barriers.
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Registers the process for expedited private barriers once; `true` when
/// [`heavy`] works here.
pub(crate) fn register() -> bool {
    // Relaxed: a cached answer; a race only registers twice (harmless).
    match STATE.load(Ordering::Relaxed) {
        AVAILABLE => return true,
        MISSING => return false,
        _ => {}
    }
    let ok = imp::register();
    STATE.store(if ok { AVAILABLE } else { MISSING }, Ordering::Relaxed);
    ok
}

/// A full memory barrier on every running thread of this process; `false`
/// if the system refused it (the caller then falls back to fences).
pub(crate) fn heavy() -> bool {
    imp::heavy()
}

#[cfg(all(target_os = "linux", not(miri), not(mpring_loom)))]
mod imp {
    const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;

    fn membarrier(cmd: libc::c_long) -> bool {
        // SAFETY: membarrier(2) takes two integers (command, flags) and a
        // CPU id that these commands ignore; it touches no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            ) == 0
        }
    }

    pub(super) fn register() -> bool {
        membarrier(REGISTER_PRIVATE_EXPEDITED)
    }

    pub(super) fn heavy() -> bool {
        membarrier(PRIVATE_EXPEDITED)
    }
}

#[cfg(not(all(target_os = "linux", not(miri), not(mpring_loom))))]
mod imp {
    pub(super) fn register() -> bool {
        false
    }

    pub(super) fn heavy() -> bool {
        false
    }
}
