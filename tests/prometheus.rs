//! `netlens conns -P`: the `/metrics` endpoint against what the test's own
//! peers sent, and a real Prometheus server scraping it and answering
//! queries through its HTTP API.
//!
//! Several tests run at once and every netlens sees the whole host, so each
//! test reads only the series of its own server port and processes.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

const SEND: u64 = 100_000;
const RESPOND: u64 = 3_000;

/// Three connections from one client process in namespace A to one server
/// in namespace B: one series per side, with exactly the bytes the peers
/// wrote, and the client's segment counts equal to its TCP_INFO.
#[test]
fn metrics_are_exact_per_process_and_service() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "30", "-P", "127.0.0.1:0"]);
    let ep = nl.prometheus_addr();
    let pair = served_pair(
        "pm",
        0,
        false,
        &["--respond", &RESPOND.to_string(), "--max-conns", "3"],
    );
    let cli = peer(
        Some(&pair.a),
        &[
            "connect",
            "--to",
            &pair.addr.to_string(),
            "--send",
            &SEND.to_string(),
            "--count",
            "3",
        ],
    );
    let (cli_pid, srv_pid) = (cli.pid().to_string(), pair.server.pid().to_string());
    let cli_out = cli.finish_output();
    assert!(cli_out.status.success(), "{cli_out:?}");

    let port = pair.addr.port().to_string();
    let (srv_ip, cli_ip) = (
        pair.veth.b(false).to_string(),
        pair.veth.a(false).to_string(),
    );
    let out: &[(&str, &str)] = &[
        ("pid", &cli_pid),
        ("comm", "netlens-peer"),
        ("direction", "out"),
        ("remote_addr", &srv_ip),
        ("port", &port),
    ];
    // Inbound: the service port is the server's local port, not the client's.
    let inb: &[(&str, &str)] = &[
        ("pid", &srv_pid),
        ("comm", "netlens-peer"),
        ("direction", "in"),
        ("remote_addr", &cli_ip),
        ("port", &port),
    ];
    let closed = "netlens_tcp_connections_closed_total";
    let m = wait_metrics(&nl, "3 closes on each side", |s| {
        prom_value(s, closed, out) == Some(3.0) && prom_value(s, closed, inb) == Some(3.0)
    });
    let v = |name: &str, labels: &[(&str, &str)]| {
        prom_value(&m, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    let n = 3.0;
    assert_eq!(v("netlens_tcp_sent_bytes_total", out), n * SEND as f64);
    assert_eq!(
        v("netlens_tcp_received_bytes_total", out),
        n * RESPOND as f64
    );
    assert_eq!(v("netlens_tcp_sent_bytes_total", inb), n * RESPOND as f64);
    assert_eq!(v("netlens_tcp_received_bytes_total", inb), n * SEND as f64);
    assert_eq!(v("netlens_tcp_connections_opened_total", out), n);
    assert_eq!(v("netlens_tcp_connections_opened_total", inb), n);
    assert_eq!(v("netlens_tcp_connections_active", out), 0.0);
    assert_eq!(v("netlens_tcp_connections_active", inb), 0.0);
    // The client reads TCP_INFO after EOF, when its counters are final.
    let client_conns = conns(&cli_out.events, "client");
    assert_eq!(client_conns.len(), 3);
    let sum = |field: &str| client_conns.iter().map(|c| ti(c, field)).sum::<u64>() as f64;
    assert_eq!(v("netlens_tcp_sent_packets_total", out), sum("segs_out"));
    assert_eq!(v("netlens_tcp_received_packets_total", out), sum("segs_in"));
    assert_eq!(
        v("netlens_tcp_retransmits_total", out),
        sum("total_retrans")
    );
    // Losses and the exporter's own counters are there.
    assert_eq!(prom_value(&m, "netlens_events_lost_total", &[]), Some(0.0));
    // Skipped runs can happen under load (softirqs nesting in the same
    // program): only their presence is certain.
    assert!(
        prom_value(&m, "netlens_bpf_runs_missed_total", &[]).is_some(),
        "{m:?}"
    );
    assert_eq!(
        prom_value(&m, "netlens_prometheus_series_overflow_total", &[]),
        Some(0.0)
    );
    // Anything but /metrics is a 404.
    let other = http_get(ep, "/").expect("GET /");
    assert_eq!(other.status, 404);

    let stopped = nl.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// Cumulative count of `name_bucket{labels.., le}`.
fn bucket(samples: &[PromSample], name: &str, labels: &[(&str, &str)], le: &str) -> f64 {
    let mut with_le = labels.to_vec();
    with_le.push(("le", le));
    prom_value(samples, &format!("{name}_bucket"), &with_le)
        .unwrap_or_else(|| panic!("no {name}_bucket {with_le:?}"))
}

/// The `le` values of `name`'s buckets for `labels`, `+Inf` excluded, with
/// their bounds in nanoseconds.
fn bounds(samples: &[PromSample], name: &str, labels: &[(&str, &str)]) -> Vec<(String, u64)> {
    let bucket = format!("{name}_bucket");
    let mut found: Vec<(String, u64)> = samples
        .iter()
        .filter(|s| s.name == bucket && s.has_labels(labels))
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let seconds: f64 = le.parse().ok().filter(|v: &f64| v.is_finite())?;
            Some((le.clone(), (seconds * 1e9).round() as u64))
        })
        .collect();
    found.sort_by_key(|(_, ns)| *ns);
    found
}

