//! Many QUIC connections against one server address, served nine ways:
//!
//! - `quinn`: quinn's own socket, one endpoint, on a multi-thread runtime
//!   with as many workers as the sharded server has threads;
//! - `ring`: one endpoint on a ring-backed socket (`mpring_quic::RingSocket`);
//! - `naive`: N endpoints on N `SO_REUSEPORT` sockets, the kernel picking
//!   the socket by a hash of the 4-tuple;
//! - `cbpf`: the same, steered in the kernel by a classic-BPF program that
//!   reads the shard from the destination CID (no listener threads at all);
//! - `sharded`: `mpring_quic::Shards`, listener threads steering each
//!   datagram by its CID to one of N rings, one endpoint per ring, each on
//!   a thread of its own;
//! - `in-shards`: `mpring_quic::Shards` whose shards receive on sockets of
//!   their own (`receive_in_shards`): N `SO_REUSEPORT` sockets steered in
//!   the kernel by CID (`kernel_steering`, the default), no listener
//!   thread, and only datagrams whose CID names another shard forwarded
//!   through the rings;
//! - `in-shards-hash`: the same with the kernel's 4-tuple hash
//!   (`kernel_steering(false)`);
//! - `quinn-n`: quinn's own socket on N workers, the thread count of
//!   `naive`, `cbpf` and `in-shards` (`quinn` has N + K);
//! - `sharded-rt`: the same listeners, rings and endpoints, all endpoints
//!   on one multi-thread runtime of N workers (not a configuration
//!   `Shards` offers: how much its thread per shard buys).
//!
//! Every connection has a client UDP socket of its own (or shares one with
//! `--per-socket` others), and echoes streams and QUIC datagrams for a
//! fixed time; every echoed byte is checked. A burst round then has every
//! connection send a window of datagrams at once. The server's CPU time
//! (all its threads, from `/proc/self/task/*/sched`) is divided by the UDP
//! datagrams its connections received and sent (their own counters) and
//! by the bytes echoed. The listener threads' part of it is also divided
//! by the datagrams they received: with `--shards 1,2,4`, what steering
//! to N rings costs a listener against one ring, in this workload.
//!
//! ```text
//! cargo run --release -p mpring-comparison --example quic_shards -- --help
//! ```

#[path = "../../quic/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpring::udp::{UdpStats, MAX_COALESCE};
use tokio::sync::oneshot;

const HELP: &str = "\
Many QUIC connections against quinn's own socket, a ring-backed endpoint,
SO_REUSEPORT endpoints (naive and CBPF-steered) and the sharded server.

USAGE: cargo run --release -p mpring-comparison --example quic_shards -- [OPTIONS]

  --connections C   client connections (default 64)
  --per-socket L    list of connections per client socket, one row each (default 1,8)
  --shards N        list of shard counts for sharded, naive and cbpf (default 2)
  --listeners K     listener threads of ring and sharded (default 1)
  --configs LIST    of quinn,quinn-n,ring,naive,cbpf,sharded,in-shards,in-shards-hash,
                    sharded-rt
                    (default all but sharded-rt and in-shards-hash)
  --rounds R        rounds per row, interleaved across rows (default 5)
  --seconds S       length of a steady round in seconds (default 2)
  --stream-kib B    KiB per echoed stream (default 16)
  --datagram D      bytes per QUIC datagram (default 1000)
  --window W        QUIC datagrams in flight per connection (default 8)
  --burst B         QUIC datagrams each connection sends at once in the burst round (default 32; 0: none)
  --client-threads T  tokio workers of the client runtime (default 2)
  --rebind-ms M     every client endpoint moves to a fresh port every M ms in the
                    steady rounds, as a migrating client does (default 0: never;
                    not with naive, which loses such connections)
  --coalesce-us LIST  listener receive coalescing waits in µs, a row of ring,
                    sharded and sharded-rt each (default 0: off; at most 10000)

quinn runs on a runtime of N + K workers (the sharded server's thread count
at the largest N), quinn-n on N workers, ring on N workers and K listeners,
naive, cbpf, in-shards and in-shards-hash on N threads. Exits with status 2
on a bad argument.";

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
enum Kind {
    Quinn,
    Ring,
    Naive,
    Cbpf,
    Sharded,
    InShards,
    InShardsByHash,
    QuinnN,
    ShardedOneRuntime,
}

