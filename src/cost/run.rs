//! The `netlens cost` main loop: one thread owns the collector, drains the
//! NET_RX samples as they come, and every period turns the counters into a
//! [`CostReport`] for the outputs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::account::{self, CpuTotals};
use super::classify::{category_times, Category};
use super::collector::{Collector, Config, RawCpuCost};
use super::probes::SyscallHookWanted;
use super::processes::{comm_string, ProcessBook, Record};
use super::selfstats::{BpfStatsSampler, StatsMode};
use super::stacks::StackBook;
use crate::model::cost::{
    CategoryRow, CostReport, Entry, PerCpu, PerEntry, PidCpu, Processes, Sampler, Sampling,
    SelfCost,
};
use crate::model::Readiness;
use crate::model::Sink;
use crate::sys::{cgroup, procfs};

/// How often samples are drained (the ring is sized for half a second).
const DRAIN_PERIOD: Duration = Duration::from_millis(100);
/// Far longer than one run of any of the programs (microseconds).
const STOP_GRACE: Duration = Duration::from_millis(20);
/// How often the list of network device IRQs is refreshed.
const IRQ_REFRESH: Duration = Duration::from_secs(5);

pub struct Options {
    /// Where NET_RX stack samples come from (Off: no NET_RX categories);
    /// never [`Sampler::Auto`] (resolve it first).
    pub sampler: Sampler,
    /// `sampler` was chosen by `-f auto`.
    pub sampler_auto: bool,
    /// Time between two reports.
    pub period: Duration,
    /// Processes whose CPU time is shown beside the kernel cost.
    pub pids: Vec<u32>,
    /// How many processes the kernel accounts at once (`--max-processes`);
    /// 0: no per-process accounting (but the -u processes).
    pub max_processes: u32,
    /// The cgroup hierarchy that names processes' containers.
    pub cgroups: Option<cgroup::Layout>,
    /// Processes in each report (most network time first); the totals
    /// and the containers count them all.
    pub top: usize,
    /// How TX/RX system calls are hooked (`--syscall-hook`).
    pub syscall_hook: SyscallHookWanted,
    /// How netlens's own BPF run time is measured.
    pub bpf_stats: StatsMode,
    /// Fill [`CostReport::net_rx_stacks`] (an output pushes them).
    pub period_stacks: bool,
    /// Stop after measuring this long, counted from the moment the
    /// programs are attached (a slow start does not shorten it).
    pub duration: Option<Duration>,
    /// Set once the programs are attached and sampling (what the endpoints
    /// answer at `/healthz`).
    pub ready: Readiness,
}

/// What a finished run leaves behind.
pub struct Finished {
    pub last: CostReport,
    pub stacks: Option<StackBook>,
}

/// Per-PID state between two reports.
struct TrackedPid {
    pid: u32,
    comm: String,
    /// (utime, stime) in ticks
    first: (u64, u64),
    prev: (u64, u64),
    /// (TX, RX, interrupted) ns, cumulative from the BPF side
    prev_syscalls: (u64, u64, u64),
    /// Its start time (/proc/PID/stat field 22): a process found under the
    /// PID with another start time is a new one, and this one is gone.
    start_time: u64,
    alive: bool,
}

/// What one period's read of a tracked process's /proc/PID/stat says.
#[derive(Debug, PartialEq, Eq)]
enum PidRead {
    /// (utime, stime) in ticks.
    Running(u64, u64),
    /// Exited (no such process), or its PID now names another process.
    Gone,
    /// The read failed otherwise: the period shows no growth and the next
    /// catches up; the process is not declared gone for it.
    Unread,
}

fn classify_pid_read(read: &Result<procfs::PidStat>, start_time: u64) -> PidRead {
    match read {
        Ok(st) if st.start_time == start_time => PidRead::Running(st.utime, st.stime),
        Ok(_) => PidRead::Gone,
        Err(e) => {
            let gone = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| {
                    io.kind() == std::io::ErrorKind::NotFound
                        || io.raw_os_error() == Some(libc::ESRCH)
                });
            if gone {
                PidRead::Gone
            } else {
                PidRead::Unread
            }
        }
    }
}

