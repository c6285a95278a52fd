//! The `conns` role of the web UI: the connections of `netlens conns`.
//!
//! Fed as a live [`Sink`] (absolute counters every second, whatever `-t`
//! and `-i` are), it keeps, bounded: the latest snapshot, serialized once
//! with per-second rates computed against the previous one, and a ring of
//! the last [`EVENTS_KEPT`] events.
//!
//! Endpoints:
//! - `/api/connections`: the latest snapshot (`503` before the first): its
//!   `timestamp_ns`, the `interval_s` its rates cover, `connections_total`,
//!   at most [`MAX_ROWS`] `connections` (the busiest when there are more),
//!   and the `losses`;
//! - `/api/events`: `{"next_seq", "events_total", "events": [...]}`, the
//!   events kept, oldest first; `?since=SEQ` keeps those after `SEQ` (the
//!   page passes the `next_seq` it got last).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use serde::Serialize;

use super::{not_yet, query_param, JSON};
use crate::model::{
    fmt_endpoint, ConnEvent, ConnInfo, ConnRow, EventKind, IdMap, Losses, Metrics, Snapshot,
    UnixNanos,
};
use crate::output::prometheus::{Response, Routes};
use crate::output::{fmt_time, losses_hint, Sink};

/// Events kept for the page.
pub const EVENTS_KEPT: usize = 500;

/// Connections served in one snapshot; beyond it the busiest are kept (a
/// browser cannot show 65,536 rows every second anyway).
pub const MAX_ROWS: usize = 5000;

#[derive(Clone, Copy, Default, Serialize)]
struct EventCounts {
    connect: u64,
    accept: u64,
    close: u64,
    connect_failed: u64,
}

#[derive(Default)]
struct Shared {
    latest: Option<String>,
    /// (seq, JSON object), oldest first.
    events: VecDeque<(u64, String)>,
    /// The seq the next event gets; the first is 1.
    next_seq: u64,
    counts: EventCounts,
}

/// What the `conns` role serves; shared by the [`ConnsWebSink`] and the
/// server.
pub struct ConnsUi(Mutex<Shared>);

