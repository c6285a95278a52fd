//! Finding the connections that already exist when netlens starts, in every
//! network namespace: a BPF TCP iterator walks each namespace and puts the
//! connected sockets into the connection map; /proc tells who owns them.
//!
//! The iterator walks the namespace of the thread that creates it: netlens's
//! own namespace is walked in place, every other one from a thread that
//! entered it, which needs CAP_SYS_ADMIN. The connections of a namespace
//! that cannot be entered are counted from /proc instead, and reported as
//! not seeded ([`SeedReport::unreached_connections`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use anyhow::Result;

use super::collector::{walk_tcp_sockets, Collector};
use super::decode::{self, CONN_SEEDED};
use super::skel::types;
use super::table::{ConnTable, SeedOwner};
use crate::model::Direction;
use crate::sys::{netns, procfs};

#[derive(Debug, Default)]
pub struct SeedReport {
    /// Network namespaces walked.
    pub namespaces: usize,
    /// Existing connections seeded (tracked, with owner and direction).
    pub connections: usize,
    /// Connections the walk put into the map whose record never reached
    /// user space (owner and direction unknown); 0 unless a walk failed
    /// part way.
    pub unrecorded: usize,
    /// Processes whose descriptors could not be read: the connections they
    /// hold are seeded with PID 0.
    pub unreadable_processes: usize,
    /// Why no owner could be looked up at all (/proc unreadable).
    pub owner_scan_error: Option<String>,
    /// Namespaces that could not be walked.
    pub unreached: Vec<Unreached>,
}

/// A network namespace whose existing connections were not seeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreached {
    pub inode: u32,
    pub path: PathBuf,
    /// Why it could not be walked.
    pub error: String,
    /// Entering it failed for want of CAP_SYS_ADMIN.
    pub lacks_sys_admin: bool,
    /// Its connected TCP sockets, counted from /proc as the iterator would
    /// have tracked them; `None` when no process inside was found to read
    /// them from (or its tables could not be read: `count_error`).
    pub connections: Option<u64>,
    pub count_error: Option<String>,
}

impl Unreached {
    /// The warning for this namespace (without a `warning: ` prefix).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "network namespace {} ({}) not entered: {}; ",
            self.inode,
            self.path.display(),
            self.error
        );
        // Writing into a String cannot fail.
        let _ = match (self.connections, &self.count_error) {
            (Some(n), _) => write!(s, "its {n} existing connections are not seeded"),
            (None, Some(e)) => write!(
                s,
                "its existing connections are not seeded (how many is unknown: {e})"
            ),
            (None, None) => write!(
                s,
                "its existing connections are not seeded (how many is unknown: no process inside \
                 to read /proc/PID/net/tcp from)"
            ),
        };
        s.push_str(" and are not reported, not even when they close");
        if self.lacks_sys_admin {
            s.push_str(
                "; netlens lacks CAP_SYS_ADMIN, which entering a network namespace other than its \
                 own needs",
            );
        }
        s
    }
}

impl SeedReport {
    /// Existing connections left out because their namespace could not be
    /// entered (those counted: see [`Unreached::connections`]).
    pub fn unreached_connections(&self) -> u64 {
        self.unreached.iter().filter_map(|u| u.connections).sum()
    }

    /// The end of the `netlens: ready` line: what seeding found and missed.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} existing connections found in {} network namespaces",
            self.connections, self.namespaces
        );
        if !self.unreached.is_empty() {
            let _ = write!(
                s,
                "; {} network namespaces not entered, {} existing connections there not seeded",
                self.unreached.len(),
                self.unreached_connections()
            );
            if self.unreached.iter().any(|u| u.connections.is_none()) {
                s.push_str(" (and an unknown number more)");
            }
        }
        s
    }

    /// Warnings about what seeding missed, one per line (without a
    /// `warning: ` prefix).
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.unreached.iter().map(Unreached::describe).collect();
        if self.unrecorded > 0 {
            out.push(format!(
                "{} existing connections were tracked without a seeding record (the socket walk \
                 failed part way); they show PID 0 and direction unknown",
                self.unrecorded
            ));
        }
        if let Some(e) = &self.owner_scan_error {
            out.push(format!(
                "the owners of existing connections could not be looked up ({e}); they show PID 0"
            ));
        }
        if self.unreadable_processes > 0 {
            out.push(format!(
                "the open descriptors of {} processes could not be read (netlens needs \
                 CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for other users' processes); existing \
                 connections only they hold show PID 0",
                self.unreadable_processes
            ));
        }
        out
    }
}

/// A listening socket: (netns, local port, local address).
type Listener = (u32, u16, IpAddr);

