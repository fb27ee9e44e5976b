//! A QUIC echo server (quinn) whose socket receives through mpring's UDP
//! listeners and ring (`mpring_quic::RingSocket`), next to the same server
//! on quinn's own socket: a stock quinn client pushes many concurrent
//! streams, then many small QUIC datagrams, through each; every echoed
//! byte is checked, and the rates are printed side by side.
//!
//! ```text
//! cargo run --release --example quinn_echo -- [STREAMS] [KIB] [ROUNDS] [LISTENERS] [WORKERS]
//! cargo run --release --example quinn_echo -- --help
//! ```
//!
//! Exits with status 2 on a bad argument, before anything runs.

#[path = "../../quic/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

/// Echoes `streams` streams of `kib` KiB through `server`; the time taken.
async fn streams_round(
    server: &quinn::Endpoint,
    client_config: quinn::ClientConfig,
    streams: u64,
    kib: usize,
) -> Duration {
    let (client, connection) = support::connect(server, client_config).await;
    let start = Instant::now();
    let echoed = support::echo_streams(&connection, streams, kib * 1024).await;
    let elapsed = start.elapsed();
    assert_eq!(echoed, streams * kib as u64 * 1024);
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    elapsed
}

/// QUIC datagrams per datagram round, and how many may be in flight.
const DATAGRAMS: u32 = 20_000;
const WINDOW: u32 = 32;

/// Echoes `DATAGRAMS` small QUIC datagrams (40-200 bytes), `WINDOW` in
/// flight; the time taken and how many echoes never came (datagrams are
/// unreliable).
async fn datagrams_round(
    server: &quinn::Endpoint,
    client_config: quinn::ClientConfig,
) -> (Duration, u32) {
    let (client, connection) = support::connect(server, client_config).await;
    let start = Instant::now();
    let mut lost = 0;
    let mut seq = 0u32;
    while seq < DATAGRAMS {
        let window = WINDOW.min(DATAGRAMS - seq);
        for i in seq..seq + window {
            let len = 40 + (i as usize * 37) % 161;
            let mut payload = support::stream_bytes(u64::from(i), len);
            payload[..4].copy_from_slice(&i.to_le_bytes());
            connection
                .send_datagram(payload.into())
                .expect("send a datagram");
        }
        let mut got = 0;
        while got < window {
            let echo = tokio::time::timeout(Duration::from_millis(50), connection.read_datagram());
            match echo.await {
                Ok(echo) => {
                    let echo = echo.expect("read a datagram");
                    let i = u32::from_le_bytes(echo[..4].try_into().unwrap());
                    let mut want = support::stream_bytes(u64::from(i), echo.len());
                    want[..4].copy_from_slice(&i.to_le_bytes());
                    assert!(echo[..] == want[..], "datagram {i} corrupted");
                    got += 1;
                }
                Err(_) => {
                    lost += window - got;
                    break;
                }
            }
        }
        seq += window;
    }
    let elapsed = start.elapsed();
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    (elapsed, lost)
}

const HELP: &str = "\
A quinn echo server on a ring-backed socket next to quinn's own socket.

USAGE: cargo run --release --example quinn_echo -- [STREAMS] [KIB] [ROUNDS] [LISTENERS] [WORKERS]

  STREAMS    concurrent bidirectional streams per round (default 64)
  KIB        KiB echoed per stream (default 256)
  ROUNDS     rounds per server and per kind, alternating (default 5)
  LISTENERS  listener threads of the ring-backed server (default 2)
  WORKERS    tokio worker threads, shared by server and client (default 2)

Each round echoes the streams, then 20,000 QUIC datagrams of 40-200 bytes
(32 in flight). Every value is a whole number of at least 1 (at most 64
listeners and workers). Exits with status 2 on a bad argument.";

