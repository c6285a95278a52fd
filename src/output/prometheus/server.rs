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

/// What a request asked for, as a handler sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The path, without the query.
    pub path: &'a str,
    /// What follows `?` (empty without one), not decoded.
    pub query: &'a str,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// Status code and reason, e.g. `200 OK`.
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: "200 OK",
            content_type,
            body: body.into(),
        }
    }

    fn text(status: &'static str, body: String) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
        }
    }
}

/// Answers the requests of one path. Called on the server's thread, one
/// request at a time: take locks only to copy out what is served.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The paths an endpoint serves (GET and HEAD; exact match, query ignored
/// for routing), each with its handler.
#[derive(Clone, Default)]
pub struct Routes {
    table: Vec<(&'static str, Handler)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Serves `path` with `handler`; a path added twice keeps its first handler.
    pub fn add(
        &mut self,
        path: &'static str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> &mut Routes {
        self.table.push((path, Arc::new(handler)));
        self
    }

    /// Serves `registry`'s producers at `/metrics`.
    pub fn metrics(&mut self, registry: Registry) -> &mut Routes {
        self.add("/metrics", move |_| {
            Response::ok(exposition::CONTENT_TYPE, registry.render().into_string())
        })
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.table.iter().position(|(p, _)| *p == path)
    }

    fn paths(&self) -> String {
        let paths: Vec<&str> = self.table.iter().map(|(p, _)| *p).collect();
        paths.join(" ")
    }
}

/// What an endpoint is for, in its messages: what it serves, the option
/// that sets its address, and the name of its thread.
#[derive(Clone, Copy, Debug)]
pub struct Purpose {
    pub what: &'static str,
    pub flag: &'static str,
    pub thread: &'static str,
}

/// The `-P` endpoint.
pub const PROMETHEUS: Purpose = Purpose {
    what: "Prometheus metrics",
    flag: "-P",
    thread: "prometheus",
};

/// A running endpoint; stopped and joined on drop.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` now (so a taken port fails at start, with a message
    /// saying what to do) and serves `registry` at `/metrics` on a new thread.
    pub fn start(addr: SocketAddr, registry: Registry) -> anyhow::Result<Server> {
        let mut routes = Routes::new();
        routes.metrics(registry);
        Server::start_routes(addr, routes, PROMETHEUS)
    }

    /// Binds `addr` now and serves `routes` on a new thread.
    pub fn start_routes(
        addr: SocketAddr,
        routes: Routes,
        purpose: Purpose,
    ) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(addr).map_err(|e| bind_error(addr, &e, purpose))?;
        // Accepting never blocks: a client that gave up between poll() and
        // accept() must not stall the loop.
        listener
            .set_nonblocking(true)
            .with_context(|| format!("setting up the listener of {}", purpose.what))?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("reading the address of the {} listener", purpose.what))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(purpose.thread.into())
            .spawn(move || serve(&listener, &routes, &flag, purpose))
            .with_context(|| format!("starting the thread serving {}", purpose.what))?;
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

fn bind_error(addr: SocketAddr, e: &io::Error, purpose: Purpose) -> anyhow::Error {
    let flag = purpose.flag;
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "another program (or another netlens) already listens there; pick another port \
             with {flag} ADDR:PORT"
        ),
        io::ErrorKind::AddrNotAvailable => "no interface of this host has that address; use \
                                            127.0.0.1, 0.0.0.0 or one of this host's addresses"
            .to_string(),
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE".to_string()
        }
        _ => format!("pick another address with {flag} ADDR:PORT"),
    };
    anyhow::anyhow!("cannot serve {} on {addr}: {e}; {hint}", purpose.what)
}

fn serve(listener: &TcpListener, routes: &Routes, stop: &AtomicBool, purpose: Purpose) {
    while !stop.load(Ordering::Relaxed) {
        match wait_readable(listener, STOP_POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!(
                    "netlens: warning: the endpoint of {} stopped: {e}",
                    purpose.what
                );
                return;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // A client that misbehaves only loses its own answer.
                let _ = answer(stream, routes);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!(
                    "netlens: warning: the endpoint of {}: accept failed: {e}",
                    purpose.what
                );
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
enum Route<'a> {
    /// The handler at this index of the [`Routes`].
    Found {
        index: usize,
        head_only: bool,
        request: Request<'a>,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes by the request line: GET or HEAD of a path of `routes`.
fn route<'a>(head: &'a [u8], routes: &Routes) -> Route<'a> {
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
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(index) = routes.find(path) else {
        return Route::NotFound;
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    Route::Found {
        index,
        head_only,
        request: Request { path, query },
    }
}

fn answer(mut stream: TcpStream, routes: &Routes) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let head = read_head(&mut stream)?;
    let (resp, head_only) = match route(&head, routes) {
        Route::Found {
            index,
            head_only,
            request,
        } => ((routes.table[index].1)(&request), head_only),
        Route::NotFound => (
            Response::text(
                "404 Not Found",
                format!("not found: netlens serves {}\n", routes.paths()),
            ),
            false,
        ),
        Route::MethodNotAllowed => (
            Response::text(
                "405 Method Not Allowed",
                "only GET and HEAD are served\n".into(),
            ),
            false,
        ),
        Route::BadRequest => (
            Response::text("400 Bad Request", "bad request\n".into()),
            false,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(&resp.body);
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

    fn found<'a>(index: usize, head_only: bool, path: &'a str, query: &'a str) -> Route<'a> {
        Route::Found {
            index,
            head_only,
            request: Request { path, query },
        }
    }

    #[test]
    fn routes() {
        let mut table = Routes::new();
        table.metrics(Registry::new());
        table.add("/", |_| Response::ok("text/plain", "root"));
        let r = |head: &'static [u8]| route(head, &table);
        assert_eq!(
            r(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            found(0, false, "/metrics", "")
        );
        assert_eq!(
            r(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            found(0, false, "/metrics", "x=1")
        );
        assert_eq!(
            r(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            found(0, true, "/metrics", "")
        );
        assert_eq!(r(b"GET / HTTP/1.1\r\n\r\n"), found(1, false, "/", ""));
        assert_eq!(
            r(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(r(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r(b"garbage"), Route::BadRequest);
        assert_eq!(r(b""), Route::BadRequest);
        assert_eq!(r(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        // Without a /metrics route (the web UI alone), /metrics is not found.
        let mut web = Routes::new();
        web.add("/", |_| Response::ok("text/plain", "root"));
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\n\r\n", &web),
            Route::NotFound
        );
    }

    #[test]
    fn serves_extra_routes_with_their_query() {
        let mut table = Routes::new();
        table.add("/echo", |req| {
            Response::ok("text/plain", format!("{} {}", req.path, req.query))
        });
        let server =
            Server::start_routes("127.0.0.1:0".parse().unwrap(), table, PROMETHEUS).expect("bind");
        let resp = get(server.addr(), "GET /echo?a=1 HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\n/echo a=1"), "{resp}");
        let resp = get(server.addr(), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
        assert!(
            resp.ends_with("not found: netlens serves /echo\n"),
            "{resp}"
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
