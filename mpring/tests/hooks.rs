//! Read-around mode with a producer held between its claim (the CAS) and
//! its announcement (the `Open` header), through the test-only hook of
//! `--cfg mpring_hooks`:
//!
//! ```text
//! RUSTFLAGS="--cfg mpring_hooks" cargo test -p mpring --test hooks --target-dir target/hooks
//! ```
//!
//! Another producer's entry, committed while the consumer was awake (so
//! no wake-up comes for it), must be delivered while the holder is still
//! held, by each way of waiting: a blocking wait, `poll_ready` and the
//! readiness fd. The deadlines are generous and nothing sleeps to time: a
//! wait that ends by its timeout fails the test.
#![cfg(mpring_hooks)]

use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::thread;
use std::time::{Duration, Instant};

use mpring::hooks::{hold_next_claim, Gate};
use mpring::{Consumer, Producer, Ring};

const DEADLINE: Duration = Duration::from_secs(20);

/// A read-around ring whose first claim (by a thread of its own) is held
/// before its announcement, and a second producer's entry committed after
/// it. Returns the consumer, the held thread's gate and its handle.
fn held_claim_then_a_commit() -> (Consumer, Arc<Gate>, thread::JoinHandle<()>) {
    let (producer, consumer) = Ring::builder(4096).read_around_open(true).build().unwrap();
    let (gate, holder) = hold_a_claim(&producer, b"first");
    // The consumer is awake (not waiting): this commit wakes nobody.
    producer.push(b"later").unwrap();
    drop(producer);
    (consumer, gate, holder)
}

/// A thread of its own claims room for `payload` and is held right after
/// its CAS; once released, it writes and commits `payload`. Returns when
/// the thread is held.
fn hold_a_claim(
    producer: &Producer,
    payload: &'static [u8],
) -> (Arc<Gate>, thread::JoinHandle<()>) {
    let holder_producer = producer.clone();
    let (tx, rx) = mpsc::channel();
    let holder = thread::spawn(move || {
        tx.send(hold_next_claim()).unwrap();
        let mut held = holder_producer.reserve(payload.len()).unwrap();
        held.copy_from_slice(payload);
        held.commit();
    });
    let gate = rx.recv().unwrap();
    assert!(gate.wait_reached(DEADLINE), "the holder never claimed");
    (gate, holder)
}

/// After the held claim is released: its entry comes, then the end.
fn finish(mut consumer: Consumer, gate: Arc<Gate>, holder: thread::JoinHandle<()>) {
    gate.release();
    holder.join().unwrap();
    assert_eq!(&*consumer.read_timeout(DEADLINE).unwrap(), b"first");
    assert!(consumer.read().is_none());
    assert!(consumer.is_disconnected());
}

#[test]
fn a_blocking_wait_reads_past_a_claim_not_announced_yet() {
    let (mut consumer, gate, holder) = held_claim_then_a_commit();
    let start = Instant::now();
    assert_eq!(
        consumer.wait_timeout(DEADLINE),
        Ok(()),
        "slept behind the unannounced claim"
    );
    assert!(start.elapsed() < DEADLINE);
    assert_eq!(&*consumer.read().unwrap(), b"later");
    assert!(
        !holder.is_finished(),
        "delivered while the holder is still held"
    );
    finish(consumer, gate, holder);
}

struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

#[test]
fn poll_ready_reads_past_a_claim_not_announced_yet() {
    let (mut consumer, gate, holder) = held_claim_then_a_commit();
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match consumer.poll_ready(&mut cx) {
            Poll::Ready(outcome) => break outcome.unwrap(),
            Poll::Pending => {
                let now = Instant::now();
                assert!(now < deadline, "never woken behind the unannounced claim");
                thread::park_timeout(deadline - now);
            }
        }
    }
    assert_eq!(&*consumer.read().unwrap(), b"later");
    assert!(
        !holder.is_finished(),
        "delivered while the holder is still held"
    );
    finish(consumer, gate, holder);
}

#[test]
fn the_readiness_fd_reads_past_a_claim_not_announced_yet() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll as MioPoll, Token};

    let (mut consumer, gate, holder) = held_claim_then_a_commit();
    let fd = consumer.readiness_fd().unwrap();
    let mut poll = MioPoll::new().unwrap();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .unwrap();
    // Nothing read yet at the claim's position: arming must find the later
    // entry itself, or leave the fd to become readable.
    if !consumer.arm_fd() {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(DEADLINE)).unwrap();
        assert!(!events.is_empty(), "the fd never became readable");
    }
    assert_eq!(&*consumer.read().unwrap(), b"later");
    assert!(
        !holder.is_finished(),
        "delivered while the holder is still held"
    );
    finish(consumer, gate, holder);
}

/// Claim starts recorded in earlier laps lie everywhere inside a later
/// claim; held before its announcement, that claim must be read past only
/// up to a start recorded in its own lap (StartsExact), or the consumer
/// would later read a header inside its payload. 300 laps of 16-byte
/// entries first (a start at every 16-byte unit, across clearing laps),
/// then a held claim of 208 bytes at several positions.
#[test]
fn starts_recorded_in_earlier_laps_are_not_read_as_boundaries() {
    let (producer, mut consumer) = Ring::builder(1024).read_around_open(true).build().unwrap();
    for i in 0..300 * 1024 / 16 {
        producer.push(&[i as u8; 8]).unwrap();
        assert_eq!(&*consumer.read().unwrap(), &[i as u8; 8]);
    }
    for shift in 0..6u8 {
        // Move the next claim's start around the lap.
        for _ in 0..shift {
            producer.push(&[0; 40]).unwrap();
            assert!(consumer.read().is_some());
        }
        let (gate, holder) = hold_a_claim(&producer, &[0xAB; 200]);
        producer.push(&[shift; 5]).unwrap();
        assert_eq!(consumer.wait_timeout(DEADLINE), Ok(()));
        assert_eq!(&*consumer.read().unwrap(), &[shift; 5]);
        gate.release();
        holder.join().unwrap();
        assert_eq!(&*consumer.read_timeout(DEADLINE).unwrap(), &[0xAB; 200][..]);
        assert!(consumer.read().is_none());
        assert_eq!(consumer.open_reservations(), (0, None));
    }
}

/// A start recorded exactly 128 laps ago carries the same tag as one of
/// this lap (tags count laps modulo 128): the consumer's clearing (one lap
/// in 64) must have removed it. One lap of 16-byte entries (a start at
/// every 16-byte unit), 127 laps with starts only at 0 and 512, then a
/// claim held at position 0 of lap 128, over the old starts.
#[test]
fn starts_of_laps_long_ago_are_cleared() {
    let (producer, mut consumer) = Ring::builder(1024).read_around_open(true).build().unwrap();
    for i in 0..1024 / 16 {
        producer.push(&[i as u8; 8]).unwrap();
        assert!(consumer.read().is_some());
    }
    for _ in 0..127 * 2 {
        producer.push(&[7; 504]).unwrap(); // 512 bytes
        assert!(consumer.read().is_some());
    }
    assert_eq!(consumer.read_offset(), 128 * 1024);
    let (gate, holder) = hold_a_claim(&producer, &[0xAB; 200]);
    producer.push(b"later").unwrap();
    assert_eq!(consumer.wait_timeout(DEADLINE), Ok(()));
    assert_eq!(&*consumer.read().unwrap(), b"later");
    gate.release();
    holder.join().unwrap();
    assert_eq!(&*consumer.read_timeout(DEADLINE).unwrap(), &[0xAB; 200][..]);
    assert!(consumer.read().is_none());
}
