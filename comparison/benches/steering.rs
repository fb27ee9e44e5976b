//! What steering by connection ID costs, on real packets.
//!
//! First a stock quinn client talks to a quinn server (shard CIDs, shard 1
//! of 4) through a recording relay on loopback: a handshake, 16 echoed
//! streams of 16 KiB and 200 QUIC datagrams. What the client sent is the
//! recording: Initial, Handshake and short-header packets, fixed bit
//! greased on about half.
//!
//! 1. `QuicSteering::steer` over the recording, many passes, 11 samples:
//!    nanoseconds per datagram (median, min, max).
//! 2. The listener's whole step, end to end: a sender replays the recording
//!    at a listener group (`sendmmsg`, 32 at a time, so that the listener
//!    finds full batches), once with one ring (no steering) and once with 4
//!    rings steered by CID (each batch steered, grouped by ring and handed
//!    over with one claim per ring; the CIDs' shard bytes rotated so that
//!    every batch touches every ring), rounds alternated. The listener
//!    thread's CPU time (`/proc/self/task/*/sched`) per datagram received,
//!    medians and their ratio.
//! 3. What one wake-up costs the thread that wakes: 1 or 4 threads parked,
//!    a waker that unparks every one asleep, then sleeps 300 µs (a
//!    coalescing listener's drain, without the datagrams), and for
//!    comparison 4 threads woken by one `FUTEX_WAKE` on a word they share
//!    (not what mpring does: its consumers park on their own threads).
//!    The waker's CPU time per wake-up (`CLOCK_THREAD_CPUTIME_ID`).
//!
//! ```text
//! cargo bench -p mpring-comparison --bench steering
//! STEERING_RINGS=4 cargo bench -p mpring-comparison --bench steering   # only 1 or only 4 rings (to profile one)
//! STEERING_COALESCE_US=300 cargo bench -p mpring-comparison --bench steering   # listeners that coalesce receives
//! STEERING_ROUNDS=15 cargo bench -p mpring-comparison --bench steering   # more listener rounds (default 5)
//! ```

#[path = "../../quic/tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpring::udp::steer::{QuicSteering, ShardCids};
use mpring::udp::{Listeners, UdpMeta};

const SHARDS: usize = 4;
const CID_LEN: usize = mpring_quic::SHARD_CID_LEN;

fn record() -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cids = ShardCids::new(SHARDS, CID_LEN).unwrap();
        let relayed = support::relay::Relayed::connect(cids, 1).await;
        let connection = relayed.connection.clone();
        assert_eq!(
            support::echo_streams(&connection, 16, 16 * 1024).await,
            16 * 16 * 1024
        );
        for i in 0..200u32 {
            let mut d = support::stream_bytes(u64::from(i), 100 + (i as usize * 53) % 1000);
            d[..4].copy_from_slice(&i.to_le_bytes());
            connection.send_datagram(d.into()).unwrap();
            let _ =
                tokio::time::timeout(Duration::from_millis(100), connection.read_datagram()).await;
        }
        let recorded = relayed.finish().await;
        recorded.into_iter().map(|(_, d)| d).collect()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// ns per datagram of `steer` over the recording: median, min, max of 11.
fn steer_cost(recording: &[Vec<u8>]) -> (f64, f64, f64) {
    let steering = QuicSteering::with_key(ShardCids::new(SHARDS, CID_LEN).unwrap(), 7);
    let meta = UdpMeta {
        source: "127.0.0.1:40000".parse().unwrap(),
        destination: None,
        ecn: 0,
        segment_size: 0,
        received: Instant::now(),
        listener: 0,
    };
    let passes = (2_000_000 / recording.len()).max(1);
    let mut samples = Vec::new();
    for _ in 0..11 {
        let start = Instant::now();
        let mut sum = 0usize;
        for _ in 0..passes {
            for d in recording {
                sum += steering.steer(black_box(&meta), black_box(d));
            }
        }
        black_box(sum);
        samples.push(start.elapsed().as_nanos() as f64 / (passes * recording.len()) as f64);
    }
    let (min, max) = samples
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    (median(samples), min, max)
}

