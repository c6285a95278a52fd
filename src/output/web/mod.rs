//! The web UI of `netlens cost` (`--web [ADDR:PORT]`): one self-contained
//! HTML page (no external assets) that polls a small JSON API.
//!
//! Routes, served by the same HTTP server as `/metrics`
//! ([`Routes`]; one server when `-P` and `--web` share an address):
//! - `/`: the page;
//! - `/api/report`: the latest period, exactly the JSON log object
//!   ([`report_json`]); `503` with `{"error": ...}` before the first period;
//! - `/api/history`: the last [`HISTORY`] periods as a JSON array, oldest
//!   first; `?since=TIMESTAMP_NS` keeps only the later ones (the page asks
//!   for what it has not seen yet).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;

use crate::model::cost::CostReport;
use crate::output::cost::{report_json, CostSink};
use crate::output::prometheus::{self, Purpose, Response, Routes};

/// Port of `--web` given without a value: the one after `-P`'s.
pub const DEFAULT_PORT: u16 = prometheus::DEFAULT_PORT + 1;

/// The address of `--web` given without a value: loopback only.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

/// Periods kept for the charts (a minute at the default 500 ms period).
pub const HISTORY: usize = 120;

/// Reports shorter than this (the partial one at exit) are not kept, as in
/// the table: percentages of a few milliseconds are noise.
const MIN_PERIOD_NS: u64 = 50_000_000;

const PAGE: &str = include_str!("index.html");
const JSON: &str = "application/json";

/// The `--web` endpoint.
pub const PURPOSE: Purpose = Purpose {
    what: "the web UI",
    flag: "--web",
    thread: "web",
};

/// `-P` and `--web` on one address.
pub const PURPOSE_BOTH: Purpose = Purpose {
    what: "Prometheus metrics and the web UI",
    flag: "-P/--web",
    thread: "http",
};

/// Parses the value of `--web`, like `-P` (a bare address listens on
/// [`DEFAULT_PORT`]).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    prometheus::parse_listen_addr_on(s, DEFAULT_PORT)
}

/// The periods served, each already serialized (once, by the collector).
struct History {
    /// (timestamp_ns, JSON object), oldest first.
    periods: VecDeque<(u64, String)>,
    cap: usize,
}

/// What the web UI serves; shared by the [`WebSink`] and the server.
pub struct WebUi(Mutex<History>);

impl WebUi {
    /// Keeps the last `cap` periods (at least one).
    pub fn new(cap: usize) -> Arc<WebUi> {
        let cap = cap.max(1);
        Arc::new(WebUi(Mutex::new(History {
            periods: VecDeque::with_capacity(cap),
            cap,
        })))
    }

    fn push(&self, r: &CostReport) {
        if r.period_ns < MIN_PERIOD_NS {
            return;
        }
        // Serialized outside the lock: the server only ever copies strings.
        let json = report_json(r).to_string();
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if h.periods.len() == h.cap {
            h.periods.pop_front();
        }
        h.periods.push_back((r.timestamp, json));
    }

    /// The latest period's JSON object, if any.
    pub fn latest(&self) -> Option<String> {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        h.periods.back().map(|(_, j)| j.clone())
    }

    /// The periods after `since` (all with None) as a JSON array.
    pub fn history(&self, since: Option<u64>) -> String {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::from("[");
        for (i, (_, json)) in h
            .periods
            .iter()
            .filter(|(ts, _)| since.is_none_or(|s| *ts > s))
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            out.push_str(json);
        }
        out.push(']');
        out
    }

    /// Adds `/`, `/api/report` and `/api/history` to `routes`.
    pub fn routes(self: &Arc<WebUi>, routes: &mut Routes) {
        routes.add("/", |_| Response::ok("text/html; charset=utf-8", PAGE));
        let ui = Arc::clone(self);
        routes.add("/api/report", move |_| match ui.latest() {
            Some(json) => Response::ok(JSON, json),
            None => Response {
                status: "503 Service Unavailable",
                content_type: JSON,
                body: br#"{"error":"no period measured yet"}"#.to_vec(),
            },
        });
        let ui = Arc::clone(self);
        routes.add("/api/history", move |req| {
            let since = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("since="))
                .and_then(|v| v.parse().ok());
            Response::ok(JSON, ui.history(since))
        });
    }
}

/// Feeds the web UI with every period of `netlens cost`.
pub struct WebSink(Arc<WebUi>);

impl WebSink {
    pub fn new(ui: Arc<WebUi>) -> WebSink {
        WebSink(ui)
    }
}

