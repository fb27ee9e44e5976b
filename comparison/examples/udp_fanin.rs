//! The job mpring exists for: UDP listener threads receive datagrams and hand
//! them to one datagram-handler thread.
//!
//! K listener threads each own a UDP socket bound to the same loopback port
//! with `SO_REUSEPORT`. Each receives straight into a ring reservation sized
//! for the largest datagram plus a 32-byte metadata header (source address,
//! listener id, receive time) and commits only what arrived: no copy, no
//! allocation. A handler thread drains batches with a blocking wait and a
//! deadline and checks every datagram (sequence number and checksum, put in
//! by the sender). A built-in load generator sends QUIC-like sizes on
//! loopback. Then the same pipeline runs again with a `crossbeam-channel` of
//! `Vec<u8>` in place of the ring, and a table compares the two.
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

use mpring::{ReserveError, Ring, WaitError};

use socket2::{Domain, Protocol, Socket, Type};

/// Bytes of metadata in front of every datagram in the ring (or `Vec`).
const META: usize = 32;
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
}

const HELP: &str = "\
udp_fanin: UDP listener threads -> mpring -> one handler thread, on loopback,
then the same with crossbeam-channel of Vec<u8>, and a comparison table.

USAGE: cargo run --release --example udp_fanin -- [OPTIONS]

OPTIONS:
  --listeners K     listener threads, one SO_REUSEPORT socket each   [2]
  --senders S       load generator threads, one socket each          [= K]
  --duration SECS   longest time each pipeline sends for             [4]
  --datagrams N     most datagrams each pipeline sends               [2000000]
  --capacity BYTES  ring capacity, a power of two (the channel gets
                    BYTES / 1200 slots)                              [4194304]
  --sizes MIX       quic (mostly 1200-1350 B, some 40-100 B acks, a few
                    up to 1500 B), a size like 1350, or a range like
                    20-1500                                          [quic]
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
];

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        listeners: 2,
        senders: 0,
        duration: Duration::from_secs(4),
        datagrams: 2_000_000,
        capacity: 4 << 20,
        sizes: Sizes::Quic,
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

/// What the handler does with every entry: metadata, then the datagram.
struct Checker {
    handled: u64,
    corrupted: u64,
    bytes: u64,
    /// Highest sequence number seen per sender (UDP may reorder or drop on
    /// loopback under load; only corruption is an error).
    last_seq: Vec<u64>,
}

impl Checker {
    fn new(senders: usize) -> Checker {
        Checker {
            handled: 0,
            corrupted: 0,
            bytes: 0,
            last_seq: vec![0; senders],
        }
    }

