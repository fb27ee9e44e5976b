//! A quinn socket whose receive path runs through mpring: the `udp`
//! feature's listener threads (`SO_REUSEPORT`, `recvmmsg`, GRO) feed a
//! ring, and quinn's endpoint driver drains it. [`RingSocket`] implements
//! `quinn::AsyncUdpSocket`; the module docs of [`socket`] show a server.
//! [`Shards`] runs N quinn endpoints, one per core, behind one listener
//! group that steers each datagram by its connection ID ([`shards`]).
//!
//! A crate of its own so that the library keeps its MSRV (quinn needs
//! 1.85) and its dependencies. Not published yet: it also holds the
//! helpers of mpring's quinn comparison and tests.

pub mod cid;
pub mod shards;
pub mod socket;
pub mod udp;

pub use cid::ShardCidGenerator;
pub use shards::*;
pub use socket::*;
