//! Loom models of the protocol steps, run on the production code (the
//! crate's `loom` shim swaps in loom's atomics and tracks every 8-byte word
//! of the buffer as a loom cell, so a data race on payload bytes fails the
//! model, not only a wrong header).
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg mpring_loom" LOOM_MAX_PREEMPTIONS=4 \
//!     cargo test --profile loom --target-dir target/loom --test loom
//! ```
//!
//! The `loom` profile is `release` with debug assertions and overflow
//! checks on, so the protocol's `debug_assert!`s and the buffer's bounds
//! checks run inside the models. The bound of 4 preemptions (CI's setting)
//! explores every interleaving with at most four forced context switches.
//!
//! What loom cannot cover here: interleavings with more preemptions than
//! the bound; executions outside loom's memory model (load buffering, and
//! SeqCst fences combined with RMWs: see `wait_twice_woken_by_a_handle_and_by_a_commit`);
//! real timing (spins, timeouts); rings and thread counts larger than the
//! models'. The stress tests (also under ThreadSanitizer and Miri) and the
//! proptest model cover those.
#![cfg(mpring_loom)]

use loom::thread;
use mpring::{Consumer, Producer, ReserveError, Ring};

/// Pushes `payload`, retrying (with a loom yield) while the ring is full.
fn push(producer: &Producer, payload: &[u8]) {
    loop {
        match producer.push(payload) {
            Ok(()) => return,
            Err(ReserveError::Full) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Reads exactly `n` entries, waiting (with loom yields) for each. Each
/// entry is then overwritten in place, as a consumer that decrypts where
/// it reads does: loom checks that no producer touches those words until
/// they are released, and the next lap's claims still read zero.
fn read_n(consumer: &mut Consumer, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        match consumer.read() {
            Some(mut entry) => {
                got.push(entry.to_vec());
                entry.fill(0xEE);
            }
            None => thread::yield_now(),
        }
    }
    got
}

fn drain(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    consumer.read_batch(usize::MAX, |e| got.push(e.to_vec()));
    got
}

/// Two producers race for the last 16 free bytes of a 32-byte ring while
/// the consumer may free the first half: whoever got space is read, byte
/// for byte, and nobody else.
#[test]
fn two_producers_race_for_the_last_free_bytes() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(32).unwrap();
        producer.push(&[9; 8]).unwrap(); // stride 16 of 32
        let racers: Vec<_> = (1..=2u8)
            .map(|id| {
                let producer = producer.clone();
                thread::spawn(move || producer.push(&[id; 8]).is_ok())
            })
            .collect();
        let first = consumer.read().map(|e| e.to_vec());
        let won: Vec<u8> = racers
            .into_iter()
            .zip(1..=2u8)
            .filter_map(|(t, id)| t.join().unwrap().then_some(id))
            .collect();
        let mut got: Vec<Vec<u8>> = first.into_iter().collect();
        got.extend(drain(&mut consumer));
        assert_eq!(got[0], [9; 8]);
        assert_eq!(got.len(), 1 + won.len());
        assert!(!won.is_empty(), "16 bytes were free: one racer must win");
        let mut ids: Vec<u8> = got[1..].iter().map(|e| e[0]).collect();
        ids.sort();
        assert_eq!(ids, won);
        for e in &got[1..] {
            assert_eq!(e.len(), 8);
            assert!(e.iter().all(|&b| b == e[0]));
        }
    });
}

/// One producer's reservation pads at the end of the lap while another
/// reserves; the consumer reads concurrently. Both arrive intact, in tail
/// order.
#[test]
fn reservation_that_pads_at_the_wrap_while_another_reserves() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        // Move an empty ring to position 48: 16 bytes before the end.
        producer.push(&[0; 24]).unwrap();
        producer.push(&[0; 8]).unwrap();
        assert_eq!(drain(&mut consumer).len(), 2);
        consumer.release();
        let other = producer.clone();
        let wrapper = thread::spawn(move || push(&other, &[1; 24])); // stride 32: pads
        let small = thread::spawn(move || push(&producer, &[2; 8])); // stride 16: fits
        let got = read_n(&mut consumer, 2);
        wrapper.join().unwrap();
        small.join().unwrap();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, vec![vec![1; 24], vec![2; 8]]);
    });
}

/// The second reservation is committed first: the consumer never reads it
/// before the first.
#[test]
fn commit_out_of_order() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let writer = thread::spawn(move || {
            let mut first = producer.reserve(4).unwrap();
            let mut second = producer.reserve(4).unwrap();
            second.copy_from_slice(b"two!");
            second.commit();
            first.copy_from_slice(b"one!");
            first.commit();
        });
        let got = read_n(&mut consumer, 2);
        writer.join().unwrap();
        assert_eq!(got, vec![b"one!".to_vec(), b"two!".to_vec()]);
    });
}

