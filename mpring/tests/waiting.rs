//! Blocking and async waits: timeouts, wake-ups by commits, padding,
//! disconnection and wake handles.

use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::thread;
use std::time::{Duration, Instant};

use mpring::{Ring, WaitError};

/// A minimal executor: polls on this thread, parks while pending.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

#[test]
fn timeout_and_deadline_expire_on_an_empty_ring() {
    let (_producer, mut consumer) = Ring::new(1024).unwrap();
    let start = Instant::now();
    assert_eq!(
        consumer.wait_timeout(Duration::from_millis(20)),
        Err(WaitError::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_millis(10);
    assert_eq!(consumer.wait_deadline(deadline), Err(WaitError::Timeout));
    assert!(Instant::now() >= deadline);
    // A deadline in the past does not block.
    assert_eq!(consumer.wait_deadline(start), Err(WaitError::Timeout));
    assert_eq!(
        consumer.read_batch_timeout(8, Duration::ZERO, |_| ()),
        Err(WaitError::Timeout)
    );
}

#[test]
fn ready_entries_return_at_once() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    producer.push(b"a").unwrap();
    producer.push(b"b").unwrap();
    assert_eq!(consumer.wait(), Ok(()));
    let mut got = Vec::new();
    let n = consumer
        .read_batch_deadline(8, Instant::now(), |e| got.push(e.to_vec()))
        .unwrap();
    assert_eq!((n, got), (2, vec![b"a".to_vec(), b"b".to_vec()]));
}

#[test]
fn a_sleeping_consumer_is_woken_by_each_commit() {
    let (producer, mut consumer) = Ring::new(256).unwrap(); // laps often: padding too
    let rounds = if cfg!(miri) { 20 } else { 2_000 };
    let writer = thread::spawn(move || {
        for i in 0..rounds as u32 {
            // Let the consumer go to sleep before most pushes.
            if i % 2 == 0 {
                thread::yield_now();
            }
            let len = (i % 50) as usize + 4;
            let mut r = loop {
                match producer.reserve(len) {
                    Ok(r) => break r,
                    Err(mpring::ReserveError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            r[..4].copy_from_slice(&i.to_le_bytes());
            r.commit();
        }
    });
    let mut next = 0u32;
    loop {
        match consumer.read_timeout(Duration::from_secs(30)) {
            Ok(entry) => {
                assert_eq!(entry[..4], next.to_le_bytes());
                assert_eq!(entry.len(), (next % 50) as usize + 4);
                next += 1;
            }
            Err(WaitError::Disconnected) => break,
            Err(e) => panic!("{e} after {next} entries"),
        }
    }
    assert_eq!(next, rounds as u32);
    writer.join().unwrap();
}

#[test]
fn a_reservation_held_while_the_consumer_sleeps_wakes_it_on_commit() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    thread::scope(|s| {
        let mut r = producer.reserve(3).unwrap();
        s.spawn(move || {
            thread::sleep(Duration::from_millis(20));
            r.copy_from_slice(b"udp");
            r.commit();
        });
        let entry = consumer.read_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(&*entry, b"udp");
    });
}

#[test]
fn disconnection_wakes_the_consumer_after_the_last_entries() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let writer = thread::spawn(move || {
        producer.push(b"last").unwrap();
        thread::sleep(Duration::from_millis(10));
        drop(producer);
    });
    assert_eq!(
        &*consumer.read_timeout(Duration::from_secs(30)).unwrap(),
        b"last"
    );
    assert_eq!(
        consumer.wait_timeout(Duration::from_secs(30)),
        Err(WaitError::Disconnected)
    );
    writer.join().unwrap();
}

#[test]
fn wake_handle_wakes_a_waiting_consumer_once() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let handle = consumer.wake_handle();
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        handle.wake();
    });
    // A wake-up is no error: `Ok`, with nothing to read.
    assert_eq!(consumer.wait_timeout(Duration::from_secs(30)), Ok(()));
    assert!(consumer.read().is_none());
    waker.join().unwrap();
    // Taken once: the next wait blocks again.
    assert_eq!(
        consumer.wait_timeout(Duration::from_millis(5)),
        Err(WaitError::Timeout)
    );
    // Ready entries come before a wake-up.
    consumer.wake_handle().wake();
    producer.push(b"x").unwrap();
    assert_eq!(consumer.wait(), Ok(()));
    assert_eq!(&*consumer.read().unwrap(), b"x");
    assert_eq!(consumer.wait(), Ok(()));
    assert!(consumer.read().is_none());
    // The forms that read: no entry, so a wake-up ends them early.
    consumer.wake_handle().wake();
    assert_eq!(
        consumer.read_batch_timeout(8, Duration::from_secs(30), |_| ()),
        Ok(0)
    );
    consumer.wake_handle().wake();
    assert_eq!(
        consumer
            .read_timeout(Duration::from_secs(30))
            .map(|e| e.len()),
        Err(WaitError::Timeout)
    );
}

