//! The job mpring exists for: UDP listener threads receive datagrams and hand
//! them to one datagram-handler thread.
//!
//! K listener threads each own a UDP socket bound to the same loopback port
//! with `SO_REUSEPORT`: mpring's own `udp::Listeners` (feature `udp`). Each
//! waits until its socket is readable, receives up to 16 datagrams with one
//! `recvmmsg` and hands them to the ring with one claim, each with a typed
//! `UdpMeta` record (source address, listener id, receive time): no
//! allocation, no hand packing. Two hand-written ways to receive run next
//! to it: `recvmmsg` straight into the slots of a batch reservation (no
//! copy, but slots that short datagrams leave unused stay claimed when
//! another listener claimed after them), and one `recv_from` per datagram
//! into a reservation. A handler thread drains batches with a blocking wait
//! and a deadline and checks every datagram (sequence number and checksum,
//! put in by the sender, and its record). A built-in load generator sends
//! QUIC-like sizes on loopback. Then the same runs with a
//! `crossbeam-channel` of `(UdpMeta, Vec<u8>)` in place of the ring, and a
//! table compares them all, including the system calls per datagram and
//! how much of the ring room claimed the entries used.
//!
//! ```text
//! cargo run --release --example udp_fanin
//! cargo run --release --example udp_fanin -- --help
//! ```
//!
//! Exits non-zero if any datagram arrived corrupted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mpring::udp::{Listeners, UdpMeta};
use mpring::{ReserveError, Ring, WaitError};

use socket2::{Domain, Protocol, Socket, Type};

/// The largest datagram the load generator sends; listeners reserve this.
const MAX_DATAGRAM: usize = 1500;
/// Sequence number (8), sender id (4), checksum (4).
const DATAGRAM_HEADER: usize = 16;

// ---- counting allocations --------------------------------------------------

struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---- configuration ------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Sizes {
    /// Mostly 1,200-1,350 bytes, some small acks, a few up to 1,500.
    Quic,
    Fixed(usize),
    Uniform(usize, usize),
}

#[derive(Clone, Debug)]
struct Config {
    listeners: usize,
    senders: usize,
    duration: Duration,
    datagrams: u64,
    capacity: usize,
    sizes: Sizes,
    pipelines: Vec<String>,
    /// Threads that only burn CPU while the pipelines run.
    busy: usize,
}

/// A pipeline to run: the ring or the channel, and how listeners receive.
#[derive(Clone, Copy)]
enum Kind {
    /// `None`: the `udp` feature's listeners.
    Ring(Option<Recv>),
    Channel(Recv),
}

/// Every pipeline, by name, in the order they run.
const PIPELINES: &[(&str, Kind)] = &[
    ("mpring-udp", Kind::Ring(None)),
    ("mpring-mmsg-in-place", Kind::Ring(Some(Recv::MmsgInPlace))),
    ("mpring-recv", Kind::Ring(Some(Recv::Single))),
    ("channel-mmsg", Kind::Channel(Recv::Mmsg)),
    ("channel-recv", Kind::Channel(Recv::Single)),
];

const HELP: &str = "\
udp_fanin: UDP listener threads -> mpring -> one handler thread, on loopback,
then the same with crossbeam-channel of Vec<u8>, and a comparison table;
each receiving one datagram per system call and 16 per recvmmsg.

USAGE: cargo run --release --example udp_fanin -- [OPTIONS]

OPTIONS:
  --listeners K     listener threads, one SO_REUSEPORT socket each   [2]
  --senders S       load generator threads, one socket each          [= K]
  --duration SECS   longest time each pipeline sends for             [2]
  --datagrams N     most datagrams each pipeline sends               [2000000]
  --capacity BYTES  ring capacity, a power of two (the channel gets
                    BYTES / 1200 slots)                              [4194304]
  --sizes MIX       quic (mostly 1200-1350 B, some 40-100 B acks, a few
                    up to 1500 B), a size like 1350, or a range like
                    20-1500                                          [quic]
  --pipelines LIST  which to run, comma-separated, of
                    mpring-udp            mpring::udp::Listeners: recvmmsg
                                          (16) into the listener's buffers,
                                          copied into the ring with one
                                          claim (push_batch_with)
                    mpring-mmsg-in-place  recvmmsg into the slots of a batch
                                          reservation (reserve_batch)
                    mpring-recv           recv_from into a reservation
                    channel-mmsg          recvmmsg, a Vec per datagram
                    channel-recv          recv_from, a Vec per datagram [all]
  --busy N          N more threads that only burn CPU meanwhile       [0]
  --help            this text

