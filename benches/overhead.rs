//! Overhead of `netlens conns`, measured as ratios of runs done side by side
//! in one benchmark run (never as timed assertions):
//!
//! - loopback bulk throughput with and without netlens;
//! - loopback short-connection rate (connect, 1 byte each way, close) with
//!   and without netlens, and whether netlens lost any event at that rate;
//! - netlens's own CPU (user + system, from /proc) with 10,000 idle
//!   connections open, at a 1 s interval, in logging mode with a log file;
//! - the run time of netlens's BPF programs (kernel.bpf_stats_enabled).
//!
//! Run as root: `cargo bench --bench overhead`. Rounds alternate (without,
//! with, without, ...) and medians are compared, since this machine's
//! run-to-run noise is 10-30 %. Results go to stdout and to
//! target/bench-overhead.json.
//!
//! To compare two builds, set NETLENS_BENCH_OTHER to another netlens
//! binary: only the connection-rate rounds run, each one without netlens,
//! with this build and with the other one, back to back, so both builds see
//! the same machine state (comparing separate bench runs drowns a 1 %
//! difference in the noise).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use support::{events_lost, median, on_cpu, target_dir, QuietNetlens};

const ROUNDS: usize = 9;
const SECS: &str = "1.5";
/// Idle TCP connections held open; both ends are on this host, so netlens
/// tracks twice as many sockets (each end is one row of its output).
const IDLE_PAIRS: [usize; 2] = [5_000, 10_000];
const IDLE_MEASURE: Duration = Duration::from_secs(15);

/// A `netlens conns` run whose output goes to files.
struct Tracer(QuietNetlens);

impl Tracer {
    fn start(args: &[&str], tag: &str) -> Tracer {
        Tracer::start_bin(env!("CARGO_BIN_EXE_netlens"), args, tag)
    }

    fn start_bin(bin: &str, args: &[&str], tag: &str) -> Tracer {
        let stderr_path =
            std::env::temp_dir().join(format!("netlens-bench-{tag}-{}.err", std::process::id()));
        let mut full = vec!["conns"];
        full.extend_from_slice(args);
        Tracer(QuietNetlens::start(bin, &full, stderr_path))
    }

    /// user + system CPU seconds so far.
    fn cpu_secs(&self) -> f64 {
        let (user, system) = self.0.cpu_secs();
        user + system
    }

    /// SIGTERM, wait, and return what it printed on stderr.
    fn stop(self) -> String {
        self.0.stop().1
    }
}

/// What alternating rounds of one load measured.
struct Compared {
    /// Medians without and with netlens.
    without: f64,
    with: f64,
    /// Median over rounds of (1 - with / without), each round comparing the
    /// two runs done back to back: robust to the machine's slow drifts.
    loss: f64,
    /// Most events lost in a traced round.
    events_lost: u64,
    /// netlens's median CPU during traced rounds (fraction of one core).
    cpu: f64,
}

/// Alternating rounds of `load` without and with netlens (JSON to
/// /dev/null).
fn compare(name: &str, load: &dyn Fn() -> f64) -> Compared {
    let (mut base, mut traced, mut lost, mut cpu) = (Vec::new(), Vec::new(), 0, Vec::new());
    for round in 0..ROUNDS {
        let b = load();
        let t = Tracer::start(&["-f", "--json", "--no-log-file", "-t", "1"], name);
        let (c0, t0) = (t.cpu_secs(), Instant::now());
        let w = load();
        cpu.push((t.cpu_secs() - c0) / t0.elapsed().as_secs_f64());
        let err = t.stop();
        lost = lost.max(events_lost(&err));
        eprintln!("  {name} round {round}: without {b:.0}, with {w:.0}");
        base.push(b);
        traced.push(w);
    }
    let losses = base.iter().zip(&traced).map(|(b, w)| 1.0 - w / b).collect();
    Compared {
        without: median(base),
        with: median(traced),
        loss: median(losses),
        events_lost: lost,
        cpu: median(cpu),
    }
}