/// Eight connections: the connect-time histogram holds exactly the eight
/// connect times of the events, each no longer than what the application
/// measured around connect(); the RTT histogram holds one to two
/// observations per connection (its close, and a refresh that fell within
/// its life), of the order of the RTTs the close events carry.
#[test]
fn rtt_and_connect_time_histograms_hold_what_the_events_say() {
    if !require_root() {
        return;
    }
    const N: usize = 8;
    let nl = Netlens::start(&["-t", "30", "-P", "127.0.0.1:0"]);
    let pair = served_pair("ph", 1, false, &["--max-conns", &N.to_string()]);
    let cli = peer(
        Some(&pair.a),
        &[
            "connect",
            "--to",
            &pair.addr.to_string(),
            "--send",
            "1000",
            "--count",
            &N.to_string(),
        ],
    );
    let cli_pid = cli.pid();
    let cli_out = cli.finish_output();
    assert!(cli_out.status.success(), "{cli_out:?}");
    let (pid, port) = (cli_pid.to_string(), pair.addr.port().to_string());
    let srv_ip = pair.veth.b(false).to_string();
    let out: &[(&str, &str)] = &[
        ("pid", &pid),
        ("direction", "out"),
        ("remote_addr", &srv_ip),
        ("port", &port),
    ];
    let m = wait_metrics(&nl, "8 closes", |s| {
        prom_value(s, "netlens_tcp_connections_closed_total", out) == Some(N as f64)
    });
    let events = nl.events();
    let of_client = |typ: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["type"] == typ && u(e, "pid") == u64::from(cli_pid))
            .collect()
    };

    // Connect times: the kernel's, from SYN to established, within the
    // application's, from before connect() to after it returned.
    let connects = of_client("connect");
    assert_eq!(connects.len(), N, "{events:?}");
    let mut kernel_us = Vec::new();
    for c in conns(&cli_out.events, "client") {
        let local_port = addr(c, "local").port();
        let ev = connects
            .iter()
            .find(|e| u(e, "local_port") == u64::from(local_port))
            .unwrap_or_else(|| panic!("no connect event for {c}"));
        let (kernel, app) = (u(ev, "connect_us"), u(c, "connect_us"));
        eprintln!("connect: kernel {kernel} µs, application {app} µs");
        assert!(kernel <= app, "kernel {kernel} µs > application {app} µs");
        kernel_us.push(kernel);
    }
    assert_eq!(kernel_us.len(), N);
    let connect = "netlens_tcp_connect_duration_seconds";
    assert_eq!(
        prom_value(&m, &format!("{connect}_count"), out),
        Some(N as f64)
    );
    // Events carry whole microseconds: a time t µs is in [t, t + 1) µs.
    for (le, bound) in bounds(&m, connect, out) {
        let surely = kernel_us
            .iter()
            .filter(|&&t| (t + 1) * 1000 <= bound)
            .count();
        let maybe = kernel_us.iter().filter(|&&t| t * 1000 <= bound).count();
        let got = bucket(&m, connect, out, &le) as usize;
        assert!(
            (surely..=maybe).contains(&got),
            "le={le}: {got} connections, events say {surely} to {maybe}: {kernel_us:?}"
        );
    }
    let sum_ns = prom_value(&m, &format!("{connect}_sum"), out).expect("sum") * 1e9;
    let events_ns = kernel_us.iter().sum::<u64>() as f64 * 1000.0;
    assert!(
        (events_ns..events_ns + (N * 1000) as f64).contains(&sum_ns.round()),
        "sum {sum_ns} ns, events {events_ns} ns"
    );

    // RTTs: one or two observations per connection, none far from the
    // RTTs the close events carry (a unit error is 1000 times off).
    let rtt = "netlens_tcp_rtt_seconds";
    let count = prom_value(&m, &format!("{rtt}_count"), out).expect("rtt count");
    assert!((N as f64..=2.0 * N as f64).contains(&count), "{count} RTTs");
    let close_rtts: Vec<u64> = of_client("close").iter().map(|e| u(e, "rtt_us")).collect();
    assert_eq!(close_rtts.len(), N);
    let (low, high) = (
        close_rtts.iter().min().unwrap() * 1000 / 8,
        close_rtts.iter().max().unwrap() * 1000 * 8,
    );
    for (le, bound) in bounds(&m, rtt, out) {
        let got = bucket(&m, rtt, out, &le);
        if bound < low {
            assert_eq!(got, 0.0, "le={le}: RTTs from close: {close_rtts:?} µs");
        }
        if bound >= high {
            assert_eq!(got, count, "le={le}: RTTs from close: {close_rtts:?} µs");
        }
    }
    let stopped = nl.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// The print interval is 60 s, yet an open connection's counters reach the
