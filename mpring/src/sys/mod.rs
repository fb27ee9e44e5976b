//! Every system call of the crate, each behind a safe function, with the
//! SAFETY comment of its `unsafe` block beside it:
//! - [`barrier`]: `membarrier(2)`, the consumer's process-wide barrier
//!   (the asymmetric pairing of NoLostWakeUp);
//! - [`event_fd`]: `eventfd(2)` and its `read` / `write`, the readiness fd;
//! - [`udp`] (feature `udp`): the listeners' sockets and options, `poll`,
//!   and `recvmmsg` with its control messages.
//!
//! The protocol itself makes no system call: producers publish with plain
//! atomics and only wake a sleeping consumer through `crate::sleep`, which
//! calls in here.

pub(crate) mod barrier;
#[cfg(all(target_os = "linux", not(mpring_loom)))]
pub(crate) mod event_fd;
#[cfg(all(feature = "udp", target_os = "linux"))]
pub(crate) mod udp;
