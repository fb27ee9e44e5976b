//! Read-around mode: committed entries are delivered past reservations
//! still open, which are delivered when committed and stepped over when
//! aborted; space is released only up to the oldest open one.

use std::time::Duration;

use mpring::{Alignment, Consumer, Producer, ReserveError, Ring};

fn ring(capacity: usize) -> (Producer, Consumer) {
    Ring::builder(capacity)
        .read_around_open(true)
        .build()
        .unwrap()
}

fn read_all(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(entry) = consumer.read() {
        out.push(entry.to_vec());
    }
    out
}

#[test]
fn entries_after_an_open_reservation_come_first_then_the_committed_one() {
    let (producer, mut consumer) = ring(1024);
    let mut open = producer.reserve(3).unwrap();
    producer.push(b"b").unwrap();
    producer.push(b"c").unwrap();
    assert_eq!(read_all(&mut consumer), [b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(consumer.open_reservations().0, 1);
    open.copy_from_slice(b"aaa");
    open.commit();
    assert_eq!(read_all(&mut consumer), [b"aaa".to_vec()]);
    assert_eq!(consumer.open_reservations(), (0, None));
    consumer.release();
    assert_eq!(
        consumer.used_bytes(),
        0,
        "everything released once the hole closed"
    );
}

#[test]
fn an_aborted_open_reservation_is_stepped_over() {
    let (producer, mut consumer) = ring(1024);
    let open = producer.reserve(40).unwrap();
    producer.push(b"after").unwrap();
    assert_eq!(read_all(&mut consumer), [b"after".to_vec()]);
    drop(open);
    assert!(consumer.read().is_none());
    assert_eq!(consumer.open_reservations(), (0, None));
    assert_eq!(consumer.used_bytes(), 0);
}

#[test]
fn a_shrunk_open_reservation_delivers_its_prefix() {
    let (producer, mut consumer) = ring(1024);
    let mut open = producer.reserve(100).unwrap();
    producer.push(b"x").unwrap();
    assert_eq!(read_all(&mut consumer), [b"x".to_vec()]);
    open[..2].copy_from_slice(b"ok");
    open.commit_len(2);
    assert_eq!(read_all(&mut consumer), [b"ok".to_vec()]);
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
}

#[test]
fn space_is_released_only_up_to_the_oldest_open_reservation() {
    let (producer, mut consumer) = ring(256);
    producer.push(&[1; 8]).unwrap(); // 16 bytes
    let open = producer.reserve(8).unwrap(); // 16 bytes
    producer.push(&[2; 8]).unwrap();
    assert_eq!(read_all(&mut consumer).len(), 2);
    consumer.release();
    // The entry before the hole is released; the hole and what follows it
    // are not.
    assert_eq!(consumer.used_bytes(), 32);
    open.commit();
    assert_eq!(read_all(&mut consumer).len(), 1);
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
}

#[test]
fn one_producers_reservations_committed_in_order_come_out_in_order() {
    let (producer, mut consumer) = ring(1024);
    let mut first = producer.reserve(1).unwrap();
    let mut second = producer.reserve(1).unwrap();
    let other = producer.clone();
    other.push(b"o").unwrap();
    assert_eq!(read_all(&mut consumer), [b"o".to_vec()]);
    first[0] = 1;
    second[0] = 2;
    first.commit();
    second.commit();
    assert_eq!(read_all(&mut consumer), [vec![1], vec![2]]);
}

/// A leaked reservation never commits: every other entry still gets
/// through until the ring is full, which producers see as `Full`; the
/// consumer never hangs.
#[test]
fn a_forgotten_reservation_lets_everything_else_through_until_the_ring_is_full() {
    let (producer, mut consumer) = ring(1024);
    std::mem::forget(producer.reserve(10).unwrap()); // 24 bytes, open for good
    let mut pushed = 0u32;
    let mut read = 0u32;
    loop {
        match producer.push(&pushed.to_le_bytes()) {
            Ok(()) => pushed += 1,
            Err(ReserveError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        // The consumer keeps up: everything but the leaked one comes out.
        while let Some(entry) = consumer.read() {
            assert_eq!(&*entry, &read.to_le_bytes());
            read += 1;
        }
    }
    assert_eq!(read, pushed);
    // A lap's worth passed the leaked reservation before the ring filled:
    // the space after it cannot be released.
    assert!(
        pushed >= (1024 - 24) / 16 - 1,
        "{pushed} entries got through"
    );
    assert_eq!(consumer.open_reservations().0, 1);
    assert_eq!(
        consumer.wait_timeout(Duration::from_millis(20)),
        Err(mpring::WaitError::Timeout),
        "nothing to read, and no hang"
    );
    assert_eq!(producer.push(b"more"), Err(ReserveError::Full));
}

#[test]
fn batches_in_a_hole_deliver_every_committed_slot() {
    let (producer, mut consumer) = ring(4096);
    let mut batch = producer.reserve_batch(4, 100).unwrap();
    producer.push(b"later").unwrap();
    assert_eq!(read_all(&mut consumer), [b"later".to_vec()]);
    batch.slot_mut(0)[..1].copy_from_slice(b"a");
    batch.slot_mut(1)[..2].copy_from_slice(b"bb");
    batch.slot_mut(2)[..3].copy_from_slice(b"ccc");
    batch.commit(&[1, 2, 3]);
    assert_eq!(
        read_all(&mut consumer),
        [b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]
    );
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
}

#[test]
fn an_open_reservation_at_the_end_of_a_lap_with_padding_after_it() {
    let (producer, mut consumer) = ring(256);
    producer.push(&[0; 104]).unwrap(); // 112 bytes
    assert_eq!(read_all(&mut consumer).len(), 1);
    consumer.release(); // read position 112
    let open = producer.reserve(88).unwrap(); // [112, 208)
    producer.push(&[7; 56]).unwrap(); // pads [208, 256), lands at 0
    assert_eq!(read_all(&mut consumer), [vec![7; 56]]);
    open.commit();
    assert_eq!(read_all(&mut consumer), [vec![0; 88]]);
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
    // The next lap starts clean.
    producer.push(&[9; 40]).unwrap();
    assert_eq!(read_all(&mut consumer), [vec![9; 40]]);
}

#[test]
fn metadata_and_sixteen_byte_alignment_around_an_open_reservation() {
    let (producer, mut consumer) = Ring::builder(2048)
        .alignment(Alignment::Sixteen)
        .metadata::<u64>()
        .read_around_open(true)
        .build()
        .unwrap();
    let mut open = producer.reserve(5).unwrap();
    producer.push_with(b"second", 2).unwrap();
    let entry = consumer.read().unwrap();
    assert_eq!((&*entry, *entry.meta()), (&b"second"[..], 2));
    assert_eq!(entry.as_ptr() as usize % 16, 0);
    drop(entry);
    open.copy_from_slice(b"first");
    open.commit_with(1);
    let entry = consumer.read().unwrap();
    assert_eq!((&*entry, *entry.meta()), (&b"first"[..], 1));
}

#[test]
fn more_open_reservations_than_the_consumer_tracks() {
    let (producer, mut consumer) = ring(4096);
    let open: Vec<_> = (0..40).map(|_| producer.reserve(8).unwrap()).collect();
    producer.push(b"behind forty").unwrap();
    // 32 are read past; the 33rd stops the consumer.
    assert!(consumer.read().is_none());
    assert_eq!(consumer.open_reservations().0, 32);
    for (i, mut r) in open.into_iter().enumerate() {
        r.copy_from_slice(&(i as u64).to_le_bytes());
        r.commit();
    }
    let got = read_all(&mut consumer);
    assert_eq!(got.len(), 41);
    let firsts: Vec<u64> = got[..40]
        .iter()
        .map(|e| u64::from_le_bytes(e[..].try_into().unwrap()))
        .collect();
    assert_eq!(firsts, (0..40).collect::<Vec<_>>());
    assert_eq!(got[40], b"behind forty");
}

#[test]
fn a_sleeping_consumer_is_woken_by_the_commit_of_an_open_reservation() {
    let (producer, mut consumer) = ring(1024);
    let mut open = producer.reserve(4).unwrap();
    producer.push(b"first").unwrap();
    assert_eq!(read_all(&mut consumer), [b"first".to_vec()]);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            open.copy_from_slice(b"late");
            open.commit();
        });
        let entry = consumer.read_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(&*entry, b"late");
    });
}

