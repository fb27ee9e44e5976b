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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams received from the kernel (each GRO segment counts).
    pub datagrams: u64,
    /// Entries committed to the ring (a GRO entry holds several datagrams).
    pub entries: u64,
    /// Datagrams dropped because the ring was full.
    pub full_drops: u64,
    /// Datagrams shed above the ring's high-water mark
    /// ([`ListenersBuilder::shed`]); also in the producers' `refused_count`.
    pub shed: u64,
    /// Datagrams the kernel dropped before a listener read them (its
    /// receive buffer was full: `SO_RXQ_OVFL`).
    pub kernel_drops: u64,
    /// Datagrams longer than the buffers, cut by the kernel: counted,
    /// never delivered.
    pub truncated: u64,
    /// Receive or poll errors (the listener goes on).
    pub errors: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub receive_calls: u64,
    /// Readiness waits (`poll`).
    pub polls: u64,
}

/// One listener's counters, on a cache line of its own.
#[derive(Default)]
struct Counters {
    datagrams: AtomicU64,
    entries: AtomicU64,
    full_drops: AtomicU64,
    shed: AtomicU64,
    kernel_drops: AtomicU64,
    truncated: AtomicU64,
    errors: AtomicU64,
    receive_calls: AtomicU64,
    polls: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: a statistic, read as a snapshot; the join in `shutdown`
        // orders the final values.
        counter.fetch_add(n, Ordering::Relaxed);
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
}

impl ListenersBuilder {
    /// How many sockets and threads (default 1).
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
    /// `recvmmsg` batch. Without a mark on the ring, nothing is shed.
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

