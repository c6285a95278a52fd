//! Helpers shared by the overhead benchmarks.

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
