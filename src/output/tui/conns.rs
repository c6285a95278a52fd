//! The `netlens conns -d` screen: active connections with per-second rates,
//! sortable, filterable, groupable by process or remote address, with new
//! connections marked and closed ones kept (dimmed) for a refresh or two.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::format::{
    cell, clip, compact_bytes, compact_count, compact_micros, compact_rate, Align,
};
use super::{scroll_or_quit, Flow, Screen};
use crate::model::{
    fmt_endpoint, ConnEvent, ConnRow, Direction, IdMap, Losses, Snapshot, UnixNanos,
};
use crate::output::table::{fmt_age, losses_footer};
use crate::output::{comm_token, fmt_time};

const NANOS_PER_SEC: f64 = 1e9;

/// Refreshes a new connection stays marked, and a closed one stays listed.
const MARK_REFRESHES: u64 = 2;

/// What the sink hands the screen.
pub(super) enum Update {
    Snapshot(Box<Snapshot>),
    /// Close events (with final counters) since the last batch.
    Closed(Vec<ConnEvent>),
}

// ---------------------------------------------------------------------------
// Rates

/// Where a counter's per-second rate is measured from: (time, value then).
///
/// With totals (`incremental` false) that is the connection's value in the
/// previous snapshot, or 0 at its start when it began since then. With
/// deltas the value is already "since the previous snapshot" (or since the
/// start of a newer connection), so the baseline is 0 at the later of the
/// two. `None` when nothing tells (first sight of a connection older than
/// the previous snapshot, or of unknown age).
pub(super) fn rate_baseline(
    prev_value: Option<u64>,
    prev_ts: Option<UnixNanos>,
    start: Option<UnixNanos>,
    incremental: bool,
) -> Option<(UnixNanos, u64)> {
    if incremental {
        let since = match (prev_ts, start) {
            (Some(t), Some(s)) => t.max(s),
            (Some(t), None) => t,
            (None, s) => s?,
        };
        return Some((since, 0));
    }
    match (prev_value, prev_ts, start) {
        (Some(v), Some(t), _) => Some((t, v)),
        (_, Some(t), Some(s)) if s >= t => Some((s, 0)),
        (_, None, Some(s)) => Some((s, 0)),
        _ => None,
    }
}

/// Units per second from `baseline` to `value` at `now`; `None` without a
/// baseline or elapsed time. A counter that went backwards counts as 0.
pub(super) fn per_second(
    baseline: Option<(UnixNanos, u64)>,
    now: UnixNanos,
    value: u64,
) -> Option<f64> {
    let (t0, v0) = baseline?;
    let dt = now.checked_sub(t0).filter(|&d| d > 0)?;
    Some(value.saturating_sub(v0) as f64 * NANOS_PER_SEC / dt as f64)
}

// ---------------------------------------------------------------------------
// Rows

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mark {
    Plain,
    New,
    Closed,
}

/// One line of the table: a connection, or a group of connections.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ViewRow {
    /// Connection id, or the group's rank by key: the last sort tie-breaker.
    pub id: u64,
    pub mark: Mark,
    /// Connections in the row (1 for a connection).
    pub conns: u64,
    pub pid: Option<u32>,
    pub comm: Option<Arc<str>>,
    pub local: Option<SocketAddr>,
    pub remote_addr: Option<IpAddr>,
    /// `None` for a group by remote address.
    pub remote_port: Option<u16>,
    pub netns: Option<u32>,
    /// The owner's container, short (`docker ps`'s 12 digits).
    pub container: Option<Arc<str>>,
    pub dir: Option<Direction>,
    pub sent: u64,
    pub recv: u64,
    pub tx_rate: Option<f64>,
    pub rx_rate: Option<f64>,
    pub pkts_out: u64,
    pub pkts_in: u64,
    pub retrans: u64,
    pub rtt_us: Option<u32>,
    pub rtt_var_us: Option<u32>,
    pub age_ns: Option<u64>,
}

impl ViewRow {
    /// A group row before anything is added to it.
    const EMPTY: ViewRow = ViewRow {
        id: 0,
        mark: Mark::Plain,
        conns: 0,
        pid: None,
        comm: None,
        local: None,
        remote_addr: None,
        remote_port: None,
        netns: None,
        container: None,
        dir: None,
        sent: 0,
        recv: 0,
        tx_rate: None,
        rx_rate: None,
        pkts_out: 0,
        pkts_in: 0,
        retrans: 0,
        rtt_us: None,
        rtt_var_us: None,
        age_ns: None,
    };

    fn conn(r: &ConnRow, mark: Mark, rates: (Option<f64>, Option<f64>), now: UnixNanos) -> ViewRow {
        let c = &r.conn;
        let m = &r.metrics;
        let t = &c.tuple;
        ViewRow {
            id: c.id,
            mark,
            conns: 1,
            pid: Some(c.pid),
            comm: Some(Arc::clone(&c.comm)),
            local: Some(SocketAddr::new(t.local_addr, t.local_port)),
            remote_addr: Some(t.remote_addr),
            remote_port: Some(t.remote_port),
            netns: Some(c.netns),
            container: c.container().map(|k| k.short_id().into()),
            dir: Some(c.direction),
            sent: m.bytes_sent,
            recv: m.bytes_received,
            tx_rate: rates.0,
            rx_rate: rates.1,
            pkts_out: m.packets_sent,
            pkts_in: m.packets_received,
            retrans: m.retransmits,
            rtt_us: Some(m.rtt_us),
            rtt_var_us: Some(m.rtt_var_us),
            age_ns: c.start.map(|s| now.saturating_sub(s)),
        }
    }

    fn remote_text(&self) -> String {
        match (self.remote_addr, self.remote_port) {
            (Some(a), Some(p)) => fmt_endpoint(a, p),
            (Some(a), None) => a.to_string(),
            _ => String::new(),
        }
    }

    fn local_text(&self) -> String {
        self.local
            .map(|l| fmt_endpoint(l.ip(), l.port()))
            .unwrap_or_default()
    }

