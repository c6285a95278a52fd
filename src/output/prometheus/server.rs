//! The `/metrics` HTTP endpoint: a plain `std` listener on a thread of its
//! own. It serves whatever the producers of a [`Registry`] render at the
//! moment of the scrape.
//!
//! Clients are served one at a time, each bounded in time (reading the
//! request, then writing the answer), so a slow or stuck client delays the
//! next scrape by at most those bounds and never the collector: producers are
//! only locked while they render into memory, never while a socket is written.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::exposition::{self, Exposition};

/// Renders metric families into a scrape. Implemented by each part of netlens
/// that exports metrics; see the module documentation of `output::prometheus`.
pub trait Producer: Send + Sync {
    fn render(&self, out: &mut Exposition);
}

/// The producers one endpoint serves, in registration order. Cloning gives
/// another handle to the same list, so producers can be added after the
/// server started.
#[derive(Clone, Default)]
pub struct Registry {
    producers: Arc<RwLock<Vec<Arc<dyn Producer>>>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&self, producer: Arc<dyn Producer>) {
        self.producers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(producer);
    }

    /// One scrape: every producer's families, in registration order.
    pub fn render(&self) -> Exposition {
        let mut out = Exposition::new();
        let producers = self
            .producers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for p in producers.iter() {
            p.render(&mut out);
        }
        out
    }
}

/// Longest wait for a client's request line and headers.
const READ_BUDGET: Duration = Duration::from_secs(3);
/// Longest time spent writing one answer.
const WRITE_BUDGET: Duration = Duration::from_secs(10);
/// Largest request head accepted (scrapers send a few hundred bytes).
const MAX_REQUEST: usize = 16 * 1024;
/// How often the accept loop looks at the stop flag.
const STOP_POLL_MS: libc::c_int = 200;

/// A running endpoint; stopped and joined on drop.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` now (so a taken port fails at start, with a message
    /// saying what to do) and serves `registry` on a new thread.
    pub fn start(addr: SocketAddr, registry: Registry) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(addr).map_err(|e| bind_error(addr, &e))?;
        // Accepting never blocks: a client that gave up between poll() and
        // accept() must not stall the loop.
        listener
            .set_nonblocking(true)
            .context("setting up the Prometheus listener")?;
        let bound = listener
            .local_addr()
            .context("reading the Prometheus listener's address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("prometheus".into())
            .spawn(move || serve(&listener, &registry, &flag))
            .context("starting the Prometheus endpoint thread")?;
        Ok(Server {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_error(addr: SocketAddr, e: &io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another program (or another netlens) already listens there; pick another port with \
             -P ADDR:PORT"
        }
        io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address; use 127.0.0.1, 0.0.0.0 or one of this \
             host's addresses"
        }
        io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        _ => "pick another address with -P ADDR:PORT",
    };
    anyhow::anyhow!("cannot serve Prometheus metrics on {addr}: {e}; {hint}")
}

fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match wait_readable(listener, STOP_POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("netlens: warning: Prometheus endpoint stopped: {e}");
                return;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // A client that misbehaves only loses its own answer.
                let _ = answer(stream, registry);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("netlens: warning: Prometheus endpoint: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(STOP_POLL_MS as u64));
            }
        }
    }
}

/// Waits up to `timeout_ms` for a connection to accept.
fn wait_readable(listener: &TcpListener, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: fds is a valid array of one pollfd for the duration of the call,
    // and its fd belongs to `listener`, which outlives the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n > 0)
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes by the request line: `GET /metrics` (query ignored) or HEAD.
fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &head[..line_end.unwrap_or(head.len())];
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head_only: false },
        ("HEAD", "/metrics") => Route::Metrics { head_only: true },
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

fn answer(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body, head_only) = match route(&head) {
        Route::Metrics { head_only } => (
            "200 OK",
            exposition::CONTENT_TYPE,
            registry.render().into_string(),
            head_only,
        ),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: netlens serves its metrics at /metrics\n".to_string(),
            false,
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD are served\n".to_string(),
            false,
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
            false,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    write_bounded(&mut stream, &response)
}

/// Reads up to the end of the request head, within [`READ_BUDGET`] in all.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + READ_BUDGET;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            // The client closed early; answer what arrived (if anything).
            return Ok(head);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() > MAX_REQUEST {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

/// Writes everything within [`WRITE_BUDGET`] in all.
fn write_bounded(stream: &mut TcpStream, mut data: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + WRITE_BUDGET;
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        let n = stream.write(&data[..data.len().min(64 * 1024)])?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::prometheus::exposition::{Kind, Labels};

    struct Fixed(&'static str, u64);

    impl Producer for Fixed {
        fn render(&self, out: &mut Exposition) {
            out.family(self.0, Kind::Gauge, "test")
                .sample(&Labels::new(), self.1);
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"garbage"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(
            route(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"),
            Route::BadRequest
        );
    }

    #[test]
    fn serves_every_producer_and_404_elsewhere() {
        let reg = Registry::new();
        reg.register(Arc::new(Fixed("first", 1)));
        let server = Server::start("127.0.0.1:0".parse().unwrap(), reg.clone()).expect("bind");
        // Registered after the start: still served.
        reg.register(Arc::new(Fixed("second", 2)));
        let resp = get(server.addr(), "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(
            body.contains("\nfirst 1\n") && body.contains("\nsecond 2\n"),
            "{body}"
        );

        let resp = get(server.addr(), "GET /other HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
        let resp = get(server.addr(), "HEAD /metrics HTTP/1.1\r\n\r\n");
        let (head, body) = resp.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 200 OK"));
        assert!(body.is_empty());
    }

    #[test]
    fn a_silent_client_only_delays_the_next_one() {
        let reg = Registry::new();
        reg.register(Arc::new(Fixed("x", 1)));
        let server = Server::start("127.0.0.1:0".parse().unwrap(), reg).expect("bind");
        // Connects and never sends a byte: dropped after READ_BUDGET, well
        // within the 10 s the next client waits for its answer.
        let _silent = TcpStream::connect(server.addr()).expect("connect");
        let resp = get(server.addr(), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn taken_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = Server::start(addr, Registry::new())
            .err()
            .expect("port is taken");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(msg.contains("in use"), "{msg}");
        assert!(msg.contains("-P ADDR:PORT"), "{msg}");
    }

    #[test]
    fn drop_stops_the_thread() {
        let server = Server::start("127.0.0.1:0".parse().unwrap(), Registry::new()).expect("bind");
        let addr = server.addr();
        let t = Instant::now();
        drop(server);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(TcpStream::connect(addr).is_err(), "listener closed");
    }
}
