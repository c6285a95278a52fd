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

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netlens::sys::procfs;
use serde_json::{json, Value};

const ROUNDS: usize = 9;
const SECS: &str = "1.5";
/// Idle TCP connections held open; both ends are on this host, so netlens
/// tracks twice as many sockets (each end is one row of its output).
const IDLE_PAIRS: [usize; 2] = [5_000, 10_000];
const IDLE_MEASURE: Duration = Duration::from_secs(15);

/// A `netlens conns` run whose output goes to files (parsing it here would
/// cost CPU on the machine being measured).
struct Tracer {
    child: Child,
    stderr_path: PathBuf,
}

impl Tracer {
    fn start(args: &[&str], tag: &str) -> Tracer {
        let dir = std::env::temp_dir();
        let stderr_path = dir.join(format!("netlens-bench-{tag}-{}.err", std::process::id()));
        let stderr = fs::File::create(&stderr_path).expect("create stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_netlens"))
            .arg("conns")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start netlens");
        let t = Tracer { child, stderr_path };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t.stderr().contains(NETLENS_READY) {
            assert!(
                Instant::now() < deadline,
                "netlens not ready:\n{}",
                t.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// user + system CPU seconds so far.
    fn cpu_secs(&self) -> f64 {
        let st = procfs::pid_stat(self.child.id()).expect("netlens /proc/PID/stat");
        (st.utime + st.stime) as f64 / procfs::clock_ticks_per_sec() as f64
    }

    /// SIGTERM, wait, and return what it printed on stderr.
    fn stop(mut self) -> String {
        // SAFETY: kill() on the PID of our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let err = self.stderr();
        let _ = fs::remove_file(&self.stderr_path);
        err
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// "lost: N events" from netlens's exit line.
fn events_lost(stderr: &str) -> u64 {
    stderr
        .rsplit_once("lost: ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Alternating rounds of `load` without and with netlens (JSON to
/// /dev/null); returns the medians without and with, the most events lost
/// in a traced round, and netlens's median CPU (fraction of one core).
fn compare(name: &str, load: &dyn Fn() -> f64) -> (f64, f64, u64, f64) {
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
    (median(base), median(traced), lost, median(cpu))
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

fn bpf_prog_stats() -> Vec<(String, u64, u64)> {
    let out = run("bpftool", &["-j", "prog", "show"]);
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
    let (srv, srv_addr) = server(
        None,
        &["--listen", "127.0.0.1:0", "--sink", "--max-secs", "900"],
    );
    let to = srv_addr.to_string();

    let bulk = || -> f64 {
        let out = peer(None, &["bulk", "--to", &to, "--secs", SECS]).finish_output();
        one(&out.events, "bulk")["bytes_per_sec"]
            .as_f64()
            .expect("bytes_per_sec")
    };
    let churn = || -> f64 {
        let out = peer(None, &["churn", "--to", &to, "--secs", SECS]).finish_output();
        one(&out.events, "churn")["conns_per_sec"]
            .as_f64()
            .expect("conns_per_sec")
    };

    eprintln!("bulk throughput, loopback, {ROUNDS} alternating rounds of {SECS} s");
    let (bulk_base, bulk_traced, _, bulk_cpu) = compare("bulk", &bulk);
    eprintln!("short connections, loopback, {ROUNDS} alternating rounds of {SECS} s");
    let (churn_base, churn_traced, churn_lost, churn_cpu) = compare("churn", &churn);

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

    let bulk_loss = 1.0 - bulk_traced / bulk_base;
    let churn_loss = 1.0 - churn_traced / churn_base;
    println!("netlens conns overhead (medians of {ROUNDS} alternating rounds)");
    println!(
        "  bulk throughput:   {:.2} GB/s without, {:.2} GB/s with: {:+.1} % loss (target <= 1 %)",
        bulk_base / 1e9,
        bulk_traced / 1e9,
        bulk_loss * 100.0
    );
    println!(
        "  connection rate:   {churn_base:.0}/s without, {churn_traced:.0}/s with: {:+.1} % loss (target <= 3 %); events lost: {churn_lost}",
        churn_loss * 100.0
    );
    println!(
        "  netlens's own CPU while loaded: {:.2} % of one core (bulk), {:.2} % (connections)",
        bulk_cpu * 100.0,
        churn_cpu * 100.0
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
        "bulk_bytes_per_sec": {"without": bulk_base, "with": bulk_traced, "loss": bulk_loss},
        "conns_per_sec": {"without": churn_base, "with": churn_traced, "loss": churn_loss,
                          "events_lost": churn_lost},
        "netlens_cpu_fraction_of_core_loaded": {"bulk": bulk_cpu, "churn": churn_cpu},
        "idle_cpu_fraction_of_core": idle.iter().map(|(pairs, (logging, json))| json!({
            "connections": pairs, "sockets_tracked": 2 * pairs, "logging": logging, "json": json,
        })).collect::<Vec<_>>(),
        "bpf_programs": progs,
    });
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-overhead.json");
    if let Err(e) = fs::write(&path, format!("{report:#}\n")) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}
