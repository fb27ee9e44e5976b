//! A QUIC echo server (quinn) whose socket receives through SO_REUSEPORT
//! listener threads and mpring, next to the same server on quinn's own
//! socket: a stock quinn client pushes many concurrent streams through
//! each, every echoed byte is checked, and the throughputs are printed side
//! by side.
//!
//! ```text
//! cargo run --release --example quinn_echo -- [streams] [KiB per stream] [rounds]
//! ```

use mpring_quic as quic;

use std::time::{Duration, Instant};

async fn measure(
    server: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    streams: u64,
    kib: usize,
) -> Duration {
    let addr = server.local_addr().unwrap();
    let echo = tokio::spawn(quic::echo(server.clone()));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);
    let connection = client
        .connect(addr, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    let start = Instant::now();
    let echoed = quic::echo_streams(&connection, streams, kib * 1024).await;
    let elapsed = start.elapsed();
    assert_eq!(echoed, streams * kib as u64 * 1024);
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    echo.abort();
    elapsed
}

const HELP: &str = "\
A quinn echo server on a ring-backed socket next to quinn's own socket.

USAGE: cargo run --release --example quinn_echo -- [STREAMS] [KIB] [ROUNDS]

  STREAMS   concurrent bidirectional streams per round (default 64)
  KIB       KiB echoed per stream (default 256)
  ROUNDS    rounds per server, alternating (default 5)";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut values = [64u64, 256, 5];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return;
    }
    if args.len() > values.len() {
        eprintln!("too many arguments\n\n{HELP}");
        std::process::exit(2);
    }
    for (slot, arg) in values.iter_mut().zip(&args) {
        match arg.parse() {
            Ok(v) => *slot = v,
            Err(_) => {
                eprintln!("not a number: {arg}\n\n{HELP}");
                std::process::exit(2);
            }
        }
    }
    let [streams, kib, rounds] = values;
    let kib = kib as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("2 listener threads + 2 tokio workers + the client share {cores} cores");
    let megabytes = (streams * kib as u64) as f64 / 1024.0;
    println!("{streams} streams x {kib} KiB echoed per round ({megabytes:.0} MiB each way), {rounds} rounds, alternating servers");
    let (mut ring, mut default) = (Vec::new(), Vec::new());
    let mut through_ring = 0;
    for _ in 0..rounds {
        let (server_config, client_config) = quic::configs();
        let (server, socket) = quic::ring_server(server_config, 2).expect("bind the ring server");
        ring.push(measure(server, client_config, streams, kib).await);
        through_ring += socket.delivered();
        let (server_config, client_config) = quic::configs();
        let server = quic::default_server(server_config).expect("bind the default server");
        default.push(measure(server, client_config, streams, kib).await);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ring, default) = (median(&mut ring), median(&mut default));
    let rate = |d: Duration| megabytes / d.as_secs_f64();
    println!();
    println!("| server socket | median time | MiB/s echoed (each way) |");
    println!("|---|---:|---:|");
    println!(
        "| 2 listener threads -> mpring -> quinn | {:.3} s | {:.1} |",
        ring.as_secs_f64(),
        rate(ring)
    );
    println!(
        "| quinn's own UDP socket | {:.3} s | {:.1} |",
        default.as_secs_f64(),
        rate(default)
    );
    println!();
    println!("ring / default: {:.2}", rate(ring) / rate(default));
    println!("datagrams the ring-backed servers received, all through the ring: {through_ring}");
}
