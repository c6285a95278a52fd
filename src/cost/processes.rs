//! Network CPU time per process and per container: turns the kernel's
//! cumulative per-process records (map `pid_costs`) into the per-period
//! rows of [`Processes`]. Pure bookkeeping, unit-tested without BPF; the
//! run loop reads the records and finds which processes exited.
//!
//! Exactness: a record starts at zero when the kernel creates it (nothing
//! is charged before the programs are attached), the run loop hands over
//! the final values of an exited process's record, taken as it is removed,
//! and every delta of every record is added to `attributed_total`; so over
//! a run the network entries of `attributed_total` plus the time the kernel
//! could not put on any record equal the per-CPU totals.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::cost::{network_sum, ContainerCost, PerEntry, ProcessCost};
use crate::model::{Cgroup, Container};

/// `--max-processes` by default: a record is about 250 bytes of kernel
/// memory, preallocated (2 MiB); a process holds one from its first
/// network charge until netlens finds it exited (within a period).
pub const DEFAULT_MAX_PROCESSES: u32 = 8192;

/// One record as read from the kernel (cumulative since it was created).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub pid: u32,
    pub ns: PerEntry,
    pub spans: PerEntry,
    /// Interrupt wall time in its context (for -u).
    pub intr_ns: u64,
    pub cgroup_id: u64,
    pub comm: String,
}

/// A container or command name that had no network time for this long is
/// forgotten (its totals with it): containers come and go on a node, the
/// tables must not grow without end.
const FORGET: Duration = Duration::from_secs(600);

/// What is remembered of a process between two periods.
struct Known {
    ns: PerEntry,
    spans: PerEntry,
    comm: String,
    cgroup_id: u64,
    cgroup: Option<Arc<Cgroup>>,
}

/// Command names kept at most (each a Prometheus series per network
/// entry); the time of further ones goes to [`OTHER_COMMANDS`].
pub const MAX_COMMANDS: usize = 1000;
/// Where the time of command names beyond [`MAX_COMMANDS`] goes.
pub const OTHER_COMMANDS: &str = "(other)";

struct CommandTotals {
    total_ns: PerEntry,
    last_active: Instant,
}

struct ContainerTotals {
    container: Option<Container>,
    pod_uid: Option<String>,
    total_ns: PerEntry,
    last_active: Instant,
}

#[derive(Default)]
pub struct ProcessBook {
    known: HashMap<u32, Known>,
    /// By kube-style container ID; `None`: processes in no container.
    containers: HashMap<Option<String>, ContainerTotals>,
    /// By process name (`comm`).
    commands: HashMap<String, CommandTotals>,
    attributed_total: PerEntry,
}

fn sub(a: &PerEntry, b: &PerEntry) -> PerEntry {
    std::array::from_fn(|i| a[i].saturating_sub(b[i]))
}

