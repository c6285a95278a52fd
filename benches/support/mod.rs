//! Helpers shared by the overhead benchmarks (each uses a part of them).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use netlens::sys::procfs;

use super::common::{NETLENS_READY, STOP_TIMEOUT};

/// A netlens run whose output goes to /dev/null (or a file) and stderr to
/// a file (parsing it here would cost CPU on the machine being measured).
/// Stopped by its PID on Drop, also when the benchmark panics.
pub struct QuietNetlens {
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl QuietNetlens {
    /// Starts `bin args...` with stdout to /dev/null and waits (up to 30 s)
    /// for `netlens: ready`.
    pub fn start<S: AsRef<OsStr>>(bin: &str, args: &[S], stderr_path: PathBuf) -> QuietNetlens {
        QuietNetlens::start_to(bin, args, Stdio::null(), stderr_path)
    }

    /// Like [`QuietNetlens::start`], with stdout to `stdout`.
    pub fn start_to<S: AsRef<OsStr>>(
        bin: &str,
        args: &[S],
        stdout: Stdio,
        stderr_path: PathBuf,
    ) -> QuietNetlens {
        let stderr = fs::File::create(&stderr_path).expect("create stderr file");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start netlens");
        let t = QuietNetlens {
            child: Some(child),
            stderr_path,
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// (user, system) CPU seconds of the process so far.
    pub fn cpu_secs(&self) -> (f64, f64) {
        let st = procfs::pid_stat(self.pid()).expect("netlens /proc/PID/stat");
        let tick = procfs::clock_ticks_per_sec() as f64;
        (st.utime as f64 / tick, st.stime as f64 / tick)
    }

    /// SIGTERM, wait; returns how it ended and what it printed on stderr.
    pub fn stop(mut self) -> (Option<ExitStatus>, String) {
        let status = self.child.take().and_then(|c| stop_child(c, libc::SIGTERM));
        let err = self.stderr();
        let _ = fs::remove_file(&self.stderr_path);
        (status, err)
    }
}

impl Drop for QuietNetlens {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, libc::SIGTERM);
            let _ = fs::remove_file(&self.stderr_path);
        }
    }
}

/// Sends `signal` to our own child by its PID, waits up to
/// [`STOP_TIMEOUT`], then SIGKILL; None if waiting failed.
pub fn stop_child(mut child: Child, signal: libc::c_int) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    // SAFETY: kill() on the PID of our own child, which we have not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    eprintln!(
        "pid {} still running {STOP_TIMEOUT:?} after signal {signal}: SIGKILL",
        child.id()
    );
    let _ = child.kill();
    child.wait().ok()
}

/// The counts of netlens's exit line, `... lost: 0 events, 0 connections
/// not tracked (map full), ...` (`conns`) or `... lost: 0 NET_RX samples,
/// ...` (`cost`), as (count, what) pairs; empty if there is no such line.
pub fn exit_losses(stderr: &str) -> Vec<(u64, String)> {
    let Some(line) = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("netlens: stopped"))
    else {
        return Vec::new();
    };
    let Some((_, tail)) = line.rsplit_once("lost: ") else {
        return Vec::new();
    };
    // Anything after a ';' (cost's Pyroscope counts) is not a loss. A
    // label may itself contain ", " (in parentheses): an item that does not
    // start with a count continues the label before it.
    let tail = tail.split(';').next().unwrap_or("");
    let mut losses: Vec<(u64, String)> = Vec::new();
    for item in tail.trim().split(", ") {
        let counted = item
            .split_once(' ')
            .and_then(|(n, what)| Some((n.parse().ok()?, what.to_string())));
        match (counted, losses.last_mut()) {
            (Some(loss), _) => losses.push(loss),
            (None, Some((_, what))) => {
                what.push_str(", ");
                what.push_str(item);
            }
            (None, None) => {}
        }
    }
    losses
}

/// "lost: N events" from `netlens conns`'s exit line; u64::MAX if missing.
pub fn events_lost(stderr: &str) -> u64 {
    exit_losses(stderr)
        .into_iter()
        .find(|(_, what)| what == "events")
        .map_or(u64::MAX, |(n, _)| n)
}

/// CPU seconds (user + system) used so far by process `pid` and all its
/// descendants, including their children that have exited and been reaped
/// (cutime, cstime), from /proc/*/stat. 0 once `pid` is gone.
pub fn tree_cpu_secs(pid: u32) -> f64 {
    // (pid, ppid, utime + stime + cutime + cstime) of every process.
    let mut procs = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue; // exited meanwhile
        };
        // Fields after the command name, which ends at the last ')':
        // [0] state (field 3), [1] ppid, [11..=14] utime stime cutime cstime.
        let Some((_, rest)) = text.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        procs.push((p, num(1) as u32, (11..=14).map(num).sum::<u64>()));
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|q| q.1 == parent).map(|q| q.0));
        i += 1;
    }
    let ticks: u64 = procs
        .iter()
        .filter(|q| tree.contains(&q.0))
        .map(|q| q.2)
        .sum();
    ticks as f64 / procfs::clock_ticks_per_sec() as f64
}

/// Cargo's target directory of this build (CARGO_TARGET_DIR when set),
/// where the benchmarks write their JSON results.
pub fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(PathBuf::from).unwrap_or(tmp)
}

/// Runs `spawn` with this thread pinned to `cpu`, so the processes it
/// starts inherit that affinity; the thread is unpinned afterwards.
pub fn on_cpu<T>(cpu: usize, spawn: impl FnOnce() -> T) -> T {
    let set = |cpus: &[usize]| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity only touch that local set and this thread.
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

/// The median (the mean of the two middle values for an even count); `v`
/// must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 0 {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}
