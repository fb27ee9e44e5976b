//! A quinn server socket whose receive path runs through mpring.
//!
//! Receive: listener threads block on `SO_REUSEPORT` sockets bound to one
//! loopback port and receive straight into ring reservations (32 bytes of
//! metadata, then the datagram); quinn's endpoint driver drains the ring in
//! `poll_recv` through the consumer's async wait. Send: straight to one of
//! the listener sockets (the same port, so peers see one address).
//!

use std::fmt;
use std::io::{self, ErrorKind, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mpring::{ReserveError, WaitError};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::udp::{is_writable, reuseport_group, wait_readable};

/// Metadata in front of every datagram in the ring: the source address as
/// IPv6 (16 bytes), its port (2), the listener id (1), padding.
const META: usize = 32;
/// What a listener reserves: more than quinn's largest probe (1,452 bytes).
const MAX_DATAGRAM: usize = 2048;

/// A UDP socket for quinn, receiving through listener threads and a ring.
pub struct RingSocket {
    consumer: Mutex<mpring::Consumer>,
    send: UdpSocket,
    /// quinn-udp's sender: GSO batches when the kernel offers them.
    send_state: quinn::udp::UdpSocketState,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
}

impl RingSocket {
    /// Binds `listeners` sockets to one loopback port and starts a thread
    /// for each.
    pub fn bind(listeners: usize, capacity: usize) -> io::Result<RingSocket> {
        let (producer, consumer) =
            mpring::Ring::new(capacity).map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let (sockets, local) = reuseport_group(listeners)?;
        let send = sockets[0].try_clone()?;
        let send_state = quinn::udp::UdpSocketState::new((&send).into())?;
        // quinn-udp turns on GRO for receiving, but this socket is read by a
        // listener with plain `recv_from`, which must get one datagram per
        // call: turn it back off.
        let off: libc::c_int = 0;
        // SAFETY: a valid option value of the size passed, on an open socket.
        unsafe {
            libc::setsockopt(
                send.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(id, socket)| {
                let (producer, stop) = (producer.clone(), stop.clone());
                thread::spawn(move || listen(id, &socket, &producer, &stop))
            })
            .collect();
        Ok(RingSocket {
            consumer: Mutex::new(consumer),
            send,
            send_state,
            local,
            stop,
            listeners: Mutex::new(threads),
        })
    }
}

/// One listener: wait until the socket is readable, then receive straight
/// into a reservation and commit what arrived.
fn listen(id: usize, socket: &UdpSocket, producer: &mpring::Producer, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        // Wait before reserving, so that no reservation is held (holding
        // back the other listeners' entries) while this socket is idle.
        wait_readable(socket, Duration::from_millis(20));
        loop {
            let mut slot = match producer.reserve(META + MAX_DATAGRAM) {
                Ok(slot) => slot,
                Err(ReserveError::Full) => {
                    // The handler is behind: drop, as a UDP stack does.
                    let mut scratch = [0u8; MAX_DATAGRAM];
                    if socket.recv_from(&mut scratch).is_err() {
                        break;
                    }
                    continue;
                }
                Err(_) => return, // the consumer is gone
            };
            match socket.recv_from(&mut slot[META..]) {
                Ok((n, from)) => {
                    let ip = match from.ip() {
                        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                        IpAddr::V6(ip) => ip,
                    };
                    slot[..16].copy_from_slice(&ip.octets());
                    slot[16..18].copy_from_slice(&from.port().to_le_bytes());
                    slot[18] = id as u8;
                    slot.commit_len(META + n);
                }
                // Nothing more: the reservation is aborted as it drops.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

fn source(meta: &[u8]) -> SocketAddr {
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&meta[..16]).unwrap());
    let port = u16::from_le_bytes([meta[16], meta[17]]);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(v4.into(), port),
        None => SocketAddr::new(ip.into(), port),
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

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut consumer = self.consumer.lock().unwrap();
        loop {
            match consumer.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let mut n = 0;
                    let max = bufs.len().min(meta.len());
                    consumer.read_batch(max, |entry| {
                        let (head, datagram) = entry.split_at(META);
                        // quinn reads from its own buffers: one copy here.
                        bufs[n][..datagram.len()].copy_from_slice(datagram);
                        meta[n] = RecvMeta {
                            addr: source(head),
                            len: datagram.len(),
                            stride: datagram.len(),
                            ..RecvMeta::default()
                        };
                        n += 1;
                    });
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(Err(WaitError::Woken)) => continue,
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

impl Drop for RingSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.listeners.lock().unwrap().drain(..) {
            let _ = t.join();
        }
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

/// A quinn server endpoint on a ring-backed socket.
pub fn ring_server(config: quinn::ServerConfig, listeners: usize) -> io::Result<quinn::Endpoint> {
    let socket = RingSocket::bind(listeners, 4 << 20)?;
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(config),
        Arc::new(socket),
        Arc::new(quinn::TokioRuntime),
    )
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
