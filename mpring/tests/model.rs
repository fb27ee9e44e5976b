//! Random operation sequences on one thread, checked against a `VecDeque`
//! model of what the consumer must see, across random capacities and both
//! alignments.
#![cfg(not(miri))] // thousands of cases: too slow under Miri

use std::collections::VecDeque;

use mpring::{Alignment, ReserveError, Ring};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        len: usize,
        fill: u8,
    },
    Commit {
        which: usize,
    },
    Shrink {
        which: usize,
        keep: usize,
    },
    Abort {
        which: usize,
    },
    Read {
        max: usize,
    },
    ReadOne,
    Release,
    ReserveBatch {
        count: usize,
        len: usize,
        fill: u8,
    },
    /// Commits the first `seed % (count + 1)` slots of a live batch, with
    /// lengths drawn from `seed`.
    CommitBatch {
        which: usize,
        seed: u64,
    },
}

fn op(max_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop_oneof![Just(0), Just(max_len), 0..=max_len, max_len + 1..=max_len + 8], any::<u8>())
            .prop_map(|(len, fill)| Op::Reserve { len, fill }),
        3 => any::<usize>().prop_map(|which| Op::Commit { which }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(which, keep)| Op::Shrink { which, keep }),
        1 => any::<usize>().prop_map(|which| Op::Abort { which }),
        2 => (1usize..6).prop_map(|max| Op::Read { max }),
        2 => Just(Op::ReadOne),
        1 => Just(Op::Release),
        2 => (0usize..6, prop_oneof![Just(0), 0..=max_len / 2, Just(max_len / 2), max_len / 2 + 1..=max_len + 8], any::<u8>())
            .prop_map(|(count, len, fill)| Op::ReserveBatch { count, len, fill }),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(which, seed)| Op::CommitBatch { which, seed }),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Slot {
    Pending(u64),
    Committed(Vec<u8>),
    Aborted,
    /// A committed batch: its entries, in slot order (none: aborted).
    Batch(VecDeque<Vec<u8>>),
}

/// What the consumer can read now: committed entries up to the first
/// pending one, aborted ones skipped.
fn pop_ready(model: &mut VecDeque<Slot>) -> Option<Vec<u8>> {
    loop {
        match model.front()? {
            Slot::Pending(_) => return None,
            Slot::Aborted => {
                model.pop_front();
            }
            Slot::Committed(_) => match model.pop_front() {
                Some(Slot::Committed(bytes)) => return Some(bytes),
                _ => unreachable!(),
            },
            Slot::Batch(entries) if entries.is_empty() => {
                model.pop_front();
            }
            Slot::Batch(_) => match model.front_mut() {
                Some(Slot::Batch(entries)) => return entries.pop_front(),
                _ => unreachable!(),
            },
        }
    }
}

fn set(model: &mut VecDeque<Slot>, id: u64, slot: Slot) {
    let at = model
        .iter()
        .position(|s| *s == Slot::Pending(id))
        .expect("pending slot");
    model[at] = slot;
}

