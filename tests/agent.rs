//! `netlens agent`: both roles in one process, against what the test's own
//! peers sent: one `/metrics` with the connection and the cost families,
//! `/healthz`, the web UI's roles, and the connection events on stdout.
//!
//! Several tests run at once and every netlens sees the whole host, so the
//! test reads only the series of its own server port and processes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SEND: u64 = 70_000;
const RESPOND: u64 = 2_000;
const WAIT: Duration = Duration::from_secs(20);

fn agent(args: &[&str]) -> Netlens {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
    cmd.arg("agent").args(args);
    Netlens::start_cmd(cmd)
}

#[test]
fn one_process_serves_both_roles() {
    if !require_root() {
        return;
    }
    let nl = agent(&[
        "-P",
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--events",
        "--user-period",
        "250",
    ]);
    let (ep, web) = (nl.prometheus_addr(), nl.web_addr());
    assert!(
        nl.stderr()
            .contains("netlens: ready: agent running conns and cost"),
        "{}",
        nl.stderr()
    );
    for addr in [ep, web] {
        let health = http_get(addr, "/healthz").expect("GET /healthz");
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    }
    let roles = http_get(web, "/api/roles").expect("GET /api/roles");
    assert_eq!(roles.body.trim(), r#"{"roles":["conns","cost"]}"#);

    let pair = served_pair(
        "ag",
        0,
        false,
        &["--respond", &RESPOND.to_string(), "--max-conns", "1"],
    );
    let (cli_pid_num, _) = connect_once(&pair.a, pair.addr, SEND);
    let cli_pid = cli_pid_num.to_string();
    let port = pair.addr.port().to_string();
    let out: &[(&str, &str)] = &[("pid", &cli_pid), ("direction", "out"), ("port", &port)];

    // The close on stdout, with the application's bytes.
    let close = nl
        .wait_for(|v| v["type"] == "close" && v["pid"] == cli_pid_num, WAIT)
        .unwrap_or_else(|| panic!("no close event; stderr:\n{}", nl.stderr()));
    assert_eq!(close["bytes_sent"], SEND, "{close}");
    assert_eq!(close["bytes_received"], RESPOND, "{close}");

    // Both roles' families on the one endpoint, the connection's exact. The
    // cost families come with cost's reports, the close within a refresh.
    let net_rx_seconds = |samples: &[PromSample]| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == "netlens_cost_cpu_seconds_total")
            .filter(|s| s.labels.get("entry").is_some_and(|e| e == "net_rx_softirq"))
            .map(|s| s.value)
            .sum()
    };
    let samples = wait_metrics(&nl, "the close and NET_RX time", |s| {
        prom_value(s, "netlens_tcp_connections_closed_total", out) == Some(1.0)
            && net_rx_seconds(s) > 0.0
    });
    assert_eq!(
        prom_value(&samples, "netlens_tcp_sent_bytes_total", out),
        Some(SEND as f64)
    );
    assert_eq!(
        prom_value(&samples, "netlens_tcp_received_bytes_total", out),
        Some(RESPOND as f64)
    );

    // Both views of the web UI are fed.
    let conns = http_get(web, "/api/connections").expect("GET /api/connections");
    assert_eq!(conns.status, 200);
    let report = http_get(web, "/api/report").expect("GET /api/report");
    assert_eq!(report.status, 200);
    assert!(report.body.contains("\"cpus\""), "{}", report.body);

    let stopped = nl.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("netlens: conns: stopped; lost: 0 events"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("netlens: cost: stopped after"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn one_role_alone_and_bad_roles() {
    if !require_root() {
        return;
    }
    let nl = agent(&["-P", "127.0.0.1:0", "--roles", "cost", "--frequency", "0"]);
    assert!(
        nl.stderr().contains("netlens: ready: agent running cost"),
        "{}",
        nl.stderr()
    );
    // The families appear with the first report (one period after ready).
    wait_metrics(&nl, "the cost families", |s| {
        s.iter().any(|s| s.name == "netlens_cost_cpu_seconds_total")
    });
    let body = http_get(nl.prometheus_addr(), "/metrics")
        .expect("scrape")
        .body;
    assert!(!body.contains("netlens_tcp_"), "conns is not running");
    let stopped = nl.stop_any_output();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(!stopped.stderr.contains("conns:"), "{}", stopped.stderr);

    for bad in [
        &["--roles", "nope"][..],
        &["--roles", ""],
        &["--user-period", "10"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_netlens"))
            .arg("agent")
            .args(bad)
            .output()
            .expect("netlens agent");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}