impl ConnsUi {
    pub fn new() -> Arc<ConnsUi> {
        Arc::new(ConnsUi(Mutex::new(Shared {
            next_seq: 1,
            ..Shared::default()
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest snapshot's JSON object, if any.
    pub fn latest(&self) -> Option<String> {
        self.lock().latest.clone()
    }

    /// The events after `since` (all with None), as the `/api/events` object.
    pub fn events(&self, since: Option<u64>) -> String {
        let s = self.lock();
        let mut out = format!(
            "{{\"next_seq\":{},\"events_total\":{},\"events\":[",
            s.next_seq,
            serde_json::to_string(&s.counts).unwrap_or_default()
        );
        let mut first = true;
        for (_, json) in s
            .events
            .iter()
            .filter(|(seq, _)| since.is_none_or(|x| *seq > x))
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(json);
        }
        out.push_str("]}");
        out
    }

    fn push_event(&self, ev: &ConnEvent) {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        let c = &mut s.counts;
        *match ev.kind {
            EventKind::Connect => &mut c.connect,
            EventKind::Accept => &mut c.accept,
            EventKind::Close => &mut c.close,
            EventKind::ConnectFailed(_) => &mut c.connect_failed,
        } += 1;
        if s.events.len() == EVENTS_KEPT {
            s.events.pop_front();
        }
        // Serialized under the lock, but events are small and the server
        // only copies strings out.
        s.events.push_back((seq, event_json(seq, ev)));
    }

    /// Adds `/api/connections` and `/api/events` to `routes`.
    pub fn routes(self: &Arc<ConnsUi>, routes: &mut Routes) {
        let ui = Arc::clone(self);
        routes.add("/api/connections", move |_| match ui.latest() {
            Some(json) => Response::ok(JSON, json),
            None => not_yet("no snapshot taken yet"),
        });
        let ui = Arc::clone(self);
        routes.add("/api/events", move |req| {
            let since = query_param(req.query, "since").and_then(|v| v.parse().ok());
            Response::ok(JSON, ui.events(since))
        });
    }
}

#[derive(Serialize)]
struct EventView<'a> {
    seq: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp_ns: UnixNanos,
    time: String,
    #[serde(flatten)]
    conn: Identity<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The final counters of a close.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<MetricsView>,
}

#[derive(Serialize)]
struct Identity<'a> {
    id: u64,
    pid: u32,
    comm: &'a str,
    netns: u32,
    direction: &'static str,
    local: String,
    remote: String,
    /// The owner's container (`<runtime>://<ID>`), `null` for none.
    container: Option<String>,
    /// The owner's cgroup path, `null` when not known.
    cgroup: Option<&'a str>,
}

impl<'a> Identity<'a> {
    fn of(c: &'a ConnInfo) -> Identity<'a> {
        let t = &c.tuple;
        Identity {
            id: c.id,
            pid: c.pid,
            comm: &c.comm,
            netns: c.netns,
            direction: c.direction.as_str(),
            local: fmt_endpoint(t.local_addr, t.local_port),
            remote: fmt_endpoint(t.remote_addr, t.remote_port),
            container: c.container().map(|k| k.kube_id()),
            cgroup: c.cgroup.as_ref().and_then(|cg| cg.path.as_deref()),
        }
    }
}

#[derive(Serialize)]
struct MetricsView {
    bytes_sent: u64,
    bytes_received: u64,
    packets_sent: u64,
    packets_received: u64,
    retransmits: u64,
    rtt_us: u32,
    rtt_var_us: u32,
}

impl From<&Metrics> for MetricsView {
    fn from(m: &Metrics) -> MetricsView {
        MetricsView {
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            retransmits: m.retransmits,
            rtt_us: m.rtt_us,
            rtt_var_us: m.rtt_var_us,
        }
    }
}

fn event_json(seq: u64, ev: &ConnEvent) -> String {
    let view = EventView {
        seq,
        kind: ev.kind.name(),
        timestamp_ns: ev.timestamp,
        time: fmt_time(ev.timestamp),
        conn: Identity::of(&ev.conn),
        reason: match ev.kind {
            EventKind::ConnectFailed(r) => Some(r.to_string()),
            _ => None,
        },
        metrics: ev.metrics.as_ref().map(MetricsView::from),
    };
    // Plain structs with string keys: serializing cannot fail.
    serde_json::to_string(&view).unwrap_or_default()
}

#[derive(Serialize)]
struct RowView<'a> {
    #[serde(flatten)]
    conn: Identity<'a>,
    /// Seconds since the connection was established; None when it existed
    /// before netlens started.
    age_s: Option<f64>,
    #[serde(flatten)]
    metrics: MetricsView,
    /// Bytes per second since the previous snapshot; None when unknown.
    send_rate: Option<f64>,
    recv_rate: Option<f64>,
}

#[derive(Serialize)]
struct LossesView {
    events_lost: u64,
    map_full: u64,
    seed_map_full: u64,
    seed_unreached: u64,
    runs_missed: u64,
    hint: Option<String>,
}

impl From<&Losses> for LossesView {
    fn from(l: &Losses) -> LossesView {
        LossesView {
            events_lost: l.events_lost,
            map_full: l.map_full,
            seed_map_full: l.seed_map_full,
            seed_unreached: l.seed_unreached,
            runs_missed: l.runs_missed,
            hint: losses_hint(l),
        }
    }
}

#[derive(Serialize)]
struct SnapshotView<'a> {
    timestamp_ns: UnixNanos,
    time: String,
    /// Seconds between the previous snapshot and this one (what the rates
    /// cover); None for the first.
    interval_s: Option<f64>,
    connections_total: usize,
    connections: Vec<RowView<'a>>,
    losses: LossesView,
}

/// The counters of the previous snapshot, for the rates.
struct Previous {
    timestamp: UnixNanos,
    bytes: IdMap<u64, (u64, u64)>,
}

/// Bytes per second of a counter that went from `before` to `now` over
/// `elapsed_ns`; None when nothing was elapsed. A counter that went back
/// (never expected) counts as zero.
pub fn per_second(before: u64, now: u64, elapsed_ns: u64) -> Option<f64> {
    (elapsed_ns > 0).then(|| now.saturating_sub(before) as f64 * 1e9 / elapsed_ns as f64)
}

/// The (sent, received) bytes and the time a connection's rates start
/// from: its counters in the previous snapshot, or zero at its start if it
/// began after that snapshot. None when neither is known (first snapshot,
/// or a connection that was there before but not shown).
fn baseline(
    prev: Option<&Previous>,
    id: u64,
    start: Option<UnixNanos>,
) -> Option<((u64, u64), UnixNanos)> {
    let prev = prev?;
    if let Some(&bytes) = prev.bytes.get(&id) {
        return Some((bytes, prev.timestamp));
    }
    start.filter(|&s| s >= prev.timestamp).map(|s| ((0, 0), s))
}

/// Feeds the `conns` role: every event, and the live snapshots.
pub struct ConnsWebSink {
    ui: Arc<ConnsUi>,
    prev: Option<Previous>,
}

impl ConnsWebSink {
    pub fn new(ui: Arc<ConnsUi>) -> ConnsWebSink {
        ConnsWebSink { ui, prev: None }
    }

