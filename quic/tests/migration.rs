//! Client migration, on loopback: quinn's client rebinding
//! (`Endpoint::rebind`) moves a connection to a new source port and to a
//! fresh CID the server issued. The idle timeout is 2 s on both sides.
//!
//! - The naive alternative, N quinn endpoints on N `SO_REUSEPORT` sockets
//!   of one address with no steering, loses the connection: the kernel
//!   picks the socket by a hash of the 4-tuple, the new port reaches
//!   another endpoint, which does not know the connection, and the
//!   connection ends with a timeout. The test binds the group first and
//!   probes it from candidate client sockets to learn which socket each one
//!   reaches (stable while the group is unchanged), then connects from a
//!   port that reaches socket i and rebinds to one that reaches j != i.
//! - The sharded server keeps the connection across three rebinds to fresh
//!   ports, every byte of the echo checked after each, and every packet of
//!   it reaches the ring of the one shard that owns it: the listeners steer
//!   by the destination CID, which names the shard, whatever the source
//!   address.
//!
//! - Shards that receive on sockets of their own (one `SO_REUSEPORT` group,
//!   no listener threads) keep it too: after a rebind whose new port
//!   reaches another shard's socket, that shard forwards every datagram of
//!   the connection to the owner's ring. The test rebinds until that has
//!   happened (3 times at least, 12 at most: a new port reaches the
//!   owner's own socket 1 time in 4), every byte checked after each.
//!
//! - The same shards with the kernel steering their sockets by CID (the
//!   default) need no hop: every datagram of the connection reaches the
//!   owner's socket from each of four fresh ports, and nothing is
//!   forwarded. (Four ports that the 4-tuple hash would all have sent to
//!   the owner anyway: 1 time in 256.)
//!
//! N = 4 in all: one socket (or shard) per core of a small server, as in
//! `shards.rs`; with 4, a migrating client reaches another socket of the
//! naive group 3 times in 4, and the sharded test's check that one ring
//! alone saw the connection covers three rings that must stay empty.
//! Each test ends by itself (60 s limit).
#![cfg(not(miri))] // sockets, TLS and runtimes: not for Miri

mod support;

use mpring_quic as quic;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const N: usize = 4;
/// Both sides' idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Within this of the rebind, the naive group's connection has timed out.
const LOST_WITHIN: Duration = Duration::from_secs(5);
/// Candidate client sockets to probe for one that reaches another socket.
const CANDIDATES: usize = 200;

/// The test's configurations: `support::configs` with the 2 s idle timeout
/// on both sides.
fn configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
    let (mut server, mut client) = support::configs();
    let transport = || {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(256u32.into());
        t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().unwrap()));
        Arc::new(t)
    };
    server.transport_config(transport());
    client.transport_config(transport());
    (server, client)
}

fn localhost() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// One echoed stream, every byte compared; an error instead of a panic
/// when the connection fails.
async fn try_echo(connection: &quinn::Connection, stream: u64, len: usize) -> Result<(), String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let data = support::stream_bytes(stream, len);
    send.write_all(&data).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let echoed = recv.read_to_end(len + 1).await.map_err(|e| e.to_string())?;
    if echoed != data {
        return Err(format!("stream {stream}: the echo differs"));
    }
    Ok(())
}

