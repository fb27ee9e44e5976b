//! The places where rings of this design have had real bugs, one test each.

use mpring::{Alignment, Consumer, Producer, ReserveError, Ring};

fn ring(capacity: usize) -> (Producer, Consumer) {
    Ring::new(capacity).unwrap()
}

fn read_all(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(entry) = consumer.read() {
        out.push(entry.to_vec());
    }
    out
}

/// Moves an empty ring's tail (and head) to byte position `pos` of the
/// current lap, by pushing and reading one entry of stride `pos`.
fn advance_to(producer: &Producer, consumer: &mut Consumer, pos: usize) {
    let align = producer.capacity() / 2 - producer.max_payload();
    assert!(pos % align == 0);
    let mut at = 0;
    while at < pos {
        // Strides of at most half the ring, so each one fits.
        let stride = (pos - at).min(producer.capacity() / 2);
        producer.push(&vec![0xEE; stride - align]).unwrap();
        assert_eq!(read_all(consumer).len(), 1);
        at += stride;
    }
    assert!(consumer.is_empty());
    assert_eq!(consumer.used_bytes(), 0);
}

#[test]
fn zero_byte_entry_round_trips() {
    let (producer, mut consumer) = ring(64);
    producer.push(&[]).unwrap();
    producer.reserve(0).unwrap().commit();
    producer.push(b"x").unwrap();
    assert_eq!(read_all(&mut consumer), vec![vec![], vec![], b"x".to_vec()]);
}

#[test]
fn entry_ending_exactly_at_buffer_end_needs_no_padding() {
    let (producer, mut consumer) = ring(64);
    advance_to(&producer, &mut consumer, 32);
    // Stride 32 from position 32 ends exactly at the end: no padding.
    producer.push(&[1; 24]).unwrap();
    assert_eq!(consumer.used_bytes(), 32);
    // The next entry starts the next lap at position 0.
    producer.push(&[2; 24]).unwrap();
    assert_eq!(consumer.used_bytes(), 64);
    assert_eq!(read_all(&mut consumer), vec![vec![1; 24], vec![2; 24]]);
}

#[test]
fn padding_of_exactly_one_header_word() {
    let (producer, mut consumer) = ring(64);
    advance_to(&producer, &mut consumer, 56);
    // 8 bytes left: a stride of 16 pads exactly one header word.
    producer.push(&[3; 8]).unwrap();
    assert_eq!(consumer.used_bytes(), 8 + 16);
    // An 8-byte stride (empty payload) still fits before the end without
    // padding on the next try.
    assert_eq!(read_all(&mut consumer), vec![vec![3; 8]]);
    advance_to(&producer, &mut consumer, 48);
    producer.push(&[]).unwrap();
    producer.push(&[]).unwrap();
    assert_eq!(consumer.used_bytes(), 16);
    assert_eq!(read_all(&mut consumer), vec![vec![], vec![]]);
}

#[test]
fn largest_payload_at_every_start_position() {
    for alignment in [Alignment::Eight, Alignment::Sixteen] {
        for capacity in [32usize, 64, 256] {
            let align = alignment.bytes();
            for pos in (0..capacity).step_by(align) {
                let (producer, mut consumer) = Ring::builder(capacity)
                    .alignment(alignment)
                    .build()
                    .unwrap();
                let max = producer.max_payload();
                assert_eq!(max, capacity / 2 - align);
                advance_to(&producer, &mut consumer, pos);
                let payload: Vec<u8> = (0..max).map(|i| (i + pos) as u8).collect();
                producer.push(&payload).unwrap_or_else(|e| {
                    panic!("max payload at position {pos} of {capacity} ({align}): {e}")
                });
                assert_eq!(read_all(&mut consumer), vec![payload]);
                assert_eq!(
                    producer.push(&vec![0; max + 1]),
                    Err(mpring::ReserveError::TooLarge { len: max + 1, max })
                );
            }
        }
    }
}

#[test]
fn ring_filled_exactly_then_one_byte_more_is_refused() {
    let (producer, mut consumer) = ring(64);
    producer.push(&[1; 24]).unwrap(); // stride 32
    producer.push(&[2; 16]).unwrap(); // stride 24
    producer.push(&[]).unwrap(); // stride 8: exactly full
    assert_eq!(consumer.used_bytes(), 64);
    assert_eq!(producer.reserve(0).unwrap_err(), mpring::ReserveError::Full);
    assert_eq!(producer.push(&[9]).unwrap_err(), mpring::ReserveError::Full);
    assert_eq!(producer.full_count(), 2);
    assert_eq!(
        read_all(&mut consumer),
        vec![vec![1; 24], vec![2; 16], vec![]]
    );
    producer.push(&[4; 24]).unwrap();
    assert_eq!(read_all(&mut consumer), vec![vec![4; 24]]);
}