impl Kind {
    /// Servers with listener threads (which `--coalesce-us` applies to).
    fn has_listeners(self) -> bool {
        matches!(self, Kind::Ring | Kind::Sharded | Kind::ShardedOneRuntime)
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "quinn" => Kind::Quinn,
            "ring" => Kind::Ring,
            "naive" => Kind::Naive,
            "cbpf" => Kind::Cbpf,
            "sharded" => Kind::Sharded,
            "sharded-rt" => Kind::ShardedOneRuntime,
            "in-shards" => Kind::InShards,
            "in-shards-hash" => Kind::InShardsByHash,
            "quinn-n" => Kind::QuinnN,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
struct Options {
    connections: usize,
    per_socket: Vec<usize>,
    shards: Vec<usize>,
    listeners: usize,
    configs: Vec<Kind>,
    rounds: usize,
    seconds: f64,
    stream_bytes: usize,
    datagram: usize,
    window: usize,
    burst: usize,
    client_threads: usize,
    /// Every client endpoint moves to a fresh socket this often in the
    /// steady rounds (0: never).
    rebind_ms: u64,
    /// Listener receive coalescing waits, µs: a row of each listener
    /// configuration per value (`ListenersBuilder::coalesce`).
    coalesce_us: Vec<u64>,
}

fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        connections: 64,
        per_socket: vec![1, 8],
        shards: vec![2],
        listeners: 1,
        configs: vec![
            Kind::Quinn,
            Kind::QuinnN,
            Kind::Ring,
            Kind::Naive,
            Kind::Cbpf,
            Kind::Sharded,
            Kind::InShards,
        ],
        rounds: 5,
        seconds: 2.0,
        stream_bytes: 16 * 1024,
        datagram: 1000,
        window: 8,
        burst: 32,
        client_threads: 2,
        rebind_ms: 0,
        coalesce_us: vec![0],
    };
    let number = |flag: &str, v: &str, min: usize, max: usize| -> Result<usize, String> {
        match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            Ok(_) => Err(format!("{flag}: between {min} and {max}")),
            Err(_) => Err(format!("{flag}: not a whole number: {v}")),
        }
    };
    let list = |flag: &str, v: &str, min: usize, max: usize| -> Result<Vec<usize>, String> {
        v.split(',').map(|x| number(flag, x, min, max)).collect()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        const FLAGS: [&str; 14] = [
            "--connections",
            "--per-socket",
            "--shards",
            "--listeners",
            "--configs",
            "--rounds",
            "--seconds",
            "--stream-kib",
            "--datagram",
            "--window",
            "--burst",
            "--client-threads",
            "--rebind-ms",
            "--coalesce-us",
        ];
        if !FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag} (see --help)"));
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag}: needs a value (see --help)"))?;
        match flag.as_str() {
            "--connections" => o.connections = number(flag, value, 1, 4096)?,
            "--per-socket" => o.per_socket = list(flag, value, 1, 4096)?,
            "--shards" => o.shards = list(flag, value, 1, 64)?,
            "--listeners" => o.listeners = number(flag, value, 1, 64)?,
            "--configs" => {
                o.configs = value
                    .split(',')
                    .map(|c| Kind::parse(c).ok_or_else(|| format!("--configs: unknown {c}")))
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => o.rounds = number(flag, value, 1, 1000)?,
            "--seconds" => {
                o.seconds = match value.parse::<f64>() {
                    Ok(s) if (0.1..=600.0).contains(&s) => s,
                    _ => return Err(format!("--seconds: 0.1 to 600, not {value}")),
                }
            }
            "--stream-kib" => o.stream_bytes = number(flag, value, 1, 1 << 16)? * 1024,
            "--datagram" => o.datagram = number(flag, value, 16, 1100)?,
            "--window" => o.window = number(flag, value, 1, 1024)?,
            "--burst" => o.burst = number(flag, value, 0, 1024)?,
            "--client-threads" => o.client_threads = number(flag, value, 1, 64)?,
            "--rebind-ms" => o.rebind_ms = number(flag, value, 0, 60_000)? as u64,
            "--coalesce-us" => {
                o.coalesce_us = list(flag, value, 0, MAX_COALESCE.as_micros() as usize)?
                    .into_iter()
                    .map(|c| c as u64)
                    .collect()
            }
            _ => return Err(format!("unknown option {flag} (see --help)")),
        }
    }
    if o.per_socket.iter().any(|&l| o.connections % l != 0) {
        return Err("--per-socket: each value must divide --connections".into());
    }
    if o.rebind_ms > 0 && o.configs.contains(&Kind::Naive) {
        return Err(
            "--rebind-ms: naive endpoints lose migrating connections (quic/tests/migration.rs); \
             leave naive out of --configs"
                .into(),
        );
    }
    Ok(Some(o))
}

// ---- CPU time per thread --------------------------------------------------------

