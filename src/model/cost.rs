//! The data model of `netlens cost`: one [`CostReport`] per period feeds the
//! table, the JSON log and the Prometheus endpoint alike.

use std::sync::Arc;

use super::{Cgroup, Container, UnixNanos};

/// Where NET_RX stack samples come from (`-f`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sampler {
    /// No sampling, no NET_RX breakdown (`-f 0`).
    #[default]
    Off,
    /// A cpu-clock perf event per CPU at this many Hz: a timer interrupt
    /// of its own for every sample.
    Hz(u64),
    /// A hardware CPU-cycles perf event per CPU, at this many Hz: sampled
    /// from the PMU's interrupt (an NMI on x86), so it also sees code that
    /// runs with interrupts off. Chosen by `auto` where the CPU has a PMU.
    Cycles(u64),
    /// The scheduler tick (CONFIG_HZ) of busy CPUs: no extra interrupt.
    Tick,
    /// `-f auto` (the default), before it is resolved: [`Sampler::Cycles`]
    /// at [`AUTO_HZ`] where the CPU has a PMU, else [`Sampler::Tick`].
    Auto,
}

/// The frequency `-f auto` samples CPU cycles at.
pub const AUTO_HZ: u64 = 1000;

impl Sampler {
    /// Parses `-f`: a frequency in Hz (0 = off) or `tick`.
    pub fn parse(s: &str) -> Result<Sampler, String> {
        if s == "tick" {
            return Ok(Sampler::Tick);
        }
        if s == "auto" {
            return Ok(Sampler::Auto);
        }
        match s.parse::<u64>() {
            Ok(0) => Ok(Sampler::Off),
            Ok(hz) => Ok(Sampler::Hz(hz)),
            Err(_) => Err(format!(
                "`{s}` is neither a frequency in Hz, `tick` nor `auto`"
            )),
        }
    }

    pub fn is_on(self) -> bool {
        self != Sampler::Off
    }

    /// The perf event frequency, 0 when there is none.
    pub fn hz(self) -> u64 {
        match self {
            Sampler::Hz(hz) | Sampler::Cycles(hz) => hz,
            Sampler::Off | Sampler::Tick | Sampler::Auto => 0,
        }
    }

    /// `auto` made concrete: CPU cycles where the CPU has a PMU (`pmu`),
    /// the scheduler tick where it has none (on a VM without one, every
    /// cpu-clock sample is an extra, expensive timer interrupt). Any other
    /// choice stays as it is.
    pub fn resolve(self, pmu: bool) -> Sampler {
        match self {
            Sampler::Auto if pmu => Sampler::Cycles(AUTO_HZ),
            Sampler::Auto => Sampler::Tick,
            other => other,
        }
    }

    /// How the samples are taken, for logs and metrics: `cycles`,
    /// `cpu_clock`, `tick` or `off`.
    pub fn source(self) -> &'static str {
        match self {
            Sampler::Cycles(_) => "cycles",
            Sampler::Hz(_) => "cpu_clock",
            Sampler::Tick => "tick",
            Sampler::Off => "off",
            Sampler::Auto => "auto",
        }
    }
}

/// A kernel networking entry point whose CPU time is measured exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    TxSyscall,
    RxSyscall,
    NetTxSoftirq,
    NetRxSoftirq,
    NetIrq,
    NapiThread,
    IoUringWorker,
    /// Context: every other softirq.
    OtherSoftirq,
    /// Context: hard IRQ handlers of other devices.
    OtherIrq,
}

impl Entry {
    /// In the order of enum cost_entry in src/bpf/cost.h (its index there).
    pub const ALL: [Entry; 9] = [
        Entry::TxSyscall,
        Entry::RxSyscall,
        Entry::NetTxSoftirq,
        Entry::NetRxSoftirq,
        Entry::NetIrq,
        Entry::NapiThread,
        Entry::IoUringWorker,
        Entry::OtherSoftirq,
        Entry::OtherIrq,
    ];

    /// Stable name for JSON and Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            Entry::TxSyscall => "tx_syscall",
            Entry::RxSyscall => "rx_syscall",
            Entry::NetTxSoftirq => "net_tx_softirq",
            Entry::NetRxSoftirq => "net_rx_softirq",
            Entry::NetIrq => "net_irq",
            Entry::NapiThread => "napi_thread",
            Entry::IoUringWorker => "io_uring_worker",
            Entry::OtherSoftirq => "other_softirq",
            Entry::OtherIrq => "other_irq",
        }
    }

    /// Row label of the table.
    pub fn label(self) -> &'static str {
        match self {
            Entry::TxSyscall => "TX syscalls",
            Entry::RxSyscall => "RX syscalls",
            Entry::NetTxSoftirq => "NET_TX softirq",
            Entry::NetRxSoftirq => "NET_RX softirq",
            Entry::NetIrq => "net hard IRQs",
            Entry::NapiThread => "NAPI threads",
            Entry::IoUringWorker => "io_uring workers",
            Entry::OtherSoftirq => "other softirqs",
            Entry::OtherIrq => "other hard IRQs",
        }
    }

    /// Part of the network cost (the others are shown as context).
    pub fn is_network(self) -> bool {
        !matches!(self, Entry::OtherSoftirq | Entry::OtherIrq)
    }
}

