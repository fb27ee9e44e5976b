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
//! `crossbeam-channel` of `(UdpMeta, Vec<u8>)` in place of the ring.
//!
//! Every pipeline runs several rounds, in turn. Each round is timed from
//! the senders' first send to the handler's last handled datagram (both
//! timestamped where they happen), printed next to the senders' own send
//! duration. A table gives each pipeline's medians over the rounds, a
//! legend explains its columns, and a verdict, computed from this run,
//! says which pipeline did better on what ("no clear difference" where
//! the gap is within the rounds' spread).
//!
//! ```text
//! cargo run --release --example udp_fanin
//! cargo run --release --example udp_fanin -- --help
//! ```
//!
//! Exits with status 1 if any datagram arrived corrupted, 2 on a bad flag.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::ErrorKind;
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

/// Counting allocations during a run (every thread).
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Summing allocated bytes while a queue is built (one thread, no run).
static SIZING: AtomicBool = AtomicBool::new(false);
static SIZED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
    if SIZING.load(Ordering::Relaxed) {
        SIZED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Builds a queue and says how many heap bytes building it took.
fn sized<T>(build: impl FnOnce() -> T) -> (T, u64) {
    SIZED_BYTES.store(0, Ordering::Relaxed);
    SIZING.store(true, Ordering::Relaxed);
    let built = build();
    SIZING.store(false, Ordering::Relaxed);
    (built, SIZED_BYTES.load(Ordering::Relaxed))
}

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
    rounds: usize,
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

/// The pairs the verdict compares: a ring pipeline and the channel
/// pipeline that receives the same way.
const PAIRS: &[(&str, &str)] = &[
    ("mpring-udp", "channel-mmsg"),
    ("mpring-mmsg-in-place", "channel-mmsg"),
    ("mpring-recv", "channel-recv"),
];

const HELP: &str = "\
udp_fanin: UDP listener threads -> mpring -> one handler thread, on loopback,
then the same with a crossbeam-channel of Vec<u8>; each receiving 16
datagrams per recvmmsg and one per recv_from. Every pipeline runs several
rounds in turn; a table of medians, a legend and a computed verdict follow.

USAGE: cargo run --release --example udp_fanin -- [OPTIONS]

OPTIONS:
  --listeners K     listener threads, one SO_REUSEPORT socket each   [2]
  --senders S       load generator threads, one socket each          [= K]
  --duration SECS   longest time each pipeline sends for, per round  [1]
  --datagrams N     most datagrams each pipeline sends per round     [2000000]
  --rounds R        rounds per pipeline (the verdict needs 2 or more) [3]
  --capacity BYTES  ring capacity, a power of two, at least 4096 (the
                    channel gets BYTES / 1200 slots)                 [4194304]
  --sizes MIX       quic (mostly 1200-1350 B, some 40-100 B acks, a few
                    up to 1500 B), a size like 1350, or a range like
                    20-1500 (16 to 1500)                             [quic]
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
  --busy N          N more threads that only burn CPU meanwhile, to see
                    the pipelines under CPU pressure                 [0]
  -h, --help        this text

Exits with status 1 if any datagram arrived corrupted, 2 on a bad option.";

/// The options that take a value (see `HELP`).
const KNOWN_FLAGS: &[&str] = &[
    "--listeners",
    "--senders",
    "--duration",
    "--datagrams",
    "--rounds",
    "--capacity",
    "--sizes",
    "--pipelines",
    "--busy",
];

/// The configuration, `Ok(None)` for `--help`, or the message to refuse
/// the command line with.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        listeners: 2,
        senders: 0,
        duration: Duration::from_secs(1),
        datagrams: 2_000_000,
        capacity: 4 << 20,
        sizes: Sizes::Quic,
        pipelines: PIPELINES.iter().map(|(name, _)| name.to_string()).collect(),
        rounds: 3,
        busy: 0,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        if !KNOWN_FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag} (see --help)"));
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a whole number: {v}"))
        };
        let positive = |v: &str| match number(v)? {
            0 => Err(format!("{flag}: must be at least 1")),
            n => Ok(n),
        };
        match flag.as_str() {
            "--listeners" => config.listeners = positive(&value)?.min(64) as usize,
            "--senders" => config.senders = positive(&value)?.min(64) as usize,
            "--duration" => {
                let secs: f64 = value
                    .parse()
                    .map_err(|_| format!("--duration: not a number of seconds: {value}"))?;
                if !(0.05..=600.0).contains(&secs) {
                    return Err(format!("--duration: {value} s (0.05 to 600)"));
                }
                config.duration = Duration::from_secs_f64(secs);
            }
            "--datagrams" => config.datagrams = positive(&value)?,
            "--rounds" => config.rounds = positive(&value)?.min(100) as usize,
            "--busy" => config.busy = number(&value)?.min(64) as usize,
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
            "--capacity" => {
                config.capacity = number(&value)? as usize;
                // Refused here, before anything runs: not a power of two, or
                // too small for the largest datagram with its record.
                match Ring::builder(config.capacity).metadata::<UdpMeta>().build() {
                    Ok((producer, _)) if producer.max_payload() >= MAX_DATAGRAM => {}
                    Ok(_) => {
                        return Err(format!(
                            "--capacity: {value} bytes cannot hold a {MAX_DATAGRAM}-byte \
                             datagram with its record (4096 or more)"
                        ))
                    }
                    Err(e) => return Err(format!("--capacity: {e}")),
                }
            }
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
    if config.datagrams < config.senders as u64 {
        return Err(format!(
            "--datagrams: {} is fewer than one per sender ({} senders)",
            config.datagrams, config.senders
        ));
    }
    Ok(Some(config))
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
    /// When the handler finished the last batch that had datagrams in it.
    last_handled: Option<Instant>,
    /// The most datagrams seen waiting in the channel (the ring's wait in
    /// its buffer, allocated up front).
    peak_queued: u64,
}

