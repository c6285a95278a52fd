//! Outputs of `netlens cost`: the live per-CPU table and the JSON log. Both
//! render a [`CostReport`]; neither sees BPF structures.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::pyroscope::{PushCounters, PushTotals};
use super::{fmt_time, Sink};
use crate::model::cost::{
    network_sum, CostReport, CpuStat, Entry, PerCpu, PerEntry, Processes, Sampler,
};

/// The per-CPU table: on a terminal it is redrawn in place, otherwise each
/// period is appended (separated by a blank line).
pub struct CostTableSink<W: Write> {
    out: W,
    redraw: bool,
    buf: String,
    /// The Pyroscope output's counters, shown in the losses line.
    pushes: Option<Arc<PushCounters>>,
}

impl<W: Write> CostTableSink<W> {
    pub fn new(out: W, redraw: bool) -> CostTableSink<W> {
        CostTableSink {
            out,
            redraw,
            buf: String::new(),
            pushes: None,
        }
    }

    /// Shows the failed pushes of `--pyroscope` with the other losses.
    pub fn with_pushes(mut self, pushes: Arc<PushCounters>) -> CostTableSink<W> {
        self.pushes = Some(pushes);
        self
    }
}

/// Reports shorter than this (the partial one at exit) are not drawn:
/// percentages of a few milliseconds are noise.
pub(crate) const MIN_TABLE_PERIOD_NS: u64 = 50_000_000;

impl<W: Write> Sink for CostTableSink<W> {
    fn report(&mut self, report: &CostReport) -> Result<()> {
        if report.period_ns < MIN_TABLE_PERIOD_NS {
            return Ok(());
        }
        self.buf.clear();
        if self.redraw {
            // Home the cursor and clear the screen, then draw.
            self.buf.push_str("\x1b[H\x1b[2J");
        }
        let pushes = self.pushes.as_ref().map(|c| c.totals());
        render_table_with_pushes(report, pushes, &mut self.buf);
        if !self.redraw {
            self.buf.push('\n');
        }
        self.out
            .write_all(self.buf.as_bytes())
            .and_then(|()| self.out.flush())
            .context("writing the table")
    }
}

const LABEL_WIDTH: usize = 27;

/// A percentage of `period_ns`, right-aligned in 8 columns.
pub(crate) fn pct(ns: u64, period_ns: u64) -> String {
    if period_ns == 0 {
        return format!("{:>8}", "-");
    }
    format!("{:>7.2}%", ns as f64 * 100.0 / period_ns as f64)
}

fn row(out: &mut String, label: &str, time: &PerCpu, period_ns: u64) {
    let _ = write!(out, "{label:<LABEL_WIDTH$}");
    for &ns in &time.period_ns {
        out.push_str(&pct(ns, period_ns));
    }
    let all = period_ns * time.period_ns.len() as u64;
    out.push_str(&pct(time.period_sum(), all));
    let _ = writeln!(out, "{:>12.3}", time.total_sum() as f64 / 1e9);
}

/// Entries of a process's row: its own calls, interrupts in its context,
/// kernel workers (a NAPI kthread's polling, io-wq workers).
const PROCESS_GROUPS: [(&str, &[Entry]); 4] = [
    ("TX", &[Entry::TxSyscall]),
    ("RX", &[Entry::RxSyscall]),
    (
        "INTR",
        &[Entry::NetTxSoftirq, Entry::NetRxSoftirq, Entry::NetIrq],
    ),
    ("WORKER", &[Entry::NapiThread, Entry::IoUringWorker]),
];

/// A percentage of one CPU in 7 columns (`100.0%` and a space).
fn pct7(ns: u64, period_ns: u64) -> String {
    if period_ns == 0 {
        return format!("{:>7}", "-");
    }
    format!("{:>6.1}%", ns as f64 * 100.0 / period_ns as f64)
}

fn group_cells(ns: &PerEntry, period_ns: u64, out: &mut String) {
    for (_, entries) in PROCESS_GROUPS {
        let sum: u64 = entries.iter().map(|&e| ns[e as usize]).sum();
        out.push_str(&pct7(sum, period_ns));
    }
    out.push_str(&pct7(network_sum(ns), period_ns));
}

/// A container as the tables name it: `runtime:` and the short ID, or
/// `(host)` for the processes in no container.
fn container_label(c: Option<&crate::model::Container>) -> String {
    c.map_or("(host)".to_string(), |c| {
        format!("{}:{}", c.runtime, c.short_id())
    })
}

