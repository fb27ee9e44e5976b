//! A recording UDP relay: what a quinn client sends, as it sent it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// What the relay saw from the client: (source, datagram), in order.
pub type Recording = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP relay: datagrams to `front` are recorded and sent on to `server`
/// from a socket of its own; the server's answers go back to the client's
/// latest address.
pub async fn relay(server: SocketAddr) -> (SocketAddr, Recording, tokio::task::JoinHandle<()>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let recording: Recording = Arc::default();
    let client = Arc::new(Mutex::new(None::<SocketAddr>));
    let upstream = {
        let (front, back, recording, client) = (
            front.clone(),
            back.clone(),
            recording.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                recording.lock().unwrap().push((from, buf[..n].to_vec()));
                *client.lock().unwrap() = Some(from);
                let _ = back.send(&buf[..n]).await;
            }
        })
    };
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
        upstream.abort();
    });
    (addr, recording, task)
}

/// A quinn echo server on loopback that issues CIDs of shard `shard` of
/// `cids`, a recording relay in front of it, and a stock quinn client
/// connected through the relay.
pub struct Relayed {
    pub server: quinn::Endpoint,
    pub client: quinn::Endpoint,
    pub connection: quinn::Connection,
    /// What the client sent, as it sent it.
    pub recording: Recording,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Relayed {
    /// Starts the server and the relay and connects the client (in the
    /// current tokio runtime).
    pub async fn connect(cids: mpring::udp::steer::ShardCids, shard: usize) -> Relayed {
        let (server_config, client_config) = super::configs();
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .cid_generator(mpring_quic::ShardCidGenerator::factory(cids, shard).unwrap());
        let server = quinn::Endpoint::new(
            endpoint_config,
            Some(server_config),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        let echo = tokio::spawn(super::echo(server.clone()));
        let (relay_addr, recording, relay) = relay(server.local_addr().unwrap()).await;
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_config);
        let connection = client
            .connect(relay_addr, "localhost")
            .unwrap()
            .await
            .expect("handshake through the relay");
        Relayed {
            server,
            client,
            connection,
            recording,
            tasks: [echo, relay],
        }
    }

    /// Closes the connection, waits for the client to idle, stops the
    /// server and the relay; returns what the client sent.
    pub async fn finish(self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.connection.close(0u32.into(), b"done");
        self.client.wait_idle().await;
        self.server.close(0u32.into(), b"done");
        for task in &self.tasks {
            task.abort();
        }
        let recorded = self.recording.lock().unwrap().clone();
        recorded
    }
}
