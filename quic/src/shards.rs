//! A sharded quinn server: one listener group steering every datagram by
//! its QUIC connection ID to one of N rings, and one quinn endpoint per
//! ring, each driven on its own thread by its own current-thread tokio
//! runtime.
//!
//! Receive: `mpring::udp::Listeners` (K `SO_REUSEPORT` sockets, GRO,
//! Initial packets shed above a ring's high-water mark, as in
//! [`RingSocket`]) steer with [`QuicSteering`]: a packet whose destination
//! CID names a shard goes to that shard's ring, a client's first flight by a
//! hash of its own DCID (the same ring for every retransmit). Each shard's
//! endpoint issues CIDs that name it ([`ShardCidGenerator`]), so every
//! packet of a connection after the handshake reaches the endpoint that
//! owns it, from whatever address it comes (migration, NAT rebinding).
//! Send: every endpoint sends from the group's address.
//!
//! Or, with [`ShardsBuilder::receive_in_shards`], no listener threads:
//! each shard receives on one socket of an `SO_REUSEPORT` group and
//! forwards through the rings only what belongs to another shard.
//!
//! All shards share one [`quinn::ServerConfig`] (one certificate, one
//! token key: a retry or address-validation token one shard issued is
//! valid on every shard, which a client's next first flight may reach).
//!
//! # Stateless-reset keys
//! Each shard's [`quinn::EndpointConfig`] is made by
//! `EndpointConfig::default()`, which draws a fresh random reset key on
//! every call: the shards' keys differ. Two layers keep a misrouted
//! packet from drawing a reset that kills a connection:
//! - [`ShardCidGenerator`]'s `validate` rejects other shards' CIDs, and
//!   quinn drops a short-header packet with an invalid CID instead of
//!   answering it with a stateless reset; so a packet that reached the
//!   wrong shard is never answered at all.
//! - Were one shard to answer a packet meant for another (a CID that
//!   decodes to it by chance, or a bug), the reset token it sends is an
//!   HMAC of the CID under its own key, not the owning shard's: it does
//!   not match the token the owner handed the peer for that CID, and the
//!   peer ignores it. One shared key would make such a reset valid.
//!
//! ```no_run
//! # fn run(server_config: quinn::ServerConfig) -> std::io::Result<()> {
//! let shards = mpring_quic::Shards::bind("0.0.0.0:4433".parse().unwrap(), 4, 2, server_config)?;
//! shards.serve(|shard, connection| async move {
//!     while let Ok((mut send, mut recv)) = connection.accept_bi().await {
//!         // served on shard `shard`'s thread
//!         # let _ = (&mut send, &mut recv, shard);
//!     }
//! });
//! // ... until it is time to stop (this blocks: from async code, call it
//! // inside `tokio::task::spawn_blocking`):
//! let stats = shards.shutdown();
//! println!("{} datagrams received", stats.datagrams);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use mpring::udp::steer::{QuicSteering, ShardCids};
use mpring::udp::{Listeners, UdpStats};
use quinn::AsyncUdpSocket;
use tokio::sync::oneshot;

use crate::cid::ShardCidGenerator;
use crate::own_socket::{reuseport_group, OwnCounters, OwnSocket};
use crate::socket::{recv_options, RecvOptions, RingSocket};

/// Length of the CIDs the shards issue.
pub const SHARD_CID_LEN: usize = 8;

/// N quinn server endpoints behind one steering listener group, or each on
/// a socket of its own ([`ShardsBuilder::receive_in_shards`]); see the
/// [module docs](self). Dropping it closes the endpoints and joins the
/// shard threads, as [`shutdown`](Shards::shutdown) does.
pub struct Shards {
    endpoints: Vec<quinn::Endpoint>,
    runtimes: Vec<tokio::runtime::Handle>,
    /// Dropping a sender ends its shard's thread once its endpoint is idle
    /// (`stop` closes the endpoints first).
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    receive: Receive,
    local: SocketAddr,
    cids: ShardCids,
}

/// Where the shards' datagrams come from.
enum Receive {
    /// Listener threads steer to the rings.
    Listeners {
        group: Arc<Listeners>,
        sockets: Vec<Arc<RingSocket>>,
    },
    /// Each shard receives on its own socket and forwards through the rings.
    InShards { counters: Vec<Arc<OwnCounters>> },
}

