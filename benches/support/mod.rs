//! Helpers shared by the overhead benchmarks.

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use netlens::sys::procfs;

use super::common::NETLENS_READY;

/// A netlens run whose output goes to /dev/null and stderr to a file
/// (parsing it here would cost CPU on the machine being measured).
pub struct QuietNetlens {
    child: Child,
    stderr_path: PathBuf,
}

impl QuietNetlens {
    /// Starts `bin args...` and waits (up to 30 s) for `netlens: ready`.
    pub fn start<S: AsRef<OsStr>>(bin: &str, args: &[S], stderr_path: PathBuf) -> QuietNetlens {
        let stderr = fs::File::create(&stderr_path).expect("create stderr file");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start netlens");
        let t = QuietNetlens { child, stderr_path };
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

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// (user, system) CPU seconds of the process so far.
    pub fn cpu_secs(&self) -> (f64, f64) {
        let st = procfs::pid_stat(self.child.id()).expect("netlens /proc/PID/stat");
        let tick = procfs::clock_ticks_per_sec() as f64;
        (st.utime as f64 / tick, st.stime as f64 / tick)
    }

    /// SIGTERM, wait; returns how it ended and what it printed on stderr.
    pub fn stop(mut self) -> (Option<ExitStatus>, String) {
        // SAFETY: kill() on the PID of our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().ok();
        let err = self.stderr();
        let _ = fs::remove_file(&self.stderr_path);
        (status, err)
    }
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

/// The median (upper middle for an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