/// endpoint within a second or two while it runs.
#[test]
fn active_connections_are_refreshed_between_prints() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "60", "-P", "127.0.0.1:0"]);
    let pair = served_pair("pa", 1, false, &["--echo", "--max-conns", "1"]);
    let size = 1000u64;
    let cli = peer(
        Some(&pair.a),
        &[
            "rr",
            "--to",
            &pair.addr.to_string(),
            "--secs",
            "8",
            "--size",
            &size.to_string(),
        ],
    );
    let cli_pid = cli.pid().to_string();
    let port = pair.addr.port().to_string();
    let out: &[(&str, &str)] = &[("pid", &cli_pid), ("direction", "out"), ("port", &port)];
    let sent = "netlens_tcp_sent_bytes_total";
    let active = "netlens_tcp_connections_active";
    wait_metrics(&nl, "bytes of the open connection", |s| {
        prom_value(s, active, out) == Some(1.0) && prom_value(s, sent, out).unwrap_or(0.0) > 0.0
    });
    let cli_out = cli.finish_output();
    assert!(cli_out.status.success(), "{cli_out:?}");
    let rr = one(&cli_out.events, "rr");
    let bytes = (u(rr, "transactions") * size) as f64;
    let m = wait_metrics(&nl, "the close", |s| {
        prom_value(s, "netlens_tcp_connections_closed_total", out) == Some(1.0)
    });
    assert_eq!(prom_value(&m, sent, out), Some(bytes));
    assert_eq!(
        prom_value(&m, "netlens_tcp_received_bytes_total", out),
        Some(bytes)
    );
    assert_eq!(prom_value(&m, active, out), Some(0.0));
}

/// A real Prometheus server scrapes netlens every second; its query API
/// returns the bytes the client sent, with the metadata netlens declared.
#[test]
fn prometheus_server_scrapes_and_answers_queries() {
    if !require_root() {
        return;
    }
    let binary = PrometheusServer::binary();
    let nl = Netlens::start(&["-t", "30", "-P", "127.0.0.1:0"]);
    let prom = PrometheusServer::start(&binary, &[nl.prometheus_addr()]);

    let pair = served_pair(
        "pq",
        0,
        true,
        &["--respond", &RESPOND.to_string(), "--max-conns", "1"],
    );
    let (cli_pid, _) = connect_once(&pair.a, pair.addr, SEND);

    let port = pair.addr.port();
    let selector = format!(
        "{{job=\"netlens\",pid=\"{cli_pid}\",direction=\"out\",port=\"{port}\",remote_addr=\"{}\"}}",
        pair.veth.b(true)
    );
    let query = format!("netlens_tcp_sent_bytes_total{selector}");
    let (result, ok) = prom.wait_query(&query, Duration::from_secs(30), |r| {
        r.len() == 1 && r[0].1 == SEND as f64
    });
    assert!(
        ok,
        "{query} gave {result:?}; netlens stderr:\n{}\nprometheus log:\n{}",
        nl.stderr(),
        prom.log_text()
    );
    assert_eq!(result[0].0["comm"], "netlens-peer");
    let received = prom.query(&format!("netlens_tcp_received_bytes_total{selector}"));
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].1, RESPOND as f64);

    // The scrape itself is healthy and the declared types were understood.
    let target = nl.prometheus_addr().to_string();
    let up = prom.query(&format!("up{{job=\"netlens\",instance=\"{target}\"}}"));
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 1.0);
    let meta = prom.api("metadata?metric=netlens_tcp_sent_bytes_total");
    let entry = &meta["data"]["netlens_tcp_sent_bytes_total"][0];
    assert_eq!(entry["type"], "counter", "{meta}");
    assert!(
        entry["help"].as_str().is_some_and(|h| h.contains("bytes")),
        "{meta}"
    );
    let meta = prom.api("metadata?metric=netlens_tcp_connections_active");
    assert_eq!(
        meta["data"]["netlens_tcp_connections_active"][0]["type"],
        "gauge"
    );
}

