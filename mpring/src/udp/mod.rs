//! Ready-made UDP listeners that feed a ring (feature `udp`, Linux).
//!
//! [`Listeners`] binds K sockets to one address with `SO_REUSEPORT` (the
//! kernel spreads incoming datagrams over them by a hash of the source
//! address) and runs one thread per socket. Each thread waits until its
//! socket is readable, receives up to a batch of datagrams with one
//! `recvmmsg` into buffers of its own, and hands them to the ring with one
//! claim ([`Producer::push_batch_with`]): exactly the room they need, so
//! short datagrams waste no room however many listeners claim at once.
//! Every entry carries a [`UdpMeta`] record: source and destination
//! address, ECN bits, GRO segment size, receive time, listener id.
//!
//! ```no_run
//! use mpring::udp::{Listeners, UdpMeta};
//! use mpring::Ring;
//!
//! let (producer, mut consumer) = Ring::builder(1 << 22).metadata::<UdpMeta>().build()?;
//! let listeners = Listeners::builder("0.0.0.0:4433".parse()?)
//!     .listeners(4)
//!     .gro(true)
//!     .spawn(producer)?;
//!
//! while consumer.wait().is_ok() {
//!     consumer.read_batch_meta(64, |meta, payload| {
//!         for datagram in meta.segments(payload) {
//!             // handle `datagram`, from `meta.source`, to `meta.destination`
//!         }
//!     });
//! }
//! let stats = listeners.shutdown();
//! println!("{} datagrams, {} dropped for a full ring", stats.datagrams, stats.full_drops);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A group can also feed N rings, one consumer each (one datagram handler
//! per core, as HAProxy's QUIC stack runs):
//! [`ListenersBuilder::spawn_steered`] takes N producers and a steering
//! function from a datagram to a ring index, such as
//! [`steer::QuicSteering::steer`] (by QUIC connection ID). Each batch is
//! grouped by ring, with one claim per ring it touches; GRO entries are
//! split where their segments go to different rings; counters are kept per
//! ring ([`UdpStats::rings`]).
//!
//! Socket errors never panic: they are counted ([`UdpStats::errors`]) and
//! the listener goes on. A datagram longer than the buffers is cut by the
//! kernel (`MSG_TRUNC`): it is counted ([`UdpStats::truncated`]) and never
//! delivered. A full ring drops and counts ([`UdpStats::full_drops`]), as a
//! UDP stack does.

pub mod steer;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::{Producer, ReserveError};

use crate::sys::udp::{self as sys, Received, Receiver};

/// `n` UDP sockets bound to `addr` with `SO_REUSEPORT`, in order, as one
/// kernel group: with port 0 the first gets a free port, which the others
/// then share. Blocking, with the system's default buffers, as
/// [`UdpSocket::bind`] makes them; the kernel numbers them in this order,
/// which [`steer::ShardCids::attach_reuseport_steering`] relies on.
///
/// For receiving without listener threads (one socket per handler thread);
/// [`Listeners`] binds its own.
///
/// ```
/// let group = mpring::udp::reuseport_group("127.0.0.1:0".parse()?, 3)?;
/// let addr = group[0].local_addr()?;
/// assert!(group.iter().all(|socket| socket.local_addr().unwrap() == addr));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// The system calls' (an address in use without `SO_REUSEPORT`, say).
pub fn reuseport_group(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    let mut addr = addr;
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = sys::reuseport_socket(addr, 0)?;
        sys::bind(&socket, addr)?;
        addr = socket.local_addr()?;
        group.push(socket);
    }
    Ok(group)
}

/// The record stored with every datagram a [`Listeners`] group receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpMeta {
    /// Who sent it.
    pub source: SocketAddr,
    /// The local address it was sent to (`IP_PKTINFO` / `IPV6_PKTINFO`),
    /// when the kernel said; useful on sockets bound to a wildcard.
    pub destination: Option<IpAddr>,
    /// The ECN bits of its IP header (0 to 3).
    pub ecn: u8,
    /// With GRO: the size of each coalesced segment (the last one may be
    /// shorter); 0 when the entry is one datagram. Read the segments with
    /// [`segments`](UdpMeta::segments).
    pub segment_size: u16,
    /// When the listener received it (right after its `recvmmsg`).
    pub received: Instant,
    /// Which listener thread received it (0 to K - 1).
    pub listener: u16,
}

impl UdpMeta {
    /// The datagrams in an entry's payload: the payload itself, or with GRO
    /// its segments of `segment_size` bytes (the last may be shorter).
    ///
    /// ```
    /// # use mpring::udp::UdpMeta;
    /// # let meta = UdpMeta { source: "127.0.0.1:1".parse().unwrap(), destination: None,
    /// #     ecn: 0, segment_size: 4, received: std::time::Instant::now(), listener: 0 };
    /// let payload = b"abcdefghij"; // three datagrams coalesced by GRO
    /// let datagrams: Vec<&[u8]> = meta.segments(payload).collect();
    /// assert_eq!(datagrams, [&b"abcd"[..], b"efgh", b"ij"]);
    /// ```
    pub fn segments<'a>(&self, payload: &'a [u8]) -> Segments<'a> {
        Segments {
            rest: payload,
            size: match self.segment_size {
                0 => payload.len().max(1),
                size => usize::from(size),
            },
            empty_left: payload.is_empty(),
        }
    }

    /// How many datagrams the entry holds.
    pub fn datagrams(&self, payload_len: usize) -> usize {
        match self.segment_size {
            0 => 1,
            size => payload_len.div_ceil(usize::from(size)).max(1),
        }
    }
}

/// The datagrams of one entry; made by [`UdpMeta::segments`].
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    rest: &'a [u8],
    size: usize,
    /// An empty datagram is still one datagram.
    empty_left: bool,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return std::mem::take(&mut self.empty_left).then_some(self.rest);
        }
        let (segment, rest) = self.rest.split_at(self.size.min(self.rest.len()));
        self.rest = rest;
        Some(segment)
    }
}