/// CPU seconds and context switches of every thread of this process, by
/// thread id, with its name: the scheduler's run time
/// (`se.sum_exec_runtime` in `/proc/self/task/*/sched`, user and system
/// time together, to the nanosecond; `stat`'s ticks are 10 ms) and
/// `nr_switches`.
fn thread_times() -> Threads {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let (Ok(comm), Ok(sched)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("sched")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let field = |name: &str| {
            sched
                .lines()
                .find(|l| l.split(':').next().map(str::trim) == Some(name))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let (Some(ms), Some(switches), Ok(tid)) = (
            field("se.sum_exec_runtime"),
            field("nr_switches"),
            task.file_name().to_string_lossy().parse(),
        ) else {
            continue;
        };
        out.insert(
            tid,
            (comm.trim_end().to_string(), ms * 1e-3, switches as u64),
        );
    }
    out
}

/// Per thread id: name, CPU seconds, context switches.
type Threads = HashMap<u32, (String, f64, u64)>;

/// Before a measured phase: threads, UDP datagrams, kernel drops, ring
/// drops, the time, ring entries, [`listened`].
type Snapshot = (Threads, u64, u64, u64, Instant, u64, (u64, u64, u64));

/// Client threads are the client runtime's workers and the main thread
/// (which drives it); every other thread of the process is the server's.
const CLIENT_THREAD: &str = "quic-client";

/// Server and client CPU seconds spent between two snapshots (a thread
/// born between them counts from zero; one that ended is lost, so the
/// servers keep their threads until after the second snapshot).
fn cpu_between(before: &Threads, after: &Threads) -> Cpu {
    let main = std::process::id();
    let mut cpu = Cpu::default();
    for (tid, (name, t, n)) in after {
        let spent = t - before.get(tid).map_or(0.0, |b| b.1);
        if *tid == main || name == CLIENT_THREAD {
            cpu.client += spent;
        } else {
            cpu.server += spent;
            cpu.server_switches += n - before.get(tid).map_or(0, |b| b.2);
            if name.starts_with(LISTENER_THREAD) {
                cpu.listeners += spent;
            }
        }
    }
    cpu
}

/// CPU seconds between two snapshots, and the server's context switches.
#[derive(Default)]
struct Cpu {
    server: f64,
    /// The listener threads' part of `server`.
    listeners: f64,
    client: f64,
    server_switches: u64,
}

/// `mpring::udp::Listeners` name their threads `mpring-udp-{k}`.
const LISTENER_THREAD: &str = "mpring-udp-";

/// UDP receive-buffer drops of the whole machine (`/proc/net/snmp`): the
/// kernel's drops, on either side of loopback.
fn kernel_udp_drops() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

// ---- servers ----------------------------------------------------------------------

/// The server side of every connection a server accepted, for its UDP
/// counters.
type Served = Arc<std::sync::Mutex<Vec<quinn::Connection>>>;

/// Accepts on `endpoint` until it closes, echoing every connection and
/// keeping its server side in `served`.
async fn serve(endpoint: quinn::Endpoint, served: Served) {
    while let Some(incoming) = endpoint.accept().await {
        let served = served.clone();
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                served.lock().unwrap().push(connection.clone());
                support::echo_connection(connection).await;
            }
        });
    }
}

/// A running server: its address, how to read its ring counters, and how
/// to stop it.
struct Server {
    addr: SocketAddr,
    served: Served,
    stop: Box<dyn FnOnce() + Send>,
    ring_stats: Option<Box<dyn Fn() -> UdpStats + Send + Sync>>,
}

/// Endpoints each on its own thread with a current-thread runtime, as the
/// sharded server runs them; `make(k)` builds endpoint k on its thread.
fn endpoint_threads(
    n: usize,
    make: Arc<dyn Fn(usize) -> quinn::Endpoint + Send + Sync>,
    served: &Served,
) -> (
    Vec<quinn::Endpoint>,
    Vec<oneshot::Sender<()>>,
    Vec<JoinHandle<()>>,
) {
    let (mut endpoints, mut stops, mut threads) = (vec![], vec![], vec![]);
    for k in 0..n {
        let (stop, stopped) = oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let make = make.clone();
        let served = served.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("server-{k}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime");
                    let endpoint = {
                        let _enter = rt.enter();
                        make(k)
                    };
                    tx.send(endpoint.clone()).unwrap();
                    rt.block_on(async move {
                        tokio::spawn(serve(endpoint.clone(), served));
                        let _ = stopped.await;
                        endpoint.close(0u32.into(), b"done");
                        endpoint.wait_idle().await;
                    });
                })
                .expect("a server thread"),
        );
        endpoints.push(rx.recv().expect("the endpoint"));
        stops.push(stop);
    }
    (endpoints, stops, threads)
}

