//! mpring against the queues a Rust user would pick instead, on one job:
//! P producer threads each push N messages, one consumer drains them,
//! checks every producer's sequence numbers and reads every payload byte.
//!
//! ```text
//! cargo bench --bench peers              # the table (7 interleaved rounds per cell)
//! PEERS_ROUNDS=15 cargo bench --bench peers
//! PEERS_CRITERION=1 cargo bench --bench peers  # then criterion on every cell
//! cargo bench --bench peers -- 1350B/    # only cells whose name contains this
//! cargo bench --bench peers -- /mpring/ /nexus-logbuf/   # ... any of these
//! PEERS_REGIMES=all cargo bench --bench peers   # every consumer regime
//! PEERS_REGIMES=light-paced-b64,light-eager-b64 cargo bench --bench peers
//! PEERS_PRODUCERS=1,2,4,8,16 cargo bench --bench peers   # producer counts
//! PEERS_SCALE=10 cargo bench --bench peers   # 10 times the messages per iteration
//! AERON_RB_DIR=/tmp/aeron-rb cargo bench --bench peers -- /mpring/ /aeron
//! ```
//!
//! A regime says what the consumer does (see [`Regime`]): `heavy` reads
//! every byte (the consumer is the bottleneck), `light` only the tag and the
//! last byte (the producers are); `paced` waits 256 pause hints and backs
//! off after an empty poll, `eager` polls again at once; `b64`/`b256` is
//! the batch size. The default run is `heavy-paced-b256`. The `exact-*`
//! regimes (`exact-eager-b64`, `exact-paced-b64`) are the light consumer as
//! issue 24 defines it: it also checks each message's length and last byte,
//! and every backoff (producers on a full queue; the consumer after an
//! empty poll, eager or after its 256 pause hints when paced) spins 1, 2,
//! .., 32 times then yields (elsewhere: up to 64, as crossbeam's `Backoff`).
//!
//! Aeron's C ring (`aeron_mpsc_rb`, rows `aeron_mpsc_rb` with
//! `aeron_mpsc_rb_write` and `aeron_mpsc_rb claim` with try_claim + commit,
//! both read with batch `aeron_mpsc_rb_read`) runs only when the bench is
//! built with `AERON_RB_DIR` naming a folder holding a `libaeron_rb.a` built
//! from Aeron's sources (BENCHMARKS.md says how; `build.rs` links it);
//! otherwise the bench prints why those rows are missing.
//!
//! Criterion measures each cell; the table printed at the end gives the
//! median of its samples as M msgs/s and GB/s, and mpring's ratio to each
//! peer. It starts with the cache-line round trip between two threads
//! measured at the start of the run: thread placement varies from run to
//! run, so only ratios inside one run are comparable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use crossbeam_utils::CachePadded;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Bytes of the byte rings (mpring, nexus-logbuf, rtrb, Aeron's).
const RING_BYTES: usize = 1 << 20;
const PRODUCERS: [usize; 4] = [1, 2, 4, 8];

/// `PEERS_PRODUCERS`: a comma-separated list of producer counts (for
/// example `1,2,4,8,16` on a machine with more cores); unset: 1, 2, 4, 8.
fn producer_counts() -> Vec<usize> {
    match std::env::var("PEERS_PRODUCERS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("PEERS_PRODUCERS: numbers, comma-separated")
            })
            .collect(),
        Err(_) => PRODUCERS.to_vec(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Sizes {
    Small,
    Datagram,
    Mixed,
}

impl Sizes {
    fn name(self) -> &'static str {
        match self {
            Sizes::Small => "64B",
            Sizes::Datagram => "1350B",
            Sizes::Mixed => "20-1500B",
        }
    }

    /// Messages per producer per iteration, so that an iteration moves a
    /// similar number of bytes whatever the size: about 135 MB, times
    /// `PEERS_SCALE` (default 1). At 25 M msgs/s an iteration of 1,350 B
    /// messages lasts 4 ms, the length of a scheduler tick: a VM's hiccups
    /// then move whole rounds; `PEERS_SCALE=10` smooths them.
    fn messages(self, producers: usize) -> usize {
        let total = match self {
            Sizes::Small => 400_000,
            Sizes::Datagram => 100_000,
            Sizes::Mixed => 150_000,
        };
        total * scale() / producers
    }

    /// Precomputed from a fixed seed, before timing.
    fn lengths(self, producer: usize, n: usize) -> Vec<usize> {
        match self {
            Sizes::Small => vec![64; n],
            Sizes::Datagram => vec![1350; n],
            Sizes::Mixed => {
                let mut rng = SmallRng::seed_from_u64(0x5EED ^ producer as u64);
                (0..n).map(|_| rng.gen_range(20..=1500)).collect()
            }
        }
    }

    fn mean(self) -> usize {
        match self {
            Sizes::Small => 64,
            Sizes::Datagram => 1350,
            Sizes::Mixed => 760,
        }
    }
}

/// Source bytes every producer copies from.
static SOURCE: [u8; 1500] = {
    let mut s = [0u8; 1500];
    let mut i = 0;
    while i < 1500 {
        s[i] = (i * 31 % 251) as u8;
        i += 1;
    }
    s
};

/// Writes a message: an 8-byte tag (producer, sequence), then source bytes.
#[inline]
fn write_message(buf: &mut [u8], producer: usize, seq: u64) {
    let tag = (producer as u64) << 56 | seq;
    buf[..8].copy_from_slice(&tag.to_le_bytes());
    let len = buf.len();
    buf[8..].copy_from_slice(&SOURCE[8..len]);
}

/// What the consumer does with every message, whatever the queue.
struct Checker<'a> {
    next: Vec<u64>,
    sum: u64,
    bytes: u64,
    /// Reads only the tag and the last byte (a consumer that dispatches
    /// on a header), instead of every byte.
    light: bool,
    /// The `exact-*` regimes: also checks each message's length against
    /// what its producer sent, and its last byte's value.
    exact: Option<&'a [Vec<usize>]>,
}

