//! The sharded server: 4 quinn endpoints behind one listener group that
//! steers by connection ID (or receiving on sockets of their own), 64 client
//! connections (8 client endpoints of 8
//! connections each), each echoing streams of a few KiB, every byte
//! checked. Every shard serves some of them, and every datagram reaches the
//! ring of the shard whose endpoint owns its connection (a misrouted one
//! would be dropped by the endpoint's CID validation and its connection
//! would stall). Ends by itself (60 s limit).
#![cfg(not(miri))] // sockets, TLS and runtimes: not for Miri

mod support;

use mpring::udp::ConfigError;
use mpring_quic as quic;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SHARDS: usize = 4;
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_connections_across_four_shards() {
    let (server_config, client_config) = support::configs();
    let shards = quic::Shards::bind((Ipv4Addr::LOCALHOST, 0).into(), SHARDS, 2, server_config)
        .expect("bind the shards");
    let stats = sixty_four_connections(shards, client_config, CLIENTS, PER_CLIENT).await;
    for (k, ring) in stats.rings.iter().enumerate() {
        assert!(ring.entries > 0, "shard {k}'s ring: {stats:?}");
    }
}

/// The same 64 connections on shards that receive on sockets of their
/// own, steered in the kernel by CID (the default): 8 client sockets of 8
/// connections each, and the kernel spreads the connections over the
/// shards by their first DCID, not by client socket. No datagram is
/// forwarded: the kernel delivers each connection's datagrams to the
/// shard that answered its first flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_connections_on_shards_that_receive_themselves() {
    let (server_config, client_config) = support::configs();
    let shards = quic::Shards::builder((Ipv4Addr::LOCALHOST, 0).into(), server_config)
        .shards(SHARDS)
        .receive_in_shards(true)
        .bind()
        .expect("bind the shards");
    let stats = sixty_four_connections(shards, client_config, CLIENTS, PER_CLIENT).await;
    assert_eq!(stats.entries, 0, "nothing forwarded: {stats:?}");
}

/// Without kernel steering, each connection on a client socket of its own:
/// the kernel spreads 4-tuples over the shards' sockets (with 8 client
/// sockets it could leave a shard without one). With no client changing
/// its address, no datagram is forwarded: every connection is owned by
/// the shard whose socket its 4-tuple reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_connections_on_shards_that_receive_by_the_kernels_hash() {
    let (server_config, client_config) = support::configs();
    let shards = quic::Shards::builder((Ipv4Addr::LOCALHOST, 0).into(), server_config)
        .shards(SHARDS)
        .receive_in_shards(true)
        .kernel_steering(false)
        .bind()
        .expect("bind the shards");
    let stats = sixty_four_connections(shards, client_config, CLIENTS * PER_CLIENT, 1).await;
    assert_eq!(stats.entries, 0, "nothing forwarded: {stats:?}");
}

/// Echoes two streams on each of `clients * per_client` connections,
/// every byte checked; every shard must serve some and receive datagrams
/// for them, and no ring may drop any. Returns the final counters.
async fn sixty_four_connections(
    shards: quic::Shards,
    client_config: quinn::ClientConfig,
    clients_n: usize,
    per_client: usize,
) -> mpring::udp::UdpStats {
    tokio::time::timeout(Duration::from_secs(60), async {
        assert_eq!(shards.endpoints().len(), SHARDS);
        let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..SHARDS).map(|_| 0.into()).collect());
        {
            let accepted = accepted.clone();
            shards.serve(move |shard, connection| {
                accepted[shard].fetch_add(1, Ordering::Relaxed);
                support::echo_connection(connection)
            });
        }
        let server = shards.local_addr();

        let mut tasks = Vec::new();
        let mut clients = Vec::new();
        for c in 0..clients_n {
            let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            client.set_default_client_config(client_config.clone());
            for i in 0..per_client {
                let n = c * per_client + i;
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let connection = connect(&client, server).await;
                    // Two streams of 4 KiB + n bytes each, every byte compared.
                    let echoed = support::echo_streams(&connection, 2, 4096 + n).await;
                    connection.close(0u32.into(), b"done");
                    echoed
                }));
            }
            clients.push(client);
        }
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.expect("client task"), 2 * (4096 + n as u64));
        }
        for client in &clients {
            client.wait_idle().await;
        }

        let accepted: Vec<u64> = accepted.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        assert_eq!(
            accepted.iter().sum::<u64>(),
            (clients_n * per_client) as u64
        );
        assert!(
            accepted.iter().all(|&a| a > 0),
            "every shard serves a connection: {accepted:?}"
        );
        let delivered: Vec<u64> = (0..SHARDS).map(|k| shards.delivered(k)).collect();
        let stats = tokio::task::spawn_blocking(move || shards.shutdown())
            .await
            .unwrap();
        for (k, ring) in stats.rings.iter().enumerate() {
            assert!(ring.datagrams > 0, "shard {k}'s ring: {stats:?}");
            assert_eq!(ring.full_drops, 0, "shard {k}'s ring: {stats:?}");
        }
        assert!(delivered.iter().all(|&d| d > 0), "delivered: {delivered:?}");
        assert_eq!(stats.truncated, 0);
        eprintln!("accepted per shard {accepted:?}, delivered {delivered:?}");
        stats
    })
    .await
    .expect("the sharded echo finished in time")
}

