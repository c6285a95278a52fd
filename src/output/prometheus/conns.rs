//! The Prometheus producer of `netlens conns`: connection metrics aggregated
//! per process, direction, remote address and service port, in a bounded
//! number of series.
//!
//! One series (label set) is `pid`, `comm`, `direction`, `remote_addr`, `port`,
//! where `port` is the service port: the remote port of outbound connections,
//! the local port of inbound ones (the remote port of an inbound connection is
//! the client's ephemeral port, one new series per connection otherwise), the
//! remote port of the rare connections whose direction is unknown.
//!
//! Counters only ever go up while netlens runs:
//! - a closed connection's final counters (carried by its close event) are
//!   added to its series for good;
//! - an active connection adds its current totals, taken from the absolute
//!   snapshots `run.rs` sends every second ([`crate::conn::run::Live`]), and
//!   never less than it added before;
//! - a connection whose owner changes (an accepted connection first seen
//!   without a process) moves to its new series from then on; what it had
//!   added to the old one stays there;
//! - a connection that disappears without a close event (events lost) keeps
//!   what it added, and is forgotten after [`RETIRE_SNAPSHOTS`] snapshots.
//!
//! A connection whose owner is in a container has a sixth label,
//! `container_id` (`containerd://<ID>`, as kube-state-metrics writes it in
//! `kube_pod_container_info`, so that a join names the pod and namespace).
//!
//! Two histograms per series, in seconds (buckets from 50 µs to 10 s):
//! `netlens_tcp_rtt_seconds`, the smoothed RTT of each connection observed
//! once per absolute snapshot in which it had sent or received segments since
//! its previous observation (an idle connection's RTT does not change), and
//! at close on the same condition; `netlens_tcp_connect_duration_seconds`,
//! SYN to established, once per outbound connection seen from its SYN.
//!
//! Series are never removed (a vanished counter would read as a reset).
//! Once `--max-series` series exist, connections of new label sets are added
//! to one overflow series per direction, whose other labels are `other`, and
//! each such connection is counted in `netlens_prometheus_series_overflow_total`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::exposition::{Exposition, Histogram, Kind, Labels, SECONDS_BOUNDS};
use super::server::Producer;
use super::{BPF_RUNS_MISSED_HELP, BPF_RUNS_MISSED_TOTAL};
use crate::model::{
    ConnEvent, ConnInfo, Direction, EventKind, FailReason, IdMap, Losses, Metrics, Snapshot,
};
use crate::output::Sink;

/// Default of `--max-series`.
pub const DEFAULT_MAX_SERIES: u32 = 10_000;

/// Absolute snapshots a connection may be missing from before it is
/// forgotten. A close event reaches user space within one drain (100 ms) of
/// the connection leaving the kernel's table, so missing from three
/// snapshots a second apart means its close event was lost.
pub const RETIRE_SNAPSHOTS: u64 = 3;

/// The counters that are summed per series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    bytes_sent: u64,
    bytes_received: u64,
    packets_sent: u64,
    packets_received: u64,
    retransmits: u64,
}

impl Counters {
    fn of(m: &Metrics) -> Counters {
        Counters {
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            retransmits: m.retransmits,
        }
    }

    fn zip(self, o: Counters, f: impl Fn(u64, u64) -> u64) -> Counters {
        Counters {
            bytes_sent: f(self.bytes_sent, o.bytes_sent),
            bytes_received: f(self.bytes_received, o.bytes_received),
            packets_sent: f(self.packets_sent, o.packets_sent),
            packets_received: f(self.packets_received, o.packets_received),
            retransmits: f(self.retransmits, o.retransmits),
        }
    }

    /// Field by field: a counter read mid-update can look smaller than the
    /// previous read; what was exported must not shrink.
    fn max(self, o: Counters) -> Counters {
        self.zip(o, u64::max)
    }

    fn add(&mut self, o: Counters) {
        *self = self.zip(o, u64::saturating_add);
    }

    fn since(self, base: Counters) -> Counters {
        self.zip(base, u64::saturating_sub)
    }
}

/// A counter family: name, help, and which of the [`Counters`] it shows.
type CounterFamily = (&'static str, &'static str, fn(&Counters) -> u64);

const COUNTER_FAMILIES: [CounterFamily; 5] = [
    (
        "netlens_tcp_sent_bytes_total",
        "Payload bytes sent and acknowledged by the peer (tcpi_bytes_acked without SYN and FIN).",
        |c| c.bytes_sent,
    ),
    (
        "netlens_tcp_received_bytes_total",
        "Payload bytes received (tcpi_bytes_received without FIN).",
        |c| c.bytes_received,
    ),
    (
        "netlens_tcp_sent_packets_total",
        "TCP segments sent (tcpi_segs_out).",
        |c| c.packets_sent,
    ),
    (
        "netlens_tcp_received_packets_total",
        "TCP segments received (tcpi_segs_in).",
        |c| c.packets_received,
    ),
    (
        "netlens_tcp_retransmits_total",
        "TCP segments retransmitted (tcpi_total_retrans).",
        |c| c.retransmits,
    ),
];

