//! The HTTP endpoints of netlens (`/metrics`, the web UI, `/healthz`): axum
//! on hyper's HTTP/1, on a single-threaded tokio runtime that runs on a
//! thread of its own, so the collectors stay synchronous.
//!
//! Every client is served concurrently, so an idle or slow client never
//! delays a scrape. Each one is bounded: its request head must arrive within
//! [`HEADER_TIMEOUT`] (also between two requests of a kept-alive connection)
//! and fit in [`MAX_HEAD`] bytes, an answer it stops reading is dropped after
//! [`WRITE_STALL`], and at most [`MAX_CLIENTS`] are served at once (more wait
//! in the kernel's accept queue). Handlers run on a small blocking pool:
//! producers are only locked while they render into memory, never while a
//! socket is written.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use super::exposition::{self, Exposition};
use crate::model::Readiness;

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

/// Longest wait for a request head, counted from the connection (or the end
/// of the previous answer on a kept-alive one): a client that sends half a
/// request, or nothing, is dropped then.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers); a larger one is answered
/// 431 and the connection closed. Scrapers send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest request target (path and query); a longer one is answered 414.
pub const MAX_TARGET: usize = 8 * 1024;
/// Longest time an answer may stay unsent because the client does not read.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// Clients served at once; further connections wait to be accepted. Bounds
/// memory and keeps file descriptors for the collector.
pub const MAX_CLIENTS: usize = 256;
/// How long a stopping server lets answers in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Threads that run handlers (each renders from memory, briefly).
const HANDLER_THREADS: usize = 2;
/// Pause after a failed accept (EMFILE and friends), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// The readiness path every endpoint serves.
pub const HEALTHZ: &str = "/healthz";

