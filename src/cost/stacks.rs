//! The NET_RX samples: each distinct kernel stack is symbolized and
//! classified once (the first time it is seen), then only counted. Keeps
//! per-CPU category counts for the current period, cumulative category
//! times, and every distinct stack with its count for the folded-stack and
//! flame graph files written at exit and for the stacks of each period
//! (`--pyroscope`). A stack's folded line is built once, when it is first
//! seen, by [`net_rx_line`]: both uses share it.

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::classify::{Category, CategoryCounts, Classifier};
use super::folded::FoldedStacks;
use super::kallsyms::Kallsyms;
use crate::model::cost::CategoryRow;

/// The frame the folded stacks start from: everything below it is the
/// context NET_RX happened to run in (an IRQ exit, ksoftirqd, a syscall).
const NET_RX_ROOT: &str = "net_rx_action";

/// Interrupt entry frames. A stack sampled at the tick (-f tick) starts
/// with the timer interrupt's own frames, then this entry, then the code
/// it interrupted: only that code is the sample.
const INTERRUPT_ENTRIES: [&str; 2] = ["asm_sysvec_apic_timer_interrupt", "el1h_64_irq"];
/// How deep the interrupt entry can be in such a stack.
const INTERRUPT_DEPTH: usize = 12;

/// The frames of the interrupted code (all of them when the stack does not
/// start inside a timer interrupt).
fn interrupted(names: &[String]) -> &[String] {
    names
        .iter()
        .take(INTERRUPT_DEPTH)
        .position(|n| INTERRUPT_ENTRIES.contains(&n.as_str()))
        .map_or(names, |entry| &names[entry + 1..])
}

/// The folded line (`net_rx_action;...;leaf`, no count) of a stack given
/// leaf first: the interrupted code only (see [`interrupted`]), cut at
/// net_rx_action when it is in the stack.
pub fn net_rx_line(names: &[String]) -> String {
    let mut names = interrupted(names);
    if let Some(root) = names.iter().rposition(|n| n == NET_RX_ROOT) {
        names = &names[..=root];
    }
    super::folded::fold_line(names)
}

struct Seen {
    category: Category,
    /// Folded line, from [`net_rx_line`].
    line: Box<str>,
    /// Since start.
    samples: u64,
    /// In the current period.
    period_samples: u64,
}

pub struct StackBook {
    syms: Kallsyms,
    classifier: Classifier,
    stacks: HashMap<Box<[u64]>, Seen>,
    /// Samples of this period, per CPU column.
    period: Vec<CategoryCounts>,
    /// Cumulative time: [category index][CPU column].
    totals: Vec<Vec<u64>>,
    /// Samples whose stack could not be read (counted as "other").
    pub stack_errors: u64,
}

impl StackBook {
    /// Loads /proc/kallsyms (needs root or CAP_SYSLOG for real addresses).
    pub fn new() -> Result<StackBook> {
        let syms = Kallsyms::load().context("reading kernel symbols for the NET_RX breakdown")?;
        Ok(StackBook::with_symbols(syms))
    }

    pub fn with_symbols(syms: Kallsyms) -> StackBook {
        StackBook {
            syms,
            classifier: Classifier::new(),
            stacks: HashMap::new(),
            period: Vec::new(),
            totals: Vec::new(),
            stack_errors: 0,
        }
    }

    fn frame_names(&self, ips: &[u64]) -> Vec<String> {
        ips.iter()
            .map(|&ip| match self.syms.resolve(ip) {
                Some(sym) => match sym.module {
                    Some(m) => format!("{} [{m}]", sym.name),
                    None => sym.name.to_string(),
                },
                None => format!("0x{ip:x}"),
            })
            .collect()
    }

