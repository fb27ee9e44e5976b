//! What waiting costs: throughput of a consumer that sleeps when the ring is
//! empty against one that polls, and the latency from a commit to a sleeping
//! consumer running.
//!
//! ```text
//! cargo bench --bench wakeup
//! ```

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use mpring::{Ring, WaitError};

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

/// Commit-to-running latency of a consumer asleep in `wait`: the producer
/// pauses so that the consumer is surely asleep, stamps the time, pushes;
/// the consumer reads the stamp as soon as it runs.
fn wakeup_latency(samples: usize, pause: Duration) -> Vec<f64> {
    let (producer, mut consumer) = Ring::new(1 << 16).unwrap();
    let base = Instant::now();
    let writer = thread::spawn(move || {
        for _ in 0..samples {
            thread::sleep(pause);
            let stamp = base.elapsed().as_nanos() as u64;
            producer.push(&stamp.to_le_bytes()).unwrap();
        }
    });
    let mut latencies = Vec::with_capacity(samples);
    loop {
        match consumer.wait() {
            Ok(()) => {
                let now = base.elapsed().as_nanos() as u64;
                consumer.read_batch(usize::MAX, |m| {
                    let stamp = u64::from_le_bytes(m.try_into().unwrap());
                    // An entry committed after `now` arrived while we were
                    // awake: it measures no wake-up.
                    if stamp <= now {
                        latencies.push((now - stamp) as f64);
                    }
                });
            }
            Err(WaitError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    writer.join().unwrap();
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
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
    let samples = 10_000;
    let mut lat = wakeup_latency(samples, Duration::from_micros(50));
    lat.sort_by(f64::total_cmp);
    println!(
        "wake-up latency, commit to a sleeping consumer running ({} samples): median {:.1} us, p99 {:.1} us, max {:.1} us",
        lat.len(),
        percentile(&lat, 0.5) / 1e3,
        percentile(&lat, 0.99) / 1e3,
        lat[lat.len() - 1] / 1e3
    );
}
