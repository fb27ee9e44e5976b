//! Helpers of the quinn tests and comparisons: a self-signed certificate,
//! servers on loopback, a client, an echo handler and checked echo rounds.
//! Shared by `quic/tests/*` and the comparison crate's quinn examples
//! (`#[path]`), so that none of it is public API of `mpring-quic`.
#![allow(dead_code)] // each includer uses some of them

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use mpring_quic::RingSocket;

pub mod relay;
pub mod reuseport;

/// A self-signed certificate for "localhost" and the server and client
/// configurations that use it.
pub fn configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let mut server =
        quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key.into()).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(256u32.into());
    server.transport_config(Arc::new(transport));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    (server, client)
}

/// A quinn server endpoint on a ring-backed socket on a loopback port, and
/// the socket (for its counters).
pub fn ring_server(
    config: quinn::ServerConfig,
    listeners: usize,
) -> io::Result<(quinn::Endpoint, Arc<RingSocket>)> {
    let socket = Arc::new(RingSocket::bind(
        (Ipv4Addr::LOCALHOST, 0).into(),
        listeners,
    )?);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.clone(),
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok((endpoint, socket))
}

/// A quinn server endpoint on quinn's own socket, for comparison.
pub fn default_server(config: quinn::ServerConfig) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(config, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
}

/// A stock quinn client endpoint connected to `server`.
pub async fn connect(
    server: &quinn::Endpoint,
    config: quinn::ClientConfig,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(config);
    let addr = server.local_addr().unwrap();
    let connection = client
        .connect(addr, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    (client, connection)
}

/// Echoes every bidirectional stream and every datagram of every
/// connection until the endpoint closes.
pub async fn echo(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                echo_connection(connection).await;
            }
        });
    }
}

/// Echoes every bidirectional stream and every datagram of `connection`
/// until it closes.
pub async fn echo_connection(connection: quinn::Connection) {
    let datagrams = {
        let connection = connection.clone();
        tokio::spawn(async move {
            while let Ok(d) = connection.read_datagram().await {
                let _ = connection.send_datagram(d);
            }
        })
    };
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                if send.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
    datagrams.abort();
}

/// The bytes of stream `stream`: a pattern no two streams share.
pub fn stream_bytes(stream: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ stream.wrapping_mul(0x9E37)) as u8)
        .collect()
}

/// Opens `streams` bidirectional streams of `bytes` bytes each, all at
/// once, and checks every echoed byte. Returns the bytes echoed.
pub async fn echo_streams(connection: &quinn::Connection, streams: u64, bytes: usize) -> u64 {
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let connection = connection.clone();
        tasks.push(tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
            let data = stream_bytes(stream, bytes);
            let writer = {
                let data = data.clone();
                tokio::spawn(async move {
                    send.write_all(&data).await.expect("write");
                    send.finish().expect("finish");
                })
            };
            let echoed = recv.read_to_end(bytes + 1).await.expect("read the echo");
            writer.await.unwrap();
            assert_eq!(echoed.len(), data.len(), "stream {stream}: length");
            assert!(echoed == data, "stream {stream}: bytes differ");
            echoed.len() as u64
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("stream task");
    }
    total
}
