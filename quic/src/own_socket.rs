//! A shard that receives on a socket of its own: [`Shards`] built with
//! [`receive_in_shards`](crate::ShardsBuilder::receive_in_shards).
//!
//! Each shard's endpoint receives with quinn-udp (`recvmmsg`, GRO) straight
//! into quinn's buffers from one socket of an `SO_REUSEPORT` group, and
//! sends from the same socket. The kernel picks the socket: by default by
//! the datagram's CID, with a classic-BPF program on the group
//! ([`kernel_steering`](crate::ShardsBuilder::kernel_steering)), so that a
//! shard's CIDs reach its socket from any address and a client's first
//! flight goes by its DCID; otherwise by a hash of the 4-tuple.
//!
//! Every segment is steered again: one whose destination CID names another
//! shard (with the 4-tuple hash, a connection that migrated, or a NAT that
//! rebound, so that its 4-tuple now hashes to another socket) is pushed
//! into that shard's ring and leaves this shard's batch; every other
//! datagram (this shard's CIDs, a client's first flight, anything
//! unparsable) stays. Each shard also drains its own ring, which carries
//! only what the others forwarded to it, into at most half of quinn's
//! buffers per call, so that neither source starves the other. Receive
//! errors are counted and receiving goes on; send errors other than
//! `WouldBlock` drop the transmit, as quinn's own socket does.
//!
//! A client's first flight stays where the kernel put it (unless its DCID
//! happens to decode as a shard's CID): the shard that answers issues CIDs
//! that name itself, so that every later datagram of the connection
//! reaches it without a hop. Its retransmits reach the same socket: by
//! their DCID with kernel steering, by their 4-tuple without. (Without,
//! should a NAT rebind the client before any answer reached it, a
//! retransmitted Initial may reach another shard, which answers too: the
//! client goes on with the first answer it gets, whose CIDs name that
//! shard, and the other half-open connection times out.)
//!
//! [`Shards`]: crate::Shards

