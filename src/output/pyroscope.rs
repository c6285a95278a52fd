//! `netlens cost --pyroscope URL`: every period's NET_RX stacks, folded,
//! POSTed to a Grafana Pyroscope backend's `/ingest` endpoint (its HTTP
//! API: `name`, `from`, `until`, `format`, `sampleRate`, `spyName`,
//! `units`, `aggregationType` query parameters, folded lines as the body).
//!
//! The measurement loop never waits for the backend: reports are queued
//! (a few at most) for a thread that does the HTTP requests, plain HTTP/1.1
//! over a TCP connection with timeouts. A push that does not fit in the
//! queue or that the backend does not accept is dropped and counted
//! ([`PushCounters::failed`]); the first failure is printed on stderr.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use super::cost::CostSink;
use crate::model::cost::{CostReport, PushCounters, Sampler};

/// Default port of a Pyroscope server (Netto's `-p` default too).
pub const DEFAULT_PORT: u16 = 4040;
/// Pushes waiting for the thread at most; more are dropped and counted.
const QUEUE: usize = 8;
/// Connecting, and each read or write of a request.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// `spyName` of the pushes.
const SPY_NAME: &str = "netlens";

/// Where the backend is: `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path the backend is mounted under, without a trailing `/` ("" for the root).
    pub prefix: String,
}

impl Endpoint {
    /// Parses `--pyroscope`. Only http: there is no TLS client in netlens.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "`{url}`: only http:// URLs are supported (not {scheme}://); use a \
                     TLS-terminating proxy for https"
                ))
            }
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(format!("`{url}`: no query or fragment allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // [::1]:4040
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed [ in the address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || authority.contains('@') {
            return Err(format!("`{url}`: expected http://HOST[:PORT]"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("`{url}`: `{p}` is not a port number"))?,
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// Netto's spelling: `-a HOST -p PORT`.
    pub fn from_host_port(host: &str, port: u16) -> Result<Endpoint, String> {
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "-a/--address: `{host}` is not a host name or address"
            ));
        }
        Ok(Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            prefix: String::new(),
        })
    }

    /// The `Host` header value (and how the URL is shown).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.prefix)
    }
}

/// The default application name: `netlens.net_rx{host=HOSTNAME}`, in
/// Pyroscope's `name{label=value,...}` syntax.
pub fn default_app_name() -> String {
    format!("netlens.net_rx{{host={}}}", label_value(&hostname()))
}

/// A host name as a label value: characters other than letters, digits,
/// `.`, `-` and `_` become `_`.
fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if v.is_empty() {
        "unknown".to_string()
    } else {
        v
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; the kernel NUL-terminates
    // names shorter than it.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved kept).
fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The request target of one push: `/ingest?name=...&from=...` (after the
/// endpoint's prefix). `from` and `until` are Unix seconds.
pub fn ingest_target(prefix: &str, app: &str, from: u64, until: u64, sample_rate: u64) -> String {
    let mut t = format!("{prefix}/ingest?name=");
    encode(app, &mut t);
    let _ = write!(
        t,
        "&from={from}&until={until}&format=folded&sampleRate={sample_rate}&spyName={SPY_NAME}\
         &units=samples&aggregationType=sum"
    );
    t
}

/// Folded lines, `stack count\n` each.
pub fn folded_body(stacks: &[(String, u64)]) -> String {
    let mut body = String::with_capacity(stacks.iter().map(|(s, _)| s.len() + 12).sum());
    for (stack, count) in stacks {
        let _ = writeln!(body, "{stack} {count}");
    }
    body
}

/// The Unix seconds a report covers: from the start of its period
/// (rounded down) to its end (rounded up, at least one second later).
pub fn period_seconds(timestamp_ns: u64, period_ns: u64) -> (u64, u64) {
    let from = timestamp_ns.saturating_sub(period_ns) / 1_000_000_000;
    let until = timestamp_ns.div_ceil(1_000_000_000).max(from + 1);
    (from, until)
}

/// `sampleRate`: with -f HZ, HZ; with -f tick, CONFIG_HZ when the kernel
/// config says, else the period's effective rate per CPU.
pub fn sample_rate(sampler: Sampler, config_hz: Option<u64>, effective_hz: f64) -> u64 {
    match sampler {
        Sampler::Hz(hz) | Sampler::Cycles(hz) => hz,
        Sampler::Tick => config_hz.unwrap_or(effective_hz.round() as u64).max(1),
        Sampler::Off | Sampler::Auto => 1,
    }
}

/// CONFIG_HZ from /boot/config-RELEASE, when it is there.
pub fn config_hz() -> Option<u64> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    parse_config_hz(&config)
}

fn parse_config_hz(config: &str) -> Option<u64> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&hz| hz > 0)
}