/// A taken port: a clear message naming the address, exit status 1, at once.
#[test]
fn address_in_use_is_a_runtime_error() {
    if !require_root() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let out = run(
        env!("CARGO_BIN_EXE_netlens"),
        &["conns", "--no-log-file", "-P", &addr],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "netlens: error: cannot serve Prometheus metrics on {addr}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(stderr.contains("-P ADDR:PORT"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Bad values are command-line errors (status 2), also without root.
#[test]
fn bad_prometheus_arguments_are_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_netlens");
    let out = run(bin, &["conns", "-P", "nowhere:80"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADDR:PORT"));
    let out = run(bin, &["conns", "--max-series", "10"]);
    assert_eq!(out.status.code(), Some(2), "--max-series needs -P");
    let out = run(bin, &["conns", "-P", "--max-series", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Ten clients that connect to the endpoint and send nothing (and one that
/// sends half a request) do not delay a scrape: the endpoint serves every
/// client at once. They stay connected during the scrapes, and are dropped
/// after the header timeout (5 s), not held for good.
#[test]
fn idle_clients_do_not_delay_a_scrape() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "30", "-P", "127.0.0.1:0"]);
    let ep = nl.prometheus_addr();
    // What a scrape takes with nobody else connected: on this host a
    // fraction of a millisecond, on the kernel matrix's emulated CPUs far
    // more. The bound is a second on top of a few of those; a server that
    // waited for each silent client would take its 5 s header timeout.
    let alone = (0..3)
        .map(|_| {
            let t = Instant::now();
            scrape(ep);
            t.elapsed()
        })
        .max()
        .unwrap_or_default();
    let bound = Duration::from_secs(1) + 3 * alone;
    // Before the first connection: the server's clock starts later.
    let connected = Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(ep).expect("connect"))
        .collect();
    let mut half = std::net::TcpStream::connect(ep).expect("connect");
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .expect("write");
    idle.push(half);
    for _ in 0..3 {
        let t = Instant::now();
        let samples = scrape(ep);
        let took = t.elapsed();
        assert!(
            took < bound,
            "a scrape took {took:?} beside 11 idle clients ({alone:?} alone)"
        );
        assert!(!samples.is_empty());
    }
    // Still connected: nothing to read, no end of file (checked while the
    // 5 s header timeout cannot have passed yet: slow CPUs scrape slowly).
    let still_connected = connected.elapsed() < Duration::from_secs(4);
    for s in idle.iter_mut().filter(|_| still_connected) {
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "an idle client was closed {:?} after it connected: {r:?}",
            connected.elapsed()
        );
    }
    // Dropped after the header timeout (an answer, if any, is a 408).
    for s in &mut idle {
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(r.is_ok(), "{r:?}");
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
            "{rest}"
        );
    }
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(15),
        "idle clients dropped after {waited:?}"
    );
    nl.stop();
}

/// `/healthz` answers 200 `ok` once netlens printed that it is ready (the
/// harness waits for that line), and is listed with `/metrics` in a 404.
#[test]
fn healthz_is_ok_once_ready() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "30", "-P", "127.0.0.1:0"]);
    let ep = nl.prometheus_addr();
    let health = http_get(ep, "/healthz").expect("GET /healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let other = http_get(ep, "/nothing").expect("GET /nothing");
    assert_eq!(other.status, 404);
    assert_eq!(other.body, "not found: netlens serves /metrics /healthz\n");
    nl.stop();
}