/// A histogram family: name, help, and which of a [`Series`]' histograms it shows.
type HistogramFamily = (
    &'static str,
    &'static str,
    fn(&Series) -> Option<&Histogram>,
);

const HISTOGRAM_FAMILIES: [HistogramFamily; 2] = [
    (
        "netlens_tcp_rtt_seconds",
        "Smoothed RTT (tcpi_rtt), observed once a second for each connection that sent or \
         received segments since its last observation, and at close.",
        |s| s.rtt.as_ref(),
    ),
    (
        "netlens_tcp_connect_duration_seconds",
        "Outbound connections: time from the SYN to the end of the handshake, observed once \
         per connection established while netlens ran.",
        |s| s.connect.as_ref(),
    ),
];

/// What identifies a series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    pid: u32,
    comm: Arc<str>,
    direction: Direction,
    remote: IpAddr,
    port: u16,
    container_id: Option<String>,
}

/// The owner's container, in kube-state-metrics's form.
fn container_id(c: &ConnInfo) -> Option<String> {
    c.container().map(|k| k.kube_id())
}

impl SeriesKey {
    fn of(c: &ConnInfo) -> SeriesKey {
        let port = match c.direction {
            Direction::Inbound => c.tuple.local_port,
            Direction::Outbound | Direction::Unknown => c.tuple.remote_port,
        };
        SeriesKey {
            pid: c.pid,
            comm: Arc::clone(&c.comm),
            direction: c.direction,
            remote: c.tuple.remote_addr,
            port,
            container_id: container_id(c),
        }
    }

    fn labels(&self) -> Labels {
        let mut pid = itoa::Buffer::new();
        let mut port = itoa::Buffer::new();
        let labels = Labels::new()
            .with("pid", pid.format(self.pid))
            .with("comm", &self.comm)
            .with("direction", self.direction.as_str())
            .with("remote_addr", &self.remote.to_string())
            .with("port", port.format(self.port));
        match &self.container_id {
            Some(id) => labels.with("container_id", id),
            None => labels,
        }
    }
}

fn overflow_labels(direction: Direction) -> Labels {
    Labels::new()
        .with("pid", "other")
        .with("comm", "other")
        .with("direction", direction.as_str())
        .with("remote_addr", "other")
        .with("port", "other")
}

/// One series' totals.
struct Series {
    labels: Labels,
    /// Added for good: closed connections, and what connections added
    /// before they moved to another series or disappeared.
    done: Counters,
    opened: u64,
    closed: u64,
    failed: Vec<(FailReason, u64)>,
    /// Made at the first observation: most series never see one of the
    /// two (inbound ones no connect time).
    rtt: Option<Histogram>,
    connect: Option<Histogram>,
}

impl Series {
    fn new(labels: Labels) -> Series {
        Series {
            labels,
            done: Counters::default(),
            opened: 0,
            closed: 0,
            failed: Vec::new(),
            rtt: None,
            connect: None,
        }
    }
}

fn observe(histogram: &mut Option<Histogram>, ns: u64) {
    histogram
        .get_or_insert_with(|| Histogram::new(&SECONDS_BOUNDS))
        .observe(ns);
}

/// Segments a connection sent and received: the smoothed RTT can only have
/// changed when this did.
fn segments(m: &Metrics) -> u64 {
    m.packets_sent.saturating_add(m.packets_received)
}

/// An active connection's share of its series.
struct Tracked {
    series: usize,
    /// Owner the series was chosen for; a change moves the connection.
    pid: u32,
    direction: Direction,
    /// The owner's cgroup id (0 unknown): a connection seen before its
    /// cgroup was known moves once it is.
    cgroup: u64,
    /// Totals when the connection joined its series (non-zero after a move).
    base: Counters,
    /// Highest totals seen.
    last: Counters,
    /// Number of the last absolute snapshot that listed the connection.
    seen: u64,
    /// [`segments`] when its RTT was last observed; `None` before that.
    rtt_segments: Option<u64>,
}

impl Tracked {
    /// The RTT (in ns) to observe for `m`: one observation per connection
    /// and segment activity, so idle connections do not repeat a stale
    /// value every second.
    fn rtt_to_observe(&mut self, m: &Metrics) -> Option<u64> {
        let now = segments(m);
        if m.rtt_us == 0 || self.rtt_segments == Some(now) {
            return None;
        }
        self.rtt_segments = Some(now);
        Some(u64::from(m.rtt_us) * 1000)
    }
}