    fn comm_text(&self) -> String {
        self.comm
            .as_deref()
            .map(|c| comm_token(c).into_owned())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Columns

/// A column of the table, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Col {
    Mark,
    Pid,
    Command,
    Local,
    Remote,
    Conns,
    Dir,
    Sent,
    TxRate,
    Recv,
    RxRate,
    Retrans,
    Rtt,
    RttVar,
    PktsOut,
    PktsIn,
    Age,
    Netns,
    Container,
}

/// Columns of each view, most wanted first: at a given width the table
/// keeps as many as fit, in this order.
const CONN_COLUMNS: [Col; 18] = [
    Col::Mark,
    Col::Remote,
    Col::Command,
    Col::Pid,
    Col::Sent,
    Col::TxRate,
    Col::Recv,
    Col::RxRate,
    Col::Rtt,
    Col::Retrans,
    Col::Local,
    Col::Age,
    Col::Dir,
    Col::PktsOut,
    Col::PktsIn,
    Col::RttVar,
    Col::Netns,
    Col::Container,
];
const PROCESS_COLUMNS: [Col; 13] = [
    Col::Command,
    Col::Pid,
    Col::Conns,
    Col::Sent,
    Col::TxRate,
    Col::Recv,
    Col::RxRate,
    Col::Retrans,
    Col::Rtt,
    Col::Age,
    Col::PktsOut,
    Col::PktsIn,
    Col::Container,
];
const REMOTE_COLUMNS: [Col; 11] = [
    Col::Remote,
    Col::Conns,
    Col::Sent,
    Col::TxRate,
    Col::Recv,
    Col::RxRate,
    Col::Retrans,
    Col::Rtt,
    Col::Age,
    Col::PktsOut,
    Col::PktsIn,
];

impl Col {
    pub fn title(self) -> &'static str {
        match self {
            Col::Mark => "",
            Col::Pid => "PID",
            Col::Command => "COMMAND",
            Col::Conns => "CONNS",
            Col::Local => "LOCAL",
            Col::Remote => "REMOTE",
            Col::Dir => "DIR",
            Col::Sent => "SENT",
            Col::TxRate => "TX/s",
            Col::Recv => "RECV",
            Col::RxRate => "RX/s",
            Col::Retrans => "RETR",
            Col::Rtt => "RTT",
            Col::RttVar => "RTTVAR",
            Col::PktsOut => "PKTOUT",
            Col::PktsIn => "PKTIN",
            Col::Age => "AGE",
            Col::Netns => "NETNS",
            Col::Container => "CONTAINER",
        }
    }

    /// Narrowest width: the widest compact value, or the title with room
    /// for the sort arrow.
    fn min_width(self) -> usize {
        match self {
            Col::Mark => 1,
            Col::Pid => 7,
            Col::Command => 10,
            Col::Conns => 6,
            Col::Local | Col::Remote => 20,
            Col::Dir => 4,
            Col::Sent | Col::Recv | Col::Retrans => 5,
            Col::TxRate | Col::RxRate | Col::Rtt | Col::RttVar | Col::PktsOut => 7,
            Col::PktsIn | Col::Age => 6,
            Col::Netns => 10,
            Col::Container => 12,
        }
    }

    /// Columns that widen, up to their widest value, when there is room.
    fn grows(self) -> bool {
        matches!(self, Col::Command | Col::Local | Col::Remote)
    }

    fn align(self) -> Align {
        match self {
            Col::Mark | Col::Command | Col::Local | Col::Remote | Col::Dir => Align::Left,
            _ => Align::Right,
        }
    }

    fn text(self, r: &ViewRow) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        match self {
            Col::Mark => match r.mark {
                Mark::Plain => " ",
                Mark::New => "+",
                Mark::Closed => "-",
            }
            .into(),
            Col::Pid => match r.pid {
                Some(0) | None => "-".into(),
                Some(p) => p.to_string(),
            },
            Col::Command => r.comm_text(),
            Col::Conns => r.conns.to_string(),
            Col::Local => r.local_text(),
            Col::Remote => r.remote_text(),
            Col::Dir => match r.dir {
                Some(Direction::Outbound) => "out",
                Some(Direction::Inbound) => "in",
                Some(Direction::Unknown) => "?",
                None => "",
            }
            .into(),
            Col::Sent => compact_bytes(r.sent),
            Col::Recv => compact_bytes(r.recv),
            Col::TxRate => opt(r.tx_rate.map(compact_rate)),
            Col::RxRate => opt(r.rx_rate.map(compact_rate)),
            Col::Retrans => compact_count(r.retrans),
            Col::Rtt => opt(r.rtt_us.map(compact_micros)),
            Col::RttVar => opt(r.rtt_var_us.map(compact_micros)),
            Col::PktsOut => compact_count(r.pkts_out),
            Col::PktsIn => compact_count(r.pkts_in),
            Col::Age => opt(r.age_ns.map(fmt_age)),
            Col::Netns => opt(r.netns.map(|n| n.to_string())),
            Col::Container => opt(r.container.as_deref().map(str::to_string)),
        }
    }
}

/// The columns shown at `width`: from `candidates` (most wanted first),
/// each that still fits (one space between columns), then extra room for
/// the growing columns up to `wanted` (their widest value). In display
/// order, with their widths.
pub(super) fn choose_columns(
    candidates: &[Col],
    width: usize,
    wanted: impl Fn(Col) -> usize,
) -> Vec<(Col, usize)> {
    let mut chosen: Vec<(Col, usize)> = Vec::new();
    let mut used = 0;
    for &c in candidates {
        let w = c.min_width();
        let need = if chosen.is_empty() { w } else { w + 1 };
        if used + need <= width {
            chosen.push((c, w));
            used += need;
        }
    }
    // Spare room goes to the growing columns, most wanted first.
    for (c, w) in chosen.iter_mut().filter(|(c, _)| c.grows()) {
        let extra = wanted(*c).saturating_sub(*w).min(width - used);
        *w += extra;
        used += extra;
    }
    chosen.sort_by_key(|(c, _)| *c);
    chosen
}

// ---------------------------------------------------------------------------
// Sorting, filtering, grouping

/// Orders by `col` (missing values lowest), ties by id ascending so rows
/// keep their place between refreshes.
pub(super) fn sort_rows(rows: &mut [ViewRow], col: Col, descending: bool) {
    rows.sort_by(|a, b| {
        let by_col = compare(col, a, b);
        let by_col = if descending { by_col.reverse() } else { by_col };
        by_col.then(a.id.cmp(&b.id))
    });
}

fn compare(col: Col, a: &ViewRow, b: &ViewRow) -> Ordering {
    let rate = |v: Option<f64>| v.unwrap_or(-1.0);
    match col {
        Col::Mark => (a.mark as u8).cmp(&(b.mark as u8)),
        Col::Pid => a.pid.cmp(&b.pid),
        Col::Command => a.comm.cmp(&b.comm),
        Col::Conns => a.conns.cmp(&b.conns),
        Col::Local => a.local.cmp(&b.local),
        Col::Remote => (a.remote_addr, a.remote_port).cmp(&(b.remote_addr, b.remote_port)),
        Col::Dir => a
            .dir
            .map(Direction::as_str)
            .cmp(&b.dir.map(Direction::as_str)),
        Col::Sent => a.sent.cmp(&b.sent),
        Col::Recv => a.recv.cmp(&b.recv),
        Col::TxRate => rate(a.tx_rate).total_cmp(&rate(b.tx_rate)),
        Col::RxRate => rate(a.rx_rate).total_cmp(&rate(b.rx_rate)),
        Col::Retrans => a.retrans.cmp(&b.retrans),
        Col::Rtt => a.rtt_us.cmp(&b.rtt_us),
        Col::RttVar => a.rtt_var_us.cmp(&b.rtt_var_us),
        Col::PktsOut => a.pkts_out.cmp(&b.pkts_out),
        Col::PktsIn => a.pkts_in.cmp(&b.pkts_in),
        Col::Age => a.age_ns.cmp(&b.age_ns),
        Col::Netns => a.netns.cmp(&b.netns),
        Col::Container => a.container.cmp(&b.container),
    }
}

