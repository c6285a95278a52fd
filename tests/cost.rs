//! Integration tests of `netlens cost`: the real BPF programs, real traffic
//! between network namespaces the tests create, and ground truth from
//! procfs and an independent bpftrace measurement.
//!
//! The tests of this file run one at a time (SERIAL): each measures the
//! whole machine's network CPU time, which the others' traffic would blur.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A -u process's times (ns) summed over periods of a log.
#[derive(Default)]
struct PidSums {
    user: u64,
    system: u64,
    tx: u64,
    rx: u64,
    intr: u64,
}

/// The JSON lines of a `-l` log file.
struct CostLog {
    lines: Vec<Value>,
}

impl CostLog {
    /// The log of a netlens that has exited: every line must be whole.
    fn read(path: &Path) -> CostLog {
        CostLog::parse(path, false)
    }

    /// The log of a netlens still running: a line it is writing (a long
    /// line can take more than one write, and one was read half written
    /// on emulated 6.12) is left for the next read.
    fn read_while_written(path: &Path) -> CostLog {
        CostLog::parse(path, true)
    }

    fn parse(path: &Path, running: bool) -> CostLog {
        let mut text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if running {
            text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
        }
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l}: {e}")))
            .collect();
        assert!(!lines.is_empty(), "empty log {}", path.display());
        CostLog { lines }
    }

    fn last(&self) -> &Value {
        self.lines.last().unwrap()
    }

    /// Cumulative nanoseconds of an entry over all CPUs (last line).
    fn entry_total(&self, name: &str) -> u64 {
        sum(&self.last()["entries"][name]["total_ns"])
    }

    /// Samples of a NET_RX category over the whole run.
    fn category_samples(&self, name: &str) -> u64 {
        self.lines
            .iter()
            .map(|l| {
                l["net_rx_categories"][name]["samples"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Sums of the first -u process's times over the log's periods, until
    /// the process exited.
    fn pid_sums(&self, pid: &str) -> PidSums {
        let mut sums = PidSums::default();
        for line in &self.lines {
            let p = &line["pids"][0];
            assert_eq!(p["pid"].as_u64().unwrap().to_string(), pid);
            if !p["alive"].as_bool().unwrap() {
                break;
            }
            sums.user += u(p, "user_ns");
            sums.system += u(p, "system_ns");
            sums.tx += u(p, "tx_syscall_ns");
            sums.rx += u(p, "rx_syscall_ns");
            sums.intr += u(p, "interrupt_ns");
        }
        sums
    }

    /// The `--top` process rows of every period, oldest first.
    fn process_rows(&self) -> impl Iterator<Item = &Value> {
        self.lines
            .iter()
            .flat_map(|l| l["processes"]["top"].as_array().into_iter().flatten())
    }

    fn all_category_samples(&self) -> u64 {
        self.lines
            .iter()
            .flat_map(|l| {
                l["net_rx_categories"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .map(|c| c["samples"].as_u64().unwrap_or(0))
            })
            .sum()
    }
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum()
}

/// How a `netlens cost` or `check` run hooks system calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hooking {
    /// The default: raw_syscalls.
    Default,
    /// `--syscall-hook per-call`.
    PerCall,
    /// `--syscall-hook per-call`, told the kernel has no per-call system
    /// call tracepoints (as without CONFIG_FTRACE_SYSCALLS): raw_syscalls.
    PerCallMissing,
}

impl Hooking {
    const ALL: [Hooking; 3] = [Hooking::Default, Hooking::PerCall, Hooking::PerCallMissing];

    fn apply(self, cmd: &mut Command) {
        if self != Hooking::Default {
            cmd.args(["--syscall-hook", "per-call"]);
        }
        if self == Hooking::PerCallMissing {
            cmd.env(netlens::sys::kernel::NO_SYSCALL_TRACEPOINTS_ENV, "1");
        } else {
            cmd.env_remove(netlens::sys::kernel::NO_SYSCALL_TRACEPOINTS_ENV);
        }
    }

    /// Through raw_syscalls, a program on every system call.
    fn raw(self) -> bool {
        self != Hooking::PerCall
    }
}

/// `netlens cost -l <temp file> --user-period 250 args...`, with the log
/// file removed when dropped.
struct CostRun {
    nl: Option<Netlens>,
    log: PathBuf,
}

impl CostRun {
    fn start(args: &[&str]) -> CostRun {
        CostRun::start_hooked(args, Hooking::Default)
    }

    fn start_hooked(args: &[&str], hooking: Hooking) -> CostRun {
        let log = temp_path("cost-log");
        let log_s = log.to_str().unwrap().to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
        cmd.args(["cost", "-l", &log_s, "--user-period", "250"])
            .args(args);
        hooking.apply(&mut cmd);
        CostRun {
            nl: Some(Netlens::start_cmd(cmd)),
            log,
        }
    }

    /// The log once it has `more` lines beyond `after` (whole periods
    /// reported after what happened before this call).
    fn log_after(&self, after: &CostLog, more: usize) -> CostLog {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.log_so_far();
            if log.lines.len() >= after.lines.len() + more {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no new report in the log within {READY_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.nl.as_ref().unwrap().pid()
    }

    /// Waits (up to READY_TIMEOUT) until netlens has printed `text` on stderr.
    fn wait_stderr(&self, text: &str) {
        let nl = self.nl.as_ref().unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        while !nl.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "netlens did not print {text:?}:\n{}",
                nl.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log as written so far, once it has at least one line.
    fn log_so_far(&self) -> CostLog {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !std::fs::read_to_string(&self.log).is_ok_and(|t| t.ends_with('\n')) {
            assert!(
                Instant::now() < deadline,
                "no report in the log within {READY_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        CostLog::read_while_written(&self.log)
    }

    fn stop(self) -> CostLog {
        self.stop_with_stderr().0
    }

    /// [`CostRun::stop`], with what netlens printed on stderr.
    fn stop_with_stderr(mut self) -> (CostLog, String) {
        let out = self.nl.take().unwrap().stop_any_output();
        assert!(
            out.status.success(),
            "netlens cost failed: {}\n{}",
            out.status,
            out.stderr
        );
        assert!(
            out.stderr.contains("netlens: stopped after"),
            "no exit line: {}",
            out.stderr
        );
        (CostLog::read(&self.log), out.stderr)
    }
}

impl Drop for CostRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Bulk TCP from a to a server in b for `secs`; returns the bytes sent.
fn bulk(a: &Netns, to: std::net::SocketAddr, secs: &str) -> u64 {
    let out = peer(Some(a), &["bulk", "--to", &to.to_string(), "--secs", secs]).finish();
    let done = out
        .iter()
        .find(|v| v["event"] == "bulk")
        .unwrap_or_else(|| panic!("no bulk result: {out:?}"));
    u(done, "bytes")
}

/// Namespaces a and b joined by a veth pair (192.0.2.0/24), with a sink
/// server in b (it reads and discards).
fn sink_pair(tag: &str) -> ServedPair {
    served_pair(tag, 0, false, &["--sink", "--max-secs", SINK_SECS])
}

fn served(b: &Netns, ip: std::net::IpAddr) -> (Peer, std::net::SocketAddr) {
    server(
        Some(b),
        &["--listen", &sock(ip, 0), "--sink", "--max-secs", SINK_SECS],
    )
}

#[test]
fn net_rx_and_net_tx_show_load_and_stay_near_zero_at_idle() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cidle");
    // A shaping qdisc: its watchdog reschedules the queue from NET_TX.
    let tbf = format!(
        "tc qdisc add dev {} root tbf rate 400mbit burst 64kb latency 50ms",
        p.veth.a_if
    );
    p.a.exec_ok(&tbf.split(' ').collect::<Vec<_>>());

    let run = CostRun::start(&["-f", "0"]);
    thread::sleep(Duration::from_millis(1500));
    let idle = run.log_so_far();
    let idle_secs = idle.last()["elapsed_ns"].as_u64().unwrap() as f64 / 1e9;
    let idle_rx = idle.entry_total("net_rx_softirq") as f64 / 1e9;
    let idle_tx = idle.entry_total("net_tx_softirq") as f64 / 1e9;

    let sent = bulk(&p.a, p.addr, "2");
    let log = run.stop();
    drop(p.server);
    let rx = log.entry_total("net_rx_softirq") as f64 / 1e9 - idle_rx;
    let tx = log.entry_total("net_tx_softirq") as f64 / 1e9 - idle_tx;
    let tx_runs = log.entry_spans("net_tx_softirq") - idle.entry_spans("net_tx_softirq");
    eprintln!(
        "idle {idle_secs:.2} s: NET_RX {idle_rx:.6} s, NET_TX {idle_tx:.6} s; \
         load ({sent} bytes): NET_RX {rx:.4} s, NET_TX {tx:.4} s in {tx_runs} runs"
    );
    // Idle: under 1 % of one CPU (this machine's own background traffic).
    assert!(
        idle_rx < 0.01 * idle_secs,
        "NET_RX at idle: {idle_rx} s in {idle_secs} s"
    );
    assert!(
        idle_tx < 0.01 * idle_secs,
        "NET_TX at idle: {idle_tx} s in {idle_secs} s"
    );
    // Load: every byte crossed NET_RX in b; NET_TX ran the shaped queue.
    assert!(sent > 10_000_000, "bulk sent only {sent} bytes");
    assert!(rx > 0.01, "NET_RX under load only {rx} s");
    // NET_TX runs when the shaper's timer releases the queue: how long
    // each run takes depends on the CPU and the kernel (0.5 ms in all on
    // an emulated PREEMPT_RT kernel), that it runs does not.
    assert!(tx_runs >= 10, "NET_TX ran only {tx_runs} times under load");
    assert!(tx > 0.0, "NET_TX under load took no time");
    assert!(rx > 10.0 * idle_rx && tx > 10.0 * idle_tx);
}

#[test]
fn syscall_time_of_a_socket_loop_agrees_with_its_proc_system_time() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    for hooking in [Hooking::Default, Hooking::PerCall] {
        syscall_time_agrees_with_proc(hooking);
    }
}

fn syscall_time_agrees_with_proc(hooking: Hooking) {
    let p = sink_pair("csys");
    // Bulk: the client only writes its socket, in 128 KiB calls. It runs
    // until it is stopped (at most 25 s, within the sink's SINK_SECS), so that
    // it outlives netlens's start however slow the CPU.
    let client = peer(
        Some(&p.a),
        &["bulk", "--to", &p.addr.to_string(), "--secs", "25"],
    );
    let pid = client.pid().to_string();
    // The scheduler's own run time of the client, in ns, over a window
    // that holds netlens's whole run.
    let run_time_before = sched_run_time(&pid);
    let stolen_before = stolen_ns();
    let run = CostRun::start_hooked(&["-f", "0", "-u", &pid], hooking);
    run.wait_stderr("netlens: ready");
    thread::sleep(Duration::from_secs(3));
    let log = run.stop();
    let ran = sched_run_time(&pid) - run_time_before;
    let stolen = stolen_since(stolen_before);
    drop(client);
    drop(p.server);

    let PidSums {
        user,
        system,
        tx,
        rx,
        intr,
    } = log.pid_sums(&pid);
    let measured = tx + rx + intr;
    let ratio = measured as f64 / system as f64;
    let of_ran = measured as f64 / (ran + stolen) as f64;
    eprintln!(
        "{hooking:?}: system {system} ns, user {user} ns (procfs), {ran} ns on the CPU \
         (schedstat, a wider window), {stolen} ns stolen by the hypervisor (all CPUs); TX {tx} \
         + RX {rx} + interrupts in context {intr} = {measured} ns (netlens); {ratio:.3} of \
         system, {of_ran:.3} of the run time with the stolen time"
    );
    assert!(
        system > 200_000_000,
        "client used only {system} ns of system time"
    );
    assert!(tx > 0, "TX {tx}");
    assert_eq!(rx, 0, "the client never reads");
    // Ground truth: the scheduler's run time of the client (schedstat,
    // over a window that holds netlens's) bounds its kernel time from
    // above, once the time a hypervisor stole is added back: netlens's
    // spans are clock time, and with CONFIG_PARAVIRT_TIME_ACCOUNTING the
    // scheduler leaves stolen time out of the run time (these VMs: 14 %
    // more span than run time in one run, with CPU stolen). /proc's system time is that run time split by where timer
    // ticks landed: a sample, biased on an emulated CPU (a pure user-space
    // loop got 29 % system ticks there), but close on real hardware, where
    // a bulk sender's kernel work outside the tracepoint brackets (system
    // call entry and exit, the scheduler) is small.
    assert!(
        of_ran <= 1.0,
        "{hooking:?}: netlens TX+RX+interrupt time is {of_ran:.3} of the client's run time \
         plus the time stolen"
    );
    assert!(
        ratio >= 0.9,
        "{hooking:?}: netlens TX+RX+interrupt time is {ratio:.3} of the process's system time"
    );
}

/// CPU time the hypervisor stole from this machine so far, all CPUs, in
/// ns (/proc/stat), and the length of one clock tick in ns.
fn stolen_ns() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .expect("the steal column of /proc/stat");
    // SAFETY: sysconf has no preconditions.
    let tick_ns = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (ticks * tick_ns, tick_ns)
}

/// CPU time stolen since `before` (a [`stolen_ns`] reading), rounded up:
/// /proc/stat counts it in clock ticks, so one tick per CPU is added to
/// never be short of the truth.
fn stolen_since(before: (u64, u64)) -> u64 {
    let (now, tick_ns) = stolen_ns();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    now - before.0 + cpus * tick_ns
}

/// A -u process that exits is alive, with its times, until then, and
/// reported gone (`alive` false) in every period after, never alive again.
#[test]
fn an_exited_user_pid_is_reported_gone_from_then_on() {
    if !require_root() {
        return;
    }
    let child = Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = child.id().to_string();
    // Killed and reaped on Drop too, should the test fail first.
    let child = Guarded::new(child, libc::SIGKILL);
    let run = CostRun::start(&["-f", "0", "-u", &pid]);
    run.wait_stderr("netlens: ready");
    let before = run.log_after(&run.log_so_far(), 1);
    // Killed and reaped: /proc/PID is gone.
    child.stop();
    run.log_after(&before, 3);
    let log = run.stop();
    let alive: Vec<bool> = log
        .lines
        .iter()
        .map(|l| {
            let p = &l["pids"][0];
            assert_eq!(p["pid"].as_u64().map(|n| n.to_string()), Some(pid.clone()));
            p["alive"].as_bool().expect("alive")
        })
        .collect();
    assert_eq!(alive.first(), Some(&true), "{alive:?}");
    assert_eq!(alive.last(), Some(&false), "{alive:?}");
    let first_gone = alive.iter().position(|a| !a).unwrap_or(alive.len());
    assert!(
        alive[first_gone..].iter().all(|a| !a),
        "alive again after gone: {alive:?}"
    );
}

/// The scheduler's exact run time of a live process so far, in ns
/// (/proc/PID/schedstat): user and system time together, unlike /proc's
/// split of it, which is in 10 ms clock ticks.
fn sched_run_time(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("read /proc/{pid}/schedstat"))
}

/// Bulk traffic from `a` to `to`, sampled at 2 kHz; returns the log.
fn sampled_bulk(a: &Netns, to: std::net::SocketAddr) -> CostLog {
    sampled_bulk_with(a, to, "2000")
}

/// How long a sink server lives: longer than a test's traffic (at most
/// BULK_SECS_MAX of sampled bulk) plus netlens's start on a slow CPU.
const SINK_SECS: &str = "120";
/// The most bulk traffic a sampled test sends while it waits for samples.
const BULK_SECS_MAX: u64 = 60;

/// NET_RX samples a breakdown is judged on: enough that a category's share
/// is known to a few percent.
const ENOUGH_NET_RX_SAMPLES: u64 = 250;

/// Bulk traffic from `a` to `to` in 2 s rounds, sampled with `-f sampler`,
/// until the log holds ENOUGH_NET_RX_SAMPLES (at most BULK_SECS_MAX s of
/// traffic). How many samples a second of traffic gives
/// depends on the CPU (an emulated one is many times slower, and the tick
/// samples at CONFIG_HZ only): the run is as long as this machine needs,
/// rather than a threshold that a slow CPU cannot meet.
fn sampled_bulk_with(a: &Netns, to: std::net::SocketAddr, sampler: &str) -> CostLog {
    let run = CostRun::start(&["-f", sampler]);
    let started = Instant::now();
    loop {
        bulk(a, to, "2");
        if run.log_so_far().all_category_samples() >= ENOUGH_NET_RX_SAMPLES
            || started.elapsed() > Duration::from_secs(BULK_SECS_MAX)
        {
            break;
        }
    }
    run.stop()
}

#[test]
fn net_rx_categories_add_up_and_stay_on_the_tcp_receive_path() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("ccat");
    let log = sampled_bulk(&p.a, p.addr);
    drop(p.server);
    check_categories_of_local_tcp(&log);
}

/// -f tick: the same breakdown from the scheduler tick's samples (the
/// timer interrupt's own frames are left out of them).
#[test]
fn tick_sampling_gives_the_same_breakdown() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("ctick");
    let log = sampled_bulk_with(&p.a, p.addr, "tick");
    drop(p.server);
    assert!(log.lines.iter().all(|l| l["sampling"]["on_tick"] == true));
    check_categories_of_local_tcp(&log);
}

/// In every period and on every CPU the categories add up to NET_RX, and
/// local delivery (TCP receive and socket wakeup inside it) dominates.
fn check_categories_of_local_tcp(log: &CostLog) {
    for line in &log.lines {
        let cpus = line["cpus"].as_array().unwrap().len();
        let net_rx = &line["entries"]["net_rx_softirq"]["period_ns"];
        let cats = line["net_rx_categories"].as_object().unwrap();
        assert!(!cats.is_empty());
        for cpu in 0..cpus {
            let parts: u64 = cats
                .values()
                .map(|c| c["period_ns"][cpu].as_u64().unwrap())
                .sum();
            assert_eq!(parts, net_rx[cpu].as_u64().unwrap(), "CPU {cpu} in {line}");
        }
    }
    let all = log.all_category_samples();
    let mut by_category: Vec<(String, u64)> = log.lines[0]["net_rx_categories"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), log.category_samples(k)))
        .filter(|(_, n)| *n > 0)
        .collect();
    by_category.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    eprintln!("NET_RX samples by category: {by_category:?}");
    // Local TCP over veth: every packet takes the backlog (no GRO on a veth
    // without NAPI), IPv4 receive, local delivery and TCP receive, which
    // wakes the reader. Where within that path a sample lands depends on
    // the sampler (timer samples gather where interrupts are re-enabled).
    // Netfilter and conntrack may be on it (the host's rules, or modules an
    // earlier test loaded); what it can never take: forwarding, bridging,
    // IPv6, UDP (bar the odd sample of other traffic).
    let receive_path: u64 = [
        "core_receive",
        "ip_receive_v4",
        "local_deliver_v4",
        "tcp_receive_v4",
        "socket_enqueue_wakeup",
    ]
    .iter()
    .map(|c| log.category_samples(c))
    .sum();
    let elsewhere: u64 = [
        "forward_v4",
        "forward_v6",
        "bridging",
        "ip_receive_v6",
        "nf_prerouting_v6",
        "local_deliver_v6",
        "tcp_receive_v6",
        "udp_receive_v4",
        "udp_receive_v6",
    ]
    .iter()
    .map(|c| log.category_samples(c))
    .sum();
    eprintln!("{receive_path} of {all} NET_RX samples on the IPv4 TCP receive path, {elsewhere} on other paths");
    assert!(
        all >= ENOUGH_NET_RX_SAMPLES,
        "only {all} NET_RX samples after {BULK_SECS_MAX} s of bulk traffic"
    );
    // Bar other traffic: the links' own IPv6 neighbour discovery, say (a
    // few packets per new link, whatever the load: 1 %, or 5 samples).
    assert!(
        elsewhere * 100 <= all || elsewhere <= 5,
        "{elsewhere} of {all} samples on paths local TCP does not take: {by_category:?}"
    );
    // Samples outside the RX loop are the softirq's entry and exit, not a
    // choice of path: a timer tick lands there when interrupts come back
    // on, which on an emulated CPU (translation-block boundaries) made 120
    // of 264 tick samples on 6.12. The path is judged among the samples
    // that unwound into the loop; at least a quarter must still reach it.
    let in_loop = all - log.category_samples("outside_rx_loop");
    assert!(
        in_loop * 4 >= all,
        "only {in_loop} of {all} NET_RX samples unwound into the RX loop: {by_category:?}"
    );
    assert!(
        receive_path * 2 > in_loop,
        "the IPv4 TCP receive path has only {receive_path} of the {in_loop} samples \
         in the RX loop: {by_category:?}"
    );
}