impl<'a> Checker<'a> {
    fn new(regime: Regime, lengths: &'a [Vec<usize>]) -> Checker<'a> {
        Checker {
            next: vec![0; lengths.len()],
            sum: 0,
            bytes: 0,
            light: regime.light,
            exact: regime.exact.then_some(lengths),
        }
    }

    #[inline]
    fn check(&mut self, msg: &[u8]) {
        let tag = u64::from_le_bytes(msg[..8].try_into().unwrap());
        let (producer, seq) = ((tag >> 56) as usize, tag & ((1 << 56) - 1));
        assert_eq!(seq, self.next[producer], "producer {producer} out of order");
        self.next[producer] += 1;
        self.bytes += msg.len() as u64;
        if let Some(lengths) = self.exact {
            let len = msg.len();
            assert_eq!(
                len, lengths[producer][seq as usize],
                "producer {producer}: length"
            );
            assert_eq!(
                msg[len - 1],
                SOURCE[len - 1],
                "producer {producer}: last byte"
            );
        }
        if self.light {
            self.sum = self.sum.wrapping_add(msg[msg.len() - 1] as u64);
            return;
        }
        // Read every payload byte (8 at a time, as a real checksum would).
        let mut words = msg.chunks_exact(8);
        let mut sum = 0u64;
        for w in &mut words {
            sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
        for &b in words.remainder() {
            sum = sum.wrapping_add(b as u64);
        }
        self.sum = self.sum.wrapping_add(sum);
    }

    fn finish(self, producers: usize, n: usize) -> u64 {
        assert!(self.next.iter().all(|&s| s == n as u64), "lost messages");
        let _ = producers;
        std::hint::black_box(self.sum);
        self.bytes
    }
}

/// One queue under test: spawns `producers` threads that each send their
/// lengths' messages, consumes everything on this thread, and returns the
/// elapsed time (from the moment all threads are released).
type Runner = fn(Regime, usize, &[Vec<usize>], &AtomicU64) -> Duration;

/// What the consumer does: how much of each message it reads, how eagerly
/// it polls, how many messages it takes per batch. Producers always copy
/// their messages from a source buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Regime {
    /// Reads the 8-byte tag and the last byte only (producer-bound with
    /// eager or paced polling), instead of every byte (consumer-bound).
    light: bool,
    /// Re-polls an empty queue at once, instead of waiting first.
    eager: bool,
    /// Messages per batch (the consumer polls at most this many before it
    /// returns to its loop).
    batch: usize,
    /// The light consumer as issue 24 defines it (the `exact-*` regimes):
    /// checks each message's length and last byte too; every backoff
    /// (producers on a full queue, the consumer after an empty poll) spins
    /// 1, 2, .., 32 times then yields; an eager consumer backs off that way
    /// after an empty poll instead of polling again at once.
    exact: bool,
}

impl Regime {
    /// The default run's regime: every byte read, paced, batches of 256.
    const DEFAULT: Regime = Regime {
        light: false,
        eager: false,
        batch: 256,
        exact: false,
    };

    fn all() -> Vec<Regime> {
        let mut all = Vec::new();
        for light in [false, true] {
            for eager in [false, true] {
                for batch in [64, 256] {
                    all.push(Regime {
                        light,
                        eager,
                        batch,
                        exact: false,
                    });
                }
            }
        }
        for eager in [true, false] {
            all.push(Regime {
                light: true,
                eager,
                batch: 64,
                exact: true,
            });
        }
        all
    }

    fn name(self) -> String {
        format!(
            "{}-{}-b{}",
            match (self.exact, self.light) {
                (true, _) => "exact",
                (false, true) => "light",
                (false, false) => "heavy",
            },
            if self.eager { "eager" } else { "paced" },
            self.batch
        )
    }

    /// The most spins of one backoff step, as a power of two: 64 (as
    /// `crossbeam_utils::Backoff`) or, in the `exact-*` regimes, 32.
    fn spin_limit(self) -> u32 {
        if self.exact {
            5
        } else {
            6
        }
    }

    /// `PEERS_REGIMES`: `all`, or a comma-separated list of names such as
    /// `light-paced-b64,heavy-eager-b256`; unset: the default regime.
    fn from_env() -> Vec<Regime> {
        let Ok(list) = std::env::var("PEERS_REGIMES") else {
            return vec![Regime::DEFAULT];
        };
        if list == "all" {
            return Regime::all();
        }
        list.split(',')
            .map(|name| {
                Regime::all()
                    .into_iter()
                    .find(|r| r.name() == name.trim())
                    .unwrap_or_else(|| panic!("unknown regime {name:?}: try light-paced-b64"))
            })
            .collect()
    }
}

/// The spin limit of every [`Backoff`] created from now on (the running
/// regime's [`Regime::spin_limit`]); set before each cell's threads start.
static SPIN_LIMIT: AtomicU32 = AtomicU32::new(6);

/// Exponential backoff: spins 1, 2, 4, .. `1 << spin_limit` times, then
/// yields at every step. With the default limit (6) it does what
/// `crossbeam_utils::Backoff::snooze` does.
struct Backoff {
    step: std::cell::Cell<u32>,
    spin_limit: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            step: std::cell::Cell::new(0),
            spin_limit: SPIN_LIMIT.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn snooze(&self) {
        let step = self.step.get();
        if step <= self.spin_limit {
            for _ in 0..1u32 << step {
                std::hint::spin_loop();
            }
            self.step.set(step + 1);
        } else {
            thread::yield_now();
        }
    }

    #[inline]
    fn reset(&self) {
        self.step.set(0);
    }
}

/// Retries `attempt` until it succeeds: spin, then yield. Counts failures.
#[inline]
fn retry<T>(fulls: &mut u64, mut attempt: impl FnMut() -> Option<T>) -> T {
    let backoff = Backoff::new();
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        *fulls += 1;
        backoff.snooze();
    }
}

/// Pause hints a paced consumer spends after finding its queue empty,
/// before the usual spin-then-yield backoff; the same for every queue.
const IDLE_SPINS: usize = 256;

/// What a consumer does on an empty queue: an eager one polls again at
/// once (in the `exact-*` regimes: after a backoff step); a paced one
/// waits (spin, then yield).
struct Idle {
    backoff: Backoff,
    eager: bool,
    exact: bool,
    /// Polls that found entries, and polls that found none.
    batches: u64,
    empties: u64,
}

/// Polls of the last run (batches, empty polls), which the consumer adds
/// when it is done: they show which state a run settled in (a consumer at
/// the producers' heels reads one or two entries per poll, one behind a
/// full ring reads whole batches).
static POLLS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

impl Drop for Idle {
    fn drop(&mut self) {
        POLLS[0].fetch_add(self.batches, Ordering::Relaxed);
        POLLS[1].fetch_add(self.empties, Ordering::Relaxed);
    }
}