    fn view<'a>(&self, snap: &'a Snapshot) -> SnapshotView<'a> {
        let now = snap.timestamp;
        // Rates first, addresses later: above MAX_ROWS only the rows served
        // are formatted.
        let mut rated: Vec<(&ConnRow, Option<f64>, Option<f64>)> = snap
            .conns
            .iter()
            .map(|r| {
                let m = &r.metrics;
                match baseline(self.prev.as_ref(), r.conn.id, r.conn.start) {
                    Some(((sent, received), since)) => {
                        let elapsed = now.saturating_sub(since);
                        (
                            r,
                            per_second(sent, m.bytes_sent, elapsed),
                            per_second(received, m.bytes_received, elapsed),
                        )
                    }
                    None => (r, None, None),
                }
            })
            .collect();
        let total = rated.len();
        if total > MAX_ROWS {
            let busy = |(r, sent, received): &(&ConnRow, Option<f64>, Option<f64>)| {
                (
                    sent.unwrap_or(0.0) + received.unwrap_or(0.0),
                    r.metrics.bytes_sent + r.metrics.bytes_received,
                )
            };
            rated.sort_by(|a, b| {
                busy(b)
                    .partial_cmp(&busy(a))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            rated.truncate(MAX_ROWS);
        }
        SnapshotView {
            timestamp_ns: now,
            time: fmt_time(now),
            interval_s: self
                .prev
                .as_ref()
                .map(|p| now.saturating_sub(p.timestamp) as f64 / 1e9),
            connections_total: total,
            connections: rated
                .into_iter()
                .map(|(r, send_rate, recv_rate)| RowView {
                    conn: Identity::of(&r.conn),
                    age_s: r.conn.start.map(|s| now.saturating_sub(s) as f64 / 1e9),
                    metrics: MetricsView::from(&r.metrics),
                    send_rate,
                    recv_rate,
                })
                .collect(),
            losses: LossesView::from(&snap.losses),
        }
    }
}

impl Sink for ConnsWebSink {
    fn event(&mut self, ev: &ConnEvent) -> Result<()> {
        self.ui.push_event(ev);
        Ok(())
    }

    fn snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        // Serialized here, on the collector's thread, outside the lock.
        let json = serde_json::to_string(&self.view(snap))?;
        self.prev = Some(Previous {
            timestamp: snap.timestamp,
            bytes: snap
                .conns
                .iter()
                .map(|r| (r.conn.id, (r.metrics.bytes_sent, r.metrics.bytes_received)))
                .collect(),
        });
        self.ui.lock().latest = Some(json);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_http::get;
    use super::super::{Site, PURPOSE};
    use super::*;
    use crate::model::{Direction, FailReason};
    use crate::output::prometheus::Server;
    use crate::output::test_util::{conn, metrics, T0};
    use serde_json::Value;

    const SEC: u64 = 1_000_000_000;

    fn row(c: &ConnInfo, sent: u64, received: u64) -> ConnRow {
        ConnRow {
            conn: c.clone(),
            metrics: Metrics {
                bytes_sent: sent,
                bytes_received: received,
                ..metrics()
            },
        }
    }

    fn snapshot(ts: u64, rows: Vec<ConnRow>) -> Snapshot {
        Snapshot {
            timestamp: ts,
            conns: rows,
            incremental: false,
            losses: Losses::default(),
        }
    }

