//! The web UI (`--web`) of a running netlens: the JSON API of `cost` and
//! `conns`, a taken port, and the page itself in a headless Chromium
//! (WebDriver): what it shows of known connections and of the CPU cost,
//! sorting and filtering by clicks and keys, the flame graph, and no
//! console errors.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

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
    assert!(page.body.contains("<title>netlens</title>"));
    let script = http_get(addr, "/app.js").expect("GET /app.js");
    assert_eq!(script.status, 200);
    assert!(script.body.contains("api/history"));
    let roles = http_get(addr, "/api/roles").expect("GET /api/roles");
    assert_eq!(roles.body, r#"{"roles":["cost"]}"#);

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

/// `/healthz` of `netlens cost`: 503 `starting` from the moment the port
/// listens until the BPF programs are attached (stack sampling reads the
/// kernel's symbols first, which leaves a window of a fraction of a second
/// to see it), then 200 `ok`, on the web UI and the `-P` endpoint alike.
#[test]
fn healthz_is_starting_until_cost_is_ready() {
    if !require_root() {
        return;
    }
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], free_local_port()));
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_local_port()));
    // Polls from before netlens starts: refused until it binds, then each
    // change of answer is recorded, up to the first 200.
    let poller = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        let mut seen: Vec<(u16, String)> = Vec::new();
        while Instant::now() < end {
            if let Ok(resp) = http_get(web, "/healthz") {
                if seen.last().map(|(status, _)| *status) != Some(resp.status) {
                    seen.push((resp.status, resp.body));
                }
                if resp.status == 200 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    });
    let (w, m) = (web.to_string(), metrics.to_string());
    let nl = Netlens::start_cost(&["--web", &w, "-P", &m, "--user-period", "250"]);
    for addr in [web, metrics] {
        let health = http_get(addr, "/healthz").expect("GET /healthz");
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, "ok\n"),
            "{addr}"
        );
    }
    let seen = poller.join().expect("poller");
    assert_eq!(
        seen,
        [(503, "starting\n".to_string()), (200, "ok\n".to_string())],
        "stderr:\n{}",
        nl.stderr()
    );
    nl.stop_any_output();
}

/// `conns --web`: the connections and events endpoints, and -P on the same
/// address.
#[test]
fn conns_web_api_serves_connections_and_events() {
    if !require_root() {
        return;
    }
    // One address for both (port 0 on both is the same address: one
    // server, on a port the kernel picks, with no window for a race).
    let a = "127.0.0.1:0";
    let nl = Netlens::start(&["-t", "600", "--web", a, "-P", a]);
    let web = nl.web_addr();
    assert_eq!(nl.prometheus_addr(), web);
    let roles = http_get(web, "/api/roles").expect("GET /api/roles");
    assert_eq!(roles.body, r#"{"roles":["conns"]}"#);
    let pair = served_pair("wapi", 0, false, &["--max-conns", "1"]);
    const SEND: u64 = 54_321;
    let mut cli = peer(
        Some(&pair.a),
        &[
            "connect",
            "--to",
            &pair.addr.to_string(),
            "--send",
            &SEND.to_string(),
            "--pause-after-send",
        ],
    );
    let sent = cli.wait_event("sent");
    let local = addr(&sent, "local").to_string();
    let end = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let resp = http_get(web, "/api/connections").expect("GET /api/connections");
        if resp.status == 200 {
            assert_eq!(resp.header("Content-Type"), Some("application/json"));
            let v: Value = serde_json::from_str(&resp.body).expect("JSON");
            let found = v["connections"]
                .as_array()
                .expect("connections")
                .iter()
                .find(|r| r["local"] == local.as_str() && r["bytes_sent"] == SEND)
                .cloned();
            if let Some(r) = found {
                break r;
            }
        }
        assert!(Instant::now() < end, "{local} with {SEND} bytes not served");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row["pid"], cli.pid());
    assert_eq!(row["remote"], pair.addr.to_string());
    assert_eq!(row["direction"], "out");
    assert_eq!(row["netns"], pair.a.inode());
    assert_eq!(row["packets_sent"], ti(&sent, "segs_out"));
    assert_eq!(row["rtt_us"], ti(&sent, "rtt_us"));
    let events: Value =
        serde_json::from_str(&http_get(web, "/api/events").expect("events").body).expect("JSON");
    let connect = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "connect" && e["local"] == local.as_str());
    assert!(connect.is_some(), "no connect event of {local}: {events}");
    let m = http_get(web, "/metrics").expect("GET /metrics");
    assert_eq!(m.status, 200);
    assert!(m.body.contains("netlens_conn"), "{}", m.body);
    cli.release();
    cli.finish();
    let out = nl.stop();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// A connection row of the page's table: each cell's text and exact value
