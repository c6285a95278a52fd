//! What netlens and its peers cost the traffic they watch, with real
//! servers and clients, measured as ratios of runs done side by side in one
//! benchmark run (never as timed assertions).
//!
//! Loads, all on 127.0.0.1 (`NETLENS_BENCH_LOADS`, comma-separated; default
//! all, in this order):
//! - `rr`: nginx (1 worker, its own config and prefix in a temporary
//!   directory, a 512-byte file, no access log, 1,000,000 requests per
//!   connection) and `wrk -t1 -c32` on persistent connections; requests/s.
//! - `churn`: the same nginx and `wrk -t1 -c32 -H 'Connection: close'`:
//!   one connection per request; requests/s = connections/s.
//! - `bulk`: `iperf3 -c 127.0.0.1 -t SECS -J`, one stream, against
//!   `iperf3 -s -B 127.0.0.1`; bits/s received.
//! - `peer-rr`, `peer-churn`, `peer-bulk`: the project's own traffic
//!   generator, netlens-peer (`rr --size 100` against `serve --echo`,
//!   `churn` and `bulk` against `serve --sink`), as in the overhead and
//!   cost_overhead benchmarks; transactions/s, connections/s, bits/s.
//!
//! Configurations, each run beside every load (`NETLENS_BENCH_CONFIGS`,
//! comma-separated; the baseline, nothing running, is always measured):
//! - `conns`: `netlens conns -f --json --no-log-file`, JSON to a file (`-f`
//!   traces loopback connections, which netlens leaves out by default);
//! - `cost`: `netlens cost` with its default sampling (`-f auto`), its table
//!   to a file;
//! - `cost-per-call`: the same with `--syscall-hook per-call` (system calls
//!   timed on their own tracepoints instead of raw_syscalls, the default);
//! - `cost-no-processes`: `netlens cost --max-processes 0`, without the
//!   per-process and per-container accounting (what that accounting
//!   costs is the pair of this and `cost`);
//! - `tcplife`, `tcpstates`, `softirqs`, `hardirqs`: Debian's libbpf-tools
//!   (/usr/sbin), default options, output to a file.
//!
//! Each round runs every configuration once; the order changes from round to
//! round (a balanced Latin square: each configuration runs in every position,
//! and after each other one, equally often), so no configuration always
//! follows the baseline. A tool starts before the load: netlens until it
//! prints `netlens: ready`, a peer until each of its BPF programs has a BPF
//! link (/proc/PID/fdinfo); then every tool idles `NETLENS_BENCH_WARMUP`
//! seconds (default 1) before the load, and gets SIGTERM (netlens) or SIGINT
//! (peers) by its PID after it. Servers run on CPU 1, clients on CPU 0, tools
//! wherever the scheduler puts them; each load has one unmeasured warm-up
//! run, and one second of quiet separates two runs.
//!
//! Reported per load and configuration: median throughput, min, max, spread
//! ((max - min) / median), the pair ratio (median over rounds of tool /
//! baseline of the same round: 1.00 = no measurable cost), the tool's own
//! CPU (user + system of its process tree from /proc, % of one core during
//! the load), the lines it printed (a check that it saw the traffic), and
//! for netlens the losses it reports on exit (lost events must be 0). A
//! markdown table (rows: loads, columns: configurations, cells: pair
//! ratios) ends the output; all figures go to target/bench-servers.json.
//!
//! Run as root: `cargo bench --bench servers` (or `scripts/bench.sh`, which
//! installs what is missing). It needs the Debian packages of
//! `NETLENS_BENCH_PKGS` in scripts/deps.sh:
//! `apt-get install nginx wrk iperf3 libbpf-tools`.
//! `NETLENS_BENCH_ROUNDS` (default 9; report nothing from fewer),
//! `NETLENS_BENCH_SECS` (whole seconds per run, default 5). With the
//! defaults a run takes about 6 loads x 7 configurations x 9 rounds x 7.4 s,
//! 47 minutes. A quick check of the benchmark itself (6 minutes):
//! `NETLENS_BENCH_ROUNDS=2 NETLENS_BENCH_SECS=2 cargo bench --bench servers`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_local_port, is_root, peer, server, Guarded, Peer};
use netlens::sys::procfs;
use serde_json::{json, Map, Value};
use support::{exit_losses, median, on_cpu, target_dir, tree_cpu_secs, QuietNetlens};

/// Server side of the loads.
const SERVER_CPU: usize = 1;
/// Client side of the loads.
const CLIENT_CPU: usize = 0;
/// wrk's connections (one thread).
const WRK_CONNS: usize = 32;
/// Size of the file nginx serves.
const PAGE_BYTES: usize = 512;
/// netlens-peer's request and response size in `peer-rr`.
const PEER_RR_BYTES: &str = "100";
/// How long a load may run beyond its length before it is killed.
const LOAD_SLACK: Duration = Duration::from_secs(20);
/// How long a peer tool may take to attach its programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Quiet between two runs.
const GAP: Duration = Duration::from_secs(1);
/// Rounds below which the figures are only a check of the benchmark.
const MIN_ROUNDS: usize = 9;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Load {
    Rr,
    Churn,
    Bulk,
    PeerRr,
    PeerChurn,
    PeerBulk,
}