fn start(
    kind: Kind,
    n: usize,
    listeners: usize,
    coalesce: Duration,
    server_config: quinn::ServerConfig,
) -> Server {
    let local: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let served = Served::default();
    match kind {
        Kind::Quinn | Kind::QuinnN | Kind::Ring => {
            let workers = if kind == Kind::Quinn {
                n + listeners
            } else {
                n
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("server")
                .enable_all()
                .build()
                .expect("a server runtime");
            let (endpoint, socket) = if kind != Kind::Ring {
                let _enter = rt.enter();
                (support::default_server(server_config).expect("bind"), None)
            } else {
                let socket = Arc::new(
                    mpring_quic::RingSocket::builder(local)
                        .listeners(listeners)
                        .listener_coalesce(coalesce)
                        .bind()
                        .expect("bind"),
                );
                let _enter = rt.enter();
                let endpoint = quinn::Endpoint::new_with_abstract_socket(
                    quinn::EndpointConfig::default(),
                    Some(server_config),
                    socket.clone(),
                    Arc::new(quinn::TokioRuntime),
                )
                .expect("an endpoint");
                (endpoint, Some(socket))
            };
            rt.spawn(serve(endpoint.clone(), served.clone()));
            let addr = endpoint.local_addr().unwrap();
            Server {
                served: served.clone(),
                addr,
                ring_stats: socket.map(|s| {
                    Box::new(move || s.stats()) as Box<dyn Fn() -> UdpStats + Send + Sync>
                }),
                stop: Box::new(move || {
                    endpoint.close(0u32.into(), b"done");
                    rt.block_on(endpoint.wait_idle());
                    rt.shutdown_timeout(Duration::from_secs(1));
                }),
            }
        }
        Kind::Naive | Kind::Cbpf => {
            let sockets = support::reuseport::reuseport_sockets(local, n).expect("bind");
            if kind == Kind::Cbpf {
                support::reuseport::attach_cid_steering(&sockets[0], n).expect("attach CBPF");
            }
            let addr = sockets[0].local_addr().unwrap();
            let cids = mpring::udp::steer::ShardCids::new(n, mpring_quic::SHARD_CID_LEN)
                .expect("a CID encoding");
            let sockets = std::sync::Mutex::new(sockets.into_iter().map(Some).collect::<Vec<_>>());
            let steered = kind == Kind::Cbpf;
            let make = Arc::new(move |k: usize| {
                let socket = sockets.lock().unwrap()[k].take().unwrap();
                let mut config = quinn::EndpointConfig::default();
                if steered {
                    config.cid_generator(
                        mpring_quic::ShardCidGenerator::factory(cids, k).expect("a shard"),
                    );
                }
                quinn::Endpoint::new(
                    config,
                    Some(server_config.clone()),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .expect("an endpoint")
            });
            let (_endpoints, stops, threads) = endpoint_threads(n, make, &served);
            Server {
                served: served.clone(),
                addr,
                ring_stats: None,
                stop: Box::new(move || {
                    drop(stops);
                    for t in threads {
                        let _ = t.join();
                    }
                }),
            }
        }
        Kind::ShardedOneRuntime => {
            use mpring::udp::steer::{QuicSteering, ShardCids};
            use mpring::udp::{Listeners, UdpMeta};
            let cids = ShardCids::new(n, mpring_quic::SHARD_CID_LEN).expect("a CID encoding");
            let bytes = mpring_quic::DEFAULT_RING_BYTES;
            let (producers, consumers): (Vec<_>, Vec<_>) = (0..n)
                .map(|_| {
                    mpring::Ring::builder(bytes)
                        .metadata::<UdpMeta>()
                        .high_water_mark(bytes / 4 * 3)
                        .build()
                        .expect("a ring")
                })
                .unzip();
            let steering = QuicSteering::new(cids);
            let group = Arc::new(
                Listeners::builder(local)
                    .listeners(listeners)
                    .coalesce(coalesce)
                    .gro(true)
                    .shed(mpring_quic::is_quic_initial)
                    .spawn_steered(producers, move |m, d| steering.steer(m, d))
                    .expect("bind"),
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .thread_name("server")
                .enable_all()
                .build()
                .expect("a server runtime");
            let endpoints: Vec<quinn::Endpoint> = consumers
                .into_iter()
                .enumerate()
                .map(|(k, consumer)| {
                    let socket = Arc::new(
                        mpring_quic::RingSocket::from_consumer(consumer, group.clone())
                            .expect("a socket"),
                    );
                    let mut config = quinn::EndpointConfig::default();
                    config.cid_generator(
                        mpring_quic::ShardCidGenerator::factory(cids, k).expect("a shard"),
                    );
                    let _enter = rt.enter();
                    let endpoint = quinn::Endpoint::new_with_abstract_socket(
                        config,
                        Some(server_config.clone()),
                        socket,
                        Arc::new(quinn::TokioRuntime),
                    )
                    .expect("an endpoint");
                    rt.spawn(serve(endpoint.clone(), served.clone()));
                    endpoint
                })
                .collect();
            let stats = group.clone();
            Server {
                served: served.clone(),
                addr: group.local_addr(),
                ring_stats: Some(Box::new(move || stats.stats())),
                stop: Box::new(move || {
                    for e in &endpoints {
                        e.close(0u32.into(), b"done");
                    }
                    for e in &endpoints {
                        rt.block_on(e.wait_idle());
                    }
                    drop(endpoints);
                    rt.shutdown_timeout(Duration::from_secs(1));
                }),
            }
        }
        Kind::Sharded | Kind::InShards | Kind::InShardsByHash => {
            let builder = mpring_quic::Shards::builder(local, server_config).shards(n);
            let builder = if kind == Kind::Sharded {
                // The echo handlers do no tokio I/O: no I/O driver in the
                // shards.
                builder
                    .listeners(listeners)
                    .listener_coalesce(coalesce)
                    .io_driver(false)
            } else {
                builder
                    .receive_in_shards(true)
                    .kernel_steering(kind == Kind::InShards)
            };
            let shards = builder.bind().expect("bind the shards");
            {
                let served = served.clone();
                shards.serve(move |_, connection| {
                    served.lock().unwrap().push(connection.clone());
                    support::echo_connection(connection)
                });
            }
            let shards = Arc::new(std::sync::Mutex::new(Some(shards)));
            let addr = shards.lock().unwrap().as_ref().unwrap().local_addr();
            let stats = shards.clone();
            Server {
                served: served.clone(),
                addr,
                ring_stats: Some(Box::new(move || {
                    stats
                        .lock()
                        .unwrap()
                        .as_ref()
                        .map(|s| s.stats())
                        .unwrap_or_default()
                })),
                stop: Box::new(move || {
                    if let Some(s) = shards.lock().unwrap().take() {
                        s.shutdown();
                    }
                }),
            }
        }
    }
}

// ---- the client ---------------------------------------------------------------------

/// What one round measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    seconds: f64,
    connections: usize,
    bytes: u64,
    udp_datagrams: u64,
    quic_datagrams_lost: u64,
    kernel_drops: u64,
    ring_drops: u64,
    /// Entries pushed into the server's rings: every datagram (or GRO
    /// batch) with listener threads, only the forwarded ones in the shards.
    ring_entries: u64,
    server_cpu: f64,
    /// CPU seconds of the listener threads (a part of `server_cpu`).
    listener_cpu: f64,
    /// Datagrams the listener threads received, their `recvmmsg` calls
    /// that returned datagrams, and their coalescing waits.
    listened: (u64, u64, u64),
    /// Context switches of the server's threads.
    server_switches: u64,
    /// The client connections' smoothed round-trip time (quinn's
    /// estimate) at the end of the round, median over connections, µs.
    rtt_us: f64,
    client_cpu: f64,
}

/// A connection's echo loop until `stop`: a stream of `o.stream_bytes`,
/// then a window of datagrams; returns bytes echoed (all checked) and
/// datagram echoes that never came.
async fn work(
    connection: quinn::Connection,
    id: u64,
    o: Arc<Options>,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut bytes, mut lost) = (0u64, 0u64);
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
        let data = support::stream_bytes(id << 20 | round, o.stream_bytes);
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                send.write_all(&data).await.expect("write");
                send.finish().expect("finish");
            })
        };
        let echoed = recv
            .read_to_end(o.stream_bytes + 1)
            .await
            .expect("read an echo");
        writer.await.unwrap();
        assert!(echoed == data, "connection {id}: stream bytes differ");
        bytes += echoed.len() as u64;
        let (b, l) = datagram_window(&connection, id, round, o.window, o.datagram).await;
        bytes += b;
        lost += l;
        round += 1;
    }
    (bytes, lost)
}