#[test]
fn async_wait_is_woken_by_commits_and_disconnection() {
    let (producer, mut consumer) = Ring::new(256).unwrap();
    let rounds = if cfg!(miri) { 10 } else { 1_000 };
    let writer = thread::spawn(move || {
        for i in 0..rounds as u32 {
            if i % 2 == 0 {
                thread::yield_now();
            }
            while producer.push(&i.to_le_bytes()).is_err() {
                thread::yield_now();
            }
        }
    });
    let mut next = 0u32;
    let end = block_on(async {
        loop {
            if let Err(e) = consumer.ready().await {
                return e;
            }
            consumer.read_batch(16, |e| {
                assert_eq!(e, next.to_le_bytes());
                next += 1;
            });
        }
    });
    assert_eq!(end, WaitError::Disconnected);
    assert_eq!(next, rounds as u32);
    writer.join().unwrap();
}

#[test]
fn a_wait_that_timed_out_leaves_the_ring_usable() {
    let (producer, mut consumer) = Ring::new(64).unwrap();
    for round in 0..20u8 {
        assert_eq!(
            consumer.wait_timeout(Duration::ZERO),
            Err(WaitError::Timeout)
        );
        // Aborts handed back over the mark, pushes that pad over it.
        producer.reserve(20).unwrap().abort();
        producer.push(&[round; 20]).unwrap();
        assert_eq!(&*consumer.read().unwrap(), &[round; 20]);
        assert!(consumer.read().is_none());
    }
}

/// Review finding: "spin forever" (`Duration::MAX`) must not overflow the
/// clock; such a wait still ends on an entry, a deadline, a wake-up or the
/// end of the stream.
#[test]
fn a_spin_of_duration_max_waits_without_panicking() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    consumer.set_spin(Duration::MAX);
    assert_eq!(
        consumer.wait_timeout(Duration::from_millis(10)),
        Err(WaitError::Timeout)
    );
    let pusher = {
        let producer = producer.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            producer.push(b"late").unwrap();
        })
    };
    assert_eq!(consumer.wait(), Ok(()));
    assert_eq!(&*consumer.read().unwrap(), b"late");
    pusher.join().unwrap();

    let handle = consumer.wake_handle();
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        handle.wake();
    });
    assert_eq!(consumer.wait(), Ok(()));
    assert!(consumer.read().is_none());
    waker.join().unwrap();

    let dropper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        drop(producer);
    });
    assert_eq!(consumer.wait(), Err(WaitError::Disconnected));
    dropper.join().unwrap();
}

/// Review finding: a `ready()` future dropped while pending (a `select!`
/// that took another branch) takes its announcement back: the next commit
/// wakes no stale waker.
#[test]
fn a_dropped_ready_future_leaves_no_stale_waker() {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = count.clone().into();
    let mut cx = Context::from_waker(&waker);
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let mut ready = Box::pin(consumer.ready());
    assert!(ready.as_mut().poll(&mut cx).is_pending());
    drop(ready);
    producer.push(b"x").unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "a stale waker was woken");

    assert_eq!(consumer.read().as_deref(), Some(&b"x"[..]));

    // A future still alive is woken as before.
    let mut ready = Box::pin(consumer.ready());
    assert!(ready.as_mut().poll(&mut cx).is_pending());
    producer.push(b"y").unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
}

/// `read_batch_timeout` with `max == 0` waits, then hands out nothing.
#[test]
fn a_batch_of_zero_returns_zero_after_waiting() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    producer.push(b"a").unwrap();
    assert_eq!(
        consumer.read_batch_timeout(0, Duration::from_secs(1), |_| ()),
        Ok(0)
    );
    assert_eq!(consumer.read().as_deref(), Some(&b"a"[..]));
}

/// A ping-pong in which every commit races with the consumer falling
/// asleep: the consumer acknowledges an entry and waits at once (no spin);
/// the producer commits the next entry as soon as it sees the
/// acknowledgement. A lost wake-up leaves the consumer asleep until its
/// timeout (the entry is then found, so it shows as a read that took the
/// whole timeout). With `membarrier` (Linux) the consumer starts in
/// asymmetric mode and, sleeping after every entry, switches to fences
/// within 10 ms, so this crosses the switch (the unit tests in `sleep.rs`
/// pin each mode). `MPRING_PINGPONG_ROUNDS` sets the number of rounds.
#[test]
fn every_commit_racing_a_consumer_falling_asleep_wakes_it() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let rounds: u32 = match std::env::var("MPRING_PINGPONG_ROUNDS") {
        Ok(n) => n.parse().expect("MPRING_PINGPONG_ROUNDS: a number"),
        Err(_) if cfg!(miri) => 20,
        Err(_) => 20_000,
    };
    let timeout = Duration::from_millis(500);
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    consumer.set_spin(Duration::ZERO);
    let acked = Arc::new(AtomicU32::new(0));
    let seen = acked.clone();
    let writer = thread::spawn(move || {
        for i in 0..rounds {
            producer.push(&i.to_le_bytes()).unwrap();
            while seen.load(Ordering::Acquire) != i + 1 {
                std::hint::spin_loop();
            }
        }
    });
    let mut lost = 0;
    for i in 0..rounds {
        let start = Instant::now();
        match consumer.read_timeout(timeout) {
            Ok(entry) => assert_eq!(*entry, i.to_le_bytes()),
            Err(e) => panic!("{e} waiting for entry {i}"),
        }
        if start.elapsed() >= timeout {
            lost += 1;
        }
        acked.store(i + 1, Ordering::Release);
    }
    writer.join().unwrap();
    assert_eq!(
        lost, 0,
        "{lost} of {rounds} commits did not wake the consumer"
    );
}
