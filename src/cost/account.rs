//! Accounting arithmetic of `netlens cost`: turns cumulative counters (BPF
//! per-CPU totals, /proc/stat, /proc/PID/stat, netlens's own clocks) into
//! the per-period rows of a [`CostReport`]. Pure functions, unit-tested
//! without BPF.

use crate::model::cost::{CpuStat, Entry, EntryRow, PerCpu};
use crate::sys::procfs::CpuTimes;

/// Cumulative per-CPU totals, as read from the BPF side (index = CPU number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTotals {
    pub ns: [u64; 9],
    pub spans: [u64; 9],
    pub samples: u64,
    pub net_rx_samples: u64,
    pub samples_lost: u64,
    pub pid_lost_ns: [u64; 9],
}

/// Rows for every entry: per CPU (in `cpus` order) the time in this period
/// (now - prev) and since `first`. Counters never go backwards; should one
/// (a CPU that went offline and came back), the period reads 0.
pub fn entry_rows(
    cpus: &[u32],
    first: &[CpuTotals],
    prev: &[CpuTotals],
    now: &[CpuTotals],
) -> Vec<EntryRow> {
    let at = |v: &[CpuTotals], cpu: u32| v.get(cpu as usize).copied().unwrap_or_default();
    Entry::ALL
        .iter()
        .enumerate()
        .map(|(i, &entry)| {
            let mut time = PerCpu::zeroed(cpus.len());
            let mut spans_period = 0;
            for (col, &cpu) in cpus.iter().enumerate() {
                let (f, p, n) = (at(first, cpu), at(prev, cpu), at(now, cpu));
                time.period_ns[col] = n.ns[i].saturating_sub(p.ns[i]);
                time.total_ns[col] = n.ns[i].saturating_sub(f.ns[i]);
                spans_period += n.spans[i].saturating_sub(p.spans[i]);
            }
            EntryRow {
                entry,
                time,
                spans_period,
            }
        })
        .collect()
}

/// Per CPU (in `cpus` order) the /proc/stat times of this period in
/// nanoseconds. CPUs missing from either reading get zeros.
pub fn cpu_stat_period(
    cpus: &[u32],
    prev: &[CpuTimes],
    now: &[CpuTimes],
    ns_per_tick: u64,
) -> Vec<CpuStat> {
    let find = |v: &[CpuTimes], cpu: u32| v.iter().find(|c| c.cpu == cpu).copied();
    cpus.iter()
        .map(|&cpu| match (find(prev, cpu), find(now, cpu)) {
            (Some(p), Some(n)) => {
                let d = |a: u64, b: u64| b.saturating_sub(a) * ns_per_tick;
                CpuStat {
                    user: d(p.user, n.user),
                    nice: d(p.nice, n.nice),
                    system: d(p.system, n.system),
                    idle: d(p.idle, n.idle),
                    iowait: d(p.iowait, n.iowait),
                    irq: d(p.irq, n.irq),
                    softirq: d(p.softirq, n.softirq),
                    steal: d(p.steal, n.steal),
                }
            }
            _ => CpuStat::default(),
        })
        .collect()
}

/// Effective samples per second per CPU.
pub fn effective_hz(samples: u64, cpus: usize, period_ns: u64) -> f64 {
    if cpus == 0 || period_ns == 0 {
        return 0.0;
    }
    samples as f64 / cpus as f64 / (period_ns as f64 / 1e9)
}

/// The kernel throttles sampling below the asked frequency: it lowers
/// kernel.perf_event_max_sample_rate by itself when sampling interrupts
/// take too long ("perf: interrupt took too long ... lowering
/// kernel.perf_event_max_sample_rate"), and then caps every event at it.
/// The effective rate is shown beside it but is no proof either way: a
/// cpu-clock event delivers fewer samples while its CPU idles.
pub fn is_throttled(frequency: u64, max_rate: Option<u64>) -> bool {
    frequency > 0 && max_rate.is_some_and(|m| m < frequency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(ns: [u64; 9], spans: u64) -> CpuTotals {
        CpuTotals {
            ns,
            spans: [spans; 9],
            ..Default::default()
        }
    }

    #[test]
    fn entry_rows_take_period_and_total_per_cpu() {
        let first = vec![totals([0; 9], 0), totals([0; 9], 0)];
        let prev = vec![totals([10, 0, 0, 100, 0, 0, 0, 0, 0], 1), totals([0; 9], 0)];
        let now = vec![
            totals([15, 0, 0, 160, 0, 0, 0, 0, 0], 3),
            totals([0, 7, 0, 0, 0, 0, 0, 0, 0], 2),
        ];
        // Columns in the order asked for: CPU 1, then CPU 0.
        let rows = entry_rows(&[1, 0], &first, &prev, &now);
        assert_eq!(rows.len(), Entry::ALL.len());
        let tx = &rows[0];
        assert_eq!(tx.entry, Entry::TxSyscall);
        assert_eq!(tx.time.period_ns, vec![0, 5]);
        assert_eq!(tx.time.total_ns, vec![0, 15]);
        assert_eq!(tx.spans_period, 4);
        let rx = rows.iter().find(|r| r.entry == Entry::RxSyscall).unwrap();
        assert_eq!(rx.time.period_ns, vec![7, 0]);
        let net_rx = rows
            .iter()
            .find(|r| r.entry == Entry::NetRxSoftirq)
            .unwrap();
        assert_eq!(net_rx.time.period_ns, vec![0, 60]);
        assert_eq!(net_rx.time.total_ns, vec![0, 160]);
    }

    #[test]
    fn counters_going_backwards_read_zero() {
        let prev = vec![totals([50; 9], 5)];
        let now = vec![totals([40; 9], 4)];
        let rows = entry_rows(&[0], &prev, &prev, &now);
        assert!(rows.iter().all(|r| r.time.period_ns == vec![0]));
        assert!(rows.iter().all(|r| r.spans_period == 0));
    }

    #[test]
    fn missing_cpu_reads_zero() {
        let rows = entry_rows(&[5], &[], &[], &[totals([1; 9], 1)]);
        assert!(rows.iter().all(|r| r.time.period_ns == vec![0]));
    }

    #[test]
    fn proc_stat_period_in_nanoseconds() {
        let p = CpuTimes {
            cpu: 1,
            user: 10,
            system: 5,
            softirq: 1,
            idle: 100,
            ..Default::default()
        };
        let n = CpuTimes {
            cpu: 1,
            user: 12,
            system: 9,
            softirq: 4,
            idle: 150,
            ..Default::default()
        };
        let got = cpu_stat_period(&[0, 1], &[p], &[n], 10_000_000);
        assert_eq!(got[0], CpuStat::default());
        assert_eq!(got[1].user, 20_000_000);
        assert_eq!(got[1].system, 40_000_000);
        assert_eq!(got[1].softirq, 30_000_000);
        assert_eq!(got[1].idle, 500_000_000);
    }

    #[test]
    fn throttling() {
        assert!(!is_throttled(0, Some(1)));
        assert!(is_throttled(1000, Some(500)));
        assert!(!is_throttled(1000, Some(100_000)));
        assert!(!is_throttled(1000, None));
        assert!((effective_hz(2000, 2, 500_000_000) - 2000.0).abs() < 1e-9);
        assert_eq!(effective_hz(5, 0, 1), 0.0);
    }
}
