//! Logging mode: one line per event and per connection per snapshot, in the
//! style NetTracer users know
//! (`event connect <saddr>:<sport> -> <daddr>:<dport> NS:<netns> PID:<pid>`),
//! extended with `key:value` fields (`container:` the owner's container's
//! short ID, when it has one).
//!
//! Every field is a single whitespace-free token, except the free-text `hint:`
//! that closes a `losses` line.

use std::fmt::Write as _;
use std::io::Write;

use super::{comm_token, fmt_time, losses_hint, IdentityCache, LineBuf, Sink, TimeFormatter};
use crate::model::{
    fmt_endpoint, ConnEvent, ConnInfo, ConnRow, EventKind, Losses, Metrics, Snapshot,
};

// Writing into a String cannot fail, so the `fmt::Result`s below are ignored.

fn push_conn(s: &mut String, c: &ConnInfo) {
    let t = &c.tuple;
    let _ = write!(
        s,
        "{} {} {} NS:{} PID:{} comm:{}",
        fmt_endpoint(t.local_addr, t.local_port),
        c.direction.arrow(),
        fmt_endpoint(t.remote_addr, t.remote_port),
        c.netns,
        c.pid,
        comm_token(&c.comm),
    );
    if let Some(container) = c.container() {
        s.push_str(" container:");
        s.push_str(container.short_id());
    }
}

fn push_metrics(s: &mut String, m: &Metrics) {
    // itoa rather than fmt: this runs for every connection at every tick.
    let mut n = itoa::Buffer::new();
    for (key, value) in [
        (" sent:", m.bytes_sent),
        (" recv:", m.bytes_received),
        (" pkts_sent:", m.packets_sent),
        (" pkts_recv:", m.packets_received),
        (" retrans:", m.retransmits),
        (" rtt_us:", m.rtt_us as u64),
        (" rttvar_us:", m.rtt_var_us as u64),
    ] {
        s.push_str(key);
        s.push_str(n.format(value));
    }
}

/// `<time> event <kind> <local> <arrow> <remote> NS:.. PID:.. comm:..`, plus
/// ` reason:..` on connect_failed, ` connect_us:..` (SYN to outcome) on
/// connect and connect_failed when netlens saw the SYN, and the final
/// counters on close.
pub fn event_line(ev: &ConnEvent) -> String {
    let mut s = String::with_capacity(192);
    push_event_line(&mut s, &mut TimeFormatter::default(), ev);
    s
}

/// What [`event_line`] returns, appended to `s`, with the time formatted by
/// `times` (which keeps the date part from one event to the next).
fn push_event_line(s: &mut String, times: &mut TimeFormatter, ev: &ConnEvent) {
    times.push_str(s, ev.timestamp);
    s.push_str(" event ");
    s.push_str(ev.kind.name());
    s.push(' ');
    push_conn(s, &ev.conn);
    match ev.kind {
        EventKind::ConnectFailed(reason) => {
            let _ = write!(s, " reason:{reason}");
        }
        EventKind::Close => {
            if let Some(m) = &ev.metrics {
                push_metrics(s, m);
            }
        }
        EventKind::Connect | EventKind::Accept => {}
    }
    if let Some(ns) = ev.connect_ns() {
        s.push_str(" connect_us:");
        s.push_str(itoa::Buffer::new().format(ns / 1000));
    }
}

/// `<time> metrics|delta <local> <arrow> <remote> NS:.. PID:.. comm:.. sent:..`
/// (`delta` when the counters are deltas since the previous snapshot).
/// `time` is the snapshot time as given by [`fmt_time`].
pub fn metrics_line(time: &str, row: &ConnRow, incremental: bool) -> String {
    let mut s = String::with_capacity(256);
    push_metrics_line(&mut s, time, &conn_text(&row.conn), row, incremental);
    s
}

fn conn_text(c: &ConnInfo) -> String {
    let mut s = String::with_capacity(128);
    push_conn(&mut s, c);
    s
}

fn push_metrics_line(s: &mut String, time: &str, conn: &str, row: &ConnRow, incremental: bool) {
    let word = if incremental { "delta" } else { "metrics" };
    s.push_str(time);
    s.push(' ');
    s.push_str(word);
    s.push(' ');
    s.push_str(conn);
    push_metrics(s, &row.metrics);
}

/// `<time> losses events_lost:N map_full:N seed_map_full:N seed_unreached:N
/// runs_missed:N hint:<what to do>`, or `None` when nothing was lost.
pub fn losses_line(time: &str, l: &Losses) -> Option<String> {
    let hint = losses_hint(l)?;
    Some(format!(
        "{time} losses events_lost:{} map_full:{} seed_map_full:{} seed_unreached:{} \
         runs_missed:{} hint:{hint}",
        l.events_lost, l.map_full, l.seed_map_full, l.seed_unreached, l.runs_missed
    ))
}

