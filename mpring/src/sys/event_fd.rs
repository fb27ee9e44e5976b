//! The kernel object behind the readiness fd: a non-blocking Linux
//! eventfd. Only its counter matters: non-zero is readable. Its loom
//! stand-in is in `crate::loom`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes two integers and touches no memory of ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the fd readable (adds one to the counter). Cannot fail short
    /// of 2^64 - 2 unread notifications; a failure would only cost a
    /// wake-up, never memory safety, so it is not reported.
    pub(crate) fn notify(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array to an fd we own.
        let _ = unsafe { libc::write(self.raw(), one.as_ptr().cast(), one.len()) };
    }

    /// Makes the fd unreadable (takes the counter); nothing to do when it
    /// is zero already (the read then fails with `EAGAIN`).
    pub(crate) fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local array from an fd
        // we own.
        let _ = unsafe { libc::read(self.raw(), count.as_mut_ptr().cast(), count.len()) };
    }
}