/// An abort (handed back or skipped, depending on what was reserved after
/// it) and a shrink race with each other and the consumer: only the kept
/// bytes ever show, and the space is reusable.
#[test]
fn abort_and_shrink() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let other = producer.clone();
        let aborter = thread::spawn(move || {
            let mut r = other.reserve(8).unwrap();
            r.fill(0xFF);
            r.abort();
        });
        let shrinker = thread::spawn(move || {
            let mut r = producer.reserve(16).unwrap();
            r.fill(0xEE);
            r[..3].copy_from_slice(b"abc");
            r.commit_len(3);
            producer
        });
        let got = read_n(&mut consumer, 1);
        aborter.join().unwrap();
        let producer = shrinker.join().unwrap();
        assert_eq!(got, vec![b"abc".to_vec()]);
        assert!(drain(&mut consumer).is_empty());
        // Whatever was skipped or handed back reads as zero to the next
        // claimant and is never mistaken for a header.
        let r = producer.reserve(24).unwrap();
        assert!(r.iter().all(|&b| b == 0));
        r.commit();
        assert_eq!(drain(&mut consumer), vec![vec![0; 24]]);
    });
}

/// The consumer releases space that the producer reuses on the next lap:
/// a missing zeroing or a too-weak ordering on the head shows up here as a
/// race on the payload words or a stale header.
#[test]
fn released_space_is_reused_on_the_next_lap() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(32).unwrap(); // two entries a lap
        let writer = thread::spawn(move || {
            for i in 1..=3u8 {
                push(&producer, &[i; 8]);
            }
        });
        let got = read_n(&mut consumer, 3);
        writer.join().unwrap();
        assert_eq!(got, vec![vec![1; 8], vec![2; 8], vec![3; 8]]);
    });
}

/// The consumer zeroes entries up to the cache line at its read position
/// as it reads them, the rest of that line when it releases, and of a
/// padding only its header word. A producer laps the ring over all three
/// (entries ending mid-line, the old padding header at 48) while the
/// consumer reads: every claimed word must read zero (the shim checks
/// header words too), and no zeroing may race with the producer's writes.
#[test]
fn lap_over_partial_lines_and_an_old_padding_header() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap(); // zero line: 32 bytes
        producer.push(&[0; 24]).unwrap();
        producer.push(&[0; 8]).unwrap();
        assert_eq!(drain(&mut consumer).len(), 2); // read position 48
        let writer = thread::spawn(move || {
            push(&producer, &[7; 24]); // pads [48, 64), entry at [0, 32)
            push(&producer, &[8; 8]); // [32, 48)
            push(&producer, &[9; 8]); // [48, 64): over the padding header
        });
        let got = read_n(&mut consumer, 3);
        writer.join().unwrap();
        assert_eq!(got, vec![vec![7; 24], vec![8; 8], vec![9; 8]]);
    });
}

/// A batch of two slots, committed in part (one entry moved down from its
/// slot, the rest handed back or skipped), races a single reservation and
/// the consumer: whether the single one claims before or after the
/// batch's hand-back, every entry is read once, byte for byte.
#[test]
fn batch_committed_in_part_races_a_reservation_and_the_consumer() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(128).unwrap();
        let single = producer.clone();
        let batcher = thread::spawn(move || {
            let mut batch = producer.reserve_batch(2, 16).unwrap(); // 2 × 24
            batch.slot_mut(1)[..3].copy_from_slice(&[7, 7, 7]);
            batch.slot_mut(0)[0] = 5;
            // Slot 1's three bytes... committed as the second entry after
            // slot 0's one: moved down next to it.
            batch.commit(&[1, 3]);
        });
        let other = thread::spawn(move || push(&single, &[9; 8]));
        let got = read_n(&mut consumer, 3);
        batcher.join().unwrap();
        other.join().unwrap();
        let batch: Vec<_> = got.iter().filter(|e| e[0] != 9).cloned().collect();
        assert_eq!(batch, vec![vec![5], vec![7, 7, 7]]);
        assert!(got.contains(&vec![9; 8]));
    });
}