fn add(a: &mut PerEntry, b: &PerEntry) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl ProcessBook {
    /// One period: every record the kernel holds (for processes in
    /// `exited`, the final values taken as the record was removed).
    /// `resolve` names a cgroup id (called once per process). Returns the
    /// processes with time in this period or that exited in it, most
    /// network time first, and every container remembered.
    pub fn period(
        &mut self,
        records: &[Record],
        exited: &HashSet<u32>,
        resolve: &mut dyn FnMut(u64) -> Option<Arc<Cgroup>>,
        now: Instant,
    ) -> (Vec<ProcessCost>, Vec<ContainerCost>) {
        let mut processes = Vec::new();
        let mut period_by_container: HashMap<Option<String>, (PerEntry, usize)> = HashMap::new();
        for r in records {
            let known = self.known.entry(r.pid).or_insert_with(|| Known {
                ns: [0; 9],
                spans: [0; 9],
                comm: if r.pid == 0 {
                    "swapper".to_string()
                } else {
                    r.comm.clone()
                },
                cgroup_id: r.cgroup_id,
                cgroup: resolve(r.cgroup_id),
            });
            // A program executed since: the kernel renewed both.
            if r.pid != 0 && r.comm != known.comm {
                known.comm.clone_from(&r.comm);
            }
            if r.cgroup_id != known.cgroup_id {
                known.cgroup_id = r.cgroup_id;
                known.cgroup = resolve(r.cgroup_id);
            }
            let period_ns = sub(&r.ns, &known.ns);
            let spans_period = sub(&r.spans, &known.spans);
            known.ns = r.ns;
            known.spans = r.spans;
            add(&mut self.attributed_total, &period_ns);
            let alive = !exited.contains(&r.pid);
            // Context entries alone (a timer softirq in its context) do not
            // make a row.
            let active = network_sum(&period_ns) > 0;
            let container = known.cgroup.as_ref().and_then(|c| c.container.clone());
            let key = container.as_ref().map(Container::kube_id);
            let totals = self
                .containers
                .entry(key.clone())
                .or_insert_with(|| ContainerTotals {
                    container,
                    pod_uid: known.cgroup.as_ref().and_then(|c| c.pod_uid.clone()),
                    total_ns: [0; 9],
                    last_active: now,
                });
            add(&mut totals.total_ns, &period_ns);
            if active {
                let name = if self.commands.len() < MAX_COMMANDS
                    || self.commands.contains_key(&known.comm)
                {
                    known.comm.clone()
                } else {
                    OTHER_COMMANDS.to_string()
                };
                let command = self.commands.entry(name).or_insert(CommandTotals {
                    total_ns: [0; 9],
                    last_active: now,
                });
                add(&mut command.total_ns, &period_ns);
                command.last_active = now;
                totals.last_active = now;
                let slot = period_by_container.entry(key).or_default();
                add(&mut slot.0, &period_ns);
                slot.1 += 1;
            }
            if active || !alive {
                processes.push(ProcessCost {
                    pid: r.pid,
                    comm: known.comm.clone(),
                    cgroup: known.cgroup.clone(),
                    period_ns,
                    total_ns: r.ns,
                    spans_period,
                    alive,
                });
            }
        }
        for pid in exited {
            self.known.remove(pid);
        }
        self.containers
            .retain(|key, c| key.is_none() || now.duration_since(c.last_active) < FORGET);
        self.commands
            .retain(|_, c| now.duration_since(c.last_active) < FORGET);
        processes.sort_by_key(|p| {
            (
                Reverse(p.network_period_ns()),
                Reverse(p.network_total_ns()),
                p.pid,
            )
        });
        let mut containers: Vec<ContainerCost> = self
            .containers
            .iter()
            .map(|(key, c)| {
                let (period_ns, processes_period) =
                    period_by_container.get(key).copied().unwrap_or_default();
                ContainerCost {
                    container: c.container.clone(),
                    pod_uid: c.pod_uid.clone(),
                    processes_period,
                    period_ns,
                    total_ns: c.total_ns,
                }
            })
            .collect();
        // The same order as the processes', then by ID (the host first).
        containers.sort_by_cached_key(|c| {
            (
                Reverse(c.network_period_ns()),
                Reverse(c.network_total_ns()),
                c.container.as_ref().map(|c| c.id.clone()),
            )
        });
        (processes, containers)
    }

    /// Network time per command name (`comm`) since start, exited
    /// processes included, of the names active in the last 10 minutes;
    /// sorted by name.
    pub fn commands(&self) -> Vec<(String, PerEntry)> {
        let mut v: Vec<(String, PerEntry)> = self
            .commands
            .iter()
            .map(|(name, c)| (name.clone(), c.total_ns))
            .collect();
        v.sort();
        v
    }

    /// Time put on process records since start, per entry.
    pub fn attributed_total(&self) -> PerEntry {
        self.attributed_total
    }
}