impl Idle {
    fn new(regime: Regime) -> Idle {
        Idle {
            backoff: Backoff::new(),
            eager: regime.eager,
            exact: regime.exact,
            batches: 0,
            empties: 0,
        }
    }
    #[inline]
    fn got(&mut self, n: usize) {
        if n == 0 {
            self.empties += 1;
        } else {
            self.batches += 1;
        }
        if self.eager {
            if self.exact {
                if n == 0 {
                    self.backoff.snooze();
                } else {
                    self.backoff.reset();
                }
            }
            return;
        }
        if n == 0 {
            // Let the producers write a few lines before polling again:
            // re-reading the line a producer is writing slows both sides.
            for _ in 0..IDLE_SPINS {
                std::hint::spin_loop();
            }
            self.backoff.snooze();
        } else {
            self.backoff.reset();
        }
    }
}

/// The common shape: spawn producers behind a barrier, time the consumer.
fn harness<P, C>(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
    make: P,
    consume: C,
) -> Duration
where
    P: Fn(usize) -> ProducerWork,
    C: FnOnce(&mut Checker, usize),
{
    let total: usize = lengths.iter().map(Vec::len).sum();
    let barrier = Arc::new(Barrier::new(producers + 1));
    let threads: Vec<_> = (0..producers)
        .map(|id| {
            let work = make(id);
            let lens = lengths[id].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                work(&lens)
            })
        })
        .collect();
    let mut checker = Checker::new(regime, lengths);
    barrier.wait();
    let start = Instant::now();
    consume(&mut checker, total);
    let elapsed = start.elapsed();
    for t in threads {
        fulls.fetch_add(t.join().unwrap(), Ordering::Relaxed);
    }
    checker.finish(producers, lengths[0].len());
    elapsed
}

fn run_mpring(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    run_mpring_mode(regime, producers, lengths, fulls, false)
}

/// mpring in read-around mode: what announcing every claim (and reading
/// past open ones, which happens here only when a producer is preempted
/// inside its reservation) costs when nothing stalls.
fn run_mpring_around(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    run_mpring_mode(regime, producers, lengths, fulls, true)
}

/// mpring read with the loop form (`consumer.batch(n)` and
/// `while let Some(entry) = batch.next()`) instead of `read_batch`.
fn run_mpring_loop(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let (producer, mut consumer) = mpring::Ring::new(RING_BYTES).unwrap();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| single_reservations(&producer, id),
        |checker, total| {
            let mut seen = 0;
            let mut idle = Idle::new(regime);
            while seen < total {
                let mut n = 0;
                let mut batch = consumer.batch(regime.batch);
                while let Some(entry) = batch.next() {
                    checker.check(&entry);
                    n += 1;
                }
                drop(batch);
                seen += n;
                idle.got(n);
            }
        },
    )
}

fn run_mpring_mode(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
    around: bool,
) -> Duration {
    let (producer, mut consumer) = mpring::Ring::builder(RING_BYTES)
        .read_around_open(around)
        .build()
        .unwrap();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| single_reservations(&producer, id),
        |checker, total| drain_mpring(&mut consumer, regime, checker, total),
    )
}

/// What a producer thread runs: given its message lengths, it sends them
/// all and returns how many times it found the queue full.
type ProducerWork = Box<dyn FnOnce(&[usize]) -> u64 + Send>;

/// An mpring producer that reserves, writes and commits one message at a
/// time (the rows `mpring`, `mpring around`, `mpring loop`).
fn single_reservations(producer: &mpring::Producer, id: usize) -> ProducerWork {
    let producer = producer.clone();
    Box::new(move |lens: &[usize]| {
        let mut fulls = 0;
        for (seq, &len) in lens.iter().enumerate() {
            let mut r = retry(&mut fulls, || producer.reserve(len).ok());
            write_message(&mut r, id, seq as u64);
            r.commit();
        }
        fulls
    })
}

/// The consumer side of the mpring rows that read with `read_batch`.
fn drain_mpring(
    consumer: &mut mpring::Consumer,
    regime: Regime,
    checker: &mut Checker,
    total: usize,
) {
    let mut seen = 0;
    let mut idle = Idle::new(regime);
    while seen < total {
        let n = consumer.read_batch(regime.batch, |m| checker.check(m));
        seen += n;
        idle.got(n);
    }
}

/// Entries per batch reservation in the `mpring batch16` row.
const BATCH: usize = 16;

/// mpring with batch reservations: each producer claims room for 16
/// messages with one CAS (slots as large as its largest message of the
/// batch), writes them in place and commits them with their own lengths.
fn run_mpring_batch(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let (producer, mut consumer) = mpring::Ring::new(RING_BYTES).unwrap();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let producer = producer.clone();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                let mut seq = 0u64;
                for group in lens.chunks(BATCH) {
                    let slot_len = group.iter().copied().max().unwrap_or(0);
                    let mut batch = retry(&mut fulls, || {
                        producer.reserve_batch(group.len(), slot_len).ok()
                    });
                    for (slot, &len) in batch.slots_mut().zip(group) {
                        write_message(&mut slot[..len], id, seq);
                        seq += 1;
                    }
                    batch.commit(group);
                }
                fulls
            })
        },
        |checker, total| drain_mpring(&mut consumer, regime, checker, total),
    )
}

/// mpring with runs pushed whole: each producer writes 16 messages into a
/// buffer of its own, then copies them into the ring with one CAS that
/// claims exactly their room (`push_batch`), as a listener that received
/// them with one `recvmmsg` would.
fn run_mpring_push_batch(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let (producer, mut consumer) = mpring::Ring::new(RING_BYTES).unwrap();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let producer = producer.clone();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                let mut seq = 0u64;
                let longest = lens.iter().copied().max().unwrap_or(0);
                let mut staging = vec![0u8; BATCH * longest];
                for group in lens.chunks(BATCH) {
                    let mut parts: [&[u8]; BATCH] = [&[]; BATCH];
                    for ((chunk, &len), part) in staging
                        .chunks_mut(longest.max(1))
                        .zip(group)
                        .zip(&mut parts)
                    {
                        write_message(&mut chunk[..len], id, seq);
                        seq += 1;
                        *part = &chunk[..len];
                    }
                    let parts = &parts[..group.len()];
                    retry(&mut fulls, || producer.push_batch(parts).ok());
                }
                fulls
            })
        },
        |checker, total| drain_mpring(&mut consumer, regime, checker, total),
    )
}