struct Push {
    target: String,
    body: String,
}

/// The [`CostSink`] that queues a push per period with samples.
pub struct PyroscopeSink {
    endpoint: Endpoint,
    app: String,
    config_hz: Option<u64>,
    queue: SyncSender<Push>,
    counters: Arc<PushCounters>,
    warned: Arc<AtomicBool>,
}

/// The pushing thread, to wait for at exit.
pub struct PyroscopeWorker {
    thread: JoinHandle<()>,
    done: Receiver<()>,
    counters: Arc<PushCounters>,
}

/// Prints the first failure on stderr, once.
fn warn_once(warned: &AtomicBool, endpoint: &str, what: &str) {
    if !warned.swap(true, Ordering::Relaxed) {
        eprintln!(
            "warning: pyroscope: {what} (backend {endpoint}); NET_RX stacks of such periods are \
             dropped and counted (`pyroscope` in the log, the `lost:` line, the exit line); \
             netlens goes on measuring"
        );
    }
}

impl PyroscopeSink {
    /// Starts the pushing thread.
    pub fn start(endpoint: Endpoint, app: String) -> Result<(PyroscopeSink, PyroscopeWorker)> {
        let (tx, rx) = mpsc::sync_channel::<Push>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let counters = Arc::new(PushCounters::default());
        let warned = Arc::new(AtomicBool::new(false));
        let thread = {
            let endpoint = endpoint.clone();
            let counters = Arc::clone(&counters);
            let warned = Arc::clone(&warned);
            std::thread::Builder::new()
                .name("pyroscope".into())
                .spawn(move || {
                    for push in rx {
                        match post(&endpoint, &push) {
                            Ok(()) => counters.pushed.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                warn_once(&warned, &endpoint.url(), &format!("push failed: {e}"));
                                counters.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    let _ = done_tx.send(());
                })?
        };
        let sink = PyroscopeSink {
            endpoint,
            app,
            config_hz: config_hz(),
            queue: tx,
            counters: Arc::clone(&counters),
            warned,
        };
        Ok((
            sink,
            PyroscopeWorker {
                thread,
                done,
                counters,
            },
        ))
    }

    pub fn counters(&self) -> Arc<PushCounters> {
        Arc::clone(&self.counters)
    }
}

impl CostSink for PyroscopeSink {
    fn report(&mut self, r: &CostReport) -> Result<()> {
        if r.net_rx_stacks.is_empty() {
            return Ok(());
        }
        let (from, until) = period_seconds(r.timestamp, r.period_ns);
        let rate = sample_rate(r.sampling.sampler, self.config_hz, r.sampling.effective_hz);
        let push = Push {
            target: ingest_target(&self.endpoint.prefix, &self.app, from, until, rate),
            body: folded_body(&r.net_rx_stacks),
        };
        match self.queue.try_send(push) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                warn_once(
                    &self.warned,
                    &self.endpoint.url(),
                    "the backend is too slow, pushes queue up",
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl PyroscopeWorker {
    /// Waits (at most `timeout`) for the queued pushes once the sink is
    /// dropped; returns (pushed, failed) since start. Pushes still queued
    /// after `timeout` are counted as failed.
    pub fn finish(self, timeout: Duration) -> (u64, u64) {
        let waited = match self.done.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
        };
        let t = self.counters.totals();
        if waited {
            (t.pushed, t.failed)
        } else {
            eprintln!(
                "warning: pyroscope: the last pushes did not finish within {timeout:?}; counted \
                 as failed"
            );
            (t.pushed, t.failed + 1)
        }
    }
}

/// One `POST` with `Connection: close`; Ok on a 2xx answer.
fn post(endpoint: &Endpoint, push: &Push) -> io::Result<()> {
    let addrs = (endpoint.host.as_str(), endpoint.port).to_socket_addrs()?;
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netlens/{}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        push.target,
        endpoint.authority(),
        env!("CARGO_PKG_VERSION"),
        push.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(push.body.as_bytes())?;
    stream.flush()?;
    let status = read_status(&mut stream)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(io::Error::other(format!("HTTP status {status}")))
    }
}

/// The status code of the answer's status line.
fn read_status(stream: &mut impl Read) -> io::Result<u16> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        if buf.len() > 1024 {
            return Err(io::Error::other("no HTTP status line"));
        }
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed without an HTTP answer",
            ));
        }
        buf.push(byte[0]);
    }
    parse_status(&buf).ok_or_else(|| io::Error::other("malformed HTTP status line"))
}