/// Metadata: a batch committed in part (its second entry and record moved
/// down next to the first) and an exact run pushed with one claim race the
/// consumer, which reads every record with its payload. Records written at
/// the slots instead of the entries' final places fail the model (a wrong
/// value); so does a header stored Relaxed (a race on the record's words).
#[test]
fn metadata_of_a_batch_and_a_pushed_run_race_the_consumer() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::builder(128).metadata::<u64>().build().unwrap();
        let runner = producer.clone();
        let batcher = thread::spawn(move || {
            // Slots of 32 bytes (header, record, 16 payload bytes); entry
            // 1 moves from 32 to 24, right after entry 0's 24 bytes.
            let mut batch = producer.reserve_batch(2, 16).unwrap();
            batch.slot_mut(1)[..3].copy_from_slice(&[7, 7, 7]);
            batch.slot_mut(0)[0] = 5;
            batch.commit_with(&[(1, 105), (3, 107)]);
        });
        let other = thread::spawn(move || loop {
            match runner.push_batch_with(&[(&[9; 4], 109)]) {
                Ok(()) => return,
                Err(ReserveError::Full) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match consumer.read() {
                Some(entry) => got.push((*entry.meta(), entry.to_vec())),
                None => thread::yield_now(),
            }
        }
        batcher.join().unwrap();
        other.join().unwrap();
        for (meta, payload) in &got {
            assert_eq!(*meta, 100 + u64::from(payload[0]), "{payload:?}");
        }
        let batch: Vec<_> = got
            .iter()
            .filter(|e| e.1[0] != 9)
            .map(|e| e.1.clone())
            .collect();
        assert_eq!(batch, vec![vec![5], vec![7, 7, 7]]);
    });
}

/// A batch that does not fit before the buffer's end pads the lap and
/// starts at position 0, while the consumer reads the entry before it and
/// steps over the padding; an aborted batch after it is stepped over too.
#[test]
fn batch_at_the_wrap_and_an_aborted_batch() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        producer.push(&[0; 24]).unwrap();
        producer.push(&[0; 8]).unwrap();
        assert_eq!(drain(&mut consumer).len(), 2); // read position 48
        let writer = thread::spawn(move || {
            let mut batch = producer.reserve_batch(2, 8).unwrap(); // pads [48, 64)
            batch.slot_mut(0).copy_from_slice(&[1; 8]);
            batch.commit(&[8]);
            drop(producer.reserve_batch(1, 0).unwrap());
            push(&producer, &[2; 4]);
        });
        let got = read_n(&mut consumer, 2);
        writer.join().unwrap();
        assert_eq!(got, vec![vec![1; 8], vec![2; 4]]);
    });
}

/// A consumer that reads a whole lap in one batch must release before it
/// reads the lap's first word again, while a producer keeps pushing.
#[test]
fn batch_of_a_whole_lap_then_reuse() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(32).unwrap();
        producer.push(&[1; 8]).unwrap();
        producer.push(&[2; 8]).unwrap(); // exactly full
        let writer = thread::spawn(move || push(&producer, &[3; 8]));
        let mut got = Vec::new();
        while got.len() < 3 {
            if consumer.read_batch(usize::MAX, |e| got.push(e.to_vec())) == 0 {
                thread::yield_now();
            }
        }
        writer.join().unwrap();
        assert_eq!(got, vec![vec![1; 8], vec![2; 8], vec![3; 8]]);
    });
}

/// Dropping the last producer while the consumer reads: the consumer sees
/// every committed entry, then the disconnection.
#[test]
fn disconnection_after_the_last_commit() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(32).unwrap();
        let writer = thread::spawn(move || producer.push(b"last").unwrap());
        loop {
            let gone = consumer.is_disconnected();
            if let Some(entry) = consumer.read() {
                assert_eq!(&*entry, b"last");
                break;
            }
            assert!(!gone, "disconnected but the last entry was not readable");
            thread::yield_now();
        }
        writer.join().unwrap();
    });
}

/// Sixteen-byte alignment, a 0-byte entry, and an abort of a reservation
/// that padded at the wrap (its padding stays, its space comes back or is
/// skipped) while another producer pushes.
#[test]
fn sixteen_byte_alignment_zero_length_and_abort_after_padding() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::builder(64)
            .alignment(mpring::Alignment::Sixteen)
            .build()
            .unwrap();
        // Move an empty ring to position 48: 16 bytes before the end.
        producer.push(&[0; 16]).unwrap();
        producer.push(&[0; 0]).unwrap();
        producer.push(&[0; 0]).unwrap();
        assert_eq!(drain(&mut consumer).len(), 3);
        consumer.release();
        let other = producer.clone();
        let aborter = thread::spawn(move || {
            if let Ok(mut r) = other.reserve(16) {
                // Stride 32 from position 48: pads to the end first.
                r.fill(0xFF);
                r.abort();
            }
        });
        let pusher = thread::spawn(move || push(&producer, &[]));
        let got = read_n(&mut consumer, 1);
        aborter.join().unwrap();
        pusher.join().unwrap();
        assert_eq!(got, vec![Vec::<u8>::new()]);
        assert!(drain(&mut consumer).is_empty());
    });
}