/// Builds [`Shards`]: see [`Shards::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `bind`"]
pub struct ShardsBuilder {
    options: RecvOptions,
    shards: usize,
    server_config: quinn::ServerConfig,
    io_driver: bool,
    in_shards: bool,
    kernel_steering: bool,
}

impl ShardsBuilder {
    /// Shards: rings, quinn endpoints and their threads, one each. Default
    /// 1; at most [`MAX_SHARDS`](mpring::udp::steer::MAX_SHARDS).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    recv_options!();

    /// Whether each shard's runtime has tokio's I/O driver. Default `true`,
    /// so that connection handlers may use tokio's sockets and the like.
    /// Shards fed by listener threads need none (their sockets are rings,
    /// and sending polls the socket itself): with `false` a shard's thread
    /// sleeps on a futex instead of in `epoll_wait`, and a listener wakes
    /// it with one system call instead of an eventfd write and read (in
    /// `quic_shards` on 2 cores, about 4% less server CPU per datagram,
    /// within the runs' noise). A handler that uses tokio I/O then panics.
    /// Shards that [`receive_in_shards`](Self::receive_in_shards) need it.
    pub fn io_driver(mut self, on: bool) -> Self {
        self.io_driver = on;
        self
    }

    /// Whether each shard receives on a socket of its own instead of
    /// through listener threads. Default `false`.
    ///
    /// With `true`, the group is N `SO_REUSEPORT` sockets, one per shard,
    /// and no listener thread: the kernel picks a datagram's socket, by its
    /// CID ([`kernel_steering`](Self::kernel_steering), the default) or by
    /// its 4-tuple, and the shard's endpoint receives from it with
    /// quinn-udp (`recvmmsg`, GRO) straight into quinn's buffers. Each
    /// segment is steered again: one whose CID names another shard (with
    /// the kernel's 4-tuple hash, a client that migrated or a NAT that
    /// rebound it) is pushed into that shard's ring, which each shard
    /// drains besides its socket; everything else stays, a client's first
    /// flight included, so that the shard that answers it owns the
    /// connection. Replies leave from the shard's own socket.
    ///
    /// What it trades: no listener thread and no hand-over per datagram
    /// (on 2 cores, about the CPU per datagram of quinn's own socket on as
    /// many threads: see BENCHMARKS.md; at light load, where a listener
    /// wakes for each datagram and then wakes its shard, one wake-up per
    /// datagram instead of two: in `quic_shards` with 4 connections and one
    /// datagram in flight each, 0.92-1.33x quinn's CPU per datagram and
    /// an RTT at most 25 µs above quinn's, against 1.37-1.48x and 1.5-2.4x the RTT with
    /// a listener thread), against no thread that drains the
    /// sockets while a shard is busy (a burst the shard cannot take in time
    /// waits in, or overflows, its socket's receive buffer), and no shedding
    /// ([`shed_initial`](Self::shed_initial)). [`listeners`](Self::listeners),
    /// `shed_initial`, [`high_water_mark`](Self::high_water_mark) and
    /// [`listener_coalesce`](Self::listener_coalesce) (with
    /// [`listener_coalesce_after`](Self::listener_coalesce_after)) are then unused (a
    /// mark above the ring is still refused); [`ring_bytes`](Self::ring_bytes)
    /// sizes the rings of forwarded datagrams.
    ///
    /// A client's first flight whose DCID happens to decode as one of the
    /// shards' CIDs (an 8-byte DCID of a valid encoding: quinn clients
    /// choose 20 bytes, some browsers 8) is owned by the shard its DCID
    /// names; without kernel steering, every datagram of it then takes a
    /// hop through that shard's ring.
    ///
    /// Needs the [`io_driver`](Self::io_driver) (each socket waits in its
    /// shard's reactor): `bind` refuses `false` for both.
    ///
    /// ```no_run
    /// # fn run(server_config: quinn::ServerConfig) -> std::io::Result<()> {
    /// let shards = mpring_quic::Shards::builder("0.0.0.0:4433".parse().unwrap(), server_config)
    ///     .shards(4)
    ///     .receive_in_shards(true)
    ///     .bind()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn receive_in_shards(mut self, on: bool) -> Self {
        self.in_shards = on;
        self
    }

    /// Whether shards that [`receive_in_shards`](Self::receive_in_shards)
    /// have the kernel steer their sockets by CID. Default `true`; unused
    /// with listener threads.
    ///
    /// With `true`, the group carries a classic-BPF program
    /// ([`ShardCids::attach_reuseport_steering`]) that delivers every
    /// datagram to a shard's CID to that shard's socket, from whatever
    /// address: a client that migrated, or a NAT that rebound it, needs no
    /// hop through a ring. A client's first flight goes by its DCID's first
    /// four bytes, so the kernel spreads connections, not client sockets
    /// (several connections behind one client address reach several
    /// shards), and a retransmit reaches the same shard from a new address.
    /// With `false`, the kernel's hash of the 4-tuple picks the socket, and
    /// a shard forwards what names another through that shard's ring.
    /// Either way each shard steers every segment it receives as well. On
    /// 2 cores (BENCHMARKS.md), with clients that move to a new port every
    /// 200 ms, the program spent 0.94-0.98x the CPU per datagram of the
    /// 4-tuple hash, whose shards forwarded about a third of what they
    /// received; with clients that stay, the same with one connection per
    /// client socket, and 4-5% more with 8 (against half the echoes lost
    /// in a burst).
    ///
    /// `bind` fails with the system call's error where the kernel refuses
    /// the program (Linux before 4.5, or a sandbox that filters
    /// `setsockopt`): turn it off there.
    pub fn kernel_steering(mut self, on: bool) -> Self {
        self.kernel_steering = on;
        self
    }

    /// Makes the rings, binds the sockets, starts the listener threads (if
    /// any) and one thread per shard, each driving its endpoint.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for 0 shards or more than the CID
    /// encoding allows ([`ShardCids::new`]'s error inside), 0 listeners
    /// or a coalescing wait above
    /// [`MAX_COALESCE`](mpring::udp::MAX_COALESCE) (with listener threads), a
    /// ring size that is not a power of two or a high-water mark above it,
    /// [`receive_in_shards`](Self::receive_in_shards) without the
    /// [`io_driver`](Self::io_driver); any error binding the sockets or
    /// starting the threads.
    pub fn bind(self) -> io::Result<Shards> {
        Shards::start(self)
    }
}

