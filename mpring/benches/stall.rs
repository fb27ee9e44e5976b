//! A stalled producer against a steady one: producer A holds a reservation
//! for 1 ms every 10 ms (sleeping inside it, as a preempted listener
//! would); producer B commits a 64-byte entry every 10 µs (100,000 a
//! second, which the ring absorbs during a hold); the consumer polls
//! eagerly. Reported: the latency from B's commit to its read, p50 / p99 /
//! max, in the default mode and in read-around mode, rounds alternated.
//!
//! ```text
//! cargo bench --bench stall
//! STALL_ROUNDS=5 STALL_SECS=2 cargo bench --bench stall
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mpring::{ReserveError, Ring};

const HOLD: Duration = Duration::from_millis(1);
const HOLD_EVERY: Duration = Duration::from_millis(10);
const STEADY_EVERY: Duration = Duration::from_micros(10);

struct Outcome {
    /// Commit-to-read latencies of the steady producer's entries, in ns.
    latencies: Vec<u64>,
    fulls: u64,
    holds: u64,
}

fn round(around: bool, secs: f64) -> Outcome {
    let (producer, mut consumer) = Ring::builder(1 << 20)
        .read_around_open(around)
        .build()
        .unwrap();
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let staller = {
        let (producer, stop, start) = (producer.clone(), stop.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut holds = 0;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                next += HOLD_EVERY;
                if let Ok(mut r) = producer.reserve(64) {
                    thread::sleep(HOLD); // preempted inside its reservation
                    r.fill(0);
                    r.commit();
                    holds += 1;
                }
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            holds
        })
    };
    let steady = {
        let (stop, start) = (stop.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut fulls = 0;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                next += STEADY_EVERY;
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                match producer.reserve(64) {
                    Ok(mut r) => {
                        r[0] = 1;
                        let stamp = base.elapsed().as_nanos() as u64;
                        r[8..16].copy_from_slice(&stamp.to_le_bytes());
                        r.commit();
                    }
                    Err(ReserveError::Full) => fulls += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            fulls
        })
    };
    let mut latencies = Vec::with_capacity((secs * 120_000.0) as usize);
    start.wait();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        consumer.read_batch(64, |entry| {
            if entry[0] == 1 {
                let stamp = u64::from_le_bytes(entry[8..16].try_into().unwrap());
                latencies.push((base.elapsed().as_nanos() as u64).saturating_sub(stamp));
            }
        });
    }
    stop.store(true, Ordering::Relaxed);
    let holds = staller.join().unwrap();
    let fulls = steady.join().unwrap();
    Outcome {
        latencies,
        fulls,
        holds,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("STALL_ROUNDS", 3.0) as usize;
    let secs = env("STALL_SECS", 1.0);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "stall: A holds a reservation {HOLD:?} every {HOLD_EVERY:?}; B commits every \
         {STEADY_EVERY:?}; {rounds} rounds of {secs} s per mode, alternated; {cores} cores"
    );
    println!();
    println!("| mode | round | B entries read | p50 | p99 | max | Full | holds |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in 0..rounds {
        for (name, around) in [("in order (default)", false), ("read-around", true)] {
            let mut o = round(around, secs);
            o.latencies.sort_unstable();
            println!(
                "| {name} | {} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {} | {} |",
                r + 1,
                o.latencies.len(),
                percentile(&o.latencies, 0.5),
                percentile(&o.latencies, 0.99),
                percentile(&o.latencies, 1.0),
                o.fulls,
                o.holds
            );
        }
    }
}