/// Counters of a [`Listeners`] group, all listeners together.
///
/// Every datagram received is counted once in `datagrams`, and ends in
/// exactly one of `truncated`, `shed`, `full_drops` or an entry: with GRO
/// off, `entries + shed + full_drops + truncated == datagrams` once the
/// listeners are stopped (with GRO on, an entry may hold several
/// datagrams). Per ring, the same holds without `truncated` (a truncated
/// datagram is never steered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams received from the kernel (each GRO segment counts).
    pub datagrams: u64,
    /// Entries committed to the rings (a GRO entry holds several
    /// datagrams; a GRO entry split between rings makes one entry per
    /// part): the sum over [`rings`](UdpStats::rings).
    pub entries: u64,
    /// Datagrams dropped because their ring was full (or its consumer
    /// gone): the sum over [`rings`](UdpStats::rings).
    pub full_drops: u64,
    /// Datagrams shed above their ring's high-water mark
    /// ([`ListenersBuilder::shed`]); also in the producers' `refused_count`.
    /// The sum over [`rings`](UdpStats::rings).
    pub shed: u64,
    /// Datagrams the kernel dropped before a listener read them (its
    /// receive buffer was full: `SO_RXQ_OVFL`).
    pub kernel_drops: u64,
    /// Datagrams longer than the buffers, cut by the kernel: counted,
    /// never delivered, never steered.
    pub truncated: u64,
    /// Receive or poll errors (the listener goes on).
    pub errors: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub receive_calls: u64,
    /// Readiness waits (`poll`).
    pub polls: u64,
    /// Waits of [`ListenersBuilder::coalesce`] after a drained batch.
    pub coalescing_waits: u64,
    /// Datagrams whose steering function returned an index of no ring
    /// (`>= N`); each was taken to ring `index % N` and counted there
    /// ([`ListenersBuilder::spawn_steered`]). Always 0 with one ring.
    pub out_of_range: u64,
    /// Datagrams whose steering function panicked. The listener caught the
    /// panic, took the datagram to ring `usize::MAX % N` (counted in
    /// `out_of_range` too) and went on ([`ListenersBuilder::spawn_steered`]).
    pub steer_panics: u64,
    /// Datagrams for which the [`shed`](ListenersBuilder::shed) function
    /// panicked. The listener caught the panic, kept the datagram (as not
    /// sheddable) and went on.
    pub shed_panics: u64,
    /// Per ring, in the order of the producers given to
    /// [`spawn_steered`](ListenersBuilder::spawn_steered) (one ring for
    /// [`spawn`](ListenersBuilder::spawn)).
    pub rings: Vec<RingStats>,
}

/// The counters of one ring of a [`Listeners`] group, all listeners
/// together; in [`UdpStats::rings`].
///
/// `datagrams == entries + shed + full_drops` with GRO off, once the
/// listeners are stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingStats {
    /// Datagrams steered to this ring (each GRO segment counts).
    pub datagrams: u64,
    /// Entries committed to this ring.
    pub entries: u64,
    /// Datagrams dropped because this ring was full (or its consumer
    /// gone); the other rings are not affected.
    pub full_drops: u64,
    /// Datagrams shed above this ring's high-water mark.
    pub shed: u64,
}

/// One listener's counters, on a cache line of its own. A listener adds
/// what a `recvmmsg` batch did once per batch.
#[derive(Default)]
struct Counters {
    datagrams: AtomicU64,
    kernel_drops: AtomicU64,
    truncated: AtomicU64,
    errors: AtomicU64,
    receive_calls: AtomicU64,
    polls: AtomicU64,
    coalescing_waits: AtomicU64,
    out_of_range: AtomicU64,
    steer_panics: AtomicU64,
    shed_panics: AtomicU64,
    /// Per ring, each on a cache line of its own.
    rings: Box<[CachePadded<RingCounters>]>,
}

/// One listener's counters for one ring.
#[derive(Default)]
struct RingCounters {
    datagrams: AtomicU64,
    entries: AtomicU64,
    full_drops: AtomicU64,
    shed: AtomicU64,
}

