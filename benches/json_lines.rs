//! What a JSON line costs netlens's user space: `conns --json` event lines
//! (connect, accept, close with counters, IPv4 and IPv6) and snapshot lines
//! of 10,000 connections, formatted into memory by the real `JsonSink`.
//! Reports nanoseconds per line, the median of 9 rounds. No root needed.
//!
//!   cargo bench --bench json_lines

use std::time::Instant;

use netlens::model::{
    ConnEvent, ConnInfo, ConnRow, Direction, EventKind, Losses, Metrics, Sink, Snapshot, Tuple,
};
use netlens::output::json::JsonSink;

const EVENTS: usize = 200_000;
const SNAPSHOT_ROWS: usize = 10_000;
const SNAPSHOTS: usize = 20;
const ROUNDS: usize = 9;
/// 2026-11-23T13:31:47Z
const T0: u64 = 1_795_440_707_000_000_000;

fn conn(i: usize) -> ConnInfo {
    let v6 = i % 4 == 3;
    let (local_addr, remote_addr) = if v6 {
        (
            format!("2001:db8::{:x}", i % 65_000 + 1)
                .parse()
                .expect("v6"),
            "2001:db8:1::2".parse().expect("v6"),
        )
    } else {
        (
            format!("192.0.2.{}", i % 250 + 1).parse().expect("v4"),
            "198.51.100.7".parse().expect("v4"),
        )
    };
    ConnInfo {
        id: i as u64,
        tuple: Tuple {
            local_addr,
            local_port: (40_000 + i % 20_000) as u16,
            remote_addr,
            remote_port: 443,
        },
        pid: 1000 + (i % 50) as u32,
        comm: "nginx".into(),
        netns: 4_026_531_840,
        direction: if i % 2 == 0 {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        start: Some(T0 + i as u64),
        connect_ns: (i % 2 == 0).then_some(100_000 + i as u64),
        cgroup: None,
    }
}

fn metrics(i: usize) -> Metrics {
    Metrics {
        bytes_sent: 1000 + i as u64,
        bytes_received: 2_000_000 + i as u64,
        packets_sent: 10,
        packets_received: 1500,
        retransmits: (i % 3) as u64,
        rtt_us: 345,
        rtt_var_us: 67,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let events: Vec<ConnEvent> = (0..EVENTS)
        .map(|i| {
            let kind = [EventKind::Connect, EventKind::Accept, EventKind::Close][i % 3];
            ConnEvent {
                kind,
                timestamp: T0 + (i as u64) * 5_000,
                conn: conn(i),
                metrics: (kind == EventKind::Close).then(|| metrics(i)),
            }
        })
        .collect();
    let rows: Vec<ConnRow> = (0..SNAPSHOT_ROWS)
        .map(|i| ConnRow {
            conn: conn(i),
            metrics: metrics(i),
        })
        .collect();

    let mut event_ns = Vec::new();
    let mut row_ns = Vec::new();
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let mut sink = JsonSink::new(Vec::with_capacity(64 << 20));
        let start = Instant::now();
        for ev in &events {
            sink.event(ev).expect("event");
        }
        sink.flush().expect("flush");
        event_ns.push(start.elapsed().as_nanos() as f64 / EVENTS as f64);
        bytes = sink.get_ref().len();

        let mut sink = JsonSink::new(std::io::sink());
        let start = Instant::now();
        for s in 0..SNAPSHOTS {
            let snap = Snapshot {
                timestamp: T0 + s as u64 * 1_000_000_000,
                conns: rows.clone(),
                incremental: false,
                losses: Losses::default(),
            };
            sink.snapshot(&snap).expect("snapshot");
            sink.flush().expect("flush");
        }
        // The clone of the rows is part of the loop; it is measured apart below.
        row_ns.push(start.elapsed().as_nanos() as f64 / (SNAPSHOTS * SNAPSHOT_ROWS) as f64);
    }
    let start = Instant::now();
    for _ in 0..SNAPSHOTS {
        std::hint::black_box(rows.clone());
    }
    let clone_ns = start.elapsed().as_nanos() as f64 / (SNAPSHOTS * SNAPSHOT_ROWS) as f64;
    let event = median(event_ns);
    let row = median(row_ns) - clone_ns;
    println!(
        "json_lines: event line {event:.0} ns ({} bytes/line), snapshot row {row:.0} ns \
         (10,000 rows, identities cached), median of {ROUNDS} rounds",
        bytes / EVENTS
    );
    let out = serde_json::json!({
        "event_line_ns": event,
        "snapshot_row_ns": row,
        "event_line_bytes": bytes / EVENTS,
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("bench-json-lines.json");
    if let Err(e) = std::fs::write(
        &path,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    ) {
        eprintln!("writing {}: {e}", path.display());
    }
}