/// netlens's CPU (fraction of one core) at `-t 1` with `pairs` idle
/// connections open, in logging mode with a log file and in JSON mode.
fn idle_cpu(to: &str, pairs: usize) -> (f64, f64) {
    let hold = peer(
        None,
        &[
            "hold",
            "--to",
            to,
            "--count",
            &pairs.to_string(),
            "--secs",
            "120",
        ],
    );
    hold.wait_event("holding");
    // Let the server side finish accepting before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let log_dir = std::env::temp_dir().join(format!("netlens-bench-log-{}", std::process::id()));
    let log_arg = log_dir.to_string_lossy().to_string();
    let mut out = Vec::new();
    for args in [
        vec!["-f", "-t", "1", "--log-dir", log_arg.as_str()],
        vec!["-f", "-t", "1", "--json", "--no-log-file"],
    ] {
        let t = Tracer::start(&args, "idle");
        std::thread::sleep(Duration::from_secs(3));
        let (c0, t0) = (t.cpu_secs(), Instant::now());
        std::thread::sleep(IDLE_MEASURE);
        out.push((t.cpu_secs() - c0) / t0.elapsed().as_secs_f64());
        t.stop();
    }
    let _ = fs::remove_dir_all(&log_dir);
    drop(hold);
    (out[0], out[1])
}

/// Rounds of `load` without netlens, with this build and with `other`
/// (JSON to /dev/null); prints the median loss of each build.
fn compare_builds(other: &str, load: &dyn Fn() -> f64) {
    const TRACER: [&str; 5] = ["-f", "--json", "--no-log-file", "-t", "1"];
    let (mut this_loss, mut other_loss) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let b = load();
        // Alternate which build runs first, so neither always follows the
        // untraced run.
        let run_with = |bin: &str| {
            let t = Tracer::start_bin(bin, &TRACER, "ab");
            let w = load();
            let lost = events_lost(&t.stop());
            (w, lost)
        };
        let ((w, lost), (o, other_lost)) = if round % 2 == 0 {
            let w = run_with(env!("CARGO_BIN_EXE_netlens"));
            (w, run_with(other))
        } else {
            let o = run_with(other);
            (run_with(env!("CARGO_BIN_EXE_netlens")), o)
        };
        eprintln!(
            "  round {round}: without {b:.0}, this build {w:.0} (lost {lost}), other {o:.0} (lost {other_lost})"
        );
        this_loss.push(1.0 - w / b);
        other_loss.push(1.0 - o / b);
    }
    let spread = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        format!(
            "median {:.1} %, quartiles {:.1} .. {:.1} %",
            v[v.len() / 2] * 100.0,
            v[v.len() / 4] * 100.0,
            v[v.len() * 3 / 4] * 100.0
        )
    };
    println!("connection-rate loss, this build: {}", spread(&this_loss));
    println!("connection-rate loss, {other}: {}", spread(&other_loss));
}

