//! A lock-free, multi-producer single-consumer ring buffer of variable-length
//! byte entries, written and read in place.
//!
//! Built for moving UDP datagrams from several listener threads to one
//! handler thread: producers never wait (a full ring is an immediate,
//! typed error), nothing is allocated after construction, payloads are
//! written straight into the ring (a `recv` can land there) and the consumer
//! reads them where they lie, in batches.
//!
//! ```
//! use std::thread;
//!
//! let (producer, mut consumer) = mpring::Ring::new(1 << 16)?;
//!
//! let listeners: Vec<_> = (0..2u8)
//!     .map(|id| {
//!         let producer = producer.clone();
//!         thread::spawn(move || {
//!             for seq in 0..100u8 {
//!                 // Write in place: reserve, fill, commit.
//!                 let mut entry = loop {
//!                     match producer.reserve(2) {
//!                         Ok(reservation) => break reservation,
//!                         Err(mpring::ReserveError::Full) => thread::yield_now(),
//!                         Err(e) => panic!("{e}"),
//!                     }
//!                 };
//!                 entry.copy_from_slice(&[id, seq]);
//!                 entry.commit();
//!             }
//!         })
//!     })
//!     .collect();
//! drop(producer);
//!
//! let mut next = [0u8; 2];
//! loop {
//!     // Read in place, many entries per release.
//!     let n = consumer.read_batch(64, |entry| {
//!         let (id, seq) = (entry[0] as usize, entry[1]);
//!         assert_eq!(seq, next[id], "per-producer order is kept");
//!         next[id] += 1;
//!     });
//!     if n == 0 && consumer.is_disconnected() && consumer.is_empty() {
//!         break;
//!     }
//! }
//! assert_eq!(next, [100, 100]);
//! # for l in listeners { l.join().unwrap(); }
//! # Ok::<(), mpring::BuildError>(())
//! ```
//!
//! # The buffer
//!
//! ```text
//!  head (consumer)                         tail (producers)
//!    v                                       v
//!  +-----+---------+-----+--------+-----+----+--------------------+-----+
//!  | len | payload | len | payld  |  0  |... |  free (all zero)   | -1  |
//!  +-----+---------+-----+--------+-----+----+--------------------+-----+
//!   committed entry   committed    reserved,                       padding
//!                                  not committed:                  to the end
//!                                  the consumer stops here         of the lap
//! ```
//!
//! One zeroed allocation of `capacity` bytes (a power of two). `head` and
//! `tail` are 64-bit offsets that only grow. A producer claims
//! `header + payload` (rounded up to 8 or 16 bytes) with a CAS on `tail`; a
//! claim that would cross the buffer's end also claims the rest of the lap
//! as padding. It writes its payload in place and publishes it by storing
//! the header word (Release). The consumer loads the header at `head`
//! (Acquire): zero means "not yet", so order is kept; it reads entries in
//! place and zeroes each one right after reading it (all but the cache line
//! it shares with the next entry, zeroed when the consumer releases; an
//! entry of 1 KiB or more read right after an empty poll is zeroed whole
//! at the release), then stores the new `head`: when it has caught up, at
//! the end of a batch, and whenever an eighth of the ring is pending.
//!
//! Each header word is `0` (not ready), `len + 1` (an entry: a 0-byte payload
//! is valid), `-1` (padding) or `-span` (a skipped span: an aborted
//! reservation, or the unused end of one committed shorter).
//!
//! # Metadata and batches
//!
//! A ring built with [`Builder::metadata`] stores a typed record (say the
//! datagram's source address and receive time) with every entry, between
//! its header and its payload; see [`Metadata`]. A producer can claim room
//! for many entries with one CAS: [`Producer::reserve_batch`] (slots to
//! receive into in place) or [`Producer::push_batch`] (a copy into exactly
//! the room the entries need).
//!
//! # Waiting
//!
//! The consumer can block until an entry is ready or a deadline passes
//! ([`Consumer::read_batch_deadline`] and friends), or await the same as a
//! future ([`Consumer::ready`]), with no runtime dependency. Producers pay
//! a fence and the load of a flag per commit; the wake-up itself (a lock
//! and an unpark) only when the consumer actually sleeps. See
//! [`Consumer::wait`].
//!
//! # Guarantees
//! - Every committed entry is read once, byte for byte, in reservation
//!   order (so in commit order for each producer). In read-around mode
//!   ([`Builder::read_around_open`]) an entry committed while an earlier
//!   reservation is still open may come out before it; otherwise the order
//!   is still the reservations' (so a producer that commits its
//!   reservations in the order it made them sees them read in that order).
//!   Two cases read an entry
//!   again, by design: an [`Entry`] leaked with `mem::forget` (it was never
//!   consumed), and the entry a [`Consumer::read_batch`] callback panicked
//!   on. An `Entry` dropped while unwinding counts as consumed.
//! - No panic, leak or drop order leads to undefined behaviour. A leaked
//!   [`Reservation`] (`mem::forget`) blocks the entries reserved after it
//!   (in read-around mode, only once the ring is full).
//! - No heap allocation after [`Ring::new`] on the write and read paths
//!   (a readiness fd or an async waker registers once).

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod batch;
mod builder;
mod consumer;
mod entry;
mod error;
#[cfg(mpring_hooks)]
#[doc(hidden)]
pub mod hooks;
#[cfg(not(mpring_hooks))]
mod hooks;
mod loom;
mod producer;
#[cfg(target_os = "linux")]
mod readiness;
mod reservation;
mod ring;
mod sleep;
mod sys;
#[cfg(all(feature = "udp", target_os = "linux"))]
pub mod udp;
mod wait;
mod wake_handle;

#[cfg(all(feature = "udp", not(target_os = "linux")))]
compile_error!("mpring's `udp` feature (recvmmsg, UDP GRO, IP_PKTINFO) supports Linux only");

pub use batch::{BatchReservation, SlotsMut};
pub use builder::{Alignment, Builder, Metadata, Ring};
pub use consumer::{Consumer, ReadBatch};
pub use entry::Entry;
pub use error::{BuildError, ReserveError, WaitError};
pub use producer::Producer;
pub use reservation::{OwnedReservation, Reservation};
pub use wait::Ready;
pub use wake_handle::WakeHandle;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