fn run_nexus(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let (producer, mut consumer) = nexus_logbuf::queue::mpsc::new(RING_BYTES);
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let mut producer = producer.clone();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                for (seq, &len) in lens.iter().enumerate() {
                    let backoff = Backoff::new();
                    let mut claim = loop {
                        // The claim borrows the producer: retry by hand.
                        match producer.try_claim(len) {
                            Ok(claim) => break claim,
                            Err(_) => {
                                fulls += 1;
                                backoff.snooze();
                            }
                        }
                    };
                    write_message(&mut claim, id, seq as u64);
                    claim.commit();
                }
                fulls
            })
        },
        |checker, total| {
            let mut seen = 0;
            let mut idle = Idle::new(regime);
            while seen < total {
                let mut n = 0;
                while let Some(record) = consumer.try_claim() {
                    checker.check(&record);
                    n += 1;
                    if n == regime.batch {
                        break;
                    }
                }
                seen += n;
                idle.got(n);
            }
        },
    )
}

/// Bytes a hand-off slot holds: the largest message of any size mix.
const SLOT_BYTES: usize = 1504;

/// One slot of the hand-off floor: a flag (0: empty, else the message's
/// length + 1) and the bytes, a cache line apart from the next slot.
#[repr(C, align(64))]
struct Slot {
    flag: AtomicU64,
    bytes: std::cell::UnsafeCell<[u8; SLOT_BYTES]>,
}

/// Per producer, its own array of slots: what the hand-off shares.
struct Slots(Vec<Vec<Slot>>);

// SAFETY: each producer array is used by exactly one producer thread and
// every slot by the one consumer (as `run_slots` and `harness` do); a
// slot's bytes are written only by its producer while its flag is 0 and
// read only by the consumer while it is set; the flag's Release/Acquire
// pairs order the two.
unsafe impl Sync for Slots {}

/// The floor two threads pay for a hand-off with no protocol: each
/// producer owns an array of fixed slots (a flag and 1,504 bytes, the
/// ring's bytes split between the producers), waits for its next slot to
/// be empty, copies the message in and sets the flag; the consumer visits
/// the producers in turn, checks each message the same way and clears the
/// flag. No claim, no header, no zeroing, no variable length: what any ring
/// of variable-length entries pays at least between threads.
fn run_slots(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let per = RING_BYTES / std::mem::size_of::<Slot>() / producers;
    let slots = Arc::new(Slots(
        (0..producers)
            .map(|_| {
                (0..per)
                    .map(|_| Slot {
                        flag: AtomicU64::new(0),
                        bytes: std::cell::UnsafeCell::new([0; SLOT_BYTES]),
                    })
                    .collect()
            })
            .collect(),
    ));
    let consumer_slots = slots.clone();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let slots = slots.clone();
            Box::new(move |lens: &[usize]| {
                let mine = &slots.0[id];
                let mut fulls = 0;
                for (seq, &len) in lens.iter().enumerate() {
                    let slot = &mine[seq % mine.len()];
                    let backoff = Backoff::new();
                    // Acquire: the consumer's reads of the last message
                    // here happen before we overwrite it.
                    while slot.flag.load(Ordering::Acquire) != 0 {
                        fulls += 1;
                        backoff.snooze();
                    }
                    // SAFETY: the flag is 0: the consumer is done with this
                    // slot and only we write it until we set the flag.
                    let bytes = unsafe { &mut *slot.bytes.get() };
                    write_message(&mut bytes[..len], id, seq as u64);
                    // Release: the bytes are written before the flag says so.
                    slot.flag.store(len as u64 + 1, Ordering::Release);
                }
                fulls
            })
        },
        |checker, total| {
            let slots = &consumer_slots.0;
            let mut next = vec![0usize; slots.len()];
            let mut seen = 0;
            let mut idle = Idle::new(regime);
            while seen < total {
                let mut n = 0;
                let mut found = true;
                while found && n < regime.batch {
                    found = false;
                    for (p, mine) in slots.iter().enumerate() {
                        let slot = &mine[next[p] % mine.len()];
                        // Acquire: pairs with the producer's Release.
                        let flag = slot.flag.load(Ordering::Acquire);
                        if flag == 0 {
                            continue;
                        }
                        // SAFETY: the flag is set: the producer wrote the
                        // message and leaves the slot alone until we clear it.
                        let bytes = unsafe { &*slot.bytes.get() };
                        checker.check(&bytes[..flag as usize - 1]);
                        // Release: our reads happen before the producer's
                        // next write.
                        slot.flag.store(0, Ordering::Release);
                        next[p] += 1;
                        n += 1;
                        found = true;
                        if n == regime.batch {
                            break;
                        }
                    }
                }
                seen += n;
                idle.got(n);
            }
        },
    )
}

#[cfg(aeron_rb)]
#[path = "aeron/ffi.rs"]
mod aeron_ffi;

/// Aeron's C ring (`aeron_mpsc_rb`): `RING_BYTES` of capacity plus its
/// trailer, zeroed and aligned to 128 bytes, shared by every thread.
#[cfg(aeron_rb)]
struct AeronRing {
    rb: aeron_ffi::AeronMpscRb,
    layout: std::alloc::Layout,
}

// SAFETY: the C functions are made to be called from many producer threads
// and one consumer at once; the struct itself is only read after init.
#[cfg(aeron_rb)]
unsafe impl Send for AeronRing {}
#[cfg(aeron_rb)]
unsafe impl Sync for AeronRing {}

#[cfg(aeron_rb)]
impl AeronRing {
    fn new() -> Arc<AeronRing> {
        let length = RING_BYTES + aeron_ffi::TRAILER_LENGTH;
        let layout = std::alloc::Layout::from_size_align(length, 128).unwrap();
        // SAFETY: the layout is not empty.
        let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!buffer.is_null(), "out of memory");
        let mut rb = aeron_ffi::AeronMpscRb {
            buffer: std::ptr::null_mut(),
            descriptor: std::ptr::null_mut(),
            capacity: 0,
            max_message_length: 0,
        };
        // SAFETY: `buffer` is `length` zeroed bytes, 128-byte aligned.
        let rc = unsafe { aeron_ffi::aeron_mpsc_rb_init(&mut rb, buffer.cast(), length) };
        assert_eq!(rc, 0, "aeron_mpsc_rb_init failed (trailer length?)");
        assert_eq!(rb.capacity, RING_BYTES, "aeron_mpsc_rb_t layout");
        assert_eq!(rb.buffer, buffer, "aeron_mpsc_rb_t layout");
        Arc::new(AeronRing { rb, layout })
    }

    /// The C functions take `aeron_mpsc_rb_t *` but only read through it.
    fn ptr(&self) -> *mut aeron_ffi::AeronMpscRb {
        std::ptr::addr_of!(self.rb).cast_mut()
    }
}