fn bpf_prog_stats() -> Vec<(String, u64, u64)> {
    let out = match Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("bpftool not available ({e}): per-program run times skipped");
            return Vec::new();
        }
    };
    let progs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    progs
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let name = p["name"].as_str()?.to_string();
                    Some((name, p["run_time_ns"].as_u64()?, p["run_cnt"].as_u64()?))
                })
                .filter(|(n, _, _)| n.starts_with("on_"))
                .collect()
        })
        .unwrap_or_default()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("overhead benchmark: run it with `cargo bench --bench overhead` (as root)");
        return;
    }
    if !require_root() {
        return;
    }
    // Server on CPU 1, load generators on CPU 0, netlens wherever the
    // scheduler puts it: unpinned, loopback throughput swings by 30 % with
    // where the two ends happen to run.
    let (srv, srv_addr) = on_cpu(1, || {
        server(
            None,
            &["--listen", "127.0.0.1:0", "--sink", "--max-secs", "900"],
        )
    });
    let to = srv_addr.to_string();
    let other = std::env::var("NETLENS_BENCH_OTHER").ok();

    let bulk = || -> f64 {
        let out = on_cpu(0, || peer(None, &["bulk", "--to", &to, "--secs", SECS])).finish_output();
        one(&out.events, "bulk")["bytes_per_sec"]
            .as_f64()
            .expect("bytes_per_sec")
    };
    let churn = || -> f64 {
        let out = on_cpu(0, || peer(None, &["churn", "--to", &to, "--secs", SECS])).finish_output();
        one(&out.events, "churn")["conns_per_sec"]
            .as_f64()
            .expect("conns_per_sec")
    };

    if let Some(other) = other {
        eprintln!("short connections, loopback, {ROUNDS} rounds: without, this build, {other}");
        compare_builds(&other, &churn);
        return;
    }
    eprintln!("bulk throughput, loopback, {ROUNDS} alternating rounds of {SECS} s");
    let bulk = compare("bulk", &bulk);
    eprintln!("short connections, loopback, {ROUNDS} alternating rounds of {SECS} s");
    let conns = compare("churn", &churn);

    // BPF-side cost per program run, under connection churn.
    let _ = run("sysctl", &["-q", "kernel.bpf_stats_enabled=1"]);
    let t = Tracer::start(&["-f", "--json", "--no-log-file", "-t", "1"], "stats");
    churn();
    let stats = bpf_prog_stats();
    t.stop();
    let _ = run("sysctl", &["-q", "kernel.bpf_stats_enabled=0"]);

    let mut idle = Vec::new();
    for pairs in IDLE_PAIRS {
        eprintln!(
            "netlens CPU with {pairs} idle connections ({} sockets), -t 1",
            2 * pairs
        );
        idle.push((pairs, idle_cpu(&to, pairs)));
    }
    drop(srv);

    println!(
        "netlens conns overhead ({ROUNDS} alternating rounds; loss = median of per-round ratios)"
    );
    println!(
        "  bulk throughput:   {:.2} GB/s without, {:.2} GB/s with (medians): {:.1} % loss (target <= 1 %)",
        bulk.without / 1e9,
        bulk.with / 1e9,
        bulk.loss * 100.0
    );
    println!(
        "  connection rate:   {:.0}/s without, {:.0}/s with (medians): {:.1} % loss (target <= 3 %); events lost: {}",
        conns.without,
        conns.with,
        conns.loss * 100.0,
        conns.events_lost
    );
    println!(
        "  netlens's own CPU while loaded: {:.2} % of one core (bulk), {:.2} % (connections)",
        bulk.cpu * 100.0,
        conns.cpu * 100.0
    );
    for (pairs, (logging, json)) in &idle {
        println!(
            "  idle, -t 1, {pairs} connections ({} sockets tracked): {:.2} % of one core (logging + log file), {:.2} % (JSON) (target <= 1 % for 10,000)",
            2 * pairs,
            logging * 100.0,
            json * 100.0
        );
    }
    let mut progs = Vec::new();
    for (name, ns, cnt) in &stats {
        if *cnt > 0 {
            println!(
                "  bpf {name:<18} {cnt:>9} runs, {:>6.0} ns/run",
                *ns as f64 / *cnt as f64
            );
        }
        progs.push(json!({"name": name, "run_time_ns": ns, "run_cnt": cnt}));
    }
    let report = json!({
        "bulk_bytes_per_sec": {"without": bulk.without, "with": bulk.with, "loss": bulk.loss},
        "conns_per_sec": {"without": conns.without, "with": conns.with, "loss": conns.loss,
                          "events_lost": conns.events_lost},
        "netlens_cpu_fraction_of_core_loaded": {"bulk": bulk.cpu, "churn": conns.cpu},
        "idle_cpu_fraction_of_core": idle.iter().map(|(pairs, (logging, json))| json!({
            "connections": pairs, "sockets_tracked": 2 * pairs, "logging": logging, "json": json,
        })).collect::<Vec<_>>(),
        "bpf_programs": progs,
    });
    let path = target_dir().join("bench-overhead.json");
    if let Err(e) = fs::write(&path, format!("{report:#}\n")) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}
