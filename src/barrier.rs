//! The store-load barrier pair of the wake-up protocol.
//!
//! A producer stores a header, then reads whether the consumer sleeps; the
//! consumer marks itself sleeping, then reads the header again. Each side
//! needs its store ordered before its load (a Dekker pattern), which costs
//! a full fence. Producers commit all the time and the consumer sleeps
//! rarely, so on Linux the cost moves to the consumer: it issues
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which runs a full barrier
//! on every CPU running a thread of this process, and producers need only a
//! compiler fence. Where `membarrier` is unavailable (other systems, a
//! kernel or sandbox without it, loom, Miri) both sides use `fence(SeqCst)`.

use crate::loom::Ordering;

/// Which barriers this process can use; decided once per ring.
pub(crate) struct Barrier {
    membarrier: bool,
}

impl Barrier {
    pub(crate) fn new() -> Barrier {
        Barrier {
            membarrier: membarrier::register(),
        }
    }

    /// The producer's side: orders its header store before its load of the
    /// consumer's sleeping flag, paired with [`Barrier::heavy`].
    #[inline]
    pub(crate) fn light(&self) {
        if self.membarrier {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            crate::loom::fence(Ordering::SeqCst);
        }
    }

    /// The consumer's side: orders its sleeping flag store before its
    /// re-check of the header, paired with every producer's
    /// [`Barrier::light`].
    pub(crate) fn heavy(&self) {
        if self.membarrier {
            membarrier::expedited();
        } else {
            crate::loom::fence(Ordering::SeqCst);
        }
    }
}

#[cfg(all(target_os = "linux", not(mpring_loom), not(miri)))]
mod membarrier {
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    /// Registers the process for expedited private barriers (idempotent).
    pub(super) fn register() -> bool {
        // SAFETY: `membarrier` takes two integers here and touches no
        // memory of ours; failure is reported by the return value.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
            ) == 0
        }
    }

    /// A full barrier on every CPU running a thread of this process.
    pub(super) fn expedited() {
        // SAFETY: as in `register`.
        let done =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) };
        // Registration succeeded, so the kernel supports the command: a
        // failure here would leave producers without their barrier.
        assert_eq!(done, 0, "membarrier failed after registration");
    }
}

#[cfg(not(all(target_os = "linux", not(mpring_loom), not(miri))))]
mod membarrier {
    pub(super) fn register() -> bool {
        false
    }

    pub(super) fn expedited() {
        unreachable!("membarrier is only used where registration succeeded")
    }
}