#[test]
fn reading_a_full_lap_in_one_batch_never_reads_an_entry_twice() {
    let (producer, mut consumer) = ring(64);
    for round in 0..5u8 {
        // 8-byte header + 1 byte = a stride of 16: four fill the ring.
        for i in 0..4u8 {
            producer.push(&[round ^ i]).unwrap();
        }
        assert_eq!(producer.push(&[0]).unwrap_err(), mpring::ReserveError::Full);
        let mut seen = Vec::new();
        let n = consumer.read_batch(usize::MAX, |e| seen.push(e[0]));
        assert_eq!(n, 4);
        assert_eq!(seen, (0..4u8).map(|i| round ^ i).collect::<Vec<_>>());
        assert!(consumer.is_empty());
    }
}

#[test]
fn consumer_stops_at_uncommitted_reservation_and_continues_after_commit() {
    let (producer, mut consumer) = ring(256);
    producer.push(b"before").unwrap();
    let mut pending = producer.reserve(5).unwrap();
    producer.push(b"after").unwrap();
    assert_eq!(read_all(&mut consumer), vec![b"before".to_vec()]);
    assert!(consumer.read().is_none(), "must wait for the reservation");
    assert!(!consumer.is_empty());
    pending.copy_from_slice(b"later");
    pending.commit();
    assert_eq!(
        read_all(&mut consumer),
        vec![b"later".to_vec(), b"after".to_vec()]
    );
}

#[test]
fn commit_out_of_order_is_read_in_reservation_order() {
    let (producer, mut consumer) = ring(256);
    let mut first = producer.reserve(1).unwrap();
    let mut second = producer.reserve(1).unwrap();
    second[0] = 2;
    second.commit();
    assert!(consumer.read().is_none());
    first[0] = 1;
    first.commit();
    assert_eq!(read_all(&mut consumer), vec![vec![1], vec![2]]);
}

#[test]
fn reservation_kept_alive_while_consumer_drains_everything_before_it() {
    let (producer, mut consumer) = ring(128);
    for i in 0..3u8 {
        producer.push(&[i; 8]).unwrap();
    }
    let mut held = producer.reserve(8).unwrap();
    for round in 0..3 {
        let got = read_all(&mut consumer);
        if round == 0 {
            assert_eq!(got.len(), 3);
        } else {
            assert!(got.is_empty());
        }
        // The drained space is released (the consumer caught up) while the
        // reservation is still being written.
        assert_eq!(consumer.used_bytes(), 16);
    }
    // Space before the reservation is reusable, and what is reserved after
    // it waits for it.
    // 112 free bytes: seven strides of 16.
    for i in 0..7u8 {
        producer.push(&[10 + i; 8]).unwrap();
    }
    assert_eq!(
        producer.push(&[0; 8]).unwrap_err(),
        mpring::ReserveError::Full
    );
    held.copy_from_slice(&[9; 8]);
    held.commit();
    let got = read_all(&mut consumer);
    assert_eq!(got[0], vec![9; 8]);
    let after: Vec<Vec<u8>> = (0..7u8).map(|i| vec![10 + i; 8]).collect();
    assert_eq!(got[1..], after[..]);
}

#[test]
fn forgotten_reservation_blocks_only_what_follows_it() {
    let (producer, mut consumer) = ring(128);
    producer.push(b"kept").unwrap();
    std::mem::forget(producer.reserve(4).unwrap());
    producer.push(b"blocked").unwrap();
    assert_eq!(read_all(&mut consumer), vec![b"kept".to_vec()]);
    assert!(consumer.read().is_none());
    // Still no UB, no panic: dropping everything is fine.
    drop(producer);
    assert!(consumer.is_disconnected());
    assert!(consumer.read().is_none());
}

#[test]
fn aborted_reservation_is_stepped_over() {
    let (producer, mut consumer) = ring(256);
    let mut a = producer.reserve(16).unwrap();
    a.fill(0xFF);
    producer.push(b"behind").unwrap(); // the abort cannot hand its bytes back
    a.abort();
    producer.push(b"next").unwrap();
    assert_eq!(
        read_all(&mut consumer),
        vec![b"behind".to_vec(), b"next".to_vec()]
    );
}

