//! Single-thread cost of one entry's round trip: reserve + write + commit,
//! then read + release, in nanoseconds per entry, at 64 and 1,350 bytes,
//! for mpring (both alignments) and nexus-logbuf.
//!
//! ```text
//! cargo bench --bench ring
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mpring::{Alignment, Ring};

const CAPACITY: usize = 1 << 20;
/// Entries per iteration: one batch, released once.
const BATCH: usize = 32;

fn round_trip(c: &mut Criterion) {
    let source = [0xA5u8; 1350];
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(BATCH as u64));
    for len in [64usize, 1350] {
        for (name, alignment) in [
            ("mpring-8", Alignment::Eight),
            ("mpring-16", Alignment::Sixteen),
        ] {
            let (producer, mut consumer) = Ring::builder(CAPACITY)
                .alignment(alignment)
                .build()
                .unwrap();
            group.bench_function(BenchmarkId::new(name, len), |b| {
                b.iter(|| {
                    for _ in 0..BATCH {
                        let mut r = producer.reserve(len).unwrap();
                        r.copy_from_slice(&source[..len]);
                        r.commit();
                    }
                    let mut sum = 0usize;
                    consumer.read_batch(BATCH, |e| sum += e[len - 1] as usize);
                    std::hint::black_box(sum)
                })
            });
        }
        let (mut producer, mut consumer) = nexus_logbuf::queue::mpsc::new(CAPACITY);
        group.bench_function(BenchmarkId::new("nexus-logbuf", len), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let mut claim = producer.try_claim(len).unwrap();
                    claim.copy_from_slice(&source[..len]);
                    claim.commit();
                }
                let mut sum = 0usize;
                while let Some(record) = consumer.try_claim() {
                    sum += record[len - 1] as usize;
                }
                std::hint::black_box(sum)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