/// The cached head is handed from producer to producer: one finds the
/// cached copy stale, loads the real head and refreshes the copy; another
/// claims on the strength of that copy alone, without loading the head.
/// The consumer's zeroing of the released bytes must happen before the
/// second producer's writes, through the cache's Release store and Acquire
/// load (weaken either to Relaxed and this model reports a race on the
/// payload words, or a claimed word that is not zero).
#[test]
fn cached_head_handed_from_producer_to_producer() {
    loom::model(|| {
        // Two 8-byte entries (stride 16 each) fill the ring; the cached
        // head says 0.
        let (producer, mut consumer) = Ring::new(32).unwrap();
        producer.push(&[1; 8]).unwrap();
        producer.push(&[2; 8]).unwrap();
        let racers: Vec<_> = (3..=4u8)
            .map(|id| {
                let producer = producer.clone();
                thread::spawn(move || producer.push(&[id; 8]).is_ok())
            })
            .collect();
        // Reads both, releasing (and zeroing) each as it goes; may read a
        // racer's entry in the same batch.
        let mut got = drain(&mut consumer);
        assert_eq!(got[..2], [vec![1; 8], vec![2; 8]]);
        let won: Vec<u8> = racers
            .into_iter()
            .zip(3..=4u8)
            .filter_map(|(t, id)| t.join().unwrap().then_some(id))
            .collect();
        got.extend(drain(&mut consumer));
        let got = &got[2..];
        let mut ids: Vec<u8> = got.iter().map(|e| e[0]).collect();
        ids.sort();
        assert_eq!(ids, won);
        for e in got {
            assert_eq!(e, &vec![e[0]; 8]);
        }
    });
}

// ---- waiting ---------------------------------------------------------------
// A lost wake-up shows up as loom's deadlock report: the consumer parked and
// nothing unparks it.

/// The consumer goes to sleep while a producer commits: every interleaving
/// ends with the consumer holding the entry.
#[test]
fn wait_is_woken_by_a_concurrent_commit() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let writer = thread::spawn(move || {
            producer.push(b"hi").unwrap();
            producer // keep it alive: disconnection is another model
        });
        assert_eq!(consumer.wait(), Ok(()));
        assert_eq!(&*consumer.read().unwrap(), b"hi");
        drop(writer.join().unwrap());
    });
}

/// Runs pushed without their wake-up (as a listener's drain pushes them)
/// are covered by the one `wake_if_asleep` after them: a consumer that
/// fell asleep on any of them is woken. Without that call loom reports the
/// consumer parked forever.
#[test]
fn runs_pushed_without_a_wake_up_are_woken_by_the_check_after_them() {
    bounded(3).check(|| {
        let (producer, mut consumer) = Ring::new(128).unwrap();
        let writer = thread::spawn(move || {
            producer
                .push_batch_with_wake_later(&[(&b"ab"[..], ())])
                .unwrap();
            producer
                .push_batch_with_wake_later(&[(&b"cd"[..], ()), (&b"e"[..], ())])
                .unwrap();
            producer.wake_if_asleep();
            producer // keep it alive: disconnection would wake the consumer
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            assert_eq!(consumer.wait(), Ok(()));
            got.extend(drain(&mut consumer));
        }
        assert_eq!(got, [&b"ab"[..], b"cd", b"e"]);
        drop(writer.join().unwrap());
    });
}

/// The consumer sleeps on a reservation's header; the commit wakes it.
#[test]
fn wait_on_a_reservation_is_woken_by_its_commit() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let producer = std::sync::Arc::new(producer);
        let p = producer.clone();
        let writer = thread::spawn(move || {
            let mut r = p.reserve(2).unwrap();
            r.copy_from_slice(b"ok");
            r.commit();
        });
        assert_eq!(consumer.wait(), Ok(()));
        assert_eq!(&*consumer.read().unwrap(), b"ok");
        writer.join().unwrap();
    });
}

/// The consumer sleeps at the end of a lap; the producer's padding header
/// replaces the mark (waking it), and the entry at the next lap's start
/// then arrives too.
#[test]
fn wait_is_woken_through_padding() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        producer.push(&[0; 24]).unwrap();
        producer.push(&[0; 8]).unwrap();
        assert_eq!(drain(&mut consumer).len(), 2);
        consumer.release(); // empty, at position 48
        let writer = thread::spawn(move || {
            producer.push(&[7; 24]).unwrap(); // pads 16 bytes
            producer
        });
        assert_eq!(consumer.wait(), Ok(()));
        assert_eq!(&*consumer.read().unwrap(), &[7; 24]);
        drop(writer.join().unwrap());
    });
}

/// Dropping the last producer wakes a waiting consumer, which then sees
/// the end of the stream (after any entry committed before it).
#[test]
fn wait_is_woken_by_disconnection() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let writer = thread::spawn(move || drop(producer));
        assert_eq!(consumer.wait(), Err(mpring::WaitError::Disconnected));
        writer.join().unwrap();
    });
}

