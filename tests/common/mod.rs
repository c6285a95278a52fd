//! Helpers shared by the integration tests (`mod common;` in each test file).
//!
//! Everything here cleans up after itself: namespaces and veth pairs are
//! deleted on Drop, and child processes (netlens, netlens-peer) are stopped
//! by their own PID on Drop, also when a test panics.
//!
//! Network traffic stays on loopback or inside namespaces created here, on
//! the documentation ranges 192.0.2.0/24, 198.51.100.0/24 and 2001:db8::/32.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The line netlens prints on stderr once all programs are attached and
/// existing connections are seeded.
pub const NETLENS_READY: &str = "netlens: ready";
/// How long `Netlens::start` waits for [`NETLENS_READY`]: a bound against
/// hangs, not a measurement (a debug build reading /proc/kallsyms on an
/// emulated CPU beside another VM took over 20 s, and loading cost's 30
/// per-call system call programs there once took over 90 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `stop` waits after SIGTERM before SIGKILL.
/// How long a stopped process may take to finish (netlens writes a final
/// snapshot: of 10,000 connections in a debug build on an emulated CPU,
/// that took over 10 s). Only a bound against hangs, not a measurement.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wait for a peer's event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default wait for a peer to exit.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on any helper command (ip, nft, netlens check, ...): it measures
/// nothing, and `netlens check` load-tests both commands, which takes over
/// 30 s on an emulated CPU beside another VM.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// A path under the temporary directory unique to this test process and
/// call (the file is not created).
pub fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "netlens-{tag}-{}-{}",
        std::process::id(),
        next_seq()
    ))
}

/// A [`temp_path`] whose file is removed on Drop, also when the test fails.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        TempFile(temp_path(tag))
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child process that is stopped (the signal, then SIGKILL after
/// [`STOP_TIMEOUT`]) on Drop, also when the test fails.
pub struct Guarded {
    child: Option<Child>,
    signal: libc::c_int,
}

impl Guarded {
    pub fn new(child: Child, signal: libc::c_int) -> Guarded {
        Guarded {
            child: Some(child),
            signal,
        }
    }

    /// Stops it now and returns how it ended.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not stopped yet");
        terminate(&mut child, self.signal, STOP_TIMEOUT)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, self.signal, STOP_TIMEOUT);
        }
    }
}

/// Per-process sequence for unique namespace and interface names.
static SEQ: AtomicU32 = AtomicU32::new(0);

fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

fn test_name() -> String {
    thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_string()
}

/// Effective UID 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when running as root. Otherwise prints `SKIP <test>: needs root (BPF)`
/// and returns false; the test should then return early.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIP {}: needs root (BPF)", test_name());
    false
}

// ---------------------------------------------------------------------------
// Commands

/// Runs a command to completion (bounded by [`CMD_TIMEOUT`]) and returns its
/// output; panics if it cannot be started or does not finish in time.
pub fn run(prog: &str, args: &[&str]) -> Output {
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CMD_TIMEOUT) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{prog} {args:?}: {e}"),
        Err(_) => {
            kill_pid(pid, libc::SIGKILL);
            panic!("{prog} {args:?} did not finish within {CMD_TIMEOUT:?}");
        }
    }
}

