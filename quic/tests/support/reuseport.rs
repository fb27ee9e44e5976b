//! The alternatives to listener threads: N quinn endpoints, each on its own
//! `SO_REUSEPORT` socket of one address, each with quinn's own socket and
//! I/O. Naive: the kernel picks the socket by a hash of the 4-tuple, so a
//! client that changes its address (migration, NAT rebinding) reaches
//! another endpoint, which does not know its connection. Kernel-steered: a
//! classic-BPF program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`,
//! no privilege needed) reads the shard from the destination CID, as the
//! listeners' `QuicSteering` does, and the endpoints issue shard CIDs.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mpring::udp::steer::ShardCids;
use mpring_quic::{ShardCidGenerator, SHARD_CID_LEN};
use socket2::{Domain, Protocol, Socket, Type};

/// `n` UDP sockets bound to one address with `SO_REUSEPORT`; `addr` with
/// port 0 gets a free port, which the others then share. The kernel's group
/// holds them in this order (what a reuseport BPF program's result indexes).
pub fn reuseport_sockets(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.set_recv_buffer_size(4 << 20)?;
        socket.bind(&addr.into())?;
        let socket: UdpSocket = socket.into();
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Attaches to `socket`'s reuseport group a classic-BPF program that picks
/// the socket a datagram goes to from its destination CID, as
/// `QuicSteering` does for listener threads:
/// - a short header: the CID's shard byte (datagram byte 2);
/// - a long header whose DCID has the shards' length: its shard byte (byte 7);
/// - any other long header (a client's first flight): the DCID's first four
///   bytes modulo `shards`, the same for every retransmit.
///
/// A result at or past the group's size (a CID of no shard) makes the
/// kernel fall back to its 4-tuple hash. The program sees the UDP payload
/// from offset 0 (the kernel pulls the UDP header first); a load past the
/// end (a datagram too short for its header) ends it with 0: socket 0.
pub fn attach_cid_steering(socket: &UdpSocket, shards: usize) -> io::Result<()> {
    use libc::{sock_filter, sock_fprog};
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
    const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let program = [
        /* 0 */ op(LD_B_ABS, 0, 0, 0), // A = first byte
        /* 1 */ op(JSET_K, 2, 0, 0x80), // long header: to 4
        /* 2 */ op(LD_B_ABS, 0, 0, 2), // short: A = shard byte
        /* 3 */ op(RET_A, 0, 0, 0),
        /* 4 */ op(LD_B_ABS, 0, 0, 5), // A = DCID length
        /* 5 */ op(JEQ_K, 0, 2, SHARD_CID_LEN as u32), // not a shard CID: to 8
        /* 6 */ op(LD_B_ABS, 0, 0, 7), // A = shard byte
        /* 7 */ op(RET_A, 0, 0, 0),
        /* 8 */ op(LD_W_ABS, 0, 0, 6), // A = DCID's first four bytes
        /* 9 */ op(MOD_K, 0, 0, shards as u32),
        /* 10 */ op(RET_A, 0, 0, 0),
    ];
    let fprog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    // SAFETY: `fprog` points at `program`, both alive for the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const sock_fprog as *const libc::c_void,
            std::mem::size_of::<sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// N quinn server endpoints on N `SO_REUSEPORT` sockets of one address,
/// each on quinn's own socket, made in the current tokio runtime. With
/// `steered`, the group carries [`attach_cid_steering`] and endpoint k
/// issues CIDs of shard k; without, the kernel's 4-tuple hash picks the
/// endpoint and quinn's default CIDs are used.
pub fn reuseport_endpoints(
    addr: SocketAddr,
    n: usize,
    steered: bool,
    server_config: quinn::ServerConfig,
) -> io::Result<Vec<quinn::Endpoint>> {
    let sockets = reuseport_sockets(addr, n)?;
    if steered {
        attach_cid_steering(&sockets[0], n)?;
    }
    let cids = ShardCids::new(n, SHARD_CID_LEN)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    sockets
        .into_iter()
        .enumerate()
        .map(|(shard, socket)| {
            let mut config = quinn::EndpointConfig::default();
            if steered {
                config.cid_generator(
                    ShardCidGenerator::factory(cids, shard)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                );
            }
            quinn::Endpoint::new(
                config,
                Some(server_config.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
        })
        .collect()
}

/// One quinn server endpoint on each of `sockets` (say, a group from
/// [`reuseport_sockets`] that the caller has probed first), on quinn's own
/// I/O, with quinn's default CIDs and no steering: the naive group of
/// [`reuseport_endpoints`], on sockets the caller made. Made in the current
/// tokio runtime.
pub fn endpoints_on(
    sockets: Vec<UdpSocket>,
    server_config: quinn::ServerConfig,
) -> io::Result<Vec<quinn::Endpoint>> {
    sockets
        .into_iter()
        .map(|socket| {
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_config.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
        })
        .collect()
}