/// Logging-mode output to any writer (stdout, a [`super::logfile::RotatingFile`]).
pub struct TextSink<W: Write> {
    out: LineBuf<W>,
    identities: IdentityCache,
    line: String,
    times: TimeFormatter,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> TextSink<W> {
        TextSink {
            out: LineBuf::new(out),
            identities: IdentityCache::default(),
            line: String::with_capacity(256),
            times: TimeFormatter::default(),
        }
    }

    /// The writer; what is still buffered is not in it until [`Sink::flush`].
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
        // Into the reused line buffer: no allocation per event.
        self.line.clear();
        push_event_line(&mut self.line, &mut self.times, ev);
        self.out.line(&self.line)
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        let time = fmt_time(snap.timestamp);
        for row in &snap.conns {
            let conn = self
                .identities
                .get(&row.conn, |c| conn_text(c).into_bytes());
            // The cache only ever holds what conn_text produced.
            let conn = std::str::from_utf8(conn).unwrap_or_default();
            self.line.clear();
            push_metrics_line(&mut self.line, &time, conn, row, snap.incremental);
            self.out.line(&self.line)?;
        }
        self.identities.end_snapshot();
        if let Some(line) = losses_line(&time, &snap.losses) {
            self.out.line(&line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{conn, metrics, CountingWriter, T0};
    use super::*;
    use crate::model::{Direction, FailReason};

    const TIME: &str = "2026-11-23T13:31:47.123456Z";

    fn ev(kind: EventKind, conn: ConnInfo, metrics: Option<Metrics>) -> ConnEvent {
        ConnEvent {
            kind,
            timestamp: T0 + 123_456_000,
            conn,
            metrics,
        }
    }

    #[test]
    fn connect_line() {
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        assert_eq!(
            event_line(&ev(EventKind::Connect, c, None)),
            format!("{TIME} event connect 192.0.2.1:40000 -> 192.0.2.2:80 NS:4026531840 PID:1234 comm:curl connect_us:250")
        );
    }

    #[test]
    fn a_containers_connection_names_it() {
        use crate::model::{Cgroup, Container};
        let mut c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        c.cgroup = Some(std::sync::Arc::new(Cgroup {
            id: 5,
            path: Some("/docker/0123456789abcdef".into()),
            container: Some(Container {
                runtime: "docker",
                id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            }),
            pod_uid: None,
        }));
        assert_eq!(
            event_line(&ev(EventKind::Connect, c, None)),
            format!("{TIME} event connect 192.0.2.1:40000 -> 192.0.2.2:80 NS:4026531840 PID:1234 comm:curl container:0123456789ab connect_us:250")
        );
    }

    #[test]
    fn accept_line_v6_bracketed_and_comm_escaped() {
        let mut c = conn("2001:db8::1", 443, "2001:db8::2", 51000, Direction::Inbound);
        c.comm = "my server".into();
        c.pid = 77;
        assert_eq!(
            event_line(&ev(EventKind::Accept, c, None)),
            format!("{TIME} event accept [2001:db8::1]:443 <- [2001:db8::2]:51000 NS:4026531840 PID:77 comm:my_server")
        );
    }

    #[test]
    fn connect_failed_line_has_reason() {
        let c = conn("192.0.2.1", 40001, "192.0.2.3", 81, Direction::Outbound);
        let line = event_line(&ev(
            EventKind::ConnectFailed(FailReason::Refused),
            c.clone(),
            None,
        ));
        assert_eq!(
            line,
            format!("{TIME} event connect_failed 192.0.2.1:40001 -> 192.0.2.3:81 NS:4026531840 PID:1234 comm:curl reason:refused connect_us:250")
        );
        let line = event_line(&ev(
            EventKind::ConnectFailed(FailReason::Other(libc::EPROTO)),
            c,
            None,
        ));
        assert!(line.ends_with(" reason:errno_71 connect_us:250"), "{line}");
    }

    #[test]
    fn close_line_has_final_metrics() {
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Unknown);
        assert_eq!(
            event_line(&ev(EventKind::Close, c.clone(), Some(metrics()))),
            format!(
                "{TIME} event close 192.0.2.1:40000 -- 192.0.2.2:80 NS:4026531840 PID:1234 comm:curl \
                 sent:1000 recv:2000000 pkts_sent:10 pkts_recv:1500 retrans:2 rtt_us:345 rttvar_us:67"
            )
        );
        // Without counters the line just ends after the connection.
        assert!(event_line(&ev(EventKind::Close, c, None)).ends_with("comm:curl"));
    }

    #[test]
    fn metrics_and_delta_lines() {
        let row = ConnRow {
            conn: conn("10.0.0.1", 22, "10.0.0.2", 60000, Direction::Inbound),
            metrics: metrics(),
        };
        let tail = "NS:4026531840 PID:1234 comm:curl sent:1000 recv:2000000 pkts_sent:10 \
                    pkts_recv:1500 retrans:2 rtt_us:345 rttvar_us:67";
        assert_eq!(
            metrics_line(TIME, &row, false),
            format!("{TIME} metrics 10.0.0.1:22 <- 10.0.0.2:60000 {tail}")
        );
        assert_eq!(
            metrics_line(TIME, &row, true),
            format!("{TIME} delta 10.0.0.1:22 <- 10.0.0.2:60000 {tail}")
        );
    }

    #[test]
    fn losses_line_only_when_something_was_lost() {
        assert_eq!(losses_line(TIME, &Losses::default()), None);
        let l = Losses {
            events_lost: 5,
            map_full: 0,
            seed_map_full: 0,
            seed_unreached: 0,
            runs_missed: 0,
        };
        assert_eq!(
            losses_line(TIME, &l).as_deref(),
            Some(
                "2026-11-23T13:31:47.123456Z losses events_lost:5 map_full:0 seed_map_full:0 \
                 seed_unreached:0 runs_missed:0 hint:events were dropped because user space fell \
                 behind reading them"
            )
        );
        let l = Losses {
            events_lost: 0,
            map_full: 2,
            seed_map_full: 1,
            seed_unreached: 0,
            runs_missed: 0,
        };
        assert_eq!(
            losses_line(TIME, &l).as_deref(),
            Some(
                "2026-11-23T13:31:47.123456Z losses events_lost:0 map_full:2 seed_map_full:1 \
                 seed_unreached:0 runs_missed:0 hint:connection map was full, raise -m/--map-size"
            )
        );
        // Connections in namespaces netlens could not enter.
        let l = Losses {
            seed_unreached: 6,
            ..Losses::default()
        };
        assert_eq!(
            losses_line(TIME, &l).as_deref(),
            Some(
                "2026-11-23T13:31:47.123456Z losses events_lost:0 map_full:0 seed_map_full:0 \
                 seed_unreached:6 runs_missed:0 hint:existing connections in network namespaces \
                 netlens could not enter were not seeded and are not reported (entering one needs \
                 CAP_SYS_ADMIN)"
            )
        );
        // Skipped runs alone are a loss too.
        let l = Losses {
            runs_missed: 4,
            ..Losses::default()
        };
        assert_eq!(
            losses_line(TIME, &l).as_deref(),
            Some(
                "2026-11-23T13:31:47.123456Z losses events_lost:0 map_full:0 seed_map_full:0 \
                 seed_unreached:0 runs_missed:4 hint:the kernel skipped BPF program runs because the program was \
                 already running on that CPU, so events or counter updates may be missing"
            )
        );
    }

    #[test]
    fn sink_buffers_until_flush_and_writes_once() {
        let mut sink = TextSink::new(CountingWriter::default());
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        sink.event(&ev(EventKind::Connect, c.clone(), None))
            .expect("event");
        let snap = Snapshot {
            timestamp: T0 + 123_456_000,
            conns: vec![
                ConnRow {
                    conn: c.clone(),
                    metrics: metrics(),
                },
                ConnRow {
                    conn: conn("192.0.2.1", 22, "192.0.2.7", 50000, Direction::Inbound),
                    metrics: Metrics::default(),
                },
            ],
            incremental: false,
            losses: Losses {
                events_lost: 0,
                map_full: 1,
                seed_map_full: 0,
                seed_unreached: 0,
                runs_missed: 0,
            },
        };
        sink.snapshot(&snap).expect("snapshot");
        assert!(
            sink.get_ref().writes.is_empty(),
            "nothing written before flush"
        );
        sink.flush().expect("flush");
        let w = sink.get_ref();
        assert_eq!(w.writes.len(), 1, "one write per batch");
        assert_eq!(w.flushes, 1);
        let out = w.all();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], event_line(&ev(EventKind::Connect, c, None)));
        assert_eq!(
            lines[1],
            format!("{TIME} metrics 192.0.2.1:40000 -> 192.0.2.2:80 NS:4026531840 PID:1234 comm:curl sent:1000 recv:2000000 pkts_sent:10 pkts_recv:1500 retrans:2 rtt_us:345 rttvar_us:67")
        );
        assert_eq!(
            lines[2],
            format!("{TIME} metrics 192.0.2.1:22 <- 192.0.2.7:50000 NS:4026531840 PID:1234 comm:curl sent:0 recv:0 pkts_sent:0 pkts_recv:0 retrans:0 rtt_us:0 rttvar_us:0")
        );
        assert_eq!(
            lines[3],
            format!("{TIME} losses events_lost:0 map_full:1 seed_map_full:0 seed_unreached:0 runs_missed:0 hint:connection map was full, raise -m/--map-size")
        );
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn snapshot_without_losses_prints_no_losses_line() {
        let mut out = Vec::new();
        {
            let mut sink = TextSink::new(&mut out);
            sink.snapshot(&Snapshot {
                timestamp: T0,
                ..Snapshot::default()
            })
            .expect("snapshot");
            sink.flush().expect("flush");
        }
        assert!(out.is_empty());
    }
}