/// (`data-value`), by column key, and the row's connection id.
const ROWS_SCRIPT: &str = "return [...document.querySelectorAll('#conns tbody tr')].map((tr) => {
  const row = { id: tr.dataset.id };
  for (const td of tr.cells) row[td.dataset.key] = { text: td.textContent, value: td.dataset.value };
  return row;
});";

fn cell<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key]["value"].as_str().unwrap_or("")
}

fn rows_of(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// The rows among `rows` whose local endpoint is one of `locals`, in page order.
fn locals_in_order(rows: &[Value], locals: &[String]) -> Vec<String> {
    rows.iter()
        .map(|r| cell(r, "local").to_string())
        .filter(|l| locals.contains(l))
        .collect()
}

/// Asserts the page's rows are in order of `key` (numeric), descending or
/// not; rows without a value come last.
fn assert_sorted_by(rows: &[Value], key: &str, desc: bool) {
    let values: Vec<Option<f64>> = rows
        .iter()
        .map(|r| r[key]["value"].as_str().and_then(|v| v.parse().ok()))
        .collect();
    let known = values.iter().take_while(|v| v.is_some()).count();
    assert!(
        values[known..].iter().all(Option::is_none),
        "{key}: unknown values last: {values:?}"
    );
    for w in values[..known].windows(2) {
        let (a, b) = (w[0].unwrap(), w[1].unwrap());
        assert!(
            if desc { a >= b } else { a <= b },
            "{key} not sorted ({}): {values:?}",
            if desc { "descending" } else { "ascending" }
        );
    }
}

#[test]
fn conns_page_in_a_browser_shows_sorts_and_filters_connections() {
    if !require_root() {
        return;
    }
    let Some(browser) =
        Browser::start("conns_page_in_a_browser_shows_sorts_and_filters_connections")
    else {
        return;
    };
    let nl = Netlens::start(&["-t", "1", "--web", "127.0.0.1:0"]);
    let web = nl.web_addr();
    let pair = served_pair("wbr", 0, false, &["--max-conns", "4", "--max-secs", "120"]);
    browser.open(&format!("http://{web}/"));
    // Only the connections role is served: its view, no tabs.
    browser.wait(
        "the connections view alone",
        "return [document.getElementById('view-conns').hidden, \
         document.getElementById('view-cost').hidden, document.getElementById('tabs').hidden]",
        |v| *v == json!([false, true, true]),
    );

    // Three silent connections with known bytes, and a refused one.
    let sizes = [300_000u64, 100_000, 200_000];
    let mut clients: Vec<Peer> = sizes
        .iter()
        .map(|n| {
            peer(
                Some(&pair.a),
                &[
                    "connect",
                    "--to",
                    &pair.addr.to_string(),
                    "--send",
                    &n.to_string(),
                    "--pause-after-send",
                ],
            )
        })
        .collect();
    let sent: Vec<Value> = clients.iter().map(|c| c.wait_event("sent")).collect();
    let locals: Vec<String> = sent.iter().map(|s| addr(s, "local").to_string()).collect();
    let refused_to = sock(pair.veth.b(false), 1);
    let refused = peer(
        Some(&pair.a),
        &["connect", "--to", &refused_to, "--send", "1"],
    )
    .finish_output();
    assert_eq!(refused.status.code(), Some(3), "{}", refused.stderr);
    let netns = pair.a.inode().to_string();

    // netlens's own numbers for each connection (its JSON lines)...
    let reported: Vec<Value> = locals
        .iter()
        .zip(sizes)
        .map(|(local, size)| {
            let port: u64 = local.rsplit(':').next().unwrap().parse().unwrap();
            nl.wait_for(
                |v| {
                    v["type"] == "metrics"
                        && v["local_port"] == port
                        && v["netns"] == pair.a.inode()
                        && v["bytes_sent"] == size
                },
                Duration::from_secs(20),
            )
            .unwrap_or_else(|| panic!("netlens reported no {size} bytes for {local}"))
        })
        .collect();
    // ... are the page's, exactly, with the identity of each connection.
    let rows = rows_of(&browser.wait(
        "the three connections with all their bytes",
        ROWS_SCRIPT,
        |v| {
            let rows = rows_of(v);
            locals.iter().zip(sizes).all(|(l, n)| {
                rows.iter()
                    .any(|r| cell(r, "local") == l && cell(r, "bytes_sent") == n.to_string())
            })
        },
    ));
    for ((local, client), nl_row) in locals.iter().zip(&clients).zip(&reported) {
        let row = rows
            .iter()
            .find(|r| cell(r, "local") == local && cell(r, "netns") == netns)
            .unwrap_or_else(|| panic!("no row for {local}"));
        for key in [
            "bytes_sent",
            "bytes_received",
            "packets_sent",
            "packets_received",
            "retransmits",
            "rtt_us",
            "rtt_var_us",
            "pid",
        ] {
            assert_eq!(cell(row, key), nl_row[key].to_string(), "{key} of {local}");
        }
        // Counters are shown exactly (grouped by thousands).
        let shown = row["bytes_sent"]["text"].as_str().unwrap().replace(',', "");
        assert_eq!(shown, nl_row["bytes_sent"].to_string());
        assert_eq!(cell(row, "pid"), client.pid().to_string());
        assert_eq!(cell(row, "comm"), "netlens-peer");
        assert_eq!(cell(row, "direction"), "out");
        assert_eq!(cell(row, "remote"), pair.addr.to_string());
    }

    // Sorting: by bytes sent, largest first, until a click reverses it.
    let by_size_desc = {
        let mut v: Vec<(u64, String)> = sizes.iter().copied().zip(locals.clone()).collect();
        v.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
        v.into_iter().map(|(_, l)| l).collect::<Vec<_>>()
    };
    assert_eq!(locals_in_order(&rows, &locals), by_size_desc);
    assert_sorted_by(&rows, "bytes_sent", true);
    let sort_of = "return [...document.querySelectorAll('#conns th[aria-sort]')]\
                   .map((th) => [th.dataset.key, th.getAttribute('aria-sort')])";
    assert_eq!(
        browser.run(sort_of, json!([])),
        json!([["bytes_sent", "descending"]])
    );
    browser.click("#conns th[data-key='bytes_sent']");
    assert_eq!(
        browser.run(sort_of, json!([])),
        json!([["bytes_sent", "ascending"]])
    );
    let rows = rows_of(&browser.run(ROWS_SCRIPT, json!([])));
    let mut by_size_asc = by_size_desc.clone();
    by_size_asc.reverse();
    assert_eq!(locals_in_order(&rows, &locals), by_size_asc);
    assert_sorted_by(&rows, "bytes_sent", false);
    // Another column: text in order (ports numerically), then reversed.
    let mut by_port = locals.clone();
    by_port.sort_by_key(|l| l.rsplit(':').next().unwrap().parse::<u16>().unwrap());
    browser.click("#conns th[data-key='local']");
    assert_eq!(
        browser.run(sort_of, json!([])),
        json!([["local", "ascending"]])
    );
    let rows = rows_of(&browser.run(ROWS_SCRIPT, json!([])));
    assert_eq!(locals_in_order(&rows, &locals), by_port);
    browser.click("#conns th[data-key='local']");
    let rows = rows_of(&browser.run(ROWS_SCRIPT, json!([])));
    by_port.reverse();
    assert_eq!(locals_in_order(&rows, &locals), by_port);

    // A numeric column starts with the largest value.
    browser.click("#conns th[data-key='packets_received']");
    assert_eq!(
        browser.run(sort_of, json!([])),
        json!([["packets_received", "descending"]])
    );
    assert_sorted_by(
        &rows_of(&browser.run(ROWS_SCRIPT, json!([]))),
        "packets_received",
        true,
    );

    // The filter: a port leaves that connection's two ends only.
    let port = locals[1].rsplit(':').next().unwrap().to_string();
    browser.type_into("#filter", &port);
    let rows = rows_of(&browser.run(ROWS_SCRIPT, json!([])));
    let mut ends: Vec<(String, String)> = rows
        .iter()
        .map(|r| (cell(r, "local").to_string(), cell(r, "remote").to_string()))
        .collect();
    ends.sort();
    let server = pair.addr.to_string();
    let mut want = vec![
        (locals[1].clone(), server.clone()),
        (server.clone(), locals[1].clone()),
    ];
    want.sort();
    assert_eq!(ends, want, "only the connection of port {port}, both ends");
    let count = browser.run(
        "return document.getElementById('conn-count').textContent",
        json!([]),
    );
    assert!(
        count.as_str().is_some_and(|c| c.starts_with("2 shown of")),
        "{count}"
    );
    // Words must all match: the process and the server's port leave the
    // six ends of the three connections (and nothing of other processes).
    browser.type_into("#filter", &format!("NETLENS-peer {}", pair.addr.port()));
    let rows = rows_of(&browser.run(ROWS_SCRIPT, json!([])));
    for l in &locals {
        assert!(rows.iter().any(|r| cell(r, "local") == l), "{l}");
        assert!(rows.iter().any(|r| cell(r, "remote") == l), "{l}");
    }
    for r in &rows {
        assert_eq!(cell(r, "comm"), "netlens-peer");
        assert!(
            cell(r, "local") == server || cell(r, "remote") == server,
            "{r}"
        );
    }
    browser.type_into("#filter", "no-such-process");
    assert_eq!(rows_of(&browser.run(ROWS_SCRIPT, json!([]))).len(), 0);
    browser.type_into("#filter", "");

    // Recent events: the connects and the refused one.
    browser.wait(
        "the connect and connect_failed events",
        "return [...document.querySelectorAll('#events tbody tr')].map((tr) => \
         [...tr.cells].map((td) => td.textContent))",
        |v| {
            let evs = rows_of(v);
            let has = |kind: &str, local: Option<&str>, remote: &str, detail: &str| {
                evs.iter().any(|e| {
                    e[1] == kind
                        && local.is_none_or(|l| e[3] == l)
                        && e[4] == remote
                        && e[5].as_str().is_some_and(|d| d.contains(detail))
                })
            };
            locals.iter().all(|l| has("connect", Some(l), &server, ""))
                && has("connect_failed", None, &refused_to, "refused")
        },
    );

    // Top talkers: a bulk transfer is among the busiest connections.
    let bulk = peer(
        Some(&pair.a),
        &["bulk", "--to", &pair.addr.to_string(), "--secs", "4"],
    );
    let bulk_label = format!("netlens-peer ({})", bulk.pid());
    browser.wait(
        "the bulk transfer among the top talkers",
        "return [...document.querySelectorAll('#talkers-conns .label')].map((l) => l.textContent)",
        |v| {
            rows_of(v)
                .iter()
                .any(|l| l.as_str().is_some_and(|l| l.starts_with(&bulk_label)))
        },
    );
    let losses = browser.run(
        "return document.getElementById('conns-losses').textContent",
        json!([]),
    );
    assert!(
        losses.as_str().is_some_and(|l| l.contains("lost: ")),
        "{losses}"
    );

    // A narrow window: the page does not scroll sideways (wide tables
    // scroll inside their panel).
    browser.set_window_width(420);
    browser.wait(
        "no horizontal scrolling at 420 px",
        "return document.documentElement.scrollWidth <= window.innerWidth",
        |v| *v == json!(true),
    );
    browser.assert_no_console_errors();
    for c in &mut clients {
        c.release();
    }
    for c in clients {
        c.finish();
    }
    bulk.finish();
    let out = nl.stop();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn cost_page_in_a_browser_shows_the_table_charts_and_flame_graph() {
    if !require_root() {
        return;
    }
    let Some(browser) =
        Browser::start("cost_page_in_a_browser_shows_the_table_charts_and_flame_graph")
    else {
        return;
    };
    let nl = Netlens::start_cost(&["-f", "2000", "--web", "127.0.0.1:0", "--user-period", "250"]);
    let web = nl.web_addr();
    let pair = served_pair("wbf", 0, false, &["--sink", "--max-secs", "60"]);
    let bulk = peer(
        Some(&pair.a),
        &["bulk", "--to", &pair.addr.to_string(), "--secs", "3"],
    );
    browser.open(&format!("http://{web}/"));
    browser.wait(
        "the cost view alone",
        "return [document.getElementById('view-conns').hidden, \
         document.getElementById('view-cost').hidden, document.getElementById('tabs').hidden]",
        |v| *v == json!([true, false, true]),
    );
    // The per-CPU table: a column per CPU of this machine, the entries.
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    let table = browser.wait(
        "the per-CPU table",
        "const t = document.getElementById('cost-table'); \
         return [[...t.tHead.querySelectorAll('th')].map((th) => th.textContent), \
         [...t.tBodies[0].rows].map((tr) => tr.cells[0].textContent)]",
        |v| v[1].as_array().is_some_and(|r| !r.is_empty()),
    );
    let heads: Vec<&str> = table[0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cpu_columns = heads.iter().filter(|h| h.starts_with("CPU")).count();
    assert_eq!(
        cpu_columns,
        http_get(web, "/api/report")
            .map(
                |r| serde_json::from_str::<Value>(&r.body).expect("JSON")["cpus"]
                    .as_array()
                    .map_or(0, Vec::len)
            )
            .expect("GET /api/report"),
        "a column per CPU ({cpus:?}): {heads:?}"
    );
    assert_eq!(heads.first(), Some(&"% of CPU"));
    assert_eq!(heads.last(), Some(&"total s"));
    let labels = table[1].to_string();
    for label in [
        "TX syscalls",
        "NET_RX softirq",
        "network total",
        "/proc/stat user",
    ] {
        assert!(labels.contains(label), "{label} in {labels}");
    }
    // The flame graph of the NET_RX stacks, an SVG in the same origin.
    let flame = browser.wait(
        "a flame graph with NET_RX stacks",
        "const d = document.getElementById('flame').contentDocument; \
         const svg = d && d.documentElement; \
         return svg && svg.nodeName === 'svg' ? \
         [svg.querySelectorAll('g').length, svg.textContent.includes('net_rx_action'), \
          document.getElementById('flame').getBoundingClientRect().width] : null",
        |v| v[1] == json!(true),
    );
    assert!(flame[0].as_u64().unwrap_or(0) > 2, "frames: {flame}");
    // Beside the charts on a wide window: the left column and the graph
    // share the width.
    let layout = browser.run(
        "const f = document.querySelector('.flame').getBoundingClientRect(); \
         const c = document.getElementById('chart-net').getBoundingClientRect(); \
         return [c.right <= f.left, f.width > 400, window.innerWidth]",
        json!([]),
    );
    assert_eq!(layout[0], json!(true), "{layout}");
    assert_eq!(layout[1], json!(true), "{layout}");
    // The sender among the processes with network time, with its command,
    // and the host's processes as a container row.
    let sender = bulk.pid().to_string();
    let row = browser.wait(
        "the sender in the process table",
        &format!(
            "const tr = document.querySelector('#process-table tr[data-pid=\"{sender}\"]'); \
             return tr ? [...tr.cells].map((td) => td.textContent) : null"
        ),
        |v| v.is_array(),
    );
    assert_eq!(row[0], sender.as_str(), "{row}");
    assert_eq!(row[1], "netlens-peer", "{row}");
    assert!(
        row[3].as_str().is_some_and(|c| c.ends_with('%')),
        "TX cell: {row}"
    );
    let containers = browser.run(
        "return [...document.querySelectorAll('#container-table tbody tr')]\
         .map((tr) => tr.cells[0].textContent)",
        json!([]),
    );
    assert!(
        containers
            .as_array()
            .is_some_and(|c| c.contains(&json!("(host)"))),
        "{containers}"
    );
    bulk.finish();

    // The time axis: the right edge is now, the left edge the whole
    // history ago (120 periods of about 250 ms, measured), and each bar
    // sits where its period was.
    let axis = browser.wait(
        "the networking chart",
        "const svg = document.querySelector('#chart-net svg'); if (!svg) return null; \
         const ticks = [...svg.querySelectorAll('text.tick')].map((t) => \
           [Number(t.dataset.agoS), Number(t.getAttribute('x')), t.textContent]); \
         const bars = [...svg.querySelectorAll('rect')].map((r) => Number(r.getAttribute('x'))); \
         return { w: svg.viewBox.baseVal.width, window: Number(svg.dataset.windowS), ticks, \
           newest: Math.max(...bars), oldest: Math.min(...bars) }",
        |v| v["ticks"].as_array().is_some_and(|t| !t.is_empty()),
    );
    let (w, window) = (
        axis["w"].as_f64().unwrap(),
        axis["window"].as_f64().unwrap(),
    );
    assert!((29.0..32.0).contains(&window), "{axis}");
    let left = 48.0;
    let at = |ago: f64| w - ago * (w - left) / window;
    let ticks = axis["ticks"].as_array().unwrap();
    assert!(ticks.len() >= 3, "{axis}");
    assert_eq!(
        (
            ticks[0][0].as_f64(),
            ticks[0][1].as_f64(),
            ticks[0][2].as_str()
        ),
        (Some(0.0), Some(w), Some("now")),
        "{axis}"
    );
    let last = ticks.last().unwrap();
    assert_eq!(last[0], json!(30), "the last label is 30 s ago: {axis}");
    for t in ticks {
        let ago = t[0].as_f64().unwrap();
        assert!(
            (t[1].as_f64().unwrap() - at(ago)).abs() < 0.11,
            "{t} of {axis}"
        );
        if ago > 0.0 {
            assert_eq!(t[2], format!("{ago} s ago"));
        }
    }
    // The newest bar starts one period (a 120th of the window) before the
    // right edge; the oldest is within the plot, a few seconds back.
    let newest = axis["newest"].as_f64().unwrap();
    assert!(
        (newest - (w - (w - left) / 120.0)).abs() < 0.11,
        "newest bar at {newest}: {axis}"
    );
    let oldest = axis["oldest"].as_f64().unwrap();
    assert!(
        oldest >= left && oldest < at(2.0),
        "oldest bar at {oldest}: {axis}"
    );
    browser.set_window_width(420);
    browser.wait(
        "no horizontal scrolling at 420 px",
        "return document.documentElement.scrollWidth <= window.innerWidth",
        |v| *v == json!(true),
    );
    browser.assert_no_console_errors();
    let out = nl.stop_any_output();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// One server with both roles (as a process running both would have): the
/// page shows a tab per role, switches views on a click, and opens the
/// view the URL names. Fed with model values, through the library: no BPF,
/// no root needed.
#[test]
fn one_page_shows_both_roles_as_tabs() {
    use netlens::model::cost::{CostReport, Entry, EntryRow, PerCpu};
    use netlens::model::{
        ConnEvent, ConnInfo, ConnRow, Direction, EventKind, Losses, Metrics, Snapshot, Tuple,
    };
    use netlens::output::prometheus::{Routes, Server};
    use netlens::output::web::{
        ConnsUi, ConnsWebSink, CostUi, CostWebSink, Site, HISTORY, PURPOSE,
    };
    use netlens::output::Sink;

    let Some(browser) = Browser::start("one_page_shows_both_roles_as_tabs") else {
        return;
    };
    let conns = ConnsUi::new();
    let cost = CostUi::new(HISTORY);
    let mut routes = Routes::new();
    Site::new()
        .with_conns(conns.clone())
        .with_cost(cost.clone())
        .add_to(&mut routes);
    let server =
        Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE).expect("bind");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let conn = ConnInfo {
        id: 7,
        tuple: Tuple {
            local_addr: "192.0.2.1".parse().unwrap(),
            local_port: 40_000,
            remote_addr: "198.51.100.9".parse().unwrap(),
            remote_port: 443,
        },
        pid: 4321,
        comm: "curl".into(),
        netns: 4_026_531_840,
        direction: Direction::Outbound,
        start: Some(now - 5_000_000_000),
        connect_ns: Some(1_200_000),
        cgroup: None,
    };
    let mut conns_sink = ConnsWebSink::new(conns);
    conns_sink
        .snapshot(&Snapshot {
            timestamp: now,
            conns: vec![ConnRow {
                conn: conn.clone(),
                metrics: Metrics {
                    bytes_sent: 4_242_424,
                    ..Metrics::default()
                },
            }],
            incremental: false,
            losses: Losses::default(),
        })
        .expect("snapshot");
    let event = ConnEvent {
        kind: EventKind::Accept,
        timestamp: now,
        conn: conn.clone(),
        metrics: None,
    };
    let mut cost_sink = CostWebSink::new(cost);
    for i in 0..4u64 {
        cost_sink
            .report(&CostReport {
                timestamp: now - (3 - i) * 500_000_000,
                period_ns: 500_000_000,
                elapsed_ns: (i + 1) * 500_000_000,
                cpus: vec![0, 1],
                entries: Entry::ALL
                    .iter()
                    .map(|&entry| EntryRow {
                        entry,
                        time: PerCpu {
                            period_ns: vec![1_000_000, 2_000_000],
                            total_ns: vec![(i + 1) * 1_000_000, (i + 1) * 2_000_000],
                        },
                        spans_period: 10,
                    })
                    .collect(),
                net_rx_stacks: vec![("net_rx_action;__napi_poll;process_backlog".into(), 5)],
                ..CostReport::default()
            })
            .expect("report");
    }
    let url = format!("http://{}/", server.addr());
    browser.open(&url);
    let state = "return [document.getElementById('tabs').hidden, \
                 [...document.querySelectorAll('#tabs button')].map((b) => \
                   [b.textContent, b.getAttribute('aria-selected')]), \
                 document.getElementById('view-conns').hidden, \
                 document.getElementById('view-cost').hidden, location.hash]";
    browser.wait("two tabs, the connections view first", state, |v| {
        *v == json!([
            false,
            [["Connections", "true"], ["CPU cost", "false"]],
            false,
            true,
            "#conns"
        ])
    });
    browser.wait(
        "the connection",
        "return [...document.querySelectorAll('#conns td[data-key=bytes_sent]')]\
         .map((td) => td.textContent)",
        |v| *v == json!(["4,242,424"]),
    );
    // Paused, the page keeps what it shows while new data comes in; then
    // it shows the latest at once.
    browser.click("#pause");
    let snapshot = |bytes_sent: u64, at: u64| Snapshot {
        timestamp: at,
        conns: vec![ConnRow {
            conn: conn.clone(),
            metrics: Metrics {
                bytes_sent,
                ..Metrics::default()
            },
        }],
        incremental: false,
        losses: Losses::default(),
    };
    conns_sink
        .snapshot(&snapshot(5_000_000, now + 1_000_000_000))
        .expect("snapshot");
    let served = || {
        let body = http_get(server.addr(), "/api/connections")
            .expect("GET")
            .body;
        serde_json::from_str::<Value>(&body).expect("JSON")["connections"][0]["bytes_sent"].clone()
    };
    assert_eq!(served(), 5_000_000);
    // Two polls (one a second) later, still the old value.
    std::thread::sleep(Duration::from_millis(2500));
    let bytes_shown = "return [...document.querySelectorAll('#conns td[data-key=bytes_sent]')]\
                       .map((td) => td.textContent)";
    assert_eq!(browser.run(bytes_shown, json!([])), json!(["4,242,424"]));
    browser.click("#pause");
    assert_eq!(browser.run(bytes_shown, json!([])), json!(["5,000,000"]));
    // More events at once than the server keeps (500): the page lists
    // what it got and counts what it missed.
    browser.wait(
        "the first poll of the events",
        "return document.getElementById('event-counts').textContent",
        |v| v.as_str().is_some_and(|t| t.contains("0 accept")),
    );
    for _ in 0..1100 {
        conns_sink.event(&event).expect("event");
    }
    let counts = browser.wait(
        "the events counted",
        "return document.getElementById('event-counts').textContent",
        |v| v.as_str().is_some_and(|t| t.contains("1100 accept")),
    );
    let missed: u64 = counts
        .as_str()
        .and_then(|t| t.split("; ").nth(1))
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of missed events in {counts}"));
    assert!((100..=600).contains(&missed), "{counts}");
    let listed = browser.run(
        "return document.querySelectorAll('#events tbody tr').length",
        json!([]),
    );
    assert_eq!(listed, 200, "the newest 200 are listed");
    browser.click("#tab-cost");
    let shown = browser.run(state, json!([]));
    assert_eq!(
        shown,
        json!([
            false,
            [["Connections", "false"], ["CPU cost", "true"]],
            true,
            false,
            "#cost"
        ])
    );
    browser.wait(
        "the cost table and the flame graph",
        "const d = document.getElementById('flame').contentDocument; \
         return [document.getElementById('cost-table').tBodies[0].rows.length > 0, \
           !!(d && d.documentElement && d.documentElement.textContent.includes('process_backlog'))]",
        |v| *v == json!([true, true]),
    );
    // The URL names the view: opened as #cost, the page starts there.
    browser.open(&format!("{url}#cost"));
    browser.wait("the cost view first", state, |v| {
        v[2] == json!(true) && v[3] == json!(false)
    });
    browser.assert_no_console_errors();
}

// ---------------------------------------------------------------------------
// A headless Chromium, driven through chromedriver's WebDriver HTTP API

/// What a WebDriver element reference is keyed by (W3C WebDriver).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest wait for the page to show what a test expects.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// A WebDriver session of a headless Chromium (Debian's `chromium` and
/// `chromium-driver`). Dropping it ends the session (closing the browser),
/// stops chromedriver by its PID and removes the browser profile.
struct Browser {
    port: u16,
    session: String,
    /// The browser's main process (chromedriver's `goog:processID`).
    browser_pid: Option<u32>,
    _driver: Guarded,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver and a browser; None (after printing why) when
    /// either package is missing.
    fn start(test: &str) -> Option<Browser> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            eprintln!(
                "SKIP {test}: needs {chromium} and {driver} (Debian's chromium and \
                 chromium-driver, see scripts/deps.sh)"
            );
            return None;
        }
        let mut child = std::process::Command::new(driver)
            .arg("--port=0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let guard = Guarded::new(child, libc::SIGTERM);
        // chromedriver prints the port it bound; keep reading (and
        // discarding) its output so it never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(PAGE_WAIT)
            .ok()
            .flatten()
            .expect("chromedriver did not say which port it listens on");
        let profile = temp_path("chromium-profile");
        std::fs::create_dir_all(&profile).expect("browser profile directory");
        let mut browser = Browser {
            port,
            session: String::new(),
            browser_pid: None,
            _driver: guard,
            profile,
        };
        // The flags DESIGN.md measured to work headless as root here.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", browser.profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = browser.call("POST", "/session", Some(&caps));
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        browser.browser_pid = v["capabilities"]["goog:processID"]
            .as_u64()
            .map(|p| p as u32);
        Some(browser)
    }

    /// One WebDriver command; returns its `value`, panics on an error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let sent = body.map(Value::to_string).unwrap_or_default();
        self.request(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} {sent}: {e}"))
    }

    /// One WebDriver command over HTTP/1.1 (a connection per command; the
    /// answer's length is its Content-Length: chromedriver keeps the
    /// connection open).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        use std::io::{BufRead, Read, Write};
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| format!("cannot reach chromedriver: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json; \
             charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut reader = std::io::BufReader::new(s);
        let mut length = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or("no Content-Length in the answer")?;
        let mut payload = vec![0; length];
        reader.read_exact(&mut payload).map_err(|e| e.to_string())?;
        let payload = String::from_utf8_lossy(&payload);
        let v: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
        if v["value"].get("error").is_some() {
            return Err(v["value"].to_string());
        }
        Ok(v["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn open(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(&json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` until `done` accepts its result; panics after
    /// [`PAGE_WAIT`] with `what` and the last result.
    fn wait(&self, what: &str, script: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let end = Instant::now() + PAGE_WAIT;
        loop {
            let v = self.run(script, json!([]));
            if done(&v) {
                return v;
            }
            if Instant::now() >= end {
                panic!("the page did not show {what} within {PAGE_WAIT:?}; last: {v}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.session_path("/element"),
            Some(&json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// A real click (WebDriver moves the pointer there and clicks).
    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(&json!({})),
        );
    }

    /// Clears a text field and types `text` into it, key by key.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/clear")),
            Some(&json!({})),
        );
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            Some(&json!({ "text": text })),
        );
    }

    fn set_window_width(&self, width: u32) {
        self.call(
            "POST",
            &self.session_path("/window/rect"),
            Some(&json!({"width": width, "height": 900})),
        );
    }

    /// The browser's console messages since the last call (chromedriver's
    /// log endpoint): (level, message).
    fn console(&self) -> Vec<(String, String)> {
        let v = self.call(
            "POST",
            &self.session_path("/se/log"),
            Some(&json!({"type": "browser"})),
        );
        v.as_array()
            .expect("log entries")
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Asserts the page logged no error (nor warning) so far. The check is
    /// checked: an error the test logs itself must come through.
    fn assert_no_console_errors(&self) {
        let mut logged = self.console();
        self.run("console.error('netlens-test-probe')", json!([]));
        let probe = self.console();
        assert!(
            probe
                .iter()
                .any(|(level, m)| level == "SEVERE" && m.contains("netlens-test-probe")),
            "the browser's log does not come through: {probe:?}"
        );
        logged.extend(
            probe
                .into_iter()
                .filter(|(_, m)| !m.contains("netlens-test-probe")),
        );
        let bad: Vec<_> = logged
            .iter()
            .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
            .collect();
        assert!(bad.is_empty(), "the page logged errors: {bad:?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes the browser; chromedriver itself is stopped by its guard.
            let _ = self.request("DELETE", &self.session_path(""), None);
        }
        // A browser the session did not close (chromedriver leaves it
        // running when stopped): stopped by its PID, if it is still ours.
        if let Some(pid) = self.browser_pid {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains(&*self.profile.to_string_lossy())
            });
            if ours {
                // SAFETY: kill(2) on a PID whose command line names our profile.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