/// Sends `window` QUIC datagrams and checks their echoes; bytes echoed and
/// echoes that did not come within 100 ms.
async fn datagram_window(
    connection: &quinn::Connection,
    id: u64,
    round: u64,
    window: usize,
    len: usize,
) -> (u64, u64) {
    let tag = |i: usize| (id << 40) ^ (round << 16) ^ i as u64;
    for i in 0..window {
        let mut d = support::stream_bytes(tag(i), len);
        d[..8].copy_from_slice(&tag(i).to_le_bytes());
        connection.send_datagram(d.into()).expect("send a datagram");
    }
    let mut bytes = 0;
    for got in 0..window {
        match tokio::time::timeout(Duration::from_millis(100), connection.read_datagram()).await {
            Ok(Ok(echo)) => {
                let t = u64::from_le_bytes(echo[..8].try_into().unwrap());
                let mut want = support::stream_bytes(t, echo.len());
                want[..8].copy_from_slice(&t.to_le_bytes());
                assert!(echo[..] == want[..], "connection {id}: a datagram differs");
                bytes += echo.len() as u64;
            }
            Ok(Err(e)) => panic!("connection {id}: {e}"),
            Err(_) => return (bytes, (window - got) as u64),
        }
    }
    (bytes, 0)
}

/// UDP datagrams the server's connections received and sent (their own
/// counters: datagrams dropped before reaching the endpoint are not in).
fn udp_datagrams(served: &Served) -> u64 {
    served
        .lock()
        .unwrap()
        .iter()
        .map(|c| {
            let s = c.stats();
            s.udp_tx.datagrams + s.udp_rx.datagrams
        })
        .sum()
}

fn ring_entries(server: &Server) -> u64 {
    server.ring_stats.as_ref().map_or(0, |s| s().entries)
}

/// Datagrams the server's receive path counted, its `recvmmsg` calls that
/// returned datagrams and its coalescing waits (with listener threads:
/// theirs).
fn listened(server: &Server) -> (u64, u64, u64) {
    server.ring_stats.as_ref().map_or((0, 0, 0), |s| {
        let s = s();
        (s.datagrams, s.receive_calls, s.coalescing_waits)
    })
}