#[cfg(aeron_rb)]
impl Drop for AeronRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.rb.buffer, self.layout) };
    }
}

/// Aeron's read handler: `clientd` is the consumer's [`Checker`].
#[cfg(aeron_rb)]
unsafe extern "C" fn aeron_check(
    _msg_type_id: i32,
    msg: *const std::ffi::c_void,
    length: usize,
    clientd: *mut std::ffi::c_void,
) {
    // SAFETY: `aeron_mpsc_rb_read` passes the `clientd` it was given (a
    // `&mut Checker` in `drain_aeron`) and a message of `length` bytes that
    // stays in place until it returns. A failed check panics, which aborts
    // here (no unwinding through C), after printing why.
    let (checker, msg) = unsafe {
        (
            &mut *clientd.cast::<Checker>(),
            std::slice::from_raw_parts(msg.cast::<u8>(), length),
        )
    };
    checker.check(msg);
}

/// The consumer side of the Aeron rows: batches of `aeron_mpsc_rb_read`.
#[cfg(aeron_rb)]
fn drain_aeron(ring: &AeronRing, regime: Regime, checker: &mut Checker, total: usize) {
    let mut seen = 0;
    let mut idle = Idle::new(regime);
    let clientd: *mut Checker = checker;
    while seen < total {
        // SAFETY: `clientd` is the checker `aeron_check` expects, alive and
        // not otherwise used during the call.
        let n = unsafe {
            aeron_ffi::aeron_mpsc_rb_read(ring.ptr(), aeron_check, clientd.cast(), regime.batch)
        };
        seen += n;
        idle.got(n);
    }
}

/// Aeron's C ring with `aeron_mpsc_rb_write`: each producer writes its tag
/// into a staging copy of the source bytes, and the call copies the message
/// into the ring (one copy per message, as the other byte rings).
#[cfg(aeron_rb)]
fn run_aeron(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let ring = AeronRing::new();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let ring = ring.clone();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                let mut staging = SOURCE;
                for (seq, &len) in lens.iter().enumerate() {
                    let tag = (id as u64) << 56 | seq as u64;
                    staging[..8].copy_from_slice(&tag.to_le_bytes());
                    retry(&mut fulls, || {
                        // SAFETY: `staging` holds at least `len` bytes.
                        let rc = unsafe {
                            aeron_ffi::aeron_mpsc_rb_write(
                                ring.ptr(),
                                1,
                                staging.as_ptr().cast(),
                                len,
                            )
                        };
                        match rc {
                            aeron_ffi::RB_SUCCESS => Some(()),
                            aeron_ffi::RB_FULL => None,
                            e => panic!("aeron_mpsc_rb_write: {e}"),
                        }
                    });
                }
                fulls
            })
        },
        |checker, total| drain_aeron(&ring, regime, checker, total),
    )
}

/// Aeron's C ring with `aeron_mpsc_rb_try_claim` + `aeron_mpsc_rb_commit`:
/// the message written in place, as mpring's reserve + commit.
#[cfg(aeron_rb)]
fn run_aeron_claim(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    let ring = AeronRing::new();
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let ring = ring.clone();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                for (seq, &len) in lens.iter().enumerate() {
                    let offset = retry(&mut fulls, || {
                        // SAFETY: a valid, initialised ring.
                        let at = unsafe { aeron_ffi::aeron_mpsc_rb_try_claim(ring.ptr(), 1, len) };
                        match at {
                            aeron_ffi::RB_FULL => None,
                            e if e < 0 => panic!("aeron_mpsc_rb_try_claim: {e}"),
                            at => Some(at),
                        }
                    });
                    // SAFETY: the claim is `len` bytes at `offset` in the
                    // ring's buffer, this producer's until the commit.
                    let msg = unsafe {
                        std::slice::from_raw_parts_mut(ring.rb.buffer.add(offset as usize), len)
                    };
                    write_message(msg, id, seq as u64);
                    // SAFETY: `offset` is this producer's open claim.
                    let rc = unsafe { aeron_ffi::aeron_mpsc_rb_commit(ring.ptr(), offset) };
                    assert_eq!(rc, 0, "aeron_mpsc_rb_commit");
                }
                fulls
            })
        },
        |checker, total| drain_aeron(&ring, regime, checker, total),
    )
}

/// Why the Aeron rows are missing, when they are (printed once per run).
const AERON_MISSING: Option<&str> = if cfg!(aeron_rb_stub) {
    Some(
        "Aeron rows skipped: this build links the type-check stub (AERON_RB_STUB), not Aeron; \
         build Aeron's ring and set AERON_RB_DIR instead (BENCHMARKS.md)",
    )
} else if cfg!(aeron_rb) {
    None
} else {
    Some(
        "Aeron rows skipped: Aeron's C ring is not linked; build libaeron_rb.a from Aeron's \
         sources and set AERON_RB_DIR to its folder (BENCHMARKS.md says how)",
    )
};

/// Whether a row of `QUEUES` can run in this build.
fn runnable(name: &str) -> bool {
    !(name.starts_with("aeron") && AERON_MISSING.is_some())
}

fn make_vec(len: usize, id: usize, seq: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    write_message(&mut v, id, seq as u64);
    v
}

