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
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use mpring::udp::{Listeners, UdpMeta, UdpStats};
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::udp::is_writable;

/// The ring's size: 64 entries of 64 KiB GRO batches.
const RING_BYTES: usize = 4 << 20;
/// Above this much of the ring in use, new connections' Initial packets
/// are shed: the last quarter stays for established connections.
const HIGH_WATER: usize = RING_BYTES / 4 * 3;

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
/// A ring for one socket: [`RING_BYTES`], shedding above [`HIGH_WATER`].
pub(crate) fn ring() -> io::Result<(mpring::Producer<UdpMeta>, mpring::Consumer<UdpMeta>)> {
    mpring::Ring::builder(RING_BYTES)
        .metadata::<UdpMeta>()
        .high_water_mark(HIGH_WATER)
        .build()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))
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
}

impl RingSocket {
    /// Binds `listeners` sockets to `addr` (port 0: a free port) and starts
    /// a listener thread for each, with GRO when the kernel has it. Once
    /// three quarters of the ring are in use, Initial packets are shed
    /// ([`is_quic_initial`]; counted in `stats().shed`), so that a flood
    /// of new connections leaves room for established ones.
    pub fn bind(addr: SocketAddr, listeners: usize) -> io::Result<RingSocket> {
        let (producer, consumer) = ring()?;
        let listeners = Listeners::builder(addr)
            .listeners(listeners)
            .gro(true)
            .shed(is_quic_initial)
            .spawn(producer)?;
        RingSocket::from_consumer(consumer, Arc::new(listeners))
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
        Ok(RingSocket {
            consumer: Mutex::new(consumer),
            local: listeners.local_addr(),
            listeners,
            send,
            send_state,
            delivered: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
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
        self.send_state.try_send((&self.send).into(), transmit)
    }

    fn max_transmit_segments(&self) -> usize {
        self.send_state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        GRO_SEGMENTS
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
                    let mut n = 0;
                    let max = bufs.len().min(meta.len());
                    let (mut delivered, mut oversized) = (0, 0);
                    consumer.read_batch_meta(max, |record, payload| {
                        let datagrams = record.datagrams(payload.len()) as u64;
                        let buf = &mut bufs[n];
                        if payload.len() > buf.len() {
                            oversized += datagrams;
                            return;
                        }
                        // quinn reads from its own buffers: one copy here.
                        buf[..payload.len()].copy_from_slice(payload);
                        meta[n] = RecvMeta {
                            addr: record.source,
                            len: payload.len(),
                            stride: match record.segment_size {
                                0 => payload.len(),
                                size => usize::from(size),
                            },
                            ecn: EcnCodepoint::from_bits(record.ecn),
                            dst_ip: record.destination,
                        };
                        delivered += datagrams;
                        n += 1;
                    });
                    self.delivered.fetch_add(delivered, Ordering::Relaxed);
                    self.oversized.fetch_add(oversized, Ordering::Relaxed);
                    if n == 0 {
                        continue; // only oversized entries, or a wake-up: wait again
                    }
                    return Poll::Ready(Ok(n));
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

impl fmt::Debug for RingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSocket")
            .field("local", &self.local)
            .finish()
    }
}

/// Asks the kernel whether the send socket has room. A full loopback send
/// buffer clears within microseconds, so when it has none the task simply
/// tries again on its next turn (no reactor registration needed).
#[derive(Debug)]
struct WritablePoller(Arc<RingSocket>);

impl UdpPoller for WritablePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        if is_writable(&self.0.send) {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

// ---- endpoints -------------------------------------------------------------------

/// A self-signed certificate for "localhost" and the server and client
/// configurations that use it.
pub fn configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let mut server =
        quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key.into()).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(256u32.into());
    server.transport_config(Arc::new(transport));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    (server, client)
}

/// A quinn server endpoint on a ring-backed socket on a loopback port, and
/// the socket (for its counters).
pub fn ring_server(
    config: quinn::ServerConfig,
    listeners: usize,
) -> io::Result<(quinn::Endpoint, Arc<RingSocket>)> {
    let socket = Arc::new(RingSocket::bind(
        (Ipv4Addr::LOCALHOST, 0).into(),
        listeners,
    )?);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.clone(),
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok((endpoint, socket))
}

/// A quinn server endpoint on quinn's own socket, for comparison.
pub fn default_server(config: quinn::ServerConfig) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(config, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
}

/// A stock quinn client endpoint connected to `server`.
pub async fn connect(
    server: &quinn::Endpoint,
    config: quinn::ClientConfig,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(config);
    let addr = server.local_addr().unwrap();
    let connection = client
        .connect(addr, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    (client, connection)
}

/// Echoes every bidirectional stream and every datagram of every
/// connection until the endpoint closes.
pub async fn echo(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            let datagrams = {
                let connection = connection.clone();
                tokio::spawn(async move {
                    while let Ok(d) = connection.read_datagram().await {
                        let _ = connection.send_datagram(d);
                    }
                })
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(Some(n)) = recv.read(&mut buf).await {
                        if send.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
            datagrams.abort();
        });
    }
}

/// The bytes of stream `stream`: a pattern no two streams share.
pub fn stream_bytes(stream: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ stream.wrapping_mul(0x9E37)) as u8)
        .collect()
}

/// Opens `streams` bidirectional streams of `bytes` bytes each, all at
/// once, and checks every echoed byte. Returns the bytes echoed.
pub async fn echo_streams(connection: &quinn::Connection, streams: u64, bytes: usize) -> u64 {
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let connection = connection.clone();
        tasks.push(tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
            let data = stream_bytes(stream, bytes);
            let writer = {
                let data = data.clone();
                tokio::spawn(async move {
                    send.write_all(&data).await.expect("write");
                    send.finish().expect("finish");
                })
            };
            let echoed = recv.read_to_end(bytes + 1).await.expect("read the echo");
            writer.await.unwrap();
            assert_eq!(echoed.len(), data.len(), "stream {stream}: length");
            assert!(echoed == data, "stream {stream}: bytes differ");
            echoed.len() as u64
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("stream task");
    }
    total
}