/// A wake handle used from another thread ends a wait.
#[test]
fn wait_is_woken_by_a_wake_handle() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let handle = consumer.wake_handle();
        let waker = thread::spawn(move || handle.wake());
        assert_eq!(consumer.wait(), Ok(()));
        assert!(consumer.read().is_none());
        waker.join().unwrap();
        drop(producer);
    });
}

/// The async wait: the task's waker is woken by the commit.
#[test]
fn async_wait_is_woken_by_a_commit() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let writer = thread::spawn(move || {
            producer.push(b"task").unwrap();
            producer
        });
        loom::future::block_on(async {
            consumer.ready().await.unwrap();
        });
        assert_eq!(&*consumer.read().unwrap(), b"task");
        drop(writer.join().unwrap());
    });
}

/// A consumer woken by a commit and a wake handle: it waits until it has
/// the entry; a wait ended by the wake-up alone (no error: `Ok`, nothing to
/// read) makes it register and announce again after the first wake-up
/// cleared the flag. The commit comes first: with the wake-up first, the
/// commit can race the second announcement after its `swap` took the
/// first, the case below.
///
/// Not modelled: two waits each ended by a *commit* (one producer
/// committing twice, or two producers once each). loom 0.7 reports a
/// deadlock there that the C11 model rules out: the producer's `swap` of
/// the sleeping flag for its first commit is ordered before the consumer's
/// second announcement, and after its SeqCst fence the producer's load of
/// the flag still returns the value from before that announcement (loom
/// models RMWs and SeqCst fences together incompletely; see loom#254 and
/// its README). That case is covered by the `waiting` tests run under
/// ThreadSanitizer, and by the stress test's waiting consumer with spin 0,
/// which sleeps on almost every empty poll.
#[test]
fn wait_twice_woken_by_a_handle_and_by_a_commit() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let handle = consumer.wake_handle();
        let other = thread::spawn(move || {
            producer.push(b"x").unwrap();
            handle.wake();
            producer
        });
        // Each wait ends `Ok`: with the entry, or woken with nothing
        // (then it waits again).
        let mut woken_alone = 0;
        loop {
            assert_eq!(consumer.wait(), Ok(()));
            match consumer.read() {
                Some(entry) => {
                    assert_eq!(&*entry, b"x");
                    break;
                }
                None => woken_alone += 1,
            }
        }
        // At most one wait ended by the wake-up alone (it may also have
        // come together with the entry).
        assert!(woken_alone <= 1);
        drop(other.join().unwrap());
    });
}

/// An owned reservation committed on another thread after every producer
/// handle but its own is gone, while the consumer waits: the consumer sees
/// the entry, then the end of the stream (the reservation's producer
/// handle is dropped after its commit), never the end first.
#[test]
fn owned_reservation_committed_elsewhere_after_the_producer_left() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let mut pending = producer.reserve_owned(2).unwrap();
        drop(producer);
        let completion = thread::spawn(move || {
            pending.copy_from_slice(b"ok");
            pending.commit();
        });
        assert_eq!(consumer.wait(), Ok(()));
        assert_eq!(&*consumer.read().unwrap(), b"ok");
        assert_eq!(consumer.wait(), Err(mpring::WaitError::Disconnected));
        completion.join().unwrap();
    });
}

/// The same reservation dropped (aborted) on the other thread: the
/// consumer sees the end of the stream with nothing to read, and never
/// waits on the aborted claim.
#[test]
fn owned_reservation_aborted_elsewhere_after_the_producer_left() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        let pending = producer.reserve_owned(2).unwrap();
        drop(producer);
        let completion = thread::spawn(move || drop(pending));
        assert_eq!(consumer.wait(), Err(mpring::WaitError::Disconnected));
        assert!(consumer.read().is_none());
        completion.join().unwrap();
    });
}

// ---- the readiness fd ---------------------------------------------------

/// An event loop over the readiness fd: arm, wait as `epoll_wait` would
/// (level- or edge-triggered), read what is ready; until `n` entries came.
/// A lost notification leaves it blocked: loom reports the deadlock.
fn fd_loop(consumer: &mut Consumer, edge_triggered: bool, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        if !consumer.arm_fd() {
            consumer.loom_epoll_wait(edge_triggered);
        }
        while let Some(entry) = consumer.read() {
            got.push(entry.to_vec());
        }
    }
    got
}

