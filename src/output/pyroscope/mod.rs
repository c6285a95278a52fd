//! `netlens cost --pyroscope URL`: every period's NET_RX stacks, folded,
//! POSTed to a Grafana Pyroscope backend's `/ingest` endpoint (its HTTP
//! API: `name`, `from`, `until`, `format`, `sampleRate`, `spyName`,
//! `units`, `aggregationType` query parameters, folded lines as the body),
//! over http or https, with basic auth and a tenant header when asked.
//!
//! The measurement loop never waits for the backend: each period's push
//! goes into a short queue that a thread of its own empties; when the
//! queue is full the oldest push waiting is dropped. Every push that is
//! not delivered is counted ([`PushCounters::failed`], and by
//! [`FailureKind`]); the first failure of each kind is printed on stderr.

mod auth;
mod client;
mod endpoint;

pub use auth::{env_password, Access, AccessOptions, PASSWORD_ENV, TENANT_HEADER};
pub use client::{FailureKind, CONNECT_TIMEOUT, REQUEST_TIMEOUT, RESOLVE_TIMEOUT};
pub use endpoint::{Endpoint, Scheme, DEFAULT_PORT, DEFAULT_TLS_PORT};

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};

use super::Sink;
use crate::model::cost::{CostReport, Sampler};
use client::{Client, Failure, Timeouts};

/// Pushes waiting for the thread at most; when full, the oldest is dropped.
const QUEUE_LEN: usize = 8;
/// `spyName` of the pushes.
const SPY_NAME: &str = "netlens";

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