fn parse_status(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_https_refused() {
        let e = Endpoint::parse("http://127.0.0.1:4040").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 4040,
                prefix: String::new()
            }
        );
        let e = Endpoint::parse("http://pyroscope").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("pyroscope", DEFAULT_PORT));
        let e = Endpoint::parse("pyro.example:9000/prefix/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("pyro.example", 9000, "/prefix")
        );
        let e = Endpoint::parse("http://[::1]:4041").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4041));
        assert_eq!(e.url(), "http://[::1]:4041");
        assert!(Endpoint::parse("https://x:4040")
            .unwrap_err()
            .contains("only http://"));
        assert!(Endpoint::parse("http://x:port").is_err());
        assert!(Endpoint::parse("http://x:0").is_err());
        assert!(Endpoint::parse("http://:4040").is_err());
        assert!(Endpoint::parse("http://x/ingest?a=b").is_err());
        let e = Endpoint::from_host_port("pyroscope", 4040).unwrap();
        assert_eq!(e.url(), "http://pyroscope:4040");
        assert!(Endpoint::from_host_port("http://x", 4040).is_err());
    }

    #[test]
    fn ingest_target_has_the_documented_parameters() {
        let t = ingest_target(
            "",
            "netlens.net_rx{host=box-1}",
            1_700_000_000,
            1_700_000_001,
            1000,
        );
        assert_eq!(
            t,
            "/ingest?name=netlens.net_rx%7Bhost%3Dbox-1%7D&from=1700000000&until=1700000001\
             &format=folded&sampleRate=1000&spyName=netlens&units=samples&aggregationType=sum"
        );
        assert!(ingest_target("/pyro", "a", 1, 2, 3).starts_with("/pyro/ingest?name=a&from=1&"));
    }

    #[test]
    fn app_name_uses_label_syntax() {
        let name = default_app_name();
        assert!(name.starts_with("netlens.net_rx{host="), "{name}");
        assert!(name.ends_with('}'), "{name}");
        assert_eq!(label_value("a b,c=d}"), "a_b_c_d_");
        assert_eq!(label_value(""), "unknown");
    }

    #[test]
    fn body_is_folded_lines() {
        let stacks = vec![
            ("net_rx_action;__napi_poll;veth_poll".to_string(), 2),
            ("net_rx_action;ip_local_deliver;tcp_v4_rcv".to_string(), 7),
        ];
        assert_eq!(
            folded_body(&stacks),
            "net_rx_action;__napi_poll;veth_poll 2\nnet_rx_action;ip_local_deliver;tcp_v4_rcv 7\n"
        );
    }

    #[test]
    fn period_seconds_and_sample_rate() {
        // 250 ms ending at 10.1 s: seconds 9 to 11.
        assert_eq!(period_seconds(10_100_000_000, 250_000_000), (9, 11));
        assert_eq!(period_seconds(10_500_000_000, 250_000_000), (10, 11));
        // Exactly on a second: still at least one second.
        assert_eq!(period_seconds(11_000_000_000, 500_000_000), (10, 11));
        assert_eq!(period_seconds(11_000_000_000, 0), (11, 12));
        assert_eq!(sample_rate(Sampler::Hz(997), Some(250), 3.0), 997);
        assert_eq!(sample_rate(Sampler::Tick, Some(250), 3.0), 250);
        assert_eq!(sample_rate(Sampler::Tick, None, 99.6), 100);
        assert_eq!(sample_rate(Sampler::Tick, None, 0.0), 1);
        assert_eq!(
            parse_config_hz("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(parse_config_hz("CONFIG_HZ_1000=y\n"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 422 Unprocessable\r\n"), Some(422));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        let mut answer: &[u8] = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n";
        assert_eq!(read_status(&mut answer).unwrap(), 204);
        let mut cut: &[u8] = b"HTTP/1.1 2";
        assert!(read_status(&mut cut).is_err());
    }

    #[test]
    fn pushes_reach_a_server_and_failures_are_counted() {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = io::BufReader::new(conn);
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let (mut sink, worker) = PyroscopeSink::start(endpoint, "app{}".into()).unwrap();
        let mut r = CostReport {
            timestamp: 5_000_000_000,
            period_ns: 500_000_000,
            ..Default::default()
        };
        r.sampling.sampler = Sampler::Hz(1000);
        // No samples: nothing is sent.
        sink.report(&r).unwrap();
        r.net_rx_stacks = vec![("net_rx_action;x".into(), 3)];
        sink.report(&r).unwrap();
        let (head, body) = server.join().unwrap();
        assert!(
            head.starts_with(
                "POST /ingest?name=app%7B%7D&from=4&until=5&format=folded&sampleRate=1000&"
            ),
            "{head}"
        );
        assert_eq!(body, "net_rx_action;x 3\n");
        // The server is gone: the next push fails and is counted.
        sink.report(&r).unwrap();
        drop(sink);
        assert_eq!(worker.finish(Duration::from_secs(10)), (1, 1));
    }
}