/// Seeds the connections of every network namespace into the collector's
/// map and their owners into `table`. `filter_loopback` is the collector's
/// setting, applied as well to the connections counted in namespaces that
/// cannot be entered.
pub fn seed(
    collector: &mut Collector,
    table: &mut ConnTable,
    filter_loopback: bool,
) -> Result<SeedReport> {
    let link = collector.seed_link()?;
    let link_fd = link.as_fd().as_raw_fd();
    let mut report = SeedReport::default();
    let mut records = Vec::new();
    // The namespace of this thread, walked without setns (which would need
    // CAP_SYS_ADMIN even to enter the namespace the thread is in).
    let own = procfs::current_netns_inode().ok();
    for ns in procfs::network_namespaces() {
        let walked = if own == Some(ns.inode) {
            walk_tcp_sockets(link_fd)
        } else {
            netns::with_netns(&ns.path, || walk_tcp_sockets(link_fd))
        };
        match walked {
            Ok(mut r) => {
                report.namespaces += 1;
                records.append(&mut r);
            }
            Err(e) => {
                let counted = ns
                    .proc_net
                    .as_deref()
                    .map(|dir| procfs::connected_tcp_sockets(dir, filter_loopback));
                report.unreached.push(Unreached {
                    inode: ns.inode,
                    path: ns.path.clone(),
                    error: format!("{e:#}"),
                    lacks_sys_admin: netns::lacks_sys_admin(&e),
                    connections: counted.as_ref().and_then(|c| c.as_ref().ok().copied()),
                    count_error: counted.and_then(|c| c.err().map(|e| format!("{e:#}"))),
                });
            }
        }
    }
    let owners = match procfs::scan_socket_owners() {
        Ok(scan) => {
            report.unreadable_processes = scan.unreadable;
            scan.owners
        }
        Err(e) => {
            report.owner_scan_error = Some(format!("{e:#}"));
            HashMap::new()
        }
    };
    let seeded = owners_of_seeded(&records, &owners, procfs::comm_of);
    report.connections = seeded.len();
    let recorded: HashSet<u64> = seeded.iter().map(|(sk, _)| *sk).collect();
    report.unrecorded = unrecorded(collector.connections()?, |sk| recorded.contains(&sk));
    for (sk, owner) in seeded {
        table.add_seed(sk, owner);
    }
    Ok(report)
}

/// How many of `slots` the seeding walk inserted (CONN_SEEDED) without a
/// record for them (`recorded` says which sockets have one).
fn unrecorded(slots: &[types::conn_value], recorded: impl Fn(u64) -> bool) -> usize {
    slots
        .iter()
        .filter(|v| v.flags & CONN_SEEDED != 0 && !recorded(v.sk))
        .count()
}