#[test]
fn the_default_mode_still_stops_at_an_open_reservation() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let open = producer.reserve(4).unwrap();
    producer.push(b"behind").unwrap();
    assert!(consumer.read().is_none());
    assert_eq!(consumer.open_reservations(), (0, None));
    drop(open);
    assert_eq!(read_all(&mut consumer), [b"behind".to_vec()]);
}

/// What the guarantees promise when one producer commits out of order:
/// reservation order, except that an entry committed while an earlier
/// reservation is still open may come out first. Not "commit order": with
/// both committed before the consumer looks, reservation order wins.
#[test]
fn one_producers_out_of_order_commits_keep_reservation_order_unless_read_in_between() {
    let (producer, mut consumer) = ring(1024);
    let mut a = producer.reserve(1).unwrap();
    let mut b = producer.reserve(1).unwrap();
    a[0] = b'a';
    b[0] = b'b';
    b.commit();
    a.commit();
    assert_eq!(read_all(&mut consumer), [b"a".to_vec(), b"b".to_vec()]);

    let mut a = producer.reserve(1).unwrap();
    let mut b = producer.reserve(1).unwrap();
    a[0] = b'a';
    b[0] = b'b';
    b.commit();
    // Read while `a` is open: `b` comes first.
    assert_eq!(read_all(&mut consumer), [b"b".to_vec()]);
    a.commit();
    assert_eq!(read_all(&mut consumer), [b"a".to_vec()]);
}