impl CostSink for WebSink {
    fn report(&mut self, report: &CostReport) -> Result<()> {
        self.0.push(report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cost::{Entry, EntryRow, PerCpu};
    use crate::output::prometheus::Server;
    use serde_json::Value;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    fn report(ts: u64) -> CostReport {
        CostReport {
            timestamp: ts,
            period_ns: 500_000_000,
            elapsed_ns: ts,
            cpus: vec![0, 1],
            entries: Entry::ALL
                .iter()
                .map(|&entry| EntryRow {
                    entry,
                    time: PerCpu {
                        period_ns: vec![ts, 0],
                        total_ns: vec![ts, 1],
                    },
                    spans_period: 1,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// (status line, content type, body)
    fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
        let status = head.lines().next().unwrap_or("").to_string();
        let ct = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .unwrap_or("")
            .to_string();
        (status, ct, body.to_string())
    }

    #[test]
    fn history_is_bounded_and_oldest_first() {
        let ui = WebUi::new(3);
        let mut sink = WebSink::new(Arc::clone(&ui));
        assert_eq!(ui.history(None), "[]");
        assert_eq!(ui.latest(), None);
        for ts in 1..=5u64 {
            sink.report(&report(ts * 1_000_000_000)).unwrap();
        }
        let h: Vec<Value> = serde_json::from_str(&ui.history(None)).unwrap();
        let ts: Vec<u64> = h
            .iter()
            .map(|v| v["timestamp_ns"].as_u64().unwrap())
            .collect();
        assert_eq!(ts, [3_000_000_000, 4_000_000_000, 5_000_000_000]);
        let later: Vec<Value> = serde_json::from_str(&ui.history(Some(4_000_000_000))).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(ui.history(Some(5_000_000_000)), "[]");
        // The partial period at exit is left out.
        let mut short = report(6_000_000_000);
        short.period_ns = 1_000_000;
        sink.report(&short).unwrap();
        let latest: Value = serde_json::from_str(&ui.latest().unwrap()).unwrap();
        assert_eq!(latest["timestamp_ns"], 5_000_000_000u64);
        assert_eq!(
            WebUi::new(0).0.lock().unwrap().cap,
            1,
            "at least one period"
        );
    }

    #[test]
    fn serves_the_page_and_the_api() {
        let ui = WebUi::new(2);
        let mut routes = Routes::new();
        ui.routes(&mut routes);
        let server =
            Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE).expect("bind");
        let addr = server.addr();

        let (status, ct, body) = get(addr, "/");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, "text/html; charset=utf-8");
        assert!(body.contains("<title>netlens cost</title>"), "{body}");
        assert!(body.contains("api/history"));
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "no external asset"
        );

        let (status, ct, body) = get(addr, "/api/report");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(ct, JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "no period measured yet");
        assert_eq!(get(addr, "/api/history").2, "[]");

        let mut sink = WebSink::new(Arc::clone(&ui));
        for ts in 1..=3u64 {
            sink.report(&report(ts * 1_000_000_000)).unwrap();
        }
        let (status, ct, body) = get(addr, "/api/report");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, report_json(&report(3_000_000_000)));

        let (_, ct, body) = get(addr, "/api/history");
        assert_eq!(ct, JSON);
        let h: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(h.len(), 2, "bounded");
        assert_eq!(h[1], v);
        let (_, _, body) = get(addr, "/api/history?since=2000000000");
        let h: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(h, [v]);

        for path in ["/metrics", "/api", "/index.html", "/api/report/x"] {
            assert_eq!(get(addr, path).0, "HTTP/1.1 404 Not Found", "{path}");
        }
    }

    #[test]
    fn shares_a_server_with_metrics() {
        let ui = WebUi::new(2);
        let mut routes = Routes::new();
        routes.metrics(prometheus::Registry::new());
        ui.routes(&mut routes);
        let server = Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE_BOTH)
            .expect("bind");
        let (status, ct, _) = get(server.addr(), "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        assert_eq!(get(server.addr(), "/").0, "HTTP/1.1 200 OK");
    }

    #[test]
    fn taken_port_names_the_option() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = Server::start_routes(addr, Routes::new(), PURPOSE)
            .err()
            .expect("port is taken")
            .to_string();
        assert!(
            err.starts_with(&format!("cannot serve the web UI on {addr}")),
            "{err}"
        );
        assert!(err.contains("--web ADDR:PORT"), "{err}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(DEFAULT_ADDR.to_string(), "127.0.0.1:9475");
        assert_eq!(
            parse_listen_addr("0.0.0.0"),
            Ok("0.0.0.0:9475".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert!(parse_listen_addr("nowhere:80").is_err());
    }
}