/// Channels of `Vec<u8>`: one allocation and fill per message, as their
/// users pay. `send` hands the message back when the queue is full.
macro_rules! vec_channel {
    ($name:ident, |$slots:ident| $make:expr, |$tx:ident, $m:ident| $send:expr, |$rx:ident| $recv:expr) => {
        fn $name(
            regime: Regime,
            producers: usize,
            lengths: &[Vec<usize>],
            fulls: &AtomicU64,
        ) -> Duration {
            let mean: usize = lengths.iter().flatten().sum::<usize>()
                / lengths.iter().map(Vec::len).sum::<usize>();
            let $slots = RING_BYTES / mean.max(1);
            let (tx, rx) = $make;
            let producer_tx = tx;
            harness(
                regime,
                producers,
                lengths,
                fulls,
                |id| {
                    let $tx = producer_tx.clone();
                    Box::new(move |lens: &[usize]| {
                        let mut fulls = 0;
                        for (seq, &len) in lens.iter().enumerate() {
                            let mut msg = Some(make_vec(len, id, seq));
                            retry(&mut fulls, || {
                                let $m = msg.take().unwrap();
                                match $send {
                                    Ok(()) => Some(()),
                                    Err(back) => {
                                        msg = Some(back);
                                        None
                                    }
                                }
                            });
                        }
                        fulls
                    })
                },
                |checker, total| {
                    let $rx = rx;
                    let mut seen = 0;
                    let mut idle = Idle::new(regime);
                    while seen < total {
                        let mut n = 0;
                        while let Some(m) = $recv {
                            checker.check(&m);
                            n += 1;
                            if n == regime.batch {
                                break;
                            }
                        }
                        seen += n;
                        idle.got(n);
                    }
                },
            )
        }
    };
}

vec_channel!(
    run_crossbeam_channel,
    |slots| crossbeam_channel::bounded::<Vec<u8>>(slots),
    |tx, m| tx.try_send(m).map_err(|e| e.into_inner()),
    |rx| rx.try_recv().ok()
);

vec_channel!(
    run_std_mpsc,
    |slots| std::sync::mpsc::sync_channel::<Vec<u8>>(slots),
    |tx, m| tx.try_send(m).map_err(|e| match e {
        std::sync::mpsc::TrySendError::Full(m) | std::sync::mpsc::TrySendError::Disconnected(m) =>
            m,
    }),
    |rx| rx.try_recv().ok()
);

vec_channel!(
    run_flume,
    |slots| flume::bounded::<Vec<u8>>(slots),
    |tx, m| tx.try_send(m).map_err(|e| e.into_inner()),
    |rx| rx.try_recv().ok()
);

vec_channel!(
    run_kanal,
    |slots| kanal::bounded::<Vec<u8>>(slots),
    |tx, m| {
        let mut slot = Some(m);
        match tx.try_send_option(&mut slot) {
            Ok(true) => Ok(()),
            _ => Err(slot.take().unwrap()),
        }
    },
    |rx| rx.try_recv().ok().flatten()
);

vec_channel!(
    run_array_queue,
    |slots| {
        let q = Arc::new(crossbeam_queue::ArrayQueue::<Vec<u8>>::new(slots));
        (q.clone(), q)
    },
    |tx, m| tx.push(m),
    |rx| rx.pop()
);

/// thingbuf, in its best case: slots keep their `Vec`s, so nothing is
/// allocated after warm-up; the producer copies into the slot's buffer.
fn run_thingbuf(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    use thingbuf::recycling::WithCapacity;
    let mean: usize =
        lengths.iter().flatten().sum::<usize>() / lengths.iter().map(Vec::len).sum::<usize>();
    let slots = RING_BYTES / mean.max(1);
    let q: Arc<thingbuf::ThingBuf<Vec<u8>, WithCapacity>> = Arc::new(
        thingbuf::ThingBuf::with_recycle(slots, WithCapacity::new().with_min_capacity(1500)),
    );
    harness(
        regime,
        producers,
        lengths,
        fulls,
        |id| {
            let q = q.clone();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                for (seq, &len) in lens.iter().enumerate() {
                    let mut slot = retry(&mut fulls, || q.push_ref().ok());
                    slot.resize(len, 0);
                    write_message(&mut slot, id, seq as u64);
                }
                fulls
            })
        },
        |checker, total| {
            let mut seen = 0;
            let mut idle = Idle::new(regime);
            while seen < total {
                let mut n = 0;
                while let Some(m) = q.pop_ref() {
                    checker.check(&m);
                    n += 1;
                    if n == regime.batch {
                        break;
                    }
                }
                seen += n;
                idle.got(n);
            }
        },
    )
}

/// rtrb, the SPSC reference (P = 1 only): a byte ring with a 4-byte length
/// prefix per message, written and read through chunks.
fn run_rtrb(
    regime: Regime,
    producers: usize,
    lengths: &[Vec<usize>],
    fulls: &AtomicU64,
) -> Duration {
    assert_eq!(producers, 1);
    let (tx, mut rx) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let tx = Mutex::new(Some(tx));
    harness(
        regime,
        1,
        lengths,
        fulls,
        |id| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            Box::new(move |lens: &[usize]| {
                let mut fulls = 0;
                let mut msg = [0u8; 1504];
                for (seq, &len) in lens.iter().enumerate() {
                    let backoff = Backoff::new();
                    let mut chunk = loop {
                        // The chunk borrows the producer: retry by hand.
                        match tx.write_chunk_uninit(4 + len) {
                            Ok(chunk) => break chunk,
                            Err(_) => {
                                fulls += 1;
                                backoff.snooze();
                            }
                        }
                    };
                    let (a, b) = chunk.as_mut_slices();
                    let tag = ((id as u64) << 56 | seq as u64).to_le_bytes();
                    if a.len() >= 4 + len {
                        // Contiguous: write in place, as the byte rings do.
                        let dst = a.as_mut_ptr().cast::<u8>();
                        // SAFETY: `dst` has 4 + len writable slots; the three
                        // copies fill them all, before `commit_all`.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                (len as u32).to_le_bytes().as_ptr(),
                                dst,
                                4,
                            );
                            std::ptr::copy_nonoverlapping(tag.as_ptr(), dst.add(4), 8);
                            std::ptr::copy_nonoverlapping(
                                SOURCE[8..].as_ptr(),
                                dst.add(12),
                                len - 8,
                            );
                        }
                    } else {
                        // Split at the end of the buffer: stage, then copy.
                        msg[..4].copy_from_slice(&(len as u32).to_le_bytes());
                        write_message(&mut msg[4..4 + len], id, seq as u64);
                        let split = a.len();
                        // SAFETY: `a` and `b` are the chunk's 4 + len slots;
                        // both copies together fill them.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                msg.as_ptr(),
                                a.as_mut_ptr().cast::<u8>(),
                                split,
                            );
                            std::ptr::copy_nonoverlapping(
                                msg[split..].as_ptr(),
                                b.as_mut_ptr().cast::<u8>(),
                                b.len(),
                            );
                        }
                    }
                    // SAFETY: all 4 + len slots were written above.
                    unsafe { chunk.commit_all() };
                }
                fulls
            })
        },
        |checker, total| {
            let mut seen = 0;
            let mut idle = Idle::new(regime);
            let mut scratch = [0u8; 1504];
            while seen < total {
                // Everything readable as one chunk, parsed in place, one
                // commit per batch (rtrb's best case).
                let available = rx.slots();
                let mut n = 0;
                if available > 0 {
                    let chunk = rx.read_chunk(available).expect("slots are readable");
                    let (a, b) = chunk.as_slices();
                    let mut at = 0;
                    while at + 4 <= available && n < regime.batch {
                        let len =
                            u32::from_le_bytes(span(a, b, at, 4, &mut scratch).try_into().unwrap())
                                as usize;
                        if at + 4 + len > available {
                            break;
                        }
                        checker.check(span(a, b, at + 4, len, &mut scratch));
                        at += 4 + len;
                        n += 1;
                    }
                    chunk.commit(at);
                }
                seen += n;
                idle.got(n);
            }
        },
    )
}