fn ring_drops(server: &Server) -> u64 {
    server.ring_stats.as_ref().map_or(0, |s| {
        let s = s();
        s.full_drops + s.shed
    })
}

/// One round against a fresh server: connect, steady echo for
/// `o.seconds`, then (if asked) the burst. Returns the steady sample and
/// the burst's.
async fn round(row: Row, o: Arc<Options>) -> (Sample, Option<Sample>) {
    let Row {
        kind,
        n,
        per_socket,
        coalesce_us,
    } = row;
    let coalesce = Duration::from_micros(coalesce_us);
    let (server_config, client_config) = support::configs();
    let server =
        tokio::task::block_in_place(|| start(kind, n, o.listeners, coalesce, server_config));
    let mut clients = Vec::new();
    let mut connecting = Vec::new();
    for c in 0..o.connections {
        if c % per_socket == 0 {
            let mut client = quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
            client.set_default_client_config(client_config.clone());
            clients.push(client);
        }
        let client = clients.last().unwrap().clone();
        let addr = server.addr;
        connecting.push(tokio::spawn(async move {
            client
                .connect(addr, "localhost")
                .unwrap()
                .await
                .expect("handshake")
        }));
    }
    let mut connections = Vec::new();
    for c in connecting {
        connections.push(c.await.unwrap());
    }

    let measure = |before: Snapshot, connections: &[quinn::Connection], bytes: u64, lost: u64| {
        let cpu = cpu_between(&before.0, &thread_times());
        let listened = listened(&server);
        let mut rtts: Vec<f64> = connections
            .iter()
            .map(|c| c.rtt().as_secs_f64() * 1e6)
            .collect();
        rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Sample {
            rtt_us: rtts.get(rtts.len() / 2).copied().unwrap_or(0.0),
            seconds: before.4.elapsed().as_secs_f64(),
            connections: connections.len(),
            bytes,
            udp_datagrams: udp_datagrams(&server.served) - before.1,
            quic_datagrams_lost: lost,
            kernel_drops: kernel_udp_drops() - before.2,
            ring_drops: ring_drops(&server) - before.3,
            ring_entries: ring_entries(&server) - before.5,
            server_cpu: cpu.server,
            listener_cpu: cpu.listeners,
            listened: (
                listened.0 - before.6 .0,
                listened.1 - before.6 .1,
                listened.2 - before.6 .2,
            ),
            server_switches: cpu.server_switches,
            client_cpu: cpu.client,
        }
    };
    let snapshot = || {
        (
            thread_times(),
            udp_datagrams(&server.served),
            kernel_udp_drops(),
            ring_drops(&server),
            Instant::now(),
            ring_entries(&server),
            listened(&server),
        )
    };

    // Steady: every connection echoes until the deadline.
    let stop = Arc::new(AtomicBool::new(false));
    let before = snapshot();
    let tasks: Vec<_> = connections
        .iter()
        .enumerate()
        .map(|(id, c)| tokio::spawn(work(c.clone(), id as u64, o.clone(), stop.clone())))
        .collect();
    // Migration: every client endpoint moves to a fresh port now and then.
    let rebinds = (o.rebind_ms > 0).then(|| {
        let (clients, stop, every) = (
            clients.clone(),
            stop.clone(),
            Duration::from_millis(o.rebind_ms),
        );
        tokio::spawn(async move {
            let mut moved = 0u64;
            loop {
                tokio::time::sleep(every).await;
                if stop.load(Ordering::Relaxed) {
                    return moved;
                }
                for client in &clients {
                    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                    client.rebind(socket).expect("rebind a client");
                    moved += 1;
                }
            }
        })
    });
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(rebinds) = rebinds {
        let moved = rebinds.await.unwrap();
        assert!(moved > 0, "no client moved in the round");
    }
    let (mut bytes, mut lost) = (0, 0);
    for t in tasks {
        let (b, l) = t.await.expect("a connection's echo");
        bytes += b;
        lost += l;
    }
    let steady = measure(before, &connections, bytes, lost);

    // Burst: every connection sends its window at the same moment.
    let burst = if o.burst > 0 {
        let before = snapshot();
        let go = Arc::new(tokio::sync::Barrier::new(connections.len()));
        let tasks: Vec<_> = connections
            .iter()
            .enumerate()
            .map(|(id, c)| {
                let (c, go, o) = (c.clone(), go.clone(), o.clone());
                tokio::spawn(async move {
                    go.wait().await;
                    datagram_window(&c, id as u64, u64::MAX >> 24, o.burst, o.datagram).await
                })
            })
            .collect();
        let (mut bytes, mut lost) = (0, 0);
        for t in tasks {
            let (b, l) = t.await.expect("a burst");
            bytes += b;
            lost += l;
        }
        Some(measure(before, &connections, bytes, lost))
    } else {
        None
    };

    for c in &connections {
        c.close(0u32.into(), b"done");
    }
    for client in &clients {
        client.wait_idle().await;
    }
    tokio::task::block_in_place(move || (server.stop)());
    (steady, burst)
}