#[test]
fn a_bad_shard_count_is_invalid_input() {
    for shards in [0, 1 << 20] {
        let (server_config, _) = support::configs();
        let e = quic::Shards::bind((Ipv4Addr::LOCALHOST, 0).into(), shards, 1, server_config)
            .expect_err("no such shard count");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{shards}: {e}");
    }
}

async fn connect(client: &quinn::Endpoint, server: SocketAddr) -> quinn::Connection {
    client
        .connect(server, "localhost")
        .unwrap()
        .await
        .expect("handshake")
}

/// The listeners' typed error inside an `InvalidInput` error.
fn config_error(e: &std::io::Error) -> Option<&ConfigError> {
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    e.get_ref().and_then(|i| i.downcast_ref::<ConfigError>())
}

#[test]
fn the_builder_refuses_a_bad_ring() {
    let (server_config, _) = support::configs();
    let addr: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let e = quic::Shards::builder(addr, server_config.clone())
        .shards(2)
        .ring_bytes(3000)
        .bind()
        .expect_err("a ring size that is not a power of two");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let e = quic::Shards::builder(addr, server_config.clone())
        .ring_bytes(1 << 16)
        .high_water_mark(1 << 17)
        .bind()
        .expect_err("a high-water mark above the ring");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let e = quic::Shards::builder(addr, server_config.clone())
        .receive_in_shards(true)
        .io_driver(false)
        .bind()
        .expect_err("sockets in the shards wait in their reactors");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let e = quic::RingSocket::builder(addr)
        .listeners(0)
        .bind()
        .expect_err("no listeners");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let e = quic::Shards::builder(addr, server_config.clone())
        .listener_coalesce(Duration::from_secs(1))
        .bind()
        .expect_err("a coalescing wait above MAX_COALESCE");
    assert!(
        matches!(config_error(&e), Some(ConfigError::Coalesce { .. })),
        "{e:?}"
    );
    for ring in [1 << 17, 1 << 18] {
        let bound = quic::RingSocket::builder(addr).ring_bytes(ring).bind();
        if ring < 1 << 18 {
            let e = bound.expect_err("a ring too small for a GRO buffer");
            assert!(
                matches!(config_error(&e), Some(ConfigError::RingTooSmall { .. })),
                "{e:?}"
            );
        } else {
            bound.expect("256 KiB holds a GRO buffer");
        }
    }
}

