//! A quinn server socket whose receive path runs through mpring: listener
//! threads receive on `SO_REUSEPORT` sockets straight into ring
//! reservations, and quinn's endpoint driver drains the ring.
//!
//! Not published: the receive path of mpring's quinn comparison
//! (`comparison/examples/quinn_echo.rs`) and of its tests.

pub mod socket;
pub mod udp;

pub use socket::*;