/// Bytes `[at, at + len)` of a chunk split in two slices; copied into
/// `scratch` only when they straddle the split.
fn span<'a>(a: &'a [u8], b: &'a [u8], at: usize, len: usize, scratch: &'a mut [u8]) -> &'a [u8] {
    if at + len <= a.len() {
        &a[at..at + len]
    } else if at >= a.len() {
        &b[at - a.len()..at - a.len() + len]
    } else {
        let first = a.len() - at;
        scratch[..first].copy_from_slice(&a[at..]);
        scratch[first..len].copy_from_slice(&b[..len - first]);
        &scratch[..len]
    }
}

/// The floor: one thread copies the same bytes into a buffer and reads them
/// back; what any queue pays at least.
fn run_memcpy(
    regime: Regime,
    _producers: usize,
    lengths: &[Vec<usize>],
    _fulls: &AtomicU64,
) -> Duration {
    let mut buf = vec![0u8; RING_BYTES];
    let mut checker = Checker::new(regime, lengths);
    let start = Instant::now();
    for (id, lens) in lengths.iter().enumerate() {
        let mut at = 0;
        for (seq, &len) in lens.iter().enumerate() {
            if at + len > buf.len() {
                at = 0;
            }
            write_message(&mut buf[at..at + len], id, seq as u64);
            checker.check(&buf[at..at + len]);
            at += (len + 15) & !7;
        }
    }
    let elapsed = start.elapsed();
    checker.finish(lengths.len(), lengths[0].len());
    elapsed
}

const QUEUES: &[(&str, Runner, bool)] = &[
    // (name, runner, multi-producer)
    ("mpring", run_mpring, true),
    ("mpring batch16", run_mpring_batch, true),
    ("mpring push_batch16", run_mpring_push_batch, true),
    ("mpring around", run_mpring_around, true),
    ("mpring loop", run_mpring_loop, true),
    ("nexus-logbuf", run_nexus, true),
    #[cfg(aeron_rb)]
    ("aeron_mpsc_rb", run_aeron, true),
    #[cfg(aeron_rb)]
    ("aeron_mpsc_rb claim", run_aeron_claim, true),
    ("crossbeam-channel", run_crossbeam_channel, true),
    ("ArrayQueue", run_array_queue, true),
    ("std sync_channel", run_std_mpsc, true),
    ("flume", run_flume, true),
    ("kanal", run_kanal, true),
    ("thingbuf", run_thingbuf, true),
    ("rtrb (SPSC)", run_rtrb, false),
    ("memcpy floor", run_memcpy, false),
    ("slot hand-off floor", run_slots, true),
];

#[derive(Default)]
struct Cell {
    /// Seconds per iteration, one per sample.
    samples: Vec<f64>,
    /// CPU seconds of the whole process (every thread, user and system)
    /// per iteration, one per sample.
    cpu: Vec<f64>,
    msgs: u64,
    bytes: u64,
    fulls: u64,
    /// Polls that found entries, and empty polls, over all samples.
    batches: u64,
    empties: u64,
    iterations: u64,
}

type Results = BTreeMap<(Regime, Sizes, usize, usize), Cell>; // (regime, sizes, producers, queue index)

static RESULTS: Mutex<Results> = Mutex::new(BTreeMap::new());

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per round trip of a cache line between two threads.
fn round_trip_ns() -> f64 {
    let flag = Arc::new(CachePadded::new(AtomicU64::new(0)));
    const TRIPS: u64 = 200_000;
    let other = flag.clone();
    let t = thread::spawn(move || {
        for i in 0..TRIPS {
            while other.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.store(2 * i + 2, Ordering::Release);
        }
    });
    let start = Instant::now();
    for i in 0..TRIPS {
        flag.store(2 * i + 1, Ordering::Release);
        while flag.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / TRIPS as f64;
    t.join().unwrap();
    ns
}

fn peers(c: &mut Criterion) {
    let regime = Regime::DEFAULT;
    SPIN_LIMIT.store(regime.spin_limit(), Ordering::Relaxed);
    for sizes in [Sizes::Small, Sizes::Datagram, Sizes::Mixed] {
        let mut group = c.benchmark_group(format!("peers/{}", sizes.name()));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for producers in PRODUCERS {
            let n = sizes.messages(producers);
            let lengths: Vec<Vec<usize>> = (0..producers).map(|p| sizes.lengths(p, n)).collect();
            let msgs = (n * producers) as u64;
            let bytes: u64 = lengths.iter().flatten().map(|&l| l as u64).sum();
            group.throughput(Throughput::Elements(msgs));
            for (index, &(name, runner, multi)) in QUEUES.iter().enumerate() {
                if (!multi && producers > 1) || !runnable(name) {
                    continue;
                }
                group.bench_function(BenchmarkId::new(name, format!("P{producers}")), |b| {
                    b.iter_custom(|iters| {
                        let fulls = AtomicU64::new(0);
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += runner(regime, producers, &lengths, &fulls);
                        }
                        let mut results = RESULTS.lock().unwrap();
                        let cell = results
                            .entry((regime, sizes, producers, index))
                            .or_default();
                        cell.samples.push(total.as_secs_f64() / iters as f64);
                        cell.msgs = msgs;
                        cell.bytes = bytes;
                        cell.fulls += fulls.load(Ordering::Relaxed);
                        cell.iterations += iters;
                        total
                    })
                });
            }
        }
        group.finish();
    }
}