/// Like [`run`] but panics unless the command succeeds; returns its stdout.
pub fn run_ok(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    if !out.status.success() {
        panic!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kill_pid(pid: u32, sig: libc::c_int) {
    // SAFETY: kill() has no memory-safety preconditions; `pid` is a child we
    // spawned and have not reaped yet, so it cannot name another process.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits for `child` to exit, up to `timeout`. None if it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if Instant::now() >= end {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM (unless `sig` says otherwise), wait up to `timeout`, then
/// SIGKILL. Only ever signals this child's own PID.
fn terminate(child: &mut Child, sig: libc::c_int, timeout: Duration) -> ExitStatus {
    if let Ok(Some(st)) = child.try_wait() {
        return st;
    }
    kill_pid(child.id(), sig);
    if let Some(st) = wait_timeout(child, timeout) {
        return st;
    }
    let _ = child.kill();
    child.wait().expect("wait after SIGKILL")
}

// ---------------------------------------------------------------------------
// Network namespaces

/// A network namespace `nl-<tag>-<pid>-<seq>` with `lo` up and IPv6 DAD
/// disabled; deleted on Drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("nl-{tag}-{}-{}", std::process::id(), next_seq());
        if PathBuf::from(format!("/run/netns/{name}")).exists() {
            // Left over by a crashed run that had our PID.
            let _ = run("ip", &["netns", "del", &name]);
        }
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // Addresses are usable at once: no duplicate address detection on
        // interfaces created later in this namespace.
        ns.exec_ok(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_dad=0",
        ]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs `args` inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Like [`Netns::exec`], panicking on failure; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// `ip -n NAME args...`, panicking on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// Runs `nft args...` inside the namespace; returns stdout.
    pub fn nft(&self, args: &[&str]) -> String {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        self.exec_ok(&full)
    }

    /// Sets a (namespace-local) sysctl, e.g. `net.ipv4.ip_local_port_range`.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Inode of the namespace (what netlens prints as `netns`).
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

/// Inode of the namespace this test process runs in.
pub fn host_netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("stat /proc/self/ns/net")
        .ino()
}

/// A veth pair joining two namespaces, with addresses on both ends.
/// Side A has `.1` / `::1`, side B `.2` / `::2`.
pub struct VethPair {
    a_ns: String,
    pub a_if: String,
    pub b_if: String,
    pub a4: Ipv4Addr,
    pub b4: Ipv4Addr,
    pub a6: Ipv6Addr,
    pub b6: Ipv6Addr,
}

impl VethPair {
    pub fn a(&self, v6: bool) -> IpAddr {
        if v6 {
            self.a6.into()
        } else {
            self.a4.into()
        }
    }

    pub fn b(&self, v6: bool) -> IpAddr {
        if v6 {
            self.b6.into()
        } else {
            self.b4.into()
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting one end deletes both; the namespace may be gone already.
        if PathBuf::from(format!("/run/netns/{}", self.a_ns)).exists() {
            let _ = run("ip", &["-n", &self.a_ns, "link", "del", &self.a_if]);
        }
    }
}

/// Joins `a` and `b` with a veth pair. `subnet_idx` 0 uses 192.0.2.0/24,
/// 1 uses 198.51.100.0/24; IPv6 is 2001:db8:<idx>::/64 for any idx. Waits
/// until the links are up and the IPv6 addresses are not tentative.
pub fn link(a: &Netns, b: &Netns, subnet_idx: u8) -> VethPair {
    let v4_net = match subnet_idx {
        0 => [192, 0, 2],
        1 => [198, 51, 100],
        n => panic!("subnet_idx {n}: only two IPv4 documentation /24s (0 and 1)"),
    };
    let seq = next_seq() % 10_000;
    // "nl" + pid (<= 7 digits) + "x" + seq (<= 4) + side = at most 15 chars.
    let base = format!("nl{}x{seq}", std::process::id());
    let (a_if, b_if) = (format!("{base}a"), format!("{base}b"));
    assert!(a_if.len() <= 15, "interface name {a_if} too long");
    let pair = VethPair {
        a_ns: a.name().to_string(),
        a4: Ipv4Addr::new(v4_net[0], v4_net[1], v4_net[2], 1),
        b4: Ipv4Addr::new(v4_net[0], v4_net[1], v4_net[2], 2),
        a6: format!("2001:db8:{subnet_idx:x}::1").parse().unwrap(),
        b6: format!("2001:db8:{subnet_idx:x}::2").parse().unwrap(),
        a_if,
        b_if,
    };
    a.ip(&[
        "link",
        "add",
        &pair.a_if,
        "type",
        "veth",
        "peer",
        "name",
        &pair.b_if,
        "netns",
        b.name(),
    ]);
    for (ns, ifname, v4, v6) in [
        (a, &pair.a_if, pair.a4, pair.a6),
        (b, &pair.b_if, pair.b4, pair.b6),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
        ns.ip(&["link", "set", ifname, "up"]);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !(link_ready(a, &pair.a_if) && link_ready(b, &pair.b_if)) {
        assert!(
            Instant::now() < end,
            "veth {}/{} not ready after 10 s",
            pair.a_if,
            pair.b_if
        );
        thread::sleep(Duration::from_millis(20));
    }
    pair
}

/// Link up and every IPv6 address usable (not tentative, DAD not failed).
fn link_ready(ns: &Netns, ifname: &str) -> bool {
    let out = ns.ip(&["-j", "addr", "show", "dev", ifname]);
    let v: Value = serde_json::from_str(&out).expect("ip -j addr output");
    let Some(link) = v.as_array().and_then(|a| a.first()) else {
        return false;
    };
    if link["operstate"] != "UP" {
        return false;
    }
    let addrs = link["addr_info"].as_array().cloned().unwrap_or_default();
    let v6: Vec<&Value> = addrs.iter().filter(|a| a["family"] == "inet6").collect();
    !v6.is_empty()
        && v6
            .iter()
            .all(|a| a.get("tentative").is_none() && a.get("dadfailed").is_none())
}

// ---------------------------------------------------------------------------
// Line collection from child processes

#[derive(Default)]
struct Lines {
    events: Vec<Value>,
    bad_lines: Vec<String>,
    stderr: Vec<String>,
    stdout_eof: bool,
    stderr_eof: bool,
}

/// Background readers: stdout lines parsed as JSON, stderr kept as text.
struct Collector {
    shared: Arc<(Mutex<Lines>, Condvar)>,
    readers: Vec<JoinHandle<()>>,
}

impl Collector {
    fn new(child: &mut Child) -> Collector {
        let shared: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr piped");
        let s1 = shared.clone();
        // A child whose stdout goes elsewhere has nothing to read there.
        let out_reader = thread::spawn(move || {
            for line in stdout
                .into_iter()
                .flat_map(|out| BufReader::new(out).lines())
            {
                let Ok(line) = line else { break };
                let (lock, cv) = &*s1;
                let mut l = lock.lock().unwrap();
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => l.events.push(v),
                    Err(_) => l.bad_lines.push(line),
                }
                cv.notify_all();
            }
            let (lock, cv) = &*s1;
            lock.lock().unwrap().stdout_eof = true;
            cv.notify_all();
        });
        let s2 = shared.clone();
        let err_reader = thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        let (lock, cv) = &*s2;
                        lock.lock().unwrap().stderr.push(line);
                        cv.notify_all();
                    }
                }
            }
            let (lock, cv) = &*s2;
            lock.lock().unwrap().stderr_eof = true;
            cv.notify_all();
        });
        Collector {
            shared,
            readers: vec![out_reader, err_reader],
        }
    }

    fn check_json(l: &Lines, who: &str) {
        if let Some(bad) = l.bad_lines.first() {
            panic!("{who} printed a non-JSON line on stdout: {bad:?}");
        }
    }

    fn events(&self, who: &str) -> Vec<Value> {
        let l = self.shared.0.lock().unwrap();
        Self::check_json(&l, who);
        l.events.clone()
    }

    fn stderr(&self) -> String {
        self.shared.0.lock().unwrap().stderr.join("\n")
    }

    /// Waits for the first event (from the start) satisfying `pred`.
    fn wait_for(
        &self,
        who: &str,
        mut pred: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let end = Instant::now() + timeout;
        let (lock, cv) = &*self.shared;
        let mut l = lock.lock().unwrap();
        let mut scanned = 0;
        loop {
            Self::check_json(&l, who);
            if let Some(v) = l.events[scanned..].iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            scanned = l.events.len();
            let now = Instant::now();
            if now >= end || l.stdout_eof {
                return None;
            }
            l = cv.wait_timeout(l, end - now).unwrap().0;
        }
    }

    /// Waits until a stderr line contains `needle`; false on timeout or EOF.
    pub(crate) fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let (lock, cv) = &*self.shared;
        let mut l = lock.lock().unwrap();
        loop {
            if l.stderr.iter().any(|s| s.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= end || l.stderr_eof {
                return false;
            }
            l = cv.wait_timeout(l, end - now).unwrap().0;
        }
    }

    /// Joins the readers once both pipes reached EOF (bounded: a reader whose
    /// pipe is held open by some grandchild is left behind).
    fn finish(&mut self) {
        let end = Instant::now() + Duration::from_secs(5);
        let (lock, cv) = &*self.shared;
        let mut l = lock.lock().unwrap();
        while !(l.stdout_eof && l.stderr_eof) {
            let now = Instant::now();
            if now >= end {
                return;
            }
            l = cv.wait_timeout(l, end - now).unwrap().0;
        }
        drop(l);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------
// netlens

/// Everything a stopped netlens printed.
#[derive(Debug)]
pub struct NetlensOutput {
    pub status: ExitStatus,
    pub events: Vec<Value>,
    pub stderr: String,
}

/// A running `netlens conns --json --no-log-file ...`; stopped on Drop.
pub struct Netlens {
    child: Option<Child>,
    lines: Collector,
}

impl Netlens {
    /// Starts netlens with `conns --json --no-log-file` + `args` and waits
    /// (up to 20 s) for `netlens: ready` on stderr.
    pub fn start(args: &[&str]) -> Netlens {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
        cmd.args(["conns", "--json", "--no-log-file"]).args(args);
        Netlens::start_cmd(cmd)
    }

    /// Starts an arbitrary command as if it were netlens (for harness tests).
    pub fn start_cmd(cmd: Command) -> Netlens {
        Netlens::start_cmd_with_stdout(cmd, Stdio::piped())
    }

    /// As [`Netlens::start_cmd`], with stdout going to `stdout` instead of
    /// being collected (then [`Netlens::events`] stays empty).
    pub fn start_cmd_with_stdout(mut cmd: Command, stdout: Stdio) -> Netlens {
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = Collector::new(&mut child);
        let mut nl = Netlens {
            child: Some(child),
            lines,
        };
        if !nl.lines.wait_stderr(NETLENS_READY, READY_TIMEOUT) {
            let out = nl.shutdown();
            panic!(
                "netlens did not print {NETLENS_READY:?} within {READY_TIMEOUT:?} \
                 (exit: {}); stderr:\n{}",
                out.status, out.stderr
            );
        }
        nl
    }

    /// Starts `netlens cost` + `args` (its table goes to a pipe nobody
    /// parses) and waits for `netlens: ready`.
    pub fn start_cost(args: &[&str]) -> Netlens {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
        cmd.arg("cost").args(args);
        Netlens::start_cmd(cmd)
    }

    /// Stops netlens (SIGTERM) without requiring JSON on stdout.
    pub fn stop_any_output(mut self) -> NetlensOutput {
        self.shutdown()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// All JSON lines so far. Panics if any stdout line was not JSON.
    pub fn events(&self) -> Vec<Value> {
        self.lines.events("netlens")
    }

    pub fn stderr(&self) -> String {
        self.lines.stderr()
    }

    /// Waits until a stderr line contains `needle`; false on timeout or if
    /// netlens closed stderr (exited).
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.lines.wait_stderr(needle, timeout)
    }

    /// Whether the process exited by itself (it is reaped if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("waiting for netlens"))
    }

    /// First event (since start) satisfying `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, pred: impl FnMut(&Value) -> bool, timeout: Duration) -> Option<Value> {
        self.lines.wait_for("netlens", pred, timeout)
    }

    /// SIGTERM, wait up to 10 s (then SIGKILL); returns everything printed.
    /// Panics if a stdout line was not JSON.
    pub fn stop(mut self) -> NetlensOutput {
        let out = self.shutdown();
        let l = self.lines.shared.0.lock().unwrap();
        Collector::check_json(&l, "netlens");
        out
    }

    fn shutdown(&mut self) -> NetlensOutput {
        let mut child = self.child.take().expect("netlens already stopped");
        let status = terminate(&mut child, libc::SIGTERM, STOP_TIMEOUT);
        self.lines.finish();
        let l = self.lines.shared.0.lock().unwrap();
        NetlensOutput {
            status,
            events: l.events.clone(),
            stderr: l.stderr.join("\n"),
        }
    }
}

