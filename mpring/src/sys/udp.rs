//! The system calls of the UDP listeners, and every `unsafe` block they
//! need: sockets with their options (a reuseport group's steering program
//! among them), `poll`, and `recvmmsg` with its control messages. Safe
//! functions only leave this module.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

/// A UDP socket for a listener: non-blocking, `SO_REUSEPORT`, asking for
/// the destination address, the ECN bits, the kernel's drop counter and,
/// with `gro`, coalesced segments. Returns the socket and whether GRO is on
/// (a kernel without it receives one datagram per buffer).
pub(crate) fn listener_socket(
    addr: SocketAddr,
    recv_buffer: usize,
    gro: bool,
) -> io::Result<(UdpSocket, bool)> {
    let socket = reuseport_socket(addr, libc::SOCK_NONBLOCK)?;
    // Best effort: the kernel caps it (rmem_max) without an error.
    set(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        recv_buffer.min(i32::MAX as usize) as libc::c_int,
    )?;
    set(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    if addr.is_ipv4() {
        set(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        set(&socket, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
    } else {
        set(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        set(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
        // IPv4-mapped datagrams on a dual-stack socket: best effort.
        let _ = set(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        let _ = set(&socket, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
    }
    let gro = gro && set(&socket, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    bind(&socket, addr)?;
    Ok((socket, gro))
}

/// An unbound UDP socket for `addr`'s family with `SO_REUSEPORT` set and
/// `flags` (`SOCK_NONBLOCK` or 0) besides `SOCK_CLOEXEC`.
pub(crate) fn reuseport_socket(addr: SocketAddr, flags: libc::c_int) -> io::Result<UdpSocket> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain system call with constant arguments; the result is
    // checked before it is used as a file descriptor.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | flags | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    set(&socket, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    Ok(socket)
}

/// Binds `socket` to `addr`.
pub(crate) fn bind(socket: &UdpSocket, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid socket address of `len` bytes.
    let r = unsafe { libc::bind(socket.as_raw_fd(), ptr::addr_of!(storage).cast(), len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets an integer socket option.
pub(crate) fn set(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid option value of the size passed, on an open socket.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            ptr::addr_of!(value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Attaches a classic-BPF program to the `SO_REUSEPORT` group `socket`
/// belongs to (`SO_ATTACH_REUSEPORT_CBPF`, no privilege needed): the
/// kernel then runs it on every datagram for the group and delivers the
/// datagram to the socket whose index it returns.
pub(crate) fn attach_reuseport_cbpf(
    socket: &UdpSocket,
    program: &[libc::sock_filter],
) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads through it (it copies the program).
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`'s `len` instructions; both live
    // for the call, and the kernel copies the program before it returns.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            ptr::addr_of!(fprog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until `socket` is readable or `timeout_ms` passes; `Ok(false)` on
/// a timeout or an interrupted wait.
pub(crate) fn wait_readable(socket: &UdpSocket, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let r = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
    match r {
        r if r > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// What one received message says besides its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) source: SocketAddr,
    pub(crate) destination: Option<IpAddr>,
    pub(crate) ecn: u8,
    /// The GRO segment size, 0 when the kernel did not coalesce.
    pub(crate) segment_size: u16,
    /// Longer than its buffer: cut by the kernel.
    pub(crate) truncated: bool,
}

/// Control-message room per datagram, with each message's header and
/// padding (`CMSG_SPACE`): the GRO segment size (24 bytes), the drop
/// counter (24), and on a dual-stack socket receiving IPv4 both families'
/// packet info (40 and 32) and traffic class (24 each): 168 at most.
const CONTROL: usize = 192;

/// Buffers and headers for `recvmmsg`, owned by one listener thread and
/// reused for every call.
pub(crate) struct Receiver {
    buffers: Vec<u8>,
    buffer_len: usize,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL / 8]>,
    iovs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// The kernel's drop counter (`SO_RXQ_OVFL`) as last reported.
    pub(crate) kernel_drops: u32,
}

impl Receiver {
    /// Room for `batch` datagrams of up to `buffer_len` bytes each.
    pub(crate) fn new(batch: usize, buffer_len: usize) -> Receiver {
        Receiver {
            buffers: vec![0; batch * buffer_len],
            buffer_len,
            // SAFETY: all-zero is a valid sockaddr_storage.
            names: vec![unsafe { mem::zeroed() }; batch],
            controls: vec![[0; CONTROL / 8]; batch],
            // SAFETY: all-zero is a valid iovec (a null pointer, length
            // 0); `recv` fills them in before use.
            iovs: vec![unsafe { mem::zeroed() }; batch],
            // SAFETY: as above, for mmsghdr.
            headers: vec![unsafe { mem::zeroed() }; batch],
            kernel_drops: 0,
        }
    }

    /// Datagram `i` of the last `recv`.
    pub(crate) fn datagram(&self, i: usize, len: usize) -> &[u8] {
        &self.buffers[i * self.buffer_len..][..len]
    }

    /// One non-blocking `recvmmsg` into every buffer; fills `got` (as many
    /// as arrived) and returns their number. `Ok(0)`: nothing to read.
    pub(crate) fn recv(
        &mut self,
        socket: &UdpSocket,
        got: &mut Vec<Received>,
    ) -> io::Result<usize> {
        got.clear();
        let batch = self.headers.len();
        for i in 0..batch {
            self.iovs[i] = libc::iovec {
                iov_base: self.buffers[i * self.buffer_len..].as_mut_ptr().cast(),
                iov_len: self.buffer_len,
            };
            let hdr = &mut self.headers[i].msg_hdr;
            hdr.msg_name = ptr::addr_of_mut!(self.names[i]).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = ptr::addr_of_mut!(self.iovs[i]);
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = CONTROL as _;
            hdr.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: `batch` headers, each pointing at a live sockaddr_storage,
        // one iovec over `buffer_len` writable bytes of our own buffer and
        // `CONTROL` bytes of 8-aligned control room, all owned by `self`
        // (borrowed mutably for the call); no timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for i in 0..r as usize {
            let header = &self.headers[i];
            let mut received = Received {
                len: header.msg_len as usize,
                source: socket_addr(&self.names[i]),
                destination: None,
                ecn: 0,
                segment_size: 0,
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
            self.control_messages(i, &mut received);
            got.push(received);
        }
        Ok(r as usize)
    }

    /// Reads the control messages of message `i` into `received`.
    fn control_messages(&mut self, i: usize, received: &mut Received) {
        let hdr = &self.headers[i].msg_hdr;
        // SAFETY: `hdr` is a header the kernel just filled: its control
        // pointer and length describe our own control room, in which the
        // kernel wrote well-formed control messages; CMSG_FIRSTHDR and
        // CMSG_NXTHDR stay inside it and return null past the end.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        while !cmsg.is_null() {
            // SAFETY: non-null, inside the control room (see above).
            let c = unsafe { &*cmsg };
            // SAFETY: CMSG_DATA of a message inside the control room.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            match (c.cmsg_level, c.cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    // SAFETY: the kernel writes an in_pktinfo for this type;
                    // unaligned reads, as control data is only 4-aligned.
                    let info = unsafe { ptr::read_unaligned(data.cast::<libc::in_pktinfo>()) };
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    received.destination = Some(ip.into());
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    // SAFETY: an in6_pktinfo for this type (see above).
                    let info = unsafe { ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
                    received.destination = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr).into());
                }
                (libc::IPPROTO_IP, libc::IP_TOS) => {
                    // SAFETY: one byte for IP_TOS.
                    received.ecn = unsafe { *data } & 0b11;
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    // SAFETY: an int for IPV6_TCLASS.
                    let class = unsafe { ptr::read_unaligned(data.cast::<libc::c_int>()) };
                    received.ecn = (class & 0b11) as u8;
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    // SAFETY: an int (the segment size) for UDP_GRO.
                    let size = unsafe { ptr::read_unaligned(data.cast::<libc::c_int>()) };
                    // A single segment is one datagram: no stride needed.
                    if (size as usize) < received.len {
                        received.segment_size = size.clamp(0, u16::MAX as libc::c_int) as u16;
                    }
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    // SAFETY: a u32 (the socket's drop counter).
                    self.kernel_drops = unsafe { ptr::read_unaligned(data.cast::<u32>()) };
                }
                _ => {}
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
    }
}

/// A socket address as the kernel takes it.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address.
            unsafe { ptr::write(ptr::addr_of_mut!(storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { ptr::write(ptr::addr_of_mut!(storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The address the kernel wrote into a `sockaddr_storage`.
fn socket_addr(name: &libc::sockaddr_storage) -> SocketAddr {
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*ptr::addr_of!(*name).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into()
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*ptr::addr_of!(*name).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )
            .into()
        }
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into(),
    }
}
