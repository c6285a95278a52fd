//! The `cost` role of the web UI: the periods of `netlens cost`.
//!
//! Endpoints:
//! - `/api/report`: the latest period, exactly the JSON log object
//!   ([`report_json`]); `503` with `{"error": ...}` before the first period;
//! - `/api/history`: the last [`HISTORY`] periods as a JSON array, oldest
//!   first; `?since=TIMESTAMP_NS` keeps only the later ones (the page asks
//!   for what it has not seen yet);
//! - `/api/flamegraph.svg`: an interactive flame graph (inferno) of the
//!   NET_RX stacks sampled in those periods.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;

use super::{not_yet, query_param, JSON};
use crate::model::cost::CostReport;
use crate::output::cost::report_json;
use crate::output::flamegraph;
use crate::output::prometheus::{Response, Routes};
use crate::output::Sink;

/// Periods kept for the charts and the flame graph (a minute at the
/// default 500 ms period).
pub const HISTORY: usize = 120;

/// Reports shorter than this (the partial one at exit) are not kept, as in
/// the table: percentages of a few milliseconds are noise.
const MIN_PERIOD_NS: u64 = 50_000_000;

const SVG: &str = "image/svg+xml";

/// One period as served.
struct Period {
    timestamp: u64,
    period_ns: u64,
    /// The JSON log object, serialized once, by the collector's thread.
    json: String,
    /// That period's folded NET_RX stacks (empty when sampling is off).
    stacks: Vec<(String, u64)>,
}

struct History {
    /// Oldest first.
    periods: VecDeque<Period>,
    cap: usize,
}

/// What the `cost` role serves; shared by the [`CostWebSink`] and the server.
pub struct CostUi(Mutex<History>);

impl CostUi {
    /// Keeps the last `cap` periods (at least one).
    pub fn new(cap: usize) -> Arc<CostUi> {
        let cap = cap.max(1);
        Arc::new(CostUi(Mutex::new(History {
            periods: VecDeque::with_capacity(cap),
            cap,
        })))
    }

    fn push(&self, r: &CostReport) {
        if r.period_ns < MIN_PERIOD_NS {
            return;
        }
        // Serialized outside the lock: the server only ever copies strings.
        let period = Period {
            timestamp: r.timestamp,
            period_ns: r.period_ns,
            json: report_json(r).to_string(),
            stacks: r.net_rx_stacks.clone(),
        };
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if h.periods.len() == h.cap {
            h.periods.pop_front();
        }
        h.periods.push_back(period);
    }

    /// The latest period's JSON object, if any.
    pub fn latest(&self) -> Option<String> {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        h.periods.back().map(|p| p.json.clone())
    }

    /// The periods after `since` (all with None) as a JSON array.
    pub fn history(&self, since: Option<u64>) -> String {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::from("[");
        for (i, p) in h
            .periods
            .iter()
            .filter(|p| since.is_none_or(|s| p.timestamp > s))
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&p.json);
        }
        out.push(']');
        out
    }

    /// The NET_RX stacks of every period kept, merged and sorted, with the
    /// wall time they cover.
    pub fn stacks(&self) -> (Vec<(String, u64)>, u64) {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged: HashMap<&str, u64> = HashMap::new();
        for p in &h.periods {
            for (stack, count) in &p.stacks {
                *merged.entry(stack.as_str()).or_default() += count;
            }
        }
        let covered = h.periods.iter().map(|p| p.period_ns).sum();
        let mut stacks: Vec<(String, u64)> =
            merged.into_iter().map(|(s, c)| (s.to_owned(), c)).collect();
        stacks.sort_unstable();
        (stacks, covered)
    }

    /// The flame graph SVG of [`CostUi::stacks`]; a small SVG saying so
    /// when nothing was sampled.
    pub fn flamegraph(&self) -> Vec<u8> {
        let (stacks, covered_ns) = self.stacks();
        let secs = covered_ns as f64 / 1e9;
        let lines: Vec<String> = stacks.iter().map(|(s, c)| format!("{s} {c}")).collect();
        let titles = flamegraph::Titles {
            title: "NET_RX softirq",
            subtitle: Some(format!("stacks sampled in the last {secs:.0} s")),
        };
        flamegraph::render(
            &lines,
            titles,
            &format!("no NET_RX stack sampled in the last {secs:.0} s"),
        )
    }

    /// Adds `/api/report`, `/api/history` and `/api/flamegraph.svg` to `routes`.
    pub fn routes(self: &Arc<CostUi>, routes: &mut Routes) {
        let ui = Arc::clone(self);
        routes.add("/api/report", move |_| match ui.latest() {
            Some(json) => Response::ok(JSON, json),
            None => not_yet("no period measured yet"),
        });
        let ui = Arc::clone(self);
        routes.add("/api/history", move |req| {
            let since = query_param(req.query, "since").and_then(|v| v.parse().ok());
            Response::ok(JSON, ui.history(since))
        });
        let ui = Arc::clone(self);
        routes.add("/api/flamegraph.svg", move |_| {
            Response::ok(SVG, ui.flamegraph())
        });
    }
}