impl Drop for Netlens {
    fn drop(&mut self) {
        if self.child.is_some() {
            let out = self.shutdown();
            if thread::panicking() {
                eprintln!("netlens stderr (test failed):\n{}", out.stderr);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// netlens-peer

/// Everything a finished peer printed.
#[derive(Debug)]
pub struct PeerOutput {
    pub status: ExitStatus,
    pub events: Vec<Value>,
    pub stderr: String,
}

/// A running `netlens-peer`; killed (by PID) on Drop if still running.
pub struct Peer {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Collector,
    args: Vec<String>,
}

/// The `netlens-peer` executable: a workspace member of its own (peer/),
/// built beside `netlens` by `cargo test` and `cargo build` at the top.
pub fn peer_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_netlens")).with_file_name("netlens-peer");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p netlens-peer` (add --release for \
         benchmarks), or run the tests with `cargo test` at the top of the workspace",
        bin.display()
    );
    bin
}

/// Starts `netlens-peer [--netns NAME] args...`.
pub fn peer(netns: Option<&Netns>, args: &[&str]) -> Peer {
    let mut cmd = Command::new(peer_bin());
    if let Some(ns) = netns {
        cmd.args(["--netns", ns.name()]);
    }
    cmd.args(args);
    spawn_peer(cmd, args)
}

/// [`peer`], started in the cgroup `cg` (a shell moves itself there, then
/// becomes netlens-peer: same PID).
pub fn peer_in_cgroup(cg: &TestCgroup, netns: Option<&Netns>, args: &[&str]) -> Peer {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
        .arg(cg.dir.join("cgroup.procs"))
        .arg(peer_bin());
    if let Some(ns) = netns {
        cmd.args(["--netns", ns.name()]);
    }
    cmd.args(args);
    spawn_peer(cmd, args)
}

fn spawn_peer(mut cmd: Command, args: &[&str]) -> Peer {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start netlens-peer {args:?}: {e}"));
    let stdin = child.stdin.take();
    let lines = Collector::new(&mut child);
    Peer {
        child: Some(child),
        stdin,
        lines,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Starts `netlens-peer serve args...` and waits for its `listening` line;
/// returns the peer and the address it listens on (port 0 resolved).
pub fn server(netns: Option<&Netns>, args: &[&str]) -> (Peer, SocketAddr) {
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    let p = peer(netns, &full);
    let ev = p.wait_event("listening");
    let addr = ev["addr"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad listening line {ev}"));
    (p, addr)
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines.events("netlens-peer")
    }

    /// First line whose `event` is `name`; panics after 20 s.
    pub fn wait_event(&self, name: &str) -> Value {
        self.wait_event_timeout(name, EVENT_TIMEOUT)
            .unwrap_or_else(|| {
                panic!(
                    "netlens-peer {:?}: no {name:?} event within {EVENT_TIMEOUT:?}; \
                     events: {:?}; stderr:\n{}",
                    self.args,
                    self.lines.events("netlens-peer"),
                    self.lines.stderr()
                )
            })
    }

    pub fn wait_event_timeout(&self, name: &str, timeout: Duration) -> Option<Value> {
        self.lines
            .wait_for("netlens-peer", |v| v["event"] == name, timeout)
    }

    /// Writes one line to the peer's stdin (releases `--wait-stdin`).
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write to peer stdin");
        stdin.flush().expect("flush peer stdin");
    }

    /// Waits (up to 60 s) for the peer to exit and returns all its events.
    pub fn finish(self) -> Vec<Value> {
        self.finish_output().events
    }

    /// Waits (up to 60 s) for exit; panics (after killing it) on timeout.
    pub fn finish_output(mut self) -> PeerOutput {
        self.finish_within(FINISH_TIMEOUT)
    }

    pub fn finish_within(&mut self, timeout: Duration) -> PeerOutput {
        self.stdin.take();
        let mut child = self.child.take().expect("peer already finished");
        let status = match wait_timeout(&mut child, timeout) {
            Some(st) => st,
            None => {
                terminate(&mut child, libc::SIGKILL, Duration::from_secs(5));
                self.lines.finish();
                panic!(
                    "netlens-peer {:?} still running after {timeout:?}; stderr:\n{}",
                    self.args,
                    self.lines.stderr()
                );
            }
        };
        self.lines.finish();
        PeerOutput {
            status,
            events: self.lines.events("netlens-peer"),
            stderr: self.lines.stderr(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin.take();
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, libc::SIGKILL, Duration::from_secs(5));
            self.lines.finish();
        }
    }
}

// ---------------------------------------------------------------------------
// Reading peer and netlens events

/// `v[key]` as u64; panics with the event if missing.
pub fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key:?} in {v}"))
}

/// A `tcp_info` field of a peer event.
pub fn ti(v: &Value, field: &str) -> u64 {
    v["tcp_info"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no tcp_info.{field} in {v}"))
}

/// A peer event's `local` / `remote` endpoint.
pub fn addr(v: &Value, key: &str) -> SocketAddr {
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address {key:?} in {v}"))
}

/// The `conn` events of one role ("client" / "server").
pub fn conns<'a>(events: &'a [Value], role: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|v| v["event"] == "conn" && v["role"] == role)
        .collect()
}

