//! Several producers, random sizes from 0 to the maximum, random aborts and
//! shrinks, tiny and large rings (so padding happens all the time), one
//! consumer mixing single reads and batches. Every entry is checked byte for
//! byte against what its producer must have written, in per-producer order:
//! nothing lost, nothing duplicated, nothing corrupted.
//!
//! Each producer draws its steps from its own seeded generator; the consumer
//! replays the same generators to know what must come next. A committed
//! length is always congruent to the producer's id modulo the number of
//! producers, so the consumer can tell whose entry it holds even when it is
//! 0 bytes long.

use std::thread;

use mpring::{Alignment, ReserveError, Ring};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, PartialEq)]
enum Step {
    Commit(usize),
    /// Reserve the first, commit the second.
    Shrink(usize, usize),
    Abort(usize),
}

struct Plan {
    rng: SmallRng,
    id: usize,
    producers: usize,
    max: usize,
}

impl Plan {
    fn new(seed: u64, id: usize, producers: usize, max: usize) -> Plan {
        assert!(max >= producers);
        Plan {
            rng: SmallRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            id,
            producers,
            max,
        }
    }

    /// A length whose remainder modulo `producers` is this producer's id.
    fn tagged(&self, raw: usize) -> usize {
        let len = raw - raw % self.producers + self.id;
        if len > self.max {
            len - self.producers
        } else {
            len
        }
    }

    fn next(&mut self) -> Step {
        let raw = match self.rng.gen_range(0..20) {
            0 => 0,
            1 => self.max,
            _ => self.rng.gen_range(0..=self.max),
        };
        let len = self.tagged(raw);
        match self.rng.gen_range(0..100) {
            0..=84 => Step::Commit(len),
            85..=92 => {
                let keep = self.rng.gen_range(0..=len);
                let keep = if keep < self.id {
                    len
                } else {
                    self.tagged(keep)
                };
                Step::Shrink(len, keep)
            }
            _ => Step::Abort(len),
        }
    }
}