/// Arming races a commit (the commit lands before the announcement, between
/// it and the re-check, or after): the fd is notified or arming reports
/// the entry, in both epoll modes; once it is read, arming again leaves
/// the fd quiet (no stale notification for a level-triggered loop to spin
/// on).
#[test]
fn readiness_fd_is_notified_by_a_concurrent_commit() {
    for edge_triggered in [false, true] {
        loom::model(move || {
            let (producer, mut consumer) = Ring::new(64).unwrap();
            consumer.readiness_fd().unwrap();
            let writer = thread::spawn(move || {
                producer.push(b"hi").unwrap();
                producer
            });
            assert_eq!(fd_loop(&mut consumer, edge_triggered, 1), [b"hi".to_vec()]);
            let producer = writer.join().unwrap();
            assert!(!consumer.arm_fd());
            assert!(!consumer.loom_fd_readable());
            drop(producer);
        });
    }
}

/// Two notifications for one armed loop, in either order: a wake handle
/// and a commit. Each arming sees what the last one left (the waker took
/// the registration and wrote the counter under the lock, or the consumer
/// wrote it itself) and clears it; the commit is never missed.
#[test]
fn readiness_fd_notified_by_a_wake_handle_and_a_commit() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        consumer.readiness_fd().unwrap();
        let handle = consumer.wake_handle();
        let other = thread::spawn(move || {
            handle.wake();
            producer.push(b"x").unwrap();
            producer
        });
        assert_eq!(fd_loop(&mut consumer, true, 1), [b"x".to_vec()]);
        drop(other.join().unwrap());
    });
}

/// A publish with nothing to read (an aborted reservation that cannot be
/// handed back becomes a skipped span) notifies the armed fd while the
/// loop arms again (after waking for another source): the notification
/// may be spurious, but it must not outlive the next arming, or a
/// level-triggered loop would spin on it.
#[test]
fn readiness_fd_keeps_no_stale_notification() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        consumer.readiness_fd().unwrap();
        assert!(!consumer.arm_fd());
        let other = thread::spawn(move || {
            let first = producer.reserve(1).unwrap();
            let second = producer.reserve(1).unwrap();
            drop(first); // published as a skipped span: `second` follows it
            drop(second); // handed back
            producer
        });
        // The loop woke for a socket or a timer: it arms again.
        assert!(!consumer.arm_fd());
        let producer = other.join().unwrap();
        assert!(consumer.read().is_none());
        assert!(!consumer.arm_fd());
        assert!(!consumer.loom_fd_readable(), "a stale notification");
        drop(producer);
    });
}

/// The last producer leaves while the loop is armed: the fd becomes
/// readable and stays so.
#[test]
fn readiness_fd_is_notified_when_the_last_producer_leaves() {
    loom::model(|| {
        let (producer, mut consumer) = Ring::new(64).unwrap();
        consumer.readiness_fd().unwrap();
        let writer = thread::spawn(move || drop(producer));
        while !consumer.is_disconnected() {
            if !consumer.arm_fd() {
                consumer.loom_epoll_wait(false);
            }
        }
        writer.join().unwrap();
        assert!(consumer.arm_fd());
        assert!(consumer.loom_fd_readable());
    });
}

// ---- read-around mode ---------------------------------------------------

/// A model with at most `preemptions` forced switches (or fewer, when
/// `LOOM_MAX_PREEMPTIONS` asks for fewer).
fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(
        builder
            .preemption_bound
            .map_or(preemptions, |b| b.min(preemptions)),
    );
    builder
}

fn around(capacity: usize) -> (Producer, Consumer) {
    Ring::builder(capacity)
        .read_around_open(true)
        .build()
        .unwrap()
}

/// How an open reservation ends in the models below.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Commit,
    Abort,
    Shrink,
}

/// A reservation held open while another producer commits after it: the
/// consumer may deliver the later entry first, comes back to the open one
/// when it is committed (or steps over it when aborted, or delivers its
/// prefix when shrunk), and releases everything in the end. Also covers
/// the window between a claim and its announcement (the consumer stops at
/// a zero header there) and releases attempted while a hole is open (the
/// 64-byte ring releases at every step).
///
/// At a bound of 3 preemptions (21-24 s on 2 cores; 129-136 s at CI's 4,
/// which passed on 2026-12-04 and kept the loom step over six minutes):
/// the interleavings that matter here (a claim read past between its CAS,
/// its announcement and its commit) need one or two.
#[test]
fn open_reservation_with_a_committed_entry_after_it() {
    for outcome in [Outcome::Commit, Outcome::Abort, Outcome::Shrink] {
        bounded(3).check(move || {
            let (producer, mut consumer) = around(64);
            let other = producer.clone();
            let holder = thread::spawn(move || {
                let mut r = producer.reserve(8).unwrap(); // 16 bytes
                r.fill(1);
                match outcome {
                    Outcome::Commit => r.commit(),
                    Outcome::Abort => drop(r),
                    Outcome::Shrink => r.commit_len(3),
                }
            });
            let pusher = thread::spawn(move || push(&other, &[2; 8]));
            let want = match outcome {
                Outcome::Commit => vec![vec![1; 8], vec![2; 8]],
                Outcome::Abort => vec![vec![2; 8]],
                Outcome::Shrink => vec![vec![1; 3], vec![2; 8]],
            };
            let mut got = read_n(&mut consumer, want.len());
            holder.join().unwrap();
            pusher.join().unwrap();
            got.sort();
            assert_eq!(got, want, "{outcome:?}");
            assert!(consumer.read().is_none());
            consumer.release();
            assert_eq!(consumer.used_bytes(), 0, "{outcome:?}: all released");
        });
    }
}

