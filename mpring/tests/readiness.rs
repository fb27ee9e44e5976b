//! The readiness fd in real event loops: `mio::Poll` beside a UDP socket
//! and a timer, raw `epoll` edge- and level-triggered, and every reason
//! the fd becomes readable. (Linux only; the arming protocol's models are
//! in `tests/loom.rs`.)
#![cfg(target_os = "linux")]

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use mpring::Ring;

/// An epoll instance watching one fd for readability.
struct Epoll(RawFd);

impl Epoll {
    fn new(fd: RawFd, edge_triggered: bool) -> Epoll {
        // SAFETY: plain system calls on integers and a local struct.
        unsafe {
            let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(epoll >= 0);
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | if edge_triggered { libc::EPOLLET } else { 0 }) as u32,
                u64: 7,
            };
            assert_eq!(
                libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event),
                0
            );
            Epoll(epoll)
        }
    }

    /// Whether the fd was reported readable within `timeout`.
    fn wait(&self, timeout: Duration) -> bool {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: one event slot, a live local.
            let n = unsafe { libc::epoll_wait(self.0, &mut event, 1, timeout.as_millis() as i32) };
            if n >= 0 {
                return n == 1;
            }
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::Interrupted
            );
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our own epoll fd, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// A ping-pong in which every commit races with the consumer arming its
/// fd and waiting in epoll: returns how many commits did not make the fd
/// readable (waits that took their whole timeout).
fn lost_notifications(edge_triggered: bool, rounds: u32) -> u32 {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let epoll = Epoll::new(consumer.readiness_fd().unwrap(), edge_triggered);
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
        loop {
            if !consumer.arm_fd() && !epoll.wait(Duration::from_millis(500)) {
                lost += 1;
            }
            if let Some(entry) = consumer.read() {
                assert_eq!(*entry, i.to_le_bytes());
                break;
            }
        }
        acked.store(i + 1, Ordering::Release);
    }
    writer.join().unwrap();
    lost
}

#[test]
fn edge_triggered_epoll_loses_no_commit() {
    assert_eq!(lost_notifications(true, 20_000), 0);
}

#[test]
fn level_triggered_epoll_loses_no_commit() {
    assert_eq!(lost_notifications(false, 20_000), 0);
}

/// Level-triggered: readable exactly while there is a reason, so an event
/// loop never spins on a stale notification.
#[test]
fn readable_only_while_there_is_a_reason() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    let fd = consumer.readiness_fd().unwrap();
    assert_eq!(
        consumer.readiness_fd().unwrap(),
        fd,
        "the same fd each time"
    );
    let epoll = Epoll::new(fd, false);
    assert!(!epoll.wait(Duration::ZERO), "not readable before arming");
    assert!(!consumer.arm_fd());
    assert!(!epoll.wait(Duration::ZERO), "armed, nothing ready");
    // Armed again without a notification in between: still quiet.
    assert!(!consumer.arm_fd());
    producer.push(b"one").unwrap();
    assert!(epoll.wait(Duration::from_secs(5)), "the commit notifies");
    assert!(epoll.wait(Duration::ZERO), "level: readable until re-armed");
    assert_eq!(&*consumer.read().unwrap(), b"one");
    assert!(!consumer.arm_fd());
    assert!(
        !epoll.wait(Duration::ZERO),
        "re-armed: the notification is cleared"
    );
    // Ready at arming time: readable at once.
    producer.push(b"two").unwrap();
    assert!(consumer.arm_fd());
    assert!(epoll.wait(Duration::ZERO));
    assert_eq!(&*consumer.read().unwrap(), b"two");
    assert!(!consumer.arm_fd());
    assert!(!epoll.wait(Duration::ZERO));
    // A wake handle: readable, nothing to read.
    consumer.wake_handle().wake();
    assert!(epoll.wait(Duration::from_secs(5)));
    assert!(consumer.read().is_none());
    // Arming reports it too (and takes it), like a wait would.
    assert!(consumer.arm_fd());
    assert!(!consumer.arm_fd(), "the wake-up was taken");
    assert!(!epoll.wait(Duration::ZERO));
    // The last producer leaves: readable, and for good.
    drop(producer);
    assert!(epoll.wait(Duration::from_secs(5)));
    assert!(consumer.is_disconnected());
    assert!(consumer.arm_fd());
    assert!(epoll.wait(Duration::ZERO));
}

/// A wake handle fired from another thread while the loop waits.
#[test]
fn a_wake_handle_from_another_thread_ends_the_wait() {
    let (_producer, mut consumer) = Ring::new(1024).unwrap();
    let epoll = Epoll::new(consumer.readiness_fd().unwrap(), true);
    let handle = consumer.wake_handle();
    assert!(!consumer.arm_fd());
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        handle.wake();
    });
    assert!(epoll.wait(Duration::from_secs(30)));
    waker.join().unwrap();
}

