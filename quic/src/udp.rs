//! UDP socket helpers: send room, GRO.

use std::io::{self, Write};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};

/// Whether `socket` has room to send right now.
pub fn is_writable(socket: &UdpSocket) -> bool {
    poll(socket, libc::POLLOUT, 0)
}

/// Waits for send room on a socket on behalf of tasks, without a reactor
/// (a shard's runtime may have no I/O driver): a task that finds the send
/// buffer full registers its waker, and a thread of the socket's own, made
/// on the first such wait, sleeps in `poll` until there is room and wakes
/// every registered task. Until then no thread spins. Dropping it ends
/// that thread, and with it the thread's handle on the socket, before the
/// drop returns: a port closed is free again at once.
///
/// As a reactor's readiness does, it takes the socket's word until a send
/// through [`send`](SendRoom::send) meets `WouldBlock`: quinn asks for room
/// before every send, which would otherwise cost a `poll` system call each
/// time.
#[derive(Debug)]
pub(crate) struct SendRoom {
    shared: Arc<RoomShared>,
    blocked: SendBlocked,
}

/// Whether a send met a full buffer and no look since found room: a hint
/// that lets a poller answer "ready" without asking the socket, as a
/// reactor's readiness does (quinn asks before every send).
#[derive(Debug, Default)]
pub(crate) struct SendBlocked(AtomicBool);