/// Loads the programs and reports every `opts.period` until `stop` is set.
/// `status` receives human-readable progress lines (stderr in the binary).
pub fn run(
    opts: &Options,
    sink: &mut dyn Sink,
    stop: &Arc<AtomicBool>,
    status: &mut dyn FnMut(&str),
) -> Result<Finished> {
    let mut pids = track_pids(&opts.pids)?;
    let mut collector = Collector::load(&Config {
        sampler: opts.sampler,
        pids: opts.pids.clone(),
        max_processes: opts.max_processes,
        cgroups: opts.cgroups.clone(),
        syscall_hook: opts.syscall_hook,
    })?;
    // Kernel symbols are read once netlens's own programs are loaded, so
    // that samples inside them resolve to their bpf_prog_* names.
    let mut stacks = if opts.sampler.is_on() {
        Some(StackBook::new()?)
    } else {
        None
    };
    let mut resolver =
        cgroup::Resolver::new(opts.cgroups.clone()).with_names(collector.cgroup_names()?);
    let mut book = ProcessBook::default();
    // Every counter is zero until now: totals count from here, per CPU and
    // per process alike, and agree exactly.
    collector.attach()?;
    let first = vec![CpuTotals::default(); num_cpus_fallback() as usize];
    for f in &collector.attach_failures {
        status(&format!(
            "warning: {} not attached ({}); lost: {}",
            f.program, f.error, f.what_is_lost
        ));
    }
    // The -u baselines start now, with the programs attached, so the first
    // period's /proc times cover what the BPF side saw.
    rebase_pids(&mut pids);
    let cpus = online_columns();
    let ns_per_tick = 1_000_000_000 / procfs::clock_ticks_per_sec();
    collector.start_sampling()?;
    let mut prev = first.clone();
    let first_process_ns = process_cpu_ns();
    let mut prev_process_ns = first_process_ns;
    let mut bpf_stats = BpfStatsSampler::new(opts.bpf_stats);
    let mut bpf_total_ns: Option<u64> = None;
    if bpf_stats.measure_now() && collector.set_run_time_stats(true) {
        bpf_stats.begin(collector.prog_stats());
    }
    let mut prev_stat = procfs::proc_stat_cpus().unwrap_or_default();
    let first_stat = prev_stat.clone();
    let started = Instant::now();
    let mut last_report = started;
    let mut last_irq_refresh = started;
    let mut warned_throttle = false;
    let mut warned_full = false;
    // Before the line, so that whoever reads it finds /healthz ready.
    opts.ready.set_ready();
    status(&format!(
        "netlens: ready: measuring network CPU cost on {} CPUs{}; {}; {} network device IRQs",
        cpus.len(),
        match opts.sampler {
            Sampler::Hz(hz) => format!(", sampling NET_RX stacks at {hz} Hz (cpu-clock)"),
            Sampler::Cycles(hz) => format!(
                ", sampling NET_RX stacks at {hz} Hz of CPU cycles (the CPU has a PMU{})",
                if opts.sampler_auto { "; -f auto" } else { "" }
            ),
            Sampler::Tick => format!(
                ", sampling NET_RX stacks at the scheduler tick{}",
                if opts.sampler_auto {
                    " (-f auto: no CPU-cycles perf event could be opened)"
                } else {
                    ""
                }
            ),
            Sampler::Off | Sampler::Auto => ", stack sampling off".to_string(),
        },
        collector.syscall_hook.describe(),
        collector.net_irqs().len()
    ));

    loop {
        let stopping =
            stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| started.elapsed() >= d);
        if stopping {
            // No sample may arrive between the last drain and the last
            // counter read, and no charge between the reads of the per-CPU
            // and per-process counters: the final report is exact and
            // agrees with itself. Neither waits for a program already
            // running on another CPU: give it time to finish.
            collector.stop_sampling();
            collector.freeze();
            std::thread::sleep(STOP_GRACE);
        }
        let mut due = last_report + opts.period;
        if let Some(d) = opts.duration {
            due = due.min(started + d);
        }
        let wait = if stopping {
            Duration::ZERO
        } else {
            DRAIN_PERIOD.min(due.saturating_duration_since(Instant::now()))
        };
        collector.drain_samples(wait, |s| {
            if let (Some(book), Some(col)) =
                (stacks.as_mut(), cpus.iter().position(|&c| c == s.cpu))
            {
                book.add(col, s.ips);
            }
        })?;
        let now_instant = Instant::now();
        if !stopping && now_instant < due {
            continue;
        }
        if now_instant.duration_since(last_irq_refresh) >= IRQ_REFRESH {
            collector.refresh_net_irqs()?;
            last_irq_refresh = now_instant;
        }
        let now = totals(&collector.cpu_costs()?);
        let period_ns = now_instant.duration_since(last_report).as_nanos() as u64;
        let elapsed_ns = now_instant.duration_since(started).as_nanos() as u64;
        last_report = now_instant;

        let entries = account::entry_rows(&cpus, &first, &prev, &now);
        let (records, exited) = read_processes(&collector)?;
        let (mut processes, containers) = book.period(
            &records,
            &exited,
            &mut |id| resolver.resolve(id),
            now_instant,
        );
        processes.truncate(opts.top);
        let lost = |v: &[CpuTotals]| -> PerEntry {
            let mut sum = [0; 9];
            for c in cpus.iter().filter_map(|&cpu| v.get(cpu as usize)) {
                for (s, x) in sum.iter_mut().zip(&c.pid_lost_ns) {
                    *s += x;
                }
            }
            sum
        };
        let (lost_now, lost_prev) = (lost(&now), lost(&prev));
        if !warned_full && lost_now.iter().zip(&lost_prev).any(|(n, p)| n > p) {
            warned_full = true;
            status(&format!(
                "warning: the per-process table is full ({} processes): the network time of \
                 processes beyond it is counted as on no process; raise --max-processes",
                opts.max_processes
            ));
        }
        let processes = Processes {
            enabled: opts.max_processes > 0,
            capacity: opts.max_processes,
            tracked: records.len() - exited.len(),
            processes,
            containers,
            commands: book.commands(),
            attributed_total_ns: book.attributed_total(),
            unattributed_total_ns: lost_now,
            unattributed_period_ns: std::array::from_fn(|i| {
                lost_now[i].saturating_sub(lost_prev[i])
            }),
        };
        let categories = match stacks.as_mut() {
            Some(book) => category_rows(&cpus, book, &entries),
            None => Vec::new(),
        };
        let stat = procfs::proc_stat_cpus().unwrap_or_default();
        let proc_stat = account::cpu_stat_period(&cpus, &prev_stat, &stat, ns_per_tick);
        let proc_stat_total = account::cpu_stat_period(&cpus, &first_stat, &stat, ns_per_tick);
        prev_stat = stat;
        let prog_stats = collector.prog_stats();
        // What the programs ran for: every span they closed, every sample.
        let samples_in_period = now
            .iter()
            .map(|c| c.samples)
            .sum::<u64>()
            .saturating_sub(prev.iter().map(|c| c.samples).sum::<u64>());
        let activity = entries.iter().map(|e| e.spans_period).sum::<u64>() + samples_in_period;
        let bpf = bpf_stats.end(prog_stats, period_ns, activity);
        if let Some(ns) = bpf.ns {
            *bpf_total_ns.get_or_insert(0) += ns;
        }
        // Statistics on for the next period only when it is measured.
        let measure_next = bpf_stats.measure_now() && !stopping;
        if collector.set_run_time_stats(measure_next) && measure_next {
            bpf_stats.begin(collector.prog_stats());
        }
        let process_ns = process_cpu_ns();
        let self_cost = SelfCost {
            bpf_ns_period: bpf.ns,
            bpf_runs_period: bpf.runs,
            bpf_estimated: bpf.estimated,
            bpf_ns_total: bpf_total_ns,
            process_ns_period: process_ns.saturating_sub(prev_process_ns),
            process_ns_total: process_ns.saturating_sub(first_process_ns),
            // Cumulative since the programs were loaded, at start.
            bpf_runs_missed_total: prog_stats.recursion_misses,
        };
        prev_process_ns = process_ns;
        let mut sampling = sampling(opts.sampler, &collector, &first, &prev, &now, period_ns);
        sampling.auto = opts.sampler_auto;
        sampling.stack_errors_total = stacks.as_ref().map_or(0, |b| b.stack_errors);
        if sampling.throttled && !warned_throttle {
            warned_throttle = true;
            status(&format!(
                "warning: the kernel throttled sampling: kernel.perf_event_max_sample_rate is now \
                 {} Hz, below -f {} Hz (it lowers it when sampling interrupts take too long); \
                 NET_RX categories rest on fewer samples; lower -f",
                sampling
                    .max_sample_rate
                    .map_or("unknown".to_string(), |m| m.to_string()),
                opts.sampler.hz()
            ));
        }
        prev = now;
        let net_rx_stacks = match stacks.as_mut() {
            Some(book) if opts.period_stacks => book.take_period_folded(),
            _ => Vec::new(),
        };
        let report = CostReport {
            timestamp: unix_now(),
            period_ns,
            elapsed_ns,
            cpus: cpus.clone(),
            entries,
            categories,
            proc_stat,
            proc_stat_total,
            pids: pid_rows(&mut pids, &records, ns_per_tick),
            processes,
            self_cost,
            sampling,
            net_rx_stacks,
        };
        sink.report(&report)?;
        if stopping {
            return Ok(Finished {
                last: report,
                stacks,
            });
        }
    }
}

