//! Overhead of `netlens cost`, measured as ratios of runs done side by side
//! in one benchmark run (never as timed assertions):
//!
//! - loopback bulk throughput and request/response rate (100 bytes each way
//!   on one connection) without netlens, with `netlens cost -f 0` (exact
//!   times only), `-f tick` (samples at the scheduler tick, no interrupt of
//!   its own), `-f 1000` (the default), and with
//!   `perf record -a -F 1000 -e cpu-clock` as a reference for what sampling
//!   at that rate costs on this machine by itself (skipped without perf);
//! - netlens's own CPU while loaded: user space (its process, from /proc)
//!   and its BPF programs (their run time, as netlens itself reports it).
//!
//! Run as root: `cargo bench --bench cost_overhead`. Each round runs every
//! configuration once, in a rotating order; losses are medians of per-round
//! ratios (run-to-run noise here is 10-30 %). Results go to stdout and to
//! target/bench-cost-overhead.json.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use support::{median, on_cpu, target_dir, QuietNetlens};

const ROUNDS: usize = 9;
const SECS: &str = "1.5";

/// A `netlens cost -f F` run; its table goes to /dev/null, its JSON log
/// to a file read at the end.
struct CostTracer {
    netlens: QuietNetlens,
    log_path: PathBuf,
}

impl CostTracer {
    fn start(frequency: &str, round: usize) -> CostTracer {
        let dir = std::env::temp_dir();
        let base = format!("netlens-bench-cost-{}-{round}", std::process::id());
        let log_path = dir.join(format!("{base}.json"));
        let args = [
            OsStr::new("cost"),
            OsStr::new("-f"),
            OsStr::new(frequency),
            OsStr::new("-l"),
            log_path.as_os_str(),
        ];
        let netlens = QuietNetlens::start(
            env!("CARGO_BIN_EXE_netlens"),
            &args,
            dir.join(format!("{base}.err")),
        );
        CostTracer { netlens, log_path }
    }

    /// (user, system) CPU seconds of the netlens process so far.
    fn cpu_secs(&self) -> (f64, f64) {
        self.netlens.cpu_secs()
    }

    /// Stops netlens; returns the last line of its log.
    fn stop(self) -> Value {
        let (status, stderr) = self.netlens.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "netlens failed: {stderr}"
        );
        let log = fs::read_to_string(&self.log_path).expect("netlens log");
        let _ = fs::remove_file(&self.log_path);
        serde_json::from_str(log.lines().last().expect("a log line")).expect("JSON log line")
    }
}