Exits with status 1 if any datagram arrived corrupted.";

/// The options that take a value (see `HELP`).
const KNOWN_FLAGS: &[&str] = &[
    "--listeners",
    "--senders",
    "--duration",
    "--datagrams",
    "--capacity",
    "--sizes",
    "--pipelines",
    "--busy",
];

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        listeners: 2,
        senders: 0,
        duration: Duration::from_secs(2),
        datagrams: 2_000_000,
        capacity: 4 << 20,
        sizes: Sizes::Quic,
        pipelines: PIPELINES.iter().map(|(name, _)| name.to_string()).collect(),
        busy: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        if !KNOWN_FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag} (see --help)"));
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--listeners" => config.listeners = number(&value)?.max(1) as usize,
            "--senders" => config.senders = number(&value)? as usize,
            "--duration" => {
                let secs: f64 = value.parse().map_err(|_| format!("--duration: {value}"))?;
                config.duration = Duration::from_secs_f64(secs.max(0.1));
            }
            "--datagrams" => config.datagrams = number(&value)?,
            "--busy" => config.busy = number(&value)? as usize,
            "--pipelines" => {
                config.pipelines = value.split(',').map(str::to_string).collect();
                if let Some(bad) = config
                    .pipelines
                    .iter()
                    .find(|p| !PIPELINES.iter().any(|(name, _)| name == p))
                {
                    return Err(format!("--pipelines: unknown pipeline {bad} (see --help)"));
                }
            }
            "--capacity" => config.capacity = number(&value)? as usize,
            "--sizes" => {
                config.sizes = match value.split_once('-') {
                    _ if value == "quic" => Sizes::Quic,
                    Some((lo, hi)) => Sizes::Uniform(number(lo)? as usize, number(hi)? as usize),
                    None => Sizes::Fixed(number(&value)? as usize),
                };
                let (lo, hi) = match config.sizes {
                    Sizes::Quic => (40, 1500),
                    Sizes::Fixed(n) => (n, n),
                    Sizes::Uniform(lo, hi) => (lo, hi),
                };
                if lo < DATAGRAM_HEADER || hi > MAX_DATAGRAM || lo > hi {
                    return Err(format!(
                        "--sizes: sizes must lie in {DATAGRAM_HEADER}..={MAX_DATAGRAM}"
                    ));
                }
            }
            _ => return Err(format!("unknown option {flag} (see --help)")),
        }
    }
    if config.senders == 0 {
        config.senders = config.listeners;
    }
    Ok(config)
}

// ---- datagrams -------------------------------------------------------------------

/// A cheap generator for sizes, seeded per sender.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn size(&mut self, sizes: Sizes) -> usize {
        let r = self.next();
        match sizes {
            Sizes::Fixed(n) => n,
            Sizes::Uniform(lo, hi) => lo + (r % (hi - lo + 1) as u64) as usize,
            Sizes::Quic => match r % 100 {
                0..=79 => 1200 + (r >> 8) as usize % 151,
                80..=94 => 40 + (r >> 8) as usize % 61,
                _ => 1351 + (r >> 8) as usize % 150,
            },
        }
    }
}

/// FNV-1a over the datagram with its checksum field skipped.
fn checksum(datagram: &[u8]) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    for (i, &b) in datagram.iter().enumerate() {
        if (12..16).contains(&i) {
            continue;
        }
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h
}

