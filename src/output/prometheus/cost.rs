//! The Prometheus producer of `netlens cost`: per-CPU `_seconds_total`
//! counters of every entry point and NET_RX category, the `/proc/stat`
//! context, the `-u` processes and netlens's own cost, all cumulative since
//! netlens started. The number of series is bounded by construction: CPUs ×
//! (entries + categories + /proc/stat fields), plus the `-u` processes and
//! the containers and command names that had network time in the last 10
//! minutes (one per network entry each; command names at most 1000;
//! processes are in the log and the UIs, not here: PIDs would make series
//! without end).

use std::sync::{Arc, Mutex};

use super::exposition::{Exposition, Kind, Labels};
use super::server::Producer;
use super::{BPF_RUNS_MISSED_HELP, BPF_RUNS_MISSED_TOTAL};
use crate::model::cost::{CostReport, CpuStat, Entry, Sampler};
use crate::output::Sink;

const NS: f64 = 1e9;

/// What the endpoint serves: the latest report, whose totals are the
/// counters (the model carries them; nothing is added up here).
#[derive(Default)]
pub struct CostMetrics(Mutex<Option<CostReport>>);

impl CostMetrics {
    pub fn new() -> Arc<CostMetrics> {
        Arc::new(CostMetrics::default())
    }

    fn update(&self, r: &CostReport) {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_mut() {
            // Into the previous report's buffers: no allocation per period.
            Some(l) => l.clone_from(r),
            None => *last = Some(r.clone()),
        }
    }
}