#[test]
fn aborted_last_reservation_gives_its_space_back() {
    let (producer, mut consumer) = ring(256);
    producer.push(b"a").unwrap();
    let used = consumer.used_bytes();
    let mut r = producer.reserve(100).unwrap();
    r.fill(0xFF);
    drop(r);
    assert_eq!(consumer.used_bytes(), used);
    // The handed-back bytes were zeroed: the next reservation sees zeroes
    // and the consumer no stale header.
    let r = producer.reserve(100).unwrap();
    assert!(r.iter().all(|&b| b == 0));
    r.commit_len(2);
    assert_eq!(read_all(&mut consumer), vec![b"a".to_vec(), vec![0, 0]]);
}

#[test]
fn shrink_hands_back_or_skips() {
    let (producer, mut consumer) = ring(256);
    // Last reservation: the unused end goes back to the tail.
    let mut r = producer.reserve(64).unwrap();
    r.fill(7);
    r.commit_len(3);
    assert_eq!(consumer.used_bytes(), 16);
    // Not the last one: the unused end becomes a skipped span.
    let mut r = producer.reserve(64).unwrap();
    r.fill(8);
    producer.push(b"z").unwrap();
    r.truncate(5);
    assert_eq!(r.len(), 5);
    r.commit();
    assert_eq!(consumer.used_bytes(), 16 + 72 + 16);
    assert_eq!(
        read_all(&mut consumer),
        vec![vec![7; 3], vec![8; 5], b"z".to_vec()]
    );
    // All of it is reusable and reads as zero again.
    for _ in 0..8 {
        let r = producer.reserve(100).unwrap();
        assert!(r.iter().all(|&b| b == 0));
        r.commit();
        assert_eq!(read_all(&mut consumer), vec![vec![0; 100]]);
    }
}

#[test]
#[should_panic(expected = "commit_len(9) on a reservation of 8 bytes")]
fn commit_len_longer_than_reserved_panics() {
    let (producer, _consumer) = ring(256);
    producer.reserve(8).unwrap().commit_len(9);
}

#[test]
fn panic_while_writing_aborts_the_reservation() {
    let (producer, mut consumer) = ring(256);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut r = producer.reserve(32).unwrap();
        r.fill(0xAB);
        panic!("listener failed mid-write");
    }));
    assert!(result.is_err());
    producer.push(b"fine").unwrap();
    assert_eq!(read_all(&mut consumer), vec![b"fine".to_vec()]);
}

#[test]
fn panic_in_batch_callback_keeps_earlier_entries_consumed() {
    let (producer, mut consumer) = ring(256);
    for i in 0..4u8 {
        producer.push(&[i]).unwrap();
    }
    let mut seen = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        consumer.read_batch(10, |e| {
            if e[0] == 2 {
                panic!("handler failed");
            }
            seen.push(e[0]);
        })
    }));
    assert!(result.is_err());
    assert_eq!(seen, [0, 1]);
    assert_eq!(read_all(&mut consumer), vec![vec![2], vec![3]]);
}

#[test]
fn forgotten_entry_is_read_again() {
    let (producer, mut consumer) = ring(256);
    producer.push(b"again").unwrap();
    std::mem::forget(consumer.read().unwrap());
    assert_eq!(read_all(&mut consumer), vec![b"again".to_vec()]);
}

#[test]
fn sixteen_byte_alignment_aligns_payloads() {
    let (producer, mut consumer) = Ring::builder(1024)
        .alignment(Alignment::Sixteen)
        .build()
        .unwrap();
    for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 100] {
        let r = producer.reserve(len).unwrap();
        assert_eq!(r.as_ptr() as usize % 16, 0, "len {len}");
        r.commit();
        let e = consumer.read().unwrap();
        assert_eq!(e.as_ptr() as usize % 16, 0);
        assert_eq!(e.len(), len);
    }
}