/// The per-process and per-container sections of the table (80 columns):
/// each a title, a header and the rows of the report (the `--top` first),
/// then a line for network time on no process when there was some. Empty
/// when per-process accounting is off.
pub(crate) fn process_lines(r: &CostReport) -> Vec<String> {
    let p = &r.processes;
    let mut lines = Vec::new();
    if !p.enabled {
        return lines;
    }
    let groups: String = PROCESS_GROUPS
        .iter()
        .map(|(name, _)| format!("{name:>7}"))
        .collect();
    lines.push(format!(
        "network CPU by process (% of one CPU; * exited; {} processes held in the kernel)",
        p.tracked
    ));
    lines.push(format!(
        "{:>7} {:<15} {:<12}{groups}{:>7}{:>9}",
        "PID", "COMM", "CONTAINER", "ALL", "total s"
    ));
    for proc in &p.processes {
        let mut line = format!(
            "{:>6}{} {:<15} {:<12}",
            proc.pid,
            if proc.alive { ' ' } else { '*' },
            crate::output::tui::format::clip(&proc.comm, 15),
            proc.container().map_or("-", |c| c.short_id())
        );
        group_cells(&proc.period_ns, r.period_ns, &mut line);
        let _ = write!(line, "{:>9.3}", proc.network_total_ns() as f64 / 1e9);
        lines.push(line);
    }
    lines.push("network CPU by container (% of one CPU)".to_string());
    lines.push(format!(
        "{:<24}{:>6}{groups}{:>7}{:>9}",
        "CONTAINER", "PROCS", "ALL", "total s"
    ));
    for c in p.containers.iter().take(p.processes.len().max(1)) {
        let mut line = format!(
            "{:<24}{:>6}",
            container_label(c.container.as_ref()),
            c.processes_period
        );
        group_cells(&c.period_ns, r.period_ns, &mut line);
        let _ = write!(line, "{:>9.3}", c.network_total_ns() as f64 / 1e9);
        lines.push(line);
    }
    let lost_total = network_sum(&p.unattributed_total_ns);
    if lost_total > 0 {
        lines.push(format!(
            "on no process (table of {} full: raise --max-processes): {} of one CPU, {:.3} s in all",
            p.capacity,
            pct7(
                network_sum(&p.unattributed_period_ns),
                r.period_ns
            )
            .trim(),
            lost_total as f64 / 1e9
        ));
    }
    lines
}

/// The whole table as text (one line per entry point, NET_RX category,
/// /proc/stat field, process), columns per CPU, all CPUs, cumulative seconds.
pub fn render_table(r: &CostReport, out: &mut String) {
    render_table_with_pushes(r, None, out);
}

