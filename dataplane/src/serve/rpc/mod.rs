//! The control socket: JSON-RPC 2.0 on a unix socket, in the manner of
//! SPDK's `rpc.py` server.
//!
//! # Contract
//! - [`RpcServer::start`] binds the socket (`socket.rs`: mode 0600,
//!   refused if a live server answers on the path, a stale socket file
//!   replaced) and serves it from control threads: one accepts, one per
//!   client reads and answers (at most `max_clients` at once; one more is
//!   told so and closed). No reactor ever runs any of it.
//! - Requests are framed as SPDK frames them (`codec.rs`: JSON values one
//!   after another on the stream, newline-delimited or not). A message
//!   over `max_message` bytes, or one that is not JSON, gets an error and
//!   the connection is closed; a client that sends nothing (or stops in the
//!   middle of a message) for `client_timeout` is dropped. None of this
//!   touches the server: only well-formed requests reach it.
//! - A request reaches the [`Server`] through a channel (`CallQueue`):
//!   the control loop (which owns the server, on the main thread) calls
//!   [`Requests::serve`] at each wake-up, which answers every pending call
//!   in order (`methods.rs`). Each call also writes an eventfd
//!   ([`Requests::wake_fd`]) that the loop's wait watches, so a call is
//!   answered at once rather than at the loop's next timeout, and an idle
//!   server does not wake to look for calls. Methods that only read load
//!   the counters the reactors already publish.
//! - The accepting thread sleeps in one wait on the listener and an
//!   eventfd that dropping the [`RpcServer`] writes: no timer wakes it.
//! - Dropping the [`RpcServer`] stops accepting and removes the socket
//!   file (if it is still this server's); connections in progress end at
//!   their next request, which is answered with an error.
//!
//! # Files
//! `socket.rs` (the file), `codec.rs` (framing, requests, responses),
//! `client.rs` (one connection), `params.rs` (named parameters with
//! errors that name them), `methods.rs` (the methods), `error.rs`.

mod client;
mod codec;
pub mod error;
mod methods;
mod params;
mod socket;

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reactor::Waker;
use serde_json::{Map, Value};

use self::client::{serve_client, Limits};
use self::codec::response;
pub use self::error::{code, RpcError, SocketError};
pub use self::methods::METHODS;
pub use self::socket::SOCKET_MODE;
use self::socket::{bind, BoundSocket};
use super::host::Host;
use super::server::Server;
use crate::wait::wait_readable;

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/dataplane/rpc.sock";

/// How long the accepting thread pauses after `accept` failed (on a unix
/// socket only for want of resources: descriptors, memory): the listener
/// stays readable then, and trying again at once would spin.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Options of the control socket.
#[derive(Debug, Clone)]
pub struct RpcOptions {
    /// The socket path.
    pub path: PathBuf,
    /// Largest request in bytes.
    pub max_message: usize,
    /// A client must send each request whole within this time (from
    /// connecting, or from the previous response), else it is dropped.
    pub client_timeout: Duration,
    /// Most clients served at once.
    pub max_clients: usize,
    /// How long a request waits for the control loop before it is answered
    /// with an error.
    pub answer_timeout: Duration,
}

impl RpcOptions {
    /// The defaults at `path`: 1 MiB requests, 30 s per request, 32
    /// clients, 60 s for an answer.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_message: 1 << 20,
            client_timeout: Duration::from_secs(30),
            max_clients: 32,
            answer_timeout: Duration::from_secs(60),
        }
    }
}

/// A call handed to the control loop, with where its answer goes.
#[derive(Debug)]
pub(super) struct Call {
    method: String,
    params: Option<Map<String, Value>>,
    reply: SyncSender<Result<Value, RpcError>>,
}

/// The client threads' end of the channel to the control loop: each call
/// sent also wakes the loop.
#[derive(Debug, Clone)]
pub(super) struct CallQueue {
    calls: Sender<Call>,
    wake: Waker,
}

impl CallQueue {
    /// Queues `call` and wakes the control loop; `Err` when the loop is
    /// gone (the server is shutting down).
    pub(super) fn send(&self, call: Call) -> Result<(), ()> {
        self.calls.send(call).map_err(|_| ())?;
        self.wake.wake();
        Ok(())
    }
}

/// Sets the process's log filter (env-filter syntax); an error says why
/// the filter was refused. The binary owns the logger, so it provides this
/// ([`Requests::with_log_level`]).
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// The control loop's end of the socket: the calls waiting for the server.
pub struct Requests {
    calls: Receiver<Call>,
    /// Written by every call sent ([`CallQueue::send`]).
    wake: Waker,
    log_level: Option<LogLevelHook>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("log_level", &self.log_level.is_some())
            .finish_non_exhaustive()
    }
}

impl Requests {
    /// Lets `log_set_level` change the log filter through `hook`.
    pub fn with_log_level(mut self, hook: LogLevelHook) -> Self {
        self.log_level = Some(hook);
        self
    }

    /// Readable when a call was sent since the last [`serve`](Self::serve):
    /// the control loop's wait watches it with its other descriptors.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Answers every call waiting, in order, against `server`; returns how
    /// many were answered. Never blocks.
    pub fn serve<H: Host>(&self, server: &mut Server<H>) -> usize {
        // Drained first: a call sent from here on writes it again, so
        // none is left unanswered until the next timeout.
        self.wake.drain();
        let mut n = 0;
        while let Ok(call) = self.calls.try_recv() {
            let result = if call.method == "log_set_level" {
                methods::log_set_level(self.log_level.as_ref(), call.params)
            } else {
                methods::call(server, &call.method, call.params)
            };
            // The client may have gone (timed out); nothing to do then.
            let _ = call.reply.send(result);
            n += 1;
        }
        n
    }
}