/// What a request asked for, as a handler sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The path, without the query (also for an absolute-form target).
    pub path: &'a str,
    /// What follows `?` (empty without one), not decoded.
    pub query: &'a str,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// Status code and reason, e.g. `200 OK` (the code is what is sent).
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

    /// A plain-text answer with another status, e.g. `503 Service Unavailable`.
    pub fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    fn into_http(self) -> axum::response::Response {
        let status = self
            .status
            .get(..3)
            .and_then(|code| StatusCode::from_bytes(code.as_bytes()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = HeaderValue::from_str(self.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let mut out = axum::response::Response::new(Body::from(self.body));
        *out.status_mut() = status;
        let headers = out.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type);
        // Every answer is a view of the moment: never served from a cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        out
    }
}

/// Answers the requests of one path. Called on a handler thread, possibly
/// for several requests at once: take locks only to copy out what is served.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The paths an endpoint serves (GET and HEAD; exact match, query ignored
/// for routing), each with its handler, and the flag `/healthz` answers from.
#[derive(Clone, Default)]
pub struct Routes {
    table: Vec<(&'static str, Handler)>,
    ready: Readiness,
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

    /// Answers `/healthz` from `ready` (share one flag among the endpoints of
    /// one command). Without it, the endpoint has a flag of its own, set with
    /// [`Server::readiness`].
    pub fn health(&mut self, ready: &Readiness) -> &mut Routes {
        self.ready = ready.clone();
        self
    }

    /// The served paths, first handler of each, `/healthz` included.
    fn unique(&self) -> Vec<(&'static str, Option<&Handler>)> {
        let mut out: Vec<(&'static str, Option<&Handler>)> = Vec::new();
        for (path, handler) in &self.table {
            if !out.iter().any(|(p, _)| p == path) {
                out.push((path, Some(handler)));
            }
        }
        if !out.iter().any(|(p, _)| *p == HEALTHZ) {
            out.push((HEALTHZ, None));
        }
        out
    }

    /// The axum router of these routes; an error for a path that is not a
    /// plain absolute path (axum would read braces as parameters).
    fn router(&self) -> anyhow::Result<Router> {
        let served = self.unique();
        let listing: Vec<&str> = served.iter().map(|(p, _)| *p).collect();
        let not_found = format!("not found: netlens serves {}\n", listing.join(" "));
        let mut router = Router::new();
        for (path, handler) in served {
            if !plain_path(path) {
                anyhow::bail!("cannot serve the path {path:?}: not a plain absolute path");
            }
            let method_router = match handler {
                Some(handler) => {
                    let handler = Arc::clone(handler);
                    get(move |uri: Uri| answer(Arc::clone(&handler), uri))
                }
                None => {
                    let ready = self.ready.clone();
                    get(move || std::future::ready(health(&ready).into_http()))
                }
            };
            router = router.route(path, method_router);
        }
        Ok(router
            .fallback(move |uri: Uri| {
                let resp = target_too_long(&uri)
                    .unwrap_or_else(|| Response::text("404 Not Found", not_found.clone()));
                std::future::ready(resp.into_http())
            })
            .method_not_allowed_fallback(|method: Method| {
                let body = format!("{method} is not served: only GET and HEAD are\n");
                let mut resp = Response::text("405 Method Not Allowed", body).into_http();
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                std::future::ready(resp)
            }))
    }
}

/// A path axum matches literally: absolute, without parameter syntax.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['{', '}'])
        && !path
            .split('/')
            .any(|seg| seg.starts_with(':') || seg.starts_with('*'))
}

/// The answer of `/healthz`.
fn health(ready: &Readiness) -> Response {
    if ready.is_ready() {
        Response::ok("text/plain; charset=utf-8", "ok\n")
    } else {
        Response::text("503 Service Unavailable", "starting\n")
    }
}

/// 414 for a request target longer than [`MAX_TARGET`].
fn target_too_long(uri: &Uri) -> Option<Response> {
    let len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    (len > MAX_TARGET).then(|| {
        Response::text(
            "414 URI Too Long",
            format!("the request target is longer than {MAX_TARGET} bytes\n"),
        )
    })
}

/// Runs `handler` on the blocking pool, so that a long render does not hold
/// up the other clients; a handler that panics answers 500.
async fn answer(handler: Handler, uri: Uri) -> axum::response::Response {
    if let Some(resp) = target_too_long(&uri) {
        return resp.into_http();
    }
    let rendered = tokio::task::spawn_blocking(move || {
        handler(&Request {
            path: uri.path(),
            query: uri.query().unwrap_or(""),
        })
    })
    .await;
    rendered
        .unwrap_or_else(|_| Response::text("500 Internal Server Error", "netlens failed\n"))
        .into_http()
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
    ready: Readiness,
    stop: watch::Sender<bool>,
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

    /// Binds `addr` now and serves `routes` (and `/healthz`) on a new thread.
    pub fn start_routes(
        addr: SocketAddr,
        routes: Routes,
        purpose: Purpose,
    ) -> anyhow::Result<Server> {
        let router = routes.router()?;
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| bind_error(addr, &e, purpose))?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("reading the address of the {} listener", purpose.what))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("setting up the listener of {}", purpose.what))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(HANDLER_THREADS)
            .thread_name(purpose.thread)
            .build()
            .with_context(|| format!("starting the runtime serving {}", purpose.what))?;
        let listener = {
            let _in_runtime = runtime.enter();
            TcpListener::from_std(listener)
                .with_context(|| format!("setting up the listener of {}", purpose.what))?
        };
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(purpose.thread.into())
            .spawn(move || {
                runtime.block_on(serve(listener, router, stopped, purpose));
                // Handlers still rendering after the grace period are not
                // waited for any longer than this.
                runtime.shutdown_timeout(SHUTDOWN_GRACE / 4);
            })
            .with_context(|| format!("starting the thread serving {}", purpose.what))?;
        Ok(Server {
            addr: bound,
            ready: routes.ready,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The flag `/healthz` answers from: set it once the command collects.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }
}

impl Drop for Server {
    /// Stops accepting, lets answers in flight finish for up to about a
    /// second, closes the rest and joins the thread.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
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

/// Accepts clients until `stop` changes, each served by a task of its own.
async fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
    purpose: Purpose,
) {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            accepted = listener.accept(), if clients.len() < MAX_CLIENTS => match accepted {
                Ok((stream, _)) => {
                    clients.spawn(serve_client(stream, router.clone(), stop.clone()));
                }
                // The client gave up before it was accepted: nothing lost.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    eprintln!(
                        "netlens: warning: the endpoint of {}: accept failed: {e}",
                        purpose.what
                    );
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // No new connection from here on; the clients saw `stop` too.
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    // Dropping the set aborts the clients that are still there.
}

/// Serves one connection until it closes, fails one of the bounds, or the
/// server stops (then it finishes the answer in flight, if any).
async fn serve_client(stream: TcpStream, router: Router, mut stop: watch::Receiver<bool>) {
    // Answers are written whole; Nagle would only delay their last segment.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WriteStallBound::new(stream));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let mut connection = pin!(builder.serve_connection(io, TowerToHyperService::new(router)));
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A client socket whose writes fail once they made no progress for
/// [`WRITE_STALL`]: hyper has no write timeout of its own, and a client that
/// never reads would otherwise hold its answer in memory for good.
struct WriteStallBound {
    stream: TcpStream,
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl WriteStallBound {
    fn new(stream: TcpStream) -> WriteStallBound {
        WriteStallBound {
            stream,
            stalled_since: None,
        }
    }

    /// Passes on a finished write (and forgets any stall), or starts or
    /// checks the stall clock of a pending one.
    fn bound<T>(
        &mut self,
        cx: &mut TaskContext<'_>,
        p: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if p.is_ready() {
            self.stalled_since = None;
            return p;
        }
        let clock = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteStallBound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStallBound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bound(cx, p)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bound(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.stream).poll_flush(cx);
        this.bound(cx, p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::prometheus::exposition::{Kind, Labels};
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant;

    struct Fixed(&'static str, u64);

    impl Producer for Fixed {
        fn render(&self, out: &mut Exposition) {
            out.family(self.0, Kind::Gauge, "test")
                .sample(&Labels::new(), self.1);
        }
    }

    /// One answer as read off the wire.
    #[derive(Debug)]
    struct Answer {
        status: u16,
        head: String,
        body: String,
    }

    impl Answer {
        /// The value of header `name` (hyper sends names in lower case).
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
    }

    fn connect(addr: SocketAddr) -> StdStream {
        let s = StdStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    }

    /// Reads one answer (head, then a body of Content-Length bytes unless
    /// `head_only`), leaving the connection open.
    fn read_answer(s: &mut StdStream, head_only: bool) -> Answer {
        let mut raw = Vec::new();
        let mut byte = [0u8];
        while !raw.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).expect("read head");
            assert_eq!(n, 1, "connection closed in the head: {raw:?}");
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).expect("utf-8 head");
        let status = head[9..12].parse().expect("status code");
        let mut answer = Answer {
            status,
            head,
            body: String::new(),
        };
        if !head_only {
            let len: usize = answer
                .header("content-length")
                .expect("content-length")
                .parse()
                .expect("length");
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).expect("read body");
            answer.body = String::from_utf8(body).expect("utf-8 body");
        }
        answer
    }

    /// Sends `request` on a new connection and reads one answer.
    fn ask(addr: SocketAddr, request: &str) -> Answer {
        let mut s = connect(addr);
        s.write_all(request.as_bytes()).expect("write");
        read_answer(&mut s, request.starts_with("HEAD "))
    }

    fn get(addr: SocketAddr, path: &str) -> Answer {
        ask(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
    }

    /// Whether the server closed `s` (reads end of file, or a reset).
    fn closed(s: &mut StdStream) -> bool {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn metrics_server() -> Server {
        let reg = Registry::new();
        reg.register(Arc::new(Fixed("x", 1)));
        Server::start(any_port(), reg).expect("bind")
    }

    #[test]
    fn serves_every_producer_and_404_elsewhere() {
        let reg = Registry::new();
        reg.register(Arc::new(Fixed("first", 1)));
        let server = Server::start(any_port(), reg.clone()).expect("bind");
        // Registered after the start: still served.
        reg.register(Arc::new(Fixed("second", 2)));
        let resp = get(server.addr(), "/metrics");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        assert!(
            resp.body.contains("\nfirst 1\n") && resp.body.contains("\nsecond 2\n"),
            "{}",
            resp.body
        );
        for path in ["/other", "/metricsx", "/metrics/", "/"] {
            let resp = get(server.addr(), path);
            assert_eq!(resp.status, 404, "{path}");
            assert_eq!(resp.body, "not found: netlens serves /metrics /healthz\n");
        }
    }

    #[test]
    fn serves_extra_routes_with_their_query() {
        let mut table = Routes::new();
        table.add("/echo", |req| {
            Response::ok("text/plain", format!("{} {}", req.path, req.query))
        });
        table.add("/echo", |_| Response::ok("text/plain", "second handler"));
        let server = Server::start_routes(any_port(), table, PROMETHEUS).expect("bind");
        let resp = get(server.addr(), "/echo?a=1&b=%20");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, "/echo a=1&b=%20", "the first handler, raw query");
        let resp = get(server.addr(), "/metrics");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.body, "not found: netlens serves /echo /healthz\n");
    }

    #[test]
    fn head_has_the_length_of_get_and_no_body() {
        let server = metrics_server();
        let full = get(server.addr(), "/metrics");
        let mut s = connect(server.addr());
        s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write");
        let head = read_answer(&mut s, true);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(full.body.len().to_string().as_str())
        );
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read");
        assert!(rest.is_empty(), "a body after HEAD: {rest:?}");
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        let server = metrics_server();
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let resp = ask(
                server.addr(),
                &format!("{method} /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
            );
            assert_eq!(resp.status, 405, "{method}");
            assert_eq!(resp.header("allow"), Some("GET, HEAD"), "{method}");
            assert!(resp.body.contains(method), "{}", resp.body);
        }
        // /healthz too.
        let resp = ask(
            server.addr(),
            "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(resp.status, 405);
    }

    #[test]
    fn absolute_form_is_routed_by_its_path() {
        let mut table = Routes::new();
        table.add("/echo", |req| {
            Response::ok("text/plain", format!("{} {}", req.path, req.query))
        });
        let server = Server::start_routes(any_port(), table, PROMETHEUS).expect("bind");
        let addr = server.addr();
        let resp = ask(
            addr,
            &format!("GET http://{addr}/echo?q=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        );
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body, "/echo q=1");
        let resp = ask(
            addr,
            &format!("GET http://{addr}/nothing HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        );
        assert_eq!(resp.status, 404);
    }

    #[test]
    fn keep_alive_serves_two_requests_on_one_connection() {
        let server = metrics_server();
        let mut s = connect(server.addr());
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let first = read_answer(&mut s, false);
        assert_eq!(first.status, 200);
        assert_ne!(first.header("connection"), Some("close"));
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write on the same connection");
        let second = read_answer(&mut s, false);
        assert_eq!(second.status, 503);
        assert!(closed(&mut s), "closed after Connection: close");
    }

    #[test]
    fn healthz_says_starting_until_ready() {
        let ready = Readiness::new();
        let mut table = Routes::new();
        table.metrics(Registry::new()).health(&ready);
        let server = Server::start_routes(any_port(), table, PROMETHEUS).expect("bind");
        let resp = get(server.addr(), "/healthz");
        assert_eq!((resp.status, resp.body.as_str()), (503, "starting\n"));
        // Set after the server started, from another handle of the flag.
        ready.set_ready();
        let resp = get(server.addr(), "/healthz");
        assert_eq!((resp.status, resp.body.as_str()), (200, "ok\n"));
        assert!(server.readiness().is_ready(), "the same flag");

        // Without a flag of its own, the server's handle sets it.
        let server = metrics_server();
        assert_eq!(get(server.addr(), "/healthz").status, 503);
        server.readiness().set_ready();
        assert_eq!(get(server.addr(), "/healthz").status, 200);
        let head = ask(server.addr(), "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(head.status, 200);
    }

    #[test]
    fn over_long_target_is_414_and_over_large_head_431() {
        let server = metrics_server();
        let long_query = "a".repeat(MAX_TARGET);
        let resp = get(server.addr(), &format!("/metrics?{long_query}"));
        assert_eq!(resp.status, 414, "{resp:?}");
        let resp = get(server.addr(), &format!("/{long_query}"));
        assert_eq!(resp.status, 414, "unknown paths too");

        let big_header = format!("X-Big: {}\r\n", "b".repeat(MAX_HEAD));
        let mut s = connect(server.addr());
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{big_header}\r\n").as_bytes())
            .expect("write");
        let resp = read_answer(&mut s, true);
        assert_eq!(resp.status, 431, "{resp:?}");
        assert!(closed(&mut s));
    }

    #[test]
    fn a_huge_request_line_is_431_with_bounded_reading() {
        let server = metrics_server();
        let mut s = connect(server.addr());
        let mut writer = s.try_clone().expect("clone");
        // 10 MB of request line: the server stops reading at MAX_HEAD, so
        // this write fails (reset) or blocks until the server closes.
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(b"GET /");
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..160 {
                if writer.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        // hyper answers a head over its buffer with 431, whichever part of
        // the head is too long (there is no 414 before the line ends).
        let resp = read_answer(&mut s, true);
        assert_eq!(resp.status, 431, "{resp:?}");
        assert!(closed(&mut s));
        sender.join().expect("sender");
    }

    #[test]
    fn silent_clients_do_not_delay_a_scrape() {
        let server = metrics_server();
        let silent: Vec<StdStream> = (0..10)
            .map(|_| StdStream::connect(server.addr()).expect("connect"))
            .collect();
        let mut half = connect(server.addr());
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
            .expect("write");
        let t = Instant::now();
        let resp = get(server.addr(), "/metrics");
        assert_eq!(resp.status, 200);
        // Served at once, not after the others' header timeouts.
        assert!(t.elapsed() < HEADER_TIMEOUT, "{:?}", t.elapsed());
        drop(silent);
    }

    #[test]
    fn half_a_request_is_dropped_after_the_header_timeout() {
        let server = metrics_server();
        // Before connecting: the server's clock starts later.
        let t = Instant::now();
        let mut s = connect(server.addr());
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
            .expect("write");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let waited = t.elapsed();
        assert!(
            waited >= HEADER_TIMEOUT && waited < HEADER_TIMEOUT + Duration::from_secs(4),
            "closed after {waited:?}"
        );
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
            "{rest}"
        );
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_after_the_write_stall() {
        // Far more than the socket buffers of both ends hold on loopback.
        const BODY: usize = 64 << 20;
        let mut table = Routes::new();
        table.add("/big", |_| Response::ok("text/plain", vec![b'x'; BODY]));
        let server = Server::start_routes(any_port(), table, PROMETHEUS).expect("bind");
        let mut s = connect(server.addr());
        s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        std::thread::sleep(WRITE_STALL + Duration::from_secs(2));
        // Whatever was buffered arrives, then the end: not the whole body.
        let mut got = Vec::new();
        let ended = s.read_to_end(&mut got);
        let reset = matches!(&ended, Err(e) if e.kind() == io::ErrorKind::ConnectionReset);
        assert!(ended.is_ok() || reset, "{ended:?}");
        assert!(
            got.len() < BODY,
            "the whole answer was kept for a client that did not read"
        );
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn clients_beyond_the_limit_wait_for_a_free_slot() {
        let server = metrics_server();
        let idle: Vec<StdStream> = (0..MAX_CLIENTS)
            .map(|_| StdStream::connect(server.addr()).expect("connect"))
            .collect();
        // Accepted by the kernel, not served while every slot is taken...
        let mut waiting = connect(server.addr());
        waiting
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        waiting
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let mut byte = [0u8];
        let early = waiting.read(&mut byte);
        assert!(
            matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{early:?}"
        );
        // ... and served once they close.
        drop(idle);
        waiting
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert_eq!(read_answer(&mut waiting, false).status, 200);
    }

    #[test]
    fn a_panicking_handler_answers_500_and_the_server_goes_on() {
        let mut table = Routes::new();
        table.add("/boom", |_| panic!("handler failure on purpose"));
        table.add("/fine", |_| Response::ok("text/plain", "fine"));
        let server = Server::start_routes(any_port(), table, PROMETHEUS).expect("bind");
        assert_eq!(get(server.addr(), "/boom").status, 500);
        assert_eq!(get(server.addr(), "/fine").body, "fine");
    }

    #[test]
    fn bad_paths_are_an_error_not_a_panic() {
        for bad in ["metrics", "/{id}", "/a/*rest", "/:id"] {
            let mut table = Routes::new();
            table.add(bad, |_| Response::ok("text/plain", ""));
            let err = Server::start_routes(any_port(), table, PROMETHEUS)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                err.to_string().contains("not a plain absolute path"),
                "{err}"
            );
        }
    }

    #[test]
    fn taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
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
    fn drop_stops_the_thread_despite_idle_clients() {
        let server = metrics_server();
        let addr = server.addr();
        let _idle = StdStream::connect(addr).expect("connect");
        let mut kept_alive = connect(addr);
        kept_alive
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        assert_eq!(read_answer(&mut kept_alive, false).status, 200);
        let t = Instant::now();
        drop(server);
        assert!(t.elapsed() < SHUTDOWN_GRACE * 3, "{:?}", t.elapsed());
        assert!(StdStream::connect(addr).is_err(), "listener closed");
        assert!(closed(&mut kept_alive), "idle keep-alive closed");
    }

    #[test]
    fn drop_lets_an_answer_in_flight_finish() {
        let mut table = Routes::new();
        table.add("/slow", |_| {
            std::thread::sleep(Duration::from_millis(300));
            Response::ok("text/plain", "done")
        });
        let server = Server::start_routes(any_port(), table, PROMETHEUS).expect("bind");
        let mut s = connect(server.addr());
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        // Let the request reach the handler, then stop the server.
        std::thread::sleep(Duration::from_millis(100));
        drop(server);
        let resp = read_answer(&mut s, false);
        assert_eq!((resp.status, resp.body.as_str()), (200, "done"));
    }
}