    /// One sample on the CPU of column `col`, frames leaf first.
    pub fn add(&mut self, col: usize, ips: &[u64]) {
        let category = if ips.is_empty() {
            self.stack_errors += 1;
            Category::Other
        } else if let Some(seen) = self.stacks.get_mut(ips) {
            seen.samples += 1;
            seen.period_samples += 1;
            seen.category
        } else {
            let names = self.frame_names(ips);
            let category = self.classifier.classify(interrupted(&names));
            self.stacks.insert(
                ips.into(),
                Seen {
                    category,
                    line: net_rx_line(&names).into(),
                    samples: 1,
                    period_samples: 1,
                },
            );
            category
        };
        if self.period.len() <= col {
            self.period.resize(col + 1, CategoryCounts::default());
        }
        self.period[col].add(category, 1);
    }

    /// Sample counts of the period per CPU column (`cols` of them), reset.
    pub fn take_period_counts(&mut self, cols: usize) -> Vec<CategoryCounts> {
        let mut counts = std::mem::take(&mut self.period);
        counts.resize(cols, CategoryCounts::default());
        counts
    }

    /// Adds the rows' period times to the cumulative totals and copies the
    /// totals into the rows.
    pub fn add_totals(&mut self, rows: &mut [CategoryRow]) {
        self.totals.resize(rows.len(), Vec::new());
        for (total, row) in self.totals.iter_mut().zip(rows.iter_mut()) {
            total.resize(row.time.period_ns.len(), 0);
            for (t, p) in total.iter_mut().zip(&row.time.period_ns) {
                *t += p;
            }
            row.time.total_ns.clone_from(total);
        }
    }

    /// Every sampled stack since start, from net_rx_action to the leaf.
    pub fn folded(&self) -> FoldedStacks {
        let mut folded = FoldedStacks::new();
        for seen in self.stacks.values() {
            folded.add_line(&seen.line, seen.samples);
        }
        folded
    }

    /// The stacks sampled since the last call (folded line, samples),
    /// sorted by line; resets the period. Stacks whose frames fold to the
    /// same line are merged. Samples without a readable stack are not in it
    /// (they are counted in `stack_errors`).
    pub fn take_period_folded(&mut self) -> Vec<(String, u64)> {
        let mut folded = FoldedStacks::new();
        for seen in self.stacks.values_mut().filter(|s| s.period_samples > 0) {
            folded.add_line(&seen.line, seen.period_samples);
            seen.period_samples = 0;
        }
        folded.into_sorted()
    }

