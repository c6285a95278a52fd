//! Newline-delimited JSON: one object per event, one per connection per
//! snapshot, and one `losses` object per snapshot when anything was lost.
//!
//! Fields common to connection objects: `type`, `timestamp`, `id`, `pid`,
//! `comm`, `netns`, `family`, `direction`, `local_addr`, `local_port`,
//! `remote_addr`, `remote_port`. `metrics` and `close` add the counters
//! (`bytes_sent`, `bytes_received`, `packets_sent`, `packets_received`,
//! `retransmits`, `rtt_us`, `rtt_var_us`); `metrics` adds `incremental` and
//! `age_s` (`null` for a connection that existed before netlens started:
//! its age is unknown); `connect_failed` adds `reason`; `connect` and
//! `connect_failed` add `connect_us`, from the SYN to the outcome, when
//! netlens saw the SYN. `losses` objects have `events_lost`,
//! `map_full`, `seed_map_full`, `seed_unreached` and `runs_missed`.

use std::io::Write;
use std::net::IpAddr;

use anyhow::Context;
use serde::Serialize;

use super::{fmt_time, IdentityCache, LineBuf, Sink, TimeFormatter};
use crate::model::{ConnEvent, ConnInfo, EventKind, Losses, Metrics, Snapshot, UnixNanos};

/// `,"bytes_sent":N,...,"rtt_var_us":N`: the counters of `metrics` and
/// `close` objects, by hand for the same reason as [`identity_bytes`].
fn push_counters(b: &mut Vec<u8>, m: &Metrics) {
    let mut n = itoa::Buffer::new();
    for (key, value) in [
        (&b",\"bytes_sent\":"[..], m.bytes_sent),
        (b",\"bytes_received\":", m.bytes_received),
        (b",\"packets_sent\":", m.packets_sent),
        (b",\"packets_received\":", m.packets_received),
        (b",\"retransmits\":", m.retransmits),
        (b",\"rtt_us\":", m.rtt_us as u64),
        (b",\"rtt_var_us\":", m.rtt_var_us as u64),
    ] {
        b.extend_from_slice(key);
        b.extend_from_slice(n.format(value).as_bytes());
    }
}

#[derive(Serialize)]
struct LossesRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    events_lost: u64,
    map_full: u64,
    seed_map_full: u64,
    seed_unreached: u64,
    runs_missed: u64,
}

/// The fixed fields of a connection object (`"id":..` to `"remote_port":..`),
/// as [`push_identity`] writes them, in a buffer of their own: cached per
/// connection for `metrics` lines.
fn identity_bytes(c: &ConnInfo) -> Vec<u8> {
    let mut b = Vec::with_capacity(224);
    push_identity(&mut b, c);
    b
}

/// A string (a process name, a cgroup path) as a JSON string. They are
/// almost always plain printable ASCII, which needs no escaping; anything
/// else goes through serde_json.
fn push_str(b: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else {
        // Serializing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, s);
    }
}

/// A string, or `null`.
fn push_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(b, s),
        None => b.extend_from_slice(b"null"),
    }
}

/// The fixed fields of a connection object (`"id":..` to `"remote_port":..`),
/// written by hand: they are the bulk of every line, and only `comm` can
/// need escaping.
fn push_identity(b: &mut Vec<u8>, c: &ConnInfo) {
    let t = &c.tuple;
    let mut n = itoa::Buffer::new();
    b.extend_from_slice(b"\"id\":");
    b.extend_from_slice(n.format(c.id).as_bytes());
    b.extend_from_slice(b",\"pid\":");
    b.extend_from_slice(n.format(c.pid).as_bytes());
    b.extend_from_slice(b",\"comm\":");
    push_str(b, &c.comm);
    b.extend_from_slice(b",\"netns\":");
    b.extend_from_slice(n.format(c.netns).as_bytes());
    b.extend_from_slice(b",\"family\":");
    b.extend_from_slice(n.format(t.family()).as_bytes());
    b.extend_from_slice(b",\"direction\":\"");
    b.extend_from_slice(c.direction.as_str().as_bytes());
    b.extend_from_slice(b"\",\"local_addr\":\"");
    push_ip(b, t.local_addr);
    b.extend_from_slice(b"\",\"local_port\":");
    b.extend_from_slice(n.format(t.local_port).as_bytes());
    b.extend_from_slice(b",\"remote_addr\":\"");
    push_ip(b, t.remote_addr);
    b.extend_from_slice(b"\",\"remote_port\":");
    b.extend_from_slice(n.format(t.remote_port).as_bytes());
    if let Some(cg) = &c.cgroup {
        b.extend_from_slice(b",\"cgroup_id\":");
        b.extend_from_slice(n.format(cg.id).as_bytes());
        b.extend_from_slice(b",\"cgroup\":");
        push_opt_str(b, cg.path.as_deref());
        b.extend_from_slice(b",\"container_id\":");
        push_opt_str(b, c.container().map(|k| k.kube_id()).as_deref());
        b.extend_from_slice(b",\"pod_uid\":");
        push_opt_str(b, cg.pod_uid.as_deref());
    }
}