/// `a / b` with two decimals, or "-" where nothing was counted (queues
/// whose consumer does not poll through [`Idle`], and criterion runs).
fn per(a: u64, b: u64) -> String {
    if a == 0 || b == 0 {
        "-".into()
    } else {
        format!("{:.2}", a as f64 / b as f64)
    }
}

fn print_table(round_trip: f64, rounds: usize) {
    let results = RESULTS.lock().unwrap();
    if results.is_empty() {
        return;
    }
    println!();
    println!("cache-line round trip between two threads: {round_trip:.0} ns");
    println!("medians of {rounds} interleaved rounds per cell; spread: slowest-fastest round");
    println!(
        "space per entry: mpring align8(8 + len) (8-byte header, 0-7 bytes of alignment); \
         nexus-logbuf align8(8 + len) (the same)"
    );
    let mut keys: Vec<(Regime, Sizes, usize)> =
        results.keys().map(|&(r, s, p, _)| (r, s, p)).collect();
    keys.dedup();
    let mut last_regime = None;
    for (regime, sizes, producers) in keys {
        if last_regime != Some(regime) {
            last_regime = Some(regime);
            println!();
            println!("regime {}", regime.name());
            println!();
            println!(
                "| sizes | P | queue | M msgs/s | spread | GB/s | mpring / queue | full retries per msg | CPU ns per msg | msgs per batch | empty polls per msg |"
            );
            println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        }
        let mpring = results
            .get(&(regime, sizes, producers, 0))
            .map(|c| c.msgs as f64 / median(&c.samples));
        for (index, &(name, _, _)) in QUEUES.iter().enumerate() {
            let Some(cell) = results.get(&(regime, sizes, producers, index)) else {
                continue;
            };
            if cell.samples.is_empty() {
                continue;
            }
            let secs = median(&cell.samples);
            let rate = cell.msgs as f64 / secs;
            let slowest = cell.samples.iter().copied().fold(0.0, f64::max);
            let fastest = cell.samples.iter().copied().fold(f64::INFINITY, f64::min);
            let ratio = match mpring {
                Some(m) if index != 0 => format!("{:.2}x", m / rate),
                _ => "-".into(),
            };
            println!(
                "| {} | {} | {} | {:.2} | {:.1}-{:.1} | {:.2} | {} | {:.3} | {:.0} | {} | {} |",
                sizes.name(),
                producers,
                name,
                rate / 1e6,
                cell.msgs as f64 / slowest / 1e6,
                cell.msgs as f64 / fastest / 1e6,
                cell.bytes as f64 / secs / 1e9,
                ratio,
                cell.fulls as f64 / (cell.msgs * cell.iterations) as f64,
                median(&cell.cpu) * 1e9 / cell.msgs as f64,
                per(cell.msgs * cell.iterations, cell.batches),
                per(cell.empties, cell.msgs * cell.iterations),
            );
        }
    }
}

/// The table's measurements: for every cell, `rounds` rounds, each of
/// which runs every queue once in turn, so that all queues of a cell see
/// the same machine conditions (placement drifts during a run here).
fn interleaved(regimes: &[Regime], rounds: usize, filters: &[String]) {
    for &regime in regimes {
        SPIN_LIMIT.store(regime.spin_limit(), Ordering::Relaxed);
        for sizes in [Sizes::Small, Sizes::Datagram, Sizes::Mixed] {
            for producers in producer_counts() {
                let n = sizes.messages(producers);
                let lengths: Vec<Vec<usize>> =
                    (0..producers).map(|p| sizes.lengths(p, n)).collect();
                let msgs = (n * producers) as u64;
                let bytes: u64 = lengths.iter().flatten().map(|&l| l as u64).sum();
                let queues: Vec<usize> = QUEUES
                    .iter()
                    .enumerate()
                    .filter(|(_, &(name, _, multi))| {
                        let id = format!(
                            "peers/{}/{}/{}/P{}",
                            regime.name(),
                            sizes.name(),
                            name,
                            producers
                        );
                        (multi || producers == 1)
                            && runnable(name)
                            && (filters.is_empty() || filters.iter().any(|f| id.contains(f)))
                    })
                    .map(|(i, _)| i)
                    .collect();
                // One untimed warm-up run each.
                for &q in &queues {
                    QUEUES[q].1(regime, producers, &lengths, &AtomicU64::new(0));
                }
                for _ in 0..rounds {
                    for &q in &queues {
                        let fulls = AtomicU64::new(0);
                        let cpu_before = process_cpu();
                        POLLS.iter().for_each(|p| p.store(0, Ordering::Relaxed));
                        let secs = QUEUES[q].1(regime, producers, &lengths, &fulls).as_secs_f64();
                        let cpu = process_cpu() - cpu_before;
                        let mut results = RESULTS.lock().unwrap();
                        let cell = results.entry((regime, sizes, producers, q)).or_default();
                        cell.samples.push(secs);
                        cell.cpu.push(cpu);
                        cell.msgs = msgs;
                        cell.bytes = bytes;
                        cell.fulls += fulls.load(Ordering::Relaxed);
                        cell.batches += POLLS[0].load(Ordering::Relaxed);
                        cell.empties += POLLS[1].load(Ordering::Relaxed);
                        cell.iterations += 1;
                    }
                }
            }
        }
    }
}

criterion_group!(benches, peers);

/// `PEERS_SCALE`: how many times the default messages an iteration moves.
fn scale() -> usize {
    std::env::var("PEERS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s >= 1)
        .unwrap_or(1)
}

/// CPU seconds this process has used, every thread, user and system.
fn process_cpu() -> f64 {
    // SAFETY: getrusage writes one rusage, which we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    let round_trip = round_trip_ns();
    println!("cache-line round trip between two threads: {round_trip:.0} ns");
    println!(
        "mean sizes: 64B = {}, 1350B = {}, 20-1500B = {} bytes",
        Sizes::Small.mean(),
        Sizes::Datagram.mean(),
        Sizes::Mixed.mean()
    );
    // `cargo bench --bench peers -- FILTER...`: a cell runs when its name
    // contains any of the free arguments (all cells when there are none).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rounds = std::env::var("PEERS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    if let Some(why) = AERON_MISSING {
        println!("{why}");
    }
    interleaved(&Regime::from_env(), rounds, &filters);
    print_table(round_trip, rounds);
    if std::env::var_os("PEERS_CRITERION").is_some() {
        RESULTS.lock().unwrap().clear();
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
