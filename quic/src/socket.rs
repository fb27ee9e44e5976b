//! A quinn server socket whose receive path runs through mpring.
//!
//! Receive: `mpring::udp::Listeners` (K `SO_REUSEPORT` sockets on one
//! address, a thread each, `recvmmsg` with GRO, one ring claim per batch)
//! feed a ring; quinn's endpoint driver drains it in `poll_recv` through the
//! consumer's async wait, with each entry's source, destination, ECN bits
//! and GRO stride. Send: quinn-udp on a socket bound to the same address
//! (GSO when the kernel has it), so peers see one address.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! # async fn server(config: quinn::ServerConfig) -> std::io::Result<()> {
//! let socket = mpring_quic::RingSocket::bind("0.0.0.0:4433".parse().unwrap(), 4)?;
//! let endpoint = quinn::Endpoint::new_with_abstract_socket(
//!     quinn::EndpointConfig::default(),
//!     Some(config),
//!     Arc::new(socket),
//!     Arc::new(quinn::TokioRuntime),
//! )?;
//! while let Some(incoming) = endpoint.accept().await {
//!     tokio::spawn(async move {
//!         if let Ok(connection) = incoming.await {
//!             // serve `connection`
//!         }
//!     });
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, ErrorKind, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use mpring::udp::{Listeners, UdpMeta, UdpStats};
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::udp::SendRoom;

/// The default ring size: 64 entries of 64 KiB GRO batches.
pub const DEFAULT_RING_BYTES: usize = 4 << 20;

/// Whether a datagram starts with a QUIC v1 Initial packet (long header,
/// type 0): a new connection, or the handshake of one, which a loaded
/// server may shed first.
///
/// ```
/// use mpring_quic::is_quic_initial;
///
/// assert!(is_quic_initial(&[0xC3, 0, 0, 0, 1])); // Initial, 4-byte packet number
/// assert!(!is_quic_initial(&[0xE3, 0, 0, 0, 1])); // Handshake
/// assert!(!is_quic_initial(&[0x43])); // short header: an established connection
/// assert!(!is_quic_initial(&[]));
/// ```
pub fn is_quic_initial(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|&b| b & 0xF0 == 0xC0)
}

/// How the receive path is built: listener sockets, ring size, GRO and
/// shedding. Shared by [`RingSocketBuilder`] and
/// [`ShardsBuilder`](crate::ShardsBuilder), which set it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecvOptions {
    pub(crate) addr: SocketAddr,
    pub(crate) listeners: usize,
    pub(crate) ring_bytes: usize,
    pub(crate) gro: bool,
    /// `None`: three quarters of the ring.
    pub(crate) high_water_mark: Option<usize>,
    pub(crate) shed_initial: bool,
    pub(crate) coalesce: std::time::Duration,
    pub(crate) coalesce_after: usize,
}

impl RecvOptions {
    pub(crate) fn new(addr: SocketAddr) -> RecvOptions {
        RecvOptions {
            addr,
            listeners: 1,
            ring_bytes: DEFAULT_RING_BYTES,
            gro: true,
            high_water_mark: None,
            shed_initial: true,
            coalesce: std::time::Duration::ZERO,
            coalesce_after: mpring::udp::DEFAULT_COALESCE_AFTER,
        }
    }

    /// One ring as the options say.
    pub(crate) fn ring(
        &self,
    ) -> io::Result<(mpring::Producer<UdpMeta>, mpring::Consumer<UdpMeta>)> {
        let mark = self.high_water_mark.unwrap_or(self.ring_bytes / 4 * 3);
        mpring::Ring::builder(self.ring_bytes)
            .metadata::<UdpMeta>()
            .high_water_mark(mark)
            .build()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))
    }

    /// The listener group's builder as the options say.
    pub(crate) fn listeners(&self) -> mpring::udp::ListenersBuilder {
        let builder = Listeners::builder(self.addr)
            .listeners(self.listeners)
            .gro(self.gro)
            .coalesce(self.coalesce)
            .coalesce_after(self.coalesce_after);
        if self.shed_initial {
            builder.shed(is_quic_initial)
        } else {
            builder
        }
    }
}