#[test]
fn forwarding_appears_when_traffic_is_routed_through_a_namespace() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let a = Netns::new("cfwd-a");
    let r = Netns::new("cfwd-r");
    let b = Netns::new("cfwd-b");
    let left = link(&a, &r, 0);
    let right = link(&r, &b, 1);
    r.sysctl("net.ipv4.ip_forward", "1");
    a.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        &left.b(false).to_string(),
    ]);
    b.ip(&[
        "route",
        "add",
        "192.0.2.0/24",
        "via",
        &right.a(false).to_string(),
    ]);
    let (srv, to) = served(&b, right.b(false));
    let log = sampled_bulk(&a, to);
    drop(srv);
    let fwd = log.category_samples("forward_v4");
    eprintln!(
        "forward_v4: {fwd} of {} samples",
        log.all_category_samples()
    );
    assert!(fwd > 0, "no forwarding samples");
    assert!(sum(&log.last()["net_rx_categories"]["forward_v4"]["total_ns"]) > 0);
}

#[test]
fn netfilter_categories_appear_with_nftables_rules() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cnf");
    p.b.nft(&["add", "table", "inet", "nltest"]);
    p.b.nft(&[
        "add",
        "chain",
        "inet",
        "nltest",
        "pre",
        "{ type filter hook prerouting priority 0 ; }",
    ]);
    p.b.nft(&[
        "add",
        "rule",
        "inet",
        "nltest",
        "pre",
        "ct",
        "state",
        "established,related",
        "counter",
        "accept",
    ]);
    let log = sampled_bulk(&p.a, p.addr);
    drop(p.server);
    let pre = log.category_samples("nf_prerouting_v4");
    let ct = log.category_samples("conntrack");
    eprintln!(
        "nf_prerouting_v4 {pre}, conntrack {ct} of {}",
        log.all_category_samples()
    );
    assert!(pre > 0, "no netfilter prerouting samples");
    assert!(ct > 0, "no conntrack samples");
}