    /// Samples counted since start.
    pub fn total_samples(&self) -> u64 {
        self.stacks.values().map(|s| s.samples).sum::<u64>() + self.stack_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T net_rx_action
ffffffff81000100 T __napi_poll
ffffffff81000200 T process_backlog
ffffffff81000300 T __netif_receive_skb_core
ffffffff81000400 T ip_rcv
ffffffff81000500 T ip_local_deliver
ffffffff81000600 T tcp_v4_rcv
ffffffff81000700 T sock_def_readable
ffffffff81000800 T handle_softirqs
ffffffff81000900 T napi_gro_receive
ffffffff81000a00 T virtnet_poll\t[virtio_net]
ffffffff81000b00 T __hrtimer_run_queues
ffffffff81000c00 T asm_sysvec_apic_timer_interrupt
ffffffff81000d00 T zzz_end
";

    fn book() -> StackBook {
        StackBook::with_symbols(Kallsyms::parse(KALLSYMS).unwrap())
    }

    #[test]
    fn samples_are_classified_per_cpu_and_stacks_counted() {
        let mut b = book();
        // tcp_v4_rcv+0x10 <- ip_local_deliver <- ip_rcv <- core <- backlog <- napi <- net_rx_action <- softirqs
        let tcp = [
            0xffffffff81000610,
            0xffffffff81000510,
            0xffffffff81000410,
            0xffffffff81000310,
            0xffffffff81000210,
            0xffffffff81000110,
            0xffffffff81000010,
            0xffffffff81000810,
        ];
        let wake = [0xffffffff81000720, 0xffffffff81000620, 0xffffffff81000010];
        b.add(0, &tcp);
        b.add(0, &tcp);
        b.add(1, &wake);
        b.add(1, &[]);
        let counts = b.take_period_counts(2);
        let at = |c: Category| [counts[0].get(c), counts[1].get(c)];
        assert_eq!(at(Category::TcpReceiveV4), [2, 0]);
        assert_eq!(at(Category::SocketEnqueueWakeup), [0, 1]);
        assert_eq!(at(Category::Other), [0, 1]);
        assert_eq!(b.stack_errors, 1);
        assert_eq!(b.total_samples(), 4);
        // The period was reset.
        assert!(b.take_period_counts(2).iter().all(|c| c.total() == 0));

        let lines = b.folded().lines();
        assert!(
            lines.contains(
                &"net_rx_action;__napi_poll;process_backlog;__netif_receive_skb_core;ip_rcv;\
                  ip_local_deliver;tcp_v4_rcv 2"
                    .to_string()
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn tick_samples_keep_only_the_interrupted_code() {
        let mut b = book();
        // The tick's own frames, its interrupt entry, then TCP receive.
        let tick = [
            0xffffffff81000b10,
            0xffffffff81000c10,
            0xffffffff81000610,
            0xffffffff81000510,
            0xffffffff81000010,
        ];
        b.add(0, &tick);
        let counts = b.take_period_counts(1);
        assert_eq!(counts[0].get(Category::TcpReceiveV4), 1);
        assert_eq!(
            b.folded().lines(),
            vec!["net_rx_action;ip_local_deliver;tcp_v4_rcv 1".to_string()]
        );
    }

    #[test]
    fn period_stacks_hold_only_the_period_and_share_the_folded_lines() {
        let mut b = book();
        let tcp = [0xffffffff81000610, 0xffffffff81000510, 0xffffffff81000010];
        // Below net_rx_action: cut away, like in folded().
        let wake = [
            0xffffffff81000720,
            0xffffffff81000620,
            0xffffffff81000010,
            0xffffffff81000810,
        ];
        // A tick sample inside TCP receive: same line as `tcp`, merged.
        let tick = [
            0xffffffff81000b10,
            0xffffffff81000c10,
            0xffffffff81000620,
            0xffffffff81000520,
            0xffffffff81000020,
        ];
        b.add(0, &tcp);
        b.add(1, &tcp);
        b.add(0, &wake);
        b.add(0, &tick);
        b.add(0, &[]);
        let first = b.take_period_folded();
        assert_eq!(
            first,
            vec![
                ("net_rx_action;ip_local_deliver;tcp_v4_rcv".to_string(), 3),
                ("net_rx_action;tcp_v4_rcv;sock_def_readable".to_string(), 1),
            ]
        );
        // The unreadable stack is only counted as an error.
        assert_eq!(b.stack_errors, 1);
        // Reset: a period without samples has no stacks.
        assert!(b.take_period_folded().is_empty());
        b.add(0, &wake);
        assert_eq!(
            b.take_period_folded(),
            vec![("net_rx_action;tcp_v4_rcv;sock_def_readable".to_string(), 1)]
        );
        // The cumulative view is untouched by taking periods, and its lines
        // are the same.
        assert_eq!(
            b.folded().lines(),
            vec![
                "net_rx_action;ip_local_deliver;tcp_v4_rcv 3".to_string(),
                "net_rx_action;tcp_v4_rcv;sock_def_readable 2".to_string(),
            ]
        );
        // Period counts (categories) and period stacks are independent: CPU 0
        // has all samples but one since the counts were last taken.
        assert_eq!(b.take_period_counts(2)[0].total(), 5);
    }

    #[test]
    fn totals_accumulate() {
        let mut b = book();
        let mut rows = vec![CategoryRow {
            name: "gro",
            label: "GRO",
            time: crate::model::cost::PerCpu {
                period_ns: vec![5, 7],
                total_ns: vec![],
            },
            samples_period: 1,
        }];
        b.add_totals(&mut rows);
        b.add_totals(&mut rows);
        assert_eq!(rows[0].time.total_ns, vec![10, 14]);
    }
}