impl Checker {
    fn new(senders: usize, listeners: usize) -> Checker {
        Checker {
            handled: 0,
            corrupted: 0,
            bytes: 0,
            last_seq: vec![0; senders],
            last_received: vec![None; listeners],
            last_handled: None,
            peak_queued: 0,
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

/// CPU time the checks take per datagram of this size mix, on datagrams
/// already in the cache (1 MiB of them, checked over and over): the least
/// of seven passes, so that a pass another process disturbed does not
/// count. The handler's CPU minus this is what fetching the datagrams from
/// another core, the queue and the waiting cost it.
fn check_cost(config: &Config) -> Duration {
    const SPREAD: usize = 1 << 20;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut buffer = vec![0u8; SPREAD];
    let mut datagrams = Vec::new();
    let mut at = 0;
    loop {
        let len = rng.size(config.sizes);
        if at + len > SPREAD {
            break;
        }
        let seq = datagrams.len() as u64;
        fill_datagram(&mut buffer[at..at + len], 0, seq);
        datagrams.push(at..at + len);
        at += len.next_multiple_of(64);
    }
    let record = meta((Ipv4Addr::LOCALHOST, 1).into(), 0);
    (0..7)
        .map(|_| {
            let mut checker = Checker::new(1, 1);
            let cpu = thread_cpu_time();
            for range in &datagrams {
                checker.check(&record, &buffer[range.clone()], 1);
            }
            let spent = thread_cpu_time() - cpu;
            assert_eq!(
                checker.corrupted, 0,
                "the calibration's datagrams are intact"
            );
            spent / datagrams.len() as u32
        })
        .min()
        .expect("seven passes")
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

/// How many times the calling thread went to sleep (voluntary context
/// switches: it blocked waiting for something).
fn thread_sleeps() -> u64 {
    // SAFETY: all-zero is a valid `rusage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to write into.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_nvcsw as u64
}

// ---- the pipelines ---------------------------------------------------------------

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    full_drops: AtomicU64,
    /// Receive calls and readiness polls, all listeners together.
    syscalls: AtomicU64,
    /// Datagrams longer than the buffers (never with these senders).
    truncated: AtomicU64,
    /// Ring only: entry bytes (header + record + payload) handled, and the
    /// ring space the consumer passed to read them.
    used_bytes: AtomicU64,
    passed_bytes: AtomicU64,
}

/// One round of one pipeline.
struct Report {
    sent: u64,
    /// The senders' first send to their last send's return.
    send_duration: Duration,
    /// The senders' first send to the handler's last handled datagram.
    window: Duration,
    received: u64,
    full_drops: u64,
    handled: u64,
    corrupted: u64,
    truncated: u64,
    allocations: u64,
    handler_cpu: Duration,
    handler_sleeps: u64,
    syscalls: u64,
    used_bytes: u64,
    passed_bytes: u64,
    /// Heap bytes the queue took when it was built (ring: its buffer;
    /// channel: its slots).
    queue_bytes: u64,
    /// Channel: the datagrams' own bytes (a Vec each) at the most
    /// datagrams seen waiting in it.
    peak_vec_bytes: u64,
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
                    let n = consumer.read_batch_meta(64, |meta, datagram| {
                        used += entry_overhead + datagram.len() as u64;
                        checker.check(meta, datagram, listeners);
                    });
                    if n > 0 {
                        checker.last_handled = Some(Instant::now());
                    }
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

    fn handle(self, checker: &mut Checker, listeners: usize, _counters: &Counters) {
        let ChannelPipeline { tx, rx, .. } = self;
        drop(tx);
        let tick = Duration::from_millis(100);
        let mut next_timer = Instant::now() + tick;
        loop {
            match rx.recv_deadline(next_timer) {
                Ok((meta, datagram)) => {
                    // This one and those still waiting (two loads).
                    checker.peak_queued = checker.peak_queued.max(1 + rx.len() as u64);
                    checker.check(&meta, &datagram, listeners);
                    for (meta, datagram) in rx.try_iter().take(63) {
                        checker.check(&meta, &datagram, listeners);
                    }
                    checker.last_handled = Some(Instant::now());
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

/// Runs one round of a pipeline: starts its listeners and handler, sends
/// for `config.duration` (or `config.datagrams`), lets the last datagrams
/// land, stops and reports.
fn run<P: Pipeline>(pipeline: P, queue_bytes: u64, config: &Config) -> std::io::Result<Report> {
    let mut pipeline = pipeline;
    let counters = Arc::new(Counters::default());
    let (addr, listeners) = pipeline.start(config, &counters)?;
    let barrier = Arc::new(Barrier::new(config.senders + 2));

    let senders: Vec<_> = (0..config.senders)
        .map(|sender| {
            let (barrier, config) = (barrier.clone(), config.clone());
            thread::spawn(move || {
                let socket =
                    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a sender socket");
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (sender as u64 + 1));
                let mut buf = [0u8; MAX_DATAGRAM];
                let quota = config.datagrams / config.senders as u64;
                barrier.wait();
                let end = Instant::now() + config.duration;
                let mut first_send = None;
                let mut sent = 0;
                for seq in 0..quota {
                    if seq % 256 == 0 && Instant::now() >= end {
                        break;
                    }
                    let len = rng.size(config.sizes);
                    fill_datagram(&mut buf[..len], sender as u32, seq);
                    if first_send.is_none() {
                        first_send = Some(Instant::now());
                    }
                    // Loopback refuses only when buffers are full: retry.
                    while socket.send_to(&buf[..len], addr).is_err() {
                        thread::yield_now();
                    }
                    sent += 1;
                }
                // Right after the last send returned.
                (sent, first_send, Instant::now())
            })
        })
        .collect();

    let handler = {
        let (counters, barrier) = (counters.clone(), barrier.clone());
        let (listeners, senders) = (config.listeners, config.senders);
        thread::spawn(move || {
            let mut checker = Checker::new(senders, listeners);
            barrier.wait();
            let (cpu, sleeps) = (thread_cpu_time(), thread_sleeps());
            pipeline.handle(&mut checker, listeners, &counters);
            (checker, thread_cpu_time() - cpu, thread_sleeps() - sleeps)
        })
    };

    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    barrier.wait();
    let (mut sent, mut first_send, mut last_send) = (0, None::<Instant>, None::<Instant>);
    for s in senders {
        let (n, first, last) = s.join().expect("sender");
        sent += n;
        first_send = match (first_send, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_send = Some(last_send.map_or(last, |l| l.max(last)));
    }
    // Let the last datagrams land: until all arrived, or none came for
    // 100 ms (the rest was lost in the kernel). Not timed: the window ends
    // at the handler's last datagram, stamped by the handler.
    let (mut seen, mut quiet_since) = (listeners.received(&counters), Instant::now());
    while seen < sent && quiet_since.elapsed() < Duration::from_millis(100) {
        thread::sleep(Duration::from_millis(5));
        let now = listeners.received(&counters);
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        }
    }
    listeners.stop(&counters);
    let (checker, handler_cpu, handler_sleeps) = handler.join().expect("handler");
    COUNTING.store(false, Ordering::Relaxed);
    let since_first = |t: Option<Instant>| match (first_send, t) {
        (Some(first), Some(t)) => t.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    Ok(Report {
        sent,
        send_duration: since_first(last_send),
        window: since_first(checker.last_handled),
        received: counters.received.load(Ordering::Relaxed),
        full_drops: counters.full_drops.load(Ordering::Relaxed),
        handled: checker.handled,
        corrupted: checker.corrupted,
        truncated: counters.truncated.load(Ordering::Relaxed),
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        handler_cpu,
        handler_sleeps,
        syscalls: counters.syscalls.load(Ordering::Relaxed),
        used_bytes: counters.used_bytes.load(Ordering::Relaxed),
        passed_bytes: counters.passed_bytes.load(Ordering::Relaxed),
        queue_bytes,
        peak_vec_bytes: checker.peak_queued * checker.bytes / checker.handled.max(1),
    })
}

// ---- the table and the verdict ------------------------------------------------

/// A column the verdict compares, computed from one round's report and
/// the checks' own CPU per datagram (ns).
struct Metric {
    /// As the verdict names it.
    name: &'static str,
    lower_is_better: bool,
    value: fn(&Report, f64) -> f64,
    show: fn(f64) -> String,
    /// Why the ring's side can come out ahead, and why the channel's.
    ring_why: &'static str,
    channel_why: &'static str,
}

fn per(n: u64, d: u64) -> f64 {
    n as f64 / d.max(1) as f64
}

/// Why listener system calls differ: not the queue.
const LOOPS_WHY: &str = "a matter of the listeners' loops and of how many datagrams waited per \
                         call, not of the queue";
/// What mpring::udp's listeners do differently from the hand-written ones.
const UDP_LOOP: &str = ": mpring::udp's listeners poll again after a short batch, the \
                        hand-written ones call recvmmsg until the socket is empty";

const METRICS: &[Metric] = &[
    Metric {
        name: "datagrams handled/s",
        lower_is_better: false,
        value: |r, _| r.handled as f64 / r.window.as_secs_f64().max(1e-9),
        show: |v| format!("{:.0} k", v / 1e3),
        ring_why: "all threads share the cores, and a pipeline that costs less CPU per \
                   datagram leaves more of them to sending and receiving",
        channel_why: "all threads share the cores, and a pipeline that costs less CPU per \
                      datagram leaves more of them to sending and receiving",
    },
    Metric {
        name: "drops",
        lower_is_better: true,
        value: |r, _| 100.0 * per(r.full_drops + r.sent.saturating_sub(r.received), r.sent),
        show: |v| format!("{v:.2}%"),
        ring_why: "fewer datagrams found the queue full or a socket buffer overflowing",
        channel_why: "fewer datagrams found the queue full or a socket buffer overflowing",
    },
    Metric {
        name: "heap allocations per datagram",
        lower_is_better: true,
        value: |r, _| per(r.allocations, r.received),
        show: |v| format!("{v:.3}"),
        ring_why: "a datagram is copied or received into the ring's buffer, allocated once; \
                   the channel allocates a Vec for each, and the handler frees it",
        channel_why: "the ring's side allocated more during the run",
    },
    Metric {
        name: "handler CPU outside the checking",
        lower_is_better: true,
        value: |r, check_ns| r.handler_cpu.as_nanos() as f64 / r.handled.max(1) as f64 - check_ns,
        show: |v| format!("{v:.0} ns"),
        ring_why: "the handler reads entries where they lie, up to 64 per release, and frees \
                   nothing; the channel's handler moves each Vec out of its slot and frees \
                   memory another thread allocated",
        channel_why: "this ring handler goes to sleep as soon as the ring is empty \
                      (set_spin(0)), and each sleep costs it a sleep announcement and a futex \
                      wait, where the channel's handler spins a while first",
    },
    Metric {
        name: "listener system calls per datagram",
        lower_is_better: true,
        value: |r, _| per(r.syscalls, r.received),
        show: |v| format!("{v:.3}"),
        ring_why: LOOPS_WHY,
        channel_why: LOOPS_WHY,
    },
    Metric {
        name: "handler sleeps",
        lower_is_better: true,
        value: |r, _| 1000.0 * per(r.handler_sleeps, r.handled),
        show: |v| format!("{v:.1} per 1k datagrams"),
        ring_why: "its handler found datagrams waiting more often; each sleep costs a listener \
                   a wake-up system call",
        channel_why: "crossbeam-channel spins a while before it blocks, while this ring handler \
                      sleeps at once (set_spin(0)) to leave the CPU to the listeners; each \
                      sleep costs a listener a wake-up system call",
    },
    Metric {
        name: "memory held",
        lower_is_better: true,
        value: |r, _| (r.queue_bytes + r.peak_vec_bytes) as f64 / 1e6,
        show: |v| format!("{v:.2} MB"),
        ring_why: "more datagrams waited in the channel at its peak, each in a Vec of its own",
        channel_why: "the channel allocates per datagram and holds only its slots and what is \
                      waiting, while the ring's buffer is allocated whole up front",
    },
];

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn spread(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    max - min
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(results: &[(&str, Vec<Report>)], check_ns: f64) {
    let values = |reports: &[Report], m: &Metric| -> Vec<f64> {
        reports.iter().map(|r| (m.value)(r, check_ns)).collect()
    };
    let metric = |name: &str| METRICS.iter().find(|m| m.name == name).expect("a metric");
    println!("| pipeline | sent | window / send duration | datagrams handled/s (lowest-highest round) | drops (queue full + kernel) | listener system calls / datagram | handler sleeps / 1k datagrams | heap allocations / datagram | handler CPU / datagram | of it outside the checking | memory held | ring room used | corrupted |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, reports) in results {
        if reports.is_empty() {
            continue;
        }
        let med = |m: &str| median(&values(reports, metric(m)));
        let rates = values(reports, metric("datagrams handled/s"));
        let low = rates.iter().copied().fold(f64::MAX, f64::min);
        let high = rates.iter().copied().fold(f64::MIN, f64::max);
        let sent = median(&reports.iter().map(|r| r.sent as f64).collect::<Vec<_>>());
        let ratio = median(
            &reports
                .iter()
                .map(|r| r.window.as_secs_f64() / r.send_duration.as_secs_f64().max(1e-9))
                .collect::<Vec<_>>(),
        );
        let cpu = median(
            &reports
                .iter()
                .map(|r| r.handler_cpu.as_nanos() as f64 / r.handled.max(1) as f64)
                .collect::<Vec<_>>(),
        );
        let room = if reports.iter().all(|r| r.passed_bytes > 0) {
            let shares: Vec<f64> = reports
                .iter()
                .map(|r| 100.0 * r.used_bytes as f64 / r.passed_bytes as f64)
                .collect();
            format!("{:.1}%", median(&shares))
        } else {
            "-".to_string()
        };
        let corrupted: u64 = reports.iter().map(|r| r.corrupted + r.truncated).sum();
        println!(
            "| {name} | {} | {ratio:.3} | {:.0} k ({:.0}-{:.0} k) | {:.2}% | {:.3} | {:.1} | {:.3} | {cpu:.0} ns | {:.0} ns | {:.2} MB | {room} | {corrupted} |",
            thousands(sent as u64),
            med("datagrams handled/s") / 1e3,
            low / 1e3,
            high / 1e3,
            med("drops"),
            med("listener system calls per datagram"),
            med("handler sleeps"),
            med("heap allocations per datagram"),
            med("handler CPU outside the checking"),
            med("memory held"),
        );
    }
}

fn print_legend(check_ns: f64) {
    println!(
        "\
What the columns say (each the median over the rounds):
  window / send duration      the timed window (the senders' first send to the handler's
                              last handled datagram) over the senders' own send duration:
                              near 1.000, the handler kept up; above, it was still draining
                              a backlog after the last send
  datagrams handled/s         datagrams the handler checked, over the timed window (in
                              brackets the lowest and the highest round); the senders, the
                              listeners and the handler share the cores, so it measures
                              the whole pipeline's cost, not the queue alone
  drops                       sent but never handled, in % of sent: found the queue full
                              (the listener dropped it, as a UDP stack does) or lost in the
                              kernel (a socket buffer overflowed: its listener fell behind)
  listener system calls       receive calls and readiness polls of all listeners, per
                              datagram received: 1/16 = 0.063 at best with recvmmsg, at
                              least 1 with recv_from
  handler sleeps              times the handler thread blocked with nothing to do (its
                              voluntary context switches), per 1,000 datagrams; each one
                              costs a listener a wake-up (a system call)
  heap allocations            allocator calls of every thread during the run, per datagram
                              received (a datagram dropped for a full channel was allocated
                              too)
  handler CPU / datagram      the handler thread's CPU time per datagram, checks included
  of it outside the checking  the same minus what the checks alone cost on datagrams
                              already in the cache ({check_ns:.0} ns per datagram of this
                              size mix, the least of passes before and after the rounds):
                              what fetching the datagrams from another core, the queue and
                              the waiting cost the handler
  memory held                 heap bytes the queue took when it was built (the ring: its
                              whole buffer; the channel: its slot array) plus, for the
                              channel, the Vecs of the most datagrams seen waiting at once;
                              the listeners' own buffers are left out
  ring room used              of the ring space the handler read through, the share that
                              held entries (header, record, payload); the rest was padding
                              at the end of a lap or slots a batch reservation claimed and
                              left unused. Higher is better: less room wasted ('-': no ring)
  corrupted                   datagrams whose checksum, sender or record was wrong, all
                              rounds together: must be 0"
    );
}

/// One line per pair of pipelines that receive the same way: which did
/// better on what, from this run's rounds.
fn print_verdict(results: &[(&str, Vec<Report>)], check_ns: f64, rounds: usize) {
    let find = |name: &str| {
        results
            .iter()
            .find(|(n, reports)| *n == name && !reports.is_empty())
            .map(|(_, reports)| reports)
    };
    let pairs: Vec<_> = PAIRS
        .iter()
        .filter_map(|&(ring, channel)| Some((ring, find(ring)?, channel, find(channel)?)))
        .collect();
    if pairs.is_empty() {
        println!("Verdict: none (run a ring pipeline and the channel pipeline that receives the same way).");
        return;
    }
    if rounds < 2 {
        println!("Verdict: none: one round gives no spread to tell a difference from noise (use --rounds 2 or more).");
        return;
    }
    println!(
        "Verdict ({rounds} rounds; \"no clear difference\" where the medians differ by less \
         than the larger spread, lowest to highest round, of the two):"
    );
    for (ring_name, ring, channel_name, channel) in pairs {
        let (mut ring_better, mut channel_better, mut same) = (Vec::new(), Vec::new(), Vec::new());
        for m in METRICS {
            let a: Vec<f64> = ring.iter().map(|r| (m.value)(r, check_ns)).collect();
            let b: Vec<f64> = channel.iter().map(|r| (m.value)(r, check_ns)).collect();
            let (ma, mb) = (median(&a), median(&b));
            let gap = (ma - mb).abs();
            if gap == 0.0 || gap < spread(&a).max(spread(&b)) {
                same.push(m.name.to_string());
                continue;
            }
            let ring_wins = (ma < mb) == m.lower_is_better;
            let (winner, loser, why) = if ring_wins {
                (ma, mb, m.ring_why)
            } else {
                (mb, ma, m.channel_why)
            };
            // Only mpring-udp's listeners are the library's own.
            let why = if why == LOOPS_WHY && ring_name == "mpring-udp" {
                format!("{why}{UDP_LOOP}")
            } else {
                why.to_string()
            };
            let said = format!(
                "{} ({} against {}: {why})",
                m.name,
                (m.show)(winner),
                (m.show)(loser)
            );
            if ring_wins {
                ring_better.push(said);
            } else {
                channel_better.push(said);
            }
        }
        let mut parts = Vec::new();
        if !ring_better.is_empty() {
            parts.push(format!(
                "The ring did better on {}.",
                ring_better.join("; and on ")
            ));
        }
        if !channel_better.is_empty() {
            parts.push(format!(
                "The channel did better on {}.",
                channel_better.join("; and on ")
            ));
        }
        if !same.is_empty() {
            parts.push(format!("No clear difference in {}.", same.join(", ")));
        }
        println!("- {ring_name} against {channel_name}: {}", parts.join(" "));
    }
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("udp_fanin: {e}");
            return ExitCode::from(2);
        }
    };
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let busy = match config.busy {
        0 => "no extra CPU-burning threads (--busy N adds N)".to_string(),
        n => format!("{n} extra threads that only burn CPU (--busy)"),
    };
    println!(
        "{} threads per pipeline ({} listeners, {} senders, 1 handler) and {busy}, on {cores} cores: \
         with more threads than cores they take turns, which shows in drops and handler CPU",
        config.listeners + config.senders + 1,
        config.listeners,
        config.senders,
    );
    println!(
        "{} listeners (SO_REUSEPORT on one loopback port), sizes {:?}, up to {} datagrams or {:.1} s \
         per pipeline and round, {} rounds, pipelines in turn",
        config.listeners,
        config.sizes,
        thousands(config.datagrams),
        config.duration.as_secs_f64(),
        config.rounds,
    );
    let check_before = check_cost(&config);
    println!();
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
    let selected: Vec<(&str, Kind)> = PIPELINES
        .iter()
        .copied()
        .filter(|(name, _)| config.pipelines.iter().any(|p| p == name))
        .collect();
    let mut results: Vec<(&str, Vec<Report>)> = selected
        .iter()
        .map(|&(name, _)| (name, Vec::new()))
        .collect();
    let mut failed = None;
    'rounds: for round in 1..=config.rounds {
        for (i, &(name, kind)) in selected.iter().enumerate() {
            let report = match kind {
                Kind::Ring(recv) => {
                    let ((producer, consumer), bytes) = sized(|| {
                        Ring::builder(config.capacity)
                            .metadata::<UdpMeta>()
                            .build()
                            .expect("--capacity was checked")
                    });
                    let pipeline = RingPipeline {
                        producer: Some(producer),
                        consumer,
                        recv,
                    };
                    run(pipeline, bytes, &config)
                }
                Kind::Channel(recv) => {
                    let ((tx, rx), bytes) =
                        sized(|| crossbeam_channel::bounded((config.capacity / 1200).max(1)));
                    run(ChannelPipeline { tx, rx, recv }, bytes, &config)
                }
            };
            let r = match report {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(format!("{name}: socket setup failed: {e}"));
                    break 'rounds;
                }
            };
            println!(
                "round {round}/{}  {name:<20}  sent {:>9} in {:.3} s; handled {:>9} in {:.3} s \
                 from the first send (window / send duration {:.3})",
                config.rounds,
                thousands(r.sent),
                r.send_duration.as_secs_f64(),
                thousands(r.handled),
                r.window.as_secs_f64(),
                r.window.as_secs_f64() / r.send_duration.as_secs_f64().max(1e-9),
            );
            results[i].1.push(r);
        }
    }
    busy_stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().expect("busy thread");
    }
    if let Some(e) = failed {
        eprintln!("udp_fanin: {e}");
        return ExitCode::FAILURE;
    }
    // Measured before and after the rounds; the lesser is the least
    // disturbed.
    let check_ns = check_before.min(check_cost(&config)).as_nanos() as f64;
    println!();
    print_table(&results, check_ns);
    println!();
    print_legend(check_ns);
    println!();
    print_verdict(&results, check_ns, config.rounds);
    let corrupted: u64 = results
        .iter()
        .flat_map(|(_, reports)| reports)
        .map(|r| r.corrupted + r.truncated)
        .sum();
    if corrupted > 0 {
        eprintln!("udp_fanin: {corrupted} datagrams arrived corrupted");
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