impl Load {
    const ALL: [Load; 6] = [
        Load::Rr,
        Load::Churn,
        Load::Bulk,
        Load::PeerRr,
        Load::PeerChurn,
        Load::PeerBulk,
    ];

    fn name(self) -> &'static str {
        match self {
            Load::Rr => "rr",
            Load::Churn => "churn",
            Load::Bulk => "bulk",
            Load::PeerRr => "peer-rr",
            Load::PeerChurn => "peer-churn",
            Load::PeerBulk => "peer-bulk",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Load::Rr => "nginx + wrk -t1 -c32, keep-alive",
            Load::Churn => "nginx + wrk -t1 -c32, Connection: close",
            Load::Bulk => "iperf3, one stream",
            Load::PeerRr => "netlens-peer rr, 100 bytes each way",
            Load::PeerChurn => "netlens-peer churn, 1 byte each way",
            Load::PeerBulk => "netlens-peer bulk, one stream",
        }
    }

    /// Unit of the figure, and the divisor that shows it in that unit.
    fn unit(self) -> (&'static str, f64) {
        match self {
            Load::Rr | Load::Churn => ("req/s", 1.0),
            Load::Bulk | Load::PeerBulk => ("Gbit/s", 1e9),
            Load::PeerRr => ("transactions/s", 1.0),
            Load::PeerChurn => ("connections/s", 1.0),
        }
    }

    /// Programs it needs (the peer's own are built with the benchmark).
    fn programs(self) -> &'static [&'static str] {
        match self {
            Load::Rr | Load::Churn => &["nginx", "wrk"],
            Load::Bulk => &["iperf3"],
            Load::PeerRr | Load::PeerChurn | Load::PeerBulk => &[],
        }
    }
}

/// What runs beside a load.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tool {
    Baseline,
    Conns,
    Cost,
    /// `cost --syscall-hook per-call`.
    CostPerCall,
    /// `cost --max-processes 0`: no per-process accounting.
    CostNoProcesses,
    /// A libbpf-tools program: its name, the start of its output (which
    /// shows that it ran), and whether it streams events through a perf
    /// buffer (it then prints `lost N events on CPU #C` on stderr for each
    /// loss).
    Peer(&'static str, &'static str, bool),
}

const PEERS: [Tool; 4] = [
    Tool::Peer("tcplife", "PID", true),
    Tool::Peer("tcpstates", "SKADDR", true),
    Tool::Peer("softirqs", "Tracing soft irq event time", false),
    Tool::Peer("hardirqs", "Tracing hard irq event time", false),
];

impl Tool {
    fn all() -> Vec<Tool> {
        let mut v = vec![
            Tool::Conns,
            Tool::Cost,
            Tool::CostPerCall,
            Tool::CostNoProcesses,
        ];
        v.extend(PEERS);
        v
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Baseline => "baseline",
            Tool::Conns => "conns",
            Tool::Cost => "cost",
            Tool::CostPerCall => "cost-per-call",
            Tool::CostNoProcesses => "cost-no-processes",
            Tool::Peer(name, ..) => name,
        }
    }

    /// Its column heading in the markdown table.
    fn heading(self) -> String {
        match self {
            Tool::Baseline => "baseline".into(),
            Tool::Conns | Tool::Cost => format!("`netlens {}`", self.name()),
            Tool::CostPerCall => "`netlens cost --syscall-hook per-call`".into(),
            Tool::CostNoProcesses => "`netlens cost --max-processes 0`".into(),
            Tool::Peer(name, ..) => format!("`{name}`"),
        }
    }

    /// The command line it runs with (peers: the program is found at run
    /// time).
    fn args(self) -> Vec<&'static str> {
        match self {
            Tool::Baseline => vec![],
            Tool::Conns => vec!["conns", "-f", "--json", "--no-log-file"],
            Tool::Cost => vec!["cost"],
            Tool::CostPerCall => vec!["cost", "--syscall-hook", "per-call"],
            Tool::CostNoProcesses => vec!["cost", "--max-processes", "0"],
            Tool::Peer(..) => vec![],
        }
    }

    fn command(self) -> String {
        match self {
            Tool::Baseline => String::new(),
            Tool::Conns | Tool::Cost | Tool::CostPerCall | Tool::CostNoProcesses => {
                format!("netlens {}", self.args().join(" "))
            }
            Tool::Peer(name, ..) => format!("/usr/sbin/{name}"),
        }
    }
}

/// Debian package of a program the benchmark runs.
fn debian_package(program: &str) -> &'static str {
    match program {
        "nginx" => "nginx",
        "wrk" => "wrk",
        "iperf3" => "iperf3",
        _ => "libbpf-tools",
    }
}