/// A short commit, an abort and a batch's unused slots give nothing back
/// to the tail in read-around mode (in the default mode they do, when
/// nothing was reserved after them): the room stays claimed until the
/// consumer passes it, then it is released.
#[test]
fn unused_room_is_not_given_back_in_read_around_mode() {
    for around in [false, true] {
        let (producer, mut consumer): (Producer, Consumer) = Ring::builder(1024)
            .read_around_open(around)
            .build()
            .unwrap();
        let r = producer.reserve(100).unwrap(); // 8 + 104 bytes
        r.commit_len(10); // 8 + 16 bytes used
        let want = if around { 112 } else { 24 };
        assert_eq!(
            producer.used_bytes(),
            want,
            "short commit, around: {around}"
        );
        assert_eq!(read_all(&mut consumer), [vec![0; 10]]);
        consumer.release();
        assert_eq!(producer.used_bytes(), 0);

        drop(producer.reserve(100).unwrap()); // aborted
        let want = if around { 112 } else { 0 };
        assert_eq!(producer.used_bytes(), want, "abort, around: {around}");
        assert!(consumer.read().is_none());
        consumer.release();
        assert_eq!(producer.used_bytes(), 0);

        let mut batch = producer.reserve_batch(4, 8).unwrap(); // 4 x 16 bytes
        batch.slot_mut(0).fill(7);
        batch.commit(&[8]);
        let want = if around { 64 } else { 16 };
        assert_eq!(producer.used_bytes(), want, "batch, around: {around}");
        assert_eq!(read_all(&mut consumer), [vec![7; 8]]);
        consumer.release();
        assert_eq!(producer.used_bytes(), 0);
    }
}

/// The ring exactly full behind an open reservation at the head: the
/// consumer reads a whole lap past it, then the reservation is aborted.
/// Stepping over it leaves the read position a lap past the head: nothing
/// more to read, and every byte goes back to the producers.
#[test]
fn an_aborted_reservation_a_full_lap_behind_the_reader() {
    let (producer, mut consumer) = ring(256);
    let open = producer.reserve(8).unwrap(); // 16 bytes with its header
    let mut pushed = 0;
    while producer.push(&[7; 8]).is_ok() {
        pushed += 1;
    }
    assert_eq!(pushed, (256 - 16) / 16, "the ring is exactly full");
    assert_eq!(read_all(&mut consumer).len(), pushed);
    drop(open);
    assert!(consumer.read().is_none());
    assert!(consumer.read().is_none());
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
    producer.push(b"again").unwrap();
    assert_eq!(read_all(&mut consumer), [b"again".to_vec()]);
}

/// A waker whose first clone runs a test's action: a wait clones the waker
/// as it registers, between its first look and its last look before
/// sleeping, so the action runs in that window.
struct CloneHook {
    action: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// # Safety
/// `hook` must outlive the waker and every clone of it.
unsafe fn hooked_waker(hook: &CloneHook) -> std::task::Waker {
    use std::task::{RawWaker, RawWakerVTable, Waker};
    fn clone(data: *const ()) -> RawWaker {
        // SAFETY: `data` is the `CloneHook` given to `hooked_waker`, which
        // outlives this waker and its clones.
        let hook = unsafe { &*data.cast::<CloneHook>() };
        if let Some(action) = hook.action.lock().unwrap().take() {
            action();
        }
        RawWaker::new(data, &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    let data = (hook as *const CloneHook).cast::<()>();
    // SAFETY: the vtable's functions do nothing with `data` but read the
    // hook it points to, from any thread (a Mutex guards it), which the
    // caller keeps alive as long as the waker and its clones.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

/// The ring exactly full behind an open reservation at the head, read a
/// whole lap past, and the reservation aborted while `poll_ready`
/// registers its waker: its last look steps over the aborted claim, the
/// last hole, and must release before it reads in order again (the read
/// window is less than a lap past the head; debug builds assert it).
#[test]
fn a_reservation_aborted_while_a_wait_registers_a_lap_behind_the_reader() {
    // Before the ring, which keeps a clone of the waker: it outlives them.
    let hook = CloneHook {
        action: std::sync::Mutex::new(None),
    };
    let (producer, mut consumer) = ring(256);
    let open = producer.reserve_owned(8).unwrap();
    while producer.push(&[7; 8]).is_ok() {}
    assert_eq!(read_all(&mut consumer).len(), (256 - 16) / 16);
    *hook.action.lock().unwrap() = Some(Box::new(move || drop(open)));
    // SAFETY: `hook` is dropped after the ring and every waker.
    let waker = unsafe { hooked_waker(&hook) };
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(consumer.poll_ready(&mut cx).is_pending());
    assert!(
        hook.action.lock().unwrap().is_none(),
        "the waker was cloned"
    );
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
    producer.push(b"again").unwrap();
    assert_eq!(read_all(&mut consumer), [b"again".to_vec()]);
}
