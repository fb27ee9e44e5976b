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