/// An address in its usual text form (never anything JSON must escape).
fn push_ip(b: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                b.extend_from_slice(n.format(*octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(b, "{v6}");
        }
    }
}

/// `{"type":"<kind>","timestamp":"<time>",`
fn push_head(buf: &mut Vec<u8>, kind: &str, time: &str) -> anyhow::Result<()> {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"timestamp\":");
    serde_json::to_writer(&mut *buf, time).context("serializing JSON record")?;
    buf.push(b',');
    Ok(())
}

/// Seconds from `start` to `now`, to the microsecond; 0 if `start` is later.
fn age_seconds(start: UnixNanos, now: UnixNanos) -> f64 {
    // Whole microseconds divided once: the float is the nearest one to the
    // decimal value, so it prints without noise digits.
    (now.saturating_sub(start) / 1_000) as f64 / 1e6
}

/// NDJSON output; see the module documentation for the schema.
pub struct JsonSink<W: Write> {
    out: LineBuf<W>,
    identities: IdentityCache,
    /// Event timestamps, formatted straight into the output buffer.
    times: TimeFormatter,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> JsonSink<W> {
        JsonSink {
            out: LineBuf::new(out),
            identities: IdentityCache::default(),
            times: TimeFormatter::default(),
        }
    }

    /// The writer; what is still buffered is not in it until [`Sink::flush`].
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    fn record(&mut self, rec: &impl Serialize) -> anyhow::Result<()> {
        serde_json::to_writer(self.out.buf_mut(), rec).context("serializing JSON record")?;
        self.out.end_line()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
        // What push_head() writes, with the time formatted in place (it
        // never needs escaping), and the identity written in place: an
        // event line is written once, caching it would gain nothing.
        let buf = self.out.buf_mut();
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(ev.kind.name().as_bytes());
        buf.extend_from_slice(b"\",\"timestamp\":\"");
        self.times.push(buf, ev.timestamp);
        buf.extend_from_slice(b"\",");
        push_identity(buf, &ev.conn);
        match (ev.kind, &ev.metrics) {
            (EventKind::ConnectFailed(reason), _) => {
                // A word or errno_N: nothing to escape.
                let _ = write!(buf, ",\"reason\":\"{reason}\"");
            }
            (EventKind::Close, Some(m)) => push_counters(buf, m),
            _ => {}
        }
        if let Some(ns) = ev.connect_ns() {
            buf.extend_from_slice(b",\"connect_us\":");
            buf.extend_from_slice(itoa::Buffer::new().format(ns / 1000).as_bytes());
        }
        buf.push(b'}');
        self.out.end_line()
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        let time = fmt_time(snap.timestamp);
        let mut head = Vec::with_capacity(64);
        push_head(&mut head, "metrics", &time)?;
        for row in &snap.conns {
            let identity = self.identities.get(&row.conn, identity_bytes);
            let buf = self.out.buf_mut();
            buf.extend_from_slice(&head);
            buf.extend_from_slice(identity);
            push_counters(buf, &row.metrics);
            buf.extend_from_slice(if snap.incremental {
                b",\"incremental\":true,\"age_s\":"
            } else {
                b",\"incremental\":false,\"age_s\":"
            });
            match row.conn.start {
                Some(start) => {
                    let age = age_seconds(start, snap.timestamp);
                    serde_json::to_writer(&mut *buf, &age).context("serializing JSON record")?;
                }
                None => buf.extend_from_slice(b"null"),
            }
            buf.push(b'}');
            self.out.end_line()?;
        }
        self.identities.end_snapshot();
        let l: &Losses = &snap.losses;
        if l.any() {
            self.record(&LossesRecord {
                kind: "losses",
                timestamp: &time,
                events_lost: l.events_lost,
                map_full: l.map_full,
                seed_map_full: l.seed_map_full,
                seed_unreached: l.seed_unreached,
                runs_missed: l.runs_missed,
            })?;
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
    use crate::model::{Cgroup, ConnRow, Container, Direction, FailReason};
    use serde_json::{json, Map, Value};
    use std::sync::Arc;

    const ID: &str = "3f2a6b1c9d8e7f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";
    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    const TIME: &str = "2026-11-23T13:31:47.123456Z";

    fn parse_lines(w: &CountingWriter) -> Vec<Map<String, Value>> {
        w.all()
            .lines()
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => m,
                other => panic!("not a JSON object: {l}: {other:?}"),
            })
            .collect()
    }