/// `name` in PATH or in /usr/sbin and /sbin (where Debian installs nginx
/// and libbpf-tools, often outside a user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = path.split(':').filter(|d| !d.is_empty()).collect();
    dirs.extend(["/usr/sbin", "/sbin"]);
    dirs.into_iter().map(|d| Path::new(d).join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    rounds: usize,
    secs: u64,
    warmup: Duration,
    loads: Vec<Load>,
    /// Baseline first.
    tools: Vec<Tool>,
}

/// Reads the NETLENS_BENCH_* variables; Err(message) on a bad value.
fn settings() -> Result<Settings, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name}={v}: a whole number above 0, please")),
        }
    };
    let rounds = number("NETLENS_BENCH_ROUNDS", MIN_ROUNDS as u64)? as usize;
    let secs = number("NETLENS_BENCH_SECS", 5)?;
    let warmup = match var("NETLENS_BENCH_WARMUP") {
        None => Duration::from_secs(1),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..=60.0).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("NETLENS_BENCH_WARMUP={v}: seconds from 0 to 60, please"))?,
    };
    let list = |name: &str| -> Option<Vec<String>> {
        var(name).map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    };
    let loads = match list("NETLENS_BENCH_LOADS") {
        None => Load::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                Load::ALL
                    .into_iter()
                    .find(|l| l.name() == n)
                    .ok_or_else(|| {
                        let all: Vec<_> = Load::ALL.iter().map(|l| l.name()).collect();
                        format!(
                            "NETLENS_BENCH_LOADS: no load {n:?} (loads: {})",
                            all.join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut tools = vec![Tool::Baseline];
    match list("NETLENS_BENCH_CONFIGS") {
        None => tools.extend(Tool::all()),
        Some(names) => {
            for n in names.iter().filter(|n| *n != "baseline") {
                let t = Tool::all()
                    .into_iter()
                    .find(|t| t.name() == n)
                    .ok_or_else(|| {
                        let all: Vec<_> = Tool::all().iter().map(|t| t.name()).collect();
                        format!(
                            "NETLENS_BENCH_CONFIGS: no configuration {n:?} (configurations: {}; \
                         the baseline is always measured)",
                            all.join(", ")
                        )
                    })?;
                if !tools.contains(&t) {
                    tools.push(t);
                }
            }
        }
    }
    if loads.is_empty() {
        return Err("NETLENS_BENCH_LOADS names no load".into());
    }
    Ok(Settings {
        rounds,
        secs,
        warmup,
        loads,
        tools,
    })
}

/// The order of the configurations (indices below `n`) in round `round`:
/// the rows of a Williams design, a Latin square in which each index
/// follows each other one equally often (over n rounds for an even n, over
/// 2n for an odd n, whose second n rows are the first ones reversed).
fn round_order(round: usize, n: usize) -> Vec<usize> {
    let first = (0..n).map(|j| match j {
        0 => 0,
        j if j % 2 == 1 => j.div_ceil(2),
        j => n - j / 2,
    });
    let mut row: Vec<usize> = first.map(|x| (x + round) % n).collect();
    if n % 2 == 1 && (round / n) % 2 == 1 {
        row.reverse();
    }
    row
}

// ---------------------------------------------------------------------------
// Servers

/// A directory removed with everything in it on Drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("netlens-bench-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // nginx's worker runs as nobody and reads its file from here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// True once a socket listens on 127.0.0.1:`port` (from /proc/net/tcp, so
/// that checking does not connect: iperf3 would take a probe connection for
/// a client).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
    })
}

/// State letter of process `pid` (Z once it has exited), None if gone.
fn proc_state(pid: u32) -> Option<char> {
    procfs::pid_stat(pid).ok().map(|s| s.state)
}

fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// A server started by the benchmark, stopped by its PID on Drop.
struct Daemon {
    guard: Guarded,
    pid: u32,
}

impl Daemon {
    /// Starts `cmd` on the server CPU and waits until 127.0.0.1:`port`
    /// listens; `log` gets its output.
    fn start(mut cmd: Command, port: u16, log: &Path, what: &str) -> Daemon {
        let out = fs::File::create(log).expect("server log");
        let err = out.try_clone().expect("server log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = on_cpu(SERVER_CPU, || cmd.spawn())
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let d = Daemon {
            pid: child.id(),
            guard: Guarded::new(child, libc::SIGTERM),
        };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while !listening(port) {
            assert!(
                alive(d.pid) && Instant::now() < deadline,
                "{what} is not listening on 127.0.0.1:{port}; its output:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

/// nginx with its own prefix, configuration, pid file, error log and
/// temporary paths under `dir`: it writes nowhere else.
fn start_nginx(dir: &Path) -> (Daemon, u16) {
    let html = dir.join("html");
    fs::create_dir_all(&html).expect("mkdir html");
    for d in [dir, html.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::write(html.join("small.html"), vec![b'x'; PAGE_BYTES]).expect("write page");
    let port = free_local_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\n\
         daemon off;\n\
         master_process on;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port} backlog=4096;\n\
         \x20       root {d}/html;\n\
         \x20   }}\n\
         }}\n"
    );
    fs::create_dir_all(dir.join("tmp")).expect("mkdir tmp");
    fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let mut cmd = Command::new(find_program("nginx").expect("nginx"));
    // -e: the error log from the very start, before the configuration is
    // read (the compiled-in default is under /var/log).
    cmd.arg("-p")
        .arg(format!("{d}/"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    (
        Daemon::start(cmd, port, &dir.join("stdout.log"), "nginx"),
        port,
    )
}

fn start_iperf3(dir: &Path) -> (Daemon, u16) {
    let port = free_local_port();
    let mut cmd = Command::new(find_program("iperf3").expect("iperf3"));
    cmd.args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()]);
    (
        Daemon::start(cmd, port, &dir.join("iperf3-server.log"), "iperf3 -s"),
        port,
    )
}