/// Feeds the `cost` role with every period of `netlens cost`.
pub struct CostWebSink(Arc<CostUi>);

impl CostWebSink {
    pub fn new(ui: Arc<CostUi>) -> CostWebSink {
        CostWebSink(ui)
    }
}

impl Sink for CostWebSink {
    fn report(&mut self, report: &CostReport) -> Result<()> {
        self.0.push(report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_http::get;
    use super::super::{Site, PURPOSE, PURPOSE_BOTH};
    use super::*;
    use crate::model::cost::{Entry, EntryRow, PerCpu};
    use crate::output::prometheus::{self, Server};
    use serde_json::Value;

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

    fn serve(ui: &Arc<CostUi>) -> Server {
        let mut routes = Routes::new();
        Site::new().with_cost(Arc::clone(ui)).add_to(&mut routes);
        Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE).expect("bind")
    }

    #[test]
    fn history_is_bounded_and_oldest_first() {
        let ui = CostUi::new(3);
        let mut sink = CostWebSink::new(Arc::clone(&ui));
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
            CostUi::new(0).0.lock().unwrap().cap,
            1,
            "at least one period"
        );
    }

    #[test]
    fn stacks_of_the_kept_periods_are_merged() {
        let ui = CostUi::new(2);
        let mut sink = CostWebSink::new(Arc::clone(&ui));
        let with = |ts: u64, stacks: &[(&str, u64)]| {
            let mut r = report(ts);
            r.net_rx_stacks = stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect();
            r
        };
        sink.report(&with(1, &[("net_rx_action;gone", 100)]))
            .unwrap();
        sink.report(&with(2, &[("net_rx_action;a", 2), ("net_rx_action;b", 1)]))
            .unwrap();
        sink.report(&with(3, &[("net_rx_action;a", 3)])).unwrap();
        let (stacks, covered) = ui.stacks();
        assert_eq!(
            stacks,
            [
                ("net_rx_action;a".to_string(), 5),
                ("net_rx_action;b".to_string(), 1)
            ],
            "the period that left the history left the graph"
        );
        assert_eq!(covered, 1_000_000_000);
        let svg = String::from_utf8(ui.flamegraph()).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..100]);
        assert!(svg.contains("<svg"));
        assert!(svg.contains("net_rx_action"));
        assert!(
            svg.contains(">b<") || svg.contains("b (1 samples"),
            "a frame b"
        );
        assert!(svg.contains("<script"), "interactive");
        assert!(svg.contains("last 1 s"), "the window is named");
    }

    #[test]
    fn no_stacks_is_a_message_not_an_error() {
        let ui = CostUi::new(2);
        let svg = String::from_utf8(ui.flamegraph()).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(
            svg.contains("no NET_RX stack sampled in the last 0 s"),
            "{svg}"
        );
        let mut sink = CostWebSink::new(Arc::clone(&ui));
        sink.report(&report(1)).unwrap();
        let svg = String::from_utf8(ui.flamegraph()).unwrap();
        assert!(svg.contains("in the last 0 s") || svg.contains("in the last 1 s"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn serves_the_api() {
        let ui = CostUi::new(2);
        let server = serve(&ui);
        let addr = server.addr();

        let (status, ct, body) = get(addr, "/api/report");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(ct, JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "no period measured yet");
        assert_eq!(get(addr, "/api/history").2, "[]");

        let mut sink = CostWebSink::new(Arc::clone(&ui));
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

        let (status, ct, body) = get(addr, "/api/flamegraph.svg");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, SVG);
        assert!(body.contains("no NET_RX stack sampled"), "{body}");

        for path in ["/metrics", "/api", "/index.html", "/api/report/x"] {
            assert_eq!(get(addr, path).0, "HTTP/1.1 404 Not Found", "{path}");
        }
    }

    #[test]
    fn shares_a_server_with_metrics() {
        let ui = CostUi::new(2);
        let mut routes = Routes::new();
        routes.metrics(prometheus::Registry::new());
        Site::new().with_cost(ui).add_to(&mut routes);
        let server = Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE_BOTH)
            .expect("bind");
        let (status, ct, _) = get(server.addr(), "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        assert_eq!(get(server.addr(), "/").0, "HTTP/1.1 200 OK");
    }
}
