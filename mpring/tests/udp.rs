//! The `udp` feature's listeners, on loopback: IPv4 and IPv6, GRO on and
//! off, a full ring, shutdown under load, truncated datagrams, ECN bits and
//! destination addresses in the records; groups that steer datagrams to
//! N rings (by payload, with GRO entries split, out-of-range indexes, a
//! full ring among others, QUIC connection IDs).
#![cfg(all(feature = "udp", target_os = "linux"))]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mpring::udp::steer::{QuicSteering, ShardCids};
use mpring::udp::{
    ConfigError, Listeners, ListenersError, UdpMeta, UdpStats, MAX_COALESCE, MAX_LISTENERS,
};
use mpring::{Consumer, Producer, Ring};

const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCAL6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A datagram that says who sent it and which one it is, and can be
/// checked whole: sender (1 byte), sequence (4), then a pattern.
fn datagram(sender: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len.max(5)];
    d[0] = sender;
    d[1..5].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in d[5..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8).wrapping_mul(7) ^ sender;
    }
    d.truncate(len.max(5));
    d
}

fn check(d: &[u8]) -> (u8, u32) {
    let (sender, seq) = (d[0], u32::from_le_bytes(d[1..5].try_into().unwrap()));
    assert_eq!(
        d,
        &datagram(sender, seq, d.len())[..],
        "datagram {sender}/{seq} corrupted"
    );
    (sender, seq)
}

/// Reads entries until `want` datagrams arrived or 5 s passed; returns
/// them with their records.
fn collect(consumer: &mut Consumer<UdpMeta>, want: usize) -> Got {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut datagrams = 0;
    while datagrams < want && Instant::now() < deadline {
        if consumer.wait_timeout(Duration::from_millis(50)).is_ok() {
            consumer.read_batch_meta(64, |meta, payload| {
                datagrams += meta.datagrams(payload.len());
                got.push((*meta, payload.to_vec()));
            });
        }
    }
    got
}

fn sender(ip: IpAddr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind a sender")
}

/// Binds a sender for IPv6, or says why the machine has no IPv6 loopback.
fn sender6() -> Option<UdpSocket> {
    match UdpSocket::bind(SocketAddr::new(LOCAL6, 0)) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("no IPv6 loopback here ({e}): the IPv6 case is not run");
            None
        }
    }
}