/// The only event named `name`; panics unless there is exactly one.
pub fn one<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|v| v["event"] == name).collect();
    assert_eq!(found.len(), 1, "expected one {name:?} event in {events:?}");
    found[0]
}

/// A netlens event's (local, remote) endpoints.
pub fn nl_tuple(v: &Value) -> (SocketAddr, SocketAddr) {
    let ep = |a: &str, p: &str| -> SocketAddr {
        let ip: IpAddr = v[a]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no {a} in {v}"));
        SocketAddr::new(ip, u(v, p) as u16)
    };
    (
        ep("local_addr", "local_port"),
        ep("remote_addr", "remote_port"),
    )
}

/// The netlens events of `typ` for the connection a peer `conn` line
/// describes (same local and remote endpoints).
pub fn nl_events_for<'a>(events: &'a [Value], typ: &str, peer_conn: &Value) -> Vec<&'a Value> {
    let want = (addr(peer_conn, "local"), addr(peer_conn, "remote"));
    events
        .iter()
        .filter(|v| v["type"] == typ && v.get("local_port").is_some() && nl_tuple(v) == want)
        .collect()
}

/// How far netlens counters may differ from the peer's TCP_INFO. The peer
/// takes TCP_INFO just before close(), netlens sees the socket later (the
/// FIN exchange follows), so a small slack is inherent.
#[derive(Clone, Copy, Debug)]
pub struct Slack {
    pub bytes: u64,
    pub segs: u64,
    pub retrans: u64,
}