/// Columns: the online CPUs (the sampler runs on the same ones).
fn online_columns() -> Vec<u32> {
    super::collector::online_cpus().unwrap_or_else(|_| (0..num_cpus_fallback()).collect())
}

fn num_cpus_fallback() -> u32 {
    libbpf_rs::num_possible_cpus().map_or(1, |n| n as u32)
}

fn totals(raw: &[RawCpuCost]) -> Vec<CpuTotals> {
    raw.iter()
        .map(|c| CpuTotals {
            ns: c.ns,
            spans: c.spans,
            samples: c.samples,
            net_rx_samples: c.net_rx_samples,
            samples_lost: c.samples_lost,
            pid_lost_ns: c.pid_lost_ns,
        })
        .collect()
}

/// NET_RX time of each CPU split over the categories of that CPU's
/// samples in this period, exactly (the rows add up to NET_RX per CPU; a
/// CPU without samples puts its NET_RX time under "unsampled").
fn category_rows(
    cpus: &[u32],
    book: &mut StackBook,
    entries: &[crate::model::cost::EntryRow],
) -> Vec<CategoryRow> {
    let net_rx = entries
        .iter()
        .find(|r| r.entry == crate::model::cost::Entry::NetRxSoftirq)
        .map(|r| r.time.period_ns.clone())
        .unwrap_or_else(|| vec![0; cpus.len()]);
    let counts = book.take_period_counts(cpus.len());
    let mut rows: Vec<CategoryRow> = Category::ALL
        .iter()
        .map(|c| CategoryRow {
            name: c.name(),
            label: c.label(),
            time: PerCpu::zeroed(cpus.len()),
            samples_period: 0,
        })
        .collect();
    for (col, per_cpu) in counts.iter().enumerate() {
        let times = category_times(net_rx[col], per_cpu);
        for (row, (category, ns)) in rows.iter_mut().zip(times) {
            row.time.period_ns[col] = ns;
            row.samples_period += per_cpu.get(category);
        }
    }
    book.add_totals(&mut rows);
    rows
}