/// [`render_table`], with the Pyroscope pushes so far (`--pyroscope`) in its
/// losses line.
pub fn render_table_with_pushes(r: &CostReport, pushes: Option<PushTotals>, out: &mut String) {
    let _ = writeln!(
        out,
        "netlens cost  {}  period {:.2} s  elapsed {:.1} s  {}",
        fmt_time(r.timestamp),
        r.period_ns as f64 / 1e9,
        r.elapsed_ns as f64 / 1e9,
        sampling_note(r)
    );
    let _ = write!(out, "{:<LABEL_WIDTH$}", "% of CPU");
    for cpu in &r.cpus {
        let _ = write!(out, "{:>8}", format!("CPU{cpu}"));
    }
    let _ = writeln!(out, "{:>8}{:>12}", "all", "total s");
    let mut network = PerCpu::zeroed(r.cpus.len());
    for e in &r.entries {
        if e.entry.is_network() {
            for (s, v) in network.period_ns.iter_mut().zip(&e.time.period_ns) {
                *s += v;
            }
            for (s, v) in network.total_ns.iter_mut().zip(&e.time.total_ns) {
                *s += v;
            }
        }
    }
    for e in r.entries.iter().filter(|e| e.entry.is_network()) {
        row(out, e.entry.label(), &e.time, r.period_ns);
        if e.entry == Entry::NetRxSoftirq {
            // Categories never seen since start would be rows of zeros: left
            // out of the table (the log and Prometheus have them all).
            for c in r.categories.iter().filter(|c| c.time.total_sum() > 0) {
                row(out, &format!("  {}", c.label), &c.time, r.period_ns);
            }
        }
    }
    row(out, "network total", &network, r.period_ns);
    for e in r.entries.iter().filter(|e| !e.entry.is_network()) {
        row(out, e.entry.label(), &e.time, r.period_ns);
    }
    if !r.proc_stat.is_empty() {
        for (i, field) in CpuStat::FIELDS.iter().enumerate() {
            let time = PerCpu {
                period_ns: r.proc_stat.iter().map(|s| s.values()[i]).collect(),
                total_ns: Vec::new(),
            };
            let _ = write!(out, "{:<LABEL_WIDTH$}", format!("/proc/stat {field}"));
            for &ns in &time.period_ns {
                out.push_str(&pct(ns, r.period_ns));
            }
            out.push_str(&pct(time.period_sum(), r.period_ns * r.cpus.len() as u64));
            out.push('\n');
        }
    }
    for p in &r.pids {
        let _ = writeln!(
            out,
            "pid {} ({}){}: user {} system {} (TX syscalls {}, RX syscalls {}, interrupts in its \
             context {}) of one CPU; total user {:.3} s, system {:.3} s",
            p.pid,
            p.comm,
            if p.alive { "" } else { " exited" },
            pct(p.user_ns_period, r.period_ns).trim(),
            pct(p.system_ns_period, r.period_ns).trim(),
            pct(p.tx_syscall_ns_period, r.period_ns).trim(),
            pct(p.rx_syscall_ns_period, r.period_ns).trim(),
            pct(p.interrupt_ns_period, r.period_ns).trim(),
            p.user_ns_total as f64 / 1e9,
            p.system_ns_total as f64 / 1e9
        );
    }
    for line in process_lines(r) {
        out.push_str(&line);
        out.push('\n');
    }
    let s = &r.self_cost;
    let bpf = match s.bpf_ns_period {
        None => "not measured".to_string(),
        Some(ns) if s.bpf_estimated => {
            format!("~{} (estimated)", pct(ns, r.period_ns).trim())
        }
        Some(ns) => pct(ns, r.period_ns).trim().to_string(),
    };
    let _ = writeln!(
        out,
        "netlens itself: BPF programs {bpf} of one CPU, process {} of one CPU",
        pct(s.process_ns_period, r.period_ns).trim()
    );
    let (sm, missed) = (&r.sampling, s.bpf_runs_missed_total);
    let push_failed = pushes.map_or(0, |p| p.failed);
    if sm.lost_total > 0 || sm.stack_errors_total > 0 || missed > 0 || push_failed > 0 {
        let _ = write!(
            out,
            "lost: {} NET_RX samples (ring buffer full), {} stacks unreadable, {missed} BPF \
             program runs skipped (already running on that CPU)",
            sm.lost_total, sm.stack_errors_total
        );
        if push_failed > 0 {
            let _ = write!(out, ", {push_failed} Pyroscope pushes failed");
        }
        out.push('\n');
    }
}

pub(crate) fn sampling_note(r: &CostReport) -> String {
    let s = &r.sampling;
    let asked = match s.sampler {
        Sampler::Off | Sampler::Auto => return "sampling off".to_string(),
        Sampler::Hz(hz) => format!("{hz} Hz (cpu-clock)"),
        Sampler::Cycles(hz) => format!("{hz} Hz of CPU cycles"),
        Sampler::Tick => "at the tick".to_string(),
    };
    let asked = if s.auto {
        let why = if s.sampler == Sampler::Tick {
            "no PMU"
        } else {
            "PMU"
        };
        format!("{asked} (auto: {why})")
    } else {
        asked
    };
    let mut note = format!(
        "sampling {asked} ({:.0} Hz effective, {} NET_RX samples)",
        s.effective_hz, s.net_rx_samples_period
    );
    if s.throttled {
        note.push_str(" THROTTLED by the kernel");
    }
    note
}

/// `-l/--log-file`: one JSON object per period, appended.
pub struct CostLogSink {
    file: File,
    line: Vec<u8>,
    /// The Pyroscope output's counters, logged with each period.
    pushes: Option<Arc<PushCounters>>,
}