/// CPU seconds of the threads whose name starts with `prefix`.
fn cpu_of(prefix: &str) -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let (Ok(comm), Ok(sched)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("sched")),
        ) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        total += sched
            .lines()
            .find(|l| l.starts_with("se.sum_exec_runtime"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            * 1e-3;
    }
    total
}

/// One listener, `rings` rings (steered by CID when more than one),
/// `datagrams` of the recording replayed at it; listener CPU ns per
/// datagram received, datagrams received, datagrams per `recvmmsg`, and
/// the consumers' sleeps per datagram (each one ended by a wake-up the
/// listener paid for, or by the 10 ms timeout).
fn listener_round(
    recording: &[Vec<u8>],
    rings: usize,
    datagrams: usize,
    coalesce: Duration,
) -> Round {
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for _ in 0..rings {
        let (p, c) = mpring::Ring::builder(4 << 20)
            .metadata::<UdpMeta>()
            .build()
            .unwrap();
        producers.push(p);
        consumers.push(c);
    }
    let builder = Listeners::builder("127.0.0.1:0".parse().unwrap())
        .listeners(1)
        .coalesce(coalesce);
    let listeners = if rings == 1 {
        builder.spawn(producers.pop().unwrap()).unwrap()
    } else {
        let steering = QuicSteering::with_key(ShardCids::new(rings, CID_LEN).unwrap(), 7);
        builder
            .spawn_steered(producers, move |m, d| steering.steer(m, d))
            .unwrap()
    };
    let addr: SocketAddr = listeners.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let drains: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = c.read_batch_timeout(64, Duration::from_millis(10), |e| {
                        black_box(e.len());
                    });
                }
                c.sleep_count()
            })
        })
        .collect();
    let before = cpu_of("mpring-udp");
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.connect(addr).unwrap();
    let mut sent = 0;
    let mut next = recording.iter().cycle();
    while sent < datagrams {
        let batch: Vec<&Vec<u8>> = next
            .by_ref()
            .take(SEND_BATCH.min(datagrams - sent))
            .collect();
        sent += send_batch(&sender, &batch);
    }
    // Let the listener take what is still queued.
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = listeners.stats().datagrams;
        if now == last {
            break;
        }
        last = now;
    }
    let spent = cpu_of("mpring-udp") - before;
    stop.store(true, Ordering::Relaxed);
    let stats = listeners.stats();
    let received = stats.datagrams;
    let per_call = received as f64 / stats.receive_calls.max(1) as f64;
    drop(listeners);
    let sleeps: u64 = drains.into_iter().map(|d| d.join().unwrap()).sum();
    Round {
        ns: spent * 1e9 / received.max(1) as f64,
        received,
        per_call,
        sleeps: sleeps as f64 / received.max(1) as f64,
    }
}

/// One listener round's figures (see [`listener_round`]).
struct Round {
    ns: f64,
    received: u64,
    per_call: f64,
    sleeps: f64,
}

/// Datagrams per `sendmmsg`: enough that the listener finds full batches
/// of 16 when it keeps up with the sender only just.
const SEND_BATCH: usize = 32;

/// Sends `batch` on the connected `socket` with one `sendmmsg`; how many
/// went (0 on an error, which the caller's loop retries).
fn send_batch(socket: &UdpSocket, batch: &[&Vec<u8>]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid (no address, no control).
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr
        })
        .collect();
    // SAFETY: every header points at one iovec over a live datagram; all
    // outlive the call.
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            0,
        )
    };
    n.max(0) as usize
}

/// The calling thread's CPU time, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the waker of [`wake_cost`] wakes its sleepers.
#[derive(Clone, Copy, PartialEq)]
enum Waking {
    /// `Thread::unpark`, one per sleeper (mpring's consumers in `wait`).
    Unpark,
    /// One `FUTEX_WAKE` for every sleeper, on a word they all wait on.
    SharedFutex,
}