use std::fmt;
use std::future::Future;
use std::io::{self, ErrorKind, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use mpring::udp::steer::{QuicSteering, RouteBy, ShardCids};
use mpring::udp::{RingStats, UdpMeta, UdpStats};
use mpring::ReserveError;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

use crate::socket::read_ring;
use crate::udp::SendBlocked;

/// `n` sockets bound to `addr` with `SO_REUSEPORT`, in order (port 0: a
/// free port, which the others then share), non-blocking, with
/// `recv_buffer` bytes of receive buffer each; with `cids`, steered in the
/// kernel by CID ([`ShardCids::attach_reuseport_steering`]).
pub(crate) fn reuseport_group(
    addr: SocketAddr,
    n: usize,
    recv_buffer: usize,
    cids: Option<ShardCids>,
) -> io::Result<Vec<UdpSocket>> {
    let sockets = mpring::udp::reuseport_group(addr, n)?;
    for socket in &sockets {
        socket2::SockRef::from(socket).set_recv_buffer_size(recv_buffer)?;
        socket.set_nonblocking(true)?;
    }
    if let Some(cids) = cids {
        cids.attach_reuseport_steering(&sockets[0])?;
    }
    Ok(sockets)
}

/// One shard's counters, shared with [`Shards`](crate::Shards). Every
/// access is Relaxed: they are statistics, and nothing is published
/// through them (each is written by its shard's thread only).
#[derive(Debug)]
pub(crate) struct OwnCounters {
    /// Datagrams received on this shard's socket (each GRO segment counts).
    pub(crate) received: AtomicU64,
    /// `recvmmsg` calls that returned datagrams.
    pub(crate) receive_calls: AtomicU64,
    /// Datagrams handed to this shard's endpoint from its ring (those from
    /// its socket are `steered[shard]`: see [`delivered`](Self::delivered)).
    pub(crate) from_ring: AtomicU64,
    /// Receive errors (the shard goes on receiving, as quinn's own socket
    /// does).
    pub(crate) errors: AtomicU64,
    /// Per destination shard: datagrams this shard received and steered
    /// there (its own index: those it kept).
    pub(crate) steered: Vec<AtomicU64>,
    /// Per destination shard: entries pushed into its ring.
    pub(crate) forwarded: Vec<AtomicU64>,
    /// Per destination shard: datagrams dropped because its ring was full.
    pub(crate) full_drops: Vec<AtomicU64>,
    /// Datagrams dropped as too long: for its ring when forwarding, or,
    /// from its ring, for quinn's receive buffers (reported as
    /// `UdpStats::truncated`).
    pub(crate) oversized: AtomicU64,
}

impl OwnCounters {
    pub(crate) fn new(shards: usize) -> OwnCounters {
        let zeros = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        OwnCounters {
            received: AtomicU64::new(0),
            receive_calls: AtomicU64::new(0),
            from_ring: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            steered: zeros(),
            forwarded: zeros(),
            full_drops: zeros(),
            oversized: AtomicU64::new(0),
        }
    }

    /// Datagrams handed to shard `shard`'s endpoint (these are its
    /// counters): what its socket kept, and what its ring delivered.
    pub(crate) fn delivered(&self, shard: usize) -> u64 {
        // Relaxed: statistics (see the type's docs).
        self.steered[shard].load(Ordering::Relaxed) + self.from_ring.load(Ordering::Relaxed)
    }

    /// Every shard's counters as a listener group's: `datagrams` were
    /// received on the shards' sockets, `rings[k].datagrams` steered to
    /// shard `k` (kept or forwarded), `rings[k].entries` and `full_drops`
    /// what was pushed into (or did not fit) ring `k`.
    pub(crate) fn stats(all: &[Arc<OwnCounters>]) -> UdpStats {
        // Relaxed: statistics (see the type's docs).
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut stats = UdpStats::default();
        stats.rings = vec![RingStats::default(); all.len()];
        for c in all {
            stats.datagrams += load(&c.received);
            stats.receive_calls += load(&c.receive_calls);
            stats.errors += load(&c.errors);
            stats.truncated += load(&c.oversized);
            for (k, ring) in stats.rings.iter_mut().enumerate() {
                ring.datagrams += load(&c.steered[k]);
                ring.entries += load(&c.forwarded[k]);
                ring.full_drops += load(&c.full_drops[k]);
            }
        }
        stats.entries = stats.rings.iter().map(|r| r.entries).sum();
        stats.full_drops = stats.rings.iter().map(|r| r.full_drops).sum();
        stats
    }
}

/// A shard's socket: its own `SO_REUSEPORT` socket, and its ring of
/// datagrams forwarded by the other shards. Made on the shard's thread (its
/// socket registers with that thread's tokio reactor).
pub(crate) struct OwnSocket {
    shard: usize,
    io: tokio::net::UdpSocket,
    /// quinn-udp's state: GRO on receive, GSO on send.
    state: UdpSocketState,
    /// Whether GRO is on (asked for, and the kernel has it).
    gro: bool,
    steering: QuicSteering,
    /// One per shard, this one's included (never pushed to).
    producers: Vec<mpring::Producer<UdpMeta>>,
    /// Only quinn's endpoint driver reads; the lock is never contended.
    consumer: Mutex<mpring::Consumer<UdpMeta>>,
    counters: Arc<OwnCounters>,
    local: SocketAddr,
    /// Until a send meets a full buffer, the pollers skip the reactor.
    send_blocked: SendBlocked,
}

impl OwnSocket {
    /// Wraps `socket` (non-blocking, of the group) for shard `shard`; must
    /// be called inside a tokio runtime with an I/O driver.
    pub(crate) fn new(
        shard: usize,
        socket: UdpSocket,
        gro: bool,
        steering: QuicSteering,
        producers: Vec<mpring::Producer<UdpMeta>>,
        consumer: mpring::Consumer<UdpMeta>,
        counters: Arc<OwnCounters>,
    ) -> io::Result<OwnSocket> {
        // quinn-udp turns GRO on where the kernel has it.
        let state = UdpSocketState::new((&socket).into())?;
        let kernel_gro = state.gro_segments() > 1;
        if kernel_gro && !gro {
            crate::udp::set_gro(&socket, false)?;
        }
        let local = socket.local_addr()?;
        Ok(OwnSocket {
            shard,
            io: tokio::net::UdpSocket::from_std(socket)?,
            state,
            gro: gro && kernel_gro,
            steering,
            producers,
            consumer: Mutex::new(consumer),
            counters,
            local,
            send_blocked: SendBlocked::default(),
        })
    }

    /// Reads what other shards forwarded, without waiting: `None` when the
    /// ring holds nothing quinn can take.
    fn read_forwarded(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Option<usize> {
        let mut consumer = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        let read = read_ring(&mut consumer, bufs, meta);
        let c = &self.counters;
        if read.delivered > 0 {
            // Relaxed: statistics (`OwnCounters`).
            c.from_ring.fetch_add(read.delivered, Ordering::Relaxed);
        }
        if read.oversized > 0 {
            // Relaxed: statistics (`OwnCounters`).
            c.oversized.fetch_add(read.oversized, Ordering::Relaxed);
        }
        (read.entries > 0).then_some(read.entries)
    }

    /// Where one datagram goes: the shard its CID names, or this one.
    fn shard_of(&self, source: SocketAddr, datagram: &[u8]) -> usize {
        let route = self.steering.route(source, datagram);
        match route.by {
            RouteBy::ShardCid => route.ring,
            RouteBy::DcidHash | RouteBy::Source => self.shard,
        }
    }

    /// Steers the `n` entries quinn-udp received: forwards every segment
    /// that belongs to another shard, keeps the rest (compacted, in order)
    /// and returns how many entries are left.
    fn steer(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let (kept, datagrams) = compact(bufs, meta, n, |entry, m| self.keep_own(entry, m));
        let c = &self.counters;
        // Relaxed: statistics (`OwnCounters`).
        c.received.fetch_add(datagrams, Ordering::Relaxed);
        c.receive_calls.fetch_add(1, Ordering::Relaxed);
        kept
    }

    /// Forwards the segments of one entry that belong to other shards and
    /// moves the rest to its front; returns their length.
    fn keep_own(&self, entry: &mut [u8], m: RecvMeta) -> usize {
        let c = &self.counters;
        let stride = m.stride.max(1);
        let shard_of = |segment: &[u8]| self.shard_of(m.addr, segment);
        let forward = |shard: usize, segment: &[u8]| {
            let record = UdpMeta {
                source: m.addr,
                destination: m.dst_ip,
                ecn: m.ecn.map_or(0, |e| e as u8),
                segment_size: 0,
                received: Instant::now(),
                listener: self.shard as u16,
            };
            // Relaxed: statistics (`OwnCounters`).
            match self.producers[shard].push_with(segment, record) {
                Ok(()) => c.forwarded[shard].fetch_add(1, Ordering::Relaxed),
                Err(ReserveError::TooLarge { .. }) => c.oversized.fetch_add(1, Ordering::Relaxed),
                // Full, or that shard is gone (shutting down): counted as
                // full, as the listeners count a ring without a consumer.
                Err(_) => c.full_drops[shard].fetch_add(1, Ordering::Relaxed),
            };
        };
        keep_own(entry, stride, self.shard, shard_of, forward, |shard, n| {
            // Relaxed: statistics (`OwnCounters`).
            c.steered[shard].fetch_add(n, Ordering::Relaxed);
        })
    }
}

/// Runs `keep` on each of the `n` received entries (its bytes and its
/// `RecvMeta`; it returns how many bytes it left at the entry's front) and
/// closes up what is left: entry after entry in the first buffers, with
/// their `RecvMeta`s and the new lengths. Returns the entries left and the
/// datagrams received (GRO segments count). quinn's receive buffers are all
/// of one size, so an entry fits any buffer before it.
fn compact(
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
    n: usize,
    mut keep: impl FnMut(&mut [u8], RecvMeta) -> usize,
) -> (usize, u64) {
    let (mut kept, mut datagrams) = (0, 0);
    for i in 0..n {
        let m = meta[i];
        datagrams += m.len.div_ceil(m.stride.max(1)) as u64;
        let len = keep(&mut bufs[i][..m.len], m);
        if len == 0 {
            continue;
        }
        if kept != i {
            let (to, from) = bufs.split_at_mut(i);
            debug_assert!(to[kept].len() >= len);
            to[kept][..len].copy_from_slice(&from[0][..len]);
        }
        meta[kept] = RecvMeta { len, ..m };
        kept += 1;
    }
    (kept, datagrams)
}

/// Splits one received entry of `stride`-byte segments (the last may be
/// shorter) between shard `own` and the others: hands every segment that
/// `shard_of` puts elsewhere to `forward`, moves the rest to the front of
/// `entry`, in order, and returns their length (a valid entry of the same
/// stride: only its last segment can be short). `steered(shard, n)` counts
/// `n` segments for `shard`. The common case, every segment `own`'s,
/// moves nothing.
fn keep_own(
    entry: &mut [u8],
    stride: usize,
    own: usize,
    shard_of: impl Fn(&[u8]) -> usize,
    mut forward: impl FnMut(usize, &[u8]),
    mut steered: impl FnMut(usize, u64),
) -> usize {
    if entry.chunks(stride).all(|segment| shard_of(segment) == own) {
        steered(own, entry.len().div_ceil(stride) as u64);
        return entry.len();
    }
    // Rare (a migrated connection): one segment at a time.
    let (mut len, mut at) = (0, 0);
    while at < entry.len() {
        let end = entry.len().min(at + stride);
        let shard = shard_of(&entry[at..end]);
        steered(shard, 1);
        if shard == own {
            entry.copy_within(at..end, len);
            len += end - at;
        } else {
            forward(shard, &entry[at..end]);
        }
        at = end;
    }
    len
}

impl AsyncUdpSocket for OwnSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(SendPoller {
            socket: self,
            writable: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // try_io: a WouldBlock clears the reactor's readiness. `send`
        // returns only WouldBlock; other errors (an MTU probe too large
        // for the path, an unreachable network) it logs and drops the
        // transmit, as quinn's own socket does: to quinn they would be
        // fatal to the connection.
        self.send_blocked
            .note(self.io.try_io(Interest::WRITABLE, || {
                self.state.send((&self.io).into(), transmit)
            }))
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        if self.gro {
            self.state.gro_segments()
        } else {
            1
        }
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let room = bufs.len().min(meta.len());
        if room == 0 {
            return Poll::Ready(Ok(0));
        }
        // Receive calls that gave the endpoint nothing (every datagram
        // forwarded, or an error), in this call.
        let mut fruitless = 0;
        loop {
            // What other shards forwarded, into at most half the buffers,
            // so that neither the ring nor the socket can starve the other
            // (a flood of datagrams naming this shard, sent to the other
            // shards' sockets, must not stop this socket's own). An empty
            // ring costs one load of the header at its head.
            let ring_room = (room / 2).max(1);
            let from_ring = self
                .read_forwarded(&mut bufs[..ring_room], &mut meta[..ring_room])
                .unwrap_or(0);
            if from_ring == room {
                return Poll::Ready(Ok(from_ring));
            }
            match self.io.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                _ if from_ring > 0 => return Poll::Ready(Ok(from_ring)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Before sleeping, ask the ring to wake us too (not on
                    // every call: its announcement costs a barrier).
                    let mut consumer = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
                    match consumer.poll_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        // The ring never disconnects: this socket holds a
                        // producer of it.
                        Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
                    }
                }
            }
            let (rest, rest_meta) = (&mut bufs[from_ring..room], &mut meta[from_ring..room]);
            let received = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), rest, rest_meta)
            });
            let (kept, spent) = match received {
                Ok(n) => (self.steer(rest, rest_meta, n), true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => (0, false),
                Err(_) => {
                    // Relaxed: statistics (`OwnCounters`). Receive errors
                    // (an ICMP error queued on the socket, and the like)
                    // do not end the endpoint: quinn's own socket goes on
                    // receiving too.
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    (0, true)
                }
            };
            if from_ring + kept > 0 {
                return Poll::Ready(Ok(from_ring + kept));
            }
            if spent {
                // Everything forwarded, or an error (one that lasts must
                // not hold the shard here): give the shard's timers and
                // sends a turn now and then.
                fruitless += 1;
                if fruitless == FRUITLESS_RECEIVES {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl fmt::Debug for OwnSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnSocket")
            .field("shard", &self.shard)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Receive calls that give the endpoint nothing (only forwarded
/// datagrams, or an error) one `poll_recv` makes before it lets the
/// endpoint's other work run.
const FRUITLESS_RECEIVES: usize = 4;

/// A send-room wait of the shard's reactor, one per poller: quinn makes a
/// poller per connection, each its own task, and tokio's `writable()`
/// wakes every waiting task (`poll_send_ready` would keep one waker only).
struct SendPoller {
    socket: Arc<OwnSocket>,
    writable: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl UdpPoller for SendPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.socket.send_blocked.is_set() {
            this.writable = None;
            return Poll::Ready(Ok(()));
        }
        let writable = this.writable.get_or_insert_with(|| {
            let socket = this.socket.clone();
            Box::pin(async move { socket.io.writable().await })
        });
        let result = writable.as_mut().poll(cx);
        if result.is_ready() {
            this.writable = None;
            this.socket.send_blocked.clear();
        }
        result
    }
}

impl fmt::Debug for SendPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPoller")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSliceMut;

    use quinn::udp::{EcnCodepoint, RecvMeta};

    use super::{compact, keep_own};

    /// Four received entries in four buffers: one entirely forwarded, one
    /// kept whole, an empty one, and one of which only the short last
    /// segment stays. The two left close up into the first two buffers
    /// with their own sources, ECN bits and strides.
    #[test]
    fn compact_closes_up_what_stays_across_buffers() {
        let meta_of = |port: u16, len: usize, stride: usize, ecn| RecvMeta {
            addr: ([192, 0, 2, 1], port).into(),
            len,
            stride,
            ecn,
            dst_ip: None,
        };
        let entries: [(Vec<u8>, RecvMeta); 4] = [
            (vec![0xff; 8], meta_of(1, 8, 4, None)),
            (
                (10..16).collect(),
                meta_of(2, 6, 6, Some(EcnCodepoint::Ect0)),
            ),
            (vec![], meta_of(3, 0, 0, None)),
            (
                (20..30).collect(),
                meta_of(4, 10, 4, Some(EcnCodepoint::Ce)),
            ),
        ];
        let mut storage = [[0u8; 16]; 4];
        let mut meta = [meta_of(0, 0, 0, None); 4];
        for (i, (bytes, m)) in entries.iter().enumerate() {
            storage[i][..bytes.len()].copy_from_slice(bytes);
            meta[i] = *m;
        }
        let [a, b, c, d] = &mut storage;
        let mut bufs = [
            IoSliceMut::new(a),
            IoSliceMut::new(b),
            IoSliceMut::new(c),
            IoSliceMut::new(d),
        ];
        let (kept, datagrams) = compact(&mut bufs, &mut meta, 4, |entry, m| match m.addr.port() {
            1 => 0, // every segment forwarded
            4 => {
                // only the short last segment stays
                entry.copy_within(8..10, 0);
                2
            }
            _ => entry.len(),
        });
        assert_eq!((kept, datagrams), (2, 2 + 1 + 3));
        assert_eq!(&bufs[0][..6], &entries[1].0[..]);
        assert_eq!(meta[0].addr.port(), 2);
        assert_eq!((meta[0].len, meta[0].stride), (6, 6));
        assert_eq!(meta[0].ecn, Some(EcnCodepoint::Ect0));
        assert_eq!(&bufs[1][..2], &[28, 29]);
        assert_eq!(meta[1].addr.port(), 4);
        assert_eq!((meta[1].len, meta[1].stride), (2, 4));
        assert_eq!(meta[1].ecn, Some(EcnCodepoint::Ce));
    }

    /// Six segments of 4 bytes (the last one 2), each naming its shard in
    /// its first byte.
    fn entry(shards: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        for (i, &shard) in shards.iter().enumerate() {
            let len = if i + 1 == shards.len() { 2 } else { 4 };
            e.extend([shard, i as u8, 0xa0 + i as u8, 0xb0 + i as u8][..len].iter());
        }
        e
    }

    /// What `keep_own` did: the bytes kept, the segments forwarded (with
    /// their shard), the segments steered to each shard.
    type Split = (Vec<u8>, Vec<(usize, Vec<u8>)>, Vec<u64>);

    fn split(shards: &[u8], own: usize) -> Split {
        let mut e = entry(shards);
        let mut forwarded = Vec::new();
        let mut steered = vec![0; 3];
        let len = keep_own(
            &mut e,
            4,
            own,
            |segment| usize::from(segment[0]),
            |shard, segment| forwarded.push((shard, segment.to_vec())),
            |shard, n| steered[shard] += n,
        );
        e.truncate(len);
        (e, forwarded, steered)
    }

    #[test]
    fn an_entry_of_this_shard_stays_whole() {
        let (kept, forwarded, steered) = split(&[1, 1, 1, 1, 1, 1], 1);
        assert_eq!(kept, entry(&[1, 1, 1, 1, 1, 1]));
        assert!(forwarded.is_empty());
        assert_eq!(steered, [0, 6, 0]);
    }

    #[test]
    fn other_shards_segments_are_forwarded_and_the_rest_closes_up() {
        let (kept, forwarded, steered) = split(&[0, 2, 0, 0, 1, 0], 0);
        let whole = entry(&[0, 2, 0, 0, 1, 0]);
        let segment = |i: usize| whole[i * 4..whole.len().min(i * 4 + 4)].to_vec();
        // Segments 0, 2, 3 and the short last one, in order.
        assert_eq!(
            kept,
            [segment(0), segment(2), segment(3), segment(5)].concat()
        );
        assert_eq!(forwarded, [(2, segment(1)), (1, segment(4))]);
        assert_eq!(steered, [4, 1, 1]);
    }

    #[test]
    fn full_segments_and_single_datagrams_split_the_same_way() {
        // Three full segments of 4 bytes: the middle one forwarded.
        let mut e: Vec<u8> = (0..12).collect();
        e[0] = 0;
        e[4] = 1;
        e[8] = 0;
        let mut forwarded = Vec::new();
        let len = keep_own(
            &mut e,
            4,
            0,
            |s| usize::from(s[0]),
            |k, s| forwarded.push((k, s.to_vec())),
            |_, _| {},
        );
        assert_eq!(&e[..len], &[0, 1, 2, 3, 0, 9, 10, 11]);
        assert_eq!(forwarded, [(1, vec![1, 5, 6, 7])]);
        // GRO off: one datagram, the stride its length.
        let mut one = vec![1, 7, 7];
        let len = keep_own(
            &mut one,
            3,
            0,
            |s| usize::from(s[0]),
            |k, s| forwarded.push((k, s.to_vec())),
            |_, _| {},
        );
        assert_eq!(len, 0);
        assert_eq!(forwarded[1], (1, vec![1, 7, 7]));
    }

    #[test]
    fn an_entry_of_other_shards_leaves_nothing() {
        let (kept, forwarded, steered) = split(&[2, 1, 2, 2, 1, 2], 0);
        assert!(kept.is_empty());
        assert_eq!(forwarded.len(), 6);
        assert_eq!(forwarded[5], (2, entry(&[2, 1, 2, 2, 1, 2])[20..].to_vec()));
        assert_eq!(steered, [0, 2, 4]);
    }
}