impl Producer for CostMetrics {
    fn render(&self, out: &mut Exposition) {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = last.as_ref() else {
            return; // before the first period: nothing measured yet
        };
        let cpu_labels: Vec<Labels> = r
            .cpus
            .iter()
            .map(|c| Labels::new().with("cpu", &c.to_string()))
            .collect();

        let mut f = out.family(
            "netlens_cost_cpu_seconds_total",
            Kind::Counter,
            "CPU time of each kernel networking entry point per CPU, measured at entry and exit \
             (entry: tx_syscall, rx_syscall, net_tx_softirq, net_rx_softirq, net_irq, \
             napi_thread, io_uring_worker; other_softirq and other_irq are context).",
        );
        for e in &r.entries {
            for (labels, ns) in cpu_labels.iter().zip(&e.time.total_ns) {
                f.sample_f64(&labels.and("entry", e.entry.name()), *ns as f64 / NS);
            }
        }
        let mut f = out.family(
            "netlens_cost_net_rx_cpu_seconds_total",
            Kind::Counter,
            "NET_RX softirq time per CPU split by what it was spent on (stack sampling); \
             the categories of a CPU add up to its net_rx_softirq time.",
        );
        for c in &r.categories {
            for (labels, ns) in cpu_labels.iter().zip(&c.time.total_ns) {
                f.sample_f64(&labels.and("category", c.name), *ns as f64 / NS);
            }
        }
        let mut f = out.family(
            "netlens_cost_proc_stat_cpu_seconds_total",
            Kind::Counter,
            "Context: /proc/stat time per CPU and mode since netlens started.",
        );
        for (labels, total) in cpu_labels.iter().zip(&r.proc_stat_total) {
            for (mode, ns) in CpuStat::FIELDS.iter().zip(total.values()) {
                f.sample_f64(&labels.and("mode", mode), ns as f64 / NS);
            }
        }

        let mut f = out.family(
            "netlens_cost_process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time of the processes given with -u, since netlens started.",
        );
        for p in &r.pids {
            let l = Labels::new()
                .with("pid", &p.pid.to_string())
                .with("comm", &p.comm);
            f.sample_f64(&l.and("mode", "user"), p.user_ns_total as f64 / NS);
            f.sample_f64(&l.and("mode", "system"), p.system_ns_total as f64 / NS);
        }
        let mut f = out.family(
            "netlens_cost_process_network_seconds_total",
            Kind::Counter,
            "Time of the -u processes in TX and RX system calls, and softirq/IRQ time that \
             ran while they were on the CPU (kind: tx_syscall, rx_syscall, interrupt).",
        );
        for p in &r.pids {
            let l = Labels::new()
                .with("pid", &p.pid.to_string())
                .with("comm", &p.comm);
            for (kind, ns) in [
                ("tx_syscall", p.tx_syscall_ns_total),
                ("rx_syscall", p.rx_syscall_ns_total),
                ("interrupt", p.interrupt_ns_total),
            ] {
                f.sample_f64(&l.and("kind", kind), ns as f64 / NS);
            }
        }

        let none = Labels::new();
        if r.processes.enabled {
            let network = || Entry::ALL.iter().filter(|e| e.is_network());
            let mut f = out.family(
                "netlens_cost_container_cpu_seconds_total",
                Kind::Counter,
                "Network CPU time charged while the processes of a container were on the CPU, \
                 by entry as in netlens_cost_cpu_seconds_total, exited processes included \
                 (container_id as kube-state-metrics writes it; \"\" for the processes in no \
                 container). A container idle for 10 minutes is dropped.",
            );
            for c in &r.processes.containers {
                let l = none.and(
                    "container_id",
                    &c.container
                        .as_ref()
                        .map(|c| c.kube_id())
                        .unwrap_or_default(),
                );
                for &e in network() {
                    f.sample_f64(
                        &l.and("entry", e.name()),
                        c.total_ns[e as usize] as f64 / NS,
                    );
                }
            }
            let mut f = out.family(
                "netlens_cost_command_cpu_seconds_total",
                Kind::Counter,
                "Network CPU time charged while processes of each name (comm) were on the CPU, \
                 by entry, exited processes included; names without network time for 10 \
                 minutes are dropped, names beyond 1000 are counted as comm=\"(other)\".",
            );
            for (comm, ns) in &r.processes.commands {
                let l = none.and("comm", comm);
                for &e in network() {
                    f.sample_f64(&l.and("entry", e.name()), ns[e as usize] as f64 / NS);
                }
            }
            let mut f = out.family(
                "netlens_cost_unattributed_cpu_seconds_total",
                Kind::Counter,
                "Network CPU time on no process because the per-process table was full \
                 (--max-processes).",
            );
            for &e in network() {
                f.sample_f64(
                    &none.and("entry", e.name()),
                    r.processes.unattributed_total_ns[e as usize] as f64 / NS,
                );
            }
            out.family(
                "netlens_cost_processes_tracked",
                Kind::Gauge,
                "Processes whose network time the kernel holds now.",
            )
            .sample(&none, r.processes.tracked as u64);
            out.family(
                "netlens_cost_processes_capacity",
                Kind::Gauge,
                "Processes the kernel can hold at once (--max-processes).",
            )
            .sample(&none, u64::from(r.processes.capacity));
        }
        if let Some(bpf) = r.self_cost.bpf_ns_total {
            out.family(
                "netlens_self_bpf_seconds_total",
                Kind::Counter,
                "Run time of netlens's BPF programs (BPF_ENABLE_STATS).",
            )
            .sample_f64(&none, bpf as f64 / NS);
        }
        out.family(
            "netlens_self_process_cpu_seconds_total",
            Kind::Counter,
            "CPU time of the netlens process itself (user + system) since it started measuring.",
        )
        .sample_f64(&none, r.self_cost.process_ns_total as f64 / NS);
        out.family(BPF_RUNS_MISSED_TOTAL, Kind::Counter, BPF_RUNS_MISSED_HELP)
            .sample(&none, r.self_cost.bpf_runs_missed_total);

        let mut f = out.family(
            "netlens_cost_samples_total",
            Kind::Counter,
            "Stack samples taken on all CPUs (kind=all), and of them while NET_RX ran (kind=net_rx).",
        );
        f.sample(&none.and("kind", "all"), r.sampling.samples_total);
        f.sample(&none.and("kind", "net_rx"), r.sampling.net_rx_samples_total);
        out.family(
            "netlens_cost_samples_lost_total",
            Kind::Counter,
            "NET_RX samples lost because the sample ring buffer was full.",
        )
        .sample(&none, r.sampling.lost_total);
        out.family(
            "netlens_cost_stack_errors_total",
            Kind::Counter,
            "NET_RX samples whose kernel stack could not be read (counted as other).",
        )
        .sample(&none, r.sampling.stack_errors_total);
        out.family(
            "netlens_cost_sampling_frequency_hertz",
            Kind::Gauge,
            "Stack sampling frequency asked for with -f (0: sampling off or at the tick).",
        )
        .sample(&none, r.sampling.sampler.hz());
        out.family(
            "netlens_cost_sampling_on_tick",
            Kind::Gauge,
            "1 when stacks are sampled at the scheduler tick (-f tick).",
        )
        .sample(&none, u64::from(r.sampling.sampler == Sampler::Tick));
        out.family(
            "netlens_cost_sampling_info",
            Kind::Gauge,
            "1, labelled with how stacks are sampled (source: cycles, cpu_clock, tick, off) and \
             whether -f auto chose it.",
        )
        .sample(
            &none
                .and("source", r.sampling.sampler.source())
                .and("auto", if r.sampling.auto { "true" } else { "false" }),
            1,
        );
        out.family(
            "netlens_cost_sampling_throttled",
            Kind::Gauge,
            "1 when the kernel lowered kernel.perf_event_max_sample_rate below -f.",
        )
        .sample(&none, u64::from(r.sampling.throttled));
    }
}

