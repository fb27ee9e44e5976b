//! Batch reservations: one claim for many entries, committed in part.

use mpring::{Alignment, Consumer, Producer, ReserveError, Ring};

fn read_all(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(entry) = consumer.read() {
        out.push(entry.to_vec());
    }
    out
}

/// Fills slot `i` with `len` bytes of value `i + 1` and returns the
/// entries the consumer must then see.
fn fill(batch: &mut mpring::BatchReservation<'_>, lens: &[usize]) -> Vec<Vec<u8>> {
    for (i, (slot, &len)) in batch.slots_mut().zip(lens).enumerate() {
        slot[..len].fill(i as u8 + 1);
    }
    lens.iter()
        .enumerate()
        .map(|(i, &len)| vec![i as u8 + 1; len])
        .collect()
}

/// Used bytes, `used_bytes()` once nothing is pending.
fn used(consumer: &mut Consumer) -> usize {
    consumer.release();
    consumer.used_bytes()
}

#[test]
fn one_slot_is_a_reservation() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let mut batch = producer.reserve_batch(1, 40).unwrap();
    assert_eq!((batch.count(), batch.slot_len()), (1, 40));
    let want = fill(&mut batch, &[40]);
    batch.commit(&[40]);
    assert_eq!(read_all(&mut consumer), want);
}

#[test]
fn committing_no_slot_aborts_and_gives_the_room_back() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let batch = producer.reserve_batch(4, 20).unwrap();
    assert_eq!(used(&mut consumer), 4 * 32);
    batch.commit(&[]);
    assert_eq!(used(&mut consumer), 0);
    assert!(read_all(&mut consumer).is_empty());
    // The same by dropping, and with a later reservation in the way: a
    // skipped span the consumer steps over.
    let batch = producer.reserve_batch(4, 20).unwrap();
    producer.push(b"after").unwrap();
    drop(batch);
    assert_eq!(read_all(&mut consumer), vec![b"after".to_vec()]);
}

#[test]
fn every_slot_committed_full() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let mut batch = producer.reserve_batch(8, 56).unwrap();
    let want = fill(&mut batch, &[56; 8]);
    batch.commit(&[56; 8]);
    assert_eq!(used(&mut consumer), 8 * 64);
    assert_eq!(read_all(&mut consumer), want);
}

#[test]
fn zero_byte_slots() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let batch = producer.reserve_batch(5, 0).unwrap();
    batch.commit(&[0, 0, 0]);
    assert_eq!(read_all(&mut consumer), vec![Vec::<u8>::new(); 3]);
    let mut batch = producer.reserve_batch(3, 30).unwrap();
    let want = fill(&mut batch, &[0, 30, 0]);
    batch.commit(&[0, 30, 0]);
    assert_eq!(read_all(&mut consumer), want);
}

#[test]
fn short_commits_are_moved_together_and_the_rest_goes_back() {
    let (producer, mut consumer) = Ring::new(1 << 16).unwrap();
    let mut batch = producer.reserve_batch(16, 1500).unwrap();
    let lens = [60, 1500, 3, 0, 1200, 61];
    let want = fill(&mut batch, &lens);
    batch.commit(&lens);
    // Headers plus payloads rounded to 8: nothing of the 10 unused slots
    // nor of the short ones stays claimed.
    let tight: usize = lens.iter().map(|len| (len + 15) / 8 * 8).sum();
    assert_eq!(used(&mut consumer), tight);
    assert_eq!(read_all(&mut consumer), want);
}

#[test]
fn short_commits_before_a_later_reservation_leave_one_skipped_span() {
    let (producer, mut consumer) = Ring::new(1 << 16).unwrap();
    let mut batch = producer.reserve_batch(4, 1000).unwrap();
    let later = producer.reserve(10).unwrap();
    let want = fill(&mut batch, &[5, 700]);
    batch.commit(&[5, 700]);
    assert_eq!(read_all(&mut consumer), want);
    later.commit();
    assert_eq!(read_all(&mut consumer), vec![vec![0; 10]]);
}

#[test]
fn the_largest_batch_and_one_slot_more() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    // Slots of 56 bytes take 64: eight fill half the ring.
    assert_eq!(
        producer.reserve_batch(9, 56).err(),
        Some(ReserveError::BatchTooLarge {
            count: 9,
            slot_len: 56,
            max_count: 8
        })
    );
    let max = producer.max_payload();
    assert_eq!(
        producer.reserve_batch(1, max + 1).err(),
        Some(ReserveError::BatchTooLarge {
            count: 1,
            slot_len: max + 1,
            max_count: 0
        })
    );
    let mut batch = producer.reserve_batch(8, 56).unwrap();
    let want = fill(&mut batch, &[56; 8]);
    batch.commit(&[56; 8]);
    let mut batch = producer.reserve_batch(1, max).unwrap();
    let one = fill(&mut batch, &[max]);
    batch.commit(&[max]);
    assert_eq!(read_all(&mut consumer), [want, one].concat());
}

#[test]
fn a_batch_ending_exactly_at_the_buffer_end_and_one_that_wraps() {
    let (producer, mut consumer) = Ring::new(512).unwrap();
    producer.push(&[9; 248]).unwrap(); // [0, 256)
    assert_eq!(read_all(&mut consumer).len(), 1);
    let mut batch = producer.reserve_batch(4, 56).unwrap(); // [256, 512)
    let want = fill(&mut batch, &[56; 4]);
    batch.commit(&[56; 4]);
    assert_eq!(read_all(&mut consumer), want);
    // At 0 again: fill to 448, then a batch of 2 × 64 pads [448, 512).
    producer.push(&[9; 248]).unwrap();
    producer.push(&[9; 184]).unwrap();
    assert_eq!(read_all(&mut consumer).len(), 2);
    let mut batch = producer.reserve_batch(2, 56).unwrap();
    let want = fill(&mut batch, &[10, 56]);
    batch.commit(&[10, 56]);
    assert_eq!(read_all(&mut consumer), want);
}