    fn latest(ui: &ConnsUi) -> Value {
        serde_json::from_str(&ui.latest().expect("a snapshot")).expect("JSON")
    }

    #[test]
    fn rates_are_computed_between_snapshots() {
        assert_eq!(per_second(100, 350, SEC / 2), Some(500.0));
        assert_eq!(per_second(100, 100, SEC), Some(0.0));
        assert_eq!(per_second(100, 50, SEC), Some(0.0), "never negative");
        assert_eq!(per_second(0, 50, 0), None);

        let ui = ConnsUi::new();
        let mut sink = ConnsWebSink::new(Arc::clone(&ui));
        let a = conn("192.0.2.1", 40000, "198.51.100.7", 443, Direction::Outbound);
        sink.snapshot(&snapshot(T0 + 10 * SEC, vec![row(&a, 1000, 5000)]))
            .unwrap();
        let v = latest(&ui);
        assert_eq!(v["interval_s"], Value::Null);
        assert_eq!(
            v["connections"][0]["send_rate"],
            Value::Null,
            "no baseline yet"
        );
        assert_eq!(v["connections"][0]["age_s"], 10.0);

        // Two seconds later: a sent 4000 more bytes; b started half a
        // second ago and received 1000 bytes; c (seeded: start unknown) was
        // not in the previous snapshot.
        let mut b = conn("192.0.2.1", 40001, "198.51.100.7", 443, Direction::Outbound);
        b.start = Some(T0 + 11 * SEC + SEC / 2);
        let mut c = conn("192.0.2.1", 40002, "198.51.100.7", 443, Direction::Unknown);
        c.start = None;
        sink.snapshot(&snapshot(
            T0 + 12 * SEC,
            vec![row(&a, 5000, 5000), row(&b, 0, 1000), row(&c, 7, 7)],
        ))
        .unwrap();
        let v = latest(&ui);
        assert_eq!(v["interval_s"], 2.0);
        assert_eq!(v["connections_total"], 3);
        let rows = v["connections"].as_array().unwrap();
        assert_eq!(
            (rows[0]["send_rate"].as_f64(), rows[0]["recv_rate"].as_f64()),
            (Some(2000.0), Some(0.0))
        );
        assert_eq!(
            (rows[1]["send_rate"].as_f64(), rows[1]["recv_rate"].as_f64()),
            (Some(0.0), Some(2000.0))
        );
        assert_eq!(rows[2]["send_rate"], Value::Null);
        assert_eq!(rows[2]["age_s"], Value::Null);
        // Exact counters and the identity as the other outputs show them.
        assert_eq!(rows[0]["bytes_sent"], 5000);
        assert_eq!(rows[0]["bytes_received"], 5000);
        assert_eq!(rows[0]["packets_sent"], 10);
        assert_eq!(rows[0]["retransmits"], 2);
        assert_eq!(rows[0]["rtt_us"], 345);
        assert_eq!(rows[0]["rtt_var_us"], 67);
        assert_eq!(rows[0]["local"], "192.0.2.1:40000");
        assert_eq!(rows[0]["remote"], "198.51.100.7:443");
        assert_eq!(rows[0]["direction"], "out");
        assert_eq!(rows[0]["comm"], "curl");
        assert_eq!(rows[0]["pid"], 1234);
        assert_eq!(rows[0]["netns"], 4_026_531_840u64);
    }

    #[test]
    fn only_the_busiest_rows_are_served_beyond_the_cap() {
        let ui = ConnsUi::new();
        let mut sink = ConnsWebSink::new(Arc::clone(&ui));
        let conns: Vec<ConnInfo> = (0..MAX_ROWS as u64 + 3)
            .map(|i| {
                let mut c = conn("192.0.2.1", 1, "192.0.2.2", 2, Direction::Inbound);
                c.id = i;
                c
            })
            .collect();
        let rows = |busy: u64| -> Vec<ConnRow> {
            conns
                .iter()
                .map(|c| row(c, if c.id == busy { 1 << 30 } else { c.id }, 0))
                .collect()
        };
        sink.snapshot(&snapshot(T0, rows(u64::MAX))).unwrap();
        sink.snapshot(&snapshot(T0 + SEC, rows(2))).unwrap();
        let v = latest(&ui);
        assert_eq!(v["connections_total"], MAX_ROWS + 3);
        let served = v["connections"].as_array().unwrap();
        assert_eq!(served.len(), MAX_ROWS);
        assert_eq!(served[0]["id"], 2, "the busiest first");
        let ids: Vec<u64> = served.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert!(!ids.contains(&0) && !ids.contains(&1) && !ids.contains(&3));
    }

