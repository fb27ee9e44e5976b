//! QUIC steering on real packets: a stock quinn client talks to a quinn
//! server through a recording UDP relay on loopback. The server's endpoint
//! issues shard-encoded CIDs ([`mpring_quic::ShardCidGenerator`], shard 3 of
//! 4, 8 bytes). Every datagram the client sent is then steered with
//! `mpring::udp::steer::QuicSteering`: the first flight (the client's own
//! 20-byte DCID) goes by a hash of that DCID, to one ring, from any source;
//! everything after it carries a server CID and goes to shard 3, the fixed
//! bit greased or not, before and after the client moves to a new port.
#![cfg(not(miri))] // sockets, TLS and a runtime: not for Miri

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mpring::udp::steer::{
    parse_dcid, HeaderForm, QuicSteering, Route, RouteBy, ShardCids, QUIC_V1,
};

const SHARDS: usize = 4;
const SHARD: usize = 3;
const CID_LEN: usize = 8;

/// Picks a recorded datagram to print.
type Pick = fn(&[u8]) -> bool;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_client_datagrams_steer_by_their_cids() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let cids = ShardCids::new(SHARDS, CID_LEN).unwrap();
        let relayed = support::relay::Relayed::connect(cids, SHARD).await;
        let connection = relayed.connection.clone();
        assert_eq!(
            support::echo_streams(&connection, 4, 16 * 1024).await,
            64 * 1024
        );
        let first_source = relayed.recording.lock().unwrap()[0].0;

        // The client moves to a new port: a new path, a fresh server CID.
        relayed
            .client
            .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        assert_eq!(
            support::echo_streams(&connection, 4, 16 * 1024).await,
            64 * 1024
        );
        let recorded = relayed.finish().await;
        check(cids, first_source, &recorded);
    })
    .await
    .expect("the test finished in time");
}

fn check(cids: ShardCids, first_source: SocketAddr, recorded: &[(SocketAddr, Vec<u8>)]) {
    // The first datagram: a v1 Initial (long header, type 0), with the
    // client's own 20-byte DCID.
    let (_, first) = &recorded[0];
    eprintln!(
        "first datagram ({} bytes): {}",
        first.len(),
        hex(&first[..64])
    );
    assert!(first.len() >= 1200, "an Initial datagram is padded");
    let dcid = parse_dcid(first, CID_LEN).expect("a DCID");
    assert_eq!(dcid.form, HeaderForm::Long { version: QUIC_V1 });
    assert_eq!(first[0] & 0xb0, 0x80, "an Initial (fixed bit aside)");
    assert_eq!(dcid.cid.len(), 20, "quinn clients choose 20-byte DCIDs");
    let initial_dcid = dcid.cid.to_vec();
    assert_eq!(cids.shard_of(&initial_dcid), None);

    let other: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    // With 4 shards (the generator's), and with more: shard 3's CIDs mean
    // shard 3 in any count above 3.
    for shards in [SHARDS, 8, 256] {
        let steering = QuicSteering::new(ShardCids::new(shards, CID_LEN).unwrap());
        let first_route = steering.route(first_source, first);
        assert_eq!(first_route.by, RouteBy::DcidHash);
        let (mut first_flight, mut long_to_server_cid, mut short) = (0, 0, 0);
        let (mut greased, mut sources) = (0, Vec::new());
        let mut server_cids: Vec<Vec<u8>> = Vec::new();
        for (i, (from, datagram)) in recorded.iter().enumerate() {
            let d = parse_dcid(datagram, CID_LEN).expect("every client datagram has a DCID");
            let route = steering.route(*from, datagram);
            let expect = if d.cid == &initial_dcid[..] {
                first_flight += 1;
                first_route
            } else {
                assert_eq!(
                    cids.shard_of(d.cid),
                    Some(SHARD),
                    "datagram {i}: DCID {} is not one of shard {SHARD}'s",
                    hex(d.cid)
                );
                match d.form {
                    HeaderForm::Short => short += 1,
                    HeaderForm::Long { .. } => long_to_server_cid += 1,
                }
                if !server_cids.iter().any(|c| c == d.cid) {
                    server_cids.push(d.cid.to_vec());
                }
                Route {
                    ring: SHARD,
                    by: RouteBy::ShardCid,
                }
            };
            assert_eq!(route, expect, "datagram {i}: {}", hex(&datagram[..24]));
            // From anywhere, the fixed bit either way: the same ring.
            assert_eq!(steering.route(other, datagram), expect);
            let mut flipped = datagram.clone();
            flipped[0] ^= 0x40;
            assert_eq!(steering.route(*from, &flipped), expect);
            greased += usize::from(datagram[0] & 0x40 == 0);
            if !sources.contains(from) {
                sources.push(*from);
            }
        }
        if shards == SHARDS {
            eprintln!(
                "{} datagrams: {first_flight} with the client's DCID (ring {}), \
                 {long_to_server_cid} long and {short} short headers to {} server CIDs, \
                 {greased} with the fixed bit cleared, from {} sources",
                recorded.len(),
                first_route.ring,
                server_cids.len(),
                sources.len()
            );
            // Samples, to paste into mpring's own steering tests.
            let samples: [(&str, Pick); 3] = [
                ("a long header to a server CID", |d| {
                    d[0] & 0x80 != 0 && d[5] == 8
                }),
                ("a short header, fixed bit set", |d| d[0] & 0xc0 == 0x40),
                ("a short header, fixed bit cleared", |d| d[0] & 0xc0 == 0),
            ];
            for (what, pick) in samples {
                if let Some((_, d)) = recorded.iter().find(|(_, d)| pick(d)) {
                    eprintln!("{what}: {}", hex(&d[..d.len().min(32)]));
                }
            }
        }
        assert!(first_flight >= 1);
        assert!(long_to_server_cid >= 1, "the client's Handshake packets");
        assert!(short >= 10, "{short} short-header datagrams");
        assert_eq!(sources.len(), 2, "before and after the rebinding");
        assert!(
            server_cids.len() >= 2,
            "a fresh server CID on the new path: {server_cids:02x?}"
        );
    }
}