/// The bytes of producer `id`'s step `seq`.
fn fill(buf: &mut [u8], id: usize, seq: u64) {
    let mut x = (id as u64) << 48 ^ seq ^ 0xD1B5_4A32_D192_ED03;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// How the consumer spends an empty poll.
#[derive(Clone, Copy, PartialEq)]
enum Idle {
    /// Yields and polls again.
    Yield,
    /// Blocks in `wait()` with spin 0: it sleeps on almost every empty poll,
    /// and each wake-up races with the next commit.
    Sleep,
}

fn stress(capacity: usize, alignment: Alignment, producers: usize, steps: u64, seed: u64) {
    stress_idle(
        capacity,
        alignment,
        producers,
        steps,
        seed,
        Idle::Yield,
        false,
    );
}

/// In read-around mode (`around`), producers also hold some reservations
/// for a while (yielding inside them), so that the consumer reads past
/// them, and entries of different producers come out in commit order.
fn stress_idle(
    capacity: usize,
    alignment: Alignment,
    producers: usize,
    steps: u64,
    seed: u64,
    idle: Idle,
    around: bool,
) {
    let (producer, mut consumer) = Ring::builder(capacity)
        .alignment(alignment)
        .read_around_open(around)
        .build()
        .unwrap();
    consumer.set_spin(std::time::Duration::ZERO);
    let max = producer.max_payload();
    let workers: Vec<_> = (0..producers)
        .map(|id| {
            let producer = producer.clone();
            thread::spawn(move || {
                let mut plan = Plan::new(seed, id, producers, max);
                let mut scratch = vec![0u8; max];
                for seq in 0..steps {
                    let step = plan.next();
                    let len = match step {
                        Step::Commit(len) | Step::Shrink(len, _) | Step::Abort(len) => len,
                    };
                    let mut reservation = loop {
                        match producer.reserve(len) {
                            Ok(r) => break r,
                            Err(ReserveError::Full) => thread::yield_now(),
                            Err(e) => panic!("producer {id}: {e}"),
                        }
                    };
                    if around && seq % 17 == id as u64 % 17 {
                        // A listener preempted while it holds a reservation.
                        for _ in 0..(seq % 5 + 1) {
                            thread::yield_now();
                        }
                    }
                    match step {
                        Step::Commit(len) if seq % 3 == 0 => {
                            // The same bytes through `push`.
                            drop(reservation);
                            fill(&mut scratch[..len], id, seq);
                            while let Err(e) = producer.push(&scratch[..len]) {
                                assert_eq!(e, ReserveError::Full);
                                thread::yield_now();
                            }
                        }
                        Step::Commit(_) => {
                            fill(&mut reservation, id, seq);
                            reservation.commit();
                        }
                        Step::Shrink(_, keep) => {
                            fill(&mut reservation[..keep], id, seq);
                            // Scribble on what is not kept: it must never show.
                            reservation[keep..].fill(0xFF);
                            reservation.commit_len(keep);
                        }
                        Step::Abort(_) => {
                            reservation.fill(0xFF);
                            drop(reservation);
                        }
                    }
                }
            })
        })
        .collect();
    drop(producer);

    let mut replay: Vec<(Plan, u64)> = (0..producers)
        .map(|id| (Plan::new(seed, id, producers, max), 0))
        .collect();
    let mut expected = vec![0u8; max];
    let mut check = |entry: &[u8]| {
        let id = entry.len() % producers;
        let (plan, seq) = &mut replay[id];
        let len = loop {
            assert!(*seq < steps, "producer {id} sent more than it committed");
            let step = plan.next();
            *seq += 1;
            match step {
                Step::Commit(len) | Step::Shrink(_, len) => break len,
                Step::Abort(_) => continue,
            }
        };
        assert_eq!(entry.len(), len, "producer {id} step {} length", *seq - 1);
        fill(&mut expected[..len], id, *seq - 1);
        assert!(
            entry == &expected[..len],
            "producer {id} step {} bytes",
            *seq - 1
        );
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut entries = 0u64;
    loop {
        let done = consumer.is_disconnected();
        let n = if rng.gen_bool(0.5) {
            consumer.read_batch(rng.gen_range(1..64), &mut check)
        } else {
            match consumer.read() {
                Some(entry) => {
                    check(&entry);
                    1
                }
                None => 0,
            }
        };
        entries += n as u64;
        if n == 0 {
            if done {
                break;
            }
            match idle {
                Idle::Yield => thread::yield_now(),
                Idle::Sleep => match consumer.wait() {
                    Ok(()) | Err(mpring::WaitError::Disconnected) => {}
                    Err(e) => panic!("{e}"),
                },
            }
        }
    }
    for worker in workers {
        worker.join().unwrap();
    }
    // Every producer's committed steps were all seen.
    for (id, (plan, seq)) in replay.iter_mut().enumerate() {
        while *seq < steps {
            let step = plan.next();
            *seq += 1;
            assert!(
                matches!(step, Step::Abort(_)),
                "producer {id}: committed step {} never arrived",
                *seq - 1
            );
        }
    }
    assert!(consumer.is_empty());
    assert!(entries > 0);
}

#[cfg(not(miri))]
mod full {
    use super::*;

    #[test]
    fn tiny_ring_pads_constantly() {
        stress(64, Alignment::Eight, 3, 20_000, 1);
    }

    #[test]
    fn small_ring_sixteen_byte_alignment() {
        stress(256, Alignment::Sixteen, 4, 20_000, 2);
    }

    #[test]
    fn large_ring_large_entries() {
        stress(1 << 16, Alignment::Eight, 4, 5_000, 3);
    }

    #[test]
    fn consumer_sleeps_on_every_empty_poll() {
        stress_idle(1024, Alignment::Eight, 3, 20_000, 7, Idle::Sleep, false);
    }

    #[test]
    fn read_around_tiny_ring() {
        stress_idle(64, Alignment::Eight, 3, 20_000, 11, Idle::Yield, true);
    }

    #[test]
    fn read_around_sixteen_byte_alignment() {
        stress_idle(512, Alignment::Sixteen, 4, 20_000, 12, Idle::Yield, true);
    }

    #[test]
    fn read_around_consumer_sleeps_on_every_empty_poll() {
        stress_idle(4096, Alignment::Eight, 4, 10_000, 13, Idle::Sleep, true);
    }

    #[test]
    fn more_producers_than_cores() {
        stress(4096, Alignment::Eight, 8, 5_000, 4);
    }
}

/// A short run that Miri (and ThreadSanitizer) can afford.
#[test]
fn small_concurrent_stress() {
    let steps = if cfg!(miri) { 40 } else { 2_000 };
    stress(128, Alignment::Eight, 2, steps, 5);
    stress(128, Alignment::Sixteen, 3, steps / 2, 6);
    stress_idle(256, Alignment::Eight, 2, steps, 8, Idle::Sleep, false);
    stress_idle(256, Alignment::Eight, 3, steps, 9, Idle::Yield, true);
    stress_idle(512, Alignment::Eight, 2, steps, 10, Idle::Sleep, true);
}