impl Counters {
    fn new(rings: usize) -> Counters {
        Counters {
            rings: (0..rings).map(|_| CachePadded::default()).collect(),
            ..Counters::default()
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            // Relaxed: a statistic, read as a snapshot; the join in
            // `shutdown` orders the final values.
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Options of a [`Listeners`] group; made by [`Listeners::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `spawn` is called"]
pub struct ListenersBuilder {
    addr: SocketAddr,
    listeners: usize,
    batch: usize,
    max_datagram: usize,
    gro: bool,
    recv_buffer: usize,
    shed: Option<fn(&[u8]) -> bool>,
    coalesce: Duration,
    coalesce_after: usize,
}

impl ListenersBuilder {
    /// How many sockets and threads (default 1, at most
    /// [`MAX_LISTENERS`]).
    pub fn listeners(mut self, k: usize) -> ListenersBuilder {
        self.listeners = k;
        self
    }

    /// Datagrams per `recvmmsg` (default 16, at most 1,024).
    pub fn batch(mut self, batch: usize) -> ListenersBuilder {
        self.batch = batch;
        self
    }

    /// The longest datagram kept whole (default 2,048 bytes); longer ones
    /// are counted as [`truncated`](UdpStats::truncated) and dropped.
    pub fn max_datagram(mut self, len: usize) -> ListenersBuilder {
        self.max_datagram = len;
        self
    }

    /// Asks the kernel to coalesce datagrams of one flow into one entry
    /// (UDP GRO; default off). Each buffer is then 64 KiB, so a ring needs
    /// `max_payload() >= 65,535` (at least 256 KiB).
    pub fn gro(mut self, on: bool) -> ListenersBuilder {
        self.gro = on;
        self
    }

    /// Each socket's receive buffer in bytes (default 4 MiB; the kernel
    /// caps it at `net.core.rmem_max`).
    pub fn recv_buffer(mut self, bytes: usize) -> ListenersBuilder {
        self.recv_buffer = bytes;
        self
    }

    /// Admission: while the ring is above its
    /// [high-water mark](crate::Builder::high_water_mark), datagrams for
    /// which `sheddable` returns `true` (for a QUIC server: Initial
    /// packets, new connections) are dropped before they take room, and
    /// counted as [`shed`](UdpStats::shed), apart from `full_drops`. The
    /// rest keeps the room left. A listener looks at the mark once per
    /// `recvmmsg` batch. Without a mark on the ring, nothing is shed. A
    /// panic in `sheddable` is a bug of the caller's: the listener catches
    /// it (after the panic hook has printed it), keeps the datagram, counts
    /// it in [`UdpStats::shed_panics`] and goes on receiving.
    ///
    /// ```no_run
    /// use mpring::udp::{Listeners, UdpMeta};
    ///
    /// /// A QUIC v1 long-header Initial packet.
    /// fn quic_initial(datagram: &[u8]) -> bool {
    ///     datagram.first().is_some_and(|&b| b & 0xF0 == 0xC0)
    /// }
    ///
    /// let (producer, consumer) = mpring::Ring::builder(1 << 22)
    ///     .metadata::<UdpMeta>()
    ///     .high_water_mark(3 << 20) // 3 of 4 MiB
    ///     .build()?;
    /// let listeners = Listeners::builder("[::]:4433".parse()?)
    ///     .listeners(4)
    ///     .shed(quic_initial)
    ///     .spawn(producer)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shed(mut self, sheddable: fn(&[u8]) -> bool) -> ListenersBuilder {
        self.shed = Some(sheddable);
        self
    }

    /// Receive coalescing: under load, a listener waits `wait` after
    /// each batch it drained instead of waking for the next datagram, so
    /// that what arrives meanwhile comes in with one `recvmmsg` and costs
    /// one wake-up. Default zero: wait for the socket to become readable,
    /// as an idle listener always does. At most [`MAX_COALESCE`]; `spawn`
    /// refuses more.
    ///
    /// Under load means: the wake-up before received at least
    /// [`coalesce_after`](Self::coalesce_after) datagrams (default
    /// [`DEFAULT_COALESCE_AFTER`]), so a peer that waits for each answer
    /// before it sends again (one datagram per wake-up) is never held
    /// back; a wait that receives fewer ends coalescing until a wake-up
    /// receives enough again.
    ///
    /// The consumers are woken the same way: while coalescing, a listener
    /// wakes a ring's sleeping consumer once per drain (at its end, and
    /// at most `wait` apart while a drain lasts), not after every
    /// `recvmmsg` batch. Entries reach the ring as they are received; a
    /// consumer that is awake reads them at once.
    ///
    /// What it trades, as a NIC's interrupt moderation does: a datagram
    /// that arrives during the wait is delayed by up to `wait` (plus the
    /// timer's slack), against a wake-up, a readiness poll and a
    /// `recvmmsg` per batch. A datagram that finds the listener idle is
    /// not delayed. The socket's [`recv_buffer`](Self::recv_buffer) holds
    /// what arrives during a wait: at 1 M datagrams of 1,200 bytes a
    /// second, 300 µs is 360 KB of payload, and more of the kernel's
    /// accounting (which counts its buffers); past it the kernel drops,
    /// counted in
    /// [`kernel_drops`](UdpStats::kernel_drops). On 2 busy cores (BENCHMARKS.md, "Receive coalescing"),
    /// 300 µs took the batches of a QUIC server's listener from 16-20 to
    /// 51-55 datagrams and its CPU per datagram down by 37-53%.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mpring::udp::{ConfigError, Listeners, ListenersError, UdpMeta, MAX_COALESCE};
    ///
    /// let (producer, _consumer) = mpring::Ring::builder(1 << 16).metadata::<UdpMeta>().build()?;
    /// let too_long = Listeners::builder("127.0.0.1:0".parse()?)
    ///     .coalesce(Duration::from_secs(1))
    ///     .spawn(producer.clone());
    /// assert!(matches!(
    ///     too_long,
    ///     Err(ListenersError::Config(ConfigError::Coalesce { max: MAX_COALESCE, .. }))
    /// ));
    /// let listeners = Listeners::builder("127.0.0.1:0".parse()?)
    ///     .coalesce(Duration::from_micros(300))
    ///     .spawn(producer)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn coalesce(mut self, wait: Duration) -> ListenersBuilder {
        self.coalesce = wait;
        self
    }

    /// The fewest datagrams a wake-up must receive for the listener to
    /// [`coalesce`](Self::coalesce) after it (GRO segments each count).
    /// Default [`DEFAULT_COALESCE_AFTER`]; 0 and 1 both coalesce after any
    /// wake-up that received a datagram, which holds back a peer that
    /// sends its next datagram only when its last one was answered: each
    /// of them then waits out a `wait`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mpring::udp::{Listeners, UdpMeta};
    ///
    /// let (producer, _consumer) = mpring::Ring::builder(1 << 16).metadata::<UdpMeta>().build()?;
    /// let listeners = Listeners::builder("127.0.0.1:0".parse()?)
    ///     .coalesce(Duration::from_micros(300))
    ///     .coalesce_after(32) // only once a wake-up finds 32 datagrams waiting
    ///     .spawn(producer)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn coalesce_after(mut self, datagrams: usize) -> ListenersBuilder {
        self.coalesce_after = datagrams;
        self
    }

    /// The options alone, before any system call.
    fn check(&self) -> Result<(), ConfigError> {
        if self.listeners == 0 {
            return Err(ConfigError::NoListeners);
        }
        if self.listeners > MAX_LISTENERS {
            return Err(ConfigError::TooManyListeners {
                listeners: self.listeners,
                max: MAX_LISTENERS,
            });
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(ConfigError::Batch {
                batch: self.batch,
                max: MAX_BATCH,
            });
        }
        if self.max_datagram == 0 {
            return Err(ConfigError::ZeroMaxDatagram);
        }
        if self.coalesce > MAX_COALESCE {
            return Err(ConfigError::Coalesce {
                wait: self.coalesce,
                max: MAX_COALESCE,
            });
        }
        Ok(())
    }

    /// Bytes of one receive buffer, when GRO is asked for.
    fn buffer_len(&self) -> usize {
        if self.gro {
            self.max_datagram.max(usize::from(u16::MAX))
        } else {
            self.max_datagram
        }
    }