#[test]
fn bridging_appears_with_a_linux_bridge() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let a = Netns::new("cbr-a");
    let br = Netns::new("cbr-br");
    let b = Netns::new("cbr-b");
    // a (192.0.2.1) -- [br0 in br] -- b (192.0.2.2)
    let left = link(&a, &br, 0);
    let right = link(&br, &b, 0);
    br.ip(&["link", "add", "br0", "type", "bridge"]);
    for port in [&left.b_if, &right.a_if] {
        br.ip(&["addr", "flush", "dev", port]);
        br.ip(&["link", "set", port, "master", "br0"]);
    }
    br.ip(&["link", "set", "br0", "up"]);
    let (srv, to) = served(&b, right.b(false));
    // Bridge ports start forwarding once their link state settles.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a
        .exec(&["ping", "-c", "1", "-W", "1", &to.ip().to_string()])
        .status
        .code()
        != Some(0)
    {
        assert!(Instant::now() < deadline, "bridge does not forward");
        thread::sleep(Duration::from_millis(100));
    }
    let log = sampled_bulk(&a, to);
    drop(srv);
    let bridged = log.category_samples("bridging");
    eprintln!("bridging {bridged} of {}", log.all_category_samples());
    assert!(bridged > 0, "no bridging samples");
}

#[test]
fn threaded_napi_time_is_measured() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cnapi");
    // veth receives through NAPI once GRO is on (and the sender does not
    // hand it TSO super-packets); then NAPI can be threaded.
    p.b.exec_ok(&["ethtool", "-K", &p.veth.b_if, "gro", "on"]);
    p.a.exec_ok(&["ethtool", "-K", &p.veth.a_if, "tso", "off"]);
    p.b.exec_ok(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{}/threaded", p.veth.b_if),
    ]);
    let run = CostRun::start(&["-f", "0"]);
    bulk(&p.a, p.addr, "2");
    let log = run.stop();
    drop(p.server);
    let napi = log.entry_total("napi_thread");
    eprintln!("NAPI threads: {napi} ns");
    assert!(napi > 1_000_000, "NAPI thread time {napi} ns");
}

