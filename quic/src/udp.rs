//! UDP socket helpers.

use std::io;
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

/// Turns the kernel's UDP GRO on or off on `socket`. quinn-udp's
/// `UdpSocketState::new` turns it on wherever the kernel has it; a socket
/// whose owner asked for none must turn it off again.
pub(crate) fn set_gro(socket: &UdpSocket, on: bool) -> io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: a valid socket, and a c_int option value that lives for the
    // call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