    /// Binds the sockets and starts one thread each, feeding `producer`'s
    /// ring.
    ///
    /// # Errors
    /// [`ListenersError::Config`] for options that can never work (checked
    /// before any socket is made): zero listeners or more than
    /// [`MAX_LISTENERS`], a batch of 0 or above 1,024, a zero
    /// `max_datagram`, or a ring whose largest payload is
    /// below one buffer (with GRO asked for, a buffer is 64 KiB, whether
    /// or not the kernel has GRO). [`ListenersError::Io`] for what the
    /// system refuses: creating, binding or configuring a socket.
    ///
    /// ```
    /// use mpring::udp::{ConfigError, Listeners, ListenersError, UdpMeta};
    ///
    /// let (producer, _consumer) = mpring::Ring::builder(1 << 16).metadata::<UdpMeta>().build()?;
    /// let refused = Listeners::builder("127.0.0.1:0".parse()?).listeners(0).spawn(producer);
    /// assert!(matches!(refused, Err(ListenersError::Config(ConfigError::NoListeners))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn(self, producer: Producer<UdpMeta>) -> Result<Listeners, ListenersError> {
        self.check()?;
        let (max_payload, buffer) = (producer.max_payload(), self.buffer_len());
        if max_payload < buffer {
            return Err(ConfigError::RingTooSmall {
                max_payload,
                buffer,
            }
            .into());
        }
        // One ring: no steering function is ever called.
        self.start(vec![producer], None)
    }

    /// Binds the sockets and starts one thread each, feeding N rings, one
    /// per producer: each datagram goes to ring `steer(meta, datagram)`.
    ///
    /// Each listener receives a batch with one `recvmmsg`, steers every
    /// datagram, groups the batch by ring and hands each ring its part
    /// with one claim of exactly the room it needs
    /// ([`Producer::push_batch_with`]), the datagrams of a ring in the
    /// order they were received. A full ring drops and counts its own
    /// datagrams ([`RingStats::full_drops`]); the other rings go on.
    ///
    /// - **Out of range**: an index `>= N` never panics and never loses
    ///   the datagram: it goes to ring `index % N` and is counted in
    ///   [`UdpStats::out_of_range`].
    /// - **A panic** in `steer` is a bug of the caller's; the listener
    ///   catches it (after the panic hook has printed it), takes the
    ///   datagram to ring `usize::MAX % N` as an out-of-range index, counts
    ///   it in [`UdpStats::steer_panics`] and goes on receiving. (Built with
    ///   `panic = "abort"`, the process aborts instead.)
    /// - **GRO**: an entry of coalesced segments is one flow, but its
    ///   segments may carry different QUIC connection IDs: `steer` is
    ///   called on each segment (with `meta.segment_size` 0: it sees one
    ///   datagram), and the entry is split where consecutive segments go
    ///   to different rings. Each part is one entry of contiguous
    ///   segments, in order: a part of several segments keeps the entry's
    ///   `segment_size` (a final short segment stays last in its part), a
    ///   part of one segment has `segment_size` 0. An entry whose
    ///   segments all go to one ring is not split.
    /// - **Shedding** ([`shed`](Self::shed)) looks at each ring's own
    ///   high-water mark, once per batch for each ring the batch touches.
    /// - A ring whose consumer is gone drops its datagrams (counted as
    ///   `full_drops`); a listener stops once every ring's consumer is gone.
    ///
    /// `steer` runs on the listener threads, once per datagram, and should
    /// be cheap and never block. With one producer it is never called.
    ///
    /// ```no_run
    /// use mpring::udp::steer::{QuicSteering, ShardCids};
    /// use mpring::udp::{Listeners, UdpMeta};
    /// use mpring::Ring;
    ///
    /// // 4 QUIC endpoints, one per ring; each issues 8-byte CIDs that name
    /// // its shard (ShardCids::generate), so each datagram of a connection
    /// // reaches the endpoint that owns it.
    /// let steering = QuicSteering::new(ShardCids::new(4, 8)?);
    /// let mut producers = Vec::new();
    /// let mut consumers = Vec::new();
    /// for _ in 0..steering.shards() {
    ///     let (producer, consumer) = Ring::builder(1 << 22).metadata::<UdpMeta>().build()?;
    ///     producers.push(producer);
    ///     consumers.push(consumer);
    /// }
    /// let listeners = Listeners::builder("0.0.0.0:4433".parse()?)
    ///     .listeners(2)
    ///     .gro(true)
    ///     .spawn_steered(producers, move |meta, datagram| steering.steer(meta, datagram))?;
    ///
    /// // One handler thread per ring.
    /// let handlers: Vec<_> = consumers
    ///     .into_iter()
    ///     .map(|mut consumer| {
    ///         std::thread::spawn(move || {
    ///             while consumer.wait().is_ok() {
    ///                 consumer.read_batch_meta(64, |meta, payload| {
    ///                     for datagram in meta.segments(payload) {
    ///                         // this shard's endpoint handles `datagram`
    ///                     }
    ///                 });
    ///             }
    ///         })
    ///     })
    ///     .collect();
    /// // ...
    /// let stats = listeners.shutdown(); // the handlers see their stream end
    /// for (shard, ring) in stats.rings.iter().enumerate() {
    ///     println!("shard {shard}: {} datagrams, {} dropped", ring.datagrams, ring.full_drops);
    /// }
    /// for handler in handlers {
    ///     handler.join().unwrap();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn), and for the rings
    /// ([`ListenersError::Config`], before any socket is made): no
    /// producer ([`ConfigError::NoRings`]), two producers of one ring
    /// ([`ConfigError::SameRing`]), a ring whose largest payload is below
    /// one buffer ([`ConfigError::SteeredRingTooSmall`], naming the ring).
    pub fn spawn_steered<F>(
        self,
        producers: Vec<Producer<UdpMeta>>,
        steer: F,
    ) -> Result<Listeners, ListenersError>
    where
        F: Fn(&UdpMeta, &[u8]) -> usize + Send + Sync + 'static,
    {
        self.check()?;
        if producers.is_empty() {
            return Err(ConfigError::NoRings.into());
        }
        let buffer = self.buffer_len();
        for (ring, producer) in producers.iter().enumerate() {
            if let Some(first) = producers[..ring]
                .iter()
                .position(|p| Arc::ptr_eq(&p.ring, &producer.ring))
            {
                return Err(ConfigError::SameRing {
                    first,
                    second: ring,
                }
                .into());
            }
            let max_payload = producer.max_payload();
            if max_payload < buffer {
                return Err(ConfigError::SteeredRingTooSmall {
                    ring,
                    max_payload,
                    buffer,
                }
                .into());
            }
        }
        let steer: Option<Arc<SteerFn>> = match producers.len() {
            1 => None,
            _ => Some(Arc::new(steer)),
        };
        self.start(producers, steer)
    }

    /// Binds the sockets and starts the threads, once the options passed.
    fn start(
        self,
        producers: Vec<Producer<UdpMeta>>,
        steer: Option<Arc<SteerFn>>,
    ) -> Result<Listeners, ListenersError> {
        let mut sockets = Vec::with_capacity(self.listeners);
        let (first, gro) = sys::listener_socket(self.addr, self.recv_buffer, self.gro)?;
        let local = first.local_addr()?;
        sockets.push(first);
        for _ in 1..self.listeners {
            sockets.push(sys::listener_socket(local, self.recv_buffer, gro)?.0);
        }
        let buffer_len = if gro {
            self.buffer_len()
        } else {
            self.max_datagram
        };
        let send = sockets[0].try_clone()?;
        let rings = producers.len();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: (0..self.listeners)
                .map(|_| CachePadded::new(Counters::new(rings)))
                .collect(),
            rings,
        });
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(id, socket)| {
                let listener = Listener {
                    id: id as u16,
                    socket,
                    producers: producers.clone(),
                    steer: steer.clone(),
                    batch: self.batch,
                    buffer_len,
                    gro,
                    shed: self.shed,
                    coalesce: self.coalesce,
                    coalesce_after: self.coalesce_after.max(1),
                    shared: shared.clone(),
                };
                thread::Builder::new()
                    .name(format!("mpring-udp-{id}"))
                    .spawn(move || listener.run())
            })
            .collect::<io::Result<Vec<_>>>();
        let threads = match threads {
            Ok(threads) => threads,
            Err(e) => {
                // Relaxed: a flag with no data behind it; the threads
                // started so far see it within their next poll timeout.
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        Ok(Listeners {
            threads,
            shared,
            local,
            send,
            gro,
        })
    }
}