/// A record's `comm` bytes as a string (NUL-padded in the kernel).
pub fn comm_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, tx: u64, rx: u64, cgroup_id: u64) -> Record {
        let mut ns = [0; 9];
        ns[0] = tx;
        ns[1] = rx;
        Record {
            pid,
            ns,
            spans: [0; 9],
            intr_ns: 0,
            cgroup_id,
            comm: format!("p{pid}"),
        }
    }

    fn cgroup(id: u64, container: Option<&str>) -> Option<Arc<Cgroup>> {
        Some(Arc::new(Cgroup {
            id,
            path: Some(format!("/c{id}")),
            container: container.map(|c| Container {
                runtime: "containerd",
                id: c.to_string(),
            }),
            pod_uid: None,
        }))
    }

    fn resolver() -> impl FnMut(u64) -> Option<Arc<Cgroup>> {
        |id| match id {
            7 => cgroup(7, Some("aaaa")),
            8 => cgroup(8, Some("bbbb")),
            _ => cgroup(id, None),
        }
    }

    #[test]
    fn periods_are_deltas_and_totals_add_up_across_exits() {
        let mut book = ProcessBook::default();
        let t0 = Instant::now();
        let mut resolve = resolver();
        let (p, c) = book.period(
            &[
                record(10, 100, 50, 7),
                record(11, 10, 0, 1),
                record(0, 0, 5, 1),
            ],
            &HashSet::new(),
            &mut resolve,
            t0,
        );
        assert_eq!(p.iter().map(|p| p.pid).collect::<Vec<_>>(), [10, 11, 0]);
        assert_eq!(p[2].comm, "swapper");
        assert_eq!(c[0].container.as_ref().unwrap().id, "aaaa");
        assert_eq!(c[0].network_period_ns(), 150);
        assert_eq!(c[1].container, None);
        assert_eq!((c[1].network_period_ns(), c[1].processes_period), (15, 2));
        // 10 exits with 30 more; 11 is idle (not listed); 0 grows.
        let exited: HashSet<u32> = [10].into();
        let (p, c) = book.period(
            &[
                record(10, 130, 50, 7),
                record(11, 10, 0, 1),
                record(0, 0, 9, 1),
            ],
            &exited,
            &mut resolve,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(p.iter().map(|p| p.pid).collect::<Vec<_>>(), [10, 0]);
        assert_eq!(
            (p[0].period_ns[0], p[0].total_ns[0], p[0].alive),
            (30, 130, false)
        );
        assert_eq!(c[0].total_ns[0], 130);
        // The record is gone; the same PID again is a new process from 0.
        let (p, c) = book.period(
            &[
                record(10, 5, 0, 8),
                record(11, 10, 0, 1),
                record(0, 0, 9, 1),
            ],
            &HashSet::new(),
            &mut resolve,
            t0 + Duration::from_secs(2),
        );
        assert_eq!((p[0].pid, p[0].period_ns[0]), (10, 5));
        assert_eq!(p[0].container().unwrap().id, "bbbb");
        assert_eq!(book.attributed_total()[0], 130 + 10 + 5);
        assert_eq!(book.attributed_total()[1], 50 + 9);
        let total: u64 = c.iter().map(|c| c.total_ns[0] + c.total_ns[1]).sum();
        assert_eq!(total, 130 + 10 + 5 + 50 + 9);
    }

    #[test]
    fn a_process_that_executes_a_program_takes_its_name_and_cgroup() {
        let mut book = ProcessBook::default();
        let t0 = Instant::now();
        let mut resolve = resolver();
        let mut r = record(10, 100, 0, 1);
        r.comm = "runc:[2:INIT]".into();
        book.period(&[r], &HashSet::new(), &mut resolve, t0);
        let (p, c) = book.period(&[record(10, 150, 0, 7)], &HashSet::new(), &mut resolve, t0);
        assert_eq!((p[0].comm.as_str(), p[0].period_ns[0]), ("p10", 50));
        assert_eq!(p[0].container().unwrap().id, "aaaa");
        assert_eq!(c[0].total_ns[0], 50, "the time since goes to the container");
        assert_eq!(c[1].total_ns[0], 100, "the time before stays with the host");
    }

    #[test]
    fn idle_containers_are_forgotten_the_host_never() {
        let mut book = ProcessBook::default();
        let t0 = Instant::now();
        let mut resolve = resolver();
        book.period(
            &[record(10, 100, 0, 7), record(11, 1, 0, 1)],
            &[10, 11].into(),
            &mut resolve,
            t0,
        );
        let (_, c) = book.period(&[], &HashSet::new(), &mut resolve, t0 + FORGET / 2);
        assert_eq!(c.len(), 2);
        let (_, c) = book.period(&[], &HashSet::new(), &mut resolve, t0 + FORGET);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].container.clone(), c[0].total_ns[0]), (None, 1));
    }

    #[test]
    fn commands_add_up_their_processes_and_are_bounded() {
        let mut book = ProcessBook::default();
        let t0 = Instant::now();
        let mut resolve = resolver();
        book.period(
            &[record(10, 100, 0, 1), record(11, 50, 0, 1)],
            &[10].into(),
            &mut resolve,
            t0,
        );
        // Another "p11"-named process is the same command.
        let mut again = record(12, 7, 0, 1);
        again.comm = "p11".into();
        book.period(
            &[record(11, 60, 0, 1), again],
            &HashSet::new(),
            &mut resolve,
            t0,
        );
        let commands = book.commands();
        assert_eq!(commands.len(), 2);
        assert_eq!((commands[0].0.as_str(), commands[0].1[0]), ("p10", 100));
        assert_eq!((commands[1].0.as_str(), commands[1].1[0]), ("p11", 67));
        let many: Vec<Record> = (100..100 + MAX_COMMANDS as u32)
            .map(|pid| record(pid, 1, 0, 1))
            .collect();
        book.period(&many, &HashSet::new(), &mut resolve, t0);
        let commands = book.commands();
        assert_eq!(commands.len(), MAX_COMMANDS + 1);
        let other = commands.iter().find(|(n, _)| n == OTHER_COMMANDS).unwrap();
        assert_eq!(other.1[0], 2, "the two names beyond the bound");
    }

    #[test]
    fn comm_stops_at_the_first_nul() {
        assert_eq!(comm_string(b"nginx\0\0\0\0\0\0\0\0\0\0\0"), "nginx");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