    /// The options against each other and the ring, before any system
    /// call.
    fn check(&self, max_payload: usize) -> Result<(), ConfigError> {
        if self.listeners == 0 {
            return Err(ConfigError::NoListeners);
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
        let buffer = if self.gro {
            self.max_datagram.max(usize::from(u16::MAX))
        } else {
            self.max_datagram
        };
        if max_payload < buffer {
            return Err(ConfigError::RingTooSmall {
                max_payload,
                buffer,
            });
        }
        Ok(())
    }

    /// Binds the sockets and starts one thread each, feeding `producer`'s
    /// ring.
    ///
    /// # Errors
    /// [`ListenersError::Config`] for options that can never work (checked
    /// before any socket is made): zero listeners, a batch of 0 or above
    /// 1,024, a zero `max_datagram`, or a ring whose largest payload is
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
        self.check(producer.max_payload())?;
        let mut sockets = Vec::with_capacity(self.listeners);
        let (first, gro) = sys::listener_socket(self.addr, self.recv_buffer, self.gro)?;
        let local = first.local_addr()?;
        sockets.push(first);
        for _ in 1..self.listeners {
            sockets.push(sys::listener_socket(local, self.recv_buffer, gro)?.0);
        }
        let buffer_len = if gro {
            self.max_datagram.max(usize::from(u16::MAX))
        } else {
            self.max_datagram
        };
        let send = sockets[0].try_clone()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: (0..self.listeners)
                .map(|_| CachePadded::default())
                .collect(),
        });
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(id, socket)| {
                let listener = Listener {
                    id: id as u16,
                    socket,
                    producer: producer.clone(),
                    batch: self.batch,
                    buffer_len,
                    shed: self.shed,
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

/// Most datagrams one `recvmmsg` of a listener may receive.
const MAX_BATCH: usize = 1024;

/// Why a [`ListenersBuilder`] refused its options: each variant names the
/// option that can never work, so a caller can match on it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`ListenersBuilder::listeners`] was 0.
    NoListeners,
    /// [`ListenersBuilder::batch`] was 0 or above `max`.
    Batch {
        /// The batch asked for.
        batch: usize,
        /// The largest batch.
        max: usize,
    },
    /// [`ListenersBuilder::max_datagram`] was 0.
    ZeroMaxDatagram,
    /// The ring's largest payload is below one receive buffer (the
    /// largest datagram, or 64 KiB with GRO): build a larger ring, or
    /// lower `max_datagram` or turn GRO off.
    RingTooSmall {
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
            ConfigError::Batch { batch, max } => {
                write!(f, "a batch of {batch} datagrams (1 to {max})")
            }
            ConfigError::ZeroMaxDatagram => write!(f, "a max_datagram of 0 bytes"),
            ConfigError::RingTooSmall {
                max_payload,
                buffer,
            } => write!(
                f,
                "the ring's largest payload ({max_payload} bytes) is below one receive buffer ({buffer} bytes)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why [`ListenersBuilder::spawn`] failed: options that can never work, or
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

/// K UDP sockets on one address, one listener thread each, feeding a ring;
/// see the [module docs](self).
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

    /// The counters so far (a snapshot).
    pub fn stats(&self) -> UdpStats {
        let mut s = UdpStats::default();
        for c in &self.shared.counters {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.datagrams += load(&c.datagrams);
            s.entries += load(&c.entries);
            s.full_drops += load(&c.full_drops);
            s.shed += load(&c.shed);
            s.kernel_drops += load(&c.kernel_drops);
            s.truncated += load(&c.truncated);
            s.errors += load(&c.errors);
            s.receive_calls += load(&c.receive_calls);
            s.polls += load(&c.polls);
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
            .field("gro", &self.gro)
            .finish_non_exhaustive()
    }
}

/// One listener thread's state.
struct Listener {
    id: u16,
    socket: UdpSocket,
    producer: Producer<UdpMeta>,
    batch: usize,
    buffer_len: usize,
    shed: Option<fn(&[u8]) -> bool>,
    shared: Arc<Shared>,
}

impl Listener {
    fn run(self) {
        // Made here: its buffers and headers stay with this thread.
        let mut receiver = Receiver::new(self.batch, self.buffer_len);
        let mut got = Vec::with_capacity(self.batch);
        let mut spare: Vec<(&'static [u8], UdpMeta)> = Vec::with_capacity(got.capacity());
        let counters = &self.shared.counters[usize::from(self.id)];
        // Relaxed: a flag with nothing behind it.
        while !self.shared.stop.load(Ordering::Relaxed) {
            Counters::add(&counters.polls, 1);
            // Wait before receiving, and never hold ring room while waiting.
            match sys::wait_readable(&self.socket, POLL_MS) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => {
                    Counters::add(&counters.errors, 1);
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
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
                // Once per batch: the mark reads the consumer's cache line.
                let shed = self.shed.filter(|_| self.producer.above_high_water());
                let mut entries = reuse(spare);
                for (i, r) in got.iter().enumerate() {
                    let meta = self.meta(r, received);
                    let datagrams = meta.datagrams(r.len) as u64;
                    Counters::add(&counters.datagrams, datagrams);
                    if r.truncated {
                        Counters::add(&counters.truncated, datagrams);
                        continue;
                    }
                    let payload = receiver.datagram(i, r.len);
                    if shed.is_some_and(|sheddable| sheddable(payload)) {
                        Counters::add(&counters.shed, datagrams);
                        self.producer.ring.count_refused();
                        continue;
                    }
                    entries.push((payload, meta));
                }
                let gone = hand_over(&self.producer, &entries, counters);
                spare = reuse(entries);
                let drops = u64::from(receiver.kernel_drops);
                // Relaxed: a statistic (the kernel's running total).
                counters.kernel_drops.store(drops, Ordering::Relaxed);
                if gone {
                    return; // the consumer is gone: nobody reads the ring
                }
                if n < self.batch {
                    break;
                }
            }
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

/// Copies a batch into the ring with one claim; when it does not fit, as
/// many entries as fit one by one, counting the rest as dropped. Returns
/// whether the consumer is gone.
fn hand_over(
    producer: &Producer<UdpMeta>,
    entries: &[(&[u8], UdpMeta)],
    counters: &Counters,
) -> bool {
    if entries.is_empty() {
        return false;
    }
    match producer.push_batch_with(entries) {
        Ok(()) => {
            Counters::add(&counters.entries, entries.len() as u64);
            return false;
        }
        Err(ReserveError::Disconnected) => return true,
        // Full now, or too large for one claim: one by one.
        Err(_) => {}
    }
    for (i, &(payload, meta)) in entries.iter().enumerate() {
        match producer.push_with(payload, meta) {
            Ok(()) => Counters::add(&counters.entries, 1),
            Err(ReserveError::Disconnected) => return true,
            Err(_) => {
                let dropped: usize = entries[i..]
                    .iter()
                    .map(|(payload, meta)| meta.datagrams(payload.len()))
                    .sum();
                Counters::add(&counters.full_drops, dropped as u64);
                return false;
            }
        }
    }
    false
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