impl Shards {
    /// Binds `listeners` sockets to `addr` (port 0: a free port) with
    /// listener threads steering to `shards` rings, and starts one quinn
    /// server endpoint per ring on a thread of its own, all with
    /// `server_config`. The receive path has the defaults of
    /// [`builder`](Shards::builder).
    ///
    /// # Errors
    /// As [`ShardsBuilder::bind`].
    pub fn bind(
        addr: SocketAddr,
        shards: usize,
        listeners: usize,
        server_config: quinn::ServerConfig,
    ) -> io::Result<Shards> {
        Shards::builder(addr, server_config)
            .shards(shards)
            .listeners(listeners)
            .bind()
    }

    /// A builder for shards on `addr` (port 0: a free port) serving with
    /// `server_config`, to set the shard count and each shard's ring.
    ///
    /// ```no_run
    /// # fn run(server_config: quinn::ServerConfig) -> std::io::Result<()> {
    /// let shards = mpring_quic::Shards::builder("0.0.0.0:4433".parse().unwrap(), server_config)
    ///     .shards(8)
    ///     .listeners(4)
    ///     .ring_bytes(8 << 20)
    ///     .bind()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(addr: SocketAddr, server_config: quinn::ServerConfig) -> ShardsBuilder {
        ShardsBuilder {
            options: RecvOptions::new(addr),
            shards: 1,
            server_config,
            io_driver: true,
            in_shards: false,
            kernel_steering: true,
        }
    }

    fn start(builder: ShardsBuilder) -> io::Result<Shards> {
        let ShardsBuilder {
            options,
            shards,
            server_config,
            io_driver,
            in_shards,
            kernel_steering,
        } = builder;
        let invalid = |e| io::Error::new(ErrorKind::InvalidInput, e);
        let cids = ShardCids::new(shards, SHARD_CID_LEN).map_err(invalid)?;
        if in_shards && !io_driver {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "receive_in_shards needs the I/O driver: each socket waits in its shard's reactor",
            ));
        }
        let (producers, consumers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| options.ring())
            .collect::<io::Result<_>>()?;
        let steering = QuicSteering::new(cids);
        // What each shard thread makes its socket from.
        let mut makers: Vec<MakeSocket> = Vec::with_capacity(shards);
        let (receive, local) = if in_shards {
            let steer_in_kernel = kernel_steering.then_some(cids);
            let sockets =
                reuseport_group(options.addr, shards, LISTENER_RECV_BUFFER, steer_in_kernel)?;
            let local = sockets[0].local_addr()?;
            let counters: Vec<_> = (0..shards)
                .map(|_| Arc::new(OwnCounters::new(shards)))
                .collect();
            for (shard, (socket, consumer)) in sockets.into_iter().zip(consumers).enumerate() {
                let (producers, counters) = (producers.clone(), counters[shard].clone());
                let gro = options.gro;
                makers.push(Box::new(move || {
                    let socket = OwnSocket::new(
                        shard, socket, gro, steering, producers, consumer, counters,
                    )?;
                    Ok(Arc::new(socket) as Arc<dyn AsyncUdpSocket>)
                }));
            }
            (Receive::InShards { counters }, local)
        } else {
            let group = Arc::new(
                options
                    .listeners()
                    .spawn_steered(producers, move |meta, d| steering.steer(meta, d))?,
            );
            let sockets = consumers
                .into_iter()
                .map(|consumer| {
                    Ok(Arc::new(RingSocket::from_consumer(
                        consumer,
                        group.clone(),
                    )?))
                })
                .collect::<io::Result<Vec<_>>>()?;
            for socket in &sockets {
                let socket = socket.clone();
                makers.push(Box::new(move || Ok(socket as Arc<dyn AsyncUdpSocket>)));
            }
            let local = group.local_addr();
            (Receive::Listeners { group, sockets }, local)
        };
        let mut this = Shards {
            endpoints: Vec::with_capacity(shards),
            runtimes: Vec::with_capacity(shards),
            stops: Vec::with_capacity(shards),
            threads: Vec::with_capacity(shards),
            receive,
            local,
            cids,
        };
        // On an error below, dropping `this` stops the shards started so far.
        for (shard, make_socket) in makers.into_iter().enumerate() {
            let mut config = quinn::EndpointConfig::default(); // a fresh reset key
            config.cid_generator(ShardCidGenerator::factory(cids, shard).map_err(invalid)?);
            let (stop, stopped) = oneshot::channel();
            let (started, start) = mpsc::channel();
            let server_config = server_config.clone();
            let thread = thread::Builder::new()
                .name(format!("mpring-quic-shard-{shard}"))
                .spawn(move || {
                    run_shard(
                        config,
                        server_config,
                        make_socket,
                        io_driver,
                        started,
                        stopped,
                    )
                })?;
            this.threads.push(thread);
            this.stops.push(stop);
            let (endpoint, runtime) = start.recv().map_err(|_| {
                io::Error::other(format!("shard {shard}: its thread ended while starting"))
            })??;
            this.endpoints.push(endpoint);
            this.runtimes.push(runtime);
        }
        Ok(this)
    }

    /// The endpoints, one per shard, in shard order. Connections accepted
    /// on endpoint `k` run on shard `k`'s thread.
    pub fn endpoints(&self) -> &[quinn::Endpoint] {
        &self.endpoints
    }

    /// Datagrams handed to shard `k`'s endpoint so far (each GRO segment
    /// counts).
    ///
    /// # Panics
    /// If `shard` is not below the shard count.
    pub fn delivered(&self, shard: usize) -> u64 {
        match &self.receive {
            Receive::Listeners { sockets, .. } => sockets[shard].delivered(),
            Receive::InShards { counters } => counters[shard].delivered(shard),
        }
    }

    /// The address every shard answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The CID encoding the shards issue and the datagrams are steered by.
    pub fn cids(&self) -> ShardCids {
        self.cids
    }

    /// The receive path's counters; `rings[k]` is shard `k`'s ring.
    ///
    /// With listener threads, the group's. With
    /// [`receive_in_shards`](ShardsBuilder::receive_in_shards), the
    /// shards' sockets' as if they were listeners: `datagrams` received,
    /// `rings[k].datagrams` steered to shard `k` (kept by it or forwarded
    /// to it), `rings[k].entries` and `full_drops` pushed into ring `k` or
    /// dropped because it was full; kernel drops are not counted.
    pub fn stats(&self) -> UdpStats {
        match &self.receive {
            Receive::Listeners { group, .. } => group.stats(),
            Receive::InShards { counters } => OwnCounters::stats(counters),
        }
    }

    /// Accepts connections on every shard, on that shard's runtime, and
    /// runs `handler(shard, connection)` for each one that completes its
    /// handshake, as a task of that runtime. The accept loops end when the
    /// endpoints close. Call it once (a second call splits the incoming
    /// connections between the two handlers).
    pub fn serve<H, F>(&self, handler: H)
    where
        H: Fn(usize, quinn::Connection) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        for (shard, (endpoint, runtime)) in self.endpoints.iter().zip(&self.runtimes).enumerate() {
            let (endpoint, handler) = (endpoint.clone(), handler.clone());
            runtime.spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Ok(connection) = incoming.await {
                            handler(shard, connection).await;
                        }
                    });
                }
            });
        }
    }

    /// Closes every endpoint with `code` and `reason` (their connections
    /// too), as [`quinn::Endpoint::close`].
    pub fn close(&self, code: quinn::VarInt, reason: &[u8]) {
        for endpoint in &self.endpoints {
            endpoint.close(code, reason);
        }
    }

    /// Closes every endpoint (code 0), waits on each shard's thread until
    /// its endpoint is idle ([`quinn::Endpoint::wait_idle`]), joins the
    /// threads and returns the receive path's counters
    /// ([`stats`](Shards::stats)), final once the listener threads are
    /// joined too: they stop, and sockets close, once the last clone of an
    /// endpoint is gone (one still held elsewhere keeps them running, and
    /// the counters returned are then a snapshot).
    ///
    /// # Blocking
    /// It blocks the calling thread until every connection has closed (a
    /// few round trips), as dropping `Shards` does: from async code, call
    /// it inside `tokio::task::spawn_blocking`, and never from a task of
    /// one of the shards (it would join that shard's own thread).
    pub fn shutdown(mut self) -> UdpStats {
        self.stop();
        // The endpoints' sockets hold the listener group: without them,
        // the group's threads can be joined and its counters are final
        // (unless a clone of an endpoint is still held elsewhere: then
        // they are a snapshot, and the threads stop with the last clone).
        self.endpoints.clear();
        let receive = std::mem::replace(
            &mut self.receive,
            Receive::InShards {
                counters: Vec::new(),
            },
        );
        match receive {
            Receive::Listeners { group, sockets } => {
                drop(sockets);
                match Arc::try_unwrap(group) {
                    Ok(group) => group.shutdown(),
                    Err(group) => group.stats(),
                }
            }
            // The shards' threads did the receiving, and are joined.
            Receive::InShards { counters } => OwnCounters::stats(&counters),
        }
    }

    fn stop(&mut self) {
        self.close(0u32.into(), b"shutdown");
        self.stops.clear();
        for thread in self.threads.drain(..) {
            // A shard thread reports its errors to `bind` and catches none
            // of its handlers' panics (tokio's tasks do): nothing to report.
            let _ = thread.join();
        }
    }
}