/// A listener group's steering function, shared by its threads.
type SteerFn = dyn Fn(&UdpMeta, &[u8]) -> usize + Send + Sync;

/// Most datagrams one `recvmmsg` of a listener may receive.
const MAX_BATCH: usize = 1024;

/// The longest [`ListenersBuilder::coalesce`] wait: longer ones would
/// hold datagrams for what a client sees as a lost packet, and keep
/// `shutdown` waiting.
pub const MAX_COALESCE: Duration = Duration::from_millis(10);

/// The most listeners of one group: [`UdpMeta::listener`] is a `u16`.
pub const MAX_LISTENERS: usize = 1 << 16;

/// How many datagrams a wake-up must receive, by default, before a
/// listener [coalesces](ListenersBuilder::coalesce): more than a peer
/// that waits for each answer sends at once, fewer than the 16-20 a
/// QUIC server's listener found per `recvmmsg` under load without
/// coalescing (BENCHMARKS.md, "Receive coalescing").
pub const DEFAULT_COALESCE_AFTER: usize = 8;

/// Why a [`ListenersBuilder`] refused its options: each variant names the
/// option that can never work, so a caller can match on it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`ListenersBuilder::listeners`] was 0.
    NoListeners,
    /// [`ListenersBuilder::listeners`] was above `max`: a record names
    /// its listener with a `u16` ([`UdpMeta::listener`]).
    TooManyListeners {
        /// The listeners asked for.
        listeners: usize,
        /// The most listeners of one group.
        max: usize,
    },
    /// [`ListenersBuilder::batch`] was 0 or above `max`.
    Batch {
        /// The batch asked for.
        batch: usize,
        /// The largest batch.
        max: usize,
    },
    /// [`ListenersBuilder::max_datagram`] was 0.
    ZeroMaxDatagram,
    /// [`ListenersBuilder::coalesce`] was above [`MAX_COALESCE`].
    Coalesce {
        /// The wait asked for.
        wait: Duration,
        /// The longest wait.
        max: Duration,
    },
    /// The ring's largest payload is below one receive buffer (the
    /// largest datagram, or 64 KiB with GRO): build a larger ring, or
    /// lower `max_datagram` or turn GRO off.
    RingTooSmall {
        /// The ring's largest payload ([`Producer::max_payload`]).
        max_payload: usize,
        /// Bytes of one receive buffer.
        buffer: usize,
    },
    /// [`ListenersBuilder::spawn_steered`] was given no producer.
    NoRings,
    /// [`ListenersBuilder::spawn_steered`] was given two producers of one
    /// ring: the steering would name one ring twice.
    SameRing {
        /// The index of the first producer of that ring.
        first: usize,
        /// The index of the other one.
        second: usize,
    },
    /// One ring of [`ListenersBuilder::spawn_steered`] has a largest
    /// payload below one receive buffer, like
    /// [`RingTooSmall`](ConfigError::RingTooSmall), and this is its index.
    SteeredRingTooSmall {
        /// The index of the ring (of its producer).
        ring: usize,
        /// The ring's largest payload ([`Producer::max_payload`]).
        max_payload: usize,
        /// Bytes of one receive buffer.
        buffer: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoListeners => write!(f, "at least one listener is needed"),
            ConfigError::TooManyListeners { listeners, max } => {
                write!(f, "{listeners} listeners (at most {max})")
            }
            ConfigError::Batch { batch, max } => {
                write!(f, "a batch of {batch} datagrams (1 to {max})")
            }
            ConfigError::ZeroMaxDatagram => write!(f, "a max_datagram of 0 bytes"),
            ConfigError::Coalesce { wait, max } => {
                write!(f, "a coalescing wait of {wait:?} (at most {max:?})")
            }
            ConfigError::RingTooSmall {
                max_payload,
                buffer,
            } => write!(
                f,
                "the ring's largest payload ({max_payload} bytes) is below one receive buffer ({buffer} bytes)"
            ),
            ConfigError::NoRings => write!(f, "at least one ring is needed"),
            ConfigError::SameRing { first, second } => {
                write!(f, "producers {first} and {second} feed the same ring")
            }
            ConfigError::SteeredRingTooSmall {
                ring,
                max_payload,
                buffer,
            } => write!(
                f,
                "ring {ring}'s largest payload ({max_payload} bytes) is below one receive buffer ({buffer} bytes)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why [`ListenersBuilder::spawn`] or
/// [`spawn_steered`](ListenersBuilder::spawn_steered) failed: options that can never work, or
/// the system's refusal. Converts into [`io::Error`] (kind `InvalidInput`
/// for a [`ConfigError`]) for callers that return `io::Result`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenersError {
    /// An option, or the ring, can never work; nothing was created.
    Config(ConfigError),
    /// Creating, binding or configuring a socket failed.
    Io(io::Error),
}

impl fmt::Display for ListenersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenersError::Config(e) => write!(f, "listeners: {e}"),
            ListenersError::Io(e) => write!(f, "listeners: {e}"),
        }
    }
}

impl std::error::Error for ListenersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenersError::Config(e) => Some(e),
            ListenersError::Io(e) => Some(e),
        }
    }
}

impl From<ConfigError> for ListenersError {
    fn from(e: ConfigError) -> ListenersError {
        ListenersError::Config(e)
    }
}

impl From<io::Error> for ListenersError {
    fn from(e: io::Error) -> ListenersError {
        ListenersError::Io(e)
    }
}

impl From<ListenersError> for io::Error {
    fn from(e: ListenersError) -> io::Error {
        match e {
            ListenersError::Config(e) => io::Error::new(io::ErrorKind::InvalidInput, e),
            ListenersError::Io(e) => e,
        }
    }
}

/// K UDP sockets on one address, one listener thread each, feeding a ring
/// ([`ListenersBuilder::spawn`]) or N rings
/// ([`ListenersBuilder::spawn_steered`]); see the [module docs](self).
///
/// Dropping it stops and joins the threads like [`shutdown`](Listeners::shutdown).
pub struct Listeners {
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    local: SocketAddr,
    send: UdpSocket,
    gro: bool,
}