/// The checked arguments, `Ok(None)` for `--help`, or the message to
/// refuse the command line with.
fn parse_args(args: &[String]) -> Result<Option<[u64; 5]>, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(None);
    }
    if let Some(flag) = args.iter().find(|a| a.starts_with('-')) {
        return Err(format!("unknown option {flag} (see --help)"));
    }
    let mut values = [64u64, 256, 5, 2, 2];
    if args.len() > values.len() {
        return Err(format!(
            "too many arguments: {} (at most 5, see --help)",
            args.len()
        ));
    }
    let names = ["STREAMS", "KIB", "ROUNDS", "LISTENERS", "WORKERS"];
    for ((slot, arg), name) in values.iter_mut().zip(args).zip(names) {
        *slot = match arg.parse() {
            Ok(0) => return Err(format!("{name}: at least 1")),
            Ok(v) => v,
            Err(_) => return Err(format!("{name}: not a whole number: {arg}")),
        };
    }
    if values[3] > 64 || values[4] > 64 {
        return Err("LISTENERS and WORKERS: at most 64".to_string());
    }
    if values[1] > 1 << 20 {
        return Err("KIB: at most 1048576 (1 GiB per stream)".to_string());
    }
    Ok(Some(values))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [streams, kib, rounds, listeners, workers] = match parse_args(&args) {
        Ok(Some(values)) => values,
        Ok(None) => {
            println!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("quinn_echo: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (kib, listeners, workers) = (kib as usize, listeners as usize, workers as usize);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{listeners} listener threads + {workers} tokio workers (server and client) share {cores} cores");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(compare(streams, kib, rounds, listeners, workers));
    std::process::ExitCode::SUCCESS
}

async fn compare(streams: u64, kib: usize, rounds: u64, listeners: usize, workers: usize) {
    let megabytes = (streams * kib as u64) as f64 / 1024.0;
    println!(
        "per round: {streams} streams x {kib} KiB ({megabytes:.0} MiB each way), then \
         {DATAGRAMS} datagrams; {rounds} rounds, alternating servers"
    );
    let mut ring = Rounds::default();
    let mut default = Rounds::default();
    let mut through_ring = 0;
    for _ in 0..rounds {
        let (server_config, client_config) = support::configs();
        let (server, socket) =
            support::ring_server(server_config, listeners).expect("bind the ring server");
        ring.run(&server, client_config, streams, kib).await;
        through_ring += socket.delivered();
        let (server_config, client_config) = support::configs();
        let server = support::default_server(server_config).expect("bind the default server");
        default.run(&server, client_config, streams, kib).await;
    }
    let (ring_streams, default_streams) =
        (megabytes / ring.streams(), megabytes / default.streams());
    let (ring_dgrams, default_dgrams) = (
        f64::from(DATAGRAMS) / ring.datagrams(),
        f64::from(DATAGRAMS) / default.datagrams(),
    );
    println!();
    println!("| server socket | streams: MiB/s echoed (median) | datagrams: echoes/s (median) | datagram echoes lost |");
    println!("|---|---:|---:|---:|");
    println!(
        "| {listeners} listener threads -> mpring -> quinn | {ring_streams:.1} | {ring_dgrams:.0} | {} |",
        ring.lost
    );
    println!(
        "| quinn's own UDP socket | {default_streams:.1} | {default_dgrams:.0} | {} |",
        default.lost
    );
    let (streams_ratio, dgrams_ratio) =
        (ring_streams / default_streams, ring_dgrams / default_dgrams);
    println!();
    println!(
        "ring-backed / quinn's own socket: streams {streams_ratio:.2}x, datagrams {dgrams_ratio:.2}x \
         ({} for the ring-backed server)",
        match (streams_ratio >= 1.0, dgrams_ratio >= 1.0) {
            (true, true) => "faster on both",
            (false, false) => "slower on both",
            (true, false) => "faster on streams, slower on datagrams",
            (false, true) => "slower on streams, faster on datagrams",
        }
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "why: a quinn endpoint handles all its packets in one driver task, so one core does \
         its QUIC work with either socket. With quinn's own socket that task also makes the \
         receive system calls; with the ring, {listeners} listener threads make them and the \
         task only reads the ring: receiving runs beside the QUIC work, a gain only with cores \
         to spare. In exchange the ring adds a hop (listener thread -> ring -> the endpoint's \
         task, with a wake-up when the task sleeps) and threads of its own: here {} threads \
         ({listeners} listeners, {workers} tokio workers) share {cores} cores{}.",
        listeners + workers,
        if listeners + workers > cores {
            ", so they take turns and the hop costs time"
        } else {
            ", so the listeners can run beside the workers"
        }
    );
    println!(
        "the ring-backed servers received {} UDP datagrams over all rounds, every one through \
         the listeners and the ring (none bypassed it)",
        through_ring
    );
}

/// The times of one server's rounds.
#[derive(Default)]
struct Rounds {
    streams: Vec<Duration>,
    datagrams: Vec<Duration>,
    lost: u32,
}

impl Rounds {
    async fn run(
        &mut self,
        server: &quinn::Endpoint,
        client_config: quinn::ClientConfig,
        streams: u64,
        kib: usize,
    ) {
        let echo = tokio::spawn(support::echo(server.clone()));
        self.streams
            .push(streams_round(server, client_config.clone(), streams, kib).await);
        let (time, lost) = datagrams_round(server, client_config).await;
        self.datagrams.push(time);
        self.lost += lost;
        server.close(0u32.into(), b"done");
        echo.abort();
    }

    /// Median seconds of the stream rounds.
    fn streams(&mut self) -> f64 {
        median(&mut self.streams)
    }

    /// Median seconds of the datagram rounds.
    fn datagrams(&mut self) -> f64 {
        median(&mut self.datagrams)
    }
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}