/// Decides owner and direction of every connection the walk put into the
/// map, once per socket (should the kernel have shown one twice). The owner
/// is the lowest PID holding the socket open (the parent, when a socket is
/// inherited); the direction is inbound when a listener of the same
/// namespace has the local port.
pub fn owners_of_seeded(
    records: &[types::seed_record],
    owners: &HashMap<u64, Vec<u32>>,
    comm_of: impl Fn(u32) -> Option<String>,
) -> Vec<(u64, SeedOwner)> {
    let listeners: HashSet<Listener> = records
        .iter()
        .filter(|r| r.is_listener != 0)
        .map(|r| {
            let t = decode::tuple(&r.conn);
            (r.conn.netns, t.local_port, t.local_addr)
        })
        .collect();
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| r.is_listener == 0 && r.tracked != 0 && seen.insert(r.sk))
        .map(|r| {
            let t = decode::tuple(&r.conn);
            let inbound = listeners.iter().any(|&(ns, port, addr)| {
                ns == r.conn.netns
                    && port == t.local_port
                    && (addr == t.local_addr || addr.is_unspecified())
            });
            let pid = owners
                .get(&r.ino)
                .and_then(|pids| pids.iter().min().copied())
                .unwrap_or(0);
            let owner = SeedOwner {
                pid,
                comm: if pid == 0 {
                    String::new()
                } else {
                    comm_of(pid).unwrap_or_default()
                },
                direction: if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
            };
            (r.sk, owner)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::decode::AF_INET;

    fn record(sk: u64, ino: u64, listener: bool, local: [u8; 4], port: u16) -> types::seed_record {
        let mut r = types::seed_record {
            sk,
            ino,
            is_listener: listener as u32,
            tracked: (!listener) as u32,
            ..Default::default()
        };
        r.conn.family = AF_INET;
        r.conn.netns = 7;
        r.conn.sport = port;
        r.conn.dport = 50000;
        r.conn.saddr[..4].copy_from_slice(&local);
        r
    }

    #[test]
    fn direction_from_listeners_and_owner_from_lowest_pid() {
        let records = vec![
            record(1, 0, true, [0, 0, 0, 0], 22),         // listener on *:22
            record(2, 100, false, [192, 0, 2, 1], 22),    // accepted ssh
            record(3, 101, false, [192, 0, 2, 1], 40000), // outgoing
            record(4, 102, false, [192, 0, 2, 1], 40001), // nobody holds it
        ];
        let owners = HashMap::from([(100, vec![900, 12]), (101, vec![33])]);
        let got: HashMap<u64, SeedOwner> =
            owners_of_seeded(&records, &owners, |pid| Some(format!("p{pid}")))
                .into_iter()
                .collect();
        assert_eq!(got.len(), 3, "listeners are not connections");
        assert_eq!(got[&2].direction, Direction::Inbound);
        assert_eq!((got[&2].pid, got[&2].comm.as_ref()), (12, "p12"));
        assert_eq!(got[&3].direction, Direction::Outbound);
        assert_eq!(got[&3].pid, 33);
        assert_eq!((got[&4].pid, got[&4].comm.as_ref()), (0, ""));
    }

    #[test]
    fn a_socket_shown_twice_is_seeded_once() {
        let records = vec![
            record(2, 100, false, [192, 0, 2, 1], 40000),
            record(2, 100, false, [192, 0, 2, 1], 40000),
            record(3, 101, false, [192, 0, 2, 1], 40001),
        ];
        let got = owners_of_seeded(&records, &HashMap::new(), |_| None);
        let sks: Vec<u64> = got.iter().map(|(sk, _)| *sk).collect();
        assert_eq!(sks, [2, 3]);
    }

    #[test]
    fn seeded_slots_without_a_record_are_counted() {
        let slot = |sk: u64, flags: u16| types::conn_value {
            sk,
            flags,
            ..Default::default()
        };
        let slots = [
            slot(1, CONN_SEEDED),
            slot(2, CONN_SEEDED | decode::CONN_OWNED),
            slot(3, decode::CONN_ACTIVE), // the hooks' own: never a seed
        ];
        assert_eq!(unrecorded(&slots, |sk| sk == 1), 1);
        assert_eq!(unrecorded(&slots, |_| false), 2);
        assert_eq!(unrecorded(&slots, |_| true), 0);
    }

    fn unreached(inode: u32, connections: Option<u64>) -> Unreached {
        Unreached {
            inode,
            path: PathBuf::from(format!("/run/netns/t{inode}")),
            error: "setns(CLONE_NEWNET) into /run/netns/t failed: Operation not permitted \
                    (os error 1)"
                .into(),
            lacks_sys_admin: true,
            connections,
            count_error: None,
        }
    }

    #[test]
    fn unreached_namespaces_are_counted_and_named() {
        let mut report = SeedReport {
            namespaces: 1,
            connections: 3,
            ..SeedReport::default()
        };
        assert_eq!(
            report.summary(),
            "3 existing connections found in 1 network namespaces"
        );
        assert!(report.warnings().is_empty());
        report.unreached = vec![unreached(11, Some(2)), unreached(12, Some(0))];
        assert_eq!(report.unreached_connections(), 2);
        assert_eq!(
            report.summary(),
            "3 existing connections found in 1 network namespaces; 2 network namespaces not \
             entered, 2 existing connections there not seeded"
        );
        let warnings = report.warnings();
        assert_eq!(warnings.len(), 2);
        assert_eq!(
            warnings[0],
            "network namespace 11 (/run/netns/t11) not entered: setns(CLONE_NEWNET) into \
             /run/netns/t failed: Operation not permitted (os error 1); its 2 existing \
             connections are not seeded and are not reported, not even when they close; netlens \
             lacks CAP_SYS_ADMIN, which entering a network namespace other than its own needs"
        );
        // A namespace without a process inside: how many is unknown.
        report.unreached.push(unreached(13, None));
        assert_eq!(report.unreached_connections(), 2);
        assert!(report.summary().ends_with(" (and an unknown number more)"));
        let w = &report.warnings()[2];
        assert!(
            w.contains("its existing connections are not seeded (how many is unknown: no process"),
            "{w}"
        );
        // Not a missing capability: no word about CAP_SYS_ADMIN.
        let mut other = unreached(14, Some(1));
        other.lacks_sys_admin = false;
        other.error = "creating a TCP socket iterator: No such device".into();
        assert!(!other.describe().contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn owner_lookup_shortfalls_are_warned_about() {
        let report = SeedReport {
            unrecorded: 2,
            unreadable_processes: 5,
            ..SeedReport::default()
        };
        let w = report.warnings();
        assert_eq!(w.len(), 2);
        assert!(w[0].starts_with("2 existing connections were tracked without"));
        assert!(
            w[1].contains("of 5 processes could not be read"),
            "{}",
            w[1]
        );
    }

    #[test]
    fn untracked_records_are_skipped() {
        let mut r = record(5, 1, false, [192, 0, 2, 1], 1);
        r.tracked = 0; // already tracked by the hooks, or the map was full
        assert!(owners_of_seeded(&[r], &HashMap::new(), |_| None).is_empty());
    }
}