#[test]
#[should_panic(expected = "readiness_fd first")]
fn arming_without_an_fd_is_a_caller_bug() {
    let (_producer, mut consumer) = Ring::new(1024).unwrap();
    consumer.arm_fd();
}

/// A timerfd firing every `period`.
fn timer(period: Duration) -> RawFd {
    // SAFETY: plain system calls on integers and a local struct.
    unsafe {
        let fd = libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        );
        assert!(fd >= 0);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: period.as_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        assert_eq!(libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()), 0);
        fd
    }
}

/// A handler as servers write it: one `mio::Poll` (edge-triggered) over
/// the ring, a UDP socket and a timer. Listener threads push bursts with
/// pauses (so the handler really sleeps), a client sends datagrams to the
/// socket, the timer ticks; every entry and datagram is seen, in order,
/// and the loop ends when the producers are gone.
#[test]
fn mio_poll_with_a_udp_socket_and_a_timer() {
    const RING: Token = Token(0);
    const SOCKET: Token = Token(1);
    const TIMER: Token = Token(2);
    let (producer, mut consumer) = Ring::new(1 << 14).unwrap();
    let mut poll = Poll::new().unwrap();
    let ring_fd = consumer.readiness_fd().unwrap();
    poll.registry()
        .register(&mut SourceFd(&ring_fd), RING, Interest::READABLE)
        .unwrap();
    let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)
        .unwrap();
    let timer_fd = timer(Duration::from_millis(2));
    poll.registry()
        .register(&mut SourceFd(&timer_fd), TIMER, Interest::READABLE)
        .unwrap();

    let (listeners, per_listener) = (2u32, 3_000u32);
    let threads: Vec<_> = (0..listeners)
        .map(|id| {
            let producer = producer.clone();
            thread::spawn(move || {
                for seq in 0..per_listener {
                    let mut entry = [0u8; 8];
                    entry[..4].copy_from_slice(&id.to_le_bytes());
                    entry[4..].copy_from_slice(&seq.to_le_bytes());
                    while producer.push(&entry).is_err() {
                        thread::yield_now();
                    }
                    if seq % 100 == 99 {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    drop(producer);
    let target = socket.local_addr().unwrap();
    let datagrams = 200u32;
    let client = thread::spawn(move || {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..datagrams {
            client.send_to(&i.to_le_bytes(), target).unwrap();
            thread::sleep(Duration::from_micros(500));
        }
    });

    let mut events = Events::with_capacity(16);
    let mut next = vec![0u32; listeners as usize];
    let (mut received, mut ticks, mut sleeps) = (0u32, 0u64, 0u64);
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the loop hangs");
        consumer.read_batch(256, |entry| {
            let id = u32::from_le_bytes(entry[..4].try_into().unwrap()) as usize;
            let seq = u32::from_le_bytes(entry[4..].try_into().unwrap());
            assert_eq!(seq, next[id], "listener {id}: in order, none lost");
            next[id] += 1;
        });
        if consumer.is_disconnected() && consumer.is_empty() && received == datagrams {
            break;
        }
        let timeout = if consumer.arm_fd() {
            Some(Duration::ZERO)
        } else {
            sleeps += 1;
            None
        };
        poll.poll(&mut events, timeout).unwrap();
        for event in events.iter() {
            match event.token() {
                RING => {} // read at the top of the loop
                SOCKET => loop {
                    // Edge-triggered: drain until WouldBlock.
                    match socket.recv_from(&mut buf) {
                        Ok((4, _)) => {
                            assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), received);
                            received += 1;
                        }
                        Ok((n, _)) => panic!("datagram of {n} bytes"),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                },
                TIMER => {
                    let mut expirations = [0u8; 8];
                    // SAFETY: reads 8 bytes into a live local array.
                    let n = unsafe { libc::read(timer_fd, expirations.as_mut_ptr().cast(), 8) };
                    if n == 8 {
                        ticks += u64::from_ne_bytes(expirations);
                    }
                }
                Token(t) => panic!("unknown token {t}"),
            }
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    client.join().unwrap();
    // SAFETY: our own timerfd, closed once.
    unsafe { libc::close(timer_fd) };
    assert_eq!(next, vec![per_listener; listeners as usize]);
    assert_eq!(received, datagrams);
    assert!(ticks > 0, "the timer fired");
    assert!(sleeps > 0, "the loop slept in the poll");
    assert!(consumer.sleep_count() > 0);
}