fn run(capacity: usize, alignment: Alignment, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let align = alignment.bytes();
    let stride = |len: usize| (align + len).div_ceil(align) * align;
    let (producer, mut consumer) = Ring::builder(capacity)
        .alignment(alignment)
        .build()
        .unwrap();
    let max = producer.max_payload();
    let mut model: VecDeque<Slot> = VecDeque::new();
    let mut live = Vec::new(); // (id, reservation)
    let mut batches = Vec::new(); // (id, batch)
    let mut next_id = 0u64;
    let check_read = |got: Option<Vec<u8>>, model: &mut VecDeque<Slot>| {
        let want = pop_ready(model);
        prop_assert_eq!(got, want);
        Ok(())
    };
    for op in ops {
        match op {
            Op::Reserve { len, fill } => {
                let used = consumer.used_bytes();
                match producer.reserve(len) {
                    Ok(mut r) => {
                        prop_assert!(len <= max);
                        prop_assert!(used + stride(len) <= capacity, "reserved beyond capacity");
                        prop_assert!(r.iter().all(|&b| b == 0), "fresh reservation not zeroed");
                        prop_assert_eq!(r.len(), len);
                        r.fill(fill);
                        live.push((next_id, r));
                        model.push_back(Slot::Pending(next_id));
                        next_id += 1;
                    }
                    Err(ReserveError::TooLarge { len: l, max: m }) => {
                        prop_assert_eq!((l, m), (len, max));
                        prop_assert!(len > max);
                    }
                    Err(ReserveError::Full) => {
                        prop_assert!(len <= max);
                        // Full only when the entry plus the worst padding
                        // before it does not fit.
                        prop_assert!(
                            used + 2 * stride(len) > capacity,
                            "spurious Full: used {} len {}",
                            used,
                            len
                        );
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                }
            }
            Op::Commit { which } if !live.is_empty() => {
                let (id, r) = live.remove(which % live.len());
                let bytes = r.to_vec();
                r.commit();
                set(&mut model, id, Slot::Committed(bytes));
            }
            Op::Shrink { which, keep } if !live.is_empty() => {
                let (id, r) = live.remove(which % live.len());
                let keep = if r.is_empty() {
                    0
                } else {
                    keep % (r.len() + 1)
                };
                let bytes = r[..keep].to_vec();
                r.commit_len(keep);
                set(&mut model, id, Slot::Committed(bytes));
            }
            Op::Abort { which } if !live.is_empty() => {
                let (id, r) = live.remove(which % live.len());
                drop(r);
                set(&mut model, id, Slot::Aborted);
            }
            Op::Read { max } => {
                let mut got = Vec::new();
                let n = consumer.read_batch(max, |e| got.push(e.to_vec()));
                prop_assert_eq!(n, got.len());
                prop_assert!(n <= max);
                for bytes in got {
                    check_read(Some(bytes), &mut model)?;
                }
                if n < max {
                    check_read(None, &mut model)?;
                }
            }
            Op::ReadOne => {
                let got = consumer.read().map(|e| e.to_vec());
                check_read(got, &mut model)?;
            }
            Op::Release => consumer.release(),
            Op::ReserveBatch { count, len, fill } => {
                let used = consumer.used_bytes();
                let total = count * stride(len);
                match producer.reserve_batch(count, len) {
                    Ok(mut batch) => {
                        prop_assert!(count == 0 || (len <= max && total <= capacity / 2));
                        prop_assert!(used + total <= capacity, "reserved beyond capacity");
                        prop_assert_eq!(batch.slots_mut().len(), count);
                        for (i, slot) in batch.slots_mut().enumerate() {
                            prop_assert_eq!(slot.len(), len);
                            prop_assert!(slot.iter().all(|&b| b == 0), "fresh slot not zeroed");
                            slot.fill(fill.wrapping_add(i as u8));
                        }
                        if count > 0 {
                            batches.push((next_id, batch));
                            model.push_back(Slot::Pending(next_id));
                            next_id += 1;
                        }
                    }
                    Err(ReserveError::BatchTooLarge {
                        count: c,
                        slot_len,
                        max_count,
                    }) => {
                        prop_assert_eq!((c, slot_len), (count, len));
                        let fits = if len <= max {
                            capacity / 2 / stride(len)
                        } else {
                            0
                        };
                        prop_assert_eq!(max_count, fits);
                        prop_assert!(count > fits);
                    }
                    Err(ReserveError::Full) => {
                        prop_assert!(
                            used + 2 * total > capacity,
                            "spurious Full for a batch: used {} total {}",
                            used,
                            total
                        );
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                }
            }
            Op::CommitBatch { which, seed } if !batches.is_empty() => {
                let (id, mut batch) = batches.remove(which % batches.len());
                let k = (seed % (batch.count() as u64 + 1)) as usize;
                let slot_len = batch.slot_len();
                let lens: Vec<usize> = (0..k)
                    .map(|i| ((seed >> (8 + 4 * i)) as usize).wrapping_mul(7919) % (slot_len + 1))
                    .collect();
                let entries = batch
                    .slots_mut()
                    .zip(&lens)
                    .map(|(slot, &len)| slot[..len].to_vec())
                    .collect();
                batch.commit(&lens);
                set(&mut model, id, Slot::Batch(entries));
            }
            Op::Commit { .. } | Op::Shrink { .. } | Op::Abort { .. } | Op::CommitBatch { .. } => {}
        }
    }
    // Finish: commit everything left, then everything must come out in order.
    for (id, mut batch) in batches.drain(..) {
        let entries = batch.slots_mut().map(|slot| slot.to_vec()).collect();
        let lens = vec![batch.slot_len(); batch.count()];
        batch.commit(&lens);
        set(&mut model, id, Slot::Batch(entries));
    }
    for (id, r) in live.drain(..) {
        let bytes = r.to_vec();
        r.commit();
        set(&mut model, id, Slot::Committed(bytes));
    }
    loop {
        let got = consumer.read().map(|e| e.to_vec());
        let done = got.is_none();
        check_read(got, &mut model)?;
        if done {
            break;
        }
    }
    prop_assert!(model.is_empty());
    prop_assert!(consumer.is_empty());
    prop_assert_eq!(consumer.used_bytes(), 0);
    Ok(())
}

fn case() -> impl Strategy<Value = (usize, Alignment, Vec<Op>)> {
    (
        5u32..13,
        prop_oneof![Just(Alignment::Eight), Just(Alignment::Sixteen)],
    )
        .prop_flat_map(|(shift, alignment)| {
            let capacity = 1usize << shift;
            let max = capacity / 2 - alignment.bytes();
            (
                Just(capacity),
                Just(alignment),
                prop::collection::vec(op(max), 1..200),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ring_behaves_like_a_queue((capacity, alignment, ops) in case()) {
        run(capacity, alignment, ops)?;
    }
}