impl Default for Slack {
    fn default() -> Slack {
        Slack {
            bytes: 2,
            segs: 4,
            retrans: 0,
        }
    }
}

/// Compares a netlens `close`/`metrics` event with the TCP_INFO of the peer's
/// `conn` line for the same socket. Mapping: bytes_sent ~ bytes_acked (which
/// counts the SYN on active opens and an acked FIN; tcpi_bytes_sent counts
/// neither, both are within 2), bytes_received ~ bytes_received (data + FIN),
/// packets_sent ~ segs_out, packets_received ~ segs_in, retransmits ~
/// total_retrans. Returns every mismatch.
pub fn tcp_info_matches(nl: &Value, peer_conn: &Value, slack: Slack) -> Result<(), String> {
    let pairs = [
        ("bytes_sent", "bytes_acked", slack.bytes),
        ("bytes_received", "bytes_received", slack.bytes),
        ("packets_sent", "segs_out", slack.segs),
        ("packets_received", "segs_in", slack.segs),
        ("retransmits", "total_retrans", slack.retrans),
    ];
    // A retransmission after TCP_INFO was taken (the FIN's, when the ACK is
    // slow) is one of the segments sent after it: it may add that many.
    let sent_after = nl["packets_sent"]
        .as_u64()
        .zip(peer_conn["tcp_info"]["segs_out"].as_u64())
        .map_or(0, |(a, b)| a.saturating_sub(b));
    let mut errs = Vec::new();
    for (nl_key, ti_key, tol) in pairs {
        let (Some(a), Some(b)) = (nl[nl_key].as_u64(), peer_conn["tcp_info"][ti_key].as_u64())
        else {
            errs.push(format!("missing {nl_key} or tcp_info.{ti_key}"));
            continue;
        };
        let tol = if nl_key == "retransmits" && a > b {
            tol + sent_after
        } else {
            tol
        };
        if a.abs_diff(b) > tol {
            errs.push(format!(
                "{nl_key}={a} vs tcp_info.{ti_key}={b} (slack {tol})"
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\nnetlens: {nl}\npeer: {peer_conn}",
            errs.join("; ")
        ))
    }
}

/// `ip:port` with IPv6 bracketed, as the peer CLI takes it.
pub fn sock(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// Two fresh namespaces A and B joined by a veth pair, with a
/// `netlens-peer serve` listening in B on the veth address (port chosen by
/// the kernel). Fields drop server first, then the link, then namespaces.
pub struct ServedPair {
    pub server: Peer,
    pub addr: SocketAddr,
    pub veth: VethPair,
    pub a: Netns,
    pub b: Netns,
}

/// One client connection from `netns` to `to` that sends `send` bytes
/// (`netlens-peer connect`), run to its end: the client's PID and output,
/// once it exited cleanly.
pub fn connect_once(netns: &Netns, to: SocketAddr, send: u64) -> (u32, PeerOutput) {
    let cli = peer(
        Some(netns),
        &[
            "connect",
            "--to",
            &to.to_string(),
            "--send",
            &send.to_string(),
        ],
    );
    let pid = cli.pid();
    let out = cli.finish_output();
    assert!(out.status.success(), "{out:?}");
    (pid, out)
}

/// See [`ServedPair`]; `serve_args` follow `serve --listen <addr>`.
pub fn served_pair(tag: &str, subnet_idx: u8, v6: bool, serve_args: &[&str]) -> ServedPair {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    let veth = link(&a, &b, subnet_idx);
    let listen = sock(veth.b(v6), 0);
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(serve_args);
    let (server, addr) = server(Some(&b), &args);
    ServedPair {
        server,
        addr,
        veth,
        a,
        b,
    }
}

impl Netns {
    /// Drops one in `modulo` of the TCP segments arriving in this namespace
    /// for `port` (nftables, random), to force retransmissions.
    pub fn drop_share(&self, port: u16, modulo: u32) {
        self.nft(&["add", "table", "inet", "nltest"]);
        self.nft(&[
            "add",
            "chain",
            "inet",
            "nltest",
            "in",
            "{ type filter hook input priority 0; }",
        ]);
        self.nft(&[
            "add",
            "rule",
            "inet",
            "nltest",
            "in",
            "tcp",
            "dport",
            &port.to_string(),
            "numgen",
            "random",
            "mod",
            &modulo.to_string(),
            "0",
            "drop",
        ]);
        assert!(self
            .nft(&["list", "table", "inet", "nltest"])
            .contains("drop"));
    }
}

// ---------------------------------------------------------------------------
// Prometheus: the endpoint of `netlens ... -P`, its text format, and a real
// Prometheus server scraping it

/// The line netlens prints on stderr once its metrics endpoint listens.
pub const PROMETHEUS_SERVING: &str = "netlens: prometheus: serving http://";

impl Netlens {
    /// The address of the `/metrics` endpoint (started with `-P ADDR:0`, the
    /// port is the one netlens printed).
    pub fn prometheus_addr(&self) -> SocketAddr {
        let stderr = self.stderr();
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(PROMETHEUS_SERVING))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {PROMETHEUS_SERVING:?} line; stderr:\n{stderr}"))
    }
}

/// The line netlens prints on stderr once its web UI listens.
pub const WEB_SERVING: &str = "netlens: web: serving http://";

impl Netlens {
    /// The address of the web UI (started with `--web ADDR:0`, the port is
    /// the one netlens printed).
    pub fn web_addr(&self) -> SocketAddr {
        let stderr = self.stderr();
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(WEB_SERVING))
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {WEB_SERVING:?} line; stderr:\n{stderr}"))
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, as sent.
    pub headers: Vec<String>,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` over HTTP/1.0 (so the body is never chunked), bounded to 10 s.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    use std::io::Read;
    let timeout = Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of HTTP head")
    })?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status line"))?;
    Ok(HttpResponse {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    })
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One sample of a text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// The content type of a text exposition (format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long [`wait_metrics`] scrapes before it gives up.
pub const METRICS_WAIT: Duration = Duration::from_secs(20);

/// One scrape of netlens's endpoint, checked for status, content type and
/// format.
pub fn scrape(ep: SocketAddr) -> Vec<PromSample> {
    let resp = http_get(ep, "/metrics").unwrap_or_else(|e| panic!("GET {ep}/metrics: {e}"));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some(CONTENT_TYPE));
    parse_exposition(&resp.body)
}

/// Scrapes until `pred` holds (up to [`METRICS_WAIT`]); panics with the last scrape.
pub fn wait_metrics(
    nl: &Netlens,
    what: &str,
    mut pred: impl FnMut(&[PromSample]) -> bool,
) -> Vec<PromSample> {
    let ep = nl.prometheus_addr();
    let end = Instant::now() + METRICS_WAIT;
    loop {
        let samples = scrape(ep);
        if pred(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < end,
            "netlens metrics never showed {what} within {METRICS_WAIT:?}: {:#?}\nstderr:\n{}",
            samples
                .iter()
                .filter(|s| s.name.starts_with("netlens_tcp_"))
                .collect::<Vec<_>>(),
            nl.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Parses a text exposition (format 0.0.4) strictly enough to catch what
/// Prometheus would refuse: every sample belongs to a family announced by
/// HELP and TYPE lines, label values are quoted and escaped, values parse.
/// Panics with the offending line otherwise.
pub fn parse_exposition(text: &str) -> Vec<PromSample> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashSet::new();
    let mut histograms = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            assert!(helped.insert(name.to_string()), "second HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or("");
            let kind = parts.next().unwrap_or("");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE: {line}"
            );
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counter not named _total: {line}"
            );
            assert!(typed.insert(name.to_string()), "second TYPE: {line}");
            if kind == "histogram" {
                histograms.insert(name.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = &line[..name_end];
        // A histogram's series are typed under the family's name.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| histograms.contains(*base))
            .unwrap_or(name);
        assert!(
            helped.contains(family) && typed.contains(family),
            "sample before its HELP/TYPE: {line}"
        );
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(r) => parse_labels(r).unwrap_or_else(|| panic!("bad label set: {line}")),
            None => (Default::default(), &line[name_end..]),
        };
        let value_str = rest.trim_start().split(' ').next().unwrap_or("");
        let value = match value_str {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        samples.push(PromSample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// Parses `a="x",b="y\"z"}` (the part after `{`) into labels and the rest of
/// the line; None if it is malformed.
fn parse_labels(mut r: &str) -> Option<(std::collections::BTreeMap<String, String>, &str)> {
    let mut labels = std::collections::BTreeMap::new();
    loop {
        r = r.strip_prefix(',').unwrap_or(r);
        if let Some(rest) = r.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (name, after) = r.split_once("=\"")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return None,
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return None;
        }
        r = &after[end + 1..];
    }
}

impl PromSample {
    /// Whether the sample's labels include all of `labels`.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// The value of the one sample named `name` whose labels include all of
/// `labels`; None if there is none, panics if several match.
pub fn prom_value(samples: &[PromSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&PromSample> = samples
        .iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .collect();
    assert!(found.len() <= 1, "several {name} {labels:?}: {found:?}");
    found.first().map(|s| s.value)
}

/// A cgroup of this test's own, a child of the root of the hierarchy
/// netlens reads; removed on Drop (once its processes are gone).
pub struct TestCgroup {
    pub dir: PathBuf,
    /// Its path in the hierarchy, as netlens reports it.
    pub path: String,
    /// The directories made for it, the innermost (`dir`) last.
    made: Vec<PathBuf>,
}

impl TestCgroup {
    /// `None` without a cgroup hierarchy.
    pub fn new(tag: &str) -> Option<TestCgroup> {
        let name = format!("netlens-test-{tag}-{}-{}", std::process::id(), next_seq());
        TestCgroup::nested(&[&name])
    }

    /// A cgroup at `names` (outermost first) below the root, as a
    /// container runtime names its cgroups; `None` without a hierarchy.
    pub fn nested(names: &[&str]) -> Option<TestCgroup> {
        let layout = netlens::sys::cgroup::layout()?;
        let mut dir = layout.mount_point.clone();
        let mut made = Vec::new();
        for name in names {
            dir = dir.join(name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            made.push(dir.clone());
        }
        let path = format!(
            "{}/{}",
            layout.mount_root.trim_end_matches('/'),
            names.join("/")
        );
        Some(TestCgroup { dir, path, made })
    }

    /// A cgroup named as containerd names a Kubernetes container's (systemd
    /// driver): `kubepods-pod<UID>.slice/cri-containerd-<ID>.scope`, with a
    /// fresh ID and pod UID; returns it with them.
    pub fn kube_container() -> Option<(TestCgroup, String, String)> {
        let seed = u64::from(std::process::id()) << 20 | u64::from(next_seq());
        let id = format!("{:016x}{:048x}", seed, 0xfeed_u64);
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", seed as u32, seed);
        let cg = TestCgroup::nested(&[
            &format!("kubepods-pod{}.slice", uid.replace('-', "_")),
            &format!("cri-containerd-{id}.scope"),
        ])?;
        Some((cg, id, uid))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Busy until the last process in it has been reaped.
        for dir in self.made.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// This process's cgroup in the hierarchy netlens reads on this host (what
/// its children's connections carry); `None` without one.
pub fn own_cgroup() -> Option<String> {
    use netlens::sys::cgroup;
    let layout = cgroup::layout()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    cgroup::parse_proc_cgroup(&text, layout.hierarchy)
}

/// A free TCP port on 127.0.0.1 (bound, then released: a small window in
/// which another process could take it).
pub fn free_local_port() -> u16 {
    // Below the ephemeral range: a port the kernel hands out (as port 0
    // does) may be taken by any test's outgoing connection before the
    // caller binds it.
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let start = 10_000u16.min(low.saturating_sub(1));
    let span = low.saturating_sub(start).max(1);
    let seed = u64::from(std::process::id()) * 7919 + u64::from(next_seq());
    (0..u64::from(span))
        .map(|i| start + ((seed + i * 7) % u64::from(span)) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A real Prometheus server (the Debian package's binary, run directly, never
/// the system service) with its own config and data directory, scraping the
/// given targets every second. Stopped by its PID and its directory removed
/// on Drop.
pub struct PrometheusServer {
    child: Option<Child>,
    dir: PathBuf,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl PrometheusServer {
    /// The `prometheus` binary, or None with a message saying how to get it.
    /// The prometheus binary; panics without one (the tests that need it
    /// do not skip: scripts/deps.sh installs it).
    pub fn binary() -> PathBuf {
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect(
                "the prometheus binary is needed for this test: `apt-get install prometheus` \
                 (scripts/deps.sh does)",
            )
    }

    /// Starts Prometheus scraping `targets` (job `netlens`) and waits (up to
    /// 60 s) until it is ready.
    pub fn start(binary: &std::path::Path, targets: &[SocketAddr]) -> PrometheusServer {
        let dir = std::env::temp_dir().join(format!(
            "netlens-prometheus-{}-{}",
            std::process::id(),
            next_seq()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("create prometheus dir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: netlens\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("create prometheus.log");
        let err_file = log_file.try_clone().expect("clone log file");
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        // A port taken between the check and the bind: try again with another.
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()));
            let mut child = Command::new(binary)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=1h")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log file"))
                .stderr(err_file.try_clone().expect("clone log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let end = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken? try another
                }
                if http_get(addr, "/-/ready").is_ok_and(|r| r.status == 200) {
                    return PrometheusServer {
                        child: Some(child),
                        dir,
                        addr,
                        log,
                    };
                }
                if Instant::now() >= end {
                    terminate(&mut child, libc::SIGTERM, STOP_TIMEOUT);
                    panic!("prometheus not ready within 60 s; log:\n{}", log_text());
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
        panic!("prometheus did not start; log:\n{}", log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/...` and its JSON; panics unless `"status": "success"`.
    pub fn api(&self, path_and_query: &str) -> Value {
        let resp = http_get(self.addr, &format!("/api/v1/{path_and_query}"))
            .unwrap_or_else(|e| panic!("prometheus API {path_and_query}: {e}"));
        let v: Value = serde_json::from_str(&resp.body)
            .unwrap_or_else(|e| panic!("prometheus API {path_and_query}: {e}: {}", resp.body));
        assert_eq!(
            v["status"], "success",
            "prometheus API {path_and_query}: {v}"
        );
        v
    }

    /// The values of an instant query's result vector, with their labels.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let v = self.api(&format!("query?query={}", url_encode(promql)));
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad sample {r}"));
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// Polls `query` until `pred` holds for its result, up to `timeout`;
    /// returns the last result and whether `pred` held.
    pub fn wait_query(
        &self,
        promql: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[(Value, f64)]) -> bool,
    ) -> (Vec<(Value, f64)>, bool) {
        let end = Instant::now() + timeout;
        loop {
            let r = self.query(promql);
            if pred(&r) {
                return (r, true);
            }
            if Instant::now() >= end {
                return (r, false);
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, libc::SIGTERM, STOP_TIMEOUT);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run time and runs of a process's BPF programs, from the fdinfo of its
/// program descriptors (counted while the kernel's BPF statistics are on).
#[derive(Default, Debug)]
pub struct ProgRunStats {
    /// (run time in ns, runs) of each program.
    pub programs: Vec<(u64, u64)>,
}

impl ProgRunStats {
    /// Runs of all the programs.
    pub fn runs(&self) -> u64 {
        self.programs.iter().map(|&(_, runs)| runs).sum()
    }

    /// The largest average run time among the programs that ran at least
    /// `min_runs` times: a bound on any one of them, also on one whose
    /// runs cost more than the average of all.
    pub fn max_average_ns(&self, min_runs: u64) -> f64 {
        self.programs
            .iter()
            .filter(|&&(_, runs)| runs >= min_runs.max(1))
            .map(|&(ns, runs)| ns as f64 / runs as f64)
            .fold(None, |max: Option<f64>, a| {
                Some(max.map_or(a, |m| m.max(a)))
            })
            .unwrap_or_else(|| panic!("no program ran {min_runs} times: {self:?}"))
    }
}

pub fn prog_run_stats(pid: u32) -> ProgRunStats {
    let mut stats = ProgRunStats::default();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo");
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        if !info.contains("prog_type:") {
            continue;
        }
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        stats
            .programs
            .push((field("run_time_ns:"), field("run_cnt:")));
    }
    stats
}