fn fill_datagram(buf: &mut [u8], sender: u32, seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&sender.to_le_bytes());
    for (i, b) in buf[DATAGRAM_HEADER..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8).wrapping_mul(31);
    }
    let sum = checksum(buf);
    buf[12..16].copy_from_slice(&sum.to_le_bytes());
}

/// The record a hand-written listener keeps with a datagram: the same
/// type as the `udp` feature's listeners (`mpring::udp::UdpMeta`), so that
/// every pipeline hands the handler the same thing. In the ring it is the
/// entry's metadata record; in the channel it travels next to the `Vec`.
fn meta(source: SocketAddr, listener: usize) -> UdpMeta {
    UdpMeta {
        source,
        destination: None,
        ecn: 0,
        segment_size: 0,
        received: Instant::now(),
        listener: listener as u16,
    }
}

/// What the handler does with every entry: metadata, then the datagram.
struct Checker {
    handled: u64,
    corrupted: u64,
    bytes: u64,
    /// Highest sequence number seen per sender (UDP may reorder or drop on
    /// loopback under load; only corruption is an error).
    last_seq: Vec<u64>,
    /// Receive time of the last datagram per listener: each listener's
    /// datagrams arrive in its order, so these never go back.
    last_received: Vec<Option<Instant>>,
}

impl Checker {
    fn new(senders: usize, listeners: usize) -> Checker {
        Checker {
            handled: 0,
            corrupted: 0,
            bytes: 0,
            last_seq: vec![0; senders],
            last_received: vec![None; listeners],
        }
    }

    fn check(&mut self, meta: &UdpMeta, datagram: &[u8], listeners: usize) {
        self.handled += 1;
        let ok = datagram.len() >= DATAGRAM_HEADER && {
            let sender = u32::from_le_bytes(datagram[8..12].try_into().unwrap()) as usize;
            let sum = u32::from_le_bytes(datagram[12..16].try_into().unwrap());
            let seq = u64::from_le_bytes(datagram[..8].try_into().unwrap());
            let listener = usize::from(meta.listener);
            let fine = meta.source.port() != 0
                && listener < listeners
                && Some(meta.received) >= self.last_received[listener]
                && sender < self.last_seq.len()
                && sum == checksum(datagram);
            if fine {
                self.last_received[listener] = Some(meta.received);
                self.last_seq[sender] = self.last_seq[sender].max(seq);
                self.bytes += datagram.len() as u64;
            }
            fine
        };
        if !ok {
            self.corrupted += 1;
        }
    }
}

// ---- sockets ---------------------------------------------------------------------

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---- the pipelines ---------------------------------------------------------------

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    full_drops: AtomicU64,
    handled: AtomicU64,
    /// Receive calls and readiness polls, all listeners together.
    syscalls: AtomicU64,
    /// Datagrams longer than the buffers (never with these senders).
    truncated: AtomicU64,
    /// Ring only: entry bytes (header + record + payload) handled, and the
    /// ring space the consumer passed to read them.
    used_bytes: AtomicU64,
    passed_bytes: AtomicU64,
}

struct Report {
    name: &'static str,
    elapsed: Duration,
    sent: u64,
    received: u64,
    full_drops: u64,
    handled: u64,
    corrupted: u64,
    truncated: u64,
    bytes: u64,
    allocations: u64,
    handler_cpu: Duration,
    syscalls: u64,
    used_bytes: u64,
    passed_bytes: u64,
}

/// How a hand-written listener receives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Recv {
    /// One `recv_from` per datagram.
    Single,
    /// One `recvmmsg` for up to `BATCH` datagrams, into buffers of the
    /// listener's own (the channel then copies each into a `Vec`).
    Mmsg,
    /// One `recvmmsg` straight into the slots of a batch reservation.
    MmsgInPlace,
}

/// Datagrams per `recvmmsg`.
const BATCH: usize = 16;

/// What a pipeline plugs in: its listeners, and how the handler drains.
trait Pipeline: Send + 'static {
    /// Starts the listeners (`config.listeners` sockets on one loopback
    /// port); returns the address the senders send to.
    fn start(
        &mut self,
        config: &Config,
        counters: &Arc<Counters>,
    ) -> std::io::Result<(SocketAddr, Box<dyn ListenerSide>)>;
    /// Handles until every listener is gone and all is drained.
    fn handle(self, checker: &mut Checker, listeners: usize, counters: &Counters);
}

