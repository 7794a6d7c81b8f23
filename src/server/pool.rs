//! The threads that accept and serve connections: a leader/follower pool.
//!
//! One thread, the leader, waits in `poll` on the listening socket. When a
//! client connects it accepts, hands the leadership to an idle follower
//! (or starts a new thread when none is idle) and serves the connection
//! itself. When the connection ends the thread rejoins the pool as a
//! follower, or ends when enough are idle already. A client that connects
//! to an idle daemon therefore wakes exactly one thread, which answers it
//! without starting a thread or handing the connection across threads.
//!
//! Shutdown writes to a wake-up socket the leader also polls, and wakes
//! every follower; each thread ends, releasing its tracker token.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::sync::Semaphore;

use super::conn::Conn;
use super::{Answer, Limits, Service};
use crate::protocol::{ErrorCode, WireError};

/// Threads started with the pool: a leader and one follower ready to take
/// over, so that neither of the first two clients waits for a thread start.
const START: usize = 2;

/// Followers kept idle at most; a thread whose connection ends past this
/// ends too.
const MAX_IDLE: usize = 4;

/// The stack of a pool thread. Requests are shallow (parse, look up,
/// serialise); the work that is not runs on the runtime's own threads.
const STACK: usize = 512 * 1024;

/// The pool: the listener, what serving a connection needs, and who leads.
pub(super) struct Pool<S> {
    listener: UnixListener,
    conn: Conn<S>,
    slots: Arc<Semaphore>,
    own_uid: u32,
    state: Mutex<State>,
    promoted: Condvar,
    /// Readable once the pool stops (the leader polls it with the listener).
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

#[derive(Debug, Default)]
struct State {
    /// A thread is leading (polling the listener).
    led: bool,
    /// Threads waiting to lead.
    idle: usize,
    stopping: bool,
}

impl<S: Service> Pool<S> {
    /// A pool serving `listener` (which must be non-blocking) with `conn`.
    ///
    /// # Errors
    ///
    /// When the wake-up socket pair cannot be made.
    pub fn new(listener: UnixListener, conn: Conn<S>, slots: Arc<Semaphore>) -> io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        Ok(Self {
            listener,
            conn,
            slots,
            own_uid: nix::unistd::getuid().as_raw(),
            state: Mutex::new(State::default()),
            promoted: Condvar::new(),
            wake_rx,
            wake_tx,
        })
    }

    /// Starts the first threads.
    ///
    /// # Errors
    ///
    /// When not even one thread can be started.
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        self.spawn()?;
        for _ in 1..START {
            if let Err(e) = self.spawn() {
                tracing::warn!("cannot start a spare connection thread: {e}");
            }
        }
        Ok(())
    }

    /// Stops the pool: the leader and every follower end; threads serving
    /// a connection end with it (see `Open` for how those reads end).
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.promoted.notify_all();
        if let Err(e) = (&self.wake_tx).write_all(&[1]) {
            tracing::warn!("cannot wake the connection threads to stop: {e}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(self: &Arc<Self>) -> io::Result<()> {
        let pool = Arc::clone(self);
        let token = self.conn.tracker.token();
        std::thread::Builder::new()
            .name("discocache-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                let _token = token;
                pool.work();
            })
            .map(drop)
    }

    /// A thread's life: lead until a client connects, pass the lead on,
    /// serve the client, and again, until the pool stops or has enough
    /// idle threads.
    fn work(self: &Arc<Self>) {
        while self.lead() {
            let Some(stream) = self.accept() else {
                return;
            };
            self.pass_lead();
            self.serve(stream);
        }
    }

    /// Waits to become the leader; false when this thread should end.
    fn lead(&self) -> bool {
        let mut state = self.lock();
        while state.led && !state.stopping {
            if state.idle >= MAX_IDLE {
                return false;
            }
            state.idle += 1;
            state = self
                .promoted
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
        state.led = !state.stopping;
        state.led
    }

    /// Hands the lead to an idle follower, or to a new thread.
    fn pass_lead(self: &Arc<Self>) {
        let mut state = self.lock();
        state.led = false;
        if state.idle > 0 || state.stopping {
            drop(state);
            return self.promoted.notify_one();
        }
        drop(state);
        if let Err(e) = self.spawn() {
            // Nobody accepts until this connection ends and its thread
            // leads again; the clients wait in the listen backlog.
            tracing::warn!("cannot start a connection thread: {e}");
        }
    }

    /// The next connection; `None` when the pool stops.
    fn accept(&self) -> Option<UnixStream> {
        loop {
            if self.lock().stopping || !self.ready() {
                return None;
            }
            match self.listener.accept() {
                Ok((stream, _)) => return Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors and the like: back off, go on.
                    tracing::warn!("accept on the socket failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Waits until the listener has a client (true) or the pool is woken
    /// to stop (false).
    fn ready(&self) -> bool {
        let mut fds = [
            poll_fd(self.listener.as_raw_fd()),
            poll_fd(self.wake_rx.as_raw_fd()),
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfd for the call's
            // duration and both descriptors stay open while `self` lives.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n >= 0 {
                return fds[1].revents == 0;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("poll on the socket failed: {e}");
                return false;
            }
        }
    }

    /// Checks the peer and the cap, then serves the connection on this
    /// thread.
    fn serve(&self, stream: UnixStream) {
        if !peer_allowed(&stream, self.own_uid) {
            return;
        }
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => self.conn.serve(stream, slot),
            Err(_) => refuse_busy(&stream, self.conn.limits),
        }
    }
}

fn poll_fd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// True for a peer with our uid or root; logs and refuses everyone else.
fn peer_allowed(stream: &UnixStream, own_uid: u32) -> bool {
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) if cred.uid() == own_uid || cred.uid() == 0 => true,
        Ok(cred) => {
            let (uid, pid) = (cred.uid(), cred.pid());
            tracing::warn!("refused a connection from uid {uid} (pid {pid})");
            false
        }
        Err(e) => {
            tracing::warn!("refused a connection whose credentials are unknown: {e}");
            false
        }
    }
}

/// Answers `busy` to a connection past the cap and closes it. The line is
/// small enough for an empty socket buffer; a client whose buffer is full
/// just sees the close.
fn refuse_busy(stream: &UnixStream, limits: Limits) {
    let msg = format!(
        "the daemon already serves {} connections; retry later",
        limits.max_connections
    );
    if let Answer::Line(line) = Answer::error(None, WireError::new(ErrorCode::Busy, msg)) {
        let _ = stream.set_nonblocking(true);
        let _ = (&*stream).write_all(line.as_bytes());
    }
}