struct Shared {
    stop: AtomicBool,
    counters: Vec<CachePadded<Counters>>,
    /// How many rings the group feeds.
    rings: usize,
}

/// How long a listener waits for readability before it looks at the stop
/// flag again: the longest a shutdown waits.
const POLL_MS: libc::c_int = 10;

impl Listeners {
    /// A builder for a group bound to `addr` (port 0: a free port, the
    /// same for every socket of the group).
    pub fn builder(addr: SocketAddr) -> ListenersBuilder {
        ListenersBuilder {
            addr,
            listeners: 1,
            batch: 16,
            max_datagram: 2048,
            gro: false,
            recv_buffer: 4 << 20,
            shed: None,
            coalesce: Duration::ZERO,
            coalesce_after: DEFAULT_COALESCE_AFTER,
        }
    }

    /// The address every socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the kernel coalesces datagrams (GRO was asked for and is
    /// supported).
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// A socket bound to the group's address, to send from (replies then
    /// come from the address the peers sent to).
    pub fn send_socket(&self) -> &UdpSocket {
        &self.send
    }

    /// How many rings the group feeds (1 for
    /// [`spawn`](ListenersBuilder::spawn)).
    pub fn rings(&self) -> usize {
        self.shared.rings
    }

    /// The counters so far (a snapshot; a listener adds a batch's counts
    /// once it handed the batch over).
    pub fn stats(&self) -> UdpStats {
        let mut s = UdpStats {
            rings: vec![RingStats::default(); self.shared.rings],
            ..UdpStats::default()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for c in &self.shared.counters {
            s.datagrams += load(&c.datagrams);
            s.kernel_drops += load(&c.kernel_drops);
            s.truncated += load(&c.truncated);
            s.errors += load(&c.errors);
            s.receive_calls += load(&c.receive_calls);
            s.polls += load(&c.polls);
            s.coalescing_waits += load(&c.coalescing_waits);
            s.out_of_range += load(&c.out_of_range);
            s.steer_panics += load(&c.steer_panics);
            s.shed_panics += load(&c.shed_panics);
            for (total, r) in s.rings.iter_mut().zip(c.rings.iter()) {
                total.datagrams += load(&r.datagrams);
                total.entries += load(&r.entries);
                total.full_drops += load(&r.full_drops);
                total.shed += load(&r.shed);
            }
        }
        for r in &s.rings {
            s.entries += r.entries;
            s.full_drops += r.full_drops;
            s.shed += r.shed;
        }
        s
    }

    /// Stops every listener (each finishes the batch it holds, so nothing
    /// received is lost), joins the threads and returns the final counters.
    /// The ring's entries stay for the consumer, which sees the stream end
    /// once the last producer handle is gone.
    pub fn shutdown(mut self) -> UdpStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        // Relaxed: a flag; the join below orders everything else.
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A listener never panics on socket errors; if it panicked
            // anyway (a bug), its counters stay as they were.
            let _ = t.join();
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listeners")
            .field("local", &self.local)
            .field("listeners", &self.shared.counters.len())
            .field("rings", &self.shared.rings)
            .field("gro", &self.gro)
            .finish_non_exhaustive()
    }
}

/// One listener thread's state.
struct Listener {
    id: u16,
    socket: UdpSocket,
    /// One per ring, in the order the group was given them.
    producers: Vec<Producer<UdpMeta>>,
    /// `None` with one ring: nothing to steer.
    steer: Option<Arc<SteerFn>>,
    batch: usize,
    buffer_len: usize,
    gro: bool,
    shed: Option<fn(&[u8]) -> bool>,
    coalesce: Duration,
    /// At least 1.
    coalesce_after: usize,
    shared: Arc<Shared>,
}