#[test]
fn full_ring_refuses_a_batch_that_a_smaller_one_fits() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    producer.push(&[1; 504]).unwrap();
    producer.push(&[1; 88]).unwrap(); // 608 of 1024 bytes used
    assert_eq!(
        producer.reserve_batch(8, 56).err(),
        Some(ReserveError::Full)
    );
    let batch = producer.reserve_batch(4, 56).unwrap();
    batch.commit(&[1]);
    assert_eq!(read_all(&mut consumer).len(), 3);
}

#[test]
fn zero_slots_claim_nothing() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let mut batch = producer.reserve_batch(0, 100).unwrap();
    assert_eq!(batch.slots_mut().len(), 0);
    batch.commit(&[]);
    assert_eq!(used(&mut consumer), 0);
    // Any slot length, however large, for no slot at all.
    let batch = producer.reserve_batch(0, usize::MAX).unwrap();
    assert_eq!((batch.count(), batch.slot_len()), (0, usize::MAX));
    drop(batch);
    assert_eq!(used(&mut consumer), 0);
}

#[test]
#[should_panic(expected = "3 lengths for a batch of 2 slots")]
fn more_lengths_than_slots_panics() {
    let (producer, _consumer) = Ring::new(256).unwrap();
    producer.reserve_batch(2, 8).unwrap().commit(&[1, 2, 3]);
}

#[test]
#[should_panic(expected = "a length of 9 for slots of 8 bytes")]
fn a_length_over_the_slot_panics() {
    let (producer, _consumer) = Ring::new(256).unwrap();
    producer.reserve_batch(2, 8).unwrap().commit(&[1, 9]);
}

#[test]
fn a_panic_while_filling_aborts_the_batch() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut batch = producer.reserve_batch(3, 16).unwrap();
        batch.slot_mut(0).fill(7);
        panic!("receive failed");
    }));
    assert!(result.is_err());
    assert_eq!(used(&mut consumer), 0);
    producer.push(b"next").unwrap();
    assert_eq!(read_all(&mut consumer), vec![b"next".to_vec()]);
}

#[test]
fn sixteen_byte_alignment() {
    let (producer, mut consumer) = Ring::builder(1024)
        .alignment(Alignment::Sixteen)
        .build()
        .unwrap();
    let mut batch = producer.reserve_batch(4, 20).unwrap();
    let lens = [20, 1, 17];
    let want = fill(&mut batch, &lens);
    batch.commit(&lens);
    let mut got = Vec::new();
    while let Some(entry) = consumer.read() {
        assert_eq!(entry.as_ptr() as usize % 16, 0);
        got.push(entry.to_vec());
    }
    assert_eq!(got, want);
}

/// Many laps of batches and single entries from two producers: nothing
/// lost, nothing duplicated, every byte as written.
#[test]
fn two_producers_of_batches_and_singles() {
    let (producer, mut consumer) = Ring::new(4096).unwrap();
    let rounds: u32 = if cfg!(miri) { 30 } else { 3_000 };
    let batcher: Producer = producer.clone();
    let a = std::thread::spawn(move || {
        for round in 0..rounds {
            let k = (round % 5) as usize;
            let mut batch = loop {
                match batcher.reserve_batch(4, 64) {
                    Ok(batch) => break batch,
                    Err(ReserveError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            let mut lens = Vec::new();
            for (i, slot) in batch.slots_mut().enumerate().take(k) {
                let len = 8 + (round as usize + i) % 50;
                slot[..4].copy_from_slice(&round.to_le_bytes());
                slot[4] = i as u8;
                slot[5] = 0xA;
                slot[6..len].fill(len as u8);
                lens.push(len);
            }
            batch.commit(&lens);
        }
    });
    let b = std::thread::spawn(move || {
        for round in 0..rounds {
            let mut payload = vec![0xB; 6 + (round as usize % 30)];
            payload[..4].copy_from_slice(&round.to_le_bytes());
            while let Err(e) = producer.push(&payload) {
                assert_eq!(e, ReserveError::Full);
                std::thread::yield_now();
            }
        }
    });
    let want_a: u32 = (0..rounds).map(|r| r % 5).sum();
    let (mut seen_a, mut seen_b) = (Vec::new(), 0u32);
    while seen_a.len() < want_a as usize || seen_b < rounds {
        let Some(entry) = consumer.read() else {
            std::thread::yield_now();
            continue;
        };
        let round = u32::from_le_bytes(entry[..4].try_into().unwrap());
        if entry.len() >= 6 && entry[5] == 0xA && entry[6..].iter().all(|&b| b == entry.len() as u8)
        {
            seen_a.push((round, entry[4]));
        } else {
            assert!(entry[4..].iter().all(|&b| b == 0xB), "corrupted entry");
            assert_eq!(round, seen_b, "producer b out of order");
            seen_b += 1;
        }
    }
    let want: Vec<(u32, u8)> = (0..rounds)
        .flat_map(|r| (0..(r % 5) as u8).map(move |i| (r, i)))
        .collect();
    assert_eq!(seen_a, want, "batches out of order or lost");
    a.join().unwrap();
    b.join().unwrap();
    assert!(consumer.read().is_none());
}
