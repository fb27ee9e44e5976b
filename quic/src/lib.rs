//! A quinn socket whose receive path runs through mpring: the `udp`
//! feature's listener threads (`SO_REUSEPORT`, `recvmmsg`, GRO) feed a
//! ring, and quinn's endpoint driver drains it. [`RingSocket`] implements
//! `quinn::AsyncUdpSocket`; the module docs of [`socket`] show a server.
//! [`Shards`] runs N quinn endpoints, one per core, behind one listener
//! group that steers each datagram by its connection ID ([`shards`]), or
//! with each shard receiving on a socket of its own and forwarding to the
//! others only what their connection IDs name.
//!
//! A crate of its own so that the library keeps its MSRV (1.75; this crate
//! needs 1.85, as quinn's dependencies do) and its dependencies.
//!
//! A server of 4 shards, each an endpoint on a thread of its own that
//! receives on a socket of its own, which the kernel picks by connection
//! ID:
//!
//! ```no_run
//! # fn run(server_config: quinn::ServerConfig) -> std::io::Result<()> {
//! let shards = mpring_quic::Shards::builder("[::]:4433".parse().unwrap(), server_config)
//!     .shards(4)
//!     .receive_in_shards(true)
//!     .bind()?;
//! shards.serve(|shard, connection| async move {
//!     while let Ok(datagram) = connection.read_datagram().await {
//!         // on shard `shard`'s thread: echo it
//!         let _ = (connection.send_datagram(datagram), shard);
//!     }
//! });
//! # Ok(())
//! # }
//! ```

pub mod cid;
mod own_socket;
pub mod shards;
pub mod socket;
mod udp;

pub use cid::ShardCidGenerator;
pub use shards::{Shards, ShardsBuilder, SHARD_CID_LEN};
pub use socket::{is_quic_initial, RingSocket, RingSocketBuilder, DEFAULT_RING_BYTES};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