/// Sets the receive options of a [`RingSocketBuilder`] or a
/// [`ShardsBuilder`](crate::ShardsBuilder): one set of doc comments for both.
macro_rules! recv_options {
    () => {
        /// Listener sockets (`SO_REUSEPORT`) and threads. Default 1.
        pub fn listeners(mut self, listeners: usize) -> Self {
            self.options.listeners = listeners;
            self
        }

        /// Bytes of each ring (a power of two). Default
        /// [`DEFAULT_RING_BYTES`](crate::DEFAULT_RING_BYTES), 4 MiB: 64
        /// entries of 64 KiB GRO batches. Listener threads with GRO on need
        /// room for one whole receive buffer per entry, so at least 256 KiB:
        /// `bind` refuses less ([`ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput)
        /// with [`mpring::udp::ConfigError`] inside).
        pub fn ring_bytes(mut self, bytes: usize) -> Self {
            self.options.ring_bytes = bytes;
            self
        }

        /// Whether listeners ask the kernel for GRO (coalesced datagrams of
        /// one flow, split again by quinn). Default `true`; a kernel
        /// without it is not an error.
        pub fn gro(mut self, gro: bool) -> Self {
            self.options.gro = gro;
            self
        }

        /// Whether listeners drop datagrams that start with a QUIC Initial
        /// packet ([`is_quic_initial`](crate::is_quic_initial)) while the
        /// ring holds more than the high-water mark, counted as
        /// `UdpStats::shed`: a flood of new connections then leaves room
        /// for established ones. Default `true`.
        pub fn shed_initial(mut self, shed: bool) -> Self {
            self.options.shed_initial = shed;
            self
        }

        /// Bytes in use above which Initial packets are shed. Default:
        /// three quarters of the ring. More than the ring is an error at
        /// bind.
        pub fn high_water_mark(mut self, bytes: usize) -> Self {
            self.options.high_water_mark = Some(bytes);
            self
        }

        /// Receive coalescing in the listener threads
        /// ([`ListenersBuilder::coalesce`](mpring::udp::ListenersBuilder::coalesce)):
        /// under load (a wake-up received at least
        /// [`DEFAULT_COALESCE_AFTER`](mpring::udp::DEFAULT_COALESCE_AFTER)
        /// datagrams), a listener waits `wait` after each batch instead of
        /// waking for the next datagram. Default zero (off). Fewer wake-ups
        /// and larger batches, for up to `wait` of delay to a datagram that
        /// arrives during a wait; in `quic_shards`
        /// on 2 cores, 300 µs cut the listener's CPU per datagram by 37-53%
        /// and the server's by 8-20% (BENCHMARKS.md, "Receive coalescing").
        /// More than [`MAX_COALESCE`](mpring::udp::MAX_COALESCE) is an
        /// error at bind.
        pub fn listener_coalesce(mut self, wait: std::time::Duration) -> Self {
            self.options.coalesce = wait;
            self
        }

        /// The fewest datagrams a listener's wake-up must receive for it to
        /// [coalesce](Self::listener_coalesce) after it
        /// ([`ListenersBuilder::coalesce_after`](mpring::udp::ListenersBuilder::coalesce_after)).
        /// Default [`DEFAULT_COALESCE_AFTER`](mpring::udp::DEFAULT_COALESCE_AFTER).
        pub fn listener_coalesce_after(mut self, datagrams: usize) -> Self {
            self.options.coalesce_after = datagrams;
            self
        }
    };
}
pub(crate) use recv_options;

/// Builds a [`RingSocket`]: see [`RingSocket::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `bind`"]
pub struct RingSocketBuilder {
    options: RecvOptions,
}

impl RingSocketBuilder {
    recv_options!();