/// What a shard thread hands back once its endpoint exists.
type Started = io::Result<(quinn::Endpoint, tokio::runtime::Handle)>;

/// Makes a shard's socket on the shard's thread, inside its runtime.
type MakeSocket = Box<dyn FnOnce() -> io::Result<Arc<dyn AsyncUdpSocket>> + Send>;

/// Receive buffer of each socket of a group that receives in the shards,
/// as the listener threads' default.
const LISTENER_RECV_BUFFER: usize = 4 << 20;

/// A shard thread: a current-thread runtime that drives the shard's
/// endpoint (and its connections' tasks) until `stopped`, then until the
/// endpoint is idle.
fn run_shard(
    config: quinn::EndpointConfig,
    server_config: quinn::ServerConfig,
    make_socket: MakeSocket,
    io_driver: bool,
    started: mpsc::Sender<Started>,
    stopped: oneshot::Receiver<()>,
) {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if io_driver {
        builder.enable_io();
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    // The endpoint's driver is spawned on the runtime it is made in.
    let endpoint = {
        let _enter = runtime.enter();
        make_socket().and_then(|socket| {
            quinn::Endpoint::new_with_abstract_socket(
                config,
                Some(server_config),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
        })
    };
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    if started
        .send(Ok((endpoint.clone(), runtime.handle().clone())))
        .is_err()
    {
        return;
    }
    runtime.block_on(async move {
        let _ = stopped.await; // a send or a dropped sender: stop
        endpoint.wait_idle().await;
    });
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("local", &self.local_addr())
            .field("shards", &self.endpoints.len())
            .field("cids", &self.cids)
            .finish_non_exhaustive()
    }
}