/// bpftrace's own total of NET_RX softirq time (entry to exit), printed at exit.
/// NET_RX time as bpftrace measures it: from softirq entry to exit, less
/// the hard IRQ handlers inside, and (PREEMPT_RT, where a softirq runs in a
/// preemptible task) less the time its task was switched out. Runs counted,
/// so that runs bpftrace missed can be seen.
const BPFTRACE_NET_RX: &str = r#"
tracepoint:irq:softirq_entry /args->vec == 3/ {
  @start[cpu] = nsecs; @owner[cpu] = tid; @entries = count();
}
tracepoint:irq:softirq_exit /args->vec == 3 && @start[cpu]/ {
  @ns = sum(nsecs - @start[cpu]); @longest = max(nsecs - @start[cpu]); delete(@start[cpu]);
  @exits = count();
}
tracepoint:sched:sched_switch /@start[cpu] && args->prev_pid == @owner[cpu]/ {
  @ns = sum(nsecs - @start[cpu]); delete(@start[cpu]); @paused[cpu] = 1; @pauses = count();
}
tracepoint:sched:sched_switch /@paused[cpu] && args->next_pid == @owner[cpu]/ {
  @start[cpu] = nsecs; delete(@paused[cpu]);
}
tracepoint:irq:irq_handler_entry /@start[cpu]/ { @irq_start[cpu] = nsecs; }
tracepoint:irq:irq_handler_exit /@irq_start[cpu]/ {
  @irq_ns = sum(nsecs - @irq_start[cpu]); delete(@irq_start[cpu]);
}
BEGIN { printf("bpftrace attached\n"); }
END { clear(@start); clear(@irq_start); clear(@owner); clear(@paused); }
"#;

/// The kernel log's lines about processes killed for lack of memory.
fn oom_kills() -> String {
    let dmesg = Command::new("dmesg")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let lines: Vec<String> = String::from_utf8_lossy(&dmesg)
        .lines()
        .filter(|l| l.contains("Out of memory") || l.contains("oom-kill"))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        "none".to_string()
    } else {
        lines.join("\n")
    }
}

#[test]
fn net_rx_time_agrees_with_an_independent_bpftrace_measurement() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cbt");

    let bt_out = TempFile::new("bpftrace-out");
    let bt_err = TempFile::new("bpftrace-err");
    let bt = Command::new("bpftrace")
        .args(["-f", "json", "-o", bt_out.arg(), "-e", BPFTRACE_NET_RX])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&bt_err.0).expect("bpftrace's stderr file"))
        .spawn()
        .expect("bpftrace must be installed (scripts/deps.sh installs it)");
    let bt_pid = bt.id();
    // bpftrace prints its maps when interrupted.
    let bt = Guarded::new(bt, libc::SIGINT);
    // A bound against hangs, as long as netlens may take to get ready:
    // bpftrace parses BTF and compiles with LLVM first, which took over
    // 60 s on an emulated PREEMPT_RT kernel beside two other VMs.
    let deadline = Instant::now() + READY_TIMEOUT;
    while !std::fs::read_to_string(&bt_out.0).is_ok_and(|t| t.contains("bpftrace attached")) {
        assert!(
            Instant::now() < deadline,
            "bpftrace did not attach within {READY_TIMEOUT:?}; its stderr: {}",
            std::fs::read_to_string(&bt_err.0).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // --bpf-stats always: the kernel times every BPF program run while
    // netlens runs, bpftrace's included (see below).
    let run = CostRun::start(&["-f", "0", "--bpf-stats", "always"]);
    let before = run.log_so_far().entry_total("net_rx_softirq");
    bulk(&p.a, p.addr, "2");
    // Quiet before netlens stops: bpftrace, stopped after it, would count
    // alone a NET_RX run that ends after netlens's last read (on an emulated
    // PREEMPT_RT kernel one such run of the draining receiver took 37 ms).
    thread::sleep(Duration::from_secs(1));
    let bt_prog = prog_run_stats(bt_pid);
    let nl_prog = prog_run_stats(run.pid());
    let log = run.stop();
    let stopping = Instant::now();
    let status = bt.stop();
    assert!(
        status.success(),
        "bpftrace: {status} {:.1} s after SIGINT (SIGKILL comes from this test after {} s); \
         its stderr: {}; the kernel's out-of-memory kills: {}",
        stopping.elapsed().as_secs_f64(),
        STOP_TIMEOUT.as_secs(),
        std::fs::read_to_string(&bt_err.0).unwrap_or_default(),
        oom_kills()
    );
    drop(p.server);
    let text = std::fs::read_to_string(&bt_out.0).unwrap();
    let map_value = |name: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "map" && v["data"].get(name).is_some())
            .and_then(|v| v["data"][name].as_u64())
    };
    let bpftrace_ns =
        map_value("@ns").unwrap_or_else(|| panic!("no @ns in bpftrace output:\n{text}"));
    // Hard IRQ handlers that ran inside NET_RX: netlens leaves them out
    // (they are IRQ time), so they are taken out of bpftrace's figure too.
    // On an emulated CPU they are a large share (timer interrupts are slow).
    let irq_ns = map_value("@irq_ns").unwrap_or(0);
    let (entries, exits, pauses) = (
        map_value("@entries").unwrap_or(0),
        map_value("@exits").unwrap_or(0),
        map_value("@pauses").unwrap_or(0),
    );
    let netlens_ns = log.entry_total("net_rx_softirq");
    eprintln!(
        "NET_RX: netlens {netlens_ns} ns in {} runs ({before} ns before the load); bpftrace \
         {bpftrace_ns} ns, of which {irq_ns} ns in hard IRQ handlers, {entries} entries, \
         {exits} exits, {pauses} pauses (PREEMPT_RT: the softirq's task switched out)",
        log.entry_spans("net_rx_softirq")
    );
    // Where the two tools' programs on a tracepoint run in one order, each
    // window holds part of the other tool's program runs at its ends: on
    // this host bpftrace's run first (netlens measures about 1 % more,
    // holding bpftrace's exit program), on the emulated Debian kernels of
    // the matrix the sign says the other way round (netlens 9-10 % less,
    // about one bpftrace exit-side run per NET_RX run). So the bound allows
    // per NET_RX run one run of each tool's costliest program, either way.
    // Both costs are measured in this run (the kernel's BPF statistics per
    // program) and are far from negligible on an emulated CPU, where a
    // NET_RX run is short beside a program run. Which program is which is
    // not in the statistics, so each tool's costliest among those that ran
    // at least once per NET_RX run is taken (the softirq programs run for
    // every softirq).
    let per_program = |p: &ProgRunStats| -> String {
        p.programs
            .iter()
            .filter(|&&(_, runs)| runs > 0)
            .map(|&(ns, runs)| format!("{}x{:.0}ns", runs, ns as f64 / runs as f64))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "programs (runs x average): bpftrace {}; netlens {}",
        per_program(&bt_prog),
        per_program(&nl_prog)
    );
    let runs_u64 = log.entry_spans("net_rx_softirq").max(exits);
    let runs = runs_u64 as f64;
    let (bt_run_ns, nl_run_ns) = (
        bt_prog.max_average_ns(runs_u64),
        nl_prog.max_average_ns(runs_u64),
    );
    let reference = (bpftrace_ns - irq_ns) as f64;
    // A run bpftrace saw whole and netlens did not (one, now and then, on
    // the emulated kernels of the matrix, of 27-37 ms; cause not
    // established: a run straddling netlens's start or stop is suspected)
    // is at most bpftrace's longest run; netlens must account for all the
    // others.
    let unseen = exits.saturating_sub(log.entry_spans("net_rx_softirq"));
    let longest = map_value("@longest").unwrap_or(0) as f64;
    // bpftrace ran a little longer on both sides, at idle: 5 %.
    let either_way = runs * (nl_run_ns + bt_run_ns);
    let low = reference * 0.95 - either_way - unseen as f64 * longest;
    let high = reference * 1.05 + either_way;
    eprintln!(
        "one BPF program run: bpftrace {bt_run_ns:.0} ns, netlens {nl_run_ns:.0} ns; {unseen} \
         run(s) seen by bpftrace only (longest run {longest:.0} ns); netlens must be within \
         [{low:.0}, {high:.0}] ns, ratio {:.4}",
        netlens_ns as f64 / reference
    );
    assert!(
        (low..=high).contains(&(netlens_ns as f64)),
        "netlens NET_RX {netlens_ns} ns outside [{low:.0}, {high:.0}] ns (bpftrace {reference:.0} ns)"
    );
}

