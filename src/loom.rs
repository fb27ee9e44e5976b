//! The one place that chooses between real atomics and loom's models.
//!
//! Under `cfg(mpring_loom)` the ring runs on loom's atomics and `Arc`, and every
//! 8-byte word of the buffer gets a loom-tracked cell so that loom sees the
//! payload bytes as memory and reports data races on them. Without it the
//! tracking compiles to nothing.
//!
//! The cfg is named `mpring_loom`, not `loom`, so that turning it on does
//! not also switch other crates of the build (tokio, in the dev-dependencies)
//! to their own loom modes.

#[cfg(mpring_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(mpring_loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(mpring_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(mpring_loom))]
pub(crate) use std::sync::Arc;

/// Called in every retry loop: a CPU pause hint, or a loom yield so that
/// the model checker can schedule the thread we are waiting for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(mpring_loom)]
    loom::thread::yield_now();
    #[cfg(not(mpring_loom))]
    std::hint::spin_loop();
}

#[cfg(mpring_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(mpring_loom)]
pub(crate) use loom::thread::{current, Thread};

#[cfg(not(mpring_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(mpring_loom))]
pub(crate) use std::thread::{current, Thread};

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