/// The series and how connections map to them.
struct SeriesTable {
    max_series: usize,
    index: HashMap<SeriesKey, usize>,
    series: Vec<Series>,
    /// Overflow series by direction (out, in, unknown), created when needed.
    overflow: [Option<usize>; 3],
    /// Connections counted in an overflow series.
    overflowed: u64,
}

impl SeriesTable {
    /// The series for `c`'s label set, created if the limit allows, else the
    /// overflow series of its direction.
    fn series_for(&mut self, c: &ConnInfo) -> usize {
        let key = SeriesKey::of(c);
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        if self.index.len() < self.max_series {
            let i = self.series.len();
            self.series.push(Series::new(key.labels()));
            self.index.insert(key, i);
            return i;
        }
        let slot = match c.direction {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
            Direction::Unknown => 2,
        };
        if let Some(i) = self.overflow[slot] {
            return i;
        }
        let i = self.series.len();
        self.series.push(Series::new(overflow_labels(c.direction)));
        self.overflow[slot] = Some(i);
        i
    }

    fn is_overflow(&self, series: usize) -> bool {
        self.overflow.contains(&Some(series))
    }

    /// Counts a connection that joins `series` (from `from`, if it moved).
    fn joined(&mut self, series: usize, from: Option<usize>) {
        if self.is_overflow(series) && !from.is_some_and(|f| self.is_overflow(f)) {
            self.overflowed += 1;
        }
    }
}

/// The aggregated state; see the module documentation.
pub struct ConnAggregates {
    table: SeriesTable,
    conns: IdMap<u64, Tracked>,
    losses: Losses,
    /// Absolute snapshots taken so far.
    snapshots: u64,
}

impl ConnAggregates {
    pub fn new(max_series: u32) -> ConnAggregates {
        ConnAggregates {
            table: SeriesTable {
                max_series: max_series as usize,
                index: HashMap::new(),
                series: Vec::new(),
                overflow: [None; 3],
                overflowed: 0,
            },
            conns: IdMap::default(),
            losses: Losses::default(),
            snapshots: 0,
        }
    }

    /// The connection's state, created (counting from zero) if unknown, and
    /// moved to another series if its owner changed.
    fn track(&mut self, c: &ConnInfo) -> &mut Tracked {
        let table = &mut self.table;
        match self.conns.entry(c.id) {
            Entry::Occupied(o) => {
                let t = o.into_mut();
                let cgroup = c.cgroup_id();
                if t.pid != c.pid || t.direction != c.direction || t.cgroup != cgroup {
                    let series = table.series_for(c);
                    if series != t.series {
                        table.joined(series, Some(t.series));
                        table.series[t.series].done.add(t.last.since(t.base));
                        t.base = t.last;
                        t.series = series;
                    }
                    t.pid = c.pid;
                    t.direction = c.direction;
                    t.cgroup = cgroup;
                }
                t
            }
            Entry::Vacant(v) => {
                let series = table.series_for(c);
                table.joined(series, None);
                v.insert(Tracked {
                    series,
                    pid: c.pid,
                    direction: c.direction,
                    cgroup: c.cgroup_id(),
                    base: Counters::default(),
                    last: Counters::default(),
                    seen: self.snapshots,
                    rtt_segments: None,
                })
            }
        }
    }