    #[test]
    fn events_are_a_bounded_ring_with_sequence_numbers() {
        let ui = ConnsUi::new();
        let mut sink = ConnsWebSink::new(Arc::clone(&ui));
        let c = conn("2001:db8::1", 40000, "2001:db8::2", 80, Direction::Outbound);
        let ev = |kind, metrics| ConnEvent {
            kind,
            timestamp: T0,
            conn: c.clone(),
            metrics,
        };
        let v: Value = serde_json::from_str(&ui.events(None)).unwrap();
        assert_eq!(v["next_seq"], 1);
        assert_eq!(v["events"], serde_json::json!([]));
        sink.event(&ev(EventKind::Connect, None)).unwrap();
        sink.event(&ev(EventKind::ConnectFailed(FailReason::Refused), None))
            .unwrap();
        sink.event(&ev(EventKind::Close, Some(metrics()))).unwrap();
        let v: Value = serde_json::from_str(&ui.events(None)).unwrap();
        assert_eq!(v["next_seq"], 4);
        assert_eq!(
            v["events_total"],
            serde_json::json!({"connect": 1, "accept": 0, "close": 1, "connect_failed": 1})
        );
        let evs = v["events"].as_array().unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0]["type"], "connect");
        assert_eq!(evs[0]["seq"], 1);
        assert_eq!(evs[0]["local"], "[2001:db8::1]:40000");
        assert_eq!(evs[0]["time"], "2026-11-23T13:31:47.000000Z");
        assert!(evs[0].get("metrics").is_none());
        assert_eq!(evs[1]["reason"], "refused");
        assert_eq!(evs[2]["metrics"]["bytes_received"], 2_000_000);
        let v: Value = serde_json::from_str(&ui.events(Some(2))).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 1, "after seq 2");

        for _ in 0..EVENTS_KEPT + 10 {
            sink.event(&ev(EventKind::Accept, None)).unwrap();
        }
        let v: Value = serde_json::from_str(&ui.events(None)).unwrap();
        let evs = v["events"].as_array().unwrap();
        assert_eq!(evs.len(), EVENTS_KEPT, "bounded");
        assert_eq!(evs[EVENTS_KEPT - 1]["seq"], EVENTS_KEPT as u64 + 13);
        assert_eq!(v["events_total"]["accept"], EVENTS_KEPT as u64 + 10);
    }

    #[test]
    fn serves_the_api() {
        let ui = ConnsUi::new();
        let mut routes = Routes::new();
        Site::new().with_conns(Arc::clone(&ui)).add_to(&mut routes);
        let server =
            Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE).expect("bind");
        let addr = server.addr();
        let (status, ct, body) = get(addr, "/api/connections");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(ct, JSON);
        assert!(body.contains("no snapshot taken yet"), "{body}");

        let mut sink = ConnsWebSink::new(Arc::clone(&ui));
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        let mut snap = snapshot(T0, vec![row(&c, 1, 2)]);
        snap.losses.map_full = 3;
        sink.snapshot(&snap).unwrap();
        sink.event(&ConnEvent {
            kind: EventKind::Accept,
            timestamp: T0,
            conn: c,
            metrics: None,
        })
        .unwrap();
        let (status, ct, body) = get(addr, "/api/connections");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["connections"][0]["bytes_received"], 2);
        assert_eq!(v["losses"]["map_full"], 3);
        assert!(v["losses"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("--map-size")));
        let (_, ct, body) = get(addr, "/api/events?since=0");
        assert_eq!(ct, JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"][0]["type"], "accept");
        let (_, _, body) = get(addr, "/api/events?since=1");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"], serde_json::json!([]));
        assert_eq!(get(addr, "/api/history").0, "HTTP/1.1 404 Not Found");
    }
}
