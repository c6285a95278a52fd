//! Finding the connections that already exist when netlens starts, in every
//! network namespace: a BPF TCP iterator walks each namespace and puts the
//! connected sockets into the connection map; /proc tells who owns them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use anyhow::Result;

use std::os::fd::{AsFd, AsRawFd};

use super::collector::{walk_tcp_sockets, Collector};
use super::decode::{self, CONN_SEEDED};
use super::skel::types;
use super::table::{ConnTable, SeedOwner};
use crate::model::Direction;
use crate::sys::{netns, procfs};

#[derive(Debug, Default)]
pub struct SeedReport {
    pub namespaces: usize,
    pub connections: usize,
    /// Connections the walk put into the map whose record never reached
    /// user space (owner and direction unknown); 0 unless a walk failed
    /// part way.
    pub unrecorded: usize,
    /// Namespaces that could not be entered, with the reason.
    pub failed_namespaces: Vec<String>,
}

/// A listening socket: (netns, local port, local address).
type Listener = (u32, u16, IpAddr);

pub fn seed(collector: &mut Collector, table: &mut ConnTable) -> Result<SeedReport> {
    let link = collector.seed_link()?;
    let link_fd = link.as_fd().as_raw_fd();
    let mut report = SeedReport::default();
    let mut records = Vec::new();
    for ns in procfs::network_namespaces() {
        match netns::with_netns(&ns.path, || walk_tcp_sockets(link_fd)) {
            Ok(mut r) => {
                report.namespaces += 1;
                records.append(&mut r);
            }
            Err(e) => report.failed_namespaces.push(format!(
                "{} ({}): {e:#}",
                ns.inode,
                ns.path.display()
            )),
        }
    }
    let owners = procfs::socket_inode_owners();
    let seeded = owners_of_seeded(&records, &owners, procfs::comm_of);
    report.connections = seeded.len();
    let recorded: HashSet<u64> = seeded.iter().map(|(sk, _)| *sk).collect();
    report.unrecorded = unrecorded(collector.connections(), |sk| recorded.contains(&sk));
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

    #[test]
    fn untracked_records_are_skipped() {
        let mut r = record(5, 1, false, [192, 0, 2, 1], 1);
        r.tracked = 0; // already tracked by the hooks, or the map was full
        assert!(owners_of_seeded(&[r], &HashMap::new(), |_| None).is_empty());
    }
}