/// One producer's two reservations, the first held while the second is
/// committed after it: committed in that order, they come out in that
/// order, however the consumer interleaves (it looks at the word ahead
/// first, then back at the open one).
#[test]
fn one_producers_commits_come_out_in_its_order() {
    loom::model(|| {
        let (producer, mut consumer) = around(128);
        let writer = thread::spawn(move || {
            let mut first = producer.reserve(1).unwrap();
            let mut second = producer.reserve(1).unwrap();
            first[0] = 1;
            second[0] = 2;
            first.commit();
            second.commit();
        });
        let got = read_n(&mut consumer, 2);
        writer.join().unwrap();
        assert_eq!(got, vec![vec![1], vec![2]]);
    });
}

/// An open reservation at the end of a lap, padding after it, the next
/// entry at the lap's start: the consumer reads past both, then comes back.
///
/// At a bound of 3 preemptions (21-24 s on 2 cores; 129-136 s at CI's 4,
/// which passed on 2026-12-04 and kept the loom step over six minutes):
/// the interleavings that matter here (a claim read past between its CAS,
/// its announcement and its commit) need one or two.
#[test]
fn open_reservation_before_padding_while_the_consumer_reads_ahead() {
    bounded(3).check(|| {
        let (producer, mut consumer) = around(128);
        producer.push(&[0; 40]).unwrap(); // [0, 48)
        assert_eq!(drain(&mut consumer).len(), 1);
        consumer.release();
        let other = producer.clone();
        let holder = thread::spawn(move || {
            let mut r = producer.reserve(40).unwrap(); // [48, 96)
            r.fill(1);
            r.commit();
        });
        // 48 bytes: pads [96, 128) (or lands first at 48) and starts a lap.
        let pusher = thread::spawn(move || push(&other, &[2; 40]));
        let mut got = read_n(&mut consumer, 2);
        holder.join().unwrap();
        pusher.join().unwrap();
        got.sort();
        assert_eq!(got, vec![vec![1; 40], vec![2; 40]]);
        consumer.release();
        assert_eq!(consumer.used_bytes(), 0);
    });
}

/// A consumer asleep behind an open reservation is woken by its commit.
#[test]
fn wait_behind_an_open_reservation_is_woken_by_its_commit() {
    loom::model(|| {
        let (producer, mut consumer) = around(64);
        let producer = std::sync::Arc::new(producer);
        let p = producer.clone();
        let writer = thread::spawn(move || {
            let mut r = p.reserve(2).unwrap();
            r.copy_from_slice(b"ok");
            r.commit();
        });
        assert_eq!(consumer.wait(), Ok(()));
        assert_eq!(&*consumer.read().unwrap(), b"ok");
        writer.join().unwrap();
    });
}

/// A claim held in the window between its CAS and its announcement (the
/// `Open` header), while another producer commits after it and the
/// consumer waits: the consumer must read past the unannounced claim (the
/// later producer recorded where it starts) and deliver the later entry
/// while the holder is still held. Before that fix, a consumer that saw
/// the zero header on its last look slept, and the commit, made while it
/// was awake, never woke it: loom reported the deadlock.
///
/// `wait` here; the same shape for `poll_ready` and the readiness fd below.
#[test]
fn wait_reads_past_a_claim_not_announced_yet() {
    held_claim_then_a_commit(3, |consumer| {
        assert_eq!(consumer.wait(), Ok(()));
        consumer.read().unwrap().to_vec()
    });
}

#[test]
fn poll_ready_reads_past_a_claim_not_announced_yet() {
    held_claim_then_a_commit(2, |consumer| {
        loom::future::block_on(async { consumer.ready().await.unwrap() });
        consumer.read().unwrap().to_vec()
    });
}

#[test]
fn arm_fd_reads_past_a_claim_not_announced_yet() {
    held_claim_then_a_commit(2, |consumer| {
        consumer.readiness_fd().unwrap();
        fd_loop(consumer, false, 1).remove(0)
    });
}