/// The listeners of a running pipeline.
trait ListenerSide {
    /// Datagrams received so far.
    fn received(&self, counters: &Counters) -> u64;
    /// Stops and joins the listeners, leaving the final counts in
    /// `counters`.
    fn stop(self: Box<Self>, counters: &Counters);
}

/// Hand-written listeners: one thread per `SO_REUSEPORT` socket, each
/// calling `receive` on a state of its own until told to stop.
struct Threads {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Threads {
    fn start<L: Send + 'static>(
        config: &Config,
        counters: &Arc<Counters>,
        make: impl Fn() -> L,
        receive: fn(&mut L, &UdpSocket, usize, &Counters) -> bool,
    ) -> std::io::Result<(SocketAddr, Box<dyn ListenerSide>)> {
        let (sockets, addr) = reuseport_group(config.listeners)?;
        let stop = Arc::new(AtomicBool::new(false));
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(id, socket)| {
                let mut state = make();
                let (counters, stop) = (counters.clone(), stop.clone());
                thread::spawn(move || loop {
                    if !receive(&mut state, &socket, id, &counters) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Wait for a datagram *before* reserving, so that no
                        // reservation is held while the socket is idle (it
                        // would hold back the other listeners' entries).
                        counters.syscalls.fetch_add(1, Ordering::Relaxed);
                        wait_readable(&socket, Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Ok((addr, Box::new(Threads { stop, threads })))
    }
}

impl ListenerSide for Threads {
    fn received(&self, counters: &Counters) -> u64 {
        counters.received.load(Ordering::Relaxed)
    }

    fn stop(self: Box<Self>, _counters: &Counters) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("listener");
        }
    }
}

/// The `udp` feature's listeners: `recvmmsg` into their own buffers, one
/// claim per batch (`push_batch_with`), `UdpMeta` records.
impl ListenerSide for Listeners {
    fn received(&self, _counters: &Counters) -> u64 {
        self.stats().datagrams
    }

    fn stop(self: Box<Self>, counters: &Counters) {
        let stats = self.shutdown();
        counters.received.store(stats.datagrams, Ordering::Relaxed);
        counters
            .full_drops
            .store(stats.full_drops, Ordering::Relaxed);
        counters.truncated.store(stats.truncated, Ordering::Relaxed);
        counters
            .syscalls
            .store(stats.polls + stats.receive_calls, Ordering::Relaxed);
    }
}

/// A listener's buffers for `recvmmsg` when it does not receive in place.
type Scratch = Box<[[u8; MAX_DATAGRAM]; BATCH]>;

/// The ring, fed by the `udp` feature's listeners (`recv: None`) or by
/// hand-written ones.
struct RingPipeline {
    producer: Option<mpring::Producer<UdpMeta>>,
    consumer: mpring::Consumer<UdpMeta>,
    recv: Option<Recv>,
}

struct RingListener {
    producer: mpring::Producer<UdpMeta>,
    recv: Recv,
    scratch: Scratch,
}

impl Pipeline for RingPipeline {
    fn start(
        &mut self,
        config: &Config,
        counters: &Arc<Counters>,
    ) -> std::io::Result<(SocketAddr, Box<dyn ListenerSide>)> {
        let producer = self.producer.take().expect("started once");
        match self.recv {
            None => {
                let listeners = Listeners::builder((Ipv4Addr::LOCALHOST, 0).into())
                    .listeners(config.listeners)
                    .batch(BATCH)
                    .max_datagram(MAX_DATAGRAM)
                    .spawn(producer)?;
                Ok((listeners.local_addr(), Box::new(listeners)))
            }
            Some(recv) => Threads::start(
                config,
                counters,
                move || RingListener {
                    producer: producer.clone(),
                    recv,
                    scratch: Box::new([[0; MAX_DATAGRAM]; BATCH]),
                },
                RingListener::receive,
            ),
        }
    }

    fn handle(self, checker: &mut Checker, listeners: usize, counters: &Counters) {
        let mut consumer = self.consumer;
        // Listeners make a system call per datagram (or batch), so the ring
        // does not refill within the microseconds a wait would poll: sleep
        // at once and leave the CPU to them.
        consumer.set_spin(Duration::ZERO);
        let entry_overhead = (8 + std::mem::size_of::<UdpMeta>()) as u64;
        let mut used = 0;
        let tick = Duration::from_millis(100);
        let mut next_timer = Instant::now() + tick;
        loop {
            match consumer.wait_deadline(next_timer) {
                Ok(()) => {
                    consumer.read_batch_meta(64, |meta, datagram| {
                        used += entry_overhead + datagram.len() as u64;
                        checker.check(meta, datagram, listeners);
                    });
                    counters.handled.store(checker.handled, Ordering::Relaxed);
                }
                Err(WaitError::Timeout) => next_timer += tick, // timers would run here
                Err(WaitError::Disconnected) => break,
            }
        }
        counters.used_bytes.store(used, Ordering::Relaxed);
        counters
            .passed_bytes
            .store(consumer.read_offset(), Ordering::Relaxed);
    }
}

impl RingListener {
    /// Receives what `socket` has (non-blocking) and hands it on. Returns
    /// false when the socket had nothing.
    fn receive(&mut self, socket: &UdpSocket, id: usize, counters: &Counters) -> bool {
        counters.syscalls.fetch_add(1, Ordering::Relaxed);
        let RingListener {
            producer,
            recv,
            scratch,
        } = self;
        let received = match recv {
            Recv::Single => match producer.reserve(MAX_DATAGRAM) {
                Ok(mut slot) => match socket.recv_from(&mut slot) {
                    Ok((n, from)) => {
                        slot.commit_len_with(n, meta(from, id));
                        1
                    }
                    // Dropping the reservation aborts it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                    Err(_) => 0, // counted as lost: sent but never received
                },
                Err(ReserveError::Full) => drop_from(socket, scratch, counters),
                Err(e) => panic!("reserve: {e}"),
            },
            // The copying path is the `udp` feature's (`recv: None`).
            Recv::Mmsg => unreachable!("the ring's recvmmsg copy runs on mpring::udp"),
            Recv::MmsgInPlace => {
                // Smaller batches when the ring is fuller.
                let batch = [BATCH, BATCH / 4, 1]
                    .into_iter()
                    .find_map(|count| producer.reserve_batch(count, MAX_DATAGRAM).ok());
                match batch {
                    Some(mut batch) => {
                        let mut got = [Got::default(); BATCH];
                        let n = recv_mmsg(socket, batch.slots_mut(), &mut got);
                        // A datagram longer than its slot would be cut:
                        // never here, the senders stay within the slots.
                        let truncated = got[..n].iter().filter(|g| g.truncated).count();
                        counters
                            .truncated
                            .fetch_add(truncated as u64, Ordering::Relaxed);
                        let commits: [(usize, UdpMeta); BATCH] =
                            std::array::from_fn(|i| (got[i].len, meta(got[i].from, id)));
                        batch.commit_with(&commits[..n]);
                        n
                    }
                    None => drop_from(socket, scratch, counters),
                }
            }
        };
        counters
            .received
            .fetch_add(received as u64, Ordering::Relaxed);
        received > 0
    }
}

/// The ring is full: a real listener drops and counts, but the datagrams
/// must still leave the socket. Returns how many left it.
fn drop_from(socket: &UdpSocket, scratch: &mut Scratch, counters: &Counters) -> usize {
    let mut got = [Got::default(); BATCH];
    let n = recv_mmsg(socket, scratch.iter_mut().map(|b| &mut b[..]), &mut got);
    counters.full_drops.fetch_add(n as u64, Ordering::Relaxed);
    n
}

struct ChannelPipeline {
    tx: crossbeam_channel::Sender<(UdpMeta, Vec<u8>)>,
    rx: crossbeam_channel::Receiver<(UdpMeta, Vec<u8>)>,
    recv: Recv,
}

struct ChannelListener {
    tx: crossbeam_channel::Sender<(UdpMeta, Vec<u8>)>,
    recv: Recv,
    scratch: Scratch,
}

impl Pipeline for ChannelPipeline {
    fn start(
        &mut self,
        config: &Config,
        counters: &Arc<Counters>,
    ) -> std::io::Result<(SocketAddr, Box<dyn ListenerSide>)> {
        let (tx, recv) = (self.tx.clone(), self.recv);
        Threads::start(
            config,
            counters,
            move || ChannelListener {
                tx: tx.clone(),
                recv,
                scratch: Box::new([[0; MAX_DATAGRAM]; BATCH]),
            },
            ChannelListener::receive,
        )
    }

    fn handle(self, checker: &mut Checker, listeners: usize, counters: &Counters) {
        let ChannelPipeline { tx, rx, .. } = self;
        drop(tx);
        let tick = Duration::from_millis(100);
        let mut next_timer = Instant::now() + tick;
        loop {
            match rx.recv_deadline(next_timer) {
                Ok((meta, datagram)) => {
                    checker.check(&meta, &datagram, listeners);
                    for (meta, datagram) in rx.try_iter().take(63) {
                        checker.check(&meta, &datagram, listeners);
                    }
                    counters.handled.store(checker.handled, Ordering::Relaxed);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => next_timer += tick,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

impl ChannelListener {
    /// What a QUIC implementer would write: receive into buffers, copy each
    /// datagram into a fresh `Vec`, send it.
    fn receive(&mut self, socket: &UdpSocket, id: usize, counters: &Counters) -> bool {
        counters.syscalls.fetch_add(1, Ordering::Relaxed);
        let ChannelListener { tx, recv, scratch } = self;
        let mut got = [Got::default(); BATCH];
        let n = if *recv == Recv::Single {
            match socket.recv_from(&mut scratch[0]) {
                Ok((n, from)) => {
                    got[0] = Got {
                        len: n,
                        from,
                        truncated: false,
                    };
                    1
                }
                Err(_) => 0,
            }
        } else {
            recv_mmsg(socket, scratch.iter_mut().map(|b| &mut b[..]), &mut got)
        };
        for (datagram, got) in scratch.iter().zip(&got).take(n) {
            if got.truncated {
                counters.truncated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if tx
                .try_send((meta(got.from, id), datagram[..got.len].to_vec()))
                .is_err()
            {
                counters.full_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.received.fetch_add(n as u64, Ordering::Relaxed);
        n > 0
    }
}

fn run<P: Pipeline>(name: &'static str, pipeline: P, config: &Config) -> std::io::Result<Report> {
    let mut pipeline = pipeline;
    let counters = Arc::new(Counters::default());
    let (addr, listeners) = pipeline.start(config, &counters)?;
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(config.senders + 2));

    let senders: Vec<_> = (0..config.senders)
        .map(|sender| {
            let (counters, stop, barrier, config) = (
                counters.clone(),
                stop.clone(),
                barrier.clone(),
                config.clone(),
            );
            thread::spawn(move || {
                let socket =
                    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a sender socket");
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (sender as u64 + 1));
                let mut buf = [0u8; MAX_DATAGRAM];
                let quota = config.datagrams / config.senders as u64;
                barrier.wait();
                let end = Instant::now() + config.duration;
                for seq in 0..quota {
                    if seq % 256 == 0 && (Instant::now() >= end || stop.load(Ordering::Relaxed)) {
                        break;
                    }
                    let len = rng.size(config.sizes);
                    fill_datagram(&mut buf[..len], sender as u32, seq);
                    // Loopback refuses only when buffers are full: retry.
                    while socket.send_to(&buf[..len], addr).is_err() {
                        thread::yield_now();
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let handler = {
        let (counters, barrier) = (counters.clone(), barrier.clone());
        let (listeners, senders) = (config.listeners, config.senders);
        thread::spawn(move || {
            let mut checker = Checker::new(senders, listeners);
            barrier.wait();
            let cpu = thread_cpu_time();
            pipeline.handle(&mut checker, listeners, &counters);
            (checker, thread_cpu_time() - cpu)
        })
    };

    barrier.wait();
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut stderr = std::io::stderr();
    // On a terminal the progress line redraws itself; piped, it prints a
    // line a second.
    let tty = std::io::IsTerminal::is_terminal(&stderr);
    let (every, end) = if tty { (250, "\r") } else { (1000, "\n") };
    while senders.iter().any(|s| !s.is_finished()) {
        thread::sleep(Duration::from_millis(every));
        let _ = write!(
            stderr,
            "{}{name}: {:.1} s, sent {}, received {}, handled {}   {}",
            if tty { "\r" } else { "" },
            start.elapsed().as_secs_f64(),
            counters.sent.load(Ordering::Relaxed),
            listeners.received(&counters),
            counters.handled.load(Ordering::Relaxed),
            if tty { "" } else { end },
        );
    }
    for s in senders {
        s.join().expect("sender");
    }
    // Let the last datagrams land, then stop the listeners.
    let sent = counters.sent.load(Ordering::Relaxed);
    let settle = Instant::now() + Duration::from_secs(1);
    while listeners.received(&counters) < sent && Instant::now() < settle {
        thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    listeners.stop(&counters);
    let (checker, handler_cpu) = handler.join().expect("handler");
    COUNTING.store(false, Ordering::Relaxed);
    if tty {
        let _ = writeln!(stderr);
    }
    Ok(Report {
        name,
        elapsed,
        sent,
        received: counters.received.load(Ordering::Relaxed),
        full_drops: counters.full_drops.load(Ordering::Relaxed),
        handled: checker.handled,
        corrupted: checker.corrupted,
        truncated: counters.truncated.load(Ordering::Relaxed),
        bytes: checker.bytes,
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        handler_cpu,
        syscalls: counters.syscalls.load(Ordering::Relaxed),
        used_bytes: counters.used_bytes.load(Ordering::Relaxed),
        passed_bytes: counters.passed_bytes.load(Ordering::Relaxed),
    })
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} threads per pipeline ({} listeners, {} senders, 1 handler, {} busy) on {cores} cores: \
         with more threads than cores they take turns, which shows in drops and handler CPU",
        config.listeners + config.senders.max(1) + 1 + config.busy,
        config.listeners,
        config.senders.max(1),
        config.busy,
    );
    println!(
        "{} listeners (SO_REUSEPORT on one loopback port), {} senders, sizes {:?}, up to {} datagrams or {:.1} s per pipeline",
        config.listeners,
        config.senders,
        config.sizes,
        config.datagrams,
        config.duration.as_secs_f64()
    );
    let busy_stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..config.busy)
        .map(|_| {
            let stop = busy_stop.clone();
            thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
            })
        })
        .collect();
    let mut reports = Vec::new();
    for &(name, pipeline) in PIPELINES {
        if !config.pipelines.iter().any(|p| p == name) {
            continue;
        }
        let report = match pipeline {
            Kind::Ring(recv) => {
                let (producer, consumer) =
                    match Ring::builder(config.capacity).metadata::<UdpMeta>().build() {
                        Ok(handles) => handles,
                        Err(e) => {
                            eprintln!("--capacity: {e}");
                            return ExitCode::from(2);
                        }
                    };
                let pipeline = RingPipeline {
                    producer: Some(producer),
                    consumer,
                    recv,
                };
                run(name, pipeline, &config)
            }
            Kind::Channel(recv) => {
                let (tx, rx) = crossbeam_channel::bounded((config.capacity / 1200).max(1));
                run(name, ChannelPipeline { tx, rx, recv }, &config)
            }
        };
        reports.push(report);
    }
    busy_stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().expect("busy thread");
    }
    println!();
    println!("| pipeline | sent | listeners: datagrams/s | handler: datagrams/s | MB/s | drops (queue full) | lost in the kernel | system calls / datagram | heap allocations / datagram | handler CPU / datagram | ring room used | corrupted |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut corrupted = 0;
    for report in reports {
        let r = match report {
            Ok(r) => r,
            Err(e) => {
                eprintln!("socket setup failed: {e}");
                return ExitCode::from(2);
            }
        };
        let secs = r.elapsed.as_secs_f64();
        let room = if r.passed_bytes > 0 {
            format!(
                "{:.1}%",
                100.0 * r.used_bytes as f64 / r.passed_bytes as f64
            )
        } else {
            "-".to_string()
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.3} | {:.0} ns | {} | {} |",
            r.name,
            r.sent,
            r.received as f64 / secs,
            r.handled as f64 / secs,
            r.bytes as f64 / secs / 1e6,
            r.full_drops,
            r.sent.saturating_sub(r.received),
            r.syscalls as f64 / r.received.max(1) as f64,
            r.allocations as f64 / r.handled.max(1) as f64,
            r.handler_cpu.as_nanos() as f64 / r.handled.max(1) as f64,
            room,
            r.corrupted + r.truncated,
        );
        corrupted += r.corrupted + r.truncated;
    }
    if corrupted > 0 {
        eprintln!("{corrupted} datagrams arrived corrupted");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `k` non-blocking IPv4 UDP sockets bound to one loopback port with
/// `SO_REUSEPORT` (the kernel spreads incoming datagrams over them by a hash
/// of the source address), and that port's address.
fn reuseport_group(k: usize) -> std::io::Result<(Vec<UdpSocket>, SocketAddr)> {
    fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.set_recv_buffer_size(4 << 20)?;
        socket.set_send_buffer_size(4 << 20)?;
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    }
    let first = bind((Ipv4Addr::LOCALHOST, 0).into())?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..k.max(1) {
        sockets.push(bind(addr)?);
    }
    Ok((sockets, addr))
}

/// Waits until `socket` is readable or `timeout` passes: a listener never
/// holds a reservation across a blocking receive.
fn wait_readable(socket: &UdpSocket, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, timeout_ms) };
}

/// One datagram as `recvmmsg` reported it.
#[derive(Clone, Copy)]
struct Got {
    len: usize,
    from: SocketAddr,
    /// Longer than its buffer: the kernel cut it (`MSG_TRUNC`).
    truncated: bool,
}

impl Default for Got {
    fn default() -> Got {
        Got {
            len: 0,
            from: (Ipv4Addr::UNSPECIFIED, 0).into(),
            truncated: false,
        }
    }
}

/// Receives up to `BATCH` datagrams with one non-blocking `recvmmsg`, one
/// into each of `bufs`, and describes them in `got`. Returns how many
/// arrived (0 when none was waiting, or on an error: a listener counts
/// what it received, never panics on a socket error).
fn recv_mmsg<'b>(
    socket: &UdpSocket,
    bufs: impl Iterator<Item = &'b mut [u8]>,
    got: &mut [Got; BATCH],
) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let (mut iovs, mut names, mut msgs): (
        [libc::iovec; BATCH],
        [libc::sockaddr_storage; BATCH],
        [libc::mmsghdr; BATCH],
    ) = unsafe { std::mem::zeroed() };
    let mut n = 0;
    for buf in bufs.take(BATCH) {
        iovs[n] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        n += 1;
    }
    for i in 0..n {
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
    }
    // SAFETY: `n` headers, each pointing at one iovec over a live, writable
    // buffer (borrowed for this call) and at a sockaddr_storage; no timeout.
    let r = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let r = usize::try_from(r).unwrap_or(0);
    for i in 0..r {
        got[i] = Got {
            len: msgs[i].msg_len as usize,
            from: socket_addr(&names[i]),
            truncated: msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    r
}

/// The address the kernel wrote into a `sockaddr_storage`.
fn socket_addr(name: &libc::sockaddr_storage) -> SocketAddr {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            (ip, u16::from_be(a.sin_port)).into()
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            (ip, u16::from_be(a.sin6_port)).into()
        }
        _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
    }
}