    pub fn event(&mut self, ev: &ConnEvent) {
        match ev.kind {
            EventKind::Connect | EventKind::Accept => {
                let series = self.track(&ev.conn).series;
                let s = &mut self.table.series[series];
                s.opened += 1;
                if let (EventKind::Connect, Some(ns)) = (ev.kind, ev.conn.connect_ns) {
                    observe(&mut s.connect, ns);
                }
            }
            EventKind::Close => {
                let t = self.track(&ev.conn);
                let (last, rtt) = match &ev.metrics {
                    Some(m) => (t.last.max(Counters::of(m)), t.rtt_to_observe(m)),
                    None => (t.last, None),
                };
                let (series, base) = (t.series, t.base);
                self.conns.remove(&ev.conn.id);
                let s = &mut self.table.series[series];
                s.done.add(last.since(base));
                s.closed += 1;
                if let Some(ns) = rtt {
                    observe(&mut s.rtt, ns);
                }
            }
            EventKind::ConnectFailed(reason) => {
                // Never established, so normally never tracked.
                let series = self.table.series_for(&ev.conn);
                let tracked = self.conns.remove(&ev.conn.id);
                if let Some(t) = &tracked {
                    self.table.series[t.series].done.add(t.last.since(t.base));
                }
                self.table.joined(series, tracked.map(|t| t.series));
                let failed = &mut self.table.series[series].failed;
                match failed.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += 1,
                    None => failed.push((reason, 1)),
                }
            }
        }
    }

    /// Takes the losses from any snapshot, counters only from absolute ones
    /// (deltas cannot be told apart from a first report of totals).
    pub fn snapshot(&mut self, snap: &Snapshot) {
        self.losses = snap.losses;
        if snap.incremental {
            return;
        }
        self.snapshots += 1;
        let now = self.snapshots;
        for row in &snap.conns {
            let t = self.track(&row.conn);
            t.last = t.last.max(Counters::of(&row.metrics));
            t.seen = now;
            let (series, rtt) = (t.series, t.rtt_to_observe(&row.metrics));
            if let Some(ns) = rtt {
                observe(&mut self.table.series[series].rtt, ns);
            }
        }
        let series = &mut self.table.series;
        self.conns.retain(|_, t| {
            let keep = now - t.seen < RETIRE_SNAPSHOTS;
            if !keep {
                series[t.series].done.add(t.last.since(t.base));
            }
            keep
        });
    }

    pub fn render(&self, out: &mut Exposition) {
        let series = &self.table.series;
        let mut live = vec![Counters::default(); series.len()];
        let mut active = vec![0u64; series.len()];
        for t in self.conns.values() {
            live[t.series].add(t.last.since(t.base));
            active[t.series] += 1;
        }

        let mut f = out.family(
            "netlens_tcp_connections_opened_total",
            Kind::Counter,
            "TCP connections opened (connect or accept) while netlens ran.",
        );
        for s in series {
            f.sample(&s.labels, s.opened);
        }
        let mut f = out.family(
            "netlens_tcp_connections_closed_total",
            Kind::Counter,
            "TCP connections closed while netlens ran, including those open before it started.",
        );
        for s in series {
            f.sample(&s.labels, s.closed);
        }
        let mut f = out.family(
            "netlens_tcp_connect_failures_total",
            Kind::Counter,
            "Active opens that failed before the connection was established, by reason.",
        );
        for s in series {
            for (reason, n) in &s.failed {
                f.sample(&s.labels.and("reason", &reason.to_string()), *n);
            }
        }
        let mut f = out.family(
            "netlens_tcp_connections_active",
            Kind::Gauge,
            "TCP connections established now.",
        );
        for (s, n) in series.iter().zip(&active) {
            f.sample(&s.labels, *n);
        }
        for (name, help, read) in COUNTER_FAMILIES {
            let mut f = out.family(name, Kind::Counter, help);
            for (s, l) in series.iter().zip(&live) {
                let mut total = s.done;
                total.add(*l);
                f.sample(&s.labels, read(&total));
            }
        }

        for (name, help, read) in HISTOGRAM_FAMILIES {
            let mut f = out.family(name, Kind::Histogram, help);
            for s in series {
                if let Some(h) = read(s) {
                    f.histogram(&s.labels, h);
                }
            }
        }

        let none = Labels::new();
        out.family(
            "netlens_events_lost_total",
            Kind::Counter,
            "Connection events dropped because user space fell behind the ring buffer.",
        )
        .sample(&none, self.losses.events_lost);
        let mut f = out.family(
            "netlens_connections_untracked_total",
            Kind::Counter,
            "Connections not tracked: map_full when the connection map (-m) was full, \
             seed_map_full for connections found at start that did not fit, seed_unreached for \
             connections found at start in network namespaces netlens could not enter (without \
             CAP_SYS_ADMIN).",
        );
        f.sample(&none.and("reason", "map_full"), self.losses.map_full);
        f.sample(
            &none.and("reason", "seed_map_full"),
            self.losses.seed_map_full,
        );
        f.sample(
            &none.and("reason", "seed_unreached"),
            self.losses.seed_unreached,
        );
        out.family(BPF_RUNS_MISSED_TOTAL, Kind::Counter, BPF_RUNS_MISSED_HELP)
            .sample(&none, self.losses.runs_missed);
        out.family(
            "netlens_prometheus_series_overflow_total",
            Kind::Counter,
            "Connections counted in an overflow series (labels \"other\") because --max-series \
             label sets existed.",
        )
        .sample(&none, self.table.overflowed);
        out.family(
            "netlens_prometheus_series",
            Kind::Gauge,
            "Label sets of the connection metrics, overflow series included.",
        )
        .sample(&none, series.len() as u64);
        out.family(
            "netlens_prometheus_series_limit",
            Kind::Gauge,
            "The --max-series limit.",
        )
        .sample(&none, self.table.max_series as u64);
    }
}