fn sampling(
    sampler: Sampler,
    collector: &Collector,
    first: &[CpuTotals],
    prev: &[CpuTotals],
    now: &[CpuTotals],
    period_ns: u64,
) -> Sampling {
    let sum = |v: &[CpuTotals], f: fn(&CpuTotals) -> u64| v.iter().map(f).sum::<u64>();
    let samples_period = sum(now, |c| c.samples).saturating_sub(sum(prev, |c| c.samples));
    let effective_hz =
        account::effective_hz(samples_period, collector.sampled_cpus.len(), period_ns);
    let max_sample_rate = max_sample_rate();
    Sampling {
        sampler,
        auto: false,
        samples_period,
        net_rx_samples_period: sum(now, |c| c.net_rx_samples)
            .saturating_sub(sum(prev, |c| c.net_rx_samples)),
        samples_total: sum(now, |c| c.samples).saturating_sub(sum(first, |c| c.samples)),
        net_rx_samples_total: sum(now, |c| c.net_rx_samples)
            .saturating_sub(sum(first, |c| c.net_rx_samples)),
        lost_total: sum(now, |c| c.samples_lost).saturating_sub(sum(first, |c| c.samples_lost)),
        stack_errors_total: 0,
        effective_hz,
        max_sample_rate,
        throttled: account::is_throttled(sampler.hz(), max_sample_rate),
    }
}

/// kernel.perf_event_max_sample_rate, which the kernel lowers by itself
/// when sampling interrupts take too long.
pub fn max_sample_rate() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Fails with a clear message for a PID that does not exist.
fn track_pids(pids: &[u32]) -> Result<Vec<TrackedPid>> {
    pids.iter()
        .map(|&pid| {
            let st = procfs::pid_stat(pid).with_context(|| {
                format!("-u/--user-pids: no process with PID {pid} (it may have exited)")
            })?;
            Ok(TrackedPid {
                pid,
                comm: st.comm,
                first: (st.utime, st.stime),
                prev: (st.utime, st.stime),
                prev_syscalls: (0, 0, 0),
                start_time: st.start_time,
                alive: true,
            })
        })
        .collect()
}

