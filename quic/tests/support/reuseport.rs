//! The alternatives to listener threads: N quinn endpoints, each on its own
//! `SO_REUSEPORT` socket of one address, each with quinn's own socket and
//! I/O. Naive: the kernel picks the socket by a hash of the 4-tuple, so a
//! client that changes its address (migration, NAT rebinding) reaches
//! another endpoint, which does not know its connection. Kernel-steered: a
//! classic-BPF program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`,
//! no privilege needed; mpring's `ShardCids::attach_reuseport_steering`)
//! reads the shard from the destination CID, as the listeners'
//! `QuicSteering` does, and the endpoints issue shard CIDs.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use mpring::udp::steer::ShardCids;
use mpring_quic::{ShardCidGenerator, SHARD_CID_LEN};

/// `n` UDP sockets bound to one address with `SO_REUSEPORT`
/// (`mpring::udp::reuseport_group`), with 4 MiB of receive buffer each;
/// `addr` with port 0 gets a free port, which the others then share. The
/// kernel's group holds them in this order (what a reuseport BPF program's
/// result indexes).
pub fn reuseport_sockets(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    let sockets = mpring::udp::reuseport_group(addr, n)?;
    for socket in &sockets {
        socket2::SockRef::from(socket).set_recv_buffer_size(4 << 20)?;
    }
    Ok(sockets)
}

/// Attaches to `socket`'s reuseport group the kernel's CID steering for
/// `shards` shards of `SHARD_CID_LEN`-byte CIDs
/// (`ShardCids::attach_reuseport_steering`).
pub fn attach_cid_steering(socket: &UdpSocket, shards: usize) -> io::Result<()> {
    ShardCids::new(shards, SHARD_CID_LEN)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .attach_reuseport_steering(socket)
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
