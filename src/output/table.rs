//! Table mode: a redrawn table of active connections on a terminal
//! ([`TableSink`]), or parseable `key=value` lines when stdout is not a
//! terminal ([`LinesSink`]). Lifecycle events are not shown in either.

use std::fmt::Write as _;
use std::io::Write;

use super::{comm_token, fmt_time, losses_hint, LineBuf, Sink};
use crate::model::{fmt_endpoint, ConnEvent, ConnRow, Losses, Snapshot, UnixNanos};

/// Clears the terminal and homes the cursor.
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Bytes for people: `512 B`, `1.5 KiB`, `1.2 MiB`, ... (one decimal, binary units).
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut unit: u128 = 1024;
    let mut tenths: u128 = 0;
    let mut name = UNITS[0];
    for u in UNITS {
        name = u;
        // Rounded to the nearest tenth; moving up a unit when it rounds to
        // 1024.0 keeps `1024.0 KiB` from appearing.
        tenths = (u128::from(b) * 10 + unit / 2) / unit;
        if tenths < 10 * 1024 {
            break;
        }
        unit *= 1024;
    }
    format!("{}.{} {name}", tenths / 10, tenths % 10)
}

/// A duration for people: `12s`, `3m04s`, `2h01m`, `3d04h`.
pub fn fmt_age(ns: u64) -> String {
    let s = ns / NANOS_PER_SEC;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Epoch seconds with microseconds, exact: `1795440707.250000`.
pub fn fmt_epoch_secs(ns: UnixNanos) -> String {
    format!("{}.{:06}", ns / NANOS_PER_SEC, ns % NANOS_PER_SEC / 1_000)
}

/// Seconds with milliseconds, exact: `3723.500`.
fn fmt_secs_millis(ns: u64) -> String {
    format!(
        "{}.{:03}",
        ns / NANOS_PER_SEC,
        ns % NANOS_PER_SEC / 1_000_000
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Lays out a header and rows in columns as wide as their widest cell,
/// two spaces apart, without trailing spaces. Widths count characters, so
/// `µ` takes one column.
pub fn layout(header: &[(&str, Align)], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            // Writing into a String cannot fail.
            let _ = match header[i].1 {
                Align::Left => write!(s, "{cell:<w$}"),
                Align::Right => write!(s, "{cell:>w$}"),
            };
        }
        s.truncate(s.trim_end().len());
        s
    };
    let mut out = Vec::with_capacity(rows.len() + 1);
    out.push(line(&mut header.iter().map(|(h, _)| *h)));
    for row in rows {
        out.push(line(&mut row.iter().map(String::as_str)));
    }
    out
}

const COLUMNS: [(&str, Align); 14] = [
    ("LOCAL", Align::Left),
    ("REMOTE", Align::Left),
    ("PID", Align::Right),
    ("COMMAND", Align::Left),
    ("NETNS", Align::Right),
    ("BYTES SENT", Align::Right),
    ("BYTES RECV", Align::Right),
    ("PKTS SENT", Align::Right),
    ("PKTS RECV", Align::Right),
    ("RETRANS", Align::Right),
    ("RTT µs", Align::Right),
    ("RTTVAR µs", Align::Right),
    ("AGE", Align::Right),
    ("DIR", Align::Left),
];

fn table_cells(row: &ConnRow, now: UnixNanos) -> Vec<String> {
    let c = &row.conn;
    let m = &row.metrics;
    let t = &c.tuple;
    vec![
        fmt_endpoint(t.local_addr, t.local_port),
        fmt_endpoint(t.remote_addr, t.remote_port),
        if c.pid == 0 {
            "-".to_string()
        } else {
            c.pid.to_string()
        },
        comm_token(&c.comm).into_owned(),
        c.netns.to_string(),
        fmt_bytes(m.bytes_sent),
        fmt_bytes(m.bytes_received),
        m.packets_sent.to_string(),
        m.packets_received.to_string(),
        m.retransmits.to_string(),
        m.rtt_us.to_string(),
        m.rtt_var_us.to_string(),
        c.start
            .map_or_else(|| "-".to_string(), |s| fmt_age(now.saturating_sub(s))),
        c.direction.as_str().to_string(),
    ]
}

/// `N active connections: A outbound (active), P inbound (passive), U unknown`.
pub fn summary_text(snap: &Snapshot) -> String {
    let (active, passive) = snap.open_counts();
    let total = snap.conns.len();
    format!(
        "{total} active connections: {active} outbound (active), {passive} inbound (passive), {} unknown",
        total - active - passive
    )
}

/// `lost: events N, map full N, seed map full N, seed unreached N, runs
/// missed N`, with a hint when non-zero.
pub fn losses_footer(l: &Losses) -> String {
    let mut s = format!(
        "lost: events {}, map full {}, seed map full {}, seed unreached {}, runs missed {}",
        l.events_lost, l.map_full, l.seed_map_full, l.seed_unreached, l.runs_missed
    );
    if let Some(hint) = losses_hint(l) {
        s.push_str(" (");
        s.push_str(&hint);
        s.push(')');
    }
    s
}

/// The whole screen for one snapshot (without the clear sequence): a title,
/// the table, the summary and the losses footer.
pub fn render_frame(snap: &Snapshot) -> Vec<String> {
    let counters = if snap.incremental {
        "deltas since the previous refresh"
    } else {
        "totals"
    };
    let rows: Vec<Vec<String>> = snap
        .conns
        .iter()
        .map(|r| table_cells(r, snap.timestamp))
        .collect();
    let mut lines = vec![format!(
        "netlens conns  {}  counters: {counters}",
        fmt_time(snap.timestamp)
    )];
    lines.extend(layout(&COLUMNS, &rows));
    lines.push(summary_text(snap));
    lines.push(losses_footer(&snap.losses));
    lines
}

/// The redrawn table for a terminal.
pub struct TableSink<W: Write> {
    out: LineBuf<W>,
}

impl<W: Write> TableSink<W> {
    pub fn new(out: W) -> TableSink<W> {
        TableSink {
            out: LineBuf::new(out),
        }
    }

    /// The writer; what is still buffered is not in it until [`Sink::flush`].
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }
}

