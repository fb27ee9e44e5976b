//! Random operation sequences on one thread, checked against a `VecDeque`
//! model of what the consumer must see, across random capacities, both
//! alignments, and rings with and without a metadata record.
#![cfg(not(miri))] // thousands of cases: too slow under Miri

use std::collections::VecDeque;

use std::fmt::Debug;

use mpring::{Alignment, Metadata, ReserveError, Ring};
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
    /// Pushes `count` entries of lengths drawn from `seed` with one claim.
    PushBatch {
        count: usize,
        seed: u64,
        max_len: usize,
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
        2 => (0usize..6, any::<u64>(), prop_oneof![Just(max_len / 4), Just(max_len), Just(max_len + 1)])
            .prop_map(|(count, seed, max_len)| Op::PushBatch { count, seed, max_len }),
    ]
}

/// An entry as the consumer must see it: payload and record.
type Seen<M> = (Vec<u8>, M);

#[derive(Clone, Debug, PartialEq)]
enum Slot<M> {
    Pending(u64),
    Committed(Seen<M>),
    Aborted,
    /// A committed batch: its entries, in slot order (none: aborted).
    Batch(VecDeque<Seen<M>>),
}

/// What the consumer can read now: committed entries up to the first
/// pending one, aborted ones skipped.
fn pop_ready<M: PartialEq>(model: &mut VecDeque<Slot<M>>) -> Option<Seen<M>> {
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

/// What the consumer can read now in read-around mode: the first committed
/// entry in reservation order, reading past pending ones.
fn pop_ready_around<M: PartialEq>(model: &mut VecDeque<Slot<M>>) -> Option<Seen<M>> {
    let mut i = 0;
    while i < model.len() {
        match &mut model[i] {
            Slot::Pending(_) => i += 1,
            Slot::Aborted => {
                model.remove(i);
            }
            Slot::Batch(entries) if entries.is_empty() => {
                model.remove(i);
            }
            Slot::Batch(entries) => return entries.pop_front(),
            Slot::Committed(_) => match model.remove(i) {
                Some(Slot::Committed(seen)) => return Some(seen),
                _ => unreachable!(),
            },
        }
    }
    None
}

fn set<M: PartialEq>(model: &mut VecDeque<Slot<M>>, id: u64, slot: Slot<M>) {
    let at = model
        .iter()
        .position(|s| *s == Slot::Pending(id))
        .expect("pending slot");
    model[at] = slot;
}

/// Runs `ops` on a ring with records of type `M`; entry number `n` gets
/// the record `meta(n)`.
fn run<M>(
    capacity: usize,
    alignment: Alignment,
    ops: Vec<Op>,
    meta: fn(u64) -> M,
    around: bool,
) -> Result<(), TestCaseError>
where
    M: Metadata + PartialEq + Debug,
{
    let align = alignment.bytes();
    let room = std::mem::size_of::<M>().next_multiple_of(align);
    let stride = |len: usize| (align + room + len).div_ceil(align) * align;
    let (producer, mut consumer) = Ring::builder(capacity)
        .alignment(alignment)
        .metadata::<M>()
        .read_around_open(around)
        .build()
        .unwrap();
    let max = producer.max_payload();
    prop_assert_eq!(max, capacity / 2 - align - room);
    let mut model: VecDeque<Slot<M>> = VecDeque::new();
    let mut records = 0u64;
    let mut record = move || {
        records += 1;
        meta(records)
    };
    let mut live = Vec::new(); // (id, reservation)
    let mut batches = Vec::new(); // (id, batch)
    let mut next_id = 0u64;
    let check_read = |got: Option<Seen<M>>, model: &mut VecDeque<Slot<M>>| {
        let want = if around {
            pop_ready_around(model)
        } else {
            pop_ready(model)
        };
        prop_assert_eq!(got, want);
        Ok(())
    };
    for op in ops {
        match op {
            // Read-around mode reads past at most 32 open reservations;
            // the model keeps below that.
            Op::Reserve { .. } | Op::ReserveBatch { .. }
                if around && live.len() + batches.len() >= 16 => {}
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
                let m = record();
                r.commit_with(m);
                set(&mut model, id, Slot::Committed((bytes, m)));
            }
            Op::Shrink { which, keep } if !live.is_empty() => {
                let (id, r) = live.remove(which % live.len());
                let keep = if r.is_empty() {
                    0
                } else {
                    keep % (r.len() + 1)
                };
                let bytes = r[..keep].to_vec();
                let m = record();
                r.commit_len_with(keep, m);
                set(&mut model, id, Slot::Committed((bytes, m)));
            }
            Op::Abort { which } if !live.is_empty() => {
                let (id, r) = live.remove(which % live.len());
                drop(r);
                set(&mut model, id, Slot::Aborted);
            }
            Op::Read { max } => {
                let mut got = Vec::new();
                let n = consumer.read_batch_meta(max, |m, e| got.push((e.to_vec(), *m)));
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
                let got = consumer.read().map(|e| (e.to_vec(), *e.meta()));
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
                let commits: Vec<(usize, M)> = lens.iter().map(|&len| (len, record())).collect();
                let entries = batch
                    .slots_mut()
                    .zip(&commits)
                    .map(|(slot, &(len, m))| (slot[..len].to_vec(), m))
                    .collect();
                batch.commit_with(&commits);
                set(&mut model, id, Slot::Batch(entries));
            }
            Op::PushBatch {
                count,
                seed,
                max_len,
            } => {
                let used = consumer.used_bytes();
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|i| {
                        let len = ((seed >> (8 * i)) as usize).wrapping_mul(7919) % (max_len + 1);
                        vec![(seed as u8).wrapping_add(i as u8); len]
                    })
                    .collect();
                let total: usize = payloads.iter().map(|p| stride(p.len())).sum();
                let longest = payloads.iter().map(Vec::len).max().unwrap_or(0);
                let entries: Vec<(&[u8], M)> =
                    payloads.iter().map(|p| (&p[..], record())).collect();
                match producer.push_batch_with(&entries) {
                    Ok(()) => {
                        prop_assert!(longest <= max && total <= capacity / 2);
                        prop_assert!(used + total <= capacity, "pushed beyond capacity");
                        // Exactly the entries' room, plus any padding
                        // before them: never more than one lap's end.
                        let grew = consumer.used_bytes() - used;
                        prop_assert!(
                            grew >= total && (grew == total || grew < total + capacity / 2)
                        );
                        let seen = entries.iter().map(|&(p, m)| (p.to_vec(), m)).collect();
                        if count > 0 {
                            model.push_back(Slot::Batch(seen));
                        }
                    }
                    Err(ReserveError::TooLarge { len, max: m }) => {
                        prop_assert_eq!(m, max);
                        prop_assert!(len > max && payloads.iter().any(|p| p.len() == len));
                    }
                    Err(ReserveError::BatchTooLarge {
                        count: c,
                        slot_len,
                        max_count,
                    }) => {
                        prop_assert_eq!((c, slot_len), (count, longest));
                        prop_assert!(total > capacity / 2);
                        prop_assert_eq!(max_count, capacity / 2 / stride(longest));
                    }
                    Err(ReserveError::Full) => {
                        prop_assert!(
                            used + 2 * total > capacity,
                            "spurious Full for a pushed batch: used {} total {}",
                            used,
                            total
                        );
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                }
            }
            Op::Commit { .. } | Op::Shrink { .. } | Op::Abort { .. } | Op::CommitBatch { .. } => {}
        }
    }
    // Finish: commit everything left, then everything must come out in order.
    for (id, mut batch) in batches.drain(..) {
        let commits: Vec<(usize, M)> = (0..batch.count())
            .map(|_| (batch.slot_len(), record()))
            .collect();
        let entries = batch
            .slots_mut()
            .zip(&commits)
            .map(|(slot, &(_, m))| (slot.to_vec(), m))
            .collect();
        batch.commit_with(&commits);
        set(&mut model, id, Slot::Batch(entries));
    }
    for (id, r) in live.drain(..) {
        let bytes = r.to_vec();
        let m = record();
        r.commit_with(m);
        set(&mut model, id, Slot::Committed((bytes, m)));
    }
    loop {
        let got = consumer.read().map(|e| (e.to_vec(), *e.meta()));
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

/// A record with padding inside (the `u8` before the `u32`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Record {
    tag: u8,
    n: u32,
}

fn case(room: usize) -> impl Strategy<Value = (usize, Alignment, Vec<Op>)> {
    (
        6u32..13,
        prop_oneof![Just(Alignment::Eight), Just(Alignment::Sixteen)],
    )
        .prop_flat_map(move |(shift, alignment)| {
            let capacity = 1usize << shift;
            let max = capacity / 2 - alignment.bytes() - room.next_multiple_of(alignment.bytes());
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
    fn ring_behaves_like_a_queue((capacity, alignment, ops) in case(0)) {
        run(capacity, alignment, ops, |_| (), false)?;
    }

    #[test]
    fn ring_with_records_behaves_like_a_queue((capacity, alignment, ops) in case(8)) {
        run(capacity, alignment, ops, |n| Record { tag: n as u8, n: n as u32 }, false)?;
    }

    #[test]
    fn ring_reading_around_open_reservations((capacity, alignment, ops) in case(0)) {
        run(capacity, alignment, ops, |_| (), true)?;
    }

    #[test]
    fn ring_with_records_reading_around((capacity, alignment, ops) in case(8)) {
        run(capacity, alignment, ops, |n| Record { tag: n as u8, n: n as u32 }, true)?;
    }
}