#[test]
fn folded_stacks_and_flame_graph_are_written_on_exit() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cfold");
    let folded = TempFile::new("folded");
    let svg = TempFile::new("flame.svg");
    let run = CostRun::start(&[
        "-f",
        "2000",
        "--folded",
        folded.arg(),
        "--flamegraph",
        svg.arg(),
    ]);
    bulk(&p.a, p.addr, "1");
    let log = run.stop();
    drop(p.server);
    let text = std::fs::read_to_string(&folded.0).unwrap();
    let svg_text = std::fs::read_to_string(&svg.0).unwrap();
    let mut samples = 0;
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count` line");
        samples += count.parse::<u64>().expect("count");
        assert!(!stack.is_empty());
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("net_rx_action;") && l.contains("tcp_v4_rcv")),
        "no net_rx_action ... tcp_v4_rcv stack in\n{text}"
    );
    // Every NET_RX sample the log counted is in the file, but for those
    // lost (ring buffer full) or without a readable stack, which are counted.
    let logged: u64 = log
        .lines
        .iter()
        .map(|l| l["sampling"]["net_rx_samples"].as_u64().unwrap())
        .sum();
    let lost = u(&log.last()["sampling"], "lost_total");
    let unreadable = u(&log.last()["sampling"], "stack_errors_total");
    assert_eq!(samples + unreadable, logged - lost);
    assert!(svg_text.contains("<svg") && svg_text.contains("net_rx_action"));
}

#[test]
fn bad_input_gets_a_clear_message_and_exit_status() {
    if !require_root() {
        return;
    }
    let nl = env!("CARGO_BIN_EXE_netlens");
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["cost", "-u", "4000000000"],
            2,
            "no process with PID 4000000000",
        ),
        (
            &["cost", "-f", "100000000"],
            2,
            "above the kernel's maximum sampling rate",
        ),
        (
            &["cost", "-l", "/proc/netlens/none.json"],
            1,
            "cannot open log file",
        ),
        (
            &["cost", "-f", "0", "--folded", "/tmp/x"],
            2,
            "need stack sampling",
        ),
    ];
    for (args, status, message) in cases {
        let out = run(nl, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
    }
}

impl CostLog {
    /// Completed spans of an entry over the whole run (sum of the periods).
    fn entry_spans(&self, name: &str) -> u64 {
        self.lines
            .iter()
            .map(|l| u(&l["entries"][name], "spans"))
            .sum()
    }
}

/// `netlens-peer uring` (64 KiB sends, one request at a time) from a to a
/// server in b, with or without IOSQE_ASYNC and --wait-stdin.
fn uring_peer(
    a: &Netns,
    to: std::net::SocketAddr,
    secs: &str,
    force_async: bool,
    wait_stdin: bool,
) -> Peer {
    let to = to.to_string();
    let mut args = vec!["uring", "--to", &to, "--secs", secs, "--size", "65536"];
    if force_async {
        args.push("--async");
    }
    if wait_stdin {
        args.push("--wait-stdin");
    }
    peer(Some(a), &args)
}

/// The `uring` line of a finished peer; it must have sent something.
fn uring_result(p: Peer) -> Value {
    let out = p.finish_output();
    let done = out
        .events
        .iter()
        .find(|v| v["event"] == "uring")
        .unwrap_or_else(|| panic!("no uring result: {out:?}"))
        .clone();
    assert!(
        out.status.success() && done.get("error").is_none(),
        "netlens-peer uring failed ({}): {done}\n{}",
        out.status,
        out.stderr
    );
    assert!(u(&done, "bytes") > 0 && u(&done, "ops") > 0, "{done}");
    done
}

#[test]
fn io_uring_worker_time_is_measured() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("curw");
    // The client connects and waits: netlens measures its PID from the
    // first send on, so every send falls inside the run.
    let mut client = uring_peer(&p.a, p.addr, "2", true, true);
    client.wait_event("connected");
    let pid = client.pid().to_string();
    let run = CostRun::start(&["-f", "0", "-u", &pid, "--top", "1000"]);
    run.wait_stderr("netlens: ready");
    client.release();
    let done = uring_result(client);
    let log = run.stop();
    drop(p.server);

    let (bytes, ops) = (u(&done, "bytes"), u(&done, "ops"));
    let worker = log.entry_total("io_uring_worker");
    let worker_spans = log.entry_spans("io_uring_worker");
    let PidSums {
        system, tx, intr, ..
    } = log.pid_sums(&pid);
    eprintln!(
        "uring --async (pid {pid}): {ops} sends, {bytes} bytes in {:.2} s; io_uring_worker {worker} ns in \
         {worker_spans} spans machine-wide; client TX {tx} ns, interrupts in context {intr} ns, \
         system {system} ns (its workers included); (worker + interrupts) / system {:.3}",
        done["secs"].as_f64().unwrap(),
        (worker + intr) as f64 / system as f64
    );
    assert!(worker > 1_000_000, "io_uring_worker time {worker} ns");
    // Every send ran in a worker, and nearly every one completed there,
    // ending one worker span. The exceptions: a send that finds the socket
    // buffer full is retried when it drains and completes in the client's
    // own io_uring_enter, as one TX call of the client (1 in 779 on an
    // emulated CPU, 29 in 2,248 once on emulated 6.1 PREEMPT_RT, none in
    // 85,638 here), and runs of netlens's programs the kernel skipped
    // (counted). So worker spans plus the client's TX calls (its
    // per-process record) account for the sends, but for a few that are
    // in neither (2-4 of 21,000-25,000 here; the cause is not established,
    // hence the 1 % allowance); most must be workers' (sends made anywhere
    // else would leave ~0 worker spans).
    let missed = u(&log.last()["self"], "bpf_runs_missed_total");
    let inline: u64 = log
        .process_rows()
        .filter(|t| t["pid"].as_u64().map(|p| p.to_string()) == Some(pid.clone()))
        .map(|t| u(t, "tx_calls"))
        .sum();
    assert!(
        (worker_spans + inline + missed) * 100 >= ops * 99 && worker_spans * 10 >= ops * 9,
        "{worker_spans} io_uring_worker spans and {inline} TX calls of the client for {ops} \
         sends ({missed} BPF runs skipped)"
    );
    // The client's io_uring_enter only queued requests and waited: ending
    // in no socket operation, its time is not TX. Counted as TX, the wait
    // would be about the whole run, more than the workers' time; what TX
    // there is comes from the sends that completed inline (above): 6 of
    // 824 on emulated 6.1 PREEMPT_RT made 12 ms, 1.2 % of the workers'.
    assert!(
        tx * 10 < worker,
        "client TX {tx} ns beside io_uring_worker {worker} ns ({} sends completed outside a \
         worker)",
        ops.saturating_sub(worker_spans)
    );
}

#[test]
fn io_uring_enter_socket_time_counts_as_tx() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cure");
    // The client sends once netlens is ready, however slow its start.
    let mut client = uring_peer(&p.a, p.addr, "5", false, true);
    client.wait_event("connected");
    let pid = client.pid().to_string();
    let run_time_before = sched_run_time(&pid);
    let stolen_before = stolen_ns();
    let run = CostRun::start(&["-f", "0", "-u", &pid]);
    run.wait_stderr("netlens: ready");
    client.release();
    thread::sleep(Duration::from_secs(2));
    let log = run.stop();
    // The client sends for 5 s, so it outlives netlens's run.
    let ran = sched_run_time(&pid) - run_time_before;
    let stolen = stolen_since(stolen_before);
    let done = uring_result(client);
    drop(p.server);

    let PidSums {
        user,
        system,
        tx,
        rx,
        intr,
    } = log.pid_sums(&pid);
    let tx_spans = log.entry_spans("tx_syscall");
    let worker = log.entry_total("io_uring_worker");
    let worker_spans = log.entry_spans("io_uring_worker");
    let ratio = (tx + intr) as f64 / system as f64;
    eprintln!(
        "uring inline: {} sends, {} bytes in {:.2} s; client system {system} ns, TX {tx} ns \
         ({tx_spans} TX spans machine-wide), RX {rx} ns, interrupts in context {intr} ns, \
         (TX + interrupts) / system {ratio:.3}, run time {ran} ns (schedstat), {stolen} ns \
         stolen by the hypervisor; \
         io_uring_worker {worker} ns in {worker_spans} spans",
        u(&done, "ops"),
        u(&done, "bytes"),
        done["secs"].as_f64().unwrap()
    );
    // At least 25 ticks of /proc time, even on a busy machine.
    assert!(
        system > 100_000_000,
        "client used only {system} ns of system time"
    );
    assert!(tx > 0, "client TX time {tx} ns");
    assert_eq!(rx, 0, "the client only sends");
    // Nearly all of the client's kernel time is io_uring_enter, and nearly
    // all of that leads up to a send. Left out: the part after the send
    // (posting and reaping the completion), system call entry and exit.
    // It can never exceed the client's run time by the scheduler's exact
    // figure over a window that holds netlens's run, plus the time the
    // hypervisor stole (spans are clock time; the run time leaves stolen
    // time out). (/proc's user + system is the run time in 10 ms ticks,
    // read at each period's end: a CI run saw TX + interrupts 1.1 % above
    // it.)
    assert!(
        ratio >= 0.6,
        "client (TX + interrupts) / system time = {ratio:.3}"
    );
    assert!(
        tx + intr <= ran + stolen,
        "client TX + interrupts {} ns above its run time {ran} ns (schedstat; \
         user + system {} ns by /proc) plus the {stolen} ns stolen by the hypervisor",
        tx + intr,
        user + system
    );
    // No request of this run went to io-wq.
    assert!(
        worker < 1_000_000,
        "io_uring_worker {worker} ns in {worker_spans} spans"
    );
}

/// `netlens cost -P`: a real Prometheus server scrapes it; the NET_RX
/// categories it stores add up to the NET_RX counter of the same scrape.
#[test]
fn prometheus_server_reads_the_cost_counters() {
    if !require_root() {
        return;
    }
    let binary = PrometheusServer::binary();
    let _serial = serial();
    let p = sink_pair("cprom");
    let nl = Netlens::start_cost(&["-f", "1000", "-P", "127.0.0.1:0", "--user-period", "250"]);
    let ep = nl.prometheus_addr();
    let prom = PrometheusServer::start(&binary, &[ep]);
    bulk(&p.a, p.addr, "2");
    drop(p.server);

    let resp = http_get(ep, "/metrics").expect("GET /metrics");
    assert_eq!(resp.status, 200);
    let samples = parse_exposition(&resp.body);
    let direct = prom_value(
        &samples,
        "netlens_cost_cpu_seconds_total",
        &[("cpu", "0"), ("entry", "net_rx_softirq")],
    );
    assert!(direct.is_some(), "no per-CPU NET_RX series:\n{}", resp.body);
    assert!(
        prom_value(&samples, "netlens_bpf_runs_missed_total", &[]).is_some(),
        "no netlens_bpf_runs_missed_total:\n{}",
        resp.body
    );

    let net_rx = "sum(netlens_cost_cpu_seconds_total{job=\"netlens\",entry=\"net_rx_softirq\"})";
    let (r, ok) = prom.wait_query(net_rx, Duration::from_secs(30), |r| {
        r.len() == 1 && r[0].1 > 0.01
    });
    assert!(
        ok,
        "{net_rx} gave {r:?}; prometheus log:\n{}",
        prom.log_text()
    );
    // Both sums from the latest scrape: the categories add up to NET_RX.
    let both = prom.query(&format!(
        "{net_rx} - sum(netlens_cost_net_rx_cpu_seconds_total{{job=\"netlens\"}})"
    ));
    assert_eq!(both.len(), 1, "{both:?}");
    assert!(
        both[0].1.abs() < 1e-6,
        "NET_RX minus its categories = {}",
        both[0].1
    );
    let meta = prom.api("metadata?metric=netlens_cost_cpu_seconds_total");
    assert_eq!(
        meta["data"]["netlens_cost_cpu_seconds_total"][0]["type"],
        "counter"
    );
    drop(nl);
}

#[test]
fn cost_exporter_on_a_taken_port_exits_1() {
    if !require_root() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let out = run(env!("CARGO_BIN_EXE_netlens"), &["cost", "-P", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve Prometheus metrics on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Whether this CPU can sample hardware cycles, asked of the kernel
/// directly (perf_event_open of PERF_COUNT_HW_CPU_CYCLES on CPU 0).
fn cpu_has_cycle_sampling() -> bool {
    // perf_event_attr: type u32, size u32, config u64, sample_freq u64,
    // sample_type u64, read_format u64, then the flag bits (freq is bit 10);
    // the rest zero. 128 bytes is PERF_ATTR_SIZE_VER7.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&0u32.to_ne_bytes()); // PERF_TYPE_HARDWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_HW_CPU_CYCLES
    attr[16..24].copy_from_slice(&1000u64.to_ne_bytes());
    attr[40..48].copy_from_slice(&(1u64 << 10).to_ne_bytes());
    // SAFETY: attr is a zero-padded perf_event_attr of the size it declares;
    // the returned fd, if any, is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1, 0, -1, 0) };
    if fd >= 0 {
        // SAFETY: fd was just returned by perf_event_open.
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

/// Without -f, netlens samples CPU cycles where the CPU has a PMU and the
/// scheduler tick where it has none, and says which in the log and on stderr.
#[test]
fn default_sampling_follows_the_pmu() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let pmu = cpu_has_cycle_sampling();
    let run = CostRun::start(&[]);
    run.wait_stderr("netlens: ready");
    let log = run.stop();
    let (source, frequency) = if pmu { ("cycles", 1000) } else { ("tick", 0) };
    for line in &log.lines {
        let s = &line["sampling"];
        assert_eq!(s["source"], source, "PMU {pmu}: {s}");
        assert_eq!(s["auto"], true, "{s}");
        assert_eq!(s["frequency"], frequency, "{s}");
        assert_eq!(s["on_tick"], !pmu, "{s}");
    }
    // An explicit frequency is a cpu-clock rate, whatever the CPU has.
    let run = CostRun::start(&["-f", "100"]);
    run.wait_stderr("netlens: ready");
    let log = run.stop();
    assert!(log
        .lines
        .iter()
        .all(|l| l["sampling"]["source"] == "cpu_clock" && l["sampling"]["auto"] == false));
}

/// Runs of a process's BPF programs by program type (from the fdinfo of its
/// program descriptors; counted while the kernel's BPF statistics are on).
/// cost's only classic tracepoint programs (type 5) are the per-call system
/// call ones; its tp_btf programs, raw_syscalls' among them, are tracing
/// programs (type 26).
fn runs_by_prog_type(pid: u32) -> std::collections::HashMap<u64, u64> {
    let mut runs = std::collections::HashMap::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("read fdinfo")
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(kind) = field("prog_type:") {
            *runs.entry(kind).or_default() += field("run_cnt:").unwrap_or(0);
        }
    }
    runs
}

const PROG_TYPE_TRACEPOINT: u64 = 5;
const PROG_TYPE_TRACING: u64 = 26;

/// This process's TX and RX system call time so far (ns), as -u reports it.
fn own_syscall_ns(log: &CostLog) -> (u64, u64) {
    let p = &log.last()["pids"][0];
    assert_eq!(u(p, "pid"), u64::from(std::process::id()), "{p}");
    (u(p, "tx_syscall_ns_total"), u(p, "rx_syscall_ns_total"))
}

fn check_ret(what: &str, ret: isize) -> usize {
    assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
    ret as usize
}

/// System calls that are no network I/O: n of each of getppid, write to
/// /dev/null, read from /dev/zero, and a pipe's write and read.
fn calls_on_no_socket(n: usize) {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let mut p = [0i32; 2];
    // SAFETY: p has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    let mut b = [0u8; 1];
    use std::os::fd::AsRawFd;
    for _ in 0..n {
        // SAFETY: plain system calls on descriptors this function owns and
        // a one-byte buffer that outlives them.
        unsafe {
            libc::syscall(libc::SYS_getppid);
            check_ret("write", libc::write(null.as_raw_fd(), b.as_ptr().cast(), 1));
            check_ret(
                "read",
                libc::read(zero.as_raw_fd(), b.as_mut_ptr().cast(), 1),
            );
            check_ret("write", libc::write(p[1], b.as_ptr().cast(), 1));
            check_ret("read", libc::read(p[0], b.as_mut_ptr().cast(), 1));
        }
    }
    // SAFETY: the pipe's descriptors are ours and closed once.
    unsafe {
        libc::close(p[0]);
        libc::close(p[1]);
    }
}

/// A connected AF_UNIX stream pair and a pipe; `op` runs n times on
/// (socket a, socket b, pipe read end, pipe write end).
fn on_socket_pair(n: usize, op: impl Fn(i32, i32, i32, i32)) {
    let (mut s, mut p) = ([0i32; 2], [0i32; 2]);
    // SAFETY: s and p have room for the two descriptors each call writes.
    unsafe {
        assert_eq!(
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, s.as_mut_ptr()),
            0
        );
        assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
    }
    for _ in 0..n {
        op(s[0], s[1], p[0], p[1]);
    }
    for fd in s.into_iter().chain(p) {
        // SAFETY: descriptors opened above, closed once.
        unsafe { libc::close(fd) };
    }
}

/// One byte through splice: pipe -> socket a (TX), socket b -> pipe (RX);
/// the pipe is written and read with write and read, which are not
/// socket I/O.
fn splices(n: usize) {
    on_socket_pair(n, |a, b, pr, pw| {
        let mut byte = [0u8; 1];
        // SAFETY: plain system calls on descriptors on_socket_pair owns,
        // null offsets (pipes and sockets have none), a one-byte buffer.
        unsafe {
            check_ret("write", libc::write(pw, byte.as_ptr().cast(), 1));
            let null = std::ptr::null_mut();
            check_ret("splice TX", libc::splice(pr, null, a, null, 1, 0));
            check_ret("splice RX", libc::splice(b, null, pw, null, 1, 0));
            check_ret("read", libc::read(pr, byte.as_mut_ptr().cast(), 1));
        }
    });
}

/// One byte each way with pwritev2 and preadv2 at offset -1 (the file
/// position, which works on sockets).
fn vectored_v2(n: usize) {
    on_socket_pair(n, |a, b, _, _| {
        let mut byte = [0u8; 1];
        let iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: iov describes byte, which outlives both calls.
        unsafe {
            check_ret("pwritev2", libc::pwritev2(a, &iov, 1, -1, 0));
            check_ret("preadv2", libc::preadv2(b, &iov, 1, -1, 0));
        }
    });
}

/// Every way of hooking system calls (raw_syscalls, the default; per-call
/// tracepoints; and per-call asked for on a kernel without them, as without
/// CONFIG_FTRACE_SYSCALLS, falling back to raw_syscalls): check reports the
/// way, calls on descriptors that are no sockets are never counted, splice
/// and preadv2/pwritev2 on sockets are; and with per-call tracepoints, a
/// storm of other system calls runs no program at all, where raw_syscalls
/// runs two per call.
#[test]
fn system_calls_are_hooked_through_raw_syscalls_or_per_call() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let own = std::process::id().to_string();
    for hooking in Hooking::ALL {
        let raw = hooking.raw();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
        cmd.arg("check");
        hooking.apply(&mut cmd);
        let out = cmd.output().expect("run netlens check");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{report}");
        let line = |mark: &str, name: &str| format!("[{mark}] {name}");
        let raw_lines = report.contains(&line(" ok ", "tracepoint raw_syscalls/sys_enter"))
            && report.contains(&line(" ok ", "tracepoint raw_syscalls/sys_exit"));
        match hooking {
            Hooking::Default => assert!(
                raw_lines
                    && report.contains(&line(" ok ", "tracepoints syscalls/sys_*_<call>"))
                    && report.contains("--syscall-hook per-call"),
                "{report}"
            ),
            Hooking::PerCall => assert!(
                report.contains(&line(" ok ", "tracepoints syscalls/sys_*_<call>"))
                    && !report.contains("raw_syscalls"),
                "{report}"
            ),
            Hooking::PerCallMissing => assert!(
                raw_lines
                    && report.contains(&line("warn", "tracepoints syscalls/sys_*_<call>"))
                    && report.contains("raw_syscalls instead"),
                "{report}"
            ),
        }
        assert!(report.contains("netlens cost: can run"), "{report}");

        let run = CostRun::start_hooked(&["-f", "0", "--bpf-stats", "always", "-u", &own], hooking);
        run.wait_stderr("netlens: ready");
        let hook = match hooking {
            Hooking::Default => "system calls timed by raw_syscalls (a BPF program",
            Hooking::PerCall => "system calls timed by their own tracepoints",
            Hooking::PerCallMissing => "system calls timed by raw_syscalls (the per-call",
        };
        run.wait_stderr(hook);
        let start = run.log_so_far();

        // No socket: nothing counted, exactly (this process does no other
        // socket I/O).
        let storm = 100_000;
        let before = runs_by_prog_type(run.pid());
        calls_on_no_socket(storm);
        let after = runs_by_prog_type(run.pid());
        let log = run.log_after(&start, 2);
        assert_eq!(own_syscall_ns(&log), (0, 0), "{hooking:?}");
        let runs = |t: u64| after.get(&t).unwrap_or(&0) - before.get(&t).unwrap_or(&0);
        let (per_call, tracing) = (runs(PROG_TYPE_TRACEPOINT), runs(PROG_TYPE_TRACING));
        eprintln!(
            "{hooking:?}: {storm} of each of 5 calls on no socket: {per_call} \
             per-call program runs, {tracing} tp_btf program runs (host-wide)"
        );
        if raw {
            assert_eq!(per_call, 0);
            assert!(tracing >= 10 * storm as u64, "{tracing} tp_btf runs");
        } else {
            // Only the reads and writes run programs (enter and exit: they
            // test the descriptor), the rest of the host aside: not
            // getppid.
            assert!(
                per_call < 8 * storm as u64 + storm as u64 / 2,
                "{per_call} per-call program runs"
            );
            assert!(per_call >= 8 * storm as u64, "{per_call} per-call runs");
        }

        // splice, then preadv2/pwritev2, on sockets: counted each way.
        splices(2000);
        let log2 = run.log_after(&log, 2);
        let (tx, rx) = own_syscall_ns(&log2);
        eprintln!("{hooking:?}: splice: TX {tx} ns, RX {rx} ns");
        assert!(
            tx > 0 && rx > 0,
            "{hooking:?}: splice TX {tx} ns, RX {rx} ns"
        );
        vectored_v2(2000);
        let log3 = run.log_after(&log2, 2);
        let (tx2, rx2) = own_syscall_ns(&log3);
        eprintln!(
            "{hooking:?}: pwritev2/preadv2: TX {} ns, RX {} ns",
            tx2 - tx,
            rx2 - rx
        );
        assert!(
            tx2 > tx && rx2 > rx,
            "{hooking:?}: pwritev2/preadv2 not counted"
        );
        run.stop();
    }
}

/// A log that cannot be written (/dev/full: "No space left on device") is
/// warned about once and counted; the measurement runs to its end.
#[test]
fn unwritable_log_never_stops_measuring() {
    if !require_root() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"))
        .args([
            "cost",
            "-f",
            "0",
            "--user-period",
            "100",
            "--duration",
            "1.5",
        ])
        .args(["-l", "/dev/full"])
        .output()
        .expect("netlens cost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("warning: log file: ").count(), 1, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let dropped: u64 = stderr
        .split("outputs: log file: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped count on the exit line: {stderr}"));
    // Every report the table on stdout shows was lost to the log, and at
    // most one per period of the run plus the short one at exit (the table
    // leaves out reports shorter than 50 ms: the one at exit, and the one
    // cut short by --duration when the periods ran late, as on an emulated
    // kernel); the stdout output itself went on.
    let tables = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("netlens cost "))
        .count() as u64;
    assert!(tables >= 1, "no table was printed: {stderr}");
    assert!(
        (tables..=16).contains(&dropped),
        "{dropped} reports dropped, {tables} tables printed: {stderr}"
    );
}

/// Per network entry of a log's last report: the per-CPU total, the time
/// on process records (exited processes included) and on none.
fn attribution(log: &CostLog) -> Vec<(String, u64, u64, u64)> {
    let last = log.last();
    let p = &last["processes"];
    let names: Vec<String> = p["attributed_ns_total"]
        .as_object()
        .expect("processes.attributed_ns_total")
        .keys()
        .cloned()
        .collect();
    names
        .into_iter()
        .map(|e| {
            let per_cpu = sum(&last["entries"][&e]["total_ns"]);
            let on = u(&p["attributed_ns_total"], &e);
            let none = u(&p["unattributed_ns_total"], &e);
            (e, per_cpu, on, none)
        })
        .collect()
}

/// Every process's network time, exactly like the per-CPU rows: over a run
/// (the final report is read with the programs detached) the processes'
/// records, exited ones included, plus the time on none add up to the
/// per-CPU totals to the nanosecond, entry by entry; a sender in a
/// Kubernetes-style container cgroup is attributed to that container and
/// its pod in the log and in Prometheus; short-lived senders that exit
/// keep their time.
#[test]
fn every_process_and_container_adds_up_to_the_per_cpu_totals() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let Some((cg, id, uid)) = TestCgroup::kube_container() else {
        eprintln!("skipped: no cgroup hierarchy mounted");
        return;
    };
    let kube_id = format!("containerd://{id}");
    let p = sink_pair("cproc");
    let to = p.addr.to_string();
    let run = CostRun::start(&["-f", "0", "--top", "1000", "-P", "127.0.0.1:0"]);
    run.wait_stderr("netlens: ready");
    let ep = run.nl.as_ref().unwrap().prometheus_addr();
    let client = peer_in_cgroup(&cg, Some(&p.a), &["bulk", "--to", &to, "--secs", "2"]);
    let client_pid = u64::from(client.pid());
    let short_pids: Vec<u64> = (0..3)
        .map(|_| {
            let short = peer(Some(&p.a), &["bulk", "--to", &to, "--secs", "0.2"]);
            let pid = u64::from(short.pid());
            short.finish();
            pid
        })
        .collect();
    client.finish();
    // Two whole periods after the client is gone: its container's
    // counters no longer move.
    let settled = run.log_after(&run.log_so_far(), 2);
    let container_total = |log: &CostLog| -> Option<u64> {
        let c = log.last()["processes"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["container_id"] == kube_id.as_str())?
            .clone();
        Some(u(&c, "network_ns_total"))
    };
    let in_log = container_total(&settled).expect("the container in the log");
    let samples = scrape(ep);
    let in_prom: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "netlens_cost_container_cpu_seconds_total"
                && s.has_labels(&[("container_id", &kube_id)])
        })
        .map(|s| s.value)
        .sum();
    let by_name: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "netlens_cost_command_cpu_seconds_total"
                && s.has_labels(&[("comm", "netlens-peer"), ("entry", "tx_syscall")])
        })
        .map(|s| s.value)
        .sum();
    let log = run.stop();
    drop(p.server);

    // Exact agreement, entry by entry.
    for (entry, per_cpu, on, none) in attribution(&log) {
        eprintln!("{entry}: per CPU {per_cpu} ns, on processes {on} + on none {none}");
        assert_eq!(on + none, per_cpu, "{entry}");
        assert_eq!(none, 0, "{entry}: the table did not fill");
    }
    // The containers (and the host's processes) hold every process's time.
    let last = log.last();
    let procs = &last["processes"];
    for e in ["tx_syscall", "rx_syscall", "net_rx_softirq"] {
        let by_container: u64 = procs["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| u(&c["ns_total"], e))
            .sum();
        assert_eq!(by_container, u(&procs["attributed_ns_total"], e), "{e}");
    }
    // Each sender, seen in some period: the client in its container and
    // pod, the short ones exited with their time.
    let rows =
        |pid: u64| -> Vec<&Value> { log.process_rows().filter(|t| u(t, "pid") == pid).collect() };
    let client_rows = rows(client_pid);
    let last_row = client_rows.last().expect("the client in the log");
    assert_eq!(last_row["comm"], "netlens-peer");
    assert_eq!(last_row["container_id"], kube_id.as_str());
    assert_eq!(last_row["pod_uid"], uid.as_str());
    assert_eq!(last_row["cgroup"], cg.path.as_str());
    assert_eq!(last_row["alive"], false, "the client exited: {last_row}");
    let client_tx: u64 = client_rows.iter().map(|r| u(&r["ns"], "tx_syscall")).sum();
    assert_eq!(client_tx, u(&last_row["ns_total"], "tx_syscall"));
    assert!(client_tx > 10_000_000, "client TX {client_tx} ns");
    let container = procs["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container_id"] == kube_id.as_str())
        .expect("the container");
    assert_eq!(container["pod_uid"], uid.as_str());
    assert_eq!(
        u(&container["ns_total"], "tx_syscall"),
        client_tx,
        "one process in the container"
    );
    assert_eq!(u(container, "network_ns_total"), in_log);
    assert!(
        (in_prom - in_log as f64 / 1e9).abs() < 1e-6,
        "Prometheus {in_prom} s, log {in_log} ns"
    );
    // By name: the client and the short senders at least (the server
    // too, if it sent anything).
    let short_tx: u64 = short_pids
        .iter()
        .map(|&pid| u(&rows(pid).last().unwrap()["ns_total"], "tx_syscall"))
        .sum();
    assert!(
        by_name * 1e9 >= (client_tx + short_tx) as f64 - 1.0,
        "netlens-peer's TX by name {by_name} s, its processes {client_tx} + {short_tx} ns"
    );
    for pid in short_pids {
        let r = rows(pid);
        let last = r
            .last()
            .unwrap_or_else(|| panic!("short sender {pid} not in the log"));
        assert_eq!(last["alive"], false);
        assert!(u(&last["ns_total"], "tx_syscall") > 0, "{last}");
        assert!(last["container_id"].is_null());
    }
    // The sink server read in its own process.
    let server_rx: u64 = log
        .process_rows()
        .filter(|t| t["comm"] == "netlens-peer")
        .map(|t| u(&t["ns"], "rx_syscall"))
        .sum();
    assert!(server_rx > 0, "no RX time on the sink server");
}

/// A table too small for the host's processes: the time of those beyond it
/// is counted on none, said once on stderr and at exit, and the totals
/// still agree exactly.
#[test]
fn a_full_process_table_counts_what_it_could_not_attribute() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = sink_pair("cfull");
    let run = CostRun::start(&["-f", "0", "--max-processes", "1"]);
    run.wait_stderr("netlens: ready");
    // Two processes at least (sender and sink) for one record.
    bulk(&p.a, p.addr, "1");
    run.wait_stderr("warning: the per-process table is full (1 processes)");
    let (log, stderr) = run.stop_with_stderr();
    drop(p.server);
    let mut none_total = 0;
    for (entry, per_cpu, on, none) in attribution(&log) {
        assert_eq!(on + none, per_cpu, "{entry}");
        none_total += none;
    }
    assert!(none_total > 0, "nothing counted on no process");
    assert!(u(&log.last()["processes"], "tracked") <= 1);
    assert_eq!(
        stderr.matches("per-process table is full").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("CPU-seconds on no process (--max-processes 1 was full)"),
        "{stderr}"
    );
}
