//! Building a ring: [`Ring::new`] and [`Builder`], and the [`Metadata`]
//! a ring may carry with every entry.

use std::marker::PhantomData;

use crate::error::BuildError;
use crate::loom::Arc;
use crate::ring::Shared;
use crate::{Consumer, Producer};

/// A multi-producer, single-consumer ring of variable-length byte entries.
///
/// The ring itself lives in its handles: [`Ring::new`] (or
/// [`Ring::builder`]) allocates it and returns a [`Producer`] (clone it for
/// every producer thread) and the one [`Consumer`]. It is freed when the
/// last handle is dropped.
///
/// ```
/// let (producer, mut consumer) = mpring::Ring::new(1 << 16)?;
/// producer.push(b"hello")?;
/// assert_eq!(&*consumer.read().unwrap(), b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Ring {
    _handles_only: (),
}

impl Ring {
    /// Builds a ring of `capacity` bytes with the default (8-byte)
    /// alignment, and returns its producer handle and its consumer.
    ///
    /// The largest payload is then `capacity / 2 - 8` bytes
    /// ([`Producer::max_payload`]).
    ///
    /// # Errors
    /// [`BuildError`] when `capacity` is zero, not a power of two, smaller
    /// than 16 bytes, or cannot be allocated. A huge request never aborts
    /// the process.
    ///
    /// ```
    /// use mpring::{BuildError, Ring};
    ///
    /// let (producer, _consumer) = Ring::new(1 << 20)?; // 1 MiB
    /// assert_eq!(producer.max_payload(), (1 << 19) - 8);
    /// assert_eq!(Ring::new(1000).unwrap_err(), BuildError::NotPowerOfTwo { capacity: 1000 });
    /// # Ok::<(), BuildError>(())
    /// ```
    #[allow(clippy::new_ret_no_self)] // like `std::sync::mpsc::channel`: the ring lives in its handles
    pub fn new(capacity: usize) -> Result<(Producer, Consumer), BuildError> {
        Builder::new(capacity).build()
    }

    /// A [`Builder`] for a ring of `capacity` bytes, to set options before
    /// building.
    pub fn builder(capacity: usize) -> Builder {
        Builder::new(capacity)
    }
}

/// The alignment of every entry in the buffer.
///
/// Each entry's span (header + payload) is rounded up to it and each payload
/// starts on it. The header takes one alignment unit, so `Sixteen` costs 8
/// more bytes per entry than `Eight` and gives 16-byte aligned payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alignment {
    /// 8 bytes (the default): the smallest overhead.
    #[default]
    Eight,
    /// 16 bytes: payloads aligned for 128-bit loads and stores.
    Sixteen,
}

impl Alignment {
    /// The alignment in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Alignment::Eight => 8,
            Alignment::Sixteen => 16,
        }
    }
}

/// A record stored with every entry of a ring, outside its payload:
/// chosen with [`Builder::metadata`], given by the producer when it commits
/// and read by the consumer with the entry ([`Entry::meta`](crate::Entry::meta),
/// [`Consumer::read_batch_meta`](crate::Consumer::read_batch_meta)).
///
/// Any `Copy + Send + 'static` type is metadata, for example a struct with
/// a datagram's source and destination address, ECN bits, GRO segment size,
/// receive time and listener id. Each entry then holds, between its header
/// (one alignment unit) and its payload, `size_of::<M>()` rounded up to the ring's
/// [`Alignment`]; `M`'s own alignment may be at most the ring's. A ring
/// without metadata (`M = ()`, the default) has no such room: its layout and
/// code are those of a plain ring.
///
/// The record is copied in as a whole value and read back as one; nothing
/// is packed by hand, and the consumer never sees a record its producer did
/// not write (an aborted reservation has none, and is never delivered).
pub trait Metadata: Copy + Send + 'static {}

impl<T: Copy + Send + 'static> Metadata for T {}

/// Builds a ring with options other than the defaults.
///
/// ```
/// use mpring::{Alignment, Ring};
///
/// let (producer, _consumer) = Ring::builder(4096).alignment(Alignment::Sixteen).build()?;
/// assert_eq!(producer.max_payload(), 4096 / 2 - 16);
/// # Ok::<(), mpring::BuildError>(())
/// ```
///
/// With a metadata record for every entry:
///
/// ```
/// use std::net::SocketAddr;
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// struct Received {
///     from: SocketAddr,
///     listener: u8,
/// }
///
/// let (producer, mut consumer) = mpring::Ring::builder(1 << 16)
///     .metadata::<Received>()
///     .build()?;
/// let from: SocketAddr = "192.0.2.1:4433".parse().unwrap();
/// producer.push_with(b"datagram", Received { from, listener: 3 })?;
///
/// let entry = consumer.read().unwrap();
/// assert_eq!(&*entry, b"datagram"); // the payload alone
/// assert_eq!(entry.meta(), &Received { from, listener: 3 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<M = ()> {
    capacity: usize,
    alignment: Alignment,
    around: bool,
    high_water: usize,
    _meta: PhantomData<fn() -> M>,
}

impl Builder {
    /// A builder for a ring of `capacity` bytes (a power of two).
    pub fn new(capacity: usize) -> Builder {
        Builder {
            capacity,
            alignment: Alignment::default(),
            around: false,
            high_water: usize::MAX,
            _meta: PhantomData,
        }
    }
}