/// `sleepers` threads fall asleep again and again; a waker wakes those
/// asleep, then sleeps 300 µs, 2,000 times. Its CPU µs per wake-up, and
/// per round (its own sleep included).
fn wake_cost(sleepers: usize, waking: Waking) -> (f64, f64) {
    let asleep: Arc<Vec<AtomicBool>> =
        Arc::new((0..sleepers).map(|_| AtomicBool::new(false)).collect());
    let word = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let futex = |word: &AtomicU32, op: libc::c_int, value: u32| {
        // SAFETY: `word` is a live, aligned u32 for the whole call; a
        // null timeout waits without one; both ops only read the word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word as *const AtomicU32,
                op | libc::FUTEX_PRIVATE_FLAG,
                value,
                std::ptr::null::<libc::timespec>(),
            )
        }
    };
    let threads: Vec<_> = (0..sleepers)
        .map(|i| {
            let (asleep, word, stop) = (asleep.clone(), word.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seen = word.load(Ordering::SeqCst);
                    asleep[i].store(true, Ordering::SeqCst);
                    match waking {
                        Waking::Unpark => std::thread::park(),
                        Waking::SharedFutex => {
                            futex(&word, libc::FUTEX_WAIT, seen);
                        }
                    }
                }
            })
        })
        .collect();
    let handles: Vec<_> = threads.iter().map(|t| t.thread().clone()).collect();
    std::thread::sleep(Duration::from_millis(20));
    let rounds = 2_000;
    let (mut waking_ns, mut wakes) = (0u64, 0u64);
    let start = thread_cpu_ns();
    for _ in 0..rounds {
        let t = thread_cpu_ns();
        let mut any = false;
        for (i, flag) in asleep.iter().enumerate() {
            if flag.swap(false, Ordering::SeqCst) {
                wakes += 1;
                any = true;
                if waking == Waking::Unpark {
                    handles[i].unpark();
                }
            }
        }
        if any && waking == Waking::SharedFutex {
            word.fetch_add(1, Ordering::SeqCst);
            futex(&word, libc::FUTEX_WAKE, u32::MAX >> 1);
        }
        waking_ns += thread_cpu_ns() - t;
        std::thread::sleep(Duration::from_micros(300));
    }
    let total_ns = thread_cpu_ns() - start;
    stop.store(true, Ordering::Relaxed);
    word.fetch_add(1, Ordering::SeqCst);
    futex(&word, libc::FUTEX_WAKE, u32::MAX >> 1);
    for (t, h) in threads.into_iter().zip(&handles) {
        h.unpark();
        t.join().unwrap();
    }
    (
        waking_ns as f64 / 1e3 / wakes.max(1) as f64,
        total_ns as f64 / 1e3 / rounds as f64,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and the like: nothing to list
    }
    // STEERING_RINGS=1 or 4: only that configuration's rounds, for a
    // profiler to see one listener at a time (BENCHMARKS.md).
    let configs: Vec<usize> = match std::env::var("STEERING_RINGS").ok().as_deref() {
        None => vec![1, SHARDS],
        Some("1") => vec![1],
        Some(n) if n == SHARDS.to_string() => vec![SHARDS],
        Some(other) => {
            eprintln!("STEERING_RINGS must be 1 or {SHARDS}, not {other:?}");
            std::process::exit(2);
        }
    };
    // STEERING_COALESCE_US: the listeners' receive coalescing
    // (`ListenersBuilder::coalesce`), 0 (off) by default.
    let coalesce = match std::env::var("STEERING_COALESCE_US").ok() {
        None => Duration::ZERO,
        Some(us) => match us.parse::<u64>() {
            Ok(us) if Duration::from_micros(us) <= mpring::udp::MAX_COALESCE => {
                Duration::from_micros(us)
            }
            _ => {
                eprintln!("STEERING_COALESCE_US must be 0 to 10000 µs, not {us:?}");
                std::process::exit(2);
            }
        },
    };
    let recording = record();
    let short = recording.iter().filter(|d| d[0] & 0x80 == 0).count();
    println!(
        "recorded {} datagrams from a quinn client ({} short headers, {} long), {:.0} B on average",
        recording.len(),
        short,
        recording.len() - short,
        recording.iter().map(Vec::len).sum::<usize>() as f64 / recording.len() as f64
    );
    let (med, min, max) = steer_cost(&recording);
    println!(
        "QuicSteering::steer: {med:.1} ns per datagram (median of 11; min {min:.1}, max {max:.1})"
    );

    // The recording is one connection, all of it on shard 1. For the
    // listener rounds, short-header packets get the shard byte of their CID
    // (datagram byte 2) rotated over the 4 shards, as the packets of 4
    // connections on 4 shards would be: every batch then touches every ring.
    let spread: Vec<Vec<u8>> = recording
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut d = d.clone();
            if d[0] & 0x80 == 0 && d.len() > 2 {
                d[2] = (i % SHARDS) as u8;
            }
            d
        })
        .collect();
    // STEERING_ROUNDS: listener rounds per configuration (default 5); the
    // rounds' spread is wide on a shared machine, so more narrow the medians.
    let rounds = match std::env::var("STEERING_ROUNDS").ok() {
        None => 5,
        Some(r) => match r.parse::<usize>() {
            Ok(r) if r > 0 => r,
            _ => {
                eprintln!("STEERING_ROUNDS must be a positive count, not {r:?}");
                std::process::exit(2);
            }
        },
    };
    let datagrams = 200_000;
    let mut results: Vec<Vec<Round>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (&rings, r) in configs.iter().zip(&mut results) {
            r.push(listener_round(&spread, rings, datagrams, coalesce));
        }
    }
    let name = |rings: usize| {
        if rings == 1 {
            "1 ring".to_string()
        } else {
            format!("{rings} rings")
        }
    };
    let per_config = |what: &str, f: &dyn Fn(&Round) -> String| {
        let parts: Vec<String> = configs
            .iter()
            .zip(&results)
            .map(|(&rings, v)| {
                let v: Vec<String> = v.iter().map(f).collect();
                format!("{} [{}]", name(rings), v.join(", "))
            })
            .collect();
        println!("{what}, rounds in order: {}", parts.join(", "));
    };
    per_config("listener CPU ns per datagram", &|r| format!("{:.0}", r.ns));
    per_config("listener batches (datagrams per recvmmsg)", &|r| {
        format!("{:.1}", r.per_call)
    });
    per_config(
        "consumer sleeps per datagram (each a wake-up the listener pays)",
        &|r| format!("{:.3}", r.sleeps),
    );
    per_config("datagrams received", &|r| r.received.to_string());
    let medians: Vec<f64> = results
        .iter()
        .map(|v| median(v.iter().map(|r| r.ns).collect()))
        .collect();
    let listed: Vec<String> = configs
        .iter()
        .zip(&medians)
        .map(|(&rings, m)| format!("{} {m:.0} ns", name(rings)))
        .collect();
    print!(
        "listener CPU per datagram received, medians of {rounds} rounds of {datagrams} sent: {}",
        listed.join(", ")
    );
    if let [m1, m4] = medians[..] {
        println!(
            " ({SHARDS} rings steered by CID, rounds alternated): {:.3}x",
            m4 / m1
        );
    } else {
        println!();
    }

    // What the extra consumers' wake-ups cost: the listener above pays one
    // per ring whose consumer fell asleep, per drain (or per batch).
    let cases = [
        ("1 thread, unpark", 1, Waking::Unpark),
        ("4 threads, unpark each", 4, Waking::Unpark),
        (
            "4 threads, one FUTEX_WAKE on a shared word",
            4,
            Waking::SharedFutex,
        ),
    ];
    let mut costs: Vec<(Vec<f64>, Vec<f64>)> =
        cases.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for _ in 0..3 {
        for (&(_, n, waking), c) in cases.iter().zip(&mut costs) {
            let (per_wake, per_round) = wake_cost(n, waking);
            c.0.push(per_wake);
            c.1.push(per_round);
        }
    }
    println!("waker CPU per wake-up, 2,000 rounds of wake-ups then a 300 µs sleep, medians of 3 (rounds alternated):");
    for ((name, n, _), (per_wake, per_round)) in cases.iter().zip(costs) {
        let (w, r) = (median(per_wake), median(per_round));
        println!(
            "  {name}: {w:.2} µs per wake-up, {:.2} µs per round of {n} wake-up(s); {r:.2} µs per round with the waker's own sleep",
            w * *n as f64
        );
    }
}
