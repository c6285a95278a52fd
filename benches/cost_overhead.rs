//! Overhead of `netlens cost -f 1000`, measured as ratios of runs done side
//! by side in one benchmark run (never as timed assertions):
//!
//! - loopback bulk throughput with and without netlens;
//! - loopback request/response rate (100 bytes each way on one connection)
//!   with and without netlens;
//! - netlens's own CPU while loaded: user space (its process, from /proc)
//!   and its BPF programs (their run time, as netlens itself reports it).
//!
//! Run as root: `cargo bench --bench cost_overhead`. Rounds alternate and
//! medians of per-round ratios are compared (run-to-run noise here is
//! 10-30 %). Results go to stdout and to target/bench-cost-overhead.json.

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

/// A `netlens cost -f 1000` run; its table goes to /dev/null, its JSON log
/// to a file read at the end.
struct CostTracer {
    child: Child,
    stderr_path: PathBuf,
    log_path: PathBuf,
}

impl CostTracer {
    fn start(round: usize) -> CostTracer {
        let dir = std::env::temp_dir();
        let base = format!("netlens-bench-cost-{}-{round}", std::process::id());
        let stderr_path = dir.join(format!("{base}.err"));
        let log_path = dir.join(format!("{base}.json"));
        let stderr = fs::File::create(&stderr_path).expect("create stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_netlens"))
            .args(["cost", "-f", "1000", "-l"])
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start netlens");
        let t = CostTracer {
            child,
            stderr_path,
            log_path,
        };
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

    /// (user, system) CPU seconds of the netlens process so far.
    fn cpu_secs(&self) -> (f64, f64) {
        let st = procfs::pid_stat(self.child.id()).expect("netlens /proc stat");
        let tick = procfs::clock_ticks_per_sec() as f64;
        (st.utime as f64 / tick, st.stime as f64 / tick)
    }

    /// Stops netlens; returns the last line of its log.
    fn stop(mut self) -> Value {
        // SAFETY: kill(2) on the PID of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for netlens");
        assert!(status.success(), "netlens failed: {}", self.stderr());
        let log = fs::read_to_string(&self.log_path).expect("netlens log");
        let _ = fs::remove_file(&self.log_path);
        let _ = fs::remove_file(&self.stderr_path);
        serde_json::from_str(log.lines().last().expect("a log line")).expect("JSON log line")
    }
}

/// Runs `spawn` with this thread pinned to `cpu`, so the child inherits it.
fn on_cpu<T>(cpu: usize, spawn: impl FnOnce() -> T) -> T {
    let set = |cpus: &[usize]| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity only touch it and this thread's affinity.
        unsafe {
            let mut mask: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus {
                libc::CPU_SET(c, &mut mask);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask);
        }
    };
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    set(&[cpu]);
    let out = spawn();
    set(&(0..online).collect::<Vec<_>>());
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Compared {
    without: f64,
    with: f64,
    /// Median over rounds of (1 - with / without).
    loss: f64,
    /// netlens's user-space and system CPU over all traced rounds, fraction
    /// of one core (summed first: /proc counts 10 ms ticks).
    user_cpu: f64,
    system_cpu: f64,
    /// Run time of netlens's BPF programs over all traced rounds, fraction
    /// of one core.
    bpf_cpu: f64,
}

fn compare(name: &str, load: &dyn Fn() -> f64) -> Compared {
    let mut rounds = Vec::new();
    let (mut user, mut system, mut traced_secs) = (0.0, 0.0, 0.0);
    let (mut bpf_ns, mut elapsed_ns) = (0.0, 0.0);
    for round in 0..ROUNDS {
        let b = load();
        let t = CostTracer::start(round);
        let ((u0, s0), t0) = (t.cpu_secs(), Instant::now());
        let w = load();
        let ((u1, s1), secs) = (t.cpu_secs(), t0.elapsed().as_secs_f64());
        let last = t.stop();
        user += u1 - u0;
        system += s1 - s0;
        traced_secs += secs;
        bpf_ns += last["self"]["bpf_ns_total"].as_u64().unwrap_or(0) as f64;
        elapsed_ns += last["elapsed_ns"].as_u64().unwrap_or(0) as f64;
        eprintln!("  {name} round {round}: without {b:.0}, with {w:.0}");
        rounds.push((b, w));
    }
    Compared {
        without: median(rounds.iter().map(|r| r.0).collect()),
        with: median(rounds.iter().map(|r| r.1).collect()),
        loss: median(rounds.iter().map(|(b, w)| 1.0 - w / b).collect()),
        user_cpu: user / traced_secs,
        system_cpu: system / traced_secs,
        bpf_cpu: bpf_ns / elapsed_ns.max(1.0),
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

    eprintln!("bulk throughput, loopback, {ROUNDS} alternating rounds of {SECS} s");
    let bulk = compare("bulk", &bulk);
    eprintln!("request/response, loopback, {ROUNDS} alternating rounds of {SECS} s");
    let rr = compare("rr", &rr);
    drop(sink_srv);
    drop(echo_srv);

    println!("netlens cost -f 1000 overhead ({ROUNDS} alternating rounds; loss = median of per-round ratios)");
    println!(
        "  bulk throughput:  {:.2} GB/s without, {:.2} GB/s with (medians): {:.1} % loss (target <= 1 %)",
        bulk.without / 1e9,
        bulk.with / 1e9,
        bulk.loss * 100.0
    );
    println!(
        "  request/response: {:.0}/s without, {:.0}/s with (medians): {:.1} % loss (target <= 3 %)",
        rr.without,
        rr.with,
        rr.loss * 100.0
    );
    for (name, c) in [("bulk", &bulk), ("request/response", &rr)] {
        println!(
            "  netlens during {name}: user space {:.2} % of one core (target <= 1 %), system {:.2} %, BPF programs {:.2} %",
            c.user_cpu * 100.0,
            c.system_cpu * 100.0,
            c.bpf_cpu * 100.0
        );
    }
    let to_json = |c: &Compared| {
        json!({"without": c.without, "with": c.with, "loss": c.loss,
               "netlens_user_cpu": c.user_cpu, "netlens_system_cpu": c.system_cpu,
               "bpf_cpu": c.bpf_cpu})
    };
    let report = json!({"bulk_bytes_per_sec": to_json(&bulk), "rr_per_sec": to_json(&rr)});
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-cost-overhead.json");
    if let Err(e) = fs::write(&path, format!("{report:#}\n")) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}