// ---- the table ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Row {
    kind: Kind,
    n: usize,
    per_socket: usize,
    /// The listeners' coalescing wait, µs (0 for servers without them).
    coalesce_us: u64,
}

impl Row {
    fn name(&self, o: &Options) -> String {
        let name = self.kind_name(o);
        if self.coalesce_us > 0 {
            format!("{name}, coalescing {} µs", self.coalesce_us)
        } else {
            name
        }
    }

    fn kind_name(&self, o: &Options) -> String {
        match self.kind {
            Kind::Quinn => format!("(a) quinn's socket, {} workers", self.n + o.listeners),
            Kind::Ring => format!(
                "(b) ring, 1 endpoint, {} workers + {} listeners",
                self.n, o.listeners
            ),
            Kind::Naive => format!("(c) naive SO_REUSEPORT, N = {}", self.n),
            Kind::Cbpf => format!("(d) CBPF-steered SO_REUSEPORT, N = {}", self.n),
            Kind::Sharded => format!("(e) sharded, N = {} + {} listeners", self.n, o.listeners),
            Kind::InShards => format!("(f) sharded, N = {}, receiving in the shards", self.n),
            Kind::InShardsByHash => {
                format!("(f') the same, the kernel's 4-tuple hash, N = {}", self.n)
            }
            Kind::QuinnN => format!("(a') quinn's socket, {} workers", self.n),
            Kind::ShardedOneRuntime => format!(
                "(e') sharded on one runtime, {} workers + {} listeners",
                self.n, o.listeners
            ),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("quic_shards: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} connections, {} s steady rounds ({} KiB streams, then {} x {} B datagrams), \
         {} rounds interleaved, client on {} threads, {cores} cores shared with the server",
        o.connections,
        o.seconds,
        o.stream_bytes / 1024,
        o.window,
        o.datagram,
        o.rounds,
        o.client_threads
    );
    let max_n = *o.shards.iter().max().unwrap();
    let mut rows = Vec::new();
    for &per_socket in &o.per_socket {
        for &kind in &o.configs {
            let coalesce: &[u64] = if kind.has_listeners() {
                &o.coalesce_us
            } else {
                &[0]
            };
            for &coalesce_us in coalesce {
                match kind {
                    Kind::Quinn | Kind::Ring => rows.push(Row {
                        kind,
                        n: max_n,
                        per_socket,
                        coalesce_us,
                    }),
                    _ => rows.extend(o.shards.iter().map(|&n| Row {
                        kind,
                        n,
                        per_socket,
                        coalesce_us,
                    })),
                }
            }
        }
    }
    let o = Arc::new(o);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .expect("the client runtime");
    let mut steady: HashMap<Row, Vec<Sample>> = HashMap::new();
    let mut bursts: HashMap<Row, Vec<Sample>> = HashMap::new();
    for r in 0..o.rounds {
        for row in &rows {
            let (s, b) = rt.block_on(round(*row, o.clone()));
            eprintln!(
                "round {}: {}, {} per socket: {:.1} MB/s, {:.0} UDP datagrams/s",
                r + 1,
                row.name(&o),
                row.per_socket,
                s.bytes as f64 / s.seconds / 1e6,
                s.udp_datagrams as f64 / s.seconds
            );
            steady.entry(*row).or_default().push(s);
            if let Some(b) = b {
                bursts.entry(*row).or_default().push(b);
            }
        }
    }
    report(&o, &rows, &steady, &bursts);
    std::process::ExitCode::SUCCESS
}

fn report(
    o: &Options,
    rows: &[Row],
    steady: &HashMap<Row, Vec<Sample>>,
    bursts: &HashMap<Row, Vec<Sample>>,
) {
    println!();
    println!("Steady rounds, medians of {} rounds:", o.rounds);
    println!("| server | conns per client socket | connections | MB/s echoed | UDP datagrams/s | server CPU µs / datagram | server CPU ns / echoed byte | server context switches / 1,000 datagrams | vs (a): CPU per datagram, per byte | client CPU s / round | QUIC datagram echoes lost | drops: kernel, ring | ring entries / 1,000 datagrams | listener CPU µs / received datagram; datagrams / recvmmsg; coalescing waits / 1,000 datagrams | RTT µs (quinn's smoothed estimate, median connection) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per_datagram = |s: &Sample| s.server_cpu * 1e6 / s.udp_datagrams.max(1) as f64;
    let per_byte = |s: &Sample| s.server_cpu * 1e9 / s.bytes.max(1) as f64;
    let mut verdicts = Vec::new();
    let mut listener_cpu: Vec<(&Row, f64)> = Vec::new();
    for row in rows {
        let v = &steady[row];
        let med = |f: &dyn Fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let (dg, by) = (med(&per_datagram), med(&per_byte));
        let anchor = rows
            .iter()
            .find(|r| r.kind == Kind::Quinn && r.per_socket == row.per_socket)
            .map(|r| {
                let a = &steady[r];
                (
                    median(a.iter().map(per_datagram).collect()),
                    median(a.iter().map(per_byte).collect()),
                )
            });
        let vs = anchor.map_or("-".to_string(), |(adg, aby)| {
            format!("{:.2}x, {:.2}x", dg / adg, by / aby)
        });
        if matches!(
            row.kind,
            Kind::Sharded | Kind::InShards | Kind::InShardsByHash
        ) {
            // Against quinn's socket with the sharded server's threads, and
            // with N workers when that row ran.
            for anchor_kind in [Kind::Quinn, Kind::QuinnN] {
                let Some(a) = rows.iter().find(|r| {
                    r.kind == anchor_kind
                        && r.per_socket == row.per_socket
                        && (anchor_kind == Kind::Quinn || r.n == row.n)
                }) else {
                    continue;
                };
                let a_steady = &steady[a];
                let adg = median(a_steady.iter().map(per_datagram).collect());
                let aby = median(a_steady.iter().map(per_byte).collect());
                verdicts.push(format!(
                    "{} with {} connections per client socket: CPU per datagram {:.2}x and per echoed byte {:.2}x of {} ({})",
                    row.name(o),
                    row.per_socket,
                    dg / adg,
                    by / aby,
                    a.name(o),
                    if dg <= adg && by <= aby { "the sharded server spends less" } else { "quinn's socket spends less" }
                ));
            }
        }
        let listener = if v.iter().all(|s| s.listener_cpu > 0.0) {
            let per = med(&|s| s.listener_cpu * 1e6 / s.listened.0.max(1) as f64);
            listener_cpu.push((row, per));
            format!(
                "{:.2}; {:.1}; {:.0}",
                per,
                med(&|s| s.listened.0 as f64 / s.listened.1.max(1) as f64),
                med(&|s| s.listened.2 as f64 * 1e3 / s.listened.0.max(1) as f64)
            )
        } else {
            "-".to_string()
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} | {} | {:.2} | {} | {}, {} | {:.1} | {} | {:.0} |",
            row.name(o),
            row.per_socket,
            v[0].connections,
            med(&|s| s.bytes as f64 / s.seconds / 1e6),
            med(&|s| s.udp_datagrams as f64 / s.seconds),
            dg,
            by,
            med(&|s| s.server_switches as f64 * 1e3 / s.udp_datagrams.max(1) as f64),
            vs,
            med(&|s| s.client_cpu),
            v.iter().map(|s| s.quic_datagrams_lost).sum::<u64>(),
            v.iter().map(|s| s.kernel_drops).sum::<u64>(),
            v.iter().map(|s| s.ring_drops).sum::<u64>(),
            med(&|s| s.ring_entries as f64 * 1e3 / s.udp_datagrams.max(1) as f64),
            listener,
            med(&|s| s.rtt_us),
        );
    }
    // The listeners' cost of steering to N rings against 1 ring (the
    // sharded server at N = 1), the same listener count.
    for &(row, per) in &listener_cpu {
        if row.kind != Kind::Sharded || row.n == 1 {
            continue;
        }
        if let Some(&(one, per_one)) = listener_cpu.iter().find(|(r, _)| {
            r.kind == Kind::Sharded
                && r.n == 1
                && r.per_socket == row.per_socket
                && r.coalesce_us == row.coalesce_us
        }) {
            verdicts.push(format!(
                "{} with {} connections per client socket: listener CPU per received datagram {:.2}x of {}",
                row.name(o),
                row.per_socket,
                per / per_one,
                one.name(o),
            ));
        }
    }
    if !bursts.is_empty() {
        println!();
        println!(
            "Burst rounds: every connection sends {} datagrams of {} B at once; sums over {} rounds:",
            o.burst, o.datagram, o.rounds
        );
        println!("| server | conns per client socket | datagram echoes lost | drops: kernel (whole machine, both sides) | drops: ring | server CPU ms (median) |");
        println!("|---|---:|---:|---:|---:|---:|");
        for row in rows {
            let v = &bursts[row];
            println!(
                "| {} | {} | {} of {} | {} | {} | {:.1} |",
                row.name(o),
                row.per_socket,
                v.iter().map(|s| s.quic_datagrams_lost).sum::<u64>(),
                v.len() * o.connections * o.burst,
                v.iter().map(|s| s.kernel_drops).sum::<u64>(),
                v.iter().map(|s| s.ring_drops).sum::<u64>(),
                median(v.iter().map(|s| s.server_cpu * 1e3).collect())
            );
        }
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
    println!(
        "CPU is every server thread's run time from /proc/self/task/*/sched (client \
         threads: the client runtime's and the main thread); datagrams are UDP datagrams both \
         ways, from the server's connection stats (what it handled); echoed bytes are stream and datagram payload. \
         Listener CPU is the listener threads' (mpring-udp-*) part of the server's, per datagram they received."
    );
}