/// The serving socket. See the module docs.
#[derive(Debug)]
pub struct RpcServer {
    socket: Arc<BoundSocket>,
    stop: Arc<AtomicBool>,
    /// Written at drop to end the accepting thread's wait, which has no
    /// timeout.
    stop_wake: Waker,
    thread: Option<JoinHandle<()>>,
}

impl RpcServer {
    /// Binds `options.path` and starts serving it; the returned
    /// [`Requests`] go to the control loop.
    pub fn start(options: RpcOptions) -> Result<(Self, Requests), SocketError> {
        let socket = Arc::new(bind(&options.path)?);
        let (calls_tx, calls) = mpsc::channel();
        let wake = Waker::new().map_err(|error| SocketError::Io {
            path: socket.path.clone(),
            what: "creating its eventfd",
            error,
        })?;
        let queue = CallQueue {
            calls: calls_tx,
            wake: wake.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop_wake = Waker::new().map_err(|error| SocketError::Io {
            path: socket.path.clone(),
            what: "creating its eventfd",
            error,
        })?;
        let accept = {
            let socket = Arc::clone(&socket);
            let stop = Arc::clone(&stop);
            let stop_wake = stop_wake.clone();
            move || accept_loop(&socket, &stop, &stop_wake, &queue, &options)
        };
        let thread = std::thread::Builder::new()
            .name("rpc".into())
            .spawn(accept)
            .map_err(|error| SocketError::Io {
                path: socket.path.clone(),
                what: "starting its thread",
                error,
            })?;
        Ok((
            Self {
                socket,
                stop,
                stop_wake,
                thread: Some(thread),
            },
            Requests {
                calls,
                wake,
                log_level: None,
            },
        ))
    }

    /// [`start`](Self::start), waiting up to `patience` while a live
    /// server holds the path (a predecessor that handed its devices over
    /// and is exiting).
    pub fn start_waiting(
        options: RpcOptions,
        patience: Duration,
    ) -> Result<(Self, Requests), SocketError> {
        let deadline = Instant::now() + patience;
        loop {
            match Self::start(options.clone()) {
                Err(SocketError::InUse { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stop_wake.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.socket.remove_file();
    }
}

/// Waits `retry`, or less when `stop_wake` is written: a server stopped
/// while its accepting thread pauses after a failure does not wait the
/// pause out at drop.
fn pause_unless_stopped(stop_wake: &Waker, retry: Duration) {
    // A signal ends the wait early, as a stop would; the caller's loop
    // looks at its stop flag and tries again either way. Should the wait
    // itself fail, a plain sleep keeps the pause.
    if wait_readable(&[stop_wake.as_fd()], Some(retry)).is_err() {
        std::thread::sleep(retry);
    }
}

/// Accepts clients until `stop`, each on its own thread. It sleeps until a
/// client connects or `stop_wake` is written: an idle server's control
/// socket costs no wake-ups.
fn accept_loop(
    socket: &BoundSocket,
    stop: &AtomicBool,
    stop_wake: &Waker,
    calls: &CallQueue,
    options: &RpcOptions,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let limits = Limits {
        max_message: options.max_message,
        timeout: options.client_timeout,
        answer_timeout: options.answer_timeout,
    };
    // Non-blocking, so that a client gone between the wake-up and `accept`
    // cannot leave the thread stuck in `accept` past a stop.
    if let Err(e) = socket.listener.set_nonblocking(true) {
        tracing::debug!("control socket: cannot make the listener non-blocking: {e}");
    }
    // Says what failed and pauses: the failures are not ones that an
    // immediate retry would get past.
    let pause = |what: &str, e: std::io::Error| {
        tracing::warn!(
            "control socket {}: {what} failed ({e}); trying again in {} s",
            socket.path.display(),
            ACCEPT_RETRY.as_secs()
        );
        pause_unless_stopped(stop_wake, ACCEPT_RETRY);
    };
    while !stop.load(Ordering::Relaxed) {
        let watched = [socket.listener.as_fd(), stop_wake.as_fd()];
        match wait_readable(&watched, None) {
            Ok(Some(0)) => {}
            // The stop wake-up, or a signal: the loop's condition decides.
            Ok(_) => continue,
            Err(e) => {
                pause("waiting for clients", e);
                continue;
            }
        }
        let mut stream = match socket.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                pause("accepting a client", e);
                continue;
            }
        };
        // Clients are served with blocking reads under a timeout.
        if let Err(e) = stream.set_nonblocking(false) {
            tracing::debug!("control socket: cannot make a client's stream blocking: {e}");
            continue;
        }
        if active.load(Ordering::Relaxed) >= options.max_clients {
            let busy = RpcError::new(
                code::INTERNAL_ERROR,
                format!("too many clients (at most {})", options.max_clients),
            );
            let _ = std::io::Write::write_all(&mut stream, &response(Value::Null, Err(busy)));
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let calls = calls.clone();
        let done = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("rpc-client".into())
            .spawn(move || {
                serve_client(stream, &calls, limits);
                done.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_the_pause_after_a_failed_accept() {
        let stop_wake = Waker::new().expect("eventfd");
        stop_wake.wake();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            // An hour: without the stop wake-up, the test fails at its
            // deadline below.
            pause_unless_stopped(&stop_wake, Duration::from_secs(3600));
            let _ = done_tx.send(());
        });
        done.recv_timeout(Duration::from_secs(30))
            .expect("the pause did not end at the stop wake-up");
    }
}