impl CostLogSink {
    pub fn open(path: &Path) -> Result<CostLogSink> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        Ok(CostLogSink {
            file,
            line: Vec::new(),
            pushes: None,
        })
    }

    /// Logs the pushes of `--pyroscope` with each period.
    pub fn with_pushes(mut self, pushes: Arc<PushCounters>) -> CostLogSink {
        self.pushes = Some(pushes);
        self
    }
}

impl Sink for CostLogSink {
    fn report(&mut self, report: &CostReport) -> Result<()> {
        self.line.clear();
        let pushes = self.pushes.as_ref().map(|c| c.totals());
        serde_json::to_writer(&mut self.line, &report_json_with_pushes(report, pushes))?;
        self.line.push(b'\n');
        // One write per period: a reader never sees half an object.
        self.file
            .write_all(&self.line)
            .context("writing the log file")
    }
}

/// The network entries of `ns`, by name.
fn network_entries_json(ns: &PerEntry) -> Value {
    let m: Map<String, Value> = Entry::ALL
        .iter()
        .zip(ns)
        .filter(|(e, _)| e.is_network())
        .map(|(e, v)| (e.name().to_string(), json!(v)))
        .collect();
    Value::Object(m)
}

fn processes_json(p: &Processes) -> Value {
    let (tx, rx) = (Entry::TxSyscall as usize, Entry::RxSyscall as usize);
    let processes: Vec<Value> = p
        .processes
        .iter()
        .map(|p| {
            let cgroup = p.cgroup.as_deref();
            json!({
                "pid": p.pid, "comm": p.comm, "alive": p.alive,
                "cgroup": cgroup.and_then(|c| c.path.as_deref()),
                "container_id": p.container().map(|c| c.kube_id()),
                "pod_uid": cgroup.and_then(|c| c.pod_uid.as_deref()),
                "network_ns": p.network_period_ns(),
                "network_ns_total": p.network_total_ns(),
                "ns": network_entries_json(&p.period_ns),
                "ns_total": network_entries_json(&p.total_ns),
                "tx_calls": p.spans_period[tx], "rx_calls": p.spans_period[rx],
            })
        })
        .collect();
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| {
            json!({
                "container_id": c.container.as_ref().map(|c| c.kube_id()),
                "pod_uid": c.pod_uid,
                "processes": c.processes_period,
                "network_ns": c.network_period_ns(),
                "network_ns_total": c.network_total_ns(),
                "ns": network_entries_json(&c.period_ns),
                "ns_total": network_entries_json(&c.total_ns),
            })
        })
        .collect();
    json!({
        "enabled": p.enabled, "capacity": p.capacity, "tracked": p.tracked,
        "top": processes, "containers": containers,
        "attributed_ns_total": network_entries_json(&p.attributed_total_ns),
        "unattributed_ns_total": network_entries_json(&p.unattributed_total_ns),
        "unattributed_ns": network_entries_json(&p.unattributed_period_ns),
    })
}

fn per_cpu_json(time: &PerCpu) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("period_ns".into(), json!(time.period_ns));
    m.insert("total_ns".into(), json!(time.total_ns));
    m
}

/// The JSON object of one period (schema in the README).
pub fn report_json(r: &CostReport) -> Value {
    report_json_with_pushes(r, None)
}