/// The pushes waiting, shared by the sink (which adds) and the thread
/// (which takes).
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    waiting: VecDeque<Push>,
    /// The sink is gone: the thread stops once `waiting` is empty.
    closed: bool,
    /// The thread is sending a push.
    sending: bool,
    /// netlens stopped waiting at exit: what is left was counted as failed.
    abandoned: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a push; returns the oldest one dropped to make room.
    fn add(&self, push: Push) -> Option<Push> {
        let mut state = self.lock();
        let dropped = if state.waiting.len() >= QUEUE_LEN {
            state.waiting.pop_front()
        } else {
            None
        };
        state.waiting.push_back(push);
        self.changed.notify_one();
        dropped
    }

    /// The next push, waiting for one; None once closed and empty.
    fn take(&self) -> Option<Push> {
        let mut state = self.lock();
        loop {
            if let Some(push) = state.waiting.pop_front() {
                state.sending = true;
                return Some(push);
            }
            if state.closed {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The push under way is done; false if it was already counted by
    /// [`Queue::abandon`].
    fn settle(&self) -> bool {
        let mut state = self.lock();
        state.sending = false;
        !state.abandoned
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_one();
    }

    /// Empties the queue; returns how many pushes were waiting or being sent.
    fn abandon(&self) -> u64 {
        let mut state = self.lock();
        let left = state.waiting.len() + usize::from(state.sending);
        state.waiting.clear();
        state.abandoned = true;
        left as u64
    }
}

/// The counts of the pushes, shared by the sink, the thread and the
/// reports.
struct Tally {
    counters: Arc<PushCounters>,
    by_kind: [AtomicU64; FailureKind::ALL.len()],
    /// The backend, as named in warnings.
    url: String,
    /// Where warnings go: stderr, or the terminal UI's status lines while
    /// it owns the screen.
    say: Mutex<Say>,
}

type Say = Arc<dyn Fn(&str) + Send + Sync>;

fn say_on_stderr() -> Say {
    Arc::new(|line: &str| eprintln!("{line}"))
}

impl Tally {
    /// Counts a failure; the first of its kind is printed.
    fn failed(&self, failure: &Failure, pushes: u64) {
        self.counters.failed.fetch_add(pushes, Ordering::Relaxed);
        let before = self.by_kind[failure.kind.index()].fetch_add(pushes, Ordering::Relaxed);
        if before == 0 {
            let say = Arc::clone(&self.say.lock().unwrap_or_else(|e| e.into_inner()));
            say(&format!(
                "warning: pyroscope: {} ({}; backend {}); the NET_RX stacks of such periods are \
                 dropped and counted (`pyroscope` in the log, the `lost:` line, the exit line) \
                 without repeating this warning; netlens goes on measuring",
                failure.detail,
                failure.kind.name(),
                self.url,
            ));
        }
    }

    fn summary(&self) -> PushSummary {
        let totals = self.counters.totals();
        PushSummary {
            pushed: totals.pushed,
            failed: totals.failed,
            by_kind: FailureKind::ALL
                .iter()
                .map(|&k| (k, self.by_kind[k.index()].load(Ordering::Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        }
    }
}

/// The pushes of a run, for the exit line: `N pushes, N failed (N
/// connect, ...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSummary {
    pub pushed: u64,
    pub failed: u64,
    pub by_kind: Vec<(FailureKind, u64)>,
}

impl fmt::Display for PushSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pushes, {} failed", self.pushed, self.failed)?;
        for (i, (kind, n)) in self.by_kind.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{n} {}", kind.name())?;
        }
        if !self.by_kind.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Pushes of the NET_RX stacks to the backend since start: this output's
/// own state, counted by the pushing thread; the table and the log, which
/// show them, hold a handle (given by whoever builds the outputs), so the
/// model and the measurement never carry them.
#[derive(Debug, Default)]
pub struct PushCounters {
    pub pushed: std::sync::atomic::AtomicU64,
    /// Not delivered: the queue was full, or the backend failed or was
    /// unreachable.
    pub failed: std::sync::atomic::AtomicU64,
}

/// [`PushCounters`] as read for one report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushTotals {
    pub pushed: u64,
    pub failed: u64,
}

impl PushCounters {
    pub fn totals(&self) -> PushTotals {
        use std::sync::atomic::Ordering::Relaxed;
        PushTotals {
            pushed: self.pushed.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// The [`Sink`] that queues a push per period with samples.
pub struct PyroscopeSink {
    prefix: String,
    app: String,
    config_hz: Option<u64>,
    queue: Arc<Queue>,
    tally: Arc<Tally>,
}

/// The pushing thread, to wait for at exit.
pub struct PyroscopeWorker {
    thread: JoinHandle<()>,
    done: Receiver<()>,
    queue: Arc<Queue>,
    tally: Arc<Tally>,
}

impl PyroscopeSink {
    /// Starts the pushing thread. For https, loads the system's CA
    /// certificates first (`SSL_CERT_FILE` and `SSL_CERT_DIR` when set):
    /// an error when there are none, a warning for files that could not
    /// be read.
    pub fn start(
        endpoint: Endpoint,
        app: String,
        access: Access,
    ) -> Result<(PyroscopeSink, PyroscopeWorker)> {
        let mut roots = Vec::new();
        if endpoint.scheme == Scheme::Https {
            let trust = client::system_trust();
            if trust.roots.is_empty() {
                bail!(
                    "--pyroscope {}: no trusted CA certificate found for https ({}); install \
                     the ca-certificates package or set SSL_CERT_FILE to a PEM file of CA \
                     certificates",
                    endpoint.url(),
                    if trust.problems.is_empty() {
                        "the trust store is empty".to_string()
                    } else {
                        trust.problems.join("; ")
                    }
                );
            }
            for problem in &trust.problems {
                eprintln!("warning: pyroscope: CA certificates: {problem}");
            }
            roots = trust.roots;
        } else if access.basic.is_some() {
            eprintln!(
                "warning: pyroscope: {} is plain http: the password travels unencrypted",
                endpoint.url()
            );
        }
        let client = Client::new(&endpoint, &access, &roots, Timeouts::DEFAULT);
        let queue = Arc::new(Queue::default());
        let tally = Arc::new(Tally {
            counters: Arc::new(PushCounters::default()),
            by_kind: Default::default(),
            url: endpoint.url(),
            say: Mutex::new(say_on_stderr()),
        });
        let (done_tx, done) = mpsc::channel();
        let thread = {
            let queue = Arc::clone(&queue);
            let tally = Arc::clone(&tally);
            std::thread::Builder::new()
                .name("pyroscope".into())
                .spawn(move || {
                    while let Some(push) = queue.take() {
                        let result = client.post(&push.target, &push.body);
                        if !queue.settle() {
                            break;
                        }
                        match result {
                            Ok(()) => {
                                tally.counters.pushed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(failure) => tally.failed(&failure, 1),
                        }
                    }
                    let _ = done_tx.send(());
                })?
        };
        let sink = PyroscopeSink {
            prefix: endpoint.prefix,
            app,
            config_hz: config_hz(),
            queue: Arc::clone(&queue),
            tally: Arc::clone(&tally),
        };
        Ok((
            sink,
            PyroscopeWorker {
                thread,
                done,
                queue,
                tally,
            },
        ))
    }

    pub fn counters(&self) -> Arc<PushCounters> {
        Arc::clone(&self.tally.counters)
    }
}

impl Sink for PyroscopeSink {
    fn report(&mut self, r: &CostReport) -> Result<()> {
        if r.net_rx_stacks.is_empty() {
            return Ok(());
        }
        let (from, until) = period_seconds(r.timestamp, r.period_ns);
        let rate = sample_rate(r.sampling.sampler, self.config_hz, r.sampling.effective_hz);
        let push = Push {
            target: ingest_target(&self.prefix, &self.app, from, until, rate),
            body: folded_body(&r.net_rx_stacks),
        };
        if self.queue.add(push).is_some() {
            let failure = Failure {
                kind: FailureKind::QueueFull,
                detail: format!(
                    "the backend is too slow, {QUEUE_LEN} pushes are waiting; the oldest is \
                     dropped"
                ),
            };
            self.tally.failed(&failure, 1);
        }
        Ok(())
    }
}

impl Drop for PyroscopeSink {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl PyroscopeWorker {
    /// Sends the warnings about failed pushes to `say` instead of stderr
    /// (a full-screen terminal UI would be garbled by them).
    pub fn say_with(&self, say: impl Fn(&str) + Send + Sync + 'static) {
        *self.tally.say.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(say);
    }

    /// Waits (at most `timeout`) for the queued pushes once the sink is
    /// dropped; returns the counts since start. Pushes still queued or
    /// under way after `timeout` are counted as failed.
    pub fn finish(self, timeout: Duration) -> PushSummary {
        match self.done.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
            }
            Err(RecvTimeoutError::Timeout) => {
                let left = self.queue.abandon();
                if left > 0 {
                    let failure = Failure {
                        kind: FailureKind::Unfinished,
                        detail: format!("{left} pushes did not finish within {timeout:?} at exit"),
                    };
                    self.tally.failed(&failure, left);
                }
            }
        }
        self.tally.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pushes_reach_a_server_with_headers_and_failures_are_counted() {
        use std::io::{self, BufRead, Read, Write};
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
        let access = Access::from_options(
            &AccessOptions {
                user: Some("Aladdin"),
                password_file: None,
                tenant: Some("team-a"),
            },
            Some("open sesame".into()),
        )
        .unwrap();
        let (mut sink, worker) = PyroscopeSink::start(endpoint, "app{}".into(), access).unwrap();
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
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("\r\nauthorization: basic qwxhzgrpbjpvcgvuihnlc2ftzq==\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-scope-orgid: team-a\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/plain"), "{head}");
        // The server is gone: the next push fails and is counted, and the
        // warning goes where it was told to (a terminal UI's status line).
        let said = Arc::new(Mutex::new(Vec::new()));
        let said_here = Arc::clone(&said);
        worker.say_with(move |line| said_here.lock().unwrap().push(line.to_string()));
        sink.report(&r).unwrap();
        drop(sink);
        let summary = worker.finish(Duration::from_secs(20));
        let said = said.lock().unwrap().clone();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("warning: pyroscope: "), "{said:?}");
        assert_eq!(
            summary,
            PushSummary {
                pushed: 1,
                failed: 1,
                by_kind: vec![(FailureKind::Connect, 1)]
            }
        );
        assert_eq!(summary.to_string(), "1 pushes, 1 failed (1 connect)");
    }

    fn push(n: u32) -> Push {
        Push {
            target: n.to_string(),
            body: String::new(),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_push() {
        let queue = Queue::default();
        for n in 0..QUEUE_LEN as u32 {
            assert!(queue.add(push(n)).is_none());
        }
        let dropped = queue.add(push(100)).expect("full");
        assert_eq!(dropped.target, "0");
        queue.close();
        let mut left = Vec::new();
        while let Some(p) = queue.take() {
            assert!(queue.settle());
            left.push(p.target);
        }
        assert_eq!(left.len(), QUEUE_LEN);
        assert_eq!(left.first().map(String::as_str), Some("1"));
        assert_eq!(left.last().map(String::as_str), Some("100"));
    }

    #[test]
    fn abandoning_counts_the_waiting_and_the_sending_push_once() {
        let queue = Queue::default();
        queue.add(push(1));
        queue.add(push(2));
        queue.add(push(3));
        assert!(queue.take().is_some());
        // One under way, two waiting.
        assert_eq!(queue.abandon(), 3);
        // The push under way ends after that: not counted again.
        assert!(!queue.settle());
        queue.close();
        assert!(queue.take().is_none());
    }

    #[test]
    fn summary_names_each_kind_of_failure() {
        let s = PushSummary {
            pushed: 7,
            failed: 5,
            by_kind: vec![(FailureKind::QueueFull, 2), (FailureKind::Tls, 3)],
        };
        assert_eq!(s.to_string(), "7 pushes, 5 failed (2 queue full, 3 tls)");
        let s = PushSummary {
            pushed: 3,
            failed: 0,
            by_kind: vec![],
        };
        assert_eq!(s.to_string(), "3 pushes, 0 failed");
    }
}