impl SendBlocked {
    /// Passes a send's result through, noting a full buffer
    /// (`WouldBlock`).
    pub(crate) fn note(&self, sent: io::Result<()>) -> io::Result<()> {
        if matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            // Relaxed: a hint; a poller that sees it looks at the socket
            // (or waits in the reactor) before any task sleeps.
            self.0.store(true, Ordering::Relaxed);
        }
        sent
    }

    /// Whether the last send met a full buffer since room was last found.
    pub(crate) fn is_set(&self) -> bool {
        // Relaxed: a hint. Ready on a stale `false` costs one more
        // `WouldBlock` (which sets it); a stale `true` one look.
        self.0.load(Ordering::Relaxed)
    }

    /// A look found room.
    pub(crate) fn clear(&self) {
        // Relaxed: as in `is_set`.
        self.0.store(false, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct RoomShared {
    state: Mutex<RoomState>,
    /// Signalled when a waker is registered, or when the socket goes.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct RoomState {
    wakers: Vec<Waker>,
    /// The waiting thread was made, or could not be (then `thread` is
    /// `None`).
    started: bool,
    closed: bool,
    /// The waiting thread, and the end of a socket pair it polls beside
    /// the socket: a byte written here ends its `poll` at once.
    thread: Option<(JoinHandle<()>, UnixStream)>,
}

/// How long the waiting thread sleeps in `poll` before it looks whether
/// the socket is gone.
const ROOM_POLL_MS: libc::c_int = 50;

impl SendRoom {
    pub(crate) fn new() -> SendRoom {
        SendRoom {
            shared: Arc::default(),
            blocked: SendBlocked::default(),
        }
    }

    /// Runs a send on the socket, noting a full buffer (`WouldBlock`).
    pub(crate) fn send(&self, send: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        self.blocked.note(send())
    }

    /// Ready unless a send met a full buffer and `socket` still has no
    /// room; then wakes `cx`'s task when it has.
    pub(crate) fn poll_writable(&self, socket: &UdpSocket, cx: &mut Context<'_>) -> Poll<()> {
        if !self.blocked.is_set() {
            return Poll::Ready(());
        }
        if is_writable(socket) {
            self.blocked.clear();
            return Poll::Ready(());
        }
        let mut state = self.shared.lock();
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        if !state.started {
            state.started = true;
            let started = socket.try_clone().and_then(|socket| {
                let (interrupt, interrupted) = UnixStream::pair()?;
                let shared = self.shared.clone();
                let thread = thread::Builder::new()
                    .name("mpring-quic-send-room".into())
                    .spawn(move || shared.wait_for_room(&socket, &interrupted))?;
                Ok((thread, interrupt))
            });
            state.thread = started.ok();
        }
        if state.thread.is_none() {
            // No thread to wait in: try again on the task's next turn.
            drop(state);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.shared.changed.notify_one();
        drop(state);
        // Room that came before the registration wakes nobody: look again.
        if is_writable(socket) {
            self.blocked.clear();
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for SendRoom {
    fn drop(&mut self) {
        let thread = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.thread.take()
        };
        self.shared.changed.notify_one();
        if let Some((thread, mut interrupt)) = thread {
            // Ends a `poll` in progress; the thread then sees `closed`. A
            // failed write leaves it the poll's timeout to end by.
            let _ = interrupt.write_all(&[1]);
            // Not from the thread itself (a task whose last waker it woke
            // could drop the socket there): it ends on its own then.
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl RoomShared {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // No code under this lock panics; a poisoned one is still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The waiting thread: sleeps until a task waits, then in `poll` until
    /// `socket` (a clone of the sending socket) has room, and wakes them
    /// all; ends when the socket's owner is gone (which writes to
    /// `interrupted`'s peer to end a `poll` at once).
    fn wait_for_room(&self, socket: &UdpSocket, interrupted: &UnixStream) {
        loop {
            let mut state = self.lock();
            while state.wakers.is_empty() && !state.closed {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closed {
                return;
            }
            drop(state);
            let mut fds = [
                pollfd(socket.as_raw_fd(), libc::POLLOUT),
                pollfd(interrupted.as_raw_fd(), libc::POLLIN),
            ];
            if poll_fds(&mut fds, ROOM_POLL_MS) && fds[0].revents != 0 {
                let wakers = std::mem::take(&mut self.lock().wakers);
                for waker in wakers {
                    waker.wake();
                }
            }
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn poll(socket: &UdpSocket, events: libc::c_short, timeout_ms: libc::c_int) -> bool {
    poll_fds(&mut [pollfd(socket.as_raw_fd(), events)], timeout_ms)
}

/// Whether any of `fds` is ready within `timeout_ms` (each one's
/// `revents` says which).
fn poll_fds(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> bool {
    // SAFETY: `fds` is a live slice of valid pollfds, for the duration of
    // the call, and its length is theirs.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) > 0 }
}

/// Turns the kernel's UDP GRO on or off on `socket`. quinn-udp's
/// `UdpSocketState::new` turns it on wherever the kernel has it; a socket
/// whose owner asked for none must turn it off again.
pub(crate) fn set_gro(socket: &UdpSocket, on: bool) -> io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: a valid socket, and a c_int option value that lives for the
    // call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    use std::time::{Duration, Instant};

    use super::{is_writable, SendRoom};

    /// A send into `socket` that fills nothing more: its buffer is full.
    fn send_into_full(room: &SendRoom, socket: &UdpSocket) {
        let e = room
            .send(|| socket.send(&[7; 512]).map(drop))
            .expect_err("the buffer is full");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A socket whose send buffer is full (a datagram socket pair whose
    /// reader has not read, seen as a `UdpSocket`: `poll` tells the same),
    /// and its reader.
    fn full_socket() -> (UdpSocket, UnixDatagram, usize) {
        let (tx, rx) = UnixDatagram::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while tx.send(&[7; 512]).is_ok() {
            sent += 1;
        }
        (UdpSocket::from(OwnedFd::from(tx)), rx, sent)
    }

    /// Dropping the room ends its waiting thread before the drop returns,
    /// and with it the thread's clone of the socket: a socket closed is
    /// closed at once (a port free again, an `SO_REUSEPORT` group without
    /// it), not when the thread's `poll` times out.
    #[test]
    fn dropping_the_send_room_closes_its_clone_of_the_socket() {
        let (socket, reader, _) = full_socket();
        let room = SendRoom::new();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        send_into_full(&room, &socket);
        // The waiting thread starts, with a clone of the socket.
        assert!(room.poll_writable(&socket, &mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(10)); // most likely in its poll
        drop(socket);
        drop(room);
        // Every handle on the reader's peer is gone: a send is refused.
        let refused = reader
            .send(b"x")
            .expect_err("a handle on the socket is still open");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_task_waiting_for_send_room_is_woken_once_it_comes() {
        let (socket, reader, sent) = full_socket();
        assert!(!is_writable(&socket));
        let room = SendRoom::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        // Until a send meets the full buffer, no look at the socket.
        assert!(room.poll_writable(&socket, &mut cx).is_ready());
        send_into_full(&room, &socket);
        assert!(room.poll_writable(&socket, &mut cx).is_pending());
        // The same task again: registered once.
        assert!(room.poll_writable(&socket, &mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken with no room");

        let mut buf = [0; 1024];
        for _ in 0..sent {
            reader.recv(&mut buf).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.0.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "woken once, when room came"
        );
        assert!(room.poll_writable(&socket, &mut cx).is_ready());
        // The look that found room ended the full state.
        assert!(!room.blocked.is_set());

        // Full again: the waiting thread, asleep with no task to wake,
        // takes the next one.
        let sender = UnixDatagram::from(OwnedFd::from(socket.try_clone().unwrap()));
        let mut again = 0;
        while sender.send(&[7; 512]).is_ok() {
            again += 1;
        }
        send_into_full(&room, &socket);
        assert!(room.poll_writable(&socket, &mut cx).is_pending());
        for _ in 0..again {
            reader.recv(&mut buf).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.0.load(Ordering::SeqCst) == 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "woken again");
    }
}
