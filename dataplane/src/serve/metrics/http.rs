//! The HTTP side of the metrics: one thread answering `GET /metrics`.
//!
//! A minimal HTTP/1.1 responder over std's `TcpListener` rather than an
//! HTTP framework: the endpoint has one route, no keep-alive, no body to
//! read and no TLS, so a framework (and its async runtime or thread pool)
//! would bring far more code than the ~100 lines it replaces, and the
//! small blocking servers (e.g. `tiny_http`) set no limit on a request's
//! header size. What this one guarantees:
//! - one connection at a time, on the metrics thread, never on a reactor;
//! - a request is read for at most [`REQUEST_DEADLINE`] in all (each read
//!   waits at most [`READ_TIMEOUT`]) and up to [`MAX_REQUEST_BYTES`] of
//!   head; a client that sends nothing, too slowly or too much is
//!   answered (408, 431) or dropped, and the next one served;
//! - `GET /metrics` (a query string is ignored) is answered 200 with the
//!   OpenMetrics text; another path 404; another method 405; a request
//!   line that is not HTTP 400. Every answer closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::catalog::MetricsCatalog;
use super::collector::render;

/// Longest wait for one read of a request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time to read a whole request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head accepted (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address does not resolve to a socket address.
    #[error(
        "--metrics-listen {addr:?}: not an address to listen on (e.g. 127.0.0.1:9150): {reason}"
    )]
    Address {
        /// The address given.
        addr: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// Binding the listener failed.
    #[error("--metrics-listen {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The metrics thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// The metrics endpoint: a listener and the thread that serves it. Dropping
/// it stops and joins the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The listening socket, shut down to wake the thread's `accept`.
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (`host:port`; port 0 picks a free one, see
    /// [`local_addr`](Self::local_addr)) and serves `catalog` from a thread
    /// named `metrics`.
    pub fn start(addr: &str, catalog: Arc<MetricsCatalog>) -> Result<Self, MetricsError> {
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_owned()))
            .map_err(|reason| MetricsError::Address {
                addr: addr.to_owned(),
                reason,
            })?;
        let listener = TcpListener::bind(resolved).map_err(|source| MetricsError::Bind {
            addr: resolved,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| MetricsError::Bind {
            addr: resolved,
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let own = listener.try_clone().map_err(|source| MetricsError::Bind {
            addr: resolved,
            source,
        })?;
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&listener, &catalog, &thread_stop))
            .map_err(MetricsError::Thread)?;
        Ok(Self {
            addr,
            stop,
            listener: own,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept: on Linux, shutting a listening socket
        // down makes accept fail at once (EINVAL). (Connecting to it would
        // need the address to be reachable: not so with `lo` down.)
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.listener),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, catalog: &MetricsCatalog, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(stream) => answer(stream, catalog),
            // A connection reset before accept, out of descriptors: go on.
            Err(e) => {
                tracing::debug!("metrics: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    Bad,
    TooLarge,
    TimedOut,
}

/// Reads a request head from `stream` within the limits of the module docs.
fn read_request(stream: &mut impl Read) -> Request {
    let start = Instant::now();
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Request::TooLarge;
        }
        if start.elapsed() > REQUEST_DEADLINE {
            return Request::TimedOut;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Request::Bad,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Request::TimedOut,
        }
    }
    parse_request_line(&head)
}

/// Decides on the request line of `head`.
fn parse_request_line(head: &[u8]) -> Request {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Request::Bad;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

fn answer(mut stream: TcpStream, catalog: &MetricsCatalog) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let request = read_request(&mut stream);
    let (status, content_type, body) = match request {
        Request::Metrics => ("200 OK", CONTENT_TYPE, render(catalog.sources())),
        Request::NotFound => ("404 Not Found", "text/plain", "only /metrics\n".into()),
        Request::MethodNotAllowed => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
        Request::Bad => ("400 Bad Request", "text/plain", "bad request\n".into()),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".into(),
        ),
        Request::TimedOut => ("408 Request Timeout", "text/plain", "timed out\n".into()),
    };
    if request != Request::Metrics {
        tracing::debug!("metrics: answered {status}");
    }
    let allow = if request == Request::MethodNotAllowed {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_decided() {
        let cases: [(&[u8], Request); 8] = [
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Request::Metrics,
            ),
            (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", Request::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Request::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Request::MethodNotAllowed),
            (b"GET /metrics\r\n\r\n", Request::Bad),
            (b"GET /metrics SPDY/3\r\n\r\n", Request::Bad),
            (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", Request::Bad),
            (b"GET metrics HTTP/1.1\r\n\r\n", Request::Bad),
        ];
        for (head, want) in cases {
            assert_eq!(
                read_request(&mut &head[..]),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn oversize_and_truncated_heads_are_refused() {
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_BYTES + 2048, b'a');
        assert_eq!(read_request(&mut &big[..]), Request::TooLarge);
        assert_eq!(
            read_request(&mut &b"GET /metrics HTTP/1.1\r\n"[..]),
            Request::Bad
        );
    }
}