impl Listener {
    fn run(self) {
        let rings = self.producers.len();
        // Made here: its buffers and headers stay with this thread.
        let mut receiver = Receiver::new(self.batch, self.buffer_len);
        let mut got = Vec::with_capacity(self.batch);
        // One part per datagram, more where a GRO entry is split between
        // rings (up to its segments: the vectors then grow once, to the
        // most a batch needed, and never shrink).
        let parts = match (&self.steer, self.gro) {
            (Some(_), true) => self.batch * 4,
            _ => self.batch,
        };
        let mut spare: Vec<(&'static [u8], UdpMeta)> = Vec::with_capacity(parts);
        let mut spare_grouped: Vec<(&'static [u8], UdpMeta)> =
            Vec::with_capacity(if rings > 1 { parts } else { 0 });
        let mut state = BatchState::new(rings, parts, !self.coalesce.is_zero());
        let counters = &self.shared.counters[usize::from(self.id)];
        // Datagrams the last drain received.
        let mut drained = 0;
        // Relaxed: a flag with nothing behind it.
        while !self.shared.stop.load(Ordering::Relaxed) {
            // Wait before receiving, and never hold ring room while waiting.
            if drained >= self.coalesce_after && !self.coalesce.is_zero() {
                // Under load: let the next batch gather rather than wake for
                // its first datagram; a wait that finds fewer ends this.
                Counters::add(&counters.coalescing_waits, 1);
                thread::sleep(self.coalesce);
            } else {
                Counters::add(&counters.polls, 1);
                match sys::wait_readable(&self.socket, POLL_MS) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => {
                        Counters::add(&counters.errors, 1);
                        thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
            }
            drained = 0;
            // Since when this drain owes consumers a wake-up.
            let mut owed_since: Option<Instant> = None;
            // Drain what is there, a batch per call.
            loop {
                let n = match receiver.recv(&self.socket, &mut got) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(_) => {
                        // ICMP errors reported on the socket, and the like.
                        Counters::add(&counters.errors, 1);
                        break;
                    }
                };
                Counters::add(&counters.receive_calls, 1);
                let received = Instant::now();
                state.begin();
                let (mut datagrams, mut truncated) = (0, 0);
                let mut parts = reuse(spare);
                for (i, r) in got.iter().enumerate() {
                    let meta = self.meta(r, received);
                    let count = meta.datagrams(r.len) as u64;
                    datagrams += count;
                    if r.truncated {
                        truncated += count;
                        continue;
                    }
                    let payload = receiver.datagram(i, r.len);
                    match &self.steer {
                        None => {
                            state.admit(&self.producers, self.shed, 0, payload, meta, &mut parts)
                        }
                        Some(steer) => state.steer(
                            &self.producers,
                            self.shed,
                            &**steer,
                            payload,
                            meta,
                            &mut parts,
                        ),
                    }
                }
                let mut grouped = reuse(spare_grouped);
                state.hand_over(&self.producers, &parts, &mut grouped);
                // While coalescing, the consumers are woken once per drain
                // and at most a wait apart, not after each batch: a consumer
                // that sleeps between batches costs one wake-up per drain.
                let since = *owed_since.get_or_insert(received);
                if received.duration_since(since) >= self.coalesce {
                    state.wake(&self.producers);
                    owed_since = None;
                }
                spare = reuse(parts);
                spare_grouped = reuse(grouped);
                Counters::add(&counters.datagrams, datagrams);
                drained += datagrams as usize;
                Counters::add(&counters.truncated, truncated);
                state.flush(counters);
                let drops = u64::from(receiver.kernel_drops);
                // Relaxed: a statistic (the kernel's running total).
                counters.kernel_drops.store(drops, Ordering::Relaxed);
                if state.live == 0 {
                    return; // every consumer is gone: nobody reads the rings
                }
                // A flood fills every batch: look at the stop flag here
                // too, or a shutdown would wait for the flood to end.
                // Relaxed: as above.
                if n < self.batch || self.shared.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            // Before any wait: wake the consumers this drain still owes.
            state.wake(&self.producers);
        }
    }

    fn meta(&self, r: &Received, received: Instant) -> UdpMeta {
        UdpMeta {
            source: r.source,
            destination: r.destination,
            ecn: r.ecn,
            segment_size: r.segment_size,
            received,
            listener: self.id,
        }
    }
}

/// What one batch did to one ring, added to the shared counters once per
/// batch.
#[derive(Clone, Copy, Default)]
struct Tally {
    datagrams: u64,
    entries: u64,
    full_drops: u64,
    shed: u64,
}

/// A listener's per-ring scratch, made once per thread: nothing on the
/// receive path allocates (but the parts' vectors' one-off growth, see
/// [`Listener::run`]).
struct BatchState {
    /// Per ring: this batch's counts.
    tally: Vec<Tally>,
    /// Per ring: whether it is above its high-water mark, looked at once
    /// per batch, when the batch first sheds to it (`None`: not yet).
    above: Vec<Option<bool>>,
    /// Per ring: its consumer is gone.
    gone: Vec<bool>,
    /// Whether pushes leave waking the consumers to `wake` (while
    /// coalescing); otherwise each push wakes its consumer at once.
    defer_wakes: bool,
    /// Per ring: entries published since its consumer was last woken
    /// (kept across batches: see `wake`).
    unwoken: Vec<bool>,
    /// Rings whose consumer is still there.
    live: usize,
    /// The ring of each part, in receive order (steered groups only).
    tags: Vec<u32>,
    /// The counting sort: where each ring's run starts, and its end last.
    starts: Vec<usize>,
    /// The counting sort: where the next part of each ring goes.
    next: Vec<usize>,
    /// This batch's steering results of no ring.
    out_of_range: u64,
    /// This batch's panics of the steering function.
    steer_panics: u64,
    /// This batch's panics of the shed function.
    shed_panics: u64,
}

impl BatchState {
    fn new(rings: usize, parts: usize, defer_wakes: bool) -> BatchState {
        BatchState {
            defer_wakes,
            tally: vec![Tally::default(); rings],
            above: vec![None; rings],
            gone: vec![false; rings],
            unwoken: vec![false; rings],
            live: rings,
            tags: Vec::with_capacity(if rings > 1 { parts } else { 0 }),
            starts: vec![0; rings + 1],
            next: vec![0; rings],
            out_of_range: 0,
            steer_panics: 0,
            shed_panics: 0,
        }
    }

    fn begin(&mut self) {
        self.tally.fill(Tally::default());
        self.above.fill(None);
        self.tags.clear();
        self.out_of_range = 0;
        self.steer_panics = 0;
        self.shed_panics = 0;
    }

    /// A steering result as a ring: one of no ring goes to `index % N`.
    fn ring(&mut self, index: usize, rings: usize) -> usize {
        if index < rings {
            index
        } else {
            self.out_of_range += 1;
            index % rings
        }
    }

    /// The ring of one datagram: `steer`'s answer, or, when it panics
    /// (a bug of the caller's), the ring an index of `usize::MAX` goes to:
    /// the listener must go on receiving, or every flow the kernel hashes
    /// to its socket would be lost without a word. The panic hook has
    /// printed the panic by then.
    fn ring_of(&mut self, steer: &SteerFn, meta: &UdpMeta, datagram: &[u8], rings: usize) -> usize {
        // The panic is caught between whole `admit`s, so the listener's
        // own parts and tags stay in step.
        match caught(|| steer(meta, datagram)) {
            Some(index) => self.ring(index, rings),
            None => {
                self.steer_panics += 1;
                self.ring(usize::MAX, rings)
            }
        }
    }

    /// Steers one received entry: a datagram, or with GRO coalesced
    /// segments, each steered and the entry split where consecutive
    /// segments go to different rings.
    fn steer<'a>(
        &mut self,
        producers: &[Producer<UdpMeta>],
        shed: Option<fn(&[u8]) -> bool>,
        steer: &SteerFn,
        payload: &'a [u8],
        meta: UdpMeta,
        parts: &mut Vec<(&'a [u8], UdpMeta)>,
    ) {
        let rings = producers.len();
        let size = usize::from(meta.segment_size);
        if size == 0 || payload.len() <= size {
            let ring = self.ring_of(steer, &meta, payload, rings);
            self.admit(producers, shed, ring, payload, meta, parts);
            return;
        }
        // The steering function sees one datagram at a time.
        let one = UdpMeta {
            segment_size: 0,
            ..meta
        };
        // A part of one segment is one datagram; of several, it keeps the
        // segment size (a short segment can only be the entry's last).
        let part = |len: usize| UdpMeta {
            segment_size: if len > size { meta.segment_size } else { 0 },
            ..meta
        };
        let mut current = self.ring_of(steer, &one, &payload[..size], rings);
        let (mut start, mut at) = (0, size);
        while at < payload.len() {
            let end = payload.len().min(at + size);
            let ring = self.ring_of(steer, &one, &payload[at..end], rings);
            if ring != current {
                self.admit(
                    producers,
                    shed,
                    current,
                    &payload[start..at],
                    part(at - start),
                    parts,
                );
                (start, current) = (at, ring);
            }
            at = end;
        }
        let meta = if start == 0 {
            meta // not split
        } else {
            part(payload.len() - start)
        };
        self.admit(producers, shed, current, &payload[start..], meta, parts);
    }

    /// Counts an entry for `ring` and keeps it for the hand-over, unless
    /// the ring's consumer is gone or the entry is shed.
    fn admit<'a>(
        &mut self,
        producers: &[Producer<UdpMeta>],
        shed: Option<fn(&[u8]) -> bool>,
        ring: usize,
        payload: &'a [u8],
        meta: UdpMeta,
        parts: &mut Vec<(&'a [u8], UdpMeta)>,
    ) {
        let count = meta.datagrams(payload.len()) as u64;
        let tally = &mut self.tally[ring];
        tally.datagrams += count;
        if self.gone[ring] {
            tally.full_drops += count;
            return;
        }
        if let Some(sheddable) = shed {
            // Once per batch and ring: the mark reads the consumer's
            // cache line.
            let above = *self.above[ring].get_or_insert_with(|| producers[ring].above_high_water());
            // A panic (a bug of the caller's) keeps the datagram: shedding
            // saves room, it must not lose what a bug cannot judge.
            let shed = above
                && caught(|| sheddable(payload)).unwrap_or_else(|| {
                    self.shed_panics += 1;
                    false
                });
            let tally = &mut self.tally[ring];
            if shed {
                tally.shed += count;
                producers[ring].ring.count_refused();
                return;
            }
        }
        parts.push((payload, meta));
        if producers.len() > 1 {
            self.tags.push(ring as u32);
        }
    }

    /// Hands the batch's parts over: one claim per ring they go to, each
    /// ring's in receive order (a stable counting sort by ring).
    fn hand_over<'a>(
        &mut self,
        producers: &[Producer<UdpMeta>],
        parts: &[(&'a [u8], UdpMeta)],
        grouped: &mut Vec<(&'a [u8], UdpMeta)>,
    ) {
        let Some(&first) = self.tags.first() else {
            if !parts.is_empty() {
                self.push(producers, 0, parts); // one ring
            }
            return;
        };
        let rings = producers.len();
        self.starts.fill(0);
        for &ring in &self.tags {
            self.starts[ring as usize + 1] += 1;
        }
        if self.starts[first as usize + 1] == parts.len() {
            self.push(producers, first as usize, parts); // all to one ring
            return;
        }
        for ring in 0..rings {
            self.starts[ring + 1] += self.starts[ring];
        }
        self.next.copy_from_slice(&self.starts[..rings]);
        grouped.clear();
        grouped.extend_from_slice(parts);
        for (&part, &ring) in parts.iter().zip(&self.tags) {
            let at = &mut self.next[ring as usize];
            grouped[*at] = part;
            *at += 1;
        }
        for ring in 0..rings {
            let run = self.starts[ring]..self.starts[ring + 1];
            if !run.is_empty() {
                self.push(producers, ring, &grouped[run]);
            }
        }
    }

    /// Copies a ring's entries into it with one claim; when they do not
    /// fit, as many as fit one by one, counting the rest as dropped (all
    /// of them when the ring's consumer is gone).
    fn push(&mut self, producers: &[Producer<UdpMeta>], ring: usize, entries: &[(&[u8], UdpMeta)]) {
        let producer = &producers[ring];
        let pushed = if self.defer_wakes {
            producer.push_batch_with_wake_later(entries)
        } else {
            producer.push_batch_with(entries)
        };
        let dropped = match pushed {
            Ok(()) => {
                self.tally[ring].entries += entries.len() as u64;
                self.unwoken[ring] = self.defer_wakes;
                return;
            }
            Err(ReserveError::Disconnected) => {
                self.disconnect(ring);
                entries
            }
            // Full now, or too large for one claim: one by one.
            Err(_) => {
                let mut rest: &[(&[u8], UdpMeta)] = &[];
                for (i, &(payload, meta)) in entries.iter().enumerate() {
                    match producer.push_with(payload, meta) {
                        Ok(()) => self.tally[ring].entries += 1,
                        Err(e) => {
                            if e == ReserveError::Disconnected {
                                self.disconnect(ring);
                            }
                            rest = &entries[i..];
                            break;
                        }
                    }
                }
                rest
            }
        };
        let count: usize = dropped
            .iter()
            .map(|(payload, meta)| meta.datagrams(payload.len()))
            .sum();
        self.tally[ring].full_drops += count as u64;
    }

    /// Wakes the consumers of the rings pushed to since the last call, if
    /// they sleep: the check each publish skipped (while coalescing, `push`
    /// publishes without it), once per ring for any number of batches.
    /// Before the listener waits on anything.
    fn wake(&mut self, producers: &[Producer<UdpMeta>]) {
        for (producer, unwoken) in producers.iter().zip(&mut self.unwoken) {
            if std::mem::take(unwoken) {
                producer.wake_if_asleep();
            }
        }
    }

    fn disconnect(&mut self, ring: usize) {
        if !std::mem::replace(&mut self.gone[ring], true) {
            self.live -= 1;
        }
    }

    /// Adds the batch's counts to the listener's shared counters.
    fn flush(&self, counters: &Counters) {
        Counters::add(&counters.out_of_range, self.out_of_range);
        Counters::add(&counters.steer_panics, self.steer_panics);
        Counters::add(&counters.shed_panics, self.shed_panics);
        for (c, t) in counters.rings.iter().zip(&self.tally) {
            Counters::add(&c.datagrams, t.datagrams);
            Counters::add(&c.entries, t.entries);
            Counters::add(&c.full_drops, t.full_drops);
            Counters::add(&c.shed, t.shed);
        }
    }
}

/// `f`'s result, or `None` when it panicked (the panic hook has printed
/// the panic by then): the listener calls the caller's functions through
/// this, and a bug of theirs must not end it. The panic's payload is
/// dropped here too, so that a function that panics on every datagram
/// leaks nothing; only a payload whose own `Drop` panics is forgotten.
fn caught<T>(f: impl FnOnce() -> T) -> Option<T> {
    // AssertUnwindSafe: `f` borrows none of the listener's state mutably,
    // and a panic leaves the caller's own state as it was before the call.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(payload) => {
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload)));
            if let Err(again) = dropped {
                std::mem::forget(again);
            }
            None
        }
    }
}

/// An empty vector with the allocation of `v`, for borrows of another
/// lifetime: the listener refills one vector with slices of its buffers
/// call after call, without allocating.
fn reuse<'a, 'b>(mut v: Vec<(&'a [u8], UdpMeta)>) -> Vec<(&'b [u8], UdpMeta)> {
    v.clear();
    // Empty, so the closure never runs; the standard library collects in
    // place into the same allocation (same size and alignment).
    v.into_iter()
        .map(|_| -> (&'b [u8], UdpMeta) { unreachable!("the vector is empty") })
        .collect()
}
