//! What waiting costs: throughput of a consumer that sleeps when the ring is
//! empty against one that polls, and the latency from a commit to a waiting
//! consumer running: with a producer that pauses 50 us before each commit
//! (every wait ends in a sleep), and with irregular arrivals (gaps uniform
//! in 0-100 us, the same seeded sequence for every consumer: some entries
//! find the consumer still polling, some asleep).
//!
//! ```text
//! cargo bench --bench wakeup [-- throughput | latency | irregular]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use mpring::{Ring, WaitError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const RING_BYTES: usize = 1 << 20;

/// Moves `n` messages of `len` bytes from `producers` threads; the consumer
/// either polls (spin, then yield, as in the peer benchmark) or waits with
/// `read_batch_timeout` after `set_spin(spin)`, and spends `work` rounds of
/// a cheap hash on every message (a busy handler). Returns messages per second.
fn throughput(producers: usize, len: usize, n: usize, work: u32, wait: Option<Duration>) -> f64 {
    let (producer, mut consumer) = Ring::new(RING_BYTES).unwrap();
    if let Some(spin) = wait {
        consumer.set_spin(spin);
    }
    let source = vec![0x5Au8; len];
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let producer = producer.clone();
            let source = source.clone();
            thread::spawn(move || {
                for _ in 0..n / producers {
                    let backoff = Backoff::new();
                    loop {
                        match producer.push(&source) {
                            Ok(()) => break,
                            Err(_) => backoff.snooze(),
                        }
                    }
                }
            })
        })
        .collect();
    drop(producer);
    let mut seen = 0usize;
    let mut sum = 0u64;
    let backoff = Backoff::new();
    loop {
        let got = if wait.is_some() {
            match consumer
                .read_batch_timeout(256, Duration::from_secs(10), |m| sum += handle(m, work))
            {
                Ok(got) => got,
                Err(WaitError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        } else {
            let got = consumer.read_batch(256, |m| sum += handle(m, work));
            if got == 0 {
                if consumer.is_disconnected() && consumer.is_empty() {
                    break;
                }
                for _ in 0..256 {
                    std::hint::spin_loop();
                }
                backoff.snooze();
            } else {
                backoff.reset();
            }
            got
        };
        seen += got;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(seen, n / producers * producers);
    std::hint::black_box(sum);
    seen as f64 / elapsed
}

/// The handler's work on one message.
#[inline]
fn handle(m: &[u8], work: u32) -> u64 {
    let mut h = m[m.len() - 1] as u64;
    for _ in 0..work {
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    }
    h
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How the consumer waits in a latency run.
#[derive(Clone, Copy)]
enum Waiter {
    /// A flag and `thread::park`/`unpark`: the floor a blocking hand-off
    /// between two threads has on this machine.
    Handoff,
    /// The same hand-off, polling the flag for a while before parking.
    HandoffSpin(Duration),
    /// `Consumer::wait`, after `set_spin(spin)` if given.
    Wait(Option<Duration>),
    /// `Consumer::ready().await` on a current-thread tokio runtime.
    Async,
}

impl Waiter {
    fn name(self) -> String {
        match self {
            Waiter::Handoff => "flag + park/unpark".into(),
            Waiter::HandoffSpin(spin) => {
                format!("flag + park/unpark, spin {} us", spin.as_micros())
            }
            Waiter::Wait(None) => "ring wait, default spin".into(),
            Waiter::Wait(Some(spin)) => format!("ring wait, spin {} us", spin.as_micros()),
            Waiter::Async => "ring ready().await, current-thread tokio".into(),
        }
    }
}

/// What the producer does before each commit of a latency run.
#[derive(Clone, Copy)]
enum Gaps {
    /// `thread::sleep` this long: the consumer is surely asleep.
    Sleep(Duration),
    /// A gap drawn uniformly in 0..max from a seeded generator (every
    /// consumer sees the same gaps), slept with a timer slack of 1 ns (the
    /// default slack, 50 us, would stretch every gap to at least that); a
    /// gap under 2 us is spun instead. The producer blocks in its gaps, as
    /// a thread waiting on a socket does: a producer that spun through them
    /// would hold its core, and a consumer woken onto that core would wait
    /// for the scheduler's tick.
    Uniform(Duration),
}

impl Gaps {
    /// The producer's pause before each commit, as a closure, to be made
    /// on the producer's thread (the timer slack is per thread).
    fn pauser(self) -> impl FnMut() {
        if let Gaps::Uniform(_) = self {
            // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and
            // touches no memory of ours.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        }
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        move || match self {
            Gaps::Sleep(d) => thread::sleep(d),
            Gaps::Uniform(max) => {
                let gap = Duration::from_nanos(rng.gen_range(0..max.as_nanos() as u64));
                if gap >= Duration::from_micros(2) {
                    thread::sleep(gap);
                } else {
                    let until = Instant::now() + gap;
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }
}

/// Commit-to-running latency of a sleeping consumer: the producer pauses
/// (longer than any spin) so that the consumer is surely asleep, stamps
/// the time and hands the stamp over; the consumer takes the time as soon
/// as it runs. Returns the latencies (ns) and how many times the consumer
/// really slept.
fn wakeup_latency(waiter: Waiter, samples: usize, gaps: Gaps) -> (Vec<f64>, u64) {
    let base = Instant::now();
    let mut latencies = Vec::with_capacity(samples);
    let mut record = |stamp: u64| {
        let now = base.elapsed().as_nanos() as u64;
        latencies.push(now.saturating_sub(stamp) as f64);
    };
    let sleeps = match waiter {
        Waiter::Handoff | Waiter::HandoffSpin(_) => {
            let spin = match waiter {
                Waiter::HandoffSpin(spin) => spin,
                _ => Duration::ZERO,
            };
            let slot = Arc::new(AtomicU64::new(0));
            let consumer = thread::current();
            let writer = {
                let slot = slot.clone();
                thread::spawn(move || {
                    let mut pause = gaps.pauser();
                    for _ in 0..samples {
                        pause();
                        // A slow wake-up may not have taken the last stamp.
                        while slot.load(Ordering::Acquire) != 0 {
                            thread::yield_now();
                        }
                        let stamp = base.elapsed().as_nanos() as u64;
                        slot.store(stamp, Ordering::Release);
                        consumer.unpark();
                    }
                })
            };
            let mut sleeps = 0;
            for _ in 0..samples {
                let spin_end = Instant::now() + spin;
                loop {
                    let stamp = slot.swap(0, Ordering::Acquire);
                    if stamp != 0 {
                        record(stamp);
                        break;
                    }
                    if Instant::now() < spin_end {
                        for _ in 0..256 {
                            std::hint::spin_loop();
                        }
                        continue;
                    }
                    sleeps += 1;
                    thread::park();
                }
            }
            writer.join().unwrap();
            sleeps
        }
        Waiter::Wait(_) | Waiter::Async => {
            let (producer, mut consumer) = Ring::new(1 << 16).unwrap();
            if let Waiter::Wait(Some(spin)) = waiter {
                consumer.set_spin(spin);
            }
            let writer = thread::spawn(move || {
                let mut pause = gaps.pauser();
                for _ in 0..samples {
                    pause();
                    let stamp = base.elapsed().as_nanos() as u64;
                    producer.push(&stamp.to_le_bytes()).unwrap();
                }
            });
            let mut on_entry = |m: &[u8]| record(u64::from_le_bytes(m.try_into().unwrap()));
            if let Waiter::Async = waiter {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    loop {
                        match consumer.ready().await {
                            Ok(()) => consumer.read_batch(usize::MAX, &mut on_entry),
                            Err(WaitError::Disconnected) => break,
                            Err(e) => panic!("{e}"),
                        };
                    }
                });
            } else {
                loop {
                    match consumer.wait() {
                        Ok(()) => consumer.read_batch(usize::MAX, &mut on_entry),
                        Err(WaitError::Disconnected) => break,
                        Err(e) => panic!("{e}"),
                    };
                }
            }
            writer.join().unwrap();
            consumer.sleep_count()
        }
    };
    (latencies, sleeps)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench --bench wakeup -- latency` (or `throughput`) runs one table.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |table: &str| only.is_empty() || only.iter().any(|a| a == table);
    if wants("throughput") {
        throughput_table();
    }
    if wants("latency") {
        latency_table(Gaps::Sleep(Duration::from_micros(50)));
    }
    if wants("irregular") {
        latency_table(Gaps::Uniform(Duration::from_micros(100)));
    }
}

/// The throughput table: polling against waiting, rounds interleaved.
fn throughput_table() {
    let rounds = 7;
    println!("throughput: polling vs waiting consumer (medians of {rounds} interleaved rounds)");
    println!("| consumer | P | size | polling M msgs/s | waiting, spin 5 us (default) | waiting, spin 20 us | waiting, spin 0 |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let spins = [
        Duration::from_micros(5),
        Duration::from_micros(20),
        Duration::ZERO,
    ];
    for (consumer, work) in [("busy", 200), ("fast", 0)] {
        for (producers, len, n) in [
            (1, 64, 1_000_000),
            (1, 1350, 400_000),
            (2, 64, 1_000_000),
            (2, 1350, 400_000),
        ] {
            let n = if work > 0 { n / 4 } else { n };
            let mut poll = Vec::new();
            let mut wait: Vec<Vec<f64>> = vec![Vec::new(); spins.len()];
            throughput(producers, len, n, work, None);
            for _ in 0..rounds {
                poll.push(throughput(producers, len, n, work, None));
                for (i, &spin) in spins.iter().enumerate() {
                    wait[i].push(throughput(producers, len, n, work, Some(spin)));
                }
            }
            let poll = median(poll);
            let cells: Vec<String> = wait
                .into_iter()
                .map(|w| {
                    let w = median(w);
                    format!("{:.2} ({:.3}x)", w / 1e6, w / poll)
                })
                .collect();
            println!(
                "| {consumer} | {producers} | {len} B | {:.2} | {} |",
                poll / 1e6,
                cells.join(" | ")
            );
        }
    }
    println!();
}

/// The wake-up table: every waiter in each round, rounds interleaved.
fn latency_table(gaps: Gaps) {
    let rounds = 5;
    let samples = 2_000;
    let mut waiters = vec![
        Waiter::Handoff,
        Waiter::Wait(None),
        Waiter::Wait(Some(Duration::ZERO)),
        Waiter::Async,
    ];
    // More spins to compare: `WAKEUP_SPINS=1,2,10` (microseconds).
    if let Ok(spins) = std::env::var("WAKEUP_SPINS") {
        for us in spins.split(',') {
            let us = us.trim().parse().expect("WAKEUP_SPINS: microseconds");
            waiters.push(Waiter::Wait(Some(Duration::from_micros(us))));
            waiters.push(Waiter::HandoffSpin(Duration::from_micros(us)));
        }
    }
    let mut all: Vec<(Vec<f64>, u64)> = vec![(Vec::new(), 0); waiters.len()];
    for _ in 0..rounds {
        for (i, &w) in waiters.iter().enumerate() {
            let (lat, sleeps) = wakeup_latency(w, samples, gaps);
            all[i].0.extend(lat);
            all[i].1 += sleeps;
        }
    }
    let producer = match gaps {
        Gaps::Sleep(d) => format!("producer sleeps {} us before each", d.as_micros()),
        Gaps::Uniform(max) => format!(
            "irregular arrivals: gaps uniform in 0-{} us, one seeded sequence for all",
            max.as_micros()
        ),
    };
    println!(
        "wake-up latency, commit to the consumer running ({rounds} interleaved rounds of {samples} samples, {producer})"
    );
    println!("| consumer | p50 us | p99 us | max us | p50 / hand-off | p99 / hand-off | sleeps per sample |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut base = (0.0, 0.0);
    for (i, (mut lat, sleeps)) in all.into_iter().enumerate() {
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        if i == 0 {
            base = (p50, p99);
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {:.2} |",
            waiters[i].name(),
            p50 / 1e3,
            p99 / 1e3,
            lat[lat.len() - 1] / 1e3,
            p50 / base.0,
            p99 / base.1,
            sleeps as f64 / lat.len() as f64
        );
    }
}