/// The shared state: updated by [`ConnSink`] on the collector thread,
/// rendered by the endpoint's thread.
pub struct ConnMetrics(Mutex<ConnAggregates>);

impl ConnMetrics {
    pub fn new(max_series: u32) -> Arc<ConnMetrics> {
        Arc::new(ConnMetrics(Mutex::new(ConnAggregates::new(max_series))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut ConnAggregates) -> R) -> R {
        // A panic elsewhere cannot leave the counters unsafe to read, only
        // partly updated: keep serving.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Producer for ConnMetrics {
    fn render(&self, out: &mut Exposition) {
        self.with(|a| a.render(out));
    }
}

/// Feeds [`ConnMetrics`]: give it every event and absolute snapshots (the
/// live feed of `conn::run`); incremental snapshots only update the losses.
pub struct ConnSink(Arc<ConnMetrics>);

impl ConnSink {
    pub fn new(metrics: Arc<ConnMetrics>) -> ConnSink {
        ConnSink(metrics)
    }
}

impl Sink for ConnSink {
    fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
        self.0.with(|a| a.event(ev));
        Ok(())
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        self.0.with(|a| a.snapshot(snap));
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConnRow;
    use crate::output::test_util::{conn, T0};

    fn ev(kind: EventKind, c: &ConnInfo, m: Option<Metrics>) -> ConnEvent {
        ConnEvent {
            kind,
            timestamp: T0,
            conn: c.clone(),
            metrics: m,
        }
    }

    fn sent(bytes: u64) -> Metrics {
        Metrics {
            bytes_sent: bytes,
            bytes_received: bytes / 2,
            packets_sent: 1,
            ..Metrics::default()
        }
    }

    fn snap(rows: &[(&ConnInfo, Metrics)]) -> Snapshot {
        Snapshot {
            timestamp: T0,
            conns: rows
                .iter()
                .map(|(c, m)| ConnRow {
                    conn: (*c).clone(),
                    metrics: *m,
                })
                .collect(),
            incremental: false,
            losses: Losses::default(),
        }
    }

    fn render(a: &ConnAggregates) -> String {
        let mut e = Exposition::new();
        a.render(&mut e);
        assert!(e.refused().is_empty(), "refused: {:?}", e.refused());
        e.into_string()
    }

    /// The value of the sample `name{labels}` (labels as rendered, possibly a prefix).
    fn value(text: &str, name: &str, labels: &str) -> Option<u64> {
        let prefix = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}")
        };
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    const OUT: &str = r#"pid="1234",comm="curl",direction="out",remote_addr="192.0.2.2",port="80""#;

    #[test]
    fn every_family_has_help_and_type() {
        let mut a = ConnAggregates::new(10);
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Connect, &c, None));
        let text = render(&a);
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
            .collect();
        for name in names {
            // A histogram's series are typed under the family's name.
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| text.contains(&format!("# TYPE {base} histogram\n")))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
        assert!(text.contains("# TYPE netlens_tcp_sent_bytes_total counter\n"));
        assert!(text.contains("# TYPE netlens_tcp_connections_active gauge\n"));
        assert!(text.contains("# TYPE netlens_tcp_connect_duration_seconds histogram\n"));
    }

    fn with_rtt(segments: u64, rtt_us: u32) -> Metrics {
        Metrics {
            packets_sent: segments,
            rtt_us,
            ..Metrics::default()
        }
    }

    /// `name_bucket{<labels>,le="<le>"}`.
    fn bucket(text: &str, name: &str, labels: &str, le: &str) -> Option<u64> {
        value(
            text,
            &format!("{name}_bucket"),
            &format!("{labels},le=\"{le}\""),
        )
    }

    #[test]
    fn rtt_is_observed_once_per_activity_and_connect_time_once() {
        const RTT: &str = "netlens_tcp_rtt_seconds";
        const CONNECT: &str = "netlens_tcp_connect_duration_seconds";
        let mut a = ConnAggregates::new(10);
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Connect, &c, None));
        let t = render(&a);
        // 250 µs: in the 250 µs bucket (le is "less or equal"), not below.
        assert_eq!(bucket(&t, CONNECT, OUT, "0.0001"), Some(0));
        assert_eq!(bucket(&t, CONNECT, OUT, "0.00025"), Some(1));
        assert_eq!(bucket(&t, CONNECT, OUT, "+Inf"), Some(1));
        assert_eq!(value(&t, &format!("{CONNECT}_count"), OUT), Some(1));
        assert!(
            !t.contains("netlens_tcp_rtt_seconds_bucket"),
            "nothing observed yet"
        );

        // Active: observed. Idle since: not again. Active again: observed.
        a.snapshot(&snap(&[(&c, with_rtt(10, 80))]));
        a.snapshot(&snap(&[(&c, with_rtt(10, 80))]));
        a.snapshot(&snap(&[(&c, with_rtt(12, 3_000))]));
        let t = render(&a);
        assert_eq!(value(&t, &format!("{RTT}_count"), OUT), Some(2));
        assert_eq!(bucket(&t, RTT, OUT, "0.0001"), Some(1));
        assert_eq!(bucket(&t, RTT, OUT, "0.0025"), Some(1));
        assert_eq!(bucket(&t, RTT, OUT, "0.005"), Some(2));
        let sum = t
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{RTT}_sum{{{OUT}}} ")))
            .expect("sum");
        assert_eq!(sum, "0.00308");

        // The close adds its RTT when segments moved since (the FIN).
        a.event(&ev(EventKind::Close, &c, Some(with_rtt(14, 3_000))));
        assert_eq!(value(&render(&a), &format!("{RTT}_count"), OUT), Some(3));

        // A connection closed before any snapshot is observed at close;
        // one without an RTT sample (0) is not; inbound ones have no
        // connect time.
        let short = conn("192.0.2.1", 40001, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Close, &short, Some(with_rtt(4, 40))));
        let silent = conn("192.0.2.1", 40002, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Close, &silent, Some(with_rtt(0, 0))));
        let inbound = conn("192.0.2.1", 443, "192.0.2.9", 50000, Direction::Inbound);
        a.event(&ev(EventKind::Accept, &inbound, None));
        let t = render(&a);
        assert_eq!(value(&t, &format!("{RTT}_count"), OUT), Some(4));
        assert_eq!(bucket(&t, RTT, OUT, "5e-05"), Some(1));
        assert!(!t.contains(&format!(
            "{CONNECT}_count{{pid=\"1234\",comm=\"curl\",direction=\"in\""
        )));
    }

    #[test]
    fn counters_stay_monotonic_across_close() {
        let mut a = ConnAggregates::new(10);
        // Two connections from one process to one service: one series.
        let c1 = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        let c2 = conn("192.0.2.1", 40001, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Connect, &c1, None));
        a.event(&ev(EventKind::Connect, &c2, None));
        a.snapshot(&snap(&[(&c1, sent(1000)), (&c2, sent(500))]));
        let t = render(&a);
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", OUT), Some(1500));
        assert_eq!(
            value(&t, "netlens_tcp_received_bytes_total", OUT),
            Some(750)
        );
        assert_eq!(value(&t, "netlens_tcp_connections_active", OUT), Some(2));
        assert_eq!(
            value(&t, "netlens_tcp_connections_opened_total", OUT),
            Some(2)
        );

        // c1 closes with its final counters; c2 goes on.
        a.event(&ev(EventKind::Close, &c1, Some(sent(1200))));
        a.snapshot(&snap(&[(&c2, sent(800))]));
        let t = render(&a);
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", OUT), Some(2000));
        assert_eq!(value(&t, "netlens_tcp_connections_active", OUT), Some(1));
        assert_eq!(
            value(&t, "netlens_tcp_connections_closed_total", OUT),
            Some(1)
        );

        // A later read that looks smaller (mid-update) does not lower the total.
        a.snapshot(&snap(&[(&c2, sent(700))]));
        assert_eq!(
            value(&render(&a), "netlens_tcp_sent_bytes_total", OUT),
            Some(2000)
        );

        // Nor does a close carrying less than was already exported.
        a.event(&ev(EventKind::Close, &c2, Some(sent(790))));
        let t = render(&a);
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", OUT), Some(2000));
        assert_eq!(value(&t, "netlens_tcp_connections_active", OUT), Some(0));
        assert_eq!(
            value(&t, "netlens_tcp_connections_closed_total", OUT),
            Some(2)
        );
    }

    #[test]
    fn containers_get_their_own_series_with_the_kube_container_id() {
        use crate::model::{Cgroup, Container};
        let mut a = ConnAggregates::new(10);
        let host = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        let mut boxed = conn("192.0.2.1", 40001, "192.0.2.2", 80, Direction::Outbound);
        let id = "ab".repeat(32);
        let cgroup = Arc::new(Cgroup {
            id: 7,
            path: Some(format!("/system.slice/docker-{id}.scope")),
            container: Some(Container {
                runtime: "docker",
                id: id.clone(),
            }),
            pod_uid: None,
        });
        boxed.cgroup = Some(Arc::clone(&cgroup));
        a.event(&ev(EventKind::Connect, &host, None));
        // Seen first without its cgroup (a seeded connection before the
        // refresh named it), then with it: it moves, and counts once there.
        let mut early = boxed.clone();
        early.cgroup = None;
        a.snapshot(&snap(&[(&early, sent(100))]));
        a.snapshot(&snap(&[(&boxed, sent(300))]));
        let t = render(&a);
        let in_container = format!("{OUT},container_id=\"docker://{id}\"");
        assert_eq!(
            value(&t, "netlens_tcp_sent_bytes_total", &in_container),
            Some(200)
        );
        // The host's series has no container label, and keeps what the
        // connection added before it moved.
        let host_line = t
            .lines()
            .find(|l| l.starts_with(&format!("netlens_tcp_sent_bytes_total{{{OUT}}} ")))
            .expect("the host series");
        assert!(host_line.ends_with(" 100"), "{host_line}");
    }

    #[test]
    fn inbound_series_use_the_local_port() {
        let mut a = ConnAggregates::new(10);
        for cport in [50000, 50001, 50002] {
            let c = conn("192.0.2.1", 443, "192.0.2.9", cport, Direction::Inbound);
            a.event(&ev(EventKind::Accept, &c, None));
            a.event(&ev(EventKind::Close, &c, Some(sent(10))));
        }
        let t = render(&a);
        let labels = r#"pid="1234",comm="curl",direction="in",remote_addr="192.0.2.9",port="443""#;
        assert_eq!(
            value(&t, "netlens_tcp_connections_closed_total", labels),
            Some(3)
        );
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", labels), Some(30));
        assert_eq!(value(&t, "netlens_prometheus_series", ""), Some(1));
    }

    #[test]
    fn closed_without_snapshot_and_seeded_connections_count_in_full() {
        let mut a = ConnAggregates::new(10);
        let short = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Connect, &short, None));
        a.event(&ev(EventKind::Close, &short, Some(sent(100))));
        // Existed before netlens: no connect event, first seen in a snapshot.
        let seeded = conn("192.0.2.1", 40001, "192.0.2.2", 80, Direction::Outbound);
        a.snapshot(&snap(&[(&seeded, sent(5000))]));
        let t = render(&a);
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", OUT), Some(5100));
        assert_eq!(
            value(&t, "netlens_tcp_connections_opened_total", OUT),
            Some(1)
        );
        assert_eq!(value(&t, "netlens_tcp_connections_active", OUT), Some(1));
    }

    #[test]
    fn owner_change_moves_the_connection_and_keeps_what_was_counted() {
        let mut a = ConnAggregates::new(10);
        let mut c = conn("192.0.2.1", 443, "192.0.2.9", 50000, Direction::Inbound);
        c.pid = 0;
        c.comm = "".into();
        a.event(&ev(EventKind::Accept, &c, None));
        a.snapshot(&snap(&[(&c, sent(100))]));
        let mut owned = c.clone();
        owned.pid = 77;
        owned.comm = "nginx".into();
        a.snapshot(&snap(&[(&owned, sent(300))]));
        a.event(&ev(EventKind::Close, &owned, Some(sent(400))));
        let t = render(&a);
        let unowned = r#"pid="0",comm="",direction="in""#;
        let nginx = r#"pid="77",comm="nginx",direction="in""#;
        assert_eq!(
            value(&t, "netlens_tcp_sent_bytes_total", unowned),
            Some(100)
        );
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", nginx), Some(300));
        assert_eq!(
            value(&t, "netlens_tcp_connections_opened_total", unowned),
            Some(1)
        );
        assert_eq!(
            value(&t, "netlens_tcp_connections_closed_total", nginx),
            Some(1)
        );
    }

    #[test]
    fn a_connection_that_vanished_keeps_its_share_and_is_forgotten() {
        let mut a = ConnAggregates::new(10);
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Connect, &c, None));
        a.snapshot(&snap(&[(&c, sent(100))]));
        for _ in 0..RETIRE_SNAPSHOTS - 1 {
            a.snapshot(&snap(&[]));
            assert_eq!(
                value(&render(&a), "netlens_tcp_connections_active", OUT),
                Some(1)
            );
        }
        a.snapshot(&snap(&[]));
        let t = render(&a);
        assert_eq!(value(&t, "netlens_tcp_connections_active", OUT), Some(0));
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", OUT), Some(100));
        assert!(a.conns.is_empty());
    }

    #[test]
    fn incremental_snapshots_only_update_losses() {
        let mut a = ConnAggregates::new(10);
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        a.snapshot(&snap(&[(&c, sent(100))]));
        let mut inc = snap(&[(&c, sent(5))]);
        inc.incremental = true;
        inc.losses.events_lost = 3;
        inc.losses.map_full = 2;
        inc.losses.runs_missed = 7;
        inc.losses.seed_unreached = 4;
        a.snapshot(&inc);
        let t = render(&a);
        assert_eq!(value(&t, "netlens_tcp_sent_bytes_total", OUT), Some(100));
        assert_eq!(value(&t, "netlens_events_lost_total", ""), Some(3));
        assert_eq!(
            value(
                &t,
                "netlens_connections_untracked_total",
                r#"reason="map_full""#
            ),
            Some(2)
        );
        assert_eq!(
            value(
                &t,
                "netlens_connections_untracked_total",
                r#"reason="seed_unreached""#
            ),
            Some(4)
        );
        assert_eq!(value(&t, "netlens_bpf_runs_missed_total", ""), Some(7));
        assert!(
            t.contains("# TYPE netlens_bpf_runs_missed_total counter\n"),
            "{t}"
        );
    }

    #[test]
    fn failures_by_reason() {
        let mut a = ConnAggregates::new(10);
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        let refused = EventKind::ConnectFailed(FailReason::Refused);
        a.event(&ev(refused, &c, None));
        a.event(&ev(refused, &c, None));
        a.event(&ev(
            EventKind::ConnectFailed(FailReason::TimedOut),
            &c,
            None,
        ));
        let t = render(&a);
        let with = |r: &str| format!(r#"{OUT},reason="{r}""#);
        assert_eq!(
            value(&t, "netlens_tcp_connect_failures_total", &with("refused")),
            Some(2)
        );
        assert_eq!(
            value(&t, "netlens_tcp_connect_failures_total", &with("timed_out")),
            Some(1)
        );
        assert_eq!(
            value(&t, "netlens_tcp_connections_opened_total", OUT),
            Some(0)
        );
    }

    #[test]
    fn beyond_the_limit_connections_go_to_an_overflow_series_per_direction() {
        let mut a = ConnAggregates::new(2);
        // Three services: the third does not get its own series.
        for port in [80, 81, 82] {
            let c = conn(
                "192.0.2.1",
                40000 + port,
                "192.0.2.2",
                port,
                Direction::Outbound,
            );
            a.event(&ev(EventKind::Connect, &c, None));
            a.event(&ev(EventKind::Close, &c, Some(sent(10))));
        }
        // Another connection to an existing series is no overflow.
        let again = conn("192.0.2.1", 41000, "192.0.2.2", 80, Direction::Outbound);
        a.event(&ev(EventKind::Connect, &again, None));
        a.event(&ev(EventKind::Close, &again, Some(sent(10))));
        let inbound = conn("192.0.2.1", 22, "192.0.2.7", 50000, Direction::Inbound);
        a.event(&ev(EventKind::Accept, &inbound, None));
        let t = render(&a);
        let other_out =
            r#"pid="other",comm="other",direction="out",remote_addr="other",port="other""#;
        let other_in =
            r#"pid="other",comm="other",direction="in",remote_addr="other",port="other""#;
        assert_eq!(
            value(&t, "netlens_tcp_sent_bytes_total", other_out),
            Some(10)
        );
        assert_eq!(
            value(&t, "netlens_tcp_connections_active", other_in),
            Some(1)
        );
        assert_eq!(
            value(&t, "netlens_prometheus_series_overflow_total", ""),
            Some(2)
        );
        assert_eq!(value(&t, "netlens_prometheus_series", ""), Some(4));
        assert_eq!(value(&t, "netlens_prometheus_series_limit", ""), Some(2));
        // Totals over all series remain exact: 4 closed connections of 10 bytes.
        let total: u64 = t
            .lines()
            .filter(|l| l.starts_with("netlens_tcp_sent_bytes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(total, 40);
    }

    #[test]
    fn comm_and_v6_addresses_are_rendered_as_label_values() {
        let mut a = ConnAggregates::new(10);
        let mut c = conn(
            "2001:db8::1",
            40000,
            "2001:db8::2",
            443,
            Direction::Outbound,
        );
        c.comm = "we\"ird\\name".into();
        a.event(&ev(EventKind::Connect, &c, None));
        let t = render(&a);
        assert!(
            t.contains(
                r#"netlens_tcp_connections_opened_total{pid="1234",comm="we\"ird\\name",direction="out",remote_addr="2001:db8::2",port="443"} 1"#
            ),
            "{t}"
        );
    }

    #[test]
    fn sink_feeds_the_shared_state() {
        let metrics = ConnMetrics::new(10);
        let mut sink = ConnSink::new(Arc::clone(&metrics));
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        sink.event(&ev(EventKind::Connect, &c, None))
            .expect("event");
        sink.snapshot(&snap(&[(&c, sent(42))])).expect("snapshot");
        sink.flush().expect("flush");
        let mut e = Exposition::new();
        metrics.render(&mut e);
        assert_eq!(
            value(e.as_str(), "netlens_tcp_sent_bytes_total", OUT),
            Some(42)
        );
    }
}