/// What the user typed after `/`: `:PORT` matches that local or remote
/// port exactly; anything else is a case-insensitive substring of the
/// command, PID, local or remote address (with port).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Filter {
    needle: String,
    port: Option<u16>,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let text = text.trim();
        Filter {
            needle: text.to_lowercase(),
            port: text.strip_prefix(':').and_then(|p| p.parse().ok()),
        }
    }

    pub fn matches(&self, r: &ViewRow) -> bool {
        if let Some(port) = self.port {
            return r.local.map(|l| l.port()) == Some(port) || r.remote_port == Some(port);
        }
        if self.needle.is_empty() {
            return true;
        }
        let pid = r.pid.filter(|&p| p != 0).map(|p| p.to_string());
        [
            Some(r.comm_text()),
            pid,
            Some(r.local_text()),
            Some(r.remote_text()),
            r.container.as_deref().map(str::to_string),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&self.needle))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Grouping {
    None,
    /// By PID and command.
    Process,
    /// By remote address (any port).
    Remote,
}

impl Grouping {
    fn next(self) -> Grouping {
        match self {
            Grouping::None => Grouping::Process,
            Grouping::Process => Grouping::Remote,
            Grouping::Remote => Grouping::None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Grouping::None => "none",
            Grouping::Process => "process",
            Grouping::Remote => "remote address",
        }
    }

    fn columns(self) -> &'static [Col] {
        match self {
            Grouping::None => &CONN_COLUMNS,
            Grouping::Process => &PROCESS_COLUMNS,
            Grouping::Remote => &REMOTE_COLUMNS,
        }
    }
}

/// One row per process or remote address, over the open connections of
/// `rows` (closed ones are left out): counts, summed bytes, packets,
/// retransmits and rates, the mean of the non-zero RTTs, the oldest age.
pub(super) fn group_rows(rows: &[ViewRow], by: Grouping) -> Vec<ViewRow> {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        Process(u32, Option<Arc<str>>),
        Remote(Option<IpAddr>),
    }
    /// A group being summed: the row, and the RTT means' sums and counts.
    struct Acc {
        row: ViewRow,
        rtt: Mean,
        rtt_var: Mean,
    }
    if by == Grouping::None {
        return rows.to_vec();
    }
    let mut groups: BTreeMap<Key, Acc> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.mark != Mark::Closed) {
        let key = if by == Grouping::Process {
            Key::Process(r.pid.unwrap_or(0), r.comm.clone())
        } else {
            Key::Remote(r.remote_addr)
        };
        let acc = groups.entry(key).or_insert_with(|| {
            let row = if by == Grouping::Process {
                ViewRow {
                    pid: r.pid,
                    comm: r.comm.clone(),
                    container: r.container.clone(),
                    ..ViewRow::EMPTY
                }
            } else {
                ViewRow {
                    remote_addr: r.remote_addr,
                    ..ViewRow::EMPTY
                }
            };
            Acc {
                row,
                rtt: Mean::default(),
                rtt_var: Mean::default(),
            }
        });
        let g = &mut acc.row;
        g.conns += 1;
        g.sent += r.sent;
        g.recv += r.recv;
        g.pkts_out += r.pkts_out;
        g.pkts_in += r.pkts_in;
        g.retrans += r.retrans;
        let add = |sum: Option<f64>, v: Option<f64>| match (sum, v) {
            (Some(s), Some(v)) => Some(s + v),
            (s, v) => s.or(v),
        };
        g.tx_rate = add(g.tx_rate, r.tx_rate);
        g.rx_rate = add(g.rx_rate, r.rx_rate);
        g.age_ns = g.age_ns.max(r.age_ns);
        acc.rtt.add(r.rtt_us);
        acc.rtt_var.add(r.rtt_var_us);
    }
    groups
        .into_values()
        .enumerate()
        .map(|(i, acc)| ViewRow {
            id: i as u64,
            rtt_us: acc.rtt.get(),
            rtt_var_us: acc.rtt_var.get(),
            ..acc.row
        })
        .collect()
}

/// The mean of the measured (non-zero) RTT values of a group.
#[derive(Default)]
struct Mean {
    sum: u64,
    count: u64,
}

impl Mean {
    fn add(&mut self, v: Option<u32>) {
        if let Some(v) = v.filter(|&v| v > 0) {
            self.sum += u64::from(v);
            self.count += 1;
        }
    }

    fn get(&self) -> Option<u32> {
        (self.count > 0).then(|| (self.sum / self.count) as u32)
    }
}

// ---------------------------------------------------------------------------
// The model: snapshots in, rows with rates and marks out

/// What is remembered of a connection of the latest snapshot.
struct Known {
    metrics: crate::model::Metrics,
    /// Refresh it first appeared in; 0 when it was there from the start.
    first_seen: u64,
    /// Its index in `Model::rows`.
    index: usize,
}

#[derive(Default)]
pub(super) struct Model {
    refreshes: u64,
    timestamp: Option<UnixNanos>,
    incremental: bool,
    losses: Losses,
    /// (all, outbound, inbound) of the latest snapshot.
    counts: (usize, usize, usize),
    /// The latest snapshot's connections.
    rows: Vec<ViewRow>,
    known: IdMap<u64, Known>,
    /// Connections gone since, with the refresh that noticed it.
    closed: Vec<(ViewRow, u64)>,
}