    /// Makes the ring, binds the listener sockets and starts their
    /// threads.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a ring size that is not a power of
    /// two, a high-water mark above the ring, 0 listeners or a coalescing
    /// wait above [`MAX_COALESCE`](mpring::udp::MAX_COALESCE) (the typed
    /// error is inside); any error binding the sockets or starting the
    /// threads.
    pub fn bind(self) -> io::Result<RingSocket> {
        let (producer, consumer) = self.options.ring()?;
        let listeners = self.options.listeners().spawn(producer)?;
        RingSocket::from_consumer(consumer, Arc::new(listeners))
    }
}

/// GRO segments quinn may find in one receive buffer (each buffer is then
/// at least 64 x 1,200 bytes, more than any entry).
const GRO_SEGMENTS: usize = 64;

/// A UDP socket for quinn, receiving through listener threads and a ring.
/// Nothing to wrap: quinn shares it as `Arc<dyn AsyncUdpSocket>`.
pub struct RingSocket {
    /// Only quinn's endpoint driver reads; the lock is never contended.
    consumer: Mutex<mpring::Consumer<UdpMeta>>,
    /// Shared by every shard's socket when the group feeds several rings
    /// ([`Shards`](crate::Shards)); the threads stop with the last one.
    listeners: Arc<Listeners>,
    send: UdpSocket,
    /// quinn-udp's sender: GSO batches when the kernel offers them.
    send_state: quinn::udp::UdpSocketState,
    local: SocketAddr,
    /// Datagrams handed to quinn (each GRO segment counts).
    delivered: AtomicU64,
    /// Datagrams dropped because quinn's buffer could not hold an entry.
    oversized: AtomicU64,
    /// Where tasks wait while `send` has no room.
    send_room: SendRoom,
}

impl RingSocket {
    /// Binds `listeners` sockets to `addr` (port 0: a free port) and starts
    /// a listener thread for each, with the defaults of
    /// [`builder`](RingSocket::builder): a 4 MiB ring, GRO, Initial packets
    /// shed above three quarters of the ring.
    pub fn bind(addr: SocketAddr, listeners: usize) -> io::Result<RingSocket> {
        RingSocket::builder(addr).listeners(listeners).bind()
    }

    /// A builder for a socket on `addr` (port 0: a free port), to set the
    /// ring size, GRO and shedding.
    ///
    /// ```no_run
    /// let socket = mpring_quic::RingSocket::builder("0.0.0.0:4433".parse().unwrap())
    ///     .listeners(4)
    ///     .ring_bytes(16 << 20)
    ///     .high_water_mark(12 << 20)
    ///     .bind()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder(addr: SocketAddr) -> RingSocketBuilder {
        RingSocketBuilder {
            options: RecvOptions::new(addr),
        }
    }

    /// A socket that receives from `consumer`, one of the rings that
    /// `listeners` feeds, and sends from the group's address (a clone of
    /// [`Listeners::send_socket`]). [`Shards`](crate::Shards) builds one per
    /// shard on one steered group; the group's threads stop once the last
    /// socket (and any other holder of `listeners`) is gone.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use mpring::udp::{Listeners, UdpMeta};
    ///
    /// let (producer, consumer) = mpring::Ring::builder(4 << 20).metadata::<UdpMeta>().build()?;
    /// let listeners = Listeners::builder("127.0.0.1:0".parse()?).gro(true).spawn(producer)?;
    /// let socket = mpring_quic::RingSocket::from_consumer(consumer, Arc::new(listeners))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_consumer(
        consumer: mpring::Consumer<UdpMeta>,
        listeners: Arc<Listeners>,
    ) -> io::Result<RingSocket> {
        let send = listeners.send_socket().try_clone()?;
        let send_state = quinn::udp::UdpSocketState::new((&send).into())?;
        // `send` is listener 0's own socket, on which quinn-udp just turned
        // GRO on: without it asked for, listener 0's buffers are one
        // datagram long, and every coalesced entry would be cut.
        if !listeners.gro() && send_state.gro_segments() > 1 {
            crate::udp::set_gro(&send, false)?;
        }
        Ok(RingSocket {
            consumer: Mutex::new(consumer),
            local: listeners.local_addr(),
            listeners,
            send,
            send_state,
            delivered: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            send_room: SendRoom::new(),
        })
    }

    /// The listeners' counters: datagrams received, dropped for a full
    /// ring, shed above the high-water mark, dropped by the kernel,
    /// truncated. For a socket of a steered group, the whole group's
    /// (`rings` has each ring's own).
    pub fn stats(&self) -> UdpStats {
        self.listeners.stats()
    }

    /// Datagrams handed to quinn so far: every one passed through the ring.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Datagrams dropped because an entry did not fit quinn's receive
    /// buffer (never with quinn's default buffers).
    pub fn oversized(&self) -> u64 {
        self.oversized.load(Ordering::Relaxed)
    }
}