    fn keys(m: &Map<String, Value>) -> Vec<&str> {
        let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_unstable();
        v
    }

    const COMMON: [&str; 12] = [
        "type",
        "timestamp",
        "id",
        "pid",
        "comm",
        "netns",
        "family",
        "direction",
        "local_addr",
        "local_port",
        "remote_addr",
        "remote_port",
    ];
    const COUNTERS: [&str; 7] = [
        "bytes_sent",
        "bytes_received",
        "packets_sent",
        "packets_received",
        "retransmits",
        "rtt_us",
        "rtt_var_us",
    ];

    fn event(kind: EventKind, c: ConnInfo, m: Option<Metrics>) -> ConnEvent {
        ConnEvent {
            kind,
            timestamp: T0 + 123_456_789,
            conn: c,
            metrics: m,
        }
    }

    /// The schema of event and `metrics` lines as serde would write them:
    /// the hand-written fast path must produce exactly these bytes.
    #[derive(Serialize)]
    struct Reference<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        timestamp: String,
        id: u64,
        pid: u32,
        comm: &'a str,
        netns: u32,
        family: u8,
        direction: &'a str,
        local_addr: String,
        local_port: u16,
        remote_addr: String,
        remote_port: u16,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        cgroup: Option<ReferenceCgroup>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        counters: Option<ReferenceCounters>,
        #[serde(skip_serializing_if = "Option::is_none")]
        connect_us: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        incremental: Option<bool>,
        /// `Some(None)` is written as `null`.
        #[serde(skip_serializing_if = "Option::is_none")]
        age_s: Option<Option<f64>>,
    }

    #[derive(Serialize)]
    struct ReferenceCgroup {
        cgroup_id: u64,
        cgroup: Option<String>,
        container_id: Option<String>,
        pod_uid: Option<String>,
    }

    #[derive(Serialize)]
    struct ReferenceCounters {
        bytes_sent: u64,
        bytes_received: u64,
        packets_sent: u64,
        packets_received: u64,
        retransmits: u64,
        rtt_us: u64,
        rtt_var_us: u64,
    }

    fn reference<'a>(kind: &'a str, time: UnixNanos, c: &'a ConnInfo) -> Reference<'a> {
        Reference {
            kind,
            timestamp: fmt_time(time),
            id: c.id,
            pid: c.pid,
            comm: &c.comm,
            netns: c.netns,
            family: c.tuple.family(),
            direction: c.direction.as_str(),
            local_addr: c.tuple.local_addr.to_string(),
            local_port: c.tuple.local_port,
            remote_addr: c.tuple.remote_addr.to_string(),
            remote_port: c.tuple.remote_port,
            cgroup: c.cgroup.as_ref().map(|cg| ReferenceCgroup {
                cgroup_id: cg.id,
                cgroup: cg.path.clone(),
                container_id: cg.container.as_ref().map(|c| c.kube_id()),
                pod_uid: cg.pod_uid.clone(),
            }),
            reason: None,
            counters: None,
            connect_us: None,
            incremental: None,
            age_s: None,
        }
    }

    fn reference_counters(m: &Metrics) -> ReferenceCounters {
        ReferenceCounters {
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            retransmits: m.retransmits,
            rtt_us: m.rtt_us as u64,
            rtt_var_us: m.rtt_var_us as u64,
        }
    }

    #[test]
    fn hand_written_lines_are_byte_for_byte_what_serde_writes() {
        let mut conns = vec![
            conn("192.0.2.1", 40000, "198.51.100.2", 80, Direction::Outbound),
            conn(
                "2001:db8::1",
                443,
                "2001:db8:1::ff",
                51000,
                Direction::Inbound,
            ),
            conn("::ffff:192.0.2.5", 1, "0.0.0.0", 65535, Direction::Unknown),
        ];
        conns[0].comm = "quote\"back\\slash\ttab".into();
        conns[1].comm = "größe".into();
        conns[2].pid = 0;
        conns[2].comm = "".into();
        conns[0].cgroup = Some(Arc::new(Cgroup {
            id: 9_001,
            path: Some(format!("/kubepods/pod{UID}/\"odd\" größe/{ID}")),
            container: Some(Container {
                runtime: "containerd",
                id: ID.into(),
            }),
            pod_uid: Some(UID.into()),
        }));
        conns[1].cgroup = Some(Arc::new(Cgroup {
            id: 77,
            path: None,
            container: None,
            pod_uid: None,
        }));
        let mut m = metrics();
        m.bytes_sent = u64::MAX;
        let mut expected = Vec::new();
        let mut sink = JsonSink::new(CountingWriter::default());
        for c in &conns {
            for (kind, metrics, reason) in [
                (EventKind::Connect, None, None),
                (EventKind::Accept, None, None),
                (EventKind::Close, Some(m), None),
                (
                    EventKind::ConnectFailed(FailReason::Unreachable),
                    None,
                    Some("unreachable"),
                ),
            ] {
                let ev = event(kind, c.clone(), metrics);
                sink.event(&ev).expect("event");
                let mut r = reference(kind.name(), ev.timestamp, c);
                r.counters = metrics.as_ref().map(reference_counters);
                r.reason = reason.map(str::to_string);
                if matches!(kind, EventKind::Connect | EventKind::ConnectFailed(_)) {
                    r.connect_us = c.connect_ns.map(|ns| ns / 1000);
                }
                expected.push(serde_json::to_string(&r).expect("reference"));
            }
        }
        let mut rows: Vec<ConnRow> = conns
            .iter()
            .map(|c| ConnRow {
                conn: c.clone(),
                metrics: m,
            })
            .collect();
        rows[0].conn.start = Some(T0 - 3_723_500_001_000);
        rows[1].conn.start = Some(T0 + 1);
        rows[2].conn.start = None;
        for incremental in [false, true] {
            let snap = Snapshot {
                timestamp: T0,
                conns: rows.clone(),
                incremental,
                losses: Losses::default(),
            };
            sink.snapshot(&snap).expect("snapshot");
            for row in &rows {
                let mut r = reference("metrics", T0, &row.conn);
                r.counters = Some(reference_counters(&row.metrics));
                r.incremental = Some(incremental);
                r.age_s = Some(row.conn.start.map(|s| age_seconds(s, T0)));
                expected.push(serde_json::to_string(&r).expect("reference"));
            }
        }
        sink.flush().expect("flush");
        let written = sink.get_ref().all();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), expected.len());
        for (line, want) in lines.iter().zip(&expected) {
            assert_eq!(line, want);
        }
    }

    #[test]
    fn comm_is_written_as_serde_json_writes_it() {
        for name in [
            "curl",
            "",
            "a\"b",
            "back\\slash",
            "tab\tname",
            "del\u{7f}",
            "größe",
        ] {
            let mut b = Vec::new();
            push_str(&mut b, name);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                serde_json::to_string(name).unwrap()
            );
        }
    }

    #[test]
    fn connect_event_object() {
        let mut sink = JsonSink::new(CountingWriter::default());
        let c = conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound);
        sink.event(&event(EventKind::Connect, c, None))
            .expect("event");
        sink.flush().expect("flush");
        let objs = parse_lines(sink.get_ref());
        assert_eq!(objs.len(), 1);
        assert_eq!(
            Value::Object(objs[0].clone()),
            json!({
                "type": "connect",
                "timestamp": TIME,
                "id": (40000u64 << 16) | 80,
                "pid": 1234,
                "comm": "curl",
                "netns": 4_026_531_840u32,
                "family": 4,
                "direction": "out",
                "local_addr": "192.0.2.1",
                "local_port": 40000,
                "remote_addr": "192.0.2.2",
                "remote_port": 80,
                "connect_us": 250,
            })
        );
        // Field order is stable and starts with the type.
        assert!(sink
            .get_ref()
            .all()
            .starts_with(r#"{"type":"connect","timestamp":"#));
    }

    #[test]
    fn accept_close_and_failed_events() {
        let mut sink = JsonSink::new(CountingWriter::default());
        let mut c6 = conn("2001:db8::1", 443, "2001:db8::2", 51000, Direction::Inbound);
        c6.id = u64::MAX;
        c6.comm = "my server".into();
        sink.event(&event(EventKind::Accept, c6.clone(), None))
            .expect("event");
        sink.event(&event(EventKind::Close, c6, Some(metrics())))
            .expect("event");
        let c4 = conn("192.0.2.1", 40001, "192.0.2.3", 81, Direction::Outbound);
        sink.event(&event(
            EventKind::ConnectFailed(FailReason::TimedOut),
            c4,
            None,
        ))
        .expect("event");
        sink.flush().expect("flush");
        assert_eq!(sink.get_ref().writes.len(), 1, "one write per batch");
        let objs = parse_lines(sink.get_ref());
        assert_eq!(objs.len(), 3);

        let accept = &objs[0];
        assert_eq!(keys(accept), sorted(COMMON.to_vec()));
        assert_eq!(accept["type"], "accept");
        assert_eq!(accept["family"], 6);
        assert_eq!(accept["direction"], "in");
        assert_eq!(accept["local_addr"], "2001:db8::1");
        assert_eq!(accept["remote_addr"], "2001:db8::2");
        assert_eq!(accept["remote_port"], 51000);
        assert_eq!(accept["comm"], "my server", "JSON keeps the name as is");
        assert_eq!(accept["id"].as_u64(), Some(u64::MAX), "ids are exact");

        let close = &objs[1];
        let mut want: Vec<&str> = COMMON.to_vec();
        want.extend(COUNTERS);
        assert_eq!(keys(close), sorted(want));
        assert_eq!(close["type"], "close");
        assert_eq!(close["bytes_sent"], 1000);
        assert_eq!(close["bytes_received"], 2_000_000);
        assert_eq!(close["packets_sent"], 10);
        assert_eq!(close["packets_received"], 1500);
        assert_eq!(close["retransmits"], 2);
        assert_eq!(close["rtt_us"], 345);
        assert_eq!(close["rtt_var_us"], 67);

        let failed = &objs[2];
        let mut want: Vec<&str> = COMMON.to_vec();
        want.extend(["reason", "connect_us"]);
        assert_eq!(keys(failed), sorted(want));
        assert_eq!(failed["type"], "connect_failed");
        assert_eq!(failed["reason"], "timed_out");
        assert_eq!(failed["connect_us"], 250, "SYN to failure, in µs");
        assert_eq!(failed["family"], 4);
        assert_eq!(failed["timestamp"], TIME);
    }

    #[test]
    fn identity_fields_written_by_hand_are_valid_json() {
        let mut c = conn("2001:db8::1", 443, "192.0.2.200", 51000, Direction::Inbound);
        c.comm = "my \"srv\"\\1".into();
        let mut line = b"{".to_vec();
        line.extend_from_slice(&identity_bytes(&c));
        line.push(b'}');
        let v: Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(v["comm"], "my \"srv\"\\1");
        assert_eq!(v["local_addr"], "2001:db8::1");
        assert_eq!(v["remote_addr"], "192.0.2.200");
        assert_eq!(v["local_port"], 443);
        assert_eq!(v["remote_port"], 51000);
        assert_eq!(v["direction"], "in");
        assert_eq!(v["id"], c.id);
        assert_eq!(v["pid"], c.pid);
        assert_eq!(v["netns"], c.netns);
    }

    #[test]
    fn metrics_identity_is_rebuilt_when_the_owner_changes() {
        let mut sink = JsonSink::new(CountingWriter::default());
        let mut c = conn("192.0.2.1", 80, "192.0.2.9", 50000, Direction::Inbound);
        c.pid = 0;
        for pid in [0u32, 4321] {
            c.pid = pid;
            let snap = Snapshot {
                timestamp: T0,
                conns: vec![ConnRow {
                    conn: c.clone(),
                    metrics: metrics(),
                }],
                incremental: false,
                losses: Losses::default(),
            };
            sink.snapshot(&snap).expect("snapshot");
        }
        sink.flush().expect("flush");
        let objs = parse_lines(sink.get_ref());
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["pid"], 0);
        assert_eq!(objs[1]["pid"], 4321);
        assert_eq!(objs[1]["remote_port"], 50000);
        assert_eq!(objs[1]["bytes_received"], metrics().bytes_received);
    }

    #[test]
    fn snapshot_objects_and_losses() {
        let mut sink = JsonSink::new(CountingWriter::default());
        let mut old = conn("192.0.2.1", 22, "192.0.2.7", 50000, Direction::Unknown);
        old.start = Some(T0 - 3_723_500_000_000); // 1h02m03.5s before T0
        let mut seeded = conn("192.0.2.1", 80, "192.0.2.9", 61000, Direction::Inbound);
        seeded.start = None;
        let snap = Snapshot {
            timestamp: T0 + 250_000_000,
            conns: vec![
                ConnRow {
                    conn: old,
                    metrics: metrics(),
                },
                ConnRow {
                    conn: conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound),
                    metrics: Metrics::default(),
                },
                ConnRow {
                    conn: seeded,
                    metrics: metrics(),
                },
            ],
            incremental: true,
            losses: Losses {
                events_lost: 3,
                map_full: 2,
                seed_map_full: 1,
                seed_unreached: 5,
                runs_missed: 4,
            },
        };
        sink.snapshot(&snap).expect("snapshot");
        assert!(sink.get_ref().writes.is_empty(), "buffered until flush");
        sink.flush().expect("flush");
        assert_eq!(sink.get_ref().writes.len(), 1);
        let objs = parse_lines(sink.get_ref());
        assert_eq!(objs.len(), 4);

        let mut want: Vec<&str> = COMMON.to_vec();
        want.extend(COUNTERS);
        want.extend(["incremental", "age_s"]);
        let want = sorted(want);
        for m in &objs[..3] {
            assert_eq!(keys(m), want);
            assert_eq!(m["type"], "metrics");
            assert_eq!(m["timestamp"], "2026-11-23T13:31:47.250000Z");
            assert_eq!(m["incremental"], true);
        }
        assert_eq!(objs[0]["direction"], "unknown");
        assert_eq!(objs[0]["age_s"].as_f64(), Some(3723.75));
        assert_eq!(objs[0]["bytes_received"], 2_000_000);
        assert_eq!(objs[0]["local_port"], 22);
        assert_eq!(objs[1]["age_s"].as_f64(), Some(0.25));
        assert_eq!(objs[1]["bytes_sent"], 0);
        assert_eq!(objs[1]["rtt_us"], 0);
        // Seeded: the age is unknown, and says so.
        assert_eq!(objs[2]["age_s"], Value::Null);
        assert_eq!(objs[2]["direction"], "in");

        assert_eq!(
            Value::Object(objs[3].clone()),
            json!({
                "type": "losses",
                "timestamp": "2026-11-23T13:31:47.250000Z",
                "events_lost": 3,
                "map_full": 2,
                "seed_map_full": 1,
                "seed_unreached": 5,
                "runs_missed": 4,
            })
        );
    }

    #[test]
    fn no_losses_object_when_nothing_was_lost() {
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out);
            sink.snapshot(&Snapshot {
                timestamp: T0,
                conns: vec![ConnRow {
                    conn: conn("192.0.2.1", 1, "192.0.2.2", 2, Direction::Outbound),
                    metrics: metrics(),
                }],
                incremental: false,
                losses: Losses::default(),
            })
            .expect("snapshot");
            sink.flush().expect("flush");
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(r#""incremental":false"#), "{text}");
        assert!(!text.contains("losses"), "{text}");
    }

    #[test]
    fn age_is_microsecond_exact_and_never_negative() {
        assert_eq!(age_seconds(0, 12_345_678_999), 12.345678);
        assert_eq!(age_seconds(10, 5), 0.0);
        assert_eq!(
            serde_json::to_string(&age_seconds(0, 1_100_000)).expect("json"),
            "0.0011"
        );
    }
}