/// Feeds [`CostMetrics`] with every report.
pub struct CostMetricsSink(Arc<CostMetrics>);

impl CostMetricsSink {
    pub fn new(metrics: Arc<CostMetrics>) -> CostMetricsSink {
        CostMetricsSink(metrics)
    }
}

impl Sink for CostMetricsSink {
    fn report(&mut self, report: &CostReport) -> anyhow::Result<()> {
        self.0.update(report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cost::{CategoryRow, Entry, EntryRow, PerCpu, PidCpu, SelfCost};

    fn report(period: u64) -> CostReport {
        CostReport {
            cpus: vec![0, 3],
            entries: Entry::ALL
                .iter()
                .map(|&entry| EntryRow {
                    entry,
                    time: PerCpu {
                        period_ns: vec![period, 0],
                        total_ns: vec![1_500_000_000, 250_000_000],
                    },
                    spans_period: 1,
                })
                .collect(),
            categories: vec![CategoryRow {
                name: "gro",
                label: "GRO",
                time: PerCpu {
                    period_ns: vec![0, 0],
                    total_ns: vec![500_000_000, 0],
                },
                samples_period: 0,
            }],
            proc_stat: vec![
                CpuStat {
                    user: period,
                    ..Default::default()
                },
                CpuStat::default(),
            ],
            proc_stat_total: vec![
                CpuStat {
                    user: 2_000_000_000,
                    ..Default::default()
                },
                CpuStat::default(),
            ],
            pids: vec![PidCpu {
                pid: 7,
                comm: "a \"b\"".into(),
                user_ns_period: 0,
                system_ns_period: 0,
                user_ns_total: 2_000_000_000,
                system_ns_total: 1_000_000_000,
                tx_syscall_ns_period: 0,
                rx_syscall_ns_period: 0,
                tx_syscall_ns_total: 300_000_000,
                rx_syscall_ns_total: 200_000_000,
                interrupt_ns_period: 0,
                interrupt_ns_total: 100_000_000,
                alive: true,
            }],
            self_cost: SelfCost {
                bpf_ns_total: Some(20_000_000),
                process_ns_total: 10_000_000,
                bpf_runs_missed_total: 5,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn render(m: &CostMetrics) -> String {
        let mut out = Exposition::new();
        m.render(&mut out);
        assert!(out.refused().is_empty(), "{:?}", out.refused());
        out.into_string()
    }

    #[test]
    fn nothing_before_the_first_report() {
        assert_eq!(render(&CostMetrics::default()), "");
    }

    #[test]
    fn containers_and_the_unattributed_time_when_processes_are_accounted() {
        use crate::model::cost::{ContainerCost, Entry, Processes};
        use crate::model::Container;
        let m = CostMetrics::new();
        m.update(&report(500_000_000));
        let text = render(&m);
        assert!(!text.contains("netlens_cost_container_cpu"), "off: {text}");
        let mut r = report(500_000_000);
        let mut ns = [0; 9];
        ns[Entry::TxSyscall as usize] = 1_500_000_000;
        r.processes = Processes {
            enabled: true,
            capacity: 64,
            tracked: 3,
            containers: vec![
                ContainerCost {
                    container: Some(Container {
                        runtime: "docker",
                        id: "ab".repeat(32),
                    }),
                    pod_uid: None,
                    processes_period: 1,
                    period_ns: ns,
                    total_ns: ns,
                },
                ContainerCost {
                    container: None,
                    pod_uid: None,
                    processes_period: 0,
                    period_ns: [0; 9],
                    total_ns: [0; 9],
                },
            ],
            unattributed_total_ns: ns,
            commands: vec![("nginx".into(), ns)],
            ..Processes::default()
        };
        m.update(&r);
        let text = render(&m);
        let id = "ab".repeat(32);
        for line in [
            format!(
                "netlens_cost_container_cpu_seconds_total{{container_id=\"docker://{id}\",\
                 entry=\"tx_syscall\"}} 1.5"
            ),
            "netlens_cost_container_cpu_seconds_total{container_id=\"\",entry=\"napi_thread\"} 0"
                .to_string(),
            "netlens_cost_unattributed_cpu_seconds_total{entry=\"tx_syscall\"} 1.5".to_string(),
            "netlens_cost_processes_tracked 3".to_string(),
            "netlens_cost_command_cpu_seconds_total{comm=\"nginx\",entry=\"tx_syscall\"} 1.5"
                .to_string(),
            "netlens_cost_processes_capacity 64".to_string(),
        ] {
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains("entry=\"other_irq\",container"),
            "network entries only"
        );
        assert!(
            !text.contains("container_id=\"\",entry=\"other_softirq\""),
            "network entries only"
        );
    }

    #[test]
    fn counters_in_seconds_with_cpu_entry_and_category_labels() {
        let m = CostMetrics::default();
        m.update(&report(1_000_000_000));
        m.update(&report(1_000_000_000));
        let text = render(&m);
        for line in [
            "# TYPE netlens_cost_cpu_seconds_total counter",
            "netlens_cost_cpu_seconds_total{cpu=\"0\",entry=\"net_rx_softirq\"} 1.5",
            "netlens_cost_cpu_seconds_total{cpu=\"3\",entry=\"tx_syscall\"} 0.25",
            "netlens_cost_net_rx_cpu_seconds_total{cpu=\"0\",category=\"gro\"} 0.5",
            // The totals of the latest report, not a sum of the periods.
            "netlens_cost_proc_stat_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 2",
            "netlens_cost_process_cpu_seconds_total{pid=\"7\",comm=\"a \\\"b\\\"\",mode=\"user\"} 2",
            "netlens_cost_process_network_seconds_total{pid=\"7\",comm=\"a \\\"b\\\"\",kind=\"interrupt\"} 0.1",
            "netlens_self_bpf_seconds_total 0.02",
            // Already cumulative in the report: taken as it is, not added up.
            "netlens_bpf_runs_missed_total 5",
            "# TYPE netlens_bpf_runs_missed_total counter",
            "netlens_cost_sampling_throttled 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("# HELP netlens_cost_net_rx_cpu_seconds_total "));
    }
}
