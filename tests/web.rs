//! `netlens cost --web`: the page and the JSON API of a running netlens, and
//! a taken port.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

fn history(addr: std::net::SocketAddr) -> Vec<Value> {
    let resp = http_get(addr, "/api/history").expect("GET /api/history");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.body))
}

/// Waits up to 10 s for at least `n` periods in the history.
fn history_of_at_least(addr: std::net::SocketAddr, n: usize) -> Vec<Value> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let h = history(addr);
        if h.len() >= n || Instant::now() >= end {
            return h;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn web_ui_serves_the_page_and_a_growing_history() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start_cost(&["-f", "0", "--web", "127.0.0.1:0", "--user-period", "250"]);
    let addr = nl.web_addr();

    let page = http_get(addr, "/").expect("GET /");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<title>netlens cost</title>"));
    assert!(page.body.contains("api/history"));

    let first = history_of_at_least(addr, 2);
    assert!(
        first.len() >= 2,
        "two periods of 250 ms within 10 s: {first:?}"
    );
    for r in &first {
        let cpus = r["cpus"].as_array().expect("cpus").len();
        assert!(cpus > 0);
        for name in ["tx_syscall", "rx_syscall", "net_rx_softirq", "other_irq"] {
            let e = &r["entries"][name];
            assert_eq!(
                e["period_ns"].as_array().map(Vec::len),
                Some(cpus),
                "{name}"
            );
            assert_eq!(e["total_ns"].as_array().map(Vec::len), Some(cpus), "{name}");
        }
        let user = r["proc_stat_ns"]["user"]
            .as_array()
            .expect("/proc/stat user");
        assert_eq!(user.len(), cpus);
        assert_eq!(r["sampling"]["frequency"], 0);
    }
    let later = history_of_at_least(addr, first.len() + 1);
    assert!(later.len() > first.len(), "the history grows");
    let ts = |h: &[Value]| h.last().and_then(|r| r["timestamp_ns"].as_u64()).unwrap();
    assert!(ts(&later) > ts(&first));

    let report = http_get(addr, "/api/report").expect("GET /api/report");
    assert_eq!(report.status, 200);
    let v: Value = serde_json::from_str(&report.body).expect("JSON");
    assert!(v["entries"]["net_rx_softirq"].is_object(), "{v}");

    let since = http_get(addr, &format!("/api/history?since={}", ts(&later))).expect("since");
    let newer: Vec<Value> = serde_json::from_str(&since.body).expect("JSON");
    assert!(newer.len() <= 1, "only what came after: {}", newer.len());

    assert_eq!(
        http_get(addr, "/metrics").expect("GET").status,
        404,
        "no -P"
    );
    assert_eq!(http_get(addr, "/nothing").expect("GET").status, 404);
    let out = nl.stop_any_output();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// -P and --web on the same address: one server answers both.
#[test]
fn web_ui_and_metrics_share_an_address() {
    if !require_root() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    drop(taken);
    let a = addr.to_string();
    let nl = Netlens::start_cost(&["-f", "0", "-P", &a, "--web", &a, "--user-period", "250"]);
    assert_eq!(nl.web_addr(), addr);
    assert_eq!(nl.prometheus_addr(), addr);
    history_of_at_least(addr, 1);
    let m = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("netlens_cost_cpu_seconds_total"),
        "{}",
        m.body
    );
    assert_eq!(http_get(addr, "/").expect("GET /").status, 200);
    nl.stop_any_output();
}

/// A taken port: a clear message naming the address and the option, exit
/// status 1, before anything is loaded.
#[test]
fn taken_web_port_is_a_runtime_error() {
    if !require_root() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let out = run(env!("CARGO_BIN_EXE_netlens"), &["cost", "--web", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "netlens: error: cannot serve the web UI on {addr}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(stderr.contains("--web ADDR:PORT"), "{stderr}");
    assert!(!stderr.contains("netlens: ready"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