impl Model {
    pub fn apply_snapshot(&mut self, snap: &Snapshot) {
        self.refreshes += 1;
        let refresh = self.refreshes;
        let prev_ts = self.timestamp;
        let mut known = IdMap::default();
        known.reserve(snap.conns.len());
        let mut rows = Vec::with_capacity(snap.conns.len());
        for r in &snap.conns {
            let old = self.known.get(&r.conn.id);
            let first_seen = match old {
                Some(k) => k.first_seen,
                // Everything is new in the first snapshot: nothing to mark.
                None if refresh == 1 => 0,
                None => refresh,
            };
            let rate = |prev: Option<u64>, now: u64| {
                let base = rate_baseline(prev, prev_ts, r.conn.start, snap.incremental);
                per_second(base, snap.timestamp, now)
            };
            let tx = rate(old.map(|k| k.metrics.bytes_sent), r.metrics.bytes_sent);
            let rx = rate(
                old.map(|k| k.metrics.bytes_received),
                r.metrics.bytes_received,
            );
            let mark = if first_seen != 0 && refresh - first_seen < MARK_REFRESHES {
                Mark::New
            } else {
                Mark::Plain
            };
            known.insert(
                r.conn.id,
                Known {
                    metrics: r.metrics,
                    first_seen,
                    index: rows.len(),
                },
            );
            rows.push(ViewRow::conn(r, mark, (tx, rx), snap.timestamp));
        }
        self.closed.retain(|(_, at)| refresh - at < MARK_REFRESHES);
        for (id, k) in &self.known {
            if !known.contains_key(id) {
                let mut row = self.rows[k.index].clone();
                row.mark = Mark::Closed;
                row.tx_rate = None;
                row.rx_rate = None;
                self.closed.push((row, refresh));
            }
        }
        self.known = known;
        self.rows = rows;
        self.timestamp = Some(snap.timestamp);
        self.incremental = snap.incremental;
        self.losses = snap.losses;
        let (out, inb) = snap.open_counts();
        self.counts = (snap.conns.len(), out, inb);
    }

    /// Marks shown connections closed at once, with their final counters.
    pub fn apply_closed(&mut self, events: &[ConnEvent]) {
        for ev in events {
            let Some(k) = self.known.get(&ev.conn.id) else {
                continue;
            };
            let row = &mut self.rows[k.index];
            row.mark = Mark::Closed;
            row.tx_rate = None;
            row.rx_rate = None;
            // Final counters are totals; in -i mode the row shows deltas.
            if let (Some(m), false) = (ev.metrics, self.incremental) {
                row.sent = m.bytes_sent;
                row.recv = m.bytes_received;
                row.pkts_out = m.packets_sent;
                row.pkts_in = m.packets_received;
                row.retrans = m.retransmits;
            }
        }
    }

    /// Open and recently closed connections.
    fn all_rows(&self) -> impl Iterator<Item = &ViewRow> {
        self.rows.iter().chain(self.closed.iter().map(|(r, _)| r))
    }
}

// ---------------------------------------------------------------------------
// The screen

pub(super) struct ConnsScreen {
    model: Model,
    sort: Col,
    descending: bool,
    filter: String,
    typing: bool,
    grouping: Grouping,
    scroll: usize,
    /// Body rows of the last frame (a page for PgUp/PgDn).
    page: usize,
    /// The latest progress line (before the first snapshot).
    status: Option<String>,
    /// The latest warning line of the run loop.
    warning: Option<String>,
}

impl ConnsScreen {
    pub fn new() -> ConnsScreen {
        ConnsScreen {
            model: Model::default(),
            sort: Col::TxRate,
            descending: true,
            filter: String::new(),
            typing: false,
            grouping: Grouping::None,
            scroll: 0,
            page: 1,
            status: None,
            warning: None,
        }
    }

    /// The rows as shown: filtered, grouped, sorted.
    pub fn display_rows(&self) -> Vec<ViewRow> {
        let filter = Filter::parse(&self.filter);
        let rows: Vec<ViewRow> = self
            .model
            .all_rows()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        let mut rows = match self.grouping {
            Grouping::None => rows,
            by => group_rows(&rows, by),
        };
        sort_rows(&mut rows, self.sort, self.descending);
        rows
    }

    /// Moves the sort to the next column of the view, in display order,
    /// shown or not (the sort column is always shown).
    fn move_sort(&mut self, forward: bool) -> Flow {
        let mut cols: Vec<Col> = self
            .grouping
            .columns()
            .iter()
            .copied()
            .filter(|&c| c != Col::Mark)
            .collect();
        cols.sort();
        let next = match cols.iter().position(|&c| c == self.sort) {
            Some(i) if forward => (i + 1) % cols.len(),
            Some(i) => (i + cols.len() - 1) % cols.len(),
            None => 0,
        };
        self.sort = cols[next];
        // Text columns read best A to Z, numbers largest first.
        self.descending = self.sort.align() == Align::Right;
        Flow::Redraw
    }

    fn title(&self) -> String {
        let time = self
            .model
            .timestamp
            .map(|t| {
                let full = fmt_time(t);
                // "2026-11-23T13:31:47.250000Z" -> "13:31:47Z"
                format!("{}Z", &full[11..19])
            })
            .unwrap_or_else(|| "--:--:--".into());
        let counters = if self.model.incremental {
            "deltas"
        } else {
            "totals"
        };
        let arrow = if self.descending { "desc" } else { "asc" };
        let mut s = format!(
            "netlens conns  {time}  {counters}  sort: {} {arrow}  group: {}",
            self.sort.title(),
            self.grouping.name()
        );
        if !self.filter.is_empty() {
            s.push_str(&format!("  filter: {}", self.filter));
        }
        s
    }

    fn totals(&self, first: usize, last: usize, shown: usize) -> String {
        let (all, out, inb) = self.model.counts;
        let (tx, rx) = self.model.rows.iter().fold((0.0, 0.0), |(tx, rx), r| {
            (tx + r.tx_rate.unwrap_or(0.0), rx + r.rx_rate.unwrap_or(0.0))
        });
        let what = if self.grouping == Grouping::None {
            "rows"
        } else {
            "groups"
        };
        let range = if shown == 0 {
            format!("{what} 0 of 0")
        } else {
            format!("{what} {first}-{last} of {shown}")
        };
        format!(
            "{range}  {all} conns: {out} out, {inb} in, {} unknown  TX {} RX {}",
            all - out - inb,
            compact_rate(tx),
            compact_rate(rx)
        )
    }

    fn keys_line(&self) -> String {
        if self.typing {
            format!("filter: {}_   (Enter keep, Esc clear)", self.filter)
        } else {
            "q quit  ↑↓ PgUp PgDn  <> sort  r reverse  / filter  g group  Enter refresh".into()
        }
    }
}

impl Screen for ConnsScreen {
    type Update = Update;

    fn update(&mut self, update: Update) {
        match update {
            Update::Snapshot(snap) => self.model.apply_snapshot(&snap),
            Update::Closed(events) => self.model.apply_closed(&events),
        }
    }

    fn status(&mut self, line: String) {
        if line.starts_with("warning") {
            self.warning = Some(line);
        } else {
            self.status = Some(line);
        }
    }

