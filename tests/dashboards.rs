//! The Grafana dashboards (`deploy/grafana/dashboards`) and the compose file
//! (`deploy/compose`). Grafana cannot run here, so every query of every
//! panel is asked of a real Prometheus (Debian's) scraping a real netlens
//! agent under traffic, with Grafana's variables filled in as Grafana
//! would, and must return data; the compose file is checked by
//! docker-compose itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const DASHBOARDS: [&str; 2] = ["netlens-connections.json", "netlens-network-cpu.json"];

/// What `$__rate_interval` is with the 1 s scrapes of the test's Prometheus:
/// Grafana makes it at least four scrape intervals.
const RATE_INTERVAL: &str = "15s";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn dashboard(name: &str) -> Value {
    let path = deploy("grafana/dashboards").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Every panel, those inside collapsed rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, query) of every query, with the variables as Grafana
/// fills them: all hosts, and the rate interval.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            let expr = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$instance", ".*");
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    out
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        uids.push(d["uid"].as_str().expect("uid").to_string());
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(vars, ["datasource", "instance"], "{name}");
        let mut ids = Vec::new();
        for p in panels(&d) {
            ids.push(p["id"].as_u64().expect("panel id"));
            let grid = &p["gridPos"];
            let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
            assert!(x + w <= 24, "{name}: {} is wider than the grid", p["title"]);
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().expect("title");
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {title} has no description"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            for t in std::iter::once(p).chain(targets) {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{name}: {title} does not use the datasource variable"
                );
            }
        }
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "{name}: panel ids are not unique");
        assert!(queries(&d).len() >= 10, "{name}");
    }
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(
        uids.len(),
        DASHBOARDS.len(),
        "dashboard uids are not unique"
    );
}

/// The agent (both roles) under connection churn between two namespaces,
/// with one refused connect; Prometheus scrapes it every second. Each
/// query must give at least one series, and no NaN: a panel that shows
/// nothing on a busy host is a broken panel.
#[test]
fn every_panel_query_returns_data_from_a_real_prometheus() {
    if !require_root() {
        return;
    }
    let binary = PrometheusServer::binary();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
    cmd.args(["agent", "-P", "127.0.0.1:0", "--user-period", "500"]);
    let nl = Netlens::start_cmd(cmd);
    let prom = PrometheusServer::start(&binary, &[nl.prometheus_addr()]);

    let pair = served_pair("gd", 0, false, &["--respond", "1", "--max-secs", "60"]);
    let refused = peer(
        Some(&pair.a),
        &[
            "connect",
            "--to",
            &std::net::SocketAddr::new(pair.veth.b(false), 9).to_string(),
            "--send",
            "1",
        ],
    )
    .finish_output();
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    // Traffic for as long as the queries may wait, bounded in count too.
    let churn = peer(
        Some(&pair.a),
        &[
            "churn",
            "--to",
            &pair.addr.to_string(),
            "--secs",
            "50",
            "--max",
            "200000",
        ],
    );

    let mut failed = Vec::new();
    for name in DASHBOARDS {
        for (title, query) in queries(&dashboard(name)) {
            let (result, ok) = prom.wait_query(&query, Duration::from_secs(30), |r| {
                !r.is_empty() && r.iter().all(|(_, v)| !v.is_nan())
            });
            eprintln!("{name}: {title}: {} series", result.len());
            if !ok {
                failed.push(format!("{name}: {title}: {query} gave {result:?}"));
            }
        }
    }
    drop(churn);
    assert!(
        failed.is_empty(),
        "panel queries without data:\n{}\nnetlens stderr:\n{}\nprometheus log:\n{}",
        failed.join("\n"),
        nl.stderr(),
        prom.log_text()
    );
}

#[test]
fn compose_file_is_valid_and_finds_its_files() {
    let dir = deploy("compose");
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(&dir)
        .output()
        .expect("docker-compose (scripts/deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for service in ["netlens:", "prometheus:", "grafana:", "pyroscope:"] {
        assert!(stdout.contains(service), "no {service} in:\n{stdout}");
    }
    // The bind mounts name files of the tree.
    for path in [
        "prometheus.yml",
        "../grafana/provisioning/datasources/netlens.yaml",
        "../grafana/provisioning/dashboards/netlens.yaml",
        "../grafana/dashboards/netlens-connections.json",
    ] {
        assert!(dir.join(path).is_file(), "{path} is missing");
    }
}