fn rebase_pids(pids: &mut [TrackedPid]) {
    for p in pids.iter_mut() {
        if let PidRead::Running(utime, stime) =
            classify_pid_read(&procfs::pid_stat(p.pid), p.start_time)
        {
            p.first = (utime, stime);
            p.prev = p.first;
        }
    }
}

/// Every per-process record, and which of them belong to processes that
/// have exited: those records are removed, their final values returned.
fn read_processes(collector: &Collector) -> Result<(Vec<Record>, HashSet<u32>)> {
    let mut exited = HashSet::new();
    let mut records = Vec::new();
    for (pid, mut value) in collector.pid_costs()? {
        // PID 0 is the idle tasks. Process IDs are those of the initial
        // PID namespace, which /proc shows when netlens shares it.
        if pid != 0 && !Path::new(&format!("/proc/{pid}")).exists() {
            if let Some(last) = collector.take_pid_cost(pid)? {
                value = last;
            }
            exited.insert(pid);
        }
        records.push(Record {
            pid,
            ns: value.ns,
            spans: value.spans,
            intr_ns: value.intr_ns,
            cgroup_id: value.cgroup_id,
            comm: comm_string(&value.comm),
        });
    }
    Ok((records, exited))
}

fn pid_rows(pids: &mut [TrackedPid], records: &[Record], ns_per_tick: u64) -> Vec<PidCpu> {
    let (tx, rx) = (Entry::TxSyscall as usize, Entry::RxSyscall as usize);
    pids.iter_mut()
        .map(|p| {
            let sys = records
                .iter()
                .find(|r| r.pid == p.pid)
                .map_or(p.prev_syscalls, |r| (r.ns[tx], r.ns[rx], r.intr_ns));
            let now = if p.alive {
                match classify_pid_read(&procfs::pid_stat(p.pid), p.start_time) {
                    PidRead::Running(utime, stime) => (utime, stime),
                    PidRead::Gone => {
                        p.alive = false;
                        p.prev
                    }
                    PidRead::Unread => p.prev,
                }
            } else {
                p.prev
            };
            let row = PidCpu {
                pid: p.pid,
                comm: p.comm.clone(),
                user_ns_period: now.0.saturating_sub(p.prev.0) * ns_per_tick,
                system_ns_period: now.1.saturating_sub(p.prev.1) * ns_per_tick,
                user_ns_total: now.0.saturating_sub(p.first.0) * ns_per_tick,
                system_ns_total: now.1.saturating_sub(p.first.1) * ns_per_tick,
                tx_syscall_ns_period: sys.0.saturating_sub(p.prev_syscalls.0),
                rx_syscall_ns_period: sys.1.saturating_sub(p.prev_syscalls.1),
                tx_syscall_ns_total: sys.0,
                rx_syscall_ns_total: sys.1,
                interrupt_ns_period: sys.2.saturating_sub(p.prev_syscalls.2),
                interrupt_ns_total: sys.2,
                alive: p.alive,
            };
            p.prev = now;
            p.prev_syscalls = sys;
            row
        })
        .collect()
}

/// CPU time of this process (all threads, user + system), in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(utime: u64, start_time: u64) -> procfs::PidStat {
        procfs::PidStat {
            comm: "x".into(),
            state: 'R',
            utime,
            stime: 2,
            start_time,
        }
    }

    #[test]
    fn a_tracked_process_is_gone_only_when_it_is() {
        assert_eq!(
            classify_pid_read(&Ok(stat(7, 100)), 100),
            PidRead::Running(7, 2)
        );
        // The PID names another process now.
        assert_eq!(classify_pid_read(&Ok(stat(7, 555)), 100), PidRead::Gone);
        // Exited: reading /proc/PID/stat finds nothing (or the task is
        // being reaped).
        for errno in [libc::ENOENT, libc::ESRCH] {
            let e = anyhow::Error::new(std::io::Error::from_raw_os_error(errno))
                .context("reading /proc/42/stat");
            assert_eq!(classify_pid_read(&Err(e), 100), PidRead::Gone, "{errno}");
        }
        // Anything else is one unread period, not a death.
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EINTR))
            .context("reading /proc/42/stat");
        assert_eq!(classify_pid_read(&Err(e), 100), PidRead::Unread);
        let garbled = anyhow::anyhow!("malformed /proc/<pid>/stat");
        assert_eq!(classify_pid_read(&Err(garbled), 100), PidRead::Unread);
    }
}