impl<M: Metadata> Builder<M> {
    /// Sets the alignment of entries (default: [`Alignment::Eight`]).
    pub fn alignment(mut self, alignment: Alignment) -> Builder<M> {
        self.alignment = alignment;
        self
    }

    /// Read-around mode (default off): the consumer delivers committed
    /// entries that lie after reservations still open, and comes back to
    /// each open one when it is committed (or steps over it when aborted).
    ///
    /// A preempted or stuck producer then holds up only its own entries:
    /// entries from other producers keep flowing until the ring is full
    /// (space is released only up to the oldest open reservation, so
    /// nothing is overwritten). Every entry is still delivered once, byte
    /// for byte, and a producer that commits its reservations in the order
    /// it made them sees them delivered in that order; entries of different
    /// producers may come out in commit order rather than reservation order.
    ///
    /// The costs: each reservation stores its header once more (its
    /// length, announced right after the claim); room a shorter commit or an
    /// abort leaves unused is not handed back to the tail but waits for the
    /// consumer (claim what you need, or copy with
    /// [`Producer::push_batch`](crate::Producer::push_batch)); the consumer
    /// reads past at most 32 open reservations at a time (and only when
    /// something was reserved after them).
    /// [`Consumer::open_reservations`](crate::Consumer::open_reservations)
    /// tells how many it is waiting on, and for how long.
    ///
    /// A reservation is read past once its producer has announced it,
    /// right after its claim. One whose producer was preempted between the
    /// two is read past only by a wait's last look before sleeping
    /// ([`wait`](crate::Consumer::wait) and the other blocking reads,
    /// [`poll_ready`](crate::Consumer::poll_ready), and arming the
    /// readiness fd): a consumer that only polls with `read` or
    /// `read_batch` stops there until that producer runs again.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::builder(4096).read_around_open(true).build()?;
    /// let stuck = producer.reserve(100)?; // a listener preempted mid-receive
    /// producer.push(b"from another listener")?;
    /// assert_eq!(&*consumer.read().unwrap(), b"from another listener");
    /// assert_eq!(consumer.open_reservations().0, 1);
    /// stuck.commit();
    /// assert_eq!(consumer.read().unwrap().len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_around_open(mut self, on: bool) -> Builder<M> {
        self.around = on;
        self
    }

    /// Sets the ring's high-water mark (default: none): once more than
    /// `bytes` of it are in use, [`Producer::above_high_water`](crate::Producer::above_high_water)
    /// says so, and producers can refuse work they may shed (a QUIC
    /// listener: Initial packets of new connections) before the ring is
    /// full, keeping the rest for established connections. Refuse with
    /// [`Reservation::refuse`](crate::Reservation::refuse), counted apart
    /// from `Full` ([`Producer::refused_count`](crate::Producer::refused_count)).
    ///
    /// Only advice: nothing is refused unless a producer asks. A mark at or
    /// above the capacity is never passed. Bytes in use include entries the
    /// consumer has read but not released yet (up to an eighth of the
    /// ring, more behind open reservations in read-around mode), so the
    /// mark trips a little early rather than late. A refused reservation
    /// is an abort: like one, it may wake a sleeping consumer for nothing.
    ///
    /// ```
    /// let (producer, _consumer) = mpring::Ring::builder(1024).high_water_mark(512).build()?;
    /// while !producer.above_high_water() {
    ///     producer.push(&[0; 100])?; // an established connection's packet
    /// }
    /// // An Initial packet arrives: shed it, and keep room for the rest.
    /// let initial = producer.reserve(100)?;
    /// initial.refuse();
    /// assert_eq!(producer.refused_count(), 1);
    /// assert!(producer.free_bytes() >= 400);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn high_water_mark(mut self, bytes: usize) -> Builder<M> {
        self.high_water = bytes;
        self
    }

    /// Gives every entry a metadata record of type `N` (see [`Metadata`]):
    /// producers commit with the `_with` methods
    /// ([`Producer::push_with`], [`Reservation::commit_with`](crate::Reservation::commit_with),
    /// [`BatchReservation::commit_with`](crate::BatchReservation::commit_with)),
    /// and the consumer reads it with the entry.
    pub fn metadata<N: Metadata>(self) -> Builder<N> {
        Builder {
            capacity: self.capacity,
            alignment: self.alignment,
            around: self.around,
            high_water: self.high_water,
            _meta: PhantomData,
        }
    }

    /// Allocates the ring (zeroed, once) and returns its producer handle and
    /// its consumer.
    ///
    /// # Errors
    /// [`BuildError`] when the capacity is zero, not a power of two, too
    /// small for two entries' headers and metadata, cannot be allocated, or
    /// when the metadata type's alignment exceeds the entries'. Never aborts
    /// the process on a huge request.
    pub fn build(self) -> Result<(Producer<M>, Consumer<M>), BuildError> {
        let ring = Arc::new(Shared::<M>::new(
            self.capacity,
            self.alignment.bytes(),
            self.around,
            self.high_water,
        )?);
        Ok((Producer::new(ring.clone()), Consumer::new(ring)))
    }
}