/// Nanoseconds per CPU (in the order of [`CostReport::cpus`]) for one row,
/// in this period and since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerCpu {
    pub period_ns: Vec<u64>,
    pub total_ns: Vec<u64>,
}

impl PerCpu {
    pub fn zeroed(cpus: usize) -> PerCpu {
        PerCpu {
            period_ns: vec![0; cpus],
            total_ns: vec![0; cpus],
        }
    }

    pub fn period_sum(&self) -> u64 {
        self.period_ns.iter().sum()
    }

    pub fn total_sum(&self) -> u64 {
        self.total_ns.iter().sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    pub entry: Entry,
    pub time: PerCpu,
    /// Spans completed (system calls, softirq runs, IRQ handler runs, ...).
    pub spans_period: u64,
}

/// One NET_RX category: NET_RX time times its share of the NET_RX samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryRow {
    /// Stable name for JSON and Prometheus labels.
    pub name: &'static str,
    pub label: &'static str,
    pub time: PerCpu,
    pub samples_period: u64,
}

/// The whole-CPU picture from /proc/stat, in nanoseconds of this period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStat {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuStat {
    pub const FIELDS: [&'static str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];

    pub fn values(&self) -> [u64; 8] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
    }
}

/// User-space and kernel CPU time of a process given with -u (from procfs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidCpu {
    pub pid: u32,
    pub comm: String,
    pub user_ns_period: u64,
    pub system_ns_period: u64,
    pub user_ns_total: u64,
    pub system_ns_total: u64,
    /// Its own time in TX and RX system calls (part of its system time),
    /// measured like the per-CPU rows.
    pub tx_syscall_ns_period: u64,
    pub rx_syscall_ns_period: u64,
    pub tx_syscall_ns_total: u64,
    pub rx_syscall_ns_total: u64,
    /// Softirqs and IRQ handlers that ran while it was on the CPU (for
    /// example NET_RX inside its own sends on loopback). Kernels without
    /// CONFIG_IRQ_TIME_ACCOUNTING count this in its system time.
    pub interrupt_ns_period: u64,
    pub interrupt_ns_total: u64,
    /// False once the process has exited (its last values are kept).
    pub alive: bool,
}

/// Nanoseconds (or spans) per [`Entry`], in [`Entry::ALL`] order.
pub type PerEntry = [u64; 9];

/// The network entries of `ns` added up.
pub fn network_sum(ns: &PerEntry) -> u64 {
    Entry::ALL
        .iter()
        .zip(ns)
        .filter(|(e, _)| e.is_network())
        .map(|(_, v)| v)
        .sum()
}

/// The CPU time charged while one process (thread group) was current: its
/// own TX/RX system calls, its io_uring workers, a NAPI kthread's polling,
/// and the softirqs and IRQ handlers that ran in its context (NET_RX inside
/// its own sends on loopback, or a device's packets for anyone). Measured
/// like the per-CPU rows; over all processes (the idle tasks are PID 0) the
/// network entries add up to the per-CPU rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCost {
    pub pid: u32,
    /// Its main thread's name when first seen (`swapper` for PID 0).
    pub comm: String,
    pub cgroup: Option<Arc<Cgroup>>,
    pub period_ns: PerEntry,
    /// Since netlens started (or the process did, if later).
    pub total_ns: PerEntry,
    /// Spans completed in this period (system calls, softirq runs, ...).
    pub spans_period: PerEntry,
    /// False in the report of the period it exited in (its final values);
    /// it is not in later reports.
    pub alive: bool,
}

impl ProcessCost {
    pub fn network_period_ns(&self) -> u64 {
        network_sum(&self.period_ns)
    }

    pub fn network_total_ns(&self) -> u64 {
        network_sum(&self.total_ns)
    }

    pub fn container(&self) -> Option<&Container> {
        self.cgroup.as_ref()?.container.as_ref()
    }
}

/// The processes of one container added up, or those of no container
/// (`container: None`: the host's own processes and kernel threads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCost {
    pub container: Option<Container>,
    pub pod_uid: Option<String>,
    /// Processes with time in this period.
    pub processes_period: usize,
    pub period_ns: PerEntry,
    /// Since netlens started, exited processes included.
    pub total_ns: PerEntry,
}

impl ContainerCost {
    pub fn network_period_ns(&self) -> u64 {
        network_sum(&self.period_ns)
    }

    pub fn network_total_ns(&self) -> u64 {
        network_sum(&self.total_ns)
    }
}