impl<W: Write> Sink for TableSink<W> {
    fn event(&mut self, _ev: &ConnEvent) -> anyhow::Result<()> {
        Ok(())
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        self.out
            .buf_mut()
            .extend_from_slice(CLEAR_SCREEN.as_bytes());
        for line in render_frame(snap) {
            self.out.line(&line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()
    }
}

/// One `key=value` line for a connection; every value is free of spaces.
/// `start` and `age_s` are `-` for a connection that existed before netlens
/// started (its age is unknown).
pub fn conn_kv_line(row: &ConnRow, now: UnixNanos) -> String {
    let c = &row.conn;
    let m = &row.metrics;
    let t = &c.tuple;
    format!(
        "ts={} family={} local={} remote={} pid={} comm={} netns={} dir={} state=established \
         bytes_sent={} bytes_received={} packets_sent={} packets_received={} retransmits={} \
         rtt_us={} rtt_var_us={} start={} age_s={}",
        fmt_epoch_secs(now),
        t.family(),
        fmt_endpoint(t.local_addr, t.local_port),
        fmt_endpoint(t.remote_addr, t.remote_port),
        c.pid,
        comm_token(&c.comm),
        c.netns,
        c.direction.as_str(),
        m.bytes_sent,
        m.bytes_received,
        m.packets_sent,
        m.packets_received,
        m.retransmits,
        m.rtt_us,
        m.rtt_var_us,
        c.start.map_or_else(|| "-".to_string(), fmt_epoch_secs),
        c.start.map_or_else(
            || "-".to_string(),
            |s| fmt_secs_millis(now.saturating_sub(s))
        ),
    )
}

/// The `summary ...` line closing each snapshot in [`LinesSink`].
pub fn summary_kv_line(snap: &Snapshot) -> String {
    let (active, passive) = snap.open_counts();
    let total = snap.conns.len();
    let l = &snap.losses;
    format!(
        "summary ts={} conns={total} active={active} passive={passive} unknown={} \
         incremental={} events_lost={} map_full={} seed_map_full={} seed_unreached={} \
         runs_missed={}",
        fmt_epoch_secs(snap.timestamp),
        total - active - passive,
        snap.incremental,
        l.events_lost,
        l.map_full,
        l.seed_map_full,
        l.seed_unreached,
        l.runs_missed,
    )
}

/// Table mode when stdout is not a terminal: one parseable line per
/// connection per snapshot, then a summary line.
pub struct LinesSink<W: Write> {
    out: LineBuf<W>,
}

impl<W: Write> LinesSink<W> {
    pub fn new(out: W) -> LinesSink<W> {
        LinesSink {
            out: LineBuf::new(out),
        }
    }

    /// The writer; what is still buffered is not in it until [`Sink::flush`].
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }
}

impl<W: Write> Sink for LinesSink<W> {
    fn event(&mut self, _ev: &ConnEvent) -> anyhow::Result<()> {
        Ok(())
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        for row in &snap.conns {
            self.out.line(&conn_kv_line(row, snap.timestamp))?;
        }
        self.out.line(&summary_kv_line(snap))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{conn, metrics, CountingWriter, T0};
    use super::*;
    use crate::model::{Direction, EventKind, Metrics};
    use std::collections::HashMap;

    #[test]
    fn bytes() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1024), "1.0 KiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(1_258_291), "1.2 MiB");
        assert_eq!(fmt_bytes(2_000_000), "1.9 MiB");
        // Just below 1 MiB rounds up into the next unit, not to "1024.0 KiB".
        assert_eq!(fmt_bytes(1_048_575), "1.0 MiB");
        assert_eq!(fmt_bytes(1_048_063), "1023.5 KiB");
        assert_eq!(fmt_bytes(5 << 30), "5.0 GiB");
        assert_eq!(fmt_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn ages() {
        let s = NANOS_PER_SEC;
        assert_eq!(fmt_age(0), "0s");
        assert_eq!(fmt_age(12 * s + 999_999_999), "12s");
        assert_eq!(fmt_age(59 * s), "59s");
        assert_eq!(fmt_age(60 * s), "1m00s");
        assert_eq!(fmt_age(184 * s), "3m04s");
        assert_eq!(fmt_age(3599 * s), "59m59s");
        assert_eq!(fmt_age(3600 * s), "1h00m");
        assert_eq!(fmt_age((2 * 3600 + 60 + 59) * s), "2h01m");
        assert_eq!(fmt_age((3 * 86400 + 4 * 3600 + 5) * s), "3d04h");
    }

    #[test]
    fn epoch_and_millis() {
        assert_eq!(fmt_epoch_secs(T0 + 250_000_999), "1795440707.250000");
        assert_eq!(fmt_epoch_secs(1_000), "0.000001");
        assert_eq!(fmt_secs_millis(3_723_500_000_000), "3723.500");
        assert_eq!(fmt_secs_millis(999_999), "0.000");
    }

    #[test]
    fn layout_pads_by_characters_and_aligns() {
        let header = [
            ("NAME", Align::Left),
            ("µs", Align::Right),
            ("X", Align::Left),
        ];
        let rows = vec![
            vec!["a".to_string(), "12345".to_string(), "".to_string()],
            vec!["longer".to_string(), "7".to_string(), "z".to_string()],
        ];
        assert_eq!(
            layout(&header, &rows),
            ["NAME       µs  X", "a       12345", "longer      7  z",]
        );
    }

    fn snapshot() -> Snapshot {
        let mut old = conn("192.0.2.1", 22, "198.51.100.7", 50000, Direction::Inbound);
        old.start = Some(T0 - 184 * NANOS_PER_SEC);
        old.comm = "sshd session".into();
        let mut new6 = conn(
            "2001:db8::1",
            44000,
            "2001:db8::2",
            443,
            Direction::Outbound,
        );
        new6.start = Some(T0 - 12 * NANOS_PER_SEC);
        let mut seeded = conn("192.0.2.1", 80, "192.0.2.9", 61000, Direction::Unknown);
        seeded.pid = 0;
        seeded.comm = "".into();
        seeded.start = None;
        Snapshot {
            timestamp: T0 + 250_000_000,
            conns: vec![
                ConnRow {
                    conn: seeded,
                    metrics: Metrics::default(),
                },
                ConnRow {
                    conn: old,
                    metrics: metrics(),
                },
                ConnRow {
                    conn: new6,
                    metrics: Metrics {
                        bytes_sent: 1536,
                        ..metrics()
                    },
                },
            ],
            incremental: false,
            losses: Losses::default(),
        }
    }

    #[test]
    fn frame_is_exact() {
        // Column widths worked out by hand from the widest cell or header:
        // LOCAL 19 ("[2001:db8::1]:44000"), REMOTE 18 ("198.51.100.7:50000"),
        // PID 4, COMMAND 12 ("sshd_session"), the rest their header or value.
        let row = |cells: [&str; 14]| {
            let [l, r, pid, comm, ns, bs, br, ps, pr, re, rtt, var, age, dir] = cells;
            format!(
                "{l:<19}  {r:<18}  {pid:>4}  {comm:<12}  {ns:>10}  {bs:>10}  {br:>10}  \
                 {ps:>9}  {pr:>9}  {re:>7}  {rtt:>6}  {var:>9}  {age:>5}  {dir}"
            )
        };
        let want = vec![
            "netlens conns  2026-11-23T13:31:47.250000Z  counters: totals".to_string(),
            row([
                "LOCAL",
                "REMOTE",
                "PID",
                "COMMAND",
                "NETNS",
                "BYTES SENT",
                "BYTES RECV",
                "PKTS SENT",
                "PKTS RECV",
                "RETRANS",
                "RTT µs",
                "RTTVAR µs",
                "AGE",
                "DIR",
            ]),
            row([
                "192.0.2.1:80",
                "192.0.2.9:61000",
                "-",
                "-",
                "4026531840",
                "0 B",
                "0 B",
                "0",
                "0",
                "0",
                "0",
                "0",
                "-",
                "unknown",
            ]),
            row([
                "192.0.2.1:22",
                "198.51.100.7:50000",
                "1234",
                "sshd_session",
                "4026531840",
                "1000 B",
                "1.9 MiB",
                "10",
                "1500",
                "2",
                "345",
                "67",
                "3m04s",
                "in",
            ]),
            row([
                "[2001:db8::1]:44000",
                "[2001:db8::2]:443",
                "1234",
                "curl",
                "4026531840",
                "1.5 KiB",
                "1.9 MiB",
                "10",
                "1500",
                "2",
                "345",
                "67",
                "12s",
                "out",
            ]),
            "3 active connections: 1 outbound (active), 1 inbound (passive), 1 unknown".to_string(),
            "lost: events 0, map full 0, seed map full 0, seed unreached 0, runs missed 0"
                .to_string(),
        ];
        assert_eq!(render_frame(&snapshot()), want);
        // Spot-check the padding literally, independent of format! widths.
        assert_eq!(
            &want[1][..45],
            "LOCAL                REMOTE               PID"
        );
    }

    #[test]
    fn footer_shows_losses_and_hint() {
        let l = Losses {
            events_lost: 4,
            map_full: 0,
            seed_map_full: 2,
            seed_unreached: 0,
            runs_missed: 0,
        };
        assert_eq!(
            losses_footer(&l),
            "lost: events 4, map full 0, seed map full 2, seed unreached 0, runs missed 0 \
             (connection map was full, raise -m/--map-size; events were dropped because user \
             space fell behind reading them)"
        );
        let l = Losses {
            seed_unreached: 2,
            ..Losses::default()
        };
        assert_eq!(
            losses_footer(&l),
            "lost: events 0, map full 0, seed map full 0, seed unreached 2, runs missed 0 \
             (existing connections in network namespaces netlens could not enter were not seeded \
             and are not reported (entering one needs CAP_SYS_ADMIN))"
        );
        let l = Losses {
            runs_missed: 3,
            ..Losses::default()
        };
        assert_eq!(
            losses_footer(&l),
            "lost: events 0, map full 0, seed map full 0, seed unreached 0, runs missed 3 (the kernel skipped BPF \
             program runs because the program was already running on that CPU, so events or \
             counter updates may be missing)"
        );
    }

    #[test]
    fn table_sink_clears_then_draws_and_ignores_events() {
        let mut sink = TableSink::new(CountingWriter::default());
        let snap = Snapshot {
            incremental: true,
            ..snapshot()
        };
        sink.event(&ConnEvent {
            kind: EventKind::Connect,
            timestamp: T0,
            conn: snap.conns[0].conn.clone(),
            metrics: None,
        })
        .expect("event");
        sink.flush().expect("flush");
        assert!(sink.get_ref().writes.is_empty(), "events print nothing");
        sink.snapshot(&snap).expect("snapshot");
        sink.flush().expect("flush");
        let w = sink.get_ref();
        assert_eq!(w.writes.len(), 1, "the frame is one write");
        let out = w.all();
        let body = out.strip_prefix(CLEAR_SCREEN).expect("starts by clearing");
        assert!(body.starts_with(
            "netlens conns  2026-11-23T13:31:47.250000Z  counters: deltas since the previous refresh\n"
        ));
        assert_eq!(body.lines().count(), 7);
        assert_eq!(body, render_frame(&snap).join("\n") + "\n");
    }

    #[test]
    fn kv_line_is_exact_and_splits_on_spaces() {
        let snap = snapshot();
        let line = conn_kv_line(&snap.conns[1], snap.timestamp);
        assert_eq!(
            line,
            "ts=1795440707.250000 family=4 local=192.0.2.1:22 remote=198.51.100.7:50000 pid=1234 \
             comm=sshd_session netns=4026531840 dir=in state=established bytes_sent=1000 \
             bytes_received=2000000 packets_sent=10 packets_received=1500 retransmits=2 rtt_us=345 \
             rtt_var_us=67 start=1795440523.000000 age_s=184.250"
        );
        let kv: HashMap<&str, &str> = line
            .split(' ')
            .map(|f| f.split_once('=').expect("key=value"))
            .collect();
        assert_eq!(kv.len(), 18, "every key once");
        assert_eq!(kv["comm"], "sshd_session");
        let v6 = conn_kv_line(&snap.conns[2], snap.timestamp);
        assert!(v6.contains(" family=6 local=[2001:db8::1]:44000 remote=[2001:db8::2]:443 "));
        assert!(v6.ends_with(" dir=out state=established bytes_sent=1536 bytes_received=2000000 packets_sent=10 packets_received=1500 retransmits=2 rtt_us=345 rtt_var_us=67 start=1795440695.000000 age_s=12.250"), "{v6}");
        let seeded = conn_kv_line(&snap.conns[0], snap.timestamp);
        assert!(
            seeded.contains(" pid=0 comm=- netns=4026531840 dir=unknown "),
            "{seeded}"
        );
        assert!(seeded.ends_with(" start=- age_s=-"), "{seeded}");
    }

    #[test]
    fn lines_sink_writes_rows_then_summary() {
        let mut sink = LinesSink::new(CountingWriter::default());
        let mut snap = snapshot();
        snap.losses = Losses {
            events_lost: 1,
            map_full: 2,
            seed_map_full: 3,
            seed_unreached: 5,
            runs_missed: 4,
        };
        sink.snapshot(&snap).expect("snapshot");
        assert!(sink.get_ref().writes.is_empty(), "buffered");
        sink.flush().expect("flush");
        let w = sink.get_ref();
        assert_eq!(w.writes.len(), 1);
        let out = w.all();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        for (line, row) in lines.iter().zip(&snap.conns) {
            assert_eq!(*line, conn_kv_line(row, snap.timestamp));
        }
        assert_eq!(
            lines[3],
            "summary ts=1795440707.250000 conns=3 active=1 passive=1 unknown=1 incremental=false \
             events_lost=1 map_full=2 seed_map_full=3 seed_unreached=5 runs_missed=4"
        );
    }
}