    fn key(&mut self, key: KeyEvent) -> Flow {
        if self.typing {
            match key.code {
                KeyCode::Char(c) => self.filter.push(c),
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Enter => self.typing = false,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.typing = false;
                }
                _ => return Flow::Ignore,
            }
            self.scroll = 0;
            return Flow::Redraw;
        }
        if let Some(flow) = scroll_or_quit(key.code, &mut self.scroll, self.page) {
            return flow;
        }
        match key.code {
            KeyCode::Char('<' | ',') => self.move_sort(false),
            KeyCode::Char('>' | '.') => self.move_sort(true),
            KeyCode::Char('r') => {
                self.descending = !self.descending;
                Flow::Redraw
            }
            KeyCode::Char('/') => {
                self.typing = true;
                Flow::Redraw
            }
            KeyCode::Char('g') => {
                self.grouping = self.grouping.next();
                if !self.grouping.columns().contains(&self.sort) {
                    self.sort = Col::TxRate;
                    self.descending = true;
                }
                self.scroll = 0;
                Flow::Redraw
            }
            KeyCode::Enter => Flow::Refresh,
            _ => Flow::Ignore,
        }
    }

    fn draw(&mut self, frame: &mut Frame) {
        let area = frame.area();
        let width = area.width as usize;
        let warn_height = u16::from(self.warning.is_some());
        let [title, header, body, warn, totals, losses, keys] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(warn_height),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        frame.render_widget(
            Paragraph::new(clip(&self.title(), width)).style(bold),
            title,
        );

        let rows = self.display_rows();
        let widest = |c: Col| {
            rows.iter()
                .map(|r| c.text(r).chars().count())
                .max()
                .unwrap_or(0)
        };
        let columns = choose_columns(
            &with_first(self.grouping.columns(), self.sort),
            width,
            widest,
        );
        let arrow = if self.descending { "▼" } else { "▲" };
        let header_text = join_cells(&columns, |c| {
            if c == self.sort {
                format!("{}{arrow}", c.title())
            } else {
                c.title().to_string()
            }
        });
        frame.render_widget(
            Paragraph::new(header_text).style(Style::default().add_modifier(Modifier::REVERSED)),
            header,
        );

        self.page = body.height as usize;
        let max_scroll = rows.len().saturating_sub(self.page);
        self.scroll = self.scroll.min(max_scroll);
        if self.model.timestamp.is_none() {
            let waiting = match &self.status {
                Some(s) => format!("waiting for the first snapshot ({s})"),
                None => "loading the BPF programs and seeding existing connections...".into(),
            };
            frame.render_widget(Paragraph::new(clip(&waiting, width)), body);
        } else {
            let lines: Vec<Line> = rows
                .iter()
                .skip(self.scroll)
                .take(self.page)
                .map(|r| {
                    let style = match r.mark {
                        Mark::Plain => Style::default(),
                        Mark::New => Style::default()
                            .fg(Color::Green)
                            .add_modifier(Modifier::BOLD),
                        Mark::Closed => Style::default().add_modifier(Modifier::DIM),
                    };
                    Line::styled(join_cells(&columns, |c| c.text(r)), style)
                })
                .collect();
            frame.render_widget(Paragraph::new(lines), body);
        }

        if let Some(w) = &self.warning {
            frame.render_widget(
                Paragraph::new(clip(w, width)).style(Style::default().fg(Color::Yellow)),
                warn,
            );
        }
        let first = self.scroll + 1;
        let last = (self.scroll + self.page).min(rows.len());
        let totals_text = if self.model.timestamp.is_some() {
            self.totals(first, last, rows.len())
        } else {
            "no snapshot yet".into()
        };
        frame.render_widget(Paragraph::new(clip(&totals_text, width)), totals);
        let losses_style = if self.model.losses.any() {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        frame.render_widget(
            Paragraph::new(clip(&losses_footer(&self.model.losses), width)).style(losses_style),
            losses,
        );
        frame.render_widget(
            Paragraph::new(clip(&self.keys_line(), width))
                .style(Style::default().add_modifier(Modifier::REVERSED)),
            keys,
        );
    }
}

/// `columns` with `first` (when among them) moved to the front, after the
/// mark: the sort column is always shown, whatever the width.
fn with_first(columns: &[Col], first: Col) -> Vec<Col> {
    let mut out: Vec<Col> = columns.iter().copied().filter(|&c| c != first).collect();
    if columns.contains(&first) {
        let at = usize::from(out.first() == Some(&Col::Mark));
        out.insert(at, first);
    }
    out
}

