//! A real QUIC stack on the ring: a quinn server whose socket receives
//! through listener threads and mpring, a stock quinn client (tokio, rustls,
//! a self-signed certificate), many concurrent bidirectional streams and
//! QUIC datagrams echoed, every byte checked. Ends by itself (60 s limit).
#![cfg(not(miri))] // sockets, TLS and a runtime: not for Miri

mod support;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_echoes_streams_and_datagrams_through_the_ring() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = support::configs();
        let (server, socket) =
            support::ring_server(server_config, 2).expect("bind the ring server");
        let echo = tokio::spawn(support::echo(server.clone()));
        let (client, connection) = support::connect(&server, client_config).await;

        // Streams: 64 at once, 32 KiB each, every echoed byte compared.
        let echoed = support::echo_streams(&connection, 64, 32 * 1024).await;
        assert_eq!(echoed, 64 * 32 * 1024);
        // The server discovered the path's MTU (loopback's is 64 KiB):
        // most of what it sent was larger than QUIC's initial 1,200 bytes.
        let rx = connection.stats().udp_rx;
        assert!(
            rx.bytes > 1200 * rx.datagrams,
            "{} bytes in {} datagrams from the server",
            rx.bytes,
            rx.datagrams
        );

        // Datagrams: ping-pong, each echo compared with what was sent.
        let mut lost = 0;
        for seq in 0..50u32 {
            let len = 16 + (seq as usize * 37) % 900;
            let mut payload = support::stream_bytes(u64::from(seq) + 1000, len);
            payload[..4].copy_from_slice(&seq.to_le_bytes());
            connection
                .send_datagram(payload.clone().into())
                .expect("send a datagram");
            match tokio::time::timeout(Duration::from_secs(2), connection.read_datagram()).await {
                Ok(echo) => assert_eq!(&echo.expect("read a datagram")[..], &payload[..]),
                Err(_) => lost += 1, // datagrams are unreliable, even on loopback
            }
        }
        assert!(lost <= 5, "{lost} of 50 datagram echoes lost");

        connection.close(0u32.into(), b"done");
        client.wait_idle().await;
        server.close(0u32.into(), b"done");
        server.wait_idle().await;
        echo.abort();
        // Every datagram the server saw came through the ring: 2 MiB of
        // stream data each way is well over 1,000 datagrams.
        let stats = socket.stats();
        assert!(
            socket.delivered() > 1000,
            "{} through the ring",
            socket.delivered()
        );
        assert_eq!(socket.delivered() + stats.full_drops, stats.datagrams);
        assert_eq!((stats.truncated, socket.oversized()), (0, 0));
    })
    .await
    .expect("the echo test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_at_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (server_config, client_config) = support::configs();
        let (server, socket) =
            support::ring_server(server_config, 2).expect("bind the ring server");
        let echo = tokio::spawn(support::echo(server.clone()));
        let clients: Vec<_> = (0..32u64)
            .map(|i| {
                let (server, client_config) = (server.clone(), client_config.clone());
                tokio::spawn(async move {
                    let (client, connection) = support::connect(&server, client_config).await;
                    // Four streams of 8 KiB each, every byte compared.
                    let echoed = support::echo_streams(&connection, 4, 8 * 1024 + i as usize).await;
                    connection.close(0u32.into(), b"done");
                    client.wait_idle().await;
                    echoed
                })
            })
            .collect();
        for (i, c) in clients.into_iter().enumerate() {
            assert_eq!(c.await.expect("client task"), 4 * (8 * 1024 + i as u64));
        }
        server.close(0u32.into(), b"done");
        server.wait_idle().await;
        echo.abort();
        assert!(
            socket.delivered() >= 32 * 4,
            "{} through the ring",
            socket.delivered()
        );
    })
    .await
    .expect("32 clients finished in time");
}

/// A ring socket built with `gro(false)` keeps GRO off on its listener's
/// socket, though quinn-udp turns it on for the socket it sends from (the
/// same one): a GSO batch of three segments arrives as three datagrams,
/// none cut to the listener's one-datagram buffers.
#[test]
fn a_ring_socket_without_gro_gets_every_segment_whole() {
    let socket = mpring_quic::RingSocket::builder((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .gro(false)
        .bind()
        .expect("bind the ring socket");
    let sender = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
    let state = quinn::udp::UdpSocketState::new((&sender).into()).unwrap();
    if state.max_gso_segments() < 3 {
        eprintln!("no UDP GSO here: nothing to check");
        return;
    }
    let contents: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let transmit = quinn::udp::Transmit {
        destination: quinn::AsyncUdpSocket::local_addr(&socket).unwrap(),
        ecn: None,
        contents: &contents,
        segment_size: Some(1000),
        src_ip: None,
    };
    state.send((&sender).into(), &transmit).expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while socket.stats().datagrams + socket.stats().truncated < 3
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = socket.stats();
    assert_eq!((stats.datagrams, stats.truncated), (3, 0), "{stats:?}");
    assert_eq!(stats.entries, 3, "one entry per datagram: {stats:?}");
}

/// `listener_coalesce_after` reaches the listener: one datagram is a
/// wake-up worth a coalescing wait when 1 is asked for, and never with the
/// default of 8.
#[test]
fn a_ring_socket_coalesces_after_as_many_datagrams_as_asked() {
    for after in [Some(1), None] {
        let builder = mpring_quic::RingSocket::builder((std::net::Ipv4Addr::LOCALHOST, 0).into())
            .listener_coalesce(Duration::from_millis(10));
        let builder = match after {
            Some(n) => builder.listener_coalesce_after(n),
            None => builder,
        };
        let socket = builder.bind().expect("bind the ring socket");
        let to = quinn::AsyncUdpSocket::local_addr(&socket).unwrap();
        let sender = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        sender.send_to(b"one datagram", to).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Received, and (when it will) counted its wait; without one, long
        // enough for a 10 ms wait to have been counted.
        let settled = |s: &mpring::udp::UdpStats| {
            s.datagrams == 1 && (after.is_none() || s.coalescing_waits > 0)
        };
        while !settled(&socket.stats()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if after.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stats = socket.stats();
        assert_eq!(stats.datagrams, 1, "{stats:?}");
        match after {
            Some(_) => assert_eq!(stats.coalescing_waits, 1, "{stats:?}"),
            None => assert_eq!(stats.coalescing_waits, 0, "{stats:?}"),
        }
    }
}