fn round_trip(ip: IpAddr, sender: UdpSocket) {
    let (producer, mut consumer) = ring(1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(ip, 0))
        .listeners(2)
        .spawn(producer)
        .unwrap();
    let to = listeners.local_addr();
    assert_eq!(to.ip(), ip);
    for seq in 0..200u32 {
        sender
            .send_to(&datagram(1, seq, 20 + seq as usize * 7), to)
            .unwrap();
    }
    let got = collect(&mut consumer, 200);
    let mut seqs: Vec<u32> = got
        .iter()
        .map(|(meta, payload)| {
            assert_eq!(meta.source, sender.local_addr().unwrap());
            assert_eq!(meta.destination, Some(ip));
            assert_eq!(meta.segment_size, 0);
            assert!(meta.listener < 2);
            check(payload).1
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "every datagram once");
    let stats = listeners.shutdown();
    assert_eq!((stats.datagrams, stats.entries), (200, 200));
    assert_eq!((stats.full_drops, stats.truncated, stats.errors), (0, 0, 0));
    // One ring: its counters are the totals, nothing is steered.
    assert_eq!(stats.rings.len(), 1);
    assert_eq!(
        (stats.rings[0].datagrams, stats.rings[0].entries),
        (200, 200)
    );
    assert_eq!(stats.out_of_range, 0);
    assert!(stats.receive_calls >= 1 && stats.receive_calls <= 200);
}

#[test]
fn ipv4_datagrams_arrive_whole_with_their_records() {
    round_trip(LOCAL4, sender(LOCAL4));
}

#[test]
fn ipv6_datagrams_arrive_whole_with_their_records() {
    if let Some(s) = sender6() {
        round_trip(LOCAL6, s);
    }
}

#[test]
fn ecn_bits_reach_the_record() {
    let (producer, mut consumer) = ring(1 << 16);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .spawn(producer)
        .unwrap();
    let s = sender(LOCAL4);
    for (seq, ecn) in [(0u32, 0b01), (1, 0b10), (2, 0b11)] {
        let tos: libc::c_int = ecn;
        // SAFETY: a valid option value on an open socket.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_TOS,
                (&tos as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        s.send_to(&datagram(0, seq, 30), listeners.local_addr())
            .unwrap();
    }
    let got = collect(&mut consumer, 3);
    let ecn: Vec<(u32, u8)> = got.iter().map(|(m, p)| (check(p).1, m.ecn)).collect();
    assert_eq!(ecn, [(0, 1), (1, 2), (2, 3)]);
}

#[test]
fn a_datagram_longer_than_the_buffers_is_counted_never_delivered() {
    let (producer, mut consumer) = ring(1 << 16);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .max_datagram(100)
        .spawn(producer)
        .unwrap();
    let s = sender(LOCAL4);
    let to = listeners.local_addr();
    s.send_to(&datagram(0, 0, 100), to).unwrap(); // fits exactly
    s.send_to(&datagram(0, 1, 101), to).unwrap(); // one byte too long
    s.send_to(&datagram(0, 2, 50), to).unwrap();
    let got = collect(&mut consumer, 2);
    let seqs: Vec<u32> = got.iter().map(|(_, p)| check(p).1).collect();
    assert_eq!(seqs, [0, 2]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while listeners.stats().truncated == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let stats = listeners.shutdown();
    assert_eq!((stats.datagrams, stats.entries, stats.truncated), (3, 2, 1));
    assert!(consumer.read().is_none(), "nothing else came through");
}

#[test]
fn a_full_ring_drops_and_counts_and_corrupts_nothing() {
    // 64 KiB ring, 1,000-byte datagrams: about 30 fit before the consumer
    // reads anything.
    let (producer, mut consumer) = ring(1 << 16);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .spawn(producer)
        .unwrap();
    let s = sender(LOCAL4);
    let sent = 300u32;
    for seq in 0..sent {
        s.send_to(&datagram(0, seq, 1000), listeners.local_addr())
            .unwrap();
        if seq % 50 == 49 {
            thread::sleep(Duration::from_millis(5)); // stay under the socket buffer
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = |s: &UdpStats| s.datagrams + s.kernel_drops >= u64::from(sent);
    while !done(&listeners.stats()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let stats = listeners.shutdown();
    assert!(stats.full_drops > 0, "the ring filled up: {stats:?}");
    let mut last = None;
    let mut delivered = 0;
    while let Some(entry) = consumer.read() {
        let (_, seq) = check(&entry);
        assert!(last < Some(seq), "one listener: in order");
        last = Some(seq);
        delivered += 1;
    }
    assert_eq!(delivered, stats.entries);
    assert_eq!(stats.entries + stats.full_drops, stats.datagrams);
    assert!(
        consumer.is_disconnected(),
        "shutdown dropped every producer handle"
    );
}

/// Senders 0 and 1 stand for new connections (sheddable) and established
/// ones. Above the high-water mark (half of a 64 KiB ring, nothing read)
/// only established datagrams get in, until the ring is full; shed ones
/// are counted apart from full drops, and nothing is corrupted.
#[test]
fn above_the_high_water_mark_sheddable_datagrams_are_shed() {
    fn new_connection(d: &[u8]) -> bool {
        d[0] == 0
    }
    let (producer, mut consumer) = Ring::builder(1 << 16)
        .metadata::<UdpMeta>()
        .high_water_mark(1 << 15)
        .build()
        .unwrap();
    let watch = producer.clone();
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .shed(new_connection)
        .spawn(producer)
        .unwrap();
    let s = sender(LOCAL4);
    let sent = 200u32;
    for seq in 0..sent {
        let who = (seq % 2) as u8;
        s.send_to(&datagram(who, seq, 1000), listeners.local_addr())
            .unwrap();
        if seq % 20 == 19 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = |s: &UdpStats| s.datagrams + s.kernel_drops >= u64::from(sent);
    while !done(&listeners.stats()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let stats = listeners.shutdown();
    assert!(stats.shed > 0 && stats.full_drops > 0, "{stats:?}");
    assert_eq!(watch.refused_count(), stats.shed);
    assert_eq!(
        stats.entries + stats.shed + stats.full_drops,
        stats.datagrams
    );
    let entry_room = 1000 + 8 + std::mem::size_of::<UdpMeta>().next_multiple_of(8);
    let (mut new, mut established, mut used) = (0, 0, 0);
    while let Some(entry) = consumer.read() {
        let (who, _) = check(&entry);
        if who == 0 {
            new += 1;
            // Admitted only below the mark, looked at once per batch of
            // up to 16: what came before it fits in the mark and a batch.
            assert!(
                used < (1 << 15) + 16 * entry_room,
                "a new connection admitted above the mark"
            );
        } else {
            established += 1;
        }
        used += entry_room;
    }
    assert_eq!(new + established, stats.entries);
    assert!(established > new, "established {established}, new {new}");
}

/// A shed function that panics (a caller's bug) on some datagrams does not
/// end the listener and loses nothing: those datagrams are kept (counted in
/// `shed_panics`), the rest shed or kept as the function says; each panic's
/// payload is dropped, not leaked.
#[test]
fn a_panicking_shed_function_keeps_the_datagram_and_the_listener() {
    static PAYLOADS_DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Payload;
    impl Drop for Payload {
        fn drop(&mut self) {
            PAYLOADS_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn picky(d: &[u8]) -> bool {
        match d[0] {
            // A non-string payload: the hook prints "Box<dyn Any>" (this
            // panic is expected by the test).
            7 => std::panic::panic_any(Payload),
            who => who == 0,
        }
    }
    let (producer, mut consumer) = Ring::builder(1 << 20)
        .metadata::<UdpMeta>()
        .high_water_mark(1)
        .build()
        .unwrap();
    // One entry left unread keeps the ring above its mark from the start.
    let record = UdpMeta {
        source: SocketAddr::new(LOCAL4, 1),
        destination: None,
        ecn: 0,
        segment_size: 0,
        received: Instant::now(),
        listener: 0,
    };
    producer.push_with(b"first", record).unwrap();
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .shed(picky)
        .spawn(producer)
        .unwrap();
    let s = sender(LOCAL4);
    let whos = [0u8, 1, 7];
    for seq in 0..30u32 {
        let who = whos[seq as usize % whos.len()];
        s.send_to(&datagram(who, seq, 100), listeners.local_addr())
            .unwrap();
    }
    wait_counted(&listeners, 30);
    let stats = listeners.shutdown();
    assert_eq!(stats.kernel_drops, 0, "{stats:?}");
    assert_eq!(
        (
            stats.datagrams,
            stats.shed,
            stats.shed_panics,
            stats.entries
        ),
        (30, 10, 10, 20),
        "{stats:?}"
    );
    assert_eq!(PAYLOADS_DROPPED.load(Ordering::Relaxed), 10);
    assert_eq!(&consumer.read().unwrap()[..], b"first");
    let mut seqs = Vec::new();
    while let Some(entry) = consumer.read() {
        let (who, seq) = check(&entry);
        assert!(who == 1 || who == 7, "sender {who} was shed");
        seqs.push(seq);
    }
    let kept: Vec<u32> = (0..30).filter(|seq| seq % 3 != 0).collect();
    assert_eq!(seqs, kept, "every kept datagram once, in order");
}

/// A flood that fills every `recvmmsg` batch keeps a listener receiving
/// without a pause; a shutdown still ends it within the stop check's
/// wait, not when the flood ends.
#[test]
fn shutdown_during_a_flood_that_fills_every_batch_returns_promptly() {
    let (producers, _consumers) = rings(2, 1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .batch(1) // every receive fills its batch while datagrams wait
        // A slow listener: the senders outpace it, so datagrams always wait.
        .spawn_steered(producers, |_, d| {
            thread::sleep(Duration::from_micros(50));
            usize::from(d[0])
        })
        .unwrap();
    let to = listeners.local_addr();
    let flooding = Arc::new(AtomicUsize::new(1));
    let senders: Vec<_> = (0..2u8)
        .map(|id| {
            let flooding = flooding.clone();
            thread::spawn(move || {
                let s = sender(LOCAL4);
                // At most 10 s: a listener that ignores the stop flag
                // until the flood ends makes the shutdown last that long.
                let end = Instant::now() + Duration::from_secs(10);
                let mut seq = 0u32;
                while flooding.load(Ordering::Relaxed) == 1 && Instant::now() < end {
                    let _ = s.send_to(&datagram(id, seq, 64), to);
                    seq = seq.wrapping_add(1);
                }
            })
        })
        .collect();
    // Until the listener is in a drain that the flood keeps going.
    let deadline = Instant::now() + Duration::from_secs(5);
    while listeners.stats().datagrams < 500 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let stats = listeners.shutdown();
    let took = start.elapsed();
    flooding.store(0, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert!(stats.datagrams >= 500, "no flood: {stats:?}");
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?} with the flood going on"
    );
}

#[test]
fn shutdown_under_load_joins_every_listener_and_keeps_what_was_committed() {
    let (producer, mut consumer) = ring(1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .listeners(4)
        .spawn(producer)
        .unwrap();
    let to = listeners.local_addr();
    let senders: Vec<_> = (0..4u8)
        .map(|id| {
            thread::spawn(move || {
                let s = sender(LOCAL4);
                let end = Instant::now() + Duration::from_millis(300);
                let mut seq = 0u32;
                while Instant::now() < end {
                    // Loopback refuses only when buffers are full.
                    if s.send_to(&datagram(id, seq, 64 + (seq % 1200) as usize), to)
                        .is_ok()
                    {
                        seq += 1;
                    }
                }
                seq
            })
        })
        .collect();
    let mut handled = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(100) {
        consumer.read_batch_meta(64, |_, p| {
            check(p);
            handled += 1;
        });
    }
    let stats = listeners.shutdown(); // senders still sending
    for s in senders {
        s.join().unwrap();
    }
    while let Some(entry) = consumer.read() {
        check(&entry);
        handled += 1;
    }
    assert!(consumer.is_disconnected());
    assert_eq!(
        handled, stats.entries,
        "every committed entry was read, whole"
    );
    assert_eq!(
        stats.entries + stats.full_drops + stats.truncated,
        stats.datagrams
    );
    assert!(stats.datagrams > 0);
}

/// Sends `segments` datagrams of `size` bytes in one `sendmsg` with
/// `UDP_SEGMENT` (GSO); `false` when the kernel has no GSO.
fn send_gso(s: &UdpSocket, to: SocketAddr, payload: &[u8], size: u16) -> bool {
    let SocketAddr::V4(to) = to else {
        unreachable!()
    };
    let mut addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid msghdr; every pointer set below points at
    // a live local of the right size for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
    // SAFETY: the control room above holds one message with a u16.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
    // SAFETY: a valid msghdr (see above) on an open socket.
    let r = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) };
    if r < 0 {
        eprintln!(
            "no UDP GSO here ({}): the GRO case is not run",
            io::Error::last_os_error()
        );
        return false;
    }
    assert_eq!(r as usize, payload.len());
    true
}

/// Entries read: each record with its payload.
type Got = Vec<(UdpMeta, Vec<u8>)>;

/// One GSO send of five datagrams to a group with GRO on or off: whether
/// GRO is on, the entries read, the counters.
fn gso_run(gro: bool) -> Option<(bool, Got, UdpStats)> {
    let (producer, mut consumer) = ring(1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .gro(gro)
        .spawn(producer)
        .unwrap();
    let s = sender(LOCAL4);
    // Four datagrams of 1,000 bytes and a last one of 500, in one send.
    let mut payload = Vec::new();
    for seq in 0..5u32 {
        payload.extend(datagram(9, seq, if seq < 4 { 1000 } else { 500 }));
    }
    if !send_gso(&s, listeners.local_addr(), &payload, 1000) {
        return None;
    }
    let got = collect(&mut consumer, 5);
    let on = listeners.gro();
    Some((on, got, listeners.shutdown()))
}

#[test]
fn gro_on_one_entry_holds_the_coalesced_datagrams() {
    let Some((on, got, stats)) = gso_run(true) else {
        return;
    };
    let datagrams: Vec<u32> = got
        .iter()
        .flat_map(|(meta, payload)| {
            meta.segments(payload)
                .map(|d| check(d).1)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(datagrams, [0, 1, 2, 3, 4], "every segment, in order, whole");
    assert_eq!(stats.datagrams, 5);
    if on {
        assert_eq!(got.len(), 1, "one entry for the whole GSO send");
        assert_eq!(got[0].0.segment_size, 1000);
        assert_eq!(stats.entries, 1);
    } else {
        eprintln!("this kernel has no UDP GRO: datagrams arrived one by one");
    }
}

#[test]
fn gro_off_one_entry_per_datagram() {
    let Some((on, got, stats)) = gso_run(false) else {
        return;
    };
    assert!(!on);
    let seqs: Vec<u32> = got
        .iter()
        .map(|(meta, payload)| {
            assert_eq!(meta.segment_size, 0);
            check(payload).1
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert_eq!((stats.datagrams, stats.entries), (5, 5));
}

/// Each option that can never work is its own `ConfigError` variant,
/// refused before any socket exists; what the system refuses is
/// `ListenersError::Io`; both convert into `io::Error` for `?` in an
/// `io::Result` function.
#[test]
fn bad_options_are_typed_errors_not_panics() {
    let build = || ring(1 << 16).0;
    let addr = SocketAddr::new(LOCAL4, 0);
    let config = |r: Result<Listeners, ListenersError>| match r {
        Err(ListenersError::Config(e)) => e,
        Err(e) => panic!("not a configuration error: {e}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(
        config(Listeners::builder(addr).listeners(0).spawn(build())),
        ConfigError::NoListeners
    );
    let too_many = config(
        Listeners::builder(addr)
            .listeners(MAX_LISTENERS + 1)
            .spawn(build()),
    );
    assert_eq!(
        too_many,
        ConfigError::TooManyListeners {
            listeners: MAX_LISTENERS + 1,
            max: MAX_LISTENERS
        }
    );
    assert!(too_many.to_string().contains("at most 65536"));
    assert_eq!(
        config(Listeners::builder(addr).batch(0).spawn(build())),
        ConfigError::Batch {
            batch: 0,
            max: 1024
        }
    );
    assert_eq!(
        config(Listeners::builder(addr).batch(1025).spawn(build())),
        ConfigError::Batch {
            batch: 1025,
            max: 1024
        }
    );
    assert_eq!(
        config(Listeners::builder(addr).max_datagram(0).spawn(build())),
        ConfigError::ZeroMaxDatagram
    );
    let long = MAX_COALESCE + Duration::from_nanos(1);
    let too_long = config(Listeners::builder(addr).coalesce(long).spawn(build()));
    assert_eq!(
        too_long,
        ConfigError::Coalesce {
            wait: long,
            max: MAX_COALESCE
        }
    );
    assert!(too_long.to_string().contains("coalescing wait"));
    // GRO buffers of 64 KiB never fit a 64 KiB ring's largest payload.
    let too_small = config(Listeners::builder(addr).gro(true).spawn(build()));
    assert!(
        matches!(too_small, ConfigError::RingTooSmall { buffer: 65535, max_payload } if max_payload < 65535),
        "{too_small:?}"
    );
    assert!(too_small.to_string().contains("largest payload"));
    // An address nobody can bind here: the system's refusal.
    let taken = Listeners::builder(SocketAddr::new("192.0.2.1".parse().unwrap(), 0)).spawn(build());
    let Err(ListenersError::Io(e)) = taken else {
        panic!("binding 192.0.2.1 should fail with an io::Error");
    };
    assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable);
    // Into io::Error, for `?` in io::Result code.
    let as_io: io::Error = ListenersError::Config(ConfigError::NoListeners).into();
    assert_eq!(as_io.kind(), io::ErrorKind::InvalidInput);
}

/// Sends `n` datagrams 2 ms apart after one that finds the listener idle;
/// returns the `recvmmsg` calls and coalescing waits the `n` took and how
/// long sending them took, after checking that every datagram arrived
/// whole, in order.
fn spaced_datagrams(coalesce: Duration, n: u32) -> (u64, u64, Duration) {
    let (producer, mut consumer) = ring(1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .coalesce(coalesce)
        .coalesce_after(1) // every wake-up here receives one datagram
        .spawn(producer)
        .unwrap();
    let to = listeners.local_addr();
    let s = sender(LOCAL4);
    s.send_to(&datagram(1, 0, 100), to).unwrap();
    let first = collect(&mut consumer, 1);
    assert_eq!(first.len(), 1);
    let before = listeners.stats();
    let start = Instant::now();
    for seq in 1..=n {
        thread::sleep(Duration::from_millis(2));
        s.send_to(&datagram(1, seq, 100), to).unwrap();
    }
    let span = start.elapsed();
    let got = collect(&mut consumer, n as usize);
    let seqs: Vec<u32> = got.iter().map(|(_, d)| check(d).1).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let after = listeners.shutdown();
    (
        after.receive_calls - before.receive_calls,
        after.coalescing_waits - before.coalescing_waits,
        span,
    )
}

#[test]
fn coalescing_gathers_datagrams_that_arrive_during_the_wait() {
    // Ten datagrams 2 ms apart against waits of 10 ms: a `recvmmsg` per
    // wait that they span, and one more for a wait that ends in a gap.
    let (calls, waits, span) = spaced_datagrams(MAX_COALESCE, 10);
    let bound = 2 + span.as_micros() / MAX_COALESCE.as_micros();
    assert!(
        u128::from(calls) <= bound,
        "{calls} receive calls for 10 datagrams sent over {span:?}"
    );
    // At least one wait; not one per call: a sender held up for longer
    // than a wait (a busy machine) lets a wait find nothing, and the next
    // datagram then finds the listener polling.
    assert!(waits >= 1, "{waits} waits for {calls} receive calls");
    // Without coalescing an idle listener wakes for each of them.
    let (calls, waits, _) = spaced_datagrams(Duration::ZERO, 10);
    assert!(calls >= 6, "only {calls} receive calls without coalescing");
    assert_eq!(waits, 0);
}

/// A listener on a ring of 1 MiB that coalesces with `wait`.
fn coalescing_listener(wait: Duration) -> (Listeners, Consumer<UdpMeta>) {
    let (producer, consumer) = ring(1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .coalesce(wait)
        .spawn(producer)
        .unwrap();
    (listeners, consumer)
}

#[test]
fn coalescing_never_holds_back_one_datagram_at_a_time() {
    // A peer that sends its next datagram only once the last one arrived
    // (a request and its answer): no wake-up receives 8, so no wait.
    let (listeners, mut consumer) = coalescing_listener(MAX_COALESCE);
    let to = listeners.local_addr();
    let s = sender(LOCAL4);
    for seq in 0..20 {
        s.send_to(&datagram(1, seq, 100), to).unwrap();
        let got = collect(&mut consumer, 1);
        assert_eq!(check(&got[0].1).1, seq);
    }
    assert_eq!(listeners.stats().coalescing_waits, 0);
    // A stream that outpaces the listener: some wake-up finds
    // DEFAULT_COALESCE_AFTER datagrams or more, and it coalesces.
    let n = 2_000;
    for seq in 20..20 + n {
        s.send_to(&datagram(1, seq, 100), to).unwrap();
    }
    let got = collect(&mut consumer, n as usize);
    let seqs: Vec<u32> = got.iter().map(|(_, d)| check(d).1).collect();
    assert_eq!(seqs, (20..20 + n).collect::<Vec<_>>());
    let stats = listeners.shutdown();
    assert!(
        stats.coalescing_waits >= 1,
        "{n} datagrams in a row never coalesced: {stats:?}"
    );
}

#[test]
fn a_coalescing_listener_wakes_a_sleeping_consumer_after_each_drain() {
    // While coalescing, a listener wakes a ring's consumer once per drain,
    // not after each batch: the wake-up at the drain's end must come, or a
    // consumer asleep on what the drain pushed sleeps on.
    let (listeners, mut consumer) = coalescing_listener(MAX_COALESCE);
    let to = listeners.local_addr();
    for round in 0..4u32 {
        let s = sender(LOCAL4);
        // 40 datagrams (three batches of 16) once the consumer sleeps: its
        // wait polls for microseconds only.
        let sending = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            for seq in 0..40 {
                s.send_to(&datagram(1, round * 40 + seq, 100), to).unwrap();
            }
        });
        let mut seqs = Vec::new();
        while seqs.len() < 40 {
            // A wait ends with a wake-up within a drain and its waits (10 ms
            // each, and the timer's slack); one that lasts seconds missed it
            // and saw the entries only when it timed out.
            let waiting = Instant::now();
            let woken = consumer.wait_timeout(Duration::from_secs(3));
            assert!(
                woken.is_ok() && waiting.elapsed() < Duration::from_secs(2),
                "round {round}: asleep {:?} with {} of 40 datagrams ({woken:?})",
                waiting.elapsed(),
                seqs.len()
            );
            consumer.read_batch(64, |d| seqs.push(check(d).1));
        }
        assert_eq!(seqs, (round * 40..round * 40 + 40).collect::<Vec<_>>());
        sending.join().unwrap();
    }
    listeners.shutdown();
}

#[test]
fn the_stream_ends_when_the_listeners_are_gone() {
    let (producer, mut consumer) = ring(1 << 16);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .listeners(3)
        .spawn(producer)
        .unwrap();
    drop(listeners);
    assert_eq!(
        consumer.wait_timeout(Duration::from_secs(5)),
        Err(mpring::WaitError::Disconnected)
    );
}

/// `n` rings of `size` bytes: their producers and consumers.
fn rings(n: usize, size: usize) -> (Vec<Producer<UdpMeta>>, Vec<Consumer<UdpMeta>>) {
    (0..n).map(|_| ring(size)).unzip()
}

/// A ring of `size` bytes with `UdpMeta` records.
fn ring(size: usize) -> (Producer<UdpMeta>, Consumer<UdpMeta>) {
    Ring::builder(size).metadata::<UdpMeta>().build().unwrap()
}

/// Steers by the sender byte of `datagram`'s payload, modulo `n`.
fn by_sender(n: usize) -> impl Fn(&UdpMeta, &[u8]) -> usize + Send + Sync + 'static {
    move |_, d| d.first().map_or(0, |&b| usize::from(b) % n)
}

/// Waits until the listeners counted `sent` datagrams (or 5 s passed).
fn wait_counted(listeners: &Listeners, sent: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = |s: &UdpStats| s.datagrams + s.kernel_drops >= sent;
    while !done(&listeners.stats()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

/// 2, 3 and 4 rings, two listeners, datagrams steered by their sender
/// byte: each arrives once, whole, in its ring, with its record; each
/// ring's counters say what it got.
#[test]
fn steered_datagrams_arrive_whole_in_their_ring() {
    for n in 2..=4usize {
        let (producers, mut consumers) = rings(n, 1 << 20);
        let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
            .listeners(2)
            .spawn_steered(producers, by_sender(n))
            .unwrap();
        assert_eq!(listeners.rings(), n);
        let s = sender(LOCAL4);
        let to = listeners.local_addr();
        let senders = 7u8; // not a multiple of n: rings get different counts
        let mut want = vec![Vec::new(); n];
        for seq in 0..210u32 {
            let who = (seq % u32::from(senders)) as u8;
            s.send_to(&datagram(who, seq, 20 + (seq as usize * 13) % 1200), to)
                .unwrap();
            want[usize::from(who) % n].push(seq);
            if seq % 50 == 49 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        for (ring, consumer) in consumers.iter_mut().enumerate() {
            let got = collect(consumer, want[ring].len());
            let mut seqs: Vec<u32> = got
                .iter()
                .map(|(meta, payload)| {
                    assert_eq!(meta.source, s.local_addr().unwrap());
                    assert_eq!(meta.destination, Some(LOCAL4));
                    assert_eq!(meta.segment_size, 0);
                    assert!(meta.listener < 2);
                    let (who, seq) = check(payload);
                    assert_eq!(usize::from(who) % n, ring, "datagram {seq} in ring {ring}");
                    seq
                })
                .collect();
            seqs.sort_unstable();
            assert_eq!(
                seqs, want[ring],
                "{n} rings: ring {ring} got each of its own once"
            );
        }
        let stats = listeners.shutdown();
        assert_eq!(stats.rings.len(), n);
        for (ring, r) in stats.rings.iter().enumerate() {
            let own = want[ring].len() as u64;
            assert_eq!(
                (r.datagrams, r.entries, r.full_drops, r.shed),
                (own, own, 0, 0)
            );
        }
        assert_eq!(
            (stats.datagrams, stats.entries, stats.full_drops),
            (210, 210, 0)
        );
        assert_eq!(stats.out_of_range, 0);
        for consumer in &mut consumers {
            assert!(consumer.read().is_none(), "nothing else came through");
        }
    }
}

/// Ring 0 (64 KiB, never read) fills up; ring 1 (1 MiB) gets every one of
/// its datagrams: a full ring drops and counts only its own.
#[test]
fn a_full_ring_drops_only_its_own_datagrams() {
    let (mut producers, mut consumers) = rings(1, 1 << 16);
    let (big, mut big_consumer) = ring(1 << 20);
    producers.push(big);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .spawn_steered(producers, by_sender(2))
        .unwrap();
    let s = sender(LOCAL4);
    let sent = 300u32;
    for seq in 0..sent {
        s.send_to(
            &datagram((seq % 2) as u8, seq, 1000),
            listeners.local_addr(),
        )
        .unwrap();
        if seq % 50 == 49 {
            thread::sleep(Duration::from_millis(5)); // stay under the socket buffer
        }
    }
    wait_counted(&listeners, u64::from(sent));
    let stats = listeners.shutdown();
    assert_eq!(stats.kernel_drops, 0, "{stats:?}");
    let (full, other) = (stats.rings[0], stats.rings[1]);
    assert!(full.full_drops > 0, "ring 0 filled up: {stats:?}");
    assert_eq!(full.entries + full.full_drops, full.datagrams);
    assert_eq!(full.datagrams, u64::from(sent / 2));
    assert_eq!(
        (other.datagrams, other.entries, other.full_drops),
        (150, 150, 0),
        "ring 1 got everything"
    );
    assert_eq!(stats.full_drops, full.full_drops);
    let mut last = None;
    let mut delivered = 0;
    while let Some(entry) = consumers[0].read() {
        let (who, seq) = check(&entry);
        assert_eq!(who, 0);
        assert!(last < Some(seq), "one listener: in order");
        last = Some(seq);
        delivered += 1;
    }
    assert_eq!(delivered, full.entries);
    let mut seqs = Vec::new();
    while let Some(entry) = big_consumer.read() {
        let (who, seq) = check(&entry);
        assert_eq!(who, 1);
        seqs.push(seq);
    }
    assert_eq!(seqs, (0..sent).filter(|s| s % 2 == 1).collect::<Vec<_>>());
}

/// One GSO send of six segments (the last one short) whose sender bytes
/// steer them to rings 0, 0, 1, 0, 1, 1. With GRO the kernel hands them
/// over as one entry, which the listener splits where the ring changes:
/// ring 0 gets [0 1] (segment size 1,000) and [3] (one datagram), ring 1
/// gets [2] and [4 5] (segment size 1,000, the short segment last). The
/// steering function sees one datagram at a time. Without GRO, each
/// segment is a datagram of its own, steered alone.
#[test]
fn a_gro_entry_is_split_where_its_segments_change_ring() {
    let (producers, mut consumers) = rings(2, 1 << 20);
    let whole = Arc::new(AtomicUsize::new(0));
    let seen = whole.clone();
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .gro(true)
        .spawn_steered(producers, move |meta, d| {
            if meta.segment_size != 0 {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            usize::from(d[0]) % 2
        })
        .unwrap();
    let s = sender(LOCAL4);
    let plan = [
        (0u8, 1000usize),
        (0, 1000),
        (1, 1000),
        (0, 1000),
        (1, 1000),
        (1, 500),
    ];
    let mut payload = Vec::new();
    for (seq, &(who, len)) in plan.iter().enumerate() {
        payload.extend(datagram(who, seq as u32, len));
    }
    if !send_gso(&s, listeners.local_addr(), &payload, 1000) {
        return;
    }
    let got: Vec<Got> = consumers.iter_mut().map(|c| collect(c, 3)).collect();
    let on = listeners.gro();
    let stats = listeners.shutdown();
    assert_eq!(
        whole.load(Ordering::Relaxed),
        0,
        "steered one datagram at a time"
    );
    // Whatever the kernel did: each ring holds its segments, in order, whole.
    for (ring, entries) in got.iter().enumerate() {
        let seqs: Vec<u32> = entries
            .iter()
            .flat_map(|(meta, p)| meta.segments(p).map(check).collect::<Vec<_>>())
            .map(|(who, seq)| {
                assert_eq!(usize::from(who) % 2, ring);
                seq
            })
            .collect();
        let want: &[u32] = if ring == 0 { &[0, 1, 3] } else { &[2, 4, 5] };
        assert_eq!(seqs, want, "ring {ring}");
        assert_eq!(stats.rings[ring].datagrams, 3);
        assert_eq!(stats.rings[ring].full_drops, 0);
    }
    assert_eq!(stats.datagrams, 6);
    let shape = |entries: &Got| -> Vec<(u16, usize)> {
        entries
            .iter()
            .map(|(m, p)| (m.segment_size, p.len()))
            .collect()
    };
    if on {
        assert_eq!(shape(&got[0]), [(1000, 2000), (0, 1000)], "ring 0's parts");
        assert_eq!(shape(&got[1]), [(0, 1000), (1000, 1500)], "ring 1's parts");
        assert_eq!(
            (
                stats.entries,
                stats.rings[0].entries,
                stats.rings[1].entries
            ),
            (4, 2, 2)
        );
    } else {
        eprintln!("this kernel has no UDP GRO: the segments arrived one by one, nothing to split");
        assert!(got
            .iter()
            .flatten()
            .all(|(m, p)| m.segment_size == 0 && p.len() <= 1000));
        assert_eq!(stats.entries, 6);
    }
}

/// A steering function that returns an index of no ring: the datagram goes
/// to ring `index % N` and is counted in `out_of_range`; nothing panics,
/// nothing is lost.
#[test]
fn an_out_of_range_steering_index_goes_modulo_n_and_is_counted() {
    let (producers, mut consumers) = rings(3, 1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .spawn_steered(producers, |_, d| match d[0] {
            9 => usize::MAX, // 2^64 - 1 is a multiple of 3: ring 0
            who => usize::from(who),
        })
        .unwrap();
    let s = sender(LOCAL4);
    let whos = [0u8, 1, 2, 5, 9];
    for seq in 0..50u32 {
        let who = whos[seq as usize % whos.len()];
        s.send_to(&datagram(who, seq, 100), listeners.local_addr())
            .unwrap();
    }
    let want: [&[u8]; 3] = [&[0, 9], &[1], &[2, 5]];
    for (ring, consumer) in consumers.iter_mut().enumerate() {
        let got = collect(consumer, want[ring].len() * 10);
        assert_eq!(got.len(), want[ring].len() * 10, "ring {ring}");
        for (_, p) in &got {
            assert!(want[ring].contains(&check(p).0), "ring {ring}");
        }
    }
    let stats = listeners.shutdown();
    assert_eq!(stats.out_of_range, 20, "{stats:?}");
    let entries: Vec<u64> = stats.rings.iter().map(|r| r.entries).collect();
    assert_eq!(entries, [20, 10, 20]);
    assert_eq!(
        (stats.datagrams, stats.entries, stats.full_drops),
        (50, 50, 0)
    );
}

/// A steering function that panics (a caller's bug) does not end the
/// listener: the datagram goes where an index of `usize::MAX` goes (ring 0
/// of 3) and is counted; every later datagram is steered as before.
#[test]
fn a_panicking_steering_function_does_not_stop_the_listener() {
    let (producers, mut consumers) = rings(3, 1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .spawn_steered(producers, |_, d| match d[0] {
            7 => panic!("a steering bug (this panic is expected by the test)"),
            who => usize::from(who),
        })
        .unwrap();
    let s = sender(LOCAL4);
    let whos = [1u8, 7, 2, 7, 0];
    for seq in 0..50u32 {
        let who = whos[seq as usize % whos.len()];
        s.send_to(&datagram(who, seq, 100), listeners.local_addr())
            .unwrap();
    }
    // Ring 0: the 10 datagrams of 0 and the 20 that panicked; rings 1 and
    // 2: 10 each, also those sent after the panics.
    let want: [&[u8]; 3] = [&[0, 7], &[1], &[2]];
    let counts = [30, 10, 10];
    for (ring, consumer) in consumers.iter_mut().enumerate() {
        let got = collect(consumer, counts[ring]);
        assert_eq!(got.len(), counts[ring], "ring {ring}");
        for (_, p) in &got {
            assert!(want[ring].contains(&check(p).0), "ring {ring}");
        }
    }
    let stats = listeners.shutdown();
    assert_eq!(stats.steer_panics, 20, "{stats:?}");
    assert_eq!(stats.out_of_range, 20, "{stats:?}");
    assert_eq!((stats.datagrams, stats.entries), (50, 50));
}

/// End to end with QUIC steering: 4 rings, short-header-looking datagrams
/// (fixed bit set and cleared) carrying CIDs generated for shard k land
/// in ring k; a client's Initial (its own 20-byte DCID) goes to one ring
/// every time it is sent.
#[test]
fn quic_steering_sends_each_shards_cids_to_its_ring() {
    let cids = ShardCids::new(4, 8).unwrap();
    let steering = QuicSteering::new(cids);
    let (producers, mut consumers) = rings(4, 1 << 20);
    let listeners = Listeners::builder(SocketAddr::new(LOCAL4, 0))
        .listeners(2)
        .spawn_steered(producers, move |meta, d| steering.steer(meta, d))
        .unwrap();
    let s = sender(LOCAL4);
    let to = listeners.local_addr();
    let mut random = [0u8; 20];
    let mut want = vec![Vec::new(); 4];
    for seq in 0..200u32 {
        let shard = (seq * 7 % 4) as usize;
        for (i, b) in random.iter_mut().enumerate() {
            *b = (seq as u8)
                .wrapping_mul(31)
                .wrapping_add((i as u8).wrapping_mul(17));
        }
        let cid = cids.generate(shard, &random);
        let first = if seq % 2 == 0 { 0x40 } else { 0x00 } | (seq as u8 & 0x3f);
        let mut packet = vec![first];
        packet.extend_from_slice(&cid);
        packet.extend_from_slice(&seq.to_le_bytes());
        packet.resize(60 + seq as usize % 900, 0xa5);
        s.send_to(&packet, to).unwrap();
        want[shard].push(seq);
    }
    // A client's first flight: the same Initial sent three times.
    let mut initial = vec![0xc0, 0, 0, 0, 1, 20];
    initial.extend_from_slice(&[0x77; 20]);
    initial.extend_from_slice(&[0; 8]);
    initial.resize(1200, 0);
    for _ in 0..3 {
        s.send_to(&initial, to).unwrap();
    }
    let mut initials = Vec::new();
    for (ring, consumer) in consumers.iter_mut().enumerate() {
        let got = collect(consumer, want[ring].len());
        let mut seqs = Vec::new();
        for (meta, p) in &got {
            assert_eq!(meta.source, s.local_addr().unwrap());
            if p[0] & 0x80 != 0 {
                assert_eq!(p, &initial);
                initials.push(ring);
                continue;
            }
            assert_eq!(cids.shard_of(&p[1..9]), Some(ring), "a CID of shard {ring}");
            seqs.push(u32::from_le_bytes(p[9..13].try_into().unwrap()));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, want[ring], "shard {ring}'s datagrams");
    }
    // The Initials may still be on their way to a ring already read.
    let deadline = Instant::now() + Duration::from_secs(5);
    while initials.len() < 3 && Instant::now() < deadline {
        for (ring, consumer) in consumers.iter_mut().enumerate() {
            while let Some(entry) = consumer.read() {
                assert_eq!(&entry[..], &initial[..]);
                initials.push(ring);
            }
        }
    }
    let stats = listeners.shutdown();
    assert_eq!(initials.len(), 3, "{stats:?}");
    let ring = steering.ring_for(s.local_addr().unwrap(), &initial);
    assert_eq!(initials, [ring; 3], "every retransmit to one ring");
    assert_eq!(stats.rings[ring].datagrams, want[ring].len() as u64 + 3);
    assert_eq!(
        (stats.datagrams, stats.entries, stats.out_of_range),
        (203, 203, 0)
    );
}

/// The rings of a steered group that can never work are typed
/// `ConfigError`s, refused before any socket; the options alone are
/// checked first.
#[test]
fn bad_rings_are_typed_errors_not_panics() {
    let addr = SocketAddr::new(LOCAL4, 0);
    let config = |r: Result<Listeners, ListenersError>| match r {
        Err(ListenersError::Config(e)) => e,
        Err(e) => panic!("not a configuration error: {e}"),
        Ok(_) => panic!("accepted"),
    };
    let e = config(Listeners::builder(addr).spawn_steered(Vec::new(), by_sender(1)));
    assert_eq!(e, ConfigError::NoRings);
    assert!(e.to_string().contains("one ring"));
    // The options first: zero listeners with no rings.
    assert_eq!(
        config(
            Listeners::builder(addr)
                .listeners(0)
                .spawn_steered(Vec::new(), by_sender(1))
        ),
        ConfigError::NoListeners
    );
    // Two producers of one ring.
    let (mut producers, _consumers) = rings(2, 1 << 16);
    producers.push(producers[1].clone());
    let e = config(Listeners::builder(addr).spawn_steered(producers, by_sender(3)));
    assert_eq!(
        e,
        ConfigError::SameRing {
            first: 1,
            second: 2
        }
    );
    assert!(e.to_string().contains("same ring"));
    // GRO's 64 KiB buffers fit ring 0 (1 MiB) but not ring 1 (64 KiB).
    let (mut producers, _consumers) = rings(1, 1 << 20);
    producers.extend(rings(1, 1 << 16).0);
    let e = config(
        Listeners::builder(addr)
            .gro(true)
            .spawn_steered(producers, by_sender(2)),
    );
    assert!(
        matches!(e, ConfigError::SteeredRingTooSmall { ring: 1, buffer: 65535, max_payload } if max_payload < 65535),
        "{e:?}"
    );
    assert!(e.to_string().contains("ring 1"));
    // One ring is fine, and never steered.
    let (producers, _consumers) = rings(1, 1 << 16);
    let one = Listeners::builder(addr)
        .spawn_steered(producers, |_, _| unreachable!("one ring: never steered"))
        .unwrap();
    assert_eq!(one.rings(), 1);
}

/// A group steered in the kernel (`ShardCids::attach_reuseport_steering`):
/// every packet to shard k's CID reaches socket k, short and long headers,
/// the fixed bit set and cleared, from several client sockets (whose
/// 4-tuples the kernel would otherwise hash anywhere); a client's first
/// flight reaches one socket from every client socket.
#[test]
fn a_group_steered_in_the_kernel_delivers_each_cid_to_its_shard() {
    kernel_steering(LOCAL4);
}

#[test]
fn an_ipv6_group_steered_in_the_kernel_delivers_each_cid_to_its_shard() {
    if sender6().is_some() {
        kernel_steering(LOCAL6);
    }
}

fn kernel_steering(ip: IpAddr) {
    const SHARDS: usize = 4;
    let cids = ShardCids::new(SHARDS, 8).unwrap();
    let group = mpring::udp::reuseport_group(SocketAddr::new(ip, 0), SHARDS).unwrap();
    cids.attach_reuseport_steering(&group[0]).unwrap();
    let to = group[0].local_addr().unwrap();
    for socket in &group {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    let clients: Vec<UdpSocket> = (0..8).map(|_| sender(ip)).collect();
    // What socket `k` must receive next, in order, and what arrived.
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); SHARDS];
    let mut seq = 0u8;
    let send = |expected: &mut Vec<Vec<Vec<u8>>>, k: usize, client: &UdpSocket, p: Vec<u8>| {
        client.send_to(&p, to).unwrap();
        expected[k].push(p);
    };
    for (c, client) in clients.iter().enumerate() {
        for shard in 0..SHARDS {
            for first in [0x40u8, 0x00] {
                seq = seq.wrapping_add(1);
                let cid = cids.generate(shard, &[seq; 20]);
                let mut short = vec![first | (c as u8 & 0x3f)];
                short.extend_from_slice(&cid);
                short.extend_from_slice(&[seq; 24]);
                send(&mut expected, shard, client, short);
                let mut long = vec![0xc0 ^ first, 0, 0, 0, 1, 8];
                long.extend_from_slice(&cid);
                long.extend_from_slice(&[0, seq]);
                send(&mut expected, shard, client, long);
            }
        }
        // A client's first flight: a 20-byte DCID of its own, the same
        // from every client socket, by its first four bytes.
        let mut initial = vec![0xc3, 0, 0, 0, 1, 20];
        initial.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        initial.extend_from_slice(&[0xab; 16]);
        initial.extend_from_slice(&[0, c as u8]);
        send(&mut expected, 0x1234_5678 % SHARDS, client, initial);
    }
    for (k, socket) in group.iter().enumerate() {
        let mut buf = [0u8; 256];
        for (i, want) in expected[k].iter().enumerate() {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("socket {k}, datagram {i}: {e}"));
            assert_eq!(&buf[..n], &want[..], "socket {k}, datagram {i}");
        }
        socket.set_nonblocking(true).unwrap();
        assert_eq!(
            socket.recv(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "socket {k} got more than its shard's datagrams"
        );
    }
}
