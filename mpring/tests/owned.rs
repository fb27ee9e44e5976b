//! Owned reservations: `'static`, `Send`, committed later from another
//! thread, with a reservation's guarantees (drop aborts, panics included;
//! pending ones keep the stream open). Run under Miri and TSan in CI.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mpring::{Consumer, OwnedReservation, Producer, Ring, WaitError};

fn assert_send_static<T: Send + 'static>() {}

#[test]
fn owned_reservations_are_send_and_static() {
    assert_send_static::<OwnedReservation>();
    assert_send_static::<OwnedReservation<(u16, u32)>>();
}

/// What a borrowed reservation cannot do (E0597): a listener that keeps
/// its producer and its pending reservation in one value.
#[test]
fn stored_beside_its_producer() {
    struct Listener {
        producer: Producer,
        pending: Option<OwnedReservation>,
    }
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let mut listener = Listener {
        producer,
        pending: None,
    };
    listener.pending = Some(listener.producer.reserve_owned(4).unwrap());
    listener.producer.push(b"after").unwrap();
    assert!(
        consumer.read().is_none(),
        "in order: the pending one comes first"
    );
    let mut pending = listener.pending.take().unwrap();
    pending.copy_from_slice(b"recv");
    pending.commit();
    assert_eq!(&*consumer.read().unwrap(), b"recv");
    assert_eq!(&*consumer.read().unwrap(), b"after");
}

/// A completion thread commits what listener threads reserved (as a
/// completion-based I/O runtime would): every entry whole, each
/// listener's in its reservation order, the stream ends after the last.
#[test]
fn committed_by_a_completion_thread() {
    let per: u32 = if cfg!(miri) { 20 } else { 2_000 };
    let (producer, mut consumer) = Ring::new(1 << 12).unwrap();
    let (to_completion, completions) = mpsc::channel::<(OwnedReservation, [u8; 8])>();
    let listeners: Vec<_> = (0..2u32)
        .map(|id| {
            let producer = producer.clone();
            let to_completion = to_completion.clone();
            thread::spawn(move || {
                for seq in 0..per {
                    let reservation = loop {
                        match producer.reserve_owned(8) {
                            Ok(r) => break r,
                            Err(_) => thread::yield_now(),
                        }
                    };
                    let mut payload = [0u8; 8];
                    payload[..4].copy_from_slice(&id.to_le_bytes());
                    payload[4..].copy_from_slice(&seq.to_le_bytes());
                    to_completion.send((reservation, payload)).unwrap();
                }
            })
        })
        .collect();
    drop((producer, to_completion));
    let completion = thread::spawn(move || {
        for (mut reservation, payload) in completions {
            reservation.copy_from_slice(&payload);
            reservation.commit();
        }
    });
    let mut next = [0u32; 2];
    loop {
        match consumer.wait_timeout(Duration::from_secs(60)) {
            Ok(()) => {
                consumer.read_batch(64, |entry| {
                    let id = u32::from_le_bytes(entry[..4].try_into().unwrap()) as usize;
                    let seq = u32::from_le_bytes(entry[4..].try_into().unwrap());
                    assert_eq!(seq, next[id]);
                    next[id] += 1;
                });
            }
            Err(WaitError::Disconnected) => break,
            Err(WaitError::Timeout) => panic!("stalled"),
        }
    }
    for l in listeners {
        l.join().unwrap();
    }
    completion.join().unwrap();
    assert_eq!(next, [per, per]);
}

fn read_all(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    consumer.read_batch(usize::MAX, |e| got.push(e.to_vec()));
    got
}

/// Dropped on another thread, by a panic included: aborted, stepped over;
/// a pending one keeps the stream open until then.
#[test]
fn dropped_or_panicked_on_another_thread_is_aborted() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let dropped = producer.reserve_owned(16).unwrap();
    let panicked = producer.reserve_owned(16).unwrap();
    producer.push(b"kept").unwrap();
    drop(producer);
    assert!(
        !consumer.is_disconnected(),
        "pending reservations count as producers"
    );
    thread::spawn(move || drop(dropped)).join().unwrap();
    let outcome = thread::spawn(move || {
        let mut r = panicked;
        r[0] = 1;
        panic!("a listener panics with a reservation in hand");
    })
    .join();
    assert!(outcome.is_err());
    assert_eq!(read_all(&mut consumer), [b"kept".to_vec()]);
    assert!(consumer.is_disconnected());
    assert_eq!(consumer.wait(), Err(WaitError::Disconnected));
}

/// Metadata and short commits work the same on owned reservations.
#[test]
fn records_and_short_commits() {
    let (producer, mut consumer) = Ring::builder(1024)
        .metadata::<(u16, u64)>()
        .build()
        .unwrap();
    let mut r = producer.reserve_owned(100).unwrap();
    let other = thread::spawn(move || {
        r[..3].copy_from_slice(b"abc");
        r.commit_len_with(3, (7, u64::MAX));
    });
    other.join().unwrap();
    let entry = consumer.read().unwrap();
    assert_eq!((&*entry, entry.meta()), (&b"abc"[..], &(7, u64::MAX)));
    drop(entry);
    assert!(consumer.read().is_none());
    assert_eq!(consumer.used_bytes(), 0, "the unused room came back");
}
