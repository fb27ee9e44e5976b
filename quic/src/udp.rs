//! UDP socket helpers.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking IPv4 UDP socket bound to `addr` with `SO_REUSEPORT`, so
/// that several can share one port (the kernel spreads incoming datagrams
/// over them by a hash of the source address).
pub fn reuseport_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_recv_buffer_size(4 << 20)?;
    socket.set_send_buffer_size(4 << 20)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// `k` such sockets on one loopback port, and that port's address.
pub fn reuseport_group(k: usize) -> io::Result<(Vec<UdpSocket>, SocketAddr)> {
    let first = reuseport_socket((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..k.max(1) {
        sockets.push(reuseport_socket(addr)?);
    }
    Ok((sockets, addr))
}

/// Waits until `socket` is readable or `timeout` passes.
pub fn wait_readable(socket: &UdpSocket, timeout: Duration) {
    poll(socket, libc::POLLIN, timeout.as_millis() as libc::c_int);
}

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