/// One line of cells, one space apart, without trailing spaces.
fn join_cells(columns: &[(Col, usize)], text: impl Fn(Col) -> String) -> String {
    let mut s = String::new();
    for (i, &(c, w)) in columns.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&cell(&text(c), w, c.align()));
    }
    s.truncate(s.trim_end().len());
    s
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{screen_buffer, screen_lines};
    use super::*;
    use crate::model::{EventKind, Metrics};
    use crate::output::test_util::{conn, T0};
    use ratatui::crossterm::event::KeyModifiers;

    const SEC: u64 = 1_000_000_000;

    fn row(lport: u16, remote: &str, rport: u16, sent: u64, recv: u64) -> ConnRow {
        let mut c = conn("192.0.2.1", lport, remote, rport, Direction::Outbound);
        c.start = Some(T0 - 10 * SEC);
        ConnRow {
            conn: c,
            metrics: Metrics {
                bytes_sent: sent,
                bytes_received: recv,
                ..Metrics::default()
            },
        }
    }

    fn snap(at: u64, conns: Vec<ConnRow>) -> Snapshot {
        Snapshot {
            timestamp: at,
            conns,
            incremental: false,
            losses: Losses::default(),
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn rate_baselines() {
        let t = Some(T0);
        // Totals: the previous value at the previous snapshot...
        assert_eq!(
            rate_baseline(Some(500), t, Some(T0 - SEC), false),
            Some((T0, 500))
        );
        // ...or zero at the start of a connection newer than that snapshot...
        assert_eq!(
            rate_baseline(None, t, Some(T0 + SEC), false),
            Some((T0 + SEC, 0))
        );
        assert_eq!(rate_baseline(None, None, Some(T0), false), Some((T0, 0)));
        // ...and nothing for an older connection not seen before, or of unknown age.
        assert_eq!(rate_baseline(None, t, Some(T0 - SEC), false), None);
        assert_eq!(rate_baseline(None, t, None, false), None);
        // Deltas count from the later of the previous snapshot and the start.
        assert_eq!(
            rate_baseline(Some(9), t, Some(T0 - SEC), true),
            Some((T0, 0))
        );
        assert_eq!(
            rate_baseline(None, t, Some(T0 + SEC), true),
            Some((T0 + SEC, 0))
        );
        assert_eq!(rate_baseline(None, t, None, true), Some((T0, 0)));
        assert_eq!(rate_baseline(None, None, None, true), None);
    }

    #[test]
    fn per_second_divides_by_elapsed_time() {
        assert_eq!(
            per_second(Some((T0, 1000)), T0 + 2 * SEC, 5000),
            Some(2000.0)
        );
        assert_eq!(per_second(Some((T0, 0)), T0 + SEC / 4, 100), Some(400.0));
        // A counter that went backwards is no negative rate.
        assert_eq!(per_second(Some((T0, 1000)), T0 + SEC, 10), Some(0.0));
        assert_eq!(per_second(Some((T0, 0)), T0, 10), None, "no time elapsed");
        assert_eq!(
            per_second(Some((T0 + SEC, 0)), T0, 10),
            None,
            "clock went back"
        );
        assert_eq!(per_second(None, T0, 10), None);
    }

    #[test]
    fn model_computes_rates_marks_new_and_keeps_closed() {
        let mut m = Model::default();
        let a = || row(40000, "198.51.100.7", 443, 1000, 0);
        m.apply_snapshot(&snap(T0, vec![a()]));
        assert_eq!(
            m.rows[0].mark,
            Mark::Plain,
            "nothing is new in the first snapshot"
        );
        // First sight: the mean since its start 10 s ago.
        assert_eq!(m.rows[0].tx_rate, Some(100.0));

        let mut a2 = a();
        a2.metrics.bytes_sent = 5000;
        let mut b = row(40001, "198.51.100.8", 80, 2000, 300);
        b.conn.start = Some(T0 + SEC);
        // Older than the previous snapshot but not in it: no rate yet.
        let c = row(40002, "198.51.100.9", 80, 2000, 300);
        m.apply_snapshot(&snap(T0 + 2 * SEC, vec![a2.clone(), b.clone(), c.clone()]));
        assert_eq!(m.rows[0].tx_rate, Some(2000.0), "4000 bytes in 2 s");
        assert_eq!(m.rows[0].mark, Mark::Plain);
        assert_eq!(
            m.rows[1].tx_rate,
            Some(2000.0),
            "2000 bytes since its start 1 s ago"
        );
        assert_eq!(m.rows[1].rx_rate, Some(300.0));
        assert_eq!(m.rows[1].mark, Mark::New);
        assert_eq!((m.rows[2].tx_rate, m.rows[2].mark), (None, Mark::New));

        // A closes: marked at once, with its final counters.
        let mut fin = a2.metrics;
        fin.bytes_sent = 6000;
        m.apply_closed(&[ConnEvent {
            kind: EventKind::Close,
            timestamp: T0 + 3 * SEC,
            conn: a2.conn.clone(),
            metrics: Some(fin),
        }]);
        assert_eq!(m.rows[0].mark, Mark::Closed);
        assert_eq!(m.rows[0].sent, 6000);
        assert_eq!(m.rows[0].tx_rate, None);

        m.apply_snapshot(&snap(T0 + 4 * SEC, vec![b.clone(), c.clone()]));
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].mark, Mark::New, "still new in the refresh after");
        assert_eq!(m.rows[0].tx_rate, Some(0.0));
        let closed: Vec<&ViewRow> = m.all_rows().filter(|r| r.mark == Mark::Closed).collect();
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].id, closed[0].sent), (a2.conn.id, 6000));

        m.apply_snapshot(&snap(T0 + 6 * SEC, vec![b.clone(), c.clone()]));
        assert_eq!(m.rows[0].mark, Mark::Plain, "marked for two refreshes");
        assert_eq!(m.all_rows().count(), 3, "closed row kept for two refreshes");
        m.apply_snapshot(&snap(T0 + 8 * SEC, vec![b, c]));
        assert_eq!(m.all_rows().count(), 2, "then dropped");
    }

    #[test]
    fn model_rates_in_incremental_mode() {
        let mut m = Model::default();
        let mut s = snap(T0, vec![row(40000, "198.51.100.7", 443, 100, 0)]);
        s.incremental = true;
        m.apply_snapshot(&s);
        // First delta counts from the connection's start, 10 s before.
        assert_eq!(m.rows[0].tx_rate, Some(10.0));
        let mut s = snap(T0 + 2 * SEC, vec![row(40000, "198.51.100.7", 443, 800, 0)]);
        s.incremental = true;
        m.apply_snapshot(&s);
        assert_eq!(
            m.rows[0].tx_rate,
            Some(400.0),
            "800 bytes of delta over 2 s"
        );
    }

    fn view_rows() -> Vec<ViewRow> {
        let mut m = Model::default();
        m.apply_snapshot(&snap(
            T0,
            vec![
                row(40000, "198.51.100.7", 443, 500, 10),
                row(40001, "198.51.100.7", 8443, 9000, 20),
                row(40002, "203.0.113.5", 22, 500, 30),
            ],
        ));
        m.rows[0].tx_rate = Some(5.0);
        m.rows[1].tx_rate = None;
        m.rows[2].tx_rate = Some(1.0);
        m.rows[0].rtt_us = Some(100);
        m.rows[1].rtt_us = Some(300);
        m.rows[2].rtt_us = Some(0);
        m.rows[2].comm = Some("sshd".into());
        m.rows[2].pid = Some(77);
        m.rows[1].container = Some("0f1e2d3c4b5a".into());
        m.rows.clone()
    }

    fn ports(rows: &[ViewRow]) -> Vec<u16> {
        rows.iter()
            .map(|r| r.local.expect("a connection").port())
            .collect()
    }

    #[test]
    fn sorting_by_columns_both_ways_with_stable_ties() {
        let mut rows = view_rows();
        sort_rows(&mut rows, Col::Sent, true);
        // 500 and 500 tie: by id, which grows with the local port.
        assert_eq!(ports(&rows), [40001, 40000, 40002]);
        sort_rows(&mut rows, Col::Sent, false);
        assert_eq!(ports(&rows), [40000, 40002, 40001]);
        sort_rows(&mut rows, Col::Recv, true);
        assert_eq!(ports(&rows), [40002, 40001, 40000]);
        // Rows without a rate sort below every measured one.
        sort_rows(&mut rows, Col::TxRate, true);
        assert_eq!(ports(&rows), [40000, 40002, 40001]);
        sort_rows(&mut rows, Col::Remote, false);
        assert_eq!(ports(&rows), [40000, 40001, 40002]);
        sort_rows(&mut rows, Col::Command, false);
        assert_eq!(ports(&rows), [40000, 40001, 40002], "curl before sshd");
        sort_rows(&mut rows, Col::Rtt, true);
        assert_eq!(ports(&rows), [40001, 40000, 40002]);
    }

    #[test]
    fn filter_matches_process_address_and_exact_port() {
        let rows = view_rows();
        let matching = |text: &str| -> Vec<u16> {
            let f = Filter::parse(text);
            ports(
                &rows
                    .iter()
                    .filter(|r| f.matches(r))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(matching(""), [40000, 40001, 40002]);
        assert_eq!(matching("SSHD"), [40002], "case-insensitive command");
        assert_eq!(matching("77"), [40002], "PID");
        assert_eq!(matching("198.51.100.7"), [40000, 40001], "remote address");
        assert_eq!(matching("192.0.2.1:40001"), [40001], "local endpoint");
        // `:443` is the port 443 exactly, not 8443.
        assert_eq!(matching(":443"), [40000]);
        assert_eq!(matching(":40002"), [40002], "local port");
        assert_eq!(matching("443"), [40000, 40001], "a bare number is text");
        assert!(matching("nothing-like-it").is_empty());
        assert_eq!(matching("0F1E2D"), [40001], "container ID");
    }

    #[test]
    fn grouping_sums_counts_bytes_and_rates() {
        let mut rows = view_rows();
        let by_remote = group_rows(&rows, Grouping::Remote);
        assert_eq!(by_remote.len(), 2);
        let g = &by_remote[0];
        assert_eq!(g.remote_addr, Some("198.51.100.7".parse().unwrap()));
        assert_eq!((g.conns, g.sent, g.recv), (2, 9500, 30));
        assert_eq!(g.tx_rate, Some(5.0), "sum of the known rates");
        assert_eq!(g.rtt_us, Some(200), "mean RTT");
        assert_eq!(Col::Remote.text(g), "198.51.100.7", "an address, no port");
        assert_eq!(by_remote[1].rtt_us, None, "no measured RTT");

        rows[1].mark = Mark::Closed;
        let by_process = group_rows(&rows, Grouping::Process);
        assert_eq!(by_process.len(), 2);
        assert_eq!(
            (by_process[0].comm.as_deref(), by_process[0].conns),
            (Some("sshd"), 1)
        );
        let curl = &by_process[1];
        assert_eq!((curl.comm.as_deref(), curl.pid), (Some("curl"), Some(1234)));
        assert_eq!(
            (curl.conns, curl.sent),
            (1, 500),
            "closed rows are not counted"
        );
        assert_eq!(group_rows(&rows, Grouping::None), rows);
    }

    #[test]
    fn columns_fit_the_width() {
        let none = |_: Col| 0;
        let cols = |w: usize| -> Vec<Col> {
            choose_columns(&CONN_COLUMNS, w, none)
                .into_iter()
                .map(|(c, _)| c)
                .collect()
        };
        assert_eq!(
            cols(80),
            [
                Col::Mark,
                Col::Pid,
                Col::Command,
                Col::Remote,
                Col::Sent,
                Col::TxRate,
                Col::Recv,
                Col::RxRate,
                Col::Rtt
            ]
        );
        assert_eq!(cols(200).len(), CONN_COLUMNS.len(), "everything at 200");
        assert_eq!(cols(40), [Col::Mark, Col::Command, Col::Remote, Col::Sent]);
        for w in [20, 40, 80, 100, 132, 200] {
            let chosen = choose_columns(&CONN_COLUMNS, w, |c| if c.grows() { 47 } else { 0 });
            let used: usize = chosen.iter().map(|(_, w)| w).sum::<usize>() + chosen.len() - 1;
            assert!(used <= w, "{w}: {chosen:?}");
        }
        // Spare room widens the address up to its widest value, no more.
        let remote = |w| {
            choose_columns(&CONN_COLUMNS, w, |c| if c == Col::Remote { 22 } else { 0 })
                .into_iter()
                .find(|(c, _)| *c == Col::Remote)
                .map(|(_, w)| w)
        };
        assert_eq!(remote(80), Some(22));
        assert_eq!(remote(78), Some(21));
    }

    fn screen_with(n: u16) -> ConnsScreen {
        let mut s = ConnsScreen::new();
        let rows = (0..n)
            .map(|i| row(40000 + i, "198.51.100.7", 443, u64::from(i) * 1000, 0))
            .collect();
        s.update(Update::Snapshot(Box::new(snap(T0, rows))));
        s
    }

    #[test]
    fn frame_at_80x24_keeps_header_and_footer() {
        let mut s = screen_with(40);
        s.sort = Col::Sent;
        let lines = screen_lines(&mut s, 80, 24);
        assert_eq!(lines.len(), 24);
        assert!(
            lines[0].starts_with("netlens conns  13:31:47Z  totals  sort: SENT desc  group: none"),
            "{lines:#?}"
        );
        assert!(
            lines[1].contains("PID COMMAND") && lines[1].contains("SENT▼"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("192") || lines[2].contains("198.51.100.7:443"));
        // Largest first: 39 KB.
        assert!(lines[2].contains("38K"), "{}", lines[2]);
        assert_eq!(
            lines[21].trim_end(),
            // Each connection's mean rate since its start 10 s ago, summed.
            "rows 1-19 of 40  40 conns: 40 out, 0 in, 0 unknown  TX 76K/s RX 0/s"
        );
        assert_eq!(
            lines[22].trim_end(),
            "lost: events 0, map full 0, seed map full 0, seed unreached 0, runs missed 0"
        );
        assert!(lines[23].starts_with("q quit"), "{}", lines[23]);

        // End shows the last page; the header stays.
        assert_eq!(s.key(key(KeyCode::End)), Flow::Redraw);
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[21].starts_with("rows 22-40 of 40"), "{}", lines[21]);
        assert!(lines[1].contains("REMOTE"));
        s.key(key(KeyCode::PageUp));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[21].starts_with("rows 3-21 of 40"), "{}", lines[21]);
        s.key(key(KeyCode::Home));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[21].starts_with("rows 1-19 of 40"), "{}", lines[21]);

        // Narrower and shorter: still a header, a footer and the losses.
        let lines = screen_lines(&mut s, 60, 10);
        assert!(lines[1].contains("REMOTE"), "{lines:#?}");
        assert!(lines[8].starts_with("lost: events 0"), "{lines:#?}");
    }

    #[test]
    fn new_rows_are_bold_closed_dimmed_losses_red() {
        let mut s = ConnsScreen::new();
        s.sort = Col::Sent;
        let old = row(40000, "198.51.100.7", 443, 100, 0);
        let going = row(40001, "198.51.100.7", 443, 200, 0);
        s.update(Update::Snapshot(Box::new(snap(
            T0,
            vec![old.clone(), going.clone()],
        ))));
        let new = row(40002, "198.51.100.7", 443, 300, 0);
        let mut sn = snap(T0 + SEC, vec![old, new]);
        sn.losses.map_full = 1;
        s.update(Update::Snapshot(Box::new(sn)));
        let buf = screen_buffer(&mut s, 80, 24);
        let lines = screen_lines(&mut s, 80, 24);
        // By SENT: the new one (300), the closed one (200), the old one (100).
        assert!(
            lines[2].starts_with("+ ") && lines[3].starts_with("- "),
            "{lines:#?}"
        );
        assert!(lines[4].starts_with("  "), "{lines:#?}");
        let style_at = |y: u16| &buf[(3, y)];
        assert!(style_at(2).modifier.contains(Modifier::BOLD));
        assert_eq!(style_at(2).fg, Color::Green);
        assert!(style_at(3).modifier.contains(Modifier::DIM));
        assert!(!style_at(4)
            .modifier
            .intersects(Modifier::DIM | Modifier::BOLD));
        assert!(
            lines[22].starts_with("lost: events 0, map full 1"),
            "{lines:#?}"
        );
        assert_eq!(style_at(22).fg, Color::Red);
    }

    #[test]
    fn losses_and_warnings_are_shown() {
        let mut s = screen_with(1);
        let mut sn = snap(T0, vec![]);
        sn.losses.events_lost = 7;
        s.update(Update::Snapshot(Box::new(sn)));
        s.status("warning: tcp_probe not attached".into());
        let lines = screen_lines(&mut s, 80, 24);
        assert!(
            lines[22].starts_with("lost: events 7, map full 0"),
            "{lines:#?}"
        );
        assert!(
            lines[20].starts_with("warning: tcp_probe not attached"),
            "{lines:#?}"
        );
        assert_eq!(screen_buffer(&mut s, 80, 24)[(0, 20)].fg, Color::Yellow);
    }

    #[test]
    fn keys_sort_filter_group_and_quit() {
        let mut s = screen_with(3);
        screen_lines(&mut s, 80, 24);
        assert_eq!(s.sort, Col::TxRate);
        s.key(key(KeyCode::Char('>')));
        assert_eq!((s.sort, s.descending), (Col::Recv, true));
        s.key(key(KeyCode::Char('<')));
        s.key(key(KeyCode::Char('<')));
        assert_eq!((s.sort, s.descending), (Col::Sent, true));
        s.key(key(KeyCode::Char('r')));
        assert!(!s.descending);
        assert_eq!(ports(&s.display_rows()), [40000, 40001, 40002]);

        // Typing a filter: q and Esc are text there, Esc clears it.
        s.key(key(KeyCode::Char('/')));
        for c in ":40001q".chars() {
            s.key(key(KeyCode::Char(c)));
        }
        s.key(key(KeyCode::Backspace));
        assert_eq!(s.filter, ":40001");
        assert_eq!(ports(&s.display_rows()), [40001]);
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[23].starts_with("filter: :40001_"), "{}", lines[23]);
        assert_eq!(s.key(key(KeyCode::Esc)), Flow::Redraw);
        assert_eq!(s.filter, "");
        assert_eq!(s.display_rows().len(), 3);
        // Enter keeps it.
        s.key(key(KeyCode::Char('/')));
        s.key(key(KeyCode::Char('x')));
        s.key(key(KeyCode::Enter));
        assert_eq!((s.typing, s.filter.as_str()), (false, "x"));

        s.key(key(KeyCode::Char('g')));
        assert_eq!(s.grouping, Grouping::Process);
        s.key(key(KeyCode::Char('g')));
        assert_eq!(s.grouping, Grouping::Remote);
        s.key(key(KeyCode::Char('g')));
        assert_eq!(s.grouping, Grouping::None);

        assert_eq!(s.key(key(KeyCode::Enter)), Flow::Refresh);
        assert_eq!(s.key(key(KeyCode::Char('q'))), Flow::Quit);
        assert_eq!(s.key(key(KeyCode::Esc)), Flow::Quit);
    }

    #[test]
    fn the_sort_column_is_always_shown() {
        assert_eq!(
            with_first(&CONN_COLUMNS, Col::Age)[..3],
            [Col::Mark, Col::Age, Col::Remote]
        );
        assert_eq!(with_first(&PROCESS_COLUMNS, Col::Age)[0], Col::Age);
        assert_eq!(with_first(&PROCESS_COLUMNS, Col::Local), PROCESS_COLUMNS);
        let mut s = screen_with(3);
        // RETR and RTTVAR, each side of RTT, are not among the first nine
        // columns at 80, but shown while sorted by.
        s.sort = Col::Rtt;
        s.key(key(KeyCode::Char('<')));
        assert_eq!(s.sort, Col::Retrans);
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[1].contains("RETR▼"), "{}", lines[1]);
        s.key(key(KeyCode::Char('>')));
        s.key(key(KeyCode::Char('>')));
        assert_eq!(s.sort, Col::RttVar);
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[1].contains("RTTVAR▼"), "{}", lines[1]);
        assert!(lines[1].contains("REMOTE"), "{}", lines[1]);
        // Grouping by process has no RTTVAR column: back to TX/s.
        s.key(key(KeyCode::Char('g')));
        assert_eq!((s.sort, s.descending), (Col::TxRate, true));
        // Wrapping around, both ways (CONTAINER is the process view's last).
        s.sort = Col::Age;
        s.key(key(KeyCode::Char('>')));
        assert_eq!(s.sort, Col::Container);
        s.key(key(KeyCode::Char('>')));
        assert_eq!(s.sort, Col::Pid);
        s.key(key(KeyCode::Char('<')));
        assert_eq!(s.sort, Col::Container);
        s.key(key(KeyCode::Char('<')));
        assert_eq!(s.sort, Col::Age);
    }

    #[test]
    fn grouped_frame_shows_counts() {
        let mut s = screen_with(3);
        s.key(key(KeyCode::Char('g')));
        s.key(key(KeyCode::Char('g')));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[0].contains("group: remote address"), "{}", lines[0]);
        assert!(
            lines[1].contains("REMOTE") && lines[1].contains("CONNS"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("198.51.100.7"), "{}", lines[2]);
        assert!(lines[2].contains("     3 "), "{}", lines[2]);
        assert!(lines[21].starts_with("groups 1-1 of 1"), "{}", lines[21]);
    }

    #[test]
    fn tiny_windows_do_not_panic() {
        let mut s = screen_with(30);
        s.status("warning: something".into());
        for (w, h) in [(1, 1), (5, 2), (12, 4), (30, 7), (200, 3)] {
            for g in 0..3 {
                let lines = screen_lines(&mut s, w, h);
                assert_eq!(lines.len(), h as usize);
                s.key(key(KeyCode::Char('g')));
                s.key(key(if g == 1 {
                    KeyCode::End
                } else {
                    KeyCode::PageDown
                }));
            }
        }
    }

    #[test]
    fn waits_for_the_first_snapshot() {
        let mut s = ConnsScreen::new();
        s.status("netlens: ready: tracing".into());
        let lines = screen_lines(&mut s, 80, 24);
        assert_eq!(lines[21].trim_end(), "no snapshot yet");
        assert!(
            lines[2].starts_with("waiting for the first snapshot (netlens: ready"),
            "{lines:#?}"
        );
        assert!(lines[1].contains("REMOTE"));
    }
}