/// The server side of one load, stopped when dropped.
enum Servers {
    Nginx(Daemon, u16),
    Iperf3(Daemon, u16),
    Peer(Peer, SocketAddr),
}

impl Servers {
    fn start(load: Load, dir: &Path) -> Servers {
        let peer_server = |mode: &str| {
            let (p, addr) = on_cpu(SERVER_CPU, || {
                server(
                    None,
                    &["--listen", "127.0.0.1:0", mode, "--max-secs", "3600"],
                )
            });
            Servers::Peer(p, addr)
        };
        match load {
            Load::Rr | Load::Churn => {
                let nginx_dir = dir.join(format!("nginx-{}", load.name()));
                let (d, port) = start_nginx(&nginx_dir);
                Servers::Nginx(d, port)
            }
            Load::Bulk => {
                let (d, port) = start_iperf3(dir);
                Servers::Iperf3(d, port)
            }
            Load::PeerRr => peer_server("--echo"),
            Load::PeerChurn | Load::PeerBulk => peer_server("--sink"),
        }
    }

    /// Stops the server; Err if it had died before (its runs are suspect).
    fn stop(self) -> Result<(), String> {
        match self {
            Servers::Nginx(d, _) | Servers::Iperf3(d, _) => {
                let was_alive = alive(d.pid);
                d.guard.stop();
                if was_alive {
                    Ok(())
                } else {
                    Err("the server had exited before the end of its load".into())
                }
            }
            Servers::Peer(p, _) => {
                drop(p);
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Loads

/// One load run's result: its figure, and what went wrong without making
/// the figure useless (wrk's socket errors).
type LoadResult = Result<(f64, Option<String>), String>;

/// Runs `cmd` on the client CPU to completion, killing it (by PID) after
/// `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let child = on_cpu(CLIENT_CPU, || cmd.spawn()).map_err(|e| format!("{what}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| format!("{what}: {e}")),
        Err(_) => {
            // SAFETY: kill() on our own child's PID; the waiting thread
            // holds it unreaped until it exits.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(format!("{what} still running after {limit:?}: killed"))
        }
    }
}

fn wrk(port: u16, secs: u64, close: bool) -> LoadResult {
    let mut cmd = Command::new(find_program("wrk").expect("wrk"));
    cmd.args(["-t1", &format!("-c{WRK_CONNS}"), &format!("-d{secs}s")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/small.html"));
    let out = run_bounded(cmd, Duration::from_secs(secs) + LOAD_SLACK)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "wrk printed no Requests/sec ({}): {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let errors: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors") || l.starts_with("Non-2xx"))
        .collect();
    let problem = (!errors.is_empty()).then(|| format!("wrk: {}", errors.join("; ")));
    Ok((rate, problem))
}

fn iperf3(port: u16, secs: u64) -> LoadResult {
    let mut cmd = Command::new(find_program("iperf3").expect("iperf3"));
    cmd.args(["-c", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", &secs.to_string(), "-J"]);
    let out = run_bounded(cmd, Duration::from_secs(secs) + LOAD_SLACK)?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("iperf3 output is not JSON ({e}); {}", out.status))?;
    if let Some(err) = v["error"].as_str() {
        return Err(format!("iperf3: {err}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| (b, None))
        .ok_or_else(|| "iperf3: no end.sum_received.bits_per_second".into())
}

/// A netlens-peer client run: `field` of its `event` line.
fn peer_load(args: &[&str], event: &str, field: &str) -> LoadResult {
    let out = on_cpu(CLIENT_CPU, || peer(None, args)).finish_output();
    out.events
        .iter()
        .find(|e| e["event"] == event)
        .and_then(|e| e[field].as_f64())
        .map(|v| (v, None))
        .ok_or_else(|| {
            format!(
                "netlens-peer {args:?} ({}): no {event} line with {field}; stderr: {}",
                out.status,
                out.stderr.trim()
            )
        })
}

/// One run of `load` against `servers`, `secs` long.
fn run_load(load: Load, servers: &Servers, secs: u64) -> LoadResult {
    let s = secs.to_string();
    match (load, servers) {
        (Load::Rr, Servers::Nginx(_, port)) => wrk(*port, secs, false),
        (Load::Churn, Servers::Nginx(_, port)) => wrk(*port, secs, true),
        (Load::Bulk, Servers::Iperf3(_, port)) => iperf3(*port, secs),
        (Load::PeerRr, Servers::Peer(_, addr)) => {
            let to = addr.to_string();
            let args = ["rr", "--to", &to, "--secs", &s, "--size", PEER_RR_BYTES];
            peer_load(&args, "rr", "transactions_per_sec")
        }
        (Load::PeerChurn, Servers::Peer(_, addr)) => {
            let to = addr.to_string();
            peer_load(
                &["churn", "--to", &to, "--secs", &s],
                "churn",
                "conns_per_sec",
            )
        }
        (Load::PeerBulk, Servers::Peer(_, addr)) => {
            let to = addr.to_string();
            peer_load(
                &["bulk", "--to", &to, "--secs", &s],
                "bulk",
                "bytes_per_sec",
            )
            .map(|(bytes, p)| (bytes * 8.0, p))
        }
        _ => unreachable!("{load:?} started other servers"),
    }
}

// ---------------------------------------------------------------------------
// Tools

/// True once process `pid` holds a BPF link for each BPF program it holds
/// (how libbpf-tools attach: one link per program).
fn bpf_attached(pid: u32) -> bool {
    let (mut progs, mut links) = (0, 0);
    for fd in fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        match fs::read_link(fd.path())
            .ok()
            .as_deref()
            .and_then(Path::to_str)
        {
            Some("anon_inode:bpf-prog") => progs += 1,
            Some("anon_inode:bpf_link") => links += 1,
            _ => {}
        }
    }
    progs > 0 && links >= progs
}

enum Handle {
    Netlens(QuietNetlens),
    Peer(Guarded, PathBuf),
}

/// A tool running beside a load; stopped by its PID when dropped.
struct Running {
    tool: Tool,
    handle: Handle,
    pid: u32,
    out: PathBuf,
}

/// What a tool run left behind.
struct Stopped {
    /// It had exited before the end of the load (which then did not run
    /// beside it all along).
    died: bool,
    lines: u64,
    losses: Vec<(u64, String)>,
    problems: Vec<String>,
}

impl Running {
    /// Starts `tool` with its output in `dir`, and waits until it is
    /// attached (`netlens: ready`, or a link per BPF program).
    fn start(tool: Tool, dir: &Path, tag: &str) -> Result<Running, String> {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let stdout = fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        match tool {
            Tool::Baseline => unreachable!("the baseline runs nothing"),
            Tool::Conns | Tool::Cost | Tool::CostPerCall | Tool::CostNoProcesses => {
                let netlens = env!("CARGO_BIN_EXE_netlens");
                let n = QuietNetlens::start_to(netlens, &tool.args(), stdout.into(), err);
                Ok(Running {
                    tool,
                    pid: n.pid(),
                    handle: Handle::Netlens(n),
                    out,
                })
            }
            Tool::Peer(name, ..) => {
                let bin = find_program(name).ok_or_else(|| format!("{name} not installed"))?;
                let stderr = fs::File::create(&err).map_err(|e| format!("{e}"))?;
                let child = Command::new(bin)
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("cannot start {name}: {e}"))?;
                let pid = child.id();
                let r = Running {
                    tool,
                    pid,
                    handle: Handle::Peer(Guarded::new(child, libc::SIGINT), err.clone()),
                    out,
                };
                let deadline = Instant::now() + ATTACH_TIMEOUT;
                while !bpf_attached(pid) {
                    if !alive(pid) || Instant::now() > deadline {
                        let why = if alive(pid) {
                            format!("not attached after {ATTACH_TIMEOUT:?}")
                        } else {
                            "exited while starting".into()
                        };
                        let stderr = fs::read_to_string(&err).unwrap_or_default();
                        drop(r);
                        return Err(format!("{name} {why}: {}", stderr.trim()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(r)
            }
        }
    }

    /// Stops the tool (SIGTERM to netlens, SIGINT to a peer, by PID) and
    /// checks what it printed; its output files are removed.
    fn stop(self) -> Stopped {
        let mut problems = Vec::new();
        let died = !alive(self.pid);
        if died {
            problems.push(format!(
                "{} exited during the load: run not counted",
                self.tool.name()
            ));
        }
        let (status, stderr) = match self.handle {
            Handle::Netlens(n) => n.stop(),
            Handle::Peer(g, err) => {
                let status = g.stop();
                let stderr = fs::read_to_string(&err).unwrap_or_default();
                let _ = fs::remove_file(&err);
                (Some(status), stderr)
            }
        };
        if !status.is_some_and(|s| s.success()) {
            problems.push(format!(
                "{} ended with {status:?}: {}",
                self.tool.name(),
                stderr.trim()
            ));
        }
        let losses = match self.tool {
            Tool::Conns | Tool::Cost | Tool::CostPerCall | Tool::CostNoProcesses => {
                let l = exit_losses(&stderr);
                if l.is_empty() {
                    problems.push("no loss counts on netlens's exit".into());
                }
                l
            }
            Tool::Peer(_, _, true) => vec![(perf_buffer_losses(&stderr), "events".into())],
            _ => Vec::new(),
        };
        let (lines, first) = count_lines(&self.out);
        let _ = fs::remove_file(&self.out);
        if let Tool::Peer(name, header, _) = self.tool {
            if !first.starts_with(header) {
                problems.push(format!("{name} printed no header ({first:?})"));
            }
        }
        Stopped {
            died,
            lines,
            losses,
            problems,
        }
    }
}

/// Events a libbpf-tools program lost: the sum of its `lost N events on
/// CPU #C` lines.
fn perf_buffer_losses(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let (n, what) = l.strip_prefix("lost ")?.split_once(' ')?;
            what.starts_with("events").then(|| n.parse::<u64>().ok())?
        })
        .sum()
}

/// Lines in `path`, and its first line.
fn count_lines(path: &Path) -> (u64, String) {
    let Ok(f) = fs::File::open(path) else {
        return (0, String::new());
    };
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut first = String::new();
    let _ = r.read_line(&mut first);
    let mut n = u64::from(!first.is_empty());
    loop {
        let buf = match r.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let len = buf.len();
        r.consume(len);
    }
    (n, first.trim_end().to_string())
}

// ---------------------------------------------------------------------------
// One run, and the rounds

/// One measured run of a load beside one configuration.
#[derive(Default, Clone)]
struct Run {
    value: Option<f64>,
    /// The tool's CPU during the load, fraction of one core.
    tool_cpu: Option<f64>,
    lines: Option<u64>,
    losses: Vec<(u64, String)>,
    problems: Vec<String>,
}

fn measure(load: Load, servers: &Servers, tool: Tool, s: &Settings, dir: &Path, tag: &str) -> Run {
    let mut run = Run::default();
    let running = if tool == Tool::Baseline {
        None
    } else {
        match Running::start(tool, dir, tag) {
            Ok(r) => Some(r),
            Err(e) => {
                run.problems.push(e);
                return run;
            }
        }
    };
    if running.is_some() {
        std::thread::sleep(s.warmup);
    }
    let cpu0 = running.as_ref().map(|r| tree_cpu_secs(r.pid));
    let t0 = Instant::now();
    let result = run_load(load, servers, s.secs);
    let elapsed = t0.elapsed().as_secs_f64();
    if let (Some(r), Some(c0)) = (&running, cpu0) {
        run.tool_cpu = Some((tree_cpu_secs(r.pid) - c0) / elapsed);
    }
    match result {
        Ok((v, problem)) => {
            run.value = Some(v);
            run.problems.extend(problem);
        }
        Err(e) => run.problems.push(e),
    }
    if let Some(r) = running {
        let stopped = r.stop();
        if stopped.died {
            run.value = None;
        }
        run.lines = Some(stopped.lines);
        run.losses = stopped.losses;
        run.problems.extend(stopped.problems);
    }
    run
}

/// Thousands separators, no decimals.
fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn show(load: Load, v: f64) -> String {
    let (unit, div) = load.unit();
    if div > 1.0 {
        format!("{:.2} {unit}", v / div)
    } else {
        format!("{} {unit}", thousands(v))
    }
}

fn show_losses(losses: &[(u64, String)]) -> String {
    let nonzero: Vec<String> = losses
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if losses.is_empty() {
        String::new()
    } else if nonzero.is_empty() {
        "lost 0".into()
    } else {
        format!("LOST {}", nonzero.join(", "))
    }
}

/// All rounds of one load; `runs[config][round]`.
fn rounds_of(load: Load, s: &Settings, dir: &Path) -> (Vec<Vec<Run>>, Vec<String>) {
    let servers = Servers::start(load, dir);
    // Unmeasured: churn fills the kernel's TIME_WAIT table, caches warm up.
    let _ = run_load(load, &servers, 1);
    std::thread::sleep(GAP);
    let n = s.tools.len();
    let mut runs: Vec<Vec<Run>> = vec![Vec::with_capacity(s.rounds); n];
    for round in 0..s.rounds {
        for i in round_order(round, n) {
            let tool = s.tools[i];
            let tag = format!("{}-{}-{round}", load.name(), tool.name());
            let run = measure(load, &servers, tool, s, dir, &tag);
            let mut line = format!(
                "  {:<10} round {}/{} {:<10} {:>22}",
                load.name(),
                round + 1,
                s.rounds,
                tool.name(),
                run.value.map_or("failed".into(), |v| show(load, v)),
            );
            if let Some(c) = run.tool_cpu {
                line += &format!("  tool CPU {:>5.1} %", c * 100.0);
            }
            if let Some(l) = run.lines {
                line += &format!("  {l} lines");
            }
            let lost = show_losses(&run.losses);
            if !lost.is_empty() {
                line += &format!("  {lost}");
            }
            for p in &run.problems {
                line += &format!("\n      !! {p}");
            }
            eprintln!("{line}");
            runs[i].push(run);
            std::thread::sleep(GAP);
        }
    }
    let mut notes = Vec::new();
    if let Err(e) = servers.stop() {
        notes.push(e);
    }
    (runs, notes)
}

// ---------------------------------------------------------------------------
// Summary

/// Figures of one load and configuration over all rounds.
struct Summary {
    n: usize,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    /// (max - min) / median.
    spread: Option<f64>,
    /// Median over rounds of value / baseline of the same round.
    pair: Option<f64>,
    /// median / baseline's median.
    ratio: Option<f64>,
    tool_cpu: Option<f64>,
    lines: Option<f64>,
    /// Largest count of each loss over the rounds.
    losses: Vec<(u64, String)>,
    problems: Vec<String>,
}

fn summarize(runs: &[Run], base: &[Run]) -> Summary {
    let values: Vec<f64> = runs.iter().filter_map(|r| r.value).collect();
    let med = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    let m = med(values.clone());
    let base_m = med(base.iter().filter_map(|r| r.value).collect());
    let min = values.iter().copied().reduce(f64::min);
    let max = values.iter().copied().reduce(f64::max);
    let pairs = runs
        .iter()
        .zip(base)
        .filter_map(|(r, b)| Some(r.value? / b.value?))
        .collect();
    let mut losses: Vec<(u64, String)> = Vec::new();
    for (n, what) in runs.iter().flat_map(|r| &r.losses) {
        match losses.iter_mut().find(|(_, w)| w == what) {
            Some(l) => l.0 = l.0.max(*n),
            None => losses.push((*n, what.clone())),
        }
    }
    let mut problems: Vec<String> = Vec::new();
    for p in runs.iter().flat_map(|r| &r.problems) {
        if !problems.contains(p) {
            problems.push(p.clone());
        }
    }
    Summary {
        n: values.len(),
        median: m,
        min,
        max,
        spread: m.zip(min.zip(max)).map(|(m, (lo, hi))| (hi - lo) / m),
        pair: med(pairs),
        ratio: m.zip(base_m).map(|(m, b)| m / b),
        tool_cpu: med(runs.iter().filter_map(|r| r.tool_cpu).collect()),
        lines: med(runs
            .iter()
            .filter_map(|r| r.lines.map(|l| l as f64))
            .collect()),
        losses,
        problems,
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("-".into(), f)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("servers benchmark: run it with `cargo bench --bench servers` (as root)");
        return;
    }
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("servers benchmark: {e}");
            std::process::exit(2);
        }
    };
    if !is_root() {
        eprintln!("SKIP servers benchmark: needs root (BPF programs, nginx's worker user)");
        return;
    }
    let mut missing: Vec<&str> = s
        .loads
        .iter()
        .flat_map(|l| l.programs().iter().copied())
        .chain(s.tools.iter().filter_map(|t| match t {
            Tool::Peer(name, ..) => Some(*name),
            _ => None,
        }))
        .filter(|p| find_program(p).is_none())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        let mut pkgs: Vec<&str> = missing.iter().map(|p| debian_package(p)).collect();
        pkgs.sort_unstable();
        pkgs.dedup();
        eprintln!(
            "SKIP servers benchmark: not installed: {}. On Debian: apt-get install {} \
             (scripts/bench.sh installs them), or leave out what needs them with \
             NETLENS_BENCH_LOADS / NETLENS_BENCH_CONFIGS",
            missing.join(", "),
            pkgs.join(" ")
        );
        return;
    }
    let dir = TempDir::new("servers");
    let n = s.tools.len();
    let names: Vec<&str> = s.tools.iter().map(|t| t.name()).collect();
    // Measured: a tool takes about half a second to start.
    let per_run = s.secs as f64
        + GAP.as_secs_f64()
        + (s.warmup.as_secs_f64() + 0.5) * (n - 1) as f64 / n as f64;
    eprintln!(
        "servers benchmark: loads {}; configurations {}; {} rounds of {} s runs (about {:.1} min)",
        s.loads
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(", "),
        names.join(", "),
        s.rounds,
        s.secs,
        (s.loads.len() * n * s.rounds) as f64 * per_run / 60.0
    );
    if s.rounds < MIN_ROUNDS {
        eprintln!(
            "  fewer than {MIN_ROUNDS} rounds: a check of the benchmark, not figures to report"
        );
    }

    let mut results = Vec::new();
    for &load in &s.loads {
        eprintln!("== {} ({})", load.name(), load.what());
        let (runs, notes) = rounds_of(load, &s, &dir.0);
        for note in &notes {
            eprintln!("  !! {}: {note}", load.name());
        }
        let summaries: Vec<Summary> = runs.iter().map(|r| summarize(r, &runs[0])).collect();
        results.push((load, runs, summaries, notes));
    }

    // Per load, every configuration.
    println!(
        "\nnetlens and peers beside real servers on loopback: {} rounds of {} s runs, \
         order rotated per round",
        s.rounds, s.secs
    );
    println!(
        "pair = median over rounds of config / baseline of the same round (1.00 = no measurable \
         cost); ratio = median / baseline median; spread = (max - min) / median; tool CPU = \
         user + system of the tool's processes, % of one core"
    );
    let mut lost_events = Vec::new();
    for (load, _, summaries, notes) in &results {
        let (unit, div) = load.unit();
        println!("\n{} ({}; {unit})", load.name(), load.what());
        println!(
            "  {:<10} {:>2} {:>14} {:>14} {:>14} {:>7} {:>6} {:>6} {:>8} {:>10}  losses, problems",
            "config", "n", "median", "min", "max", "spread", "pair", "ratio", "tool CPU", "lines"
        );
        let v = |x: Option<f64>| {
            opt(x, |x| {
                if div > 1.0 {
                    format!("{:.3}", x / div)
                } else {
                    thousands(x)
                }
            })
        };
        for (tool, sm) in s.tools.iter().zip(summaries) {
            let mut tail = vec![show_losses(&sm.losses)];
            tail.extend(sm.problems.iter().cloned());
            tail.retain(|t| !t.is_empty());
            let row = format!(
                "  {:<10} {:>2} {:>14} {:>14} {:>14} {:>6} {:>6} {:>6} {:>8} {:>10}  {}",
                tool.name(),
                sm.n,
                v(sm.median),
                v(sm.min),
                v(sm.max),
                opt(sm.spread, |x| format!("{:.1}%", x * 100.0)),
                opt(sm.pair, |x| format!("{x:.3}")),
                opt(sm.ratio, |x| format!("{x:.3}")),
                opt(sm.tool_cpu, |x| format!("{:.2}%", x * 100.0)),
                opt(sm.lines, thousands),
                tail.join("; ")
            );
            println!("{}", row.trim_end());
            if *tool == Tool::Conns {
                if let Some((n, _)) = sm.losses.iter().find(|(n, w)| w == "events" && *n > 0) {
                    lost_events.push(format!("{}: {n}", load.name()));
                }
            }
        }
        for note in notes {
            println!("  !! {note}");
        }
    }
    if !lost_events.is_empty() {
        println!(
            "\n!! netlens conns LOST EVENTS (must be 0): {}",
            lost_events.join(", ")
        );
    }

    // Markdown, for the README.
    let heads: Vec<String> = s.tools.iter().map(|t| t.heading()).collect();
    let rule = format!("|---|{}", "---|".repeat(n));
    println!(
        "\nPair ratios (throughput beside the tool / baseline of the same round, median of {} \
         rounds of {} s; baseline: median):\n",
        s.rounds, s.secs
    );
    println!("| load | {} |", heads.join(" | "));
    println!("{rule}");
    for (load, _, sm, _) in &results {
        let cells: Vec<String> = sm
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if i == 0 {
                    opt(x.median, |m| show(*load, m))
                } else if x.n < s.rounds {
                    format!(
                        "{} ({} of {} runs)",
                        opt(x.pair, |p| format!("{p:.2}")),
                        x.n,
                        s.rounds
                    )
                } else {
                    opt(x.pair, |p| format!("{p:.2}"))
                }
            })
            .collect();
        println!(
            "| {} ({}) | {} |",
            load.name(),
            load.what(),
            cells.join(" | ")
        );
    }
    println!("\nThe tools' own CPU (user + system, % of one core, median):\n");
    println!("| load | {} |", heads[1..].join(" | "));
    println!("|---|{}", "---|".repeat(n - 1));
    for (load, _, sm, _) in &results {
        let cells: Vec<String> = sm[1..]
            .iter()
            .map(|x| opt(x.tool_cpu, |c| format!("{:.1} %", c * 100.0)))
            .collect();
        println!("| {} | {} |", load.name(), cells.join(" | "));
    }

    // JSON.
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut loads = Map::new();
    for (load, runs, summaries, notes) in &results {
        let mut configs = Map::new();
        for ((tool, sm), rs) in s.tools.iter().zip(summaries).zip(runs) {
            let losses: Map<String, Value> = sm
                .losses
                .iter()
                .map(|(n, w)| (w.clone(), json!(n)))
                .collect();
            configs.insert(
                tool.name().into(),
                json!({
                    "command": tool.command(),
                    "values": rs.iter().map(|r| r.value).collect::<Vec<_>>(),
                    "tool_cpu": rs.iter().map(|r| r.tool_cpu).collect::<Vec<_>>(),
                    "lines": rs.iter().map(|r| r.lines).collect::<Vec<_>>(),
                    "n": sm.n, "median": sm.median, "min": sm.min, "max": sm.max,
                    "spread": sm.spread, "pair_ratio": sm.pair, "ratio": sm.ratio,
                    "tool_cpu_median": sm.tool_cpu, "lines_median": sm.lines,
                    "losses_max": losses, "problems": sm.problems,
                }),
            );
        }
        loads.insert(
            load.name().into(),
            json!({
                "what": load.what(), "unit": load.unit().0, "configs": configs, "notes": notes,
            }),
        );
    }
    let report = json!({
        "rounds": s.rounds,
        "secs": s.secs,
        "warmup_secs": s.warmup.as_secs_f64(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
        "configs": names,
        "loads": loads,
    });
    let path = target_dir().join("bench-servers.json");
    match fs::write(&path, format!("{report:#}\n")) {
        Ok(()) => eprintln!("results: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