/// Shards without tokio's I/O driver (`io_driver(false)`) serve as the
/// default ones do: their sockets are rings, and sending polls the socket
/// itself. Their listener coalesces its receives under load (300 µs), which delays,
/// never loses. 8 connections on 2 shards, every byte checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_without_an_io_driver_serve() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = support::configs();
        let shards = quic::Shards::builder((Ipv4Addr::LOCALHOST, 0).into(), server_config)
            .shards(2)
            .io_driver(false)
            .listener_coalesce(Duration::from_micros(300))
            .bind()
            .expect("bind the shards");
        shards.serve(|_, connection| support::echo_connection(connection));
        let server = shards.local_addr();
        let mut tasks = Vec::new();
        let mut clients = Vec::new();
        for n in 0..8 {
            let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            client.set_default_client_config(client_config.clone());
            clients.push(client.clone());
            tasks.push(tokio::spawn(async move {
                let connection = connect(&client, server).await;
                let echoed = support::echo_streams(&connection, 2, 4096 + n).await;
                connection.close(0u32.into(), b"done");
                echoed
            }));
        }
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.expect("client task"), 2 * (4096 + n as u64));
        }
        for client in &clients {
            client.wait_idle().await;
        }
        let stats = tokio::task::spawn_blocking(move || shards.shutdown())
            .await
            .unwrap();
        assert!(stats.datagrams > 0);
    })
    .await
    .expect("the echo finished in time");
}

/// Shards that receive on sockets of their own split a GSO batch (GRO on)
/// whose segments carry CIDs of different shards: the shard whose socket
/// the kernel picked keeps its own segments and forwards each of the
/// others to the owner's ring. Six short-header packets with CIDs of
/// shards 0, 0, 1, 0, 1, 1 (the last one short) in one `sendmsg`; without
/// GSO or GRO in the kernel, one datagram each, and the counts are the
/// same. The endpoints drop the packets (no such connection); what is
/// checked is where each went.
#[test]
fn shards_that_receive_themselves_split_a_gso_batch() {
    let (server_config, _) = support::configs();
    // The kernel's 4-tuple hash: every datagram of the one sender reaches
    // one socket, GSO or not (the kernel's CID steering would deliver
    // single datagrams to their shards, leaving nothing to split).
    let shards = quic::Shards::builder((Ipv4Addr::LOCALHOST, 0).into(), server_config)
        .shards(2)
        .receive_in_shards(true)
        .kernel_steering(false)
        .bind()
        .expect("bind the shards");
    let cids = shards.cids();
    let plan = [
        (0, 1000),
        (0, 1000),
        (1, 1000),
        (0, 1000),
        (1, 1000),
        (1, 500),
    ];
    let mut contents = Vec::new();
    for (i, &(shard, len)) in plan.iter().enumerate() {
        let mut packet = vec![0x40 | i as u8];
        packet.extend_from_slice(&cids.generate(shard, &[i as u8 + 1; 20]));
        packet.resize(len, 0xc0 + i as u8);
        contents.extend(packet);
    }
    let sender = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let state = quinn::udp::UdpSocketState::new((&sender).into()).unwrap();
    let destination = shards.local_addr();
    let send = |contents: &[u8], segment_size| {
        let transmit = quinn::udp::Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        state.send((&sender).into(), &transmit).expect("send");
    };
    if state.max_gso_segments() >= plan.len() {
        send(&contents, Some(1000));
    } else {
        eprintln!("no UDP GSO here: one datagram per segment");
        for chunk in contents.chunks(1000) {
            send(chunk, None);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (shards.delivered(0) + shards.delivered(1) < 6 || shards.stats().datagrams < 6)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let delivered = [shards.delivered(0), shards.delivered(1)];
    let stats = shards.shutdown();
    eprintln!("{} receive calls for 6 datagrams", stats.receive_calls);
    assert_eq!(stats.datagrams, 6, "{stats:?}");
    assert_eq!(delivered.iter().sum::<u64>(), 6, "delivered {delivered:?}");
    assert_eq!(delivered, [3, 3], "each endpoint got its own three");
    // The receiving shard kept its three and forwarded the other three,
    // one entry each, into the other's ring.
    let receiver = usize::from(stats.rings[0].entries > 0);
    assert_eq!(stats.rings[receiver].entries, 0, "{stats:?}");
    assert_eq!(stats.rings[1 - receiver].entries, 3, "{stats:?}");
    for ring in &stats.rings {
        assert_eq!(ring.datagrams, 3, "{stats:?}");
        assert_eq!(ring.full_drops, 0, "{stats:?}");
    }
}