    fn check(&mut self, entry: &[u8], listeners: usize) {
        self.handled += 1;
        let ok = entry.len() >= META + DATAGRAM_HEADER && {
            let (meta, datagram) = entry.split_at(META);
            let port = u16::from_le_bytes([meta[16], meta[17]]);
            let listener = meta[18] as usize;
            let sender = u32::from_le_bytes(datagram[8..12].try_into().unwrap()) as usize;
            let sum = u32::from_le_bytes(datagram[12..16].try_into().unwrap());
            let seq = u64::from_le_bytes(datagram[..8].try_into().unwrap());
            let fine = port != 0
                && listener < listeners
                && sender < self.last_seq.len()
                && sum == checksum(datagram);
            if fine {
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

/// The 32-byte metadata: IPv4 address mapped to IPv6 (16), port (2),
/// listener id (1), padding, receive time in ns since `base` (8, at 24).
fn write_meta(meta: &mut [u8], from: SocketAddr, listener: usize, base: Instant) {
    let ip = match from {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    };
    meta[..16].copy_from_slice(&ip.octets());
    meta[16..18].copy_from_slice(&from.port().to_le_bytes());
    meta[18] = listener as u8;
    meta[24..32].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
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
}

struct Report {
    name: &'static str,
    elapsed: Duration,
    sent: u64,
    received: u64,
    full_drops: u64,
    handled: u64,
    corrupted: u64,
    bytes: u64,
    allocations: u64,
    handler_cpu: Duration,
}

/// What a pipeline plugs in: how listeners hand a datagram on, and how the
/// handler drains.
trait Pipeline: Send + 'static {
    type Listener: Send + 'static;
    fn listener(&self) -> Self::Listener;
    /// Receives what `socket` has (non-blocking) and hands it on.
    /// Returns false when the socket had nothing.
    fn receive(
        listener: &mut Self::Listener,
        socket: &UdpSocket,
        id: usize,
        base: Instant,
        counters: &Counters,
    ) -> bool;
    /// Handles until every listener is gone and all is drained.
    fn handle(self, checker: &mut Checker, listeners: usize, counters: &Counters);
}

struct RingPipeline {
    producer: mpring::Producer,
    consumer: mpring::Consumer,
}

impl Pipeline for RingPipeline {
    type Listener = mpring::Producer;

    fn listener(&self) -> mpring::Producer {
        self.producer.clone()
    }

    fn receive(
        producer: &mut mpring::Producer,
        socket: &UdpSocket,
        id: usize,
        base: Instant,
        counters: &Counters,
    ) -> bool {
        match producer.reserve(META + MAX_DATAGRAM) {
            Ok(mut slot) => match socket.recv_from(&mut slot[META..]) {
                Ok((n, from)) => {
                    write_meta(&mut slot[..META], from, id, base);
                    slot.commit_len(META + n);
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    true
                }
                // Dropping the reservation aborts it.
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(e) => panic!("recv: {e}"),
            },
            Err(ReserveError::Full) => {
                // A real listener drops and counts; the datagram must still
                // leave the socket.
                let mut scratch = [0u8; MAX_DATAGRAM];
                match socket.recv_from(&mut scratch) {
                    Ok(_) => {
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        counters.full_drops.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(_) => false,
                }
            }
            Err(e) => panic!("reserve: {e}"),
        }
    }

    fn handle(self, checker: &mut Checker, listeners: usize, counters: &Counters) {
        let RingPipeline {
            producer,
            mut consumer,
        } = self;
        drop(producer);
        // Listeners make a system call per datagram, so the ring does not
        // refill within the microseconds a wait would poll: sleep at once
        // and leave the CPU to them.
        consumer.set_spin(Duration::ZERO);
        let tick = Duration::from_millis(100);
        let mut next_timer = Instant::now() + tick;
        loop {
            match consumer
                .read_batch_deadline(64, next_timer, |entry| checker.check(entry, listeners))
            {
                Ok(_) => counters.handled.store(checker.handled, Ordering::Relaxed),
                Err(WaitError::Timeout) => next_timer += tick, // timers would run here
                Err(WaitError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

struct ChannelPipeline {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
}

impl Pipeline for ChannelPipeline {
    type Listener = crossbeam_channel::Sender<Vec<u8>>;

    fn listener(&self) -> crossbeam_channel::Sender<Vec<u8>> {
        self.tx.clone()
    }

    fn receive(
        tx: &mut crossbeam_channel::Sender<Vec<u8>>,
        socket: &UdpSocket,
        id: usize,
        base: Instant,
        counters: &Counters,
    ) -> bool {
        // What a QUIC implementer would write: receive into a buffer, copy
        // into a fresh Vec, send it.
        let mut buf = [0u8; META + MAX_DATAGRAM];
        match socket.recv_from(&mut buf[META..]) {
            Ok((n, from)) => {
                write_meta(&mut buf[..META], from, id, base);
                counters.received.fetch_add(1, Ordering::Relaxed);
                if tx.try_send(buf[..META + n].to_vec()).is_err() {
                    counters.full_drops.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("recv: {e}"),
        }
    }

    fn handle(self, checker: &mut Checker, listeners: usize, counters: &Counters) {
        let ChannelPipeline { tx, rx } = self;
        drop(tx);
        let tick = Duration::from_millis(100);
        let mut next_timer = Instant::now() + tick;
        loop {
            match rx.recv_deadline(next_timer) {
                Ok(first) => {
                    checker.check(&first, listeners);
                    for entry in rx.try_iter().take(63) {
                        checker.check(&entry, listeners);
                    }
                    counters.handled.store(checker.handled, Ordering::Relaxed);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => next_timer += tick,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

fn run<P: Pipeline>(name: &'static str, pipeline: P, config: &Config) -> std::io::Result<Report> {
    let (sockets, addr) = reuseport_group(config.listeners)?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let barrier = Arc::new(Barrier::new(config.listeners + config.senders + 2));

    let listeners: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(id, socket)| {
            let mut handle = pipeline.listener();
            let (counters, stop, barrier) = (counters.clone(), stop.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                loop {
                    if !P::receive(&mut handle, &socket, id, base, &counters) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Wait for a datagram *before* reserving, so that no
                        // reservation is held while the socket is idle (it
                        // would hold back the other listeners' entries).
                        wait_readable(&socket, Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

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
            let mut checker = Checker::new(senders);
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
            counters.received.load(Ordering::Relaxed),
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
    while counters.received.load(Ordering::Relaxed) < sent && Instant::now() < settle {
        thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in listeners {
        l.join().expect("listener");
    }
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
        bytes: checker.bytes,
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        handler_cpu,
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
        "{} threads per pipeline ({} listeners, {} senders, 1 handler) on {cores} cores: \
         with more threads than cores they take turns, which shows in drops and handler CPU",
        config.listeners + config.senders.max(1) + 1,
        config.listeners,
        config.senders.max(1),
    );
    println!(
        "{} listeners (SO_REUSEPORT on one loopback port), {} senders, sizes {:?}, up to {} datagrams or {:.1} s per pipeline",
        config.listeners,
        config.senders,
        config.sizes,
        config.datagrams,
        config.duration.as_secs_f64()
    );
    let ring = match Ring::new(config.capacity) {
        Ok((producer, consumer)) => RingPipeline { producer, consumer },
        Err(e) => {
            eprintln!("--capacity: {e}");
            return ExitCode::from(2);
        }
    };
    let (tx, rx) = crossbeam_channel::bounded((config.capacity / 1200).max(1));
    let reports = [
        run("mpring", ring, &config),
        run(
            "crossbeam-channel<Vec<u8>>",
            ChannelPipeline { tx, rx },
            &config,
        ),
    ];
    println!();
    println!("| pipeline | sent | listeners: datagrams/s | handler: datagrams/s | MB/s | drops (queue full) | lost in the kernel | heap allocations / datagram | handler CPU / datagram | corrupted |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
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
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.3} | {:.0} ns | {} |",
            r.name,
            r.sent,
            r.received as f64 / secs,
            r.handled as f64 / secs,
            r.bytes as f64 / secs / 1e6,
            r.full_drops,
            r.sent.saturating_sub(r.received),
            r.allocations as f64 / r.handled.max(1) as f64,
            r.handler_cpu.as_nanos() as f64 / r.handled.max(1) as f64,
            r.corrupted,
        );
        corrupted += r.corrupted;
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