/// Which socket of `group` (one reuseport group, non-blocking) a datagram
/// from `client` reaches. The datagram carries `tag`; anything else read on
/// the way is dropped.
fn probe(group: &[UdpSocket], client: &UdpSocket, tag: u64) -> io::Result<usize> {
    let message = format!("probe {tag}");
    client.send_to(message.as_bytes(), group[0].local_addr()?)?;
    let from = client.local_addr()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        for (k, socket) in group.iter().enumerate() {
            match socket.recv_from(&mut buf) {
                Ok((n, source)) if source == from && &buf[..n] == message.as_bytes() => {
                    return Ok(k)
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("probe {tag} from {from} reached no socket of the group"),
    ))
}

/// Client sockets `(a, i, b, j)`: from `a` a datagram reaches `group[i]`,
/// from `b` it reaches `group[j]`, `j != i`; each probed twice (the
/// kernel's choice is stable while the group is unchanged). Leaves the
/// group's sockets drained.
fn probe_two_sockets(group: &[UdpSocket]) -> (UdpSocket, usize, UdpSocket, usize) {
    for socket in group {
        socket.set_nonblocking(true).unwrap();
    }
    let mut tag = 0;
    let mut probe_twice = |client: &UdpSocket| {
        let first = probe(group, client, tag).expect("probe");
        let again = probe(group, client, tag + 1).expect("probe");
        tag += 2;
        assert_eq!(
            first, again,
            "the group's choice for one client port changed"
        );
        first
    };
    let a = UdpSocket::bind(localhost()).unwrap();
    let i = probe_twice(&a);
    let mut found = None;
    for _ in 1..CANDIDATES {
        let b = UdpSocket::bind(localhost()).unwrap();
        let j = probe_twice(&b);
        if j != i {
            found = Some((b, j));
            break;
        }
    }
    let Some((b, j)) = found else {
        panic!("no client port out of {CANDIDATES} reaches a socket other than {i}");
    };
    let mut buf = [0u8; 64];
    for socket in group {
        while socket.recv_from(&mut buf).is_ok() {}
    }
    (a, i, b, j)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_reuseport_endpoints_lose_a_migrating_connection() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = configs();
        let group = support::reuseport::reuseport_sockets(localhost(), N).expect("bind the group");
        let server = group[0].local_addr().unwrap();
        let (group, (before, i, after, j)) = tokio::task::spawn_blocking(move || {
            let found = probe_two_sockets(&group);
            (group, found)
        })
        .await
        .unwrap();
        let (before_addr, after_addr) = (before.local_addr().unwrap(), after.local_addr().unwrap());
        eprintln!("{before_addr} reaches socket {i}, {after_addr} socket {j}");

        let endpoints =
            support::reuseport::endpoints_on(group, server_config).expect("the endpoints");
        let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| 0.into()).collect());
        for (k, endpoint) in endpoints.iter().enumerate() {
            let (endpoint, accepted) = (endpoint.clone(), accepted.clone());
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    let accepted = accepted.clone();
                    tokio::spawn(async move {
                        if let Ok(connection) = incoming.await {
                            accepted[k].fetch_add(1, Ordering::Relaxed);
                            support::echo_connection(connection).await;
                        }
                    });
                }
            });
        }

        let mut client = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            before,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        client.set_default_client_config(client_config);
        let connection = client
            .connect(server, "localhost")
            .unwrap()
            .await
            .expect("handshake");
        // Before the rebind the connection works, on endpoint i.
        assert_eq!(
            support::echo_streams(&connection, 4, 8192).await,
            4 * 8192,
            "the echo before the rebind"
        );
        let accepted_now: Vec<u64> = accepted.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let mut expected = vec![0; N];
        expected[i] = 1;
        assert_eq!(
            accepted_now, expected,
            "endpoint {i}, the probed one, serves"
        );

        client.rebind(after).expect("rebind");
        let rebound = Instant::now();
        assert_eq!(client.local_addr().unwrap(), after_addr);
        // Traffic from the new port (besides the PING quinn sends on a
        // rebind), echo after echo for as long as the connection lives, so
        // that it cannot end by idling: it reaches endpoint j, which does
        // not know the connection.
        let attempts = {
            let connection = connection.clone();
            tokio::spawn(async move {
                let mut completed = 0;
                loop {
                    if let Err(e) = try_echo(&connection, 100 + completed, 8192).await {
                        return (completed, e);
                    }
                    completed += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let reason = tokio::time::timeout(LOST_WITHIN, connection.closed())
            .await
            .unwrap_or_else(|_| {
                panic!("the connection still lives {LOST_WITHIN:?} after the rebind")
            });
        let lost_after = rebound.elapsed();
        assert!(
            matches!(reason, quinn::ConnectionError::TimedOut),
            "the connection ends by timing out: {reason:?}"
        );
        let (completed, error) = attempts.await.unwrap();
        assert_eq!(completed, 0, "echoes completed after the rebind");
        eprintln!("after the rebind: timed out in {lost_after:?}; the echo: {error}");
        let accepted_now: Vec<u64> = accepted.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        assert_eq!(
            accepted_now, expected,
            "no other endpoint accepted anything"
        );

        client.close(0u32.into(), b"done");
        for endpoint in &endpoints {
            endpoint.close(0u32.into(), b"done");
        }
        client.wait_idle().await;
        for endpoint in &endpoints {
            endpoint.wait_idle().await;
        }
    })
    .await
    .expect("the naive migration test finished in time");
}

/// A sharded server with one client connection on it, echoed once.
struct OneConnection {
    shards: quic::Shards,
    /// The server side of each connection and the shard serving it.
    served: Arc<Mutex<Vec<(usize, quinn::Connection)>>>,
    client: quinn::Endpoint,
    connection: quinn::Connection,
    /// The shard that serves the connection, and its server side.
    shard: usize,
    server_side: quinn::Connection,
}

/// Serves echoes on `shards`, connects one client and echoes 4 streams.
async fn connect_one(shards: quic::Shards, client_config: quinn::ClientConfig) -> OneConnection {
    let served: Arc<Mutex<Vec<(usize, quinn::Connection)>>> = Arc::default();
    {
        let served = served.clone();
        shards.serve(move |shard, connection| {
            served.lock().unwrap().push((shard, connection.clone()));
            support::echo_connection(connection)
        });
    }
    let mut client = quinn::Endpoint::client(localhost()).unwrap();
    client.set_default_client_config(client_config);
    let connection = client
        .connect(shards.local_addr(), "localhost")
        .unwrap()
        .await
        .expect("handshake");
    assert_eq!(support::echo_streams(&connection, 4, 8192).await, 4 * 8192);
    let (shard, server_side) = {
        let served = served.lock().unwrap();
        assert_eq!(served.len(), 1, "one connection served");
        served[0].clone()
    };
    OneConnection {
        shards,
        served,
        client,
        connection,
        shard,
        server_side,
    }
}

impl OneConnection {
    /// Rebinds the client to a fresh port and echoes 4 streams of
    /// 8192 + `round` bytes, every byte checked, within the idle timeout;
    /// the server must answer the new address.
    async fn rebind_and_echo(&self, round: u64) {
        let socket = UdpSocket::bind(localhost()).unwrap();
        let new_addr = socket.local_addr().unwrap();
        self.client.rebind(socket).expect("rebind");
        let streams = 4;
        let bytes = 8192 + round as usize;
        let echoed = tokio::time::timeout(
            IDLE_TIMEOUT,
            support::echo_streams(&self.connection, streams, bytes),
        )
        .await
        .unwrap_or_else(|_| panic!("rebind {round}: the echo did not finish"));
        assert_eq!(echoed, streams * bytes as u64, "rebind {round}");
        // The server migrated too: it answers the new address.
        assert_eq!(
            self.server_side.remote_address(),
            new_addr,
            "rebind {round}"
        );
        assert!(self.connection.close_reason().is_none(), "rebind {round}");
    }

    /// Closes the connection and shuts the shards down: the serving shard
    /// and the final counters.
    async fn finish(self) -> (usize, mpring::udp::UdpStats) {
        let OneConnection {
            shards,
            served,
            client,
            connection,
            shard,
            server_side,
        } = self;
        connection.close(0u32.into(), b"done");
        client.wait_idle().await;
        drop(server_side);
        served.lock().unwrap().clear();
        let stats = tokio::task::spawn_blocking(move || shards.shutdown())
            .await
            .unwrap();
        (shard, stats)
    }

    /// [`finish`](Self::finish), then checks that only the serving shard's
    /// ring saw the connection, with no drop.
    async fn finish_on_one_ring(self) {
        let (shard, stats) = self.finish().await;
        for (k, ring) in stats.rings.iter().enumerate() {
            if k == shard {
                assert!(
                    ring.entries > 0 && ring.datagrams > 0,
                    "ring {k}: {stats:?}"
                );
            } else {
                assert_eq!(ring.entries, 0, "ring {k}: {stats:?}");
                assert_eq!(ring.datagrams, 0, "ring {k}: {stats:?}");
            }
            assert_eq!(ring.full_drops, 0, "ring {k}: {stats:?}");
        }
        eprintln!("rings: {:?}", stats.rings);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_server_keeps_a_migrating_connection() {
    const REBINDS: u64 = 3;
    /// Idle between rounds: under the idle timeout, and the rounds together
    /// span more than it, so a path lost at any rebind would have timed out.
    const PAUSE: Duration = Duration::from_millis(900);
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = configs();
        let shards = quic::Shards::builder(localhost(), server_config)
            .shards(N)
            .listeners(N)
            .bind()
            .expect("bind the shards");
        let one = connect_one(shards, client_config).await;
        assert_eq!(
            one.server_side.remote_address(),
            one.client.local_addr().unwrap()
        );

        let first_rebind = Instant::now();
        for round in 1..=REBINDS {
            one.rebind_and_echo(round).await;
            tokio::time::sleep(PAUSE).await;
            assert!(
                one.connection.close_reason().is_none(),
                "after rebind {round}: {:?}",
                one.connection.close_reason()
            );
        }
        let span = first_rebind.elapsed();
        assert!(span > IDLE_TIMEOUT, "the rebinds span {span:?}");
        assert_eq!(
            support::echo_streams(&one.connection, 2, 4096).await,
            2 * 4096
        );
        assert!(one.connection.close_reason().is_none());
        assert!(one.server_side.close_reason().is_none());
        eprintln!(
            "shard {} kept the connection across {REBINDS} rebinds over {span:?}",
            one.shard
        );
        // The Initial went by a hash of the client's DCID to this shard,
        // whose endpoint issued every CID the client used later, from
        // every port: one ring saw the whole connection.
        one.finish_on_one_ring().await;
    })
    .await
    .expect("the sharded migration test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_that_receive_themselves_keep_a_migrating_connection() {
    const MIN_REBINDS: u64 = 3;
    const MAX_REBINDS: u64 = 12;
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = configs();
        let shards = quic::Shards::builder(localhost(), server_config)
            .shards(N)
            .receive_in_shards(true)
            .kernel_steering(false)
            .bind()
            .expect("bind the shards");
        let one = connect_one(shards, client_config).await;
        assert_eq!(
            one.shards.stats().entries,
            0,
            "nothing forwarded before a rebind"
        );

        let mut rebinds = 0;
        while rebinds < MIN_REBINDS || (one.shards.stats().entries == 0 && rebinds < MAX_REBINDS) {
            rebinds += 1;
            one.rebind_and_echo(rebinds).await;
        }
        let stats = one.shards.stats();
        assert!(
            stats.entries > 0,
            "{rebinds} rebinds and no port reached another shard's socket: {stats:?}"
        );
        eprintln!(
            "shard {} kept the connection across {rebinds} rebinds",
            one.shard
        );
        // Every datagram went to the owner: kept by its socket or forwarded
        // by another into its ring; nothing into any other ring.
        one.finish_on_one_ring().await;
    })
    .await
    .expect("the migration test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_steered_in_the_kernel_keep_a_migrating_connection_without_a_hop() {
    const REBINDS: u64 = 4;
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = configs();
        let shards = quic::Shards::builder(localhost(), server_config)
            .shards(N)
            .receive_in_shards(true)
            .bind()
            .expect("bind the shards");
        let one = connect_one(shards, client_config).await;
        for round in 1..=REBINDS {
            one.rebind_and_echo(round).await;
        }
        let (shard, stats) = one.finish().await;
        // Every datagram of the connection, from every port, reached the
        // owner's socket: nothing forwarded, nothing on another shard.
        assert_eq!(stats.entries, 0, "{stats:?}");
        for (k, ring) in stats.rings.iter().enumerate() {
            if k == shard {
                assert!(ring.datagrams > 0, "shard {k}: {stats:?}");
            } else {
                assert_eq!(ring.datagrams, 0, "shard {k}: {stats:?}");
            }
        }
        eprintln!("shard {shard} kept the connection across {REBINDS} rebinds, no hop");
    })
    .await
    .expect("the migration test finished in time");
}