#[test]
fn handles_drop_in_any_order() {
    // Consumer first, with a reservation alive.
    let (producer, consumer) = ring(256);
    let r = producer.reserve(8).unwrap();
    drop(consumer);
    r.commit();
    assert!(producer.is_disconnected());
    assert_eq!(
        producer.push(b"x").unwrap_err(),
        mpring::ReserveError::Disconnected
    );
    drop(producer);

    // Producers first, with entries unread.
    let (producer, mut consumer) = ring(256);
    let clone = producer.clone();
    producer.push(b"1").unwrap();
    drop(producer);
    assert!(!consumer.is_disconnected());
    clone.push(b"2").unwrap();
    drop(clone);
    assert!(consumer.is_disconnected());
    assert_eq!(read_all(&mut consumer), vec![b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn push_parts_concatenates() {
    let (producer, mut consumer) = ring(256);
    producer.push_parts(&[b"ab", b"", b"cde"]).unwrap();
    producer.push_parts(&[]).unwrap();
    assert_eq!(read_all(&mut consumer), vec![b"abcde".to_vec(), vec![]]);
}

#[test]
fn handles_are_send_and_sync_as_documented() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Producer>();
    sync::<Producer>();
    send::<Consumer>();
    send::<mpring::Reservation<'static>>();
    send::<mpring::Entry<'static>>();
    send::<mpring::Ring>();
    sync::<mpring::Ring>();
}

/// Review finding: a long batch must hand space back at the documented
/// threshold (an eighth of the ring), not only at its end, or listeners get
/// `Full` for as long as the batch lasts.
#[test]
fn read_batch_releases_space_inside_the_batch() {
    // 256 bytes, 8 entries of stride 32 fill it; an eighth is 32 bytes, so
    // every consumed entry is released before the next callback runs.
    let (producer, mut consumer) = ring(256);
    for i in 0..8u8 {
        producer.push(&[i; 24]).unwrap();
    }
    assert_eq!(producer.push(&[0; 24]), Err(ReserveError::Full));
    let mut pushed = Vec::new();
    let n = consumer.read_batch(8, |entry| {
        // The entry being read is not consumed yet; each one before it is.
        let id = 100 + entry[0];
        pushed.push(producer.push(&[id; 24]).is_ok());
    });
    assert_eq!(n, 8);
    assert_eq!(pushed, [false, true, true, true, true, true, true, true]);
    let rest = read_all(&mut consumer);
    let want: Vec<Vec<u8>> = (1..8u8).map(|i| vec![100 + i; 24]).collect();
    assert_eq!(rest, want);
}

/// The same threshold applies when the consumer steps over a long run of
/// skipped spans: it releases on the way, never holding a lap back.
#[test]
fn stepping_over_many_skipped_spans_releases_as_it_goes() {
    let (producer, mut consumer) = ring(256);
    for lap in 0..4u8 {
        // A held reservation at the front keeps the aborts behind it from
        // being handed back: each becomes a skipped span.
        let front = producer.reserve(8).unwrap();
        let aborted: Vec<_> = (0..6).map(|_| producer.reserve(8).unwrap()).collect();
        let last = producer.reserve(8).unwrap();
        drop(aborted);
        drop(front);
        let mut last = last;
        last.copy_from_slice(&[lap; 8]);
        last.commit();
        assert_eq!(read_all(&mut consumer), vec![vec![lap; 8]]);
        assert_eq!(consumer.used_bytes(), 0);
    }
}

/// The consumer zeroes only the header word of the padding it steps over
/// (the rest of the lap was never written). On the next lap a reservation
/// whose header lands on that word, still open while the consumer looks,
/// must read as "not ready", not as padding: otherwise the consumer jumps
/// over it and the entry is lost.
#[test]
fn open_reservation_over_an_old_padding_header_is_not_skipped() {
    let (producer, mut consumer) = ring(64);
    advance_to(&producer, &mut consumer, 48);
    producer.push(&[1; 24]).unwrap(); // pads [48, 64), entry at [0, 32)
    assert_eq!(read_all(&mut consumer), vec![vec![1; 24]]);
    producer.push(&[2; 8]).unwrap(); // [32, 48)
    let mut open = producer.reserve(8).unwrap(); // [48, 64): the old padding header
    assert_eq!(read_all(&mut consumer), vec![vec![2; 8]]);
    open.copy_from_slice(&[3; 8]);
    open.commit();
    producer.push(&[4; 8]).unwrap(); // [0, 16) of the next lap
    assert_eq!(read_all(&mut consumer), vec![vec![3; 8], vec![4; 8]]);
}

/// Entries that end inside a cache line: the consumer zeroes them up to the
/// line's start at once and the rest when it releases. Many laps of odd
/// sizes, each checked byte for byte, show that nothing is left behind
/// (a stale word would be read as a header).
#[test]
fn entries_ending_mid_line_are_zeroed_by_the_next_lap() {
    let (producer, mut consumer) = ring(256);
    for round in 0..2_000usize {
        let len = (round * 37) % 100;
        let fill = (round % 251) as u8 + 1;
        producer.push(&vec![fill; len]).unwrap();
        if round % 3 == 2 {
            drop(producer.reserve(len / 2).unwrap()); // an abort now and then
        }
        let got = read_all(&mut consumer);
        assert_eq!(got, vec![vec![fill; len]], "round {round}");
    }
}