/// What runs beside the load in one configuration.
#[derive(Clone, Copy, PartialEq)]
enum Beside {
    Nothing,
    Netlens(&'static str),
    /// `perf record -a -F 1000 -e cpu-clock`: the platform's own cost of
    /// sampling at that rate.
    PerfRecord,
}

impl Beside {
    fn name(self) -> String {
        match self {
            Beside::Nothing => "without".into(),
            Beside::Netlens(f) => format!("netlens cost -f {f}"),
            Beside::PerfRecord => "perf record -F 1000".into(),
        }
    }
}

/// netlens's own cost over all rounds of one configuration.
#[derive(Default)]
struct SelfCpu {
    user_secs: f64,
    system_secs: f64,
    traced_secs: f64,
    bpf_ns: f64,
    elapsed_ns: f64,
}

/// Runs `load` once with `beside` running; returns the load's result.
fn once(beside: Beside, round: usize, load: &dyn Fn() -> f64, own: &mut SelfCpu) -> f64 {
    match beside {
        Beside::Nothing => load(),
        Beside::Netlens(f) => {
            let t = CostTracer::start(f, round);
            let ((u0, s0), t0) = (t.cpu_secs(), Instant::now());
            let w = load();
            let ((u1, s1), secs) = (t.cpu_secs(), t0.elapsed().as_secs_f64());
            let last = t.stop();
            own.user_secs += u1 - u0;
            own.system_secs += s1 - s0;
            own.traced_secs += secs;
            own.bpf_ns += last["self"]["bpf_ns_total"].as_u64().unwrap_or(0) as f64;
            own.elapsed_ns += last["elapsed_ns"].as_u64().unwrap_or(0) as f64;
            w
        }
        Beside::PerfRecord => {
            let out =
                std::env::temp_dir().join(format!("netlens-bench-perf-{}", std::process::id()));
            let child = Command::new("perf")
                .args(["record", "-a", "-F", "1000", "-e", "cpu-clock", "-o"])
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start perf");
            let perf = Guarded::new(child, libc::SIGINT);
            // perf needs a moment to open its events on every CPU.
            std::thread::sleep(Duration::from_millis(500));
            let w = load();
            perf.stop();
            let _ = fs::remove_file(&out);
            w
        }
    }
}

struct Compared {
    /// Medians per configuration, in the order given.
    medians: Vec<f64>,
    /// Median over rounds of (1 - with / without), per configuration.
    losses: Vec<f64>,
    own: Vec<SelfCpu>,
}

fn compare(name: &str, configs: &[Beside], load: &dyn Fn() -> f64) -> Compared {
    let mut results = vec![Vec::new(); configs.len()];
    let mut own: Vec<SelfCpu> = configs.iter().map(|_| SelfCpu::default()).collect();
    for round in 0..ROUNDS {
        // Rotate the order so no configuration always follows another.
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let v = once(configs[i], round, load, &mut own[i]);
            results[i].push(v);
        }
        let line: Vec<String> = configs
            .iter()
            .zip(&results)
            .map(|(c, r)| format!("{} {:.0}", c.name(), r[round]))
            .collect();
        eprintln!("  {name} round {round}: {}", line.join(", "));
    }
    let base = &results[0];
    Compared {
        medians: results.iter().map(|r| median(r.clone())).collect(),
        losses: results
            .iter()
            .map(|r| median(r.iter().zip(base).map(|(w, b)| 1.0 - w / b).collect()))
            .collect(),
        own,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "cost overhead benchmark: run it with `cargo bench --bench cost_overhead` (as root)"
        );
        return;
    }
    if !require_root() {
        return;
    }
    // Servers on CPU 1, load generators on CPU 0 (see benches/overhead.rs).
    let (sink_srv, sink_addr) = on_cpu(1, || {
        server(
            None,
            &["--listen", "127.0.0.1:0", "--sink", "--max-secs", "900"],
        )
    });
    let (echo_srv, echo_addr) = on_cpu(1, || {
        server(
            None,
            &["--listen", "127.0.0.1:0", "--echo", "--max-secs", "900"],
        )
    });
    let (sink_to, echo_to) = (sink_addr.to_string(), echo_addr.to_string());
    let bulk = || -> f64 {
        let out = on_cpu(0, || {
            peer(None, &["bulk", "--to", &sink_to, "--secs", SECS])
        })
        .finish_output();
        one(&out.events, "bulk")["bytes_per_sec"]
            .as_f64()
            .expect("bytes_per_sec")
    };
    let rr = || -> f64 {
        let out = on_cpu(0, || {
            peer(
                None,
                &["rr", "--to", &echo_to, "--secs", SECS, "--size", "100"],
            )
        })
        .finish_output();
        one(&out.events, "rr")["transactions_per_sec"]
            .as_f64()
            .expect("transactions_per_sec")
    };

    let mut configs = vec![
        Beside::Nothing,
        Beside::Netlens("0"),
        Beside::Netlens("tick"),
        Beside::Netlens("1000"),
    ];
    if Command::new("perf").arg("--version").output().is_ok() {
        configs.push(Beside::PerfRecord);
    } else {
        eprintln!("perf not installed: the perf record reference is skipped");
    }
    eprintln!("bulk throughput, loopback, {ROUNDS} rounds of {SECS} s per configuration");
    let bulk = compare("bulk", &configs, &bulk);
    eprintln!("request/response, loopback, {ROUNDS} rounds of {SECS} s per configuration");
    let rr = compare("rr", &configs, &rr);
    drop(sink_srv);
    drop(echo_srv);

    println!(
        "netlens cost overhead ({ROUNDS} rounds; loss = median of per-round ratios to `without`)"
    );
    let mut report = serde_json::Map::new();
    for (load, unit, scale, c) in [
        ("bulk throughput", "GB/s", 1e9, &bulk),
        ("request/response", "/s", 1.0, &rr),
    ] {
        let mut entries = Vec::new();
        for (i, cfg) in configs.iter().enumerate() {
            let loss = if i == 0 {
                String::new()
            } else {
                format!(": {:.1} % loss", c.losses[i] * 100.0)
            };
            println!(
                "  {load:<17} {:<22} {:>8.2} {unit}{loss}",
                cfg.name(),
                c.medians[i] / scale
            );
            let own = &c.own[i];
            if let Beside::Netlens(_) = cfg {
                println!(
                    "  {:<17} {:<22} netlens user space {:.2} % of one core, system {:.2} %, BPF programs {:.2} %",
                    "", "",
                    own.user_secs / own.traced_secs * 100.0,
                    own.system_secs / own.traced_secs * 100.0,
                    own.bpf_ns / own.elapsed_ns.max(1.0) * 100.0
                );
            }
            entries.push(json!({
                "config": cfg.name(), "median": c.medians[i], "loss": c.losses[i],
                "netlens_user_cpu": (own.traced_secs > 0.0).then(|| own.user_secs / own.traced_secs),
                "netlens_system_cpu": (own.traced_secs > 0.0).then(|| own.system_secs / own.traced_secs),
                "bpf_cpu": (own.elapsed_ns > 0.0).then(|| own.bpf_ns / own.elapsed_ns),
            }));
        }
        report.insert(load.replace(' ', "_"), Value::Array(entries));
    }
    println!("  targets: bulk loss <= 1 %, request/response loss <= 3 %, netlens user space <= 1 % of one core");
    let path = target_dir().join("bench-cost-overhead.json");
    if let Err(e) = fs::write(&path, format!("{:#}\n", Value::Object(report))) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}