/// [`report_json`], with the Pyroscope pushes so far (`--pyroscope`).
pub fn report_json_with_pushes(r: &CostReport, pushes: Option<PushTotals>) -> Value {
    let mut entries = Map::new();
    for e in &r.entries {
        let mut m = per_cpu_json(&e.time);
        m.insert("spans".into(), json!(e.spans_period));
        entries.insert(e.entry.name().into(), Value::Object(m));
    }
    let mut categories = Map::new();
    for c in &r.categories {
        let mut m = per_cpu_json(&c.time);
        m.insert("samples".into(), json!(c.samples_period));
        m.insert("label".into(), json!(c.label));
        categories.insert(c.name.into(), Value::Object(m));
    }
    let mut proc_stat = Map::new();
    for (i, field) in CpuStat::FIELDS.iter().enumerate() {
        let v: Vec<u64> = r.proc_stat.iter().map(|s| s.values()[i]).collect();
        proc_stat.insert((*field).into(), json!(v));
    }
    let pids: Vec<Value> = r
        .pids
        .iter()
        .map(|p| {
            json!({
                "pid": p.pid, "comm": p.comm, "alive": p.alive,
                "user_ns": p.user_ns_period, "system_ns": p.system_ns_period,
                "user_ns_total": p.user_ns_total, "system_ns_total": p.system_ns_total,
                "tx_syscall_ns": p.tx_syscall_ns_period, "rx_syscall_ns": p.rx_syscall_ns_period,
                "tx_syscall_ns_total": p.tx_syscall_ns_total,
                "rx_syscall_ns_total": p.rx_syscall_ns_total,
                "interrupt_ns": p.interrupt_ns_period, "interrupt_ns_total": p.interrupt_ns_total,
            })
        })
        .collect();
    let s = &r.self_cost;
    let sm = &r.sampling;
    json!({
        "processes": processes_json(&r.processes),
        "timestamp": fmt_time(r.timestamp),
        "timestamp_ns": r.timestamp,
        "period_ns": r.period_ns,
        "elapsed_ns": r.elapsed_ns,
        "cpus": r.cpus,
        "entries": entries,
        "net_rx_categories": categories,
        "proc_stat_ns": proc_stat,
        "pids": pids,
        "self": {
            "bpf_ns": s.bpf_ns_period, "bpf_runs": s.bpf_runs_period,
            "bpf_estimated": s.bpf_estimated,
            "process_ns": s.process_ns_period,
            "bpf_ns_total": s.bpf_ns_total, "process_ns_total": s.process_ns_total,
            "bpf_runs_missed_total": s.bpf_runs_missed_total,
        },
        "sampling": {
            "frequency": sm.sampler.hz(), "on_tick": sm.sampler == Sampler::Tick,
            "source": sm.sampler.source(), "auto": sm.auto,
            "samples": sm.samples_period,
            "net_rx_samples": sm.net_rx_samples_period, "lost_total": sm.lost_total,
            "stack_errors_total": sm.stack_errors_total,
            "effective_hz": (sm.effective_hz * 10.0).round() / 10.0,
            "max_sample_rate": sm.max_sample_rate, "throttled": sm.throttled,
        },
        "pyroscope": pushes.map(|p| json!({
            "pushed_total": p.pushed, "failed_total": p.failed,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cost::{CategoryRow, EntryRow, PidCpu, SelfCost};

    fn report() -> CostReport {
        let entries = Entry::ALL
            .iter()
            .map(|&entry| EntryRow {
                entry,
                time: PerCpu {
                    period_ns: vec![100_000_000, 0],
                    total_ns: vec![300_000_000, 50_000_000],
                },
                spans_period: 3,
            })
            .collect();
        CostReport {
            timestamp: 1_700_000_000_000_000_000,
            period_ns: 500_000_000,
            elapsed_ns: 1_500_000_000,
            cpus: vec![0, 1],
            entries,
            categories: vec![CategoryRow {
                name: "gro",
                label: "GRO",
                time: PerCpu {
                    period_ns: vec![25_000_000, 0],
                    total_ns: vec![25_000_000, 0],
                },
                samples_period: 25,
            }],
            proc_stat: vec![
                CpuStat {
                    user: 250_000_000,
                    ..Default::default()
                },
                CpuStat::default(),
            ],
            pids: vec![PidCpu {
                pid: 42,
                comm: "iperf3".into(),
                user_ns_period: 10_000_000,
                system_ns_period: 490_000_000,
                user_ns_total: 10_000_000,
                system_ns_total: 490_000_000,
                tx_syscall_ns_period: 200_000_000,
                rx_syscall_ns_period: 100_000_000,
                tx_syscall_ns_total: 200_000_000,
                rx_syscall_ns_total: 100_000_000,
                interrupt_ns_period: 50_000_000,
                interrupt_ns_total: 50_000_000,
                alive: true,
            }],
            self_cost: SelfCost {
                bpf_ns_period: Some(5_000_000),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn table_has_every_row_and_percentages() {
        let mut out = String::new();
        render_table(&report(), &mut out);
        for e in Entry::ALL {
            assert!(out.contains(e.label()), "{out}");
        }
        let tx = out.lines().find(|l| l.starts_with("TX syscalls")).unwrap();
        // 100 ms of a 500 ms period on CPU0 = 20 %, 10 % of both CPUs, 0.35 s in total.
        assert!(
            tx.contains("20.00%") && tx.contains("10.00%") && tx.contains("0.350"),
            "{tx}"
        );
        let gro = out.lines().find(|l| l.starts_with("  GRO")).unwrap();
        assert!(gro.contains("5.00%"), "{gro}");
        let mut never_seen = report();
        never_seen.categories[0].time = PerCpu::zeroed(2);
        let mut out = String::new();
        render_table(&never_seen, &mut out);
        assert!(
            !out.contains("  GRO"),
            "a category never seen has no row: {out}"
        );
        // Seven network entries of 100 ms on CPU0: 140 % of one CPU is impossible
        // in reality but is what the arithmetic must show for this input.
        let total = out
            .lines()
            .find(|l| l.starts_with("network total"))
            .unwrap();
        assert!(total.contains("140.00%"), "{total}");
        assert!(out.contains("/proc/stat user"));
        assert!(
            out.contains(
                "pid 42 (iperf3): user 2.00% system 98.00% (TX syscalls 40.00%, RX syscalls \
                 20.00%, interrupts in its context 10.00%)"
            ),
            "{out}"
        );
        assert!(out.contains("BPF programs 1.00%"), "{out}");
        assert!(!out.contains("lost:"), "nothing lost, no line: {out}");
    }

    /// Two processes (one in a container) and the two container rows.
    fn with_processes() -> CostReport {
        use crate::model::cost::{ContainerCost, ProcessCost, Processes};
        use crate::model::{Cgroup, Container};
        let mut r = report();
        let mut nginx = [0; 9];
        nginx[Entry::TxSyscall as usize] = 100_000_000;
        nginx[Entry::NetRxSoftirq as usize] = 50_000_000;
        let mut idle = [0; 9];
        idle[Entry::NetRxSoftirq as usize] = 25_000_000;
        let container = Container {
            runtime: "containerd",
            id: "0123456789ab".repeat(5) + "cdef",
        };
        r.processes = Processes {
            enabled: true,
            capacity: 8192,
            tracked: 7,
            processes: vec![
                ProcessCost {
                    pid: 4242,
                    comm: "nginx-with-a-long-name".into(),
                    cgroup: Some(std::sync::Arc::new(Cgroup {
                        id: 9,
                        path: Some("/kubepods/x".into()),
                        container: Some(container.clone()),
                        pod_uid: Some("11111111-2222-3333-4444-555555555555".into()),
                    })),
                    period_ns: nginx,
                    total_ns: nginx,
                    spans_period: [3; 9],
                    alive: true,
                },
                ProcessCost {
                    pid: 0,
                    comm: "swapper".into(),
                    cgroup: None,
                    period_ns: idle,
                    total_ns: idle,
                    spans_period: [0; 9],
                    alive: true,
                },
            ],
            containers: vec![
                ContainerCost {
                    container: Some(container),
                    pod_uid: Some("11111111-2222-3333-4444-555555555555".into()),
                    processes_period: 1,
                    period_ns: nginx,
                    total_ns: nginx,
                },
                ContainerCost {
                    container: None,
                    pod_uid: None,
                    processes_period: 1,
                    period_ns: idle,
                    total_ns: idle,
                },
            ],
            commands: Vec::new(),
            attributed_total_ns: [0; 9],
            unattributed_total_ns: [0; 9],
            unattributed_period_ns: [0; 9],
        };
        r
    }

    #[test]
    fn table_shows_processes_and_containers_in_80_columns() {
        let r = with_processes();
        let lines = process_lines(&r);
        for l in &lines {
            assert!(
                l.chars().count() <= 80,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        // 100 ms TX + 50 ms NET_RX of a 500 ms period.
        let nginx = lines.iter().find(|l| l.contains("4242")).unwrap();
        assert_eq!(
            nginx,
            "  4242  nginx-with-a-l… 0123456789ab  20.0%   0.0%  10.0%   0.0%  30.0%    0.150"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("     0  swapper")),
            "{lines:?}"
        );
        let mut gone = r.clone();
        gone.processes.processes[0].alive = false;
        let gone_lines = process_lines(&gone);
        let row = gone_lines.iter().find(|l| l.contains("4242")).unwrap();
        assert!(row.starts_with("  4242* nginx"), "{row}");
        assert!(row.chars().count() <= 80, "{row}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("containerd:0123456789ab      1  20.0%")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("(host)")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("no process")), "{lines:?}");
        let mut full = r.clone();
        full.processes.unattributed_total_ns[Entry::RxSyscall as usize] = 2_000_000_000;
        full.processes.unattributed_period_ns[Entry::RxSyscall as usize] = 100_000_000;
        let lines = process_lines(&full);
        assert_eq!(
            lines.last().unwrap(),
            "on no process (table of 8192 full: raise --max-processes): 20.0% of one CPU, \
             2.000 s in all"
        );
        // Off: no section at all.
        assert!(process_lines(&report()).is_empty());
    }

    #[test]
    fn json_has_the_processes_and_containers() {
        let v = report_json(&with_processes());
        let p = &v["processes"];
        assert_eq!(
            (p["enabled"].clone(), p["tracked"].clone()),
            (json!(true), json!(7))
        );
        let top = &p["top"][0];
        assert_eq!(top["pid"], 4242);
        assert_eq!(
            top["container_id"],
            json!(format!(
                "containerd://{}",
                "0123456789ab".repeat(5) + "cdef"
            ))
        );
        assert_eq!(top["cgroup"], "/kubepods/x");
        assert_eq!(top["network_ns"], 150_000_000);
        assert_eq!(top["ns"]["tx_syscall"], 100_000_000);
        assert!(
            top["ns"].get("other_softirq").is_none(),
            "network entries only"
        );
        assert_eq!(top["tx_calls"], 3);
        assert_eq!(p["containers"][1]["container_id"], Value::Null);
        assert_eq!(p["containers"][1]["network_ns_total"], 25_000_000);
        assert_eq!(p["unattributed_ns_total"]["rx_syscall"], 0);
    }

    #[test]
    fn table_shows_losses_only_when_there_are_some() {
        let lost_line = |r: &CostReport| {
            let mut out = String::new();
            render_table(r, &mut out);
            out.lines()
                .find(|l| l.starts_with("lost:"))
                .map(str::to_string)
        };
        let mut r = report();
        assert_eq!(lost_line(&r), None);
        r.self_cost.bpf_runs_missed_total = 12;
        assert_eq!(
            lost_line(&r).as_deref(),
            Some(
                "lost: 0 NET_RX samples (ring buffer full), 0 stacks unreadable, 12 BPF program \
                 runs skipped (already running on that CPU)"
            )
        );
        let pushes = PushTotals {
            pushed: 4,
            failed: 2,
        };
        let mut with_pushes = String::new();
        render_table_with_pushes(&r, Some(pushes), &mut with_pushes);
        assert_eq!(
            with_pushes.lines().find(|l| l.starts_with("lost:")),
            Some(
                "lost: 0 NET_RX samples (ring buffer full), 0 stacks unreadable, 12 BPF program \
                 runs skipped (already running on that CPU), 2 Pyroscope pushes failed"
            )
        );
        r.self_cost.bpf_runs_missed_total = 0;
        r.sampling.lost_total = 3;
        assert_eq!(
            lost_line(&r).as_deref(),
            Some(
                "lost: 3 NET_RX samples (ring buffer full), 0 stacks unreadable, 0 BPF program \
                 runs skipped (already running on that CPU)"
            )
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut r = report();
        r.self_cost.bpf_runs_missed_total = 9;
        let v = report_json(&r);
        assert_eq!(v["cpus"], json!([0, 1]));
        assert_eq!(
            v["entries"]["net_rx_softirq"]["period_ns"],
            json!([100_000_000, 0])
        );
        assert_eq!(v["entries"]["tx_syscall"]["spans"], json!(3));
        assert_eq!(v["net_rx_categories"]["gro"]["samples"], json!(25));
        assert_eq!(v["net_rx_categories"]["gro"]["label"], json!("GRO"));
        assert_eq!(v["proc_stat_ns"]["user"], json!([250_000_000, 0]));
        assert_eq!(v["pids"][0]["system_ns"], json!(490_000_000));
        assert_eq!(v["pids"][0]["tx_syscall_ns"], json!(200_000_000));
        assert_eq!(v["self"]["bpf_ns"], json!(5_000_000));
        assert_eq!(v["self"]["bpf_runs_missed_total"], json!(9));
        assert_eq!(v["pyroscope"], Value::Null);
        let pushes = PushTotals {
            pushed: 5,
            failed: 1,
        };
        let v = report_json_with_pushes(&r, Some(pushes));
        assert_eq!(
            v["pyroscope"],
            json!({"pushed_total": 5, "failed_total": 1})
        );
        assert!(v["timestamp"].as_str().unwrap().starts_with("2023-11-14"));
    }
}