impl AsyncUdpSocket for RingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller(self))
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // `send` returns only WouldBlock; other errors (an MTU probe too
        // large for the path, an unreachable network) it logs and drops
        // the transmit, as quinn's own socket does: to quinn they would be
        // fatal to the connection.
        self.send_room
            .send(|| self.send_state.send((&self.send).into(), transmit))
    }

    fn max_transmit_segments(&self) -> usize {
        self.send_state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        GRO_SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        // quinn turns path MTU discovery on only where datagrams may not
        // fragment (quinn-udp sets the don't-fragment bit where it can).
        self.send_state.may_fragment()
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut consumer = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match consumer.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let read = read_ring(&mut consumer, bufs, meta);
                    self.delivered.fetch_add(read.delivered, Ordering::Relaxed);
                    self.oversized.fetch_add(read.oversized, Ordering::Relaxed);
                    if read.entries == 0 {
                        continue; // only oversized entries, or a wake-up: wait again
                    }
                    return Poll::Ready(Ok(read.entries));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(io::Error::new(ErrorKind::BrokenPipe, e)))
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What [`read_ring`] handed to quinn.
pub(crate) struct RingRead {
    /// Receive buffers filled (quinn's return value).
    pub(crate) entries: usize,
    /// Datagrams in them (each GRO segment counts).
    pub(crate) delivered: u64,
    /// Datagrams dropped because an entry did not fit its buffer.
    pub(crate) oversized: u64,
}

/// Copies a batch of ring entries into quinn's receive buffers, one entry
/// per buffer, with their sources, destinations, ECN bits and GRO strides.
pub(crate) fn read_ring(
    consumer: &mut mpring::Consumer<UdpMeta>,
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
) -> RingRead {
    let mut read = RingRead {
        entries: 0,
        delivered: 0,
        oversized: 0,
    };
    let max = bufs.len().min(meta.len());
    consumer.read_batch_meta(max, |record, payload| {
        let datagrams = record.datagrams(payload.len()) as u64;
        let buf = &mut bufs[read.entries];
        if payload.len() > buf.len() {
            read.oversized += datagrams;
            return;
        }
        // quinn reads from its own buffers: one copy here.
        buf[..payload.len()].copy_from_slice(payload);
        meta[read.entries] = RecvMeta {
            addr: record.source,
            len: payload.len(),
            stride: match record.segment_size {
                0 => payload.len(),
                size => usize::from(size),
            },
            ecn: EcnCodepoint::from_bits(record.ecn),
            dst_ip: record.destination,
        };
        read.delivered += datagrams;
        read.entries += 1;
    });
    read
}

impl fmt::Debug for RingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSocket")
            .field("local", &self.local)
            .finish()
    }
}

/// Ready when the send socket has room; otherwise the socket's
/// [`SendRoom`] wakes the task once it has (no reactor needed: shards may
/// run without tokio's I/O driver).
#[derive(Debug)]
struct WritablePoller(Arc<RingSocket>);

impl UdpPoller for WritablePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let socket = &self.0;
        socket.send_room.poll_writable(&socket.send, cx).map(Ok)
    }
}