/// A holder reserves and waits before it commits (so in some interleavings
/// it waits before its announcement is visible, in others after); a
/// pusher pushes after it; the consumer waits for and reads one entry with
/// `read_one`, which must be the pusher's, while the holder still waits.
/// The holder waits on a condition variable that the consumer signals
/// once it has the entry: a consumer asleep for good leaves both blocked,
/// which loom reports as a deadlock.
///
/// `preemptions` bounds the model below CI's 4 (at 4 the `poll_ready` form
/// alone runs for more than ten minutes on 2 cores; at 3 and 2, as run:
/// `wait` 8 s, `poll_ready` 6 s, `arm_fd` 3 s); the window needs one
/// preemption (between the holder's CAS and its announcement), and the
/// model without the recorded starts deadlocks at a bound of 1.
fn held_claim_then_a_commit(preemptions: usize, read_one: fn(&mut Consumer) -> Vec<u8>) {
    bounded(preemptions).check(move || {
        let (producer, mut consumer) = around(64);
        let other = producer.clone();
        let gate = std::sync::Arc::new((loom::sync::Mutex::new(false), loom::sync::Condvar::new()));
        let holder_gate = gate.clone();
        let holder = thread::spawn(move || {
            let mut r = producer.reserve(8).unwrap();
            r.fill(1);
            let (open, changed) = &*holder_gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            drop(open);
            r.commit();
        });
        let pusher = thread::spawn(move || push(&other, &[2; 8]));
        assert_eq!(read_one(&mut consumer), [2; 8]);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_one();
        pusher.join().unwrap();
        holder.join().unwrap();
        assert_eq!(read_n(&mut consumer, 1), [vec![1; 8]]);
    });
}

/// One producer's three reservations, the first two held while the third
/// is claimed after them (two holes, the third at `read`), committed in
/// order: they come out in that order. With two holes, a look at the
/// older ones that finds the second committed must look again at the
/// first (a single look, `if let` for `while let` in `next_in_holes`,
/// passes the two-reservation model above but fails this one).
#[test]
fn one_producers_three_commits_come_out_in_its_order() {
    loom::model(|| {
        let (producer, mut consumer) = around(128);
        let writer = thread::spawn(move || {
            let mut first = producer.reserve(1).unwrap();
            let mut second = producer.reserve(1).unwrap();
            let mut third = producer.reserve(1).unwrap();
            first[0] = 1;
            second[0] = 2;
            third[0] = 3;
            first.commit();
            second.commit();
            third.commit();
        });
        let got = read_n(&mut consumer, 3);
        writer.join().unwrap();
        assert_eq!(got, vec![vec![1], vec![2], vec![3]]);
    });
}

/// A batch claim read past while open (another producer pushed after it),
/// then committed in part: its second entry is moved down next to the
/// first, its later header and the skipped rest are stored Relaxed, and
/// only the Release store of its first header publishes them. The
/// consumer reads all three entries byte for byte, however it interleaves
/// with the commit. (A Relaxed store of the first header fails it: a race
/// on the moved entry's words.)
#[test]
fn batch_committed_in_part_inside_a_hole() {
    two_entries_behind_one_claim_inside_a_hole(|producer| {
        let mut batch = producer.reserve_batch(2, 8).unwrap(); // 32 bytes
        batch.slot_mut(0).fill(1);
        batch.slot_mut(1)[..3].fill(2);
        batch.commit(&[8, 3]);
    });
}

/// An exact run (`push_batch`: one claim, every entry in place, headers
/// 1.. Relaxed, header 0 last with Release) read past while it is being
/// written, because another producer pushed after it.
#[test]
fn pushed_run_inside_a_hole() {
    two_entries_behind_one_claim_inside_a_hole(|producer| {
        producer.push_batch(&[&[1; 8], &[2; 3]]).unwrap();
    });
}

/// `write` publishes `[1; 8]` and `[2; 3]` with one claim while another
/// producer pushes `[3; 8]` after it, so the consumer may read past the
/// claim while it is being written; all three arrive byte for byte, and
/// everything is released in the end.
fn two_entries_behind_one_claim_inside_a_hole(write: fn(&Producer)) {
    bounded(3).check(move || {
        let (producer, mut consumer) = around(128);
        let other = producer.clone();
        let batcher = thread::spawn(move || write(&producer));
        let pusher = thread::spawn(move || push(&other, &[3; 8]));
        let mut got = read_n(&mut consumer, 3);
        batcher.join().unwrap();
        pusher.join().unwrap();
        got.sort();
        assert_eq!(got, vec![vec![1; 8], vec![2; 3], vec![3; 8]]);
        consumer.release();
        assert_eq!(consumer.used_bytes(), 0);
    });
}