/// Network CPU time per process and per container (`--max-processes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Processes {
    /// Every process is accounted (`--max-processes` above 0).
    pub enabled: bool,
    /// How many processes the kernel keeps at once.
    pub capacity: u32,
    /// Records the kernel holds now.
    pub tracked: usize,
    /// Every process with time in this period or that exited in it, most
    /// network time in this period first.
    pub processes: Vec<ProcessCost>,
    /// Every container with time since start (and the processes outside
    /// containers), most network time in this period first, then since
    /// start.
    pub containers: Vec<ContainerCost>,
    /// Network time per command name (`comm`) since start, exited
    /// processes included, of the names with time in the last 10 minutes
    /// (at most 1000, the rest under `(other)`); sorted by name.
    pub commands: Vec<(String, PerEntry)>,
    /// Since start, per entry: the time on process records (exited ones
    /// included); with `unattributed_total_ns` the network entries equal
    /// the per-CPU totals.
    pub attributed_total_ns: PerEntry,
    /// Network time of processes that found the kernel's table full (raise
    /// `--max-processes`), since start and in this period.
    pub unattributed_total_ns: PerEntry,
    pub unattributed_period_ns: PerEntry,
}

/// What netlens itself costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfCost {
    /// Run time of netlens's BPF programs (None when not measured: see
    /// cost::selfstats).
    pub bpf_ns_period: Option<u64>,
    /// Runs of netlens's BPF programs, in measured periods only.
    pub bpf_runs_period: Option<u64>,
    /// `bpf_ns_period` is estimated from the last measured period.
    pub bpf_estimated: bool,
    /// netlens's own process: user + system time.
    pub process_ns_period: u64,
    pub bpf_ns_total: Option<u64>,
    pub process_ns_total: u64,
    /// Runs of netlens's BPF programs the kernel skipped since start because
    /// the same program was already running on that CPU, or, for the
    /// per-call system call tracepoint programs, another kprobe, tracepoint
    /// or perf event program or a BPF map system call was (their
    /// `recursion_misses`, counted whatever `--bpf-stats` is; for tracepoint
    /// programs only by recent kernels, about 6.7 on): time they would
    /// have accounted for may be missing.
    pub bpf_runs_missed_total: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sampling {
    /// How samples are taken (-f, with `auto` resolved).
    pub sampler: Sampler,
    /// `sampler` was chosen by `-f auto` (the default).
    pub auto: bool,
    /// Samples taken on all CPUs in this period, and of them inside NET_RX.
    pub samples_period: u64,
    pub net_rx_samples_period: u64,
    /// The same since start.
    pub samples_total: u64,
    pub net_rx_samples_total: u64,
    /// NET_RX samples lost since start (ring buffer full).
    pub lost_total: u64,
    /// NET_RX samples whose stack could not be read, since start.
    pub stack_errors_total: u64,
    /// Samples per second per CPU actually taken in this period.
    pub effective_hz: f64,
    /// The kernel's current limit (kernel.perf_event_max_sample_rate).
    pub max_sample_rate: Option<u64>,
    /// The kernel lowered its sampling limit below the frequency asked for.
    pub throttled: bool,
}

/// One period of `netlens cost`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostReport {
    pub timestamp: UnixNanos,
    /// Wall time this period covers.
    pub period_ns: u64,
    /// Wall time since the measurement started.
    pub elapsed_ns: u64,
    /// CPU numbers, the order of every per-CPU vector.
    pub cpus: Vec<u32>,
    /// Every [`Entry`], in [`Entry::ALL`] order.
    pub entries: Vec<EntryRow>,
    /// NET_RX categories; their times add up to the NET_RX softirq time
    /// (empty when sampling is off).
    pub categories: Vec<CategoryRow>,
    /// Per CPU, same order as `cpus` (empty when /proc/stat is unreadable).
    pub proc_stat: Vec<CpuStat>,
    /// The same since start.
    pub proc_stat_total: Vec<CpuStat>,
    pub pids: Vec<PidCpu>,
    pub processes: Processes,
    pub self_cost: SelfCost,
    pub sampling: Sampling,
    /// The NET_RX stacks sampled in this period, folded
    /// (`net_rx_action;...;leaf`, samples), sorted; filled only when an
    /// output needs them (`--pyroscope`).
    pub net_rx_stacks: Vec<(String, u64)>,
}

impl CostReport {
    pub fn entry(&self, e: Entry) -> Option<&EntryRow> {
        self.entries.iter().find(|r| r.entry == e)
    }

    /// Network time (all network entries) per CPU in this period.
    pub fn network_period_ns(&self) -> Vec<u64> {
        let mut sum = vec![0; self.cpus.len()];
        for row in self.entries.iter().filter(|r| r.entry.is_network()) {
            for (s, v) in sum.iter_mut().zip(&row.time.period_ns) {
                *s += v;
            }
        }
        sum
    }
}
