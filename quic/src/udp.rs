//! UDP socket helpers.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Whether `socket` has room to send right now.
pub fn is_writable(socket: &UdpSocket) -> bool {
    poll(socket, libc::POLLOUT, 0)
}

fn poll(socket: &UdpSocket, events: libc::c_short, timeout_ms: libc::c_int) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, timeout_ms) > 0 }
}
