//! The user-space view of tracked connections: turns BPF records into model
//! values, remembers what only user space knows (owners of connections that
//! existed before netlens started, the last printed counters for deltas) and
//! applies the user's filters. Pure logic, no BPF calls.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::decode::{self, CONN_ACTIVE, CONN_ESTABLISHED, CONN_OWNED, CONN_PASSIVE, CONN_SEEDED};
use super::decode::{EV_ACCEPT, EV_CLOSE, EV_CONNECT, EV_CONNECT_FAILED};
use super::skel::types;
use crate::model::{
    ConnEvent, ConnInfo, ConnRow, Direction, EventKind, FailReason, IdMap, Metrics, UnixNanos,
};
use crate::sys::cgroup::Resolver;

/// Converts the BPF side's CLOCK_BOOTTIME stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - boottime, in nanoseconds, taken once at start.
    offset_ns: i128,
}

impl Clock {
    pub fn new(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// Reads both clocks now.
    pub fn system() -> Clock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        Clock::new(real - boot)
    }

    pub fn to_unix(&self, boot_ns: u64) -> UnixNanos {
        (boot_ns as i128 + self.offset_ns).max(0) as UnixNanos
    }

    pub fn now_unix(&self) -> UnixNanos {
        clock_ns(libc::CLOCK_REALTIME).max(0) as UnixNanos
    }
}

pub(crate) fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; both clock ids exist on every
    // kernel netlens runs on (CLOCK_BOOTTIME since 2.6.39).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// What user space found out about a connection that existed before
/// netlens started (the BPF side never saw its connect or accept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedOwner {
    pub pid: u32,
    pub comm: String,
    pub direction: Direction,
}

/// Which connections the user wants to see. Empty lists match everything.
#[derive(Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    /// Matches the local or the remote port.
    pub ports: Vec<u16>,
    pub netns: Vec<u32>,
    /// Container ID prefixes (`<runtime>://` optional) the owner's
    /// container must start with.
    pub containers: Vec<String>,
    /// Cgroup paths the owner's cgroup must be, or be below.
    pub cgroups: Vec<String>,
    /// Whether any connection passed so far, so that a filter matching
    /// nothing is reported instead of passing silently.
    matched: AtomicBool,
}

impl Clone for Filter {
    fn clone(&self) -> Filter {
        Filter {
            pids: self.pids.clone(),
            ports: self.ports.clone(),
            netns: self.netns.clone(),
            containers: self.containers.clone(),
            cgroups: self.cgroups.clone(),
            matched: AtomicBool::new(self.matched.load(Ordering::Relaxed)),
        }
    }
}

impl Filter {
    pub fn new(pids: Vec<u32>, ports: Vec<u16>, netns: Vec<u32>) -> Filter {
        Filter {
            pids,
            ports,
            netns,
            containers: Vec::new(),
            cgroups: Vec::new(),
            matched: AtomicBool::new(false),
        }
    }

    /// Also only connections of these containers (ID prefixes, with or
    /// without `<runtime>://`) and of these cgroups (paths, their
    /// subtrees included).
    pub fn with_owners(mut self, containers: Vec<String>, cgroups: Vec<String>) -> Filter {
        self.containers = containers;
        self.cgroups = cgroups;
        self
    }

    fn owner_matches(&self, c: &ConnInfo) -> bool {
        let containers_ok = self.containers.is_empty()
            || c.container().is_some_and(|k| {
                self.containers.iter().any(|want| {
                    let id = match want.split_once("://") {
                        Some((runtime, id)) if runtime == k.runtime => id,
                        Some(_) => return false,
                        None => want.as_str(),
                    };
                    k.id.starts_with(id)
                })
            });
        let path = c.cgroup.as_ref().and_then(|cg| cg.path.as_deref());
        let cgroups_ok = self.cgroups.is_empty()
            || path.is_some_and(|p| self.cgroups.iter().any(|want| is_below(p, want)));
        containers_ok && cgroups_ok
    }

    pub fn matches(&self, c: &ConnInfo) -> bool {
        let yes = (self.pids.is_empty() || self.pids.contains(&c.pid))
            && (self.ports.is_empty()
                || self.ports.contains(&c.tuple.local_port)
                || self.ports.contains(&c.tuple.remote_port))
            && (self.netns.is_empty() || self.netns.contains(&c.netns))
            && self.owner_matches(c);
        if yes && !self.matched.load(Ordering::Relaxed) {
            self.matched.store(true, Ordering::Relaxed);
        }
        yes
    }

    /// Whether the user gave any filter at all.
    pub fn is_set(&self) -> bool {
        !(self.pids.is_empty()
            && self.ports.is_empty()
            && self.netns.is_empty()
            && self.containers.is_empty()
            && self.cgroups.is_empty())
    }

    /// Whether any connection or event passed the filter so far.
    pub fn matched_any(&self) -> bool {
        self.matched.load(Ordering::Relaxed)
    }

    /// The filter as command-line options, for messages: `--pid 7 --port 80`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.pids.iter().map(|p| format!("--pid {p}")));
        parts.extend(self.ports.iter().map(|p| format!("--port {p}")));
        parts.extend(self.netns.iter().map(|n| format!("--netns {n}")));
        parts.extend(self.containers.iter().map(|c| format!("--container {c}")));
        parts.extend(self.cgroups.iter().map(|c| format!("--cgroup {c}")));
        parts.join(" ")
    }
}

/// Whether cgroup `path` is `dir` or below it.
fn is_below(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What the table keeps per established connection between snapshots.
struct Tracked {
    /// Flags and PID the identity was built from: decoding addresses and
    /// names again is only needed when they change.
    flags: u16,
    pid: u32,
    cgroup_id: u64,
    info: ConnInfo,
    /// Counters as last printed (for incremental mode).
    printed: Option<Metrics>,
    /// The snapshot that last saw the connection in the map.
    seen: u64,
}

/// Process names as shared strings, for the few processes that own most
/// connections: at tens of thousands of events a second, decoding the name
/// and allocating a string for each event is a visible share of netlens's
/// CPU, while most events name a process seen just before.
#[derive(Default)]
struct CommCache {
    entries: Vec<([i8; 16], Arc<str>)>,
    /// The entry replaced next once the cache is full (round robin).
    next: usize,
}

impl CommCache {
    const SIZE: usize = 16;

    fn get(&mut self, raw: &[i8; 16]) -> Arc<str> {
        if let Some((_, s)) = self.entries.iter().find(|(r, _)| r == raw) {
            return Arc::clone(s);
        }
        let s: Arc<str> = decode::comm(raw).into();
        if self.entries.len() < Self::SIZE {
            self.entries.push((*raw, Arc::clone(&s)));
        } else {
            self.entries[self.next] = (*raw, Arc::clone(&s));
            self.next = (self.next + 1) % Self::SIZE;
        }
        s
    }
}

/// Who a snapshot's rows are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowsFor {
    /// The printed outputs, every `-t`: deltas since the previous print
    /// with `-i`.
    Print { incremental: bool },
    /// The live outputs (Prometheus, the web UI), every second: totals.
    Live,
}

#[derive(Default)]
pub struct ConnTable {
    /// Owners of seeded connections, by kernel socket address.
    seeds: HashMap<u64, SeedOwner>,
    comms: CommCache,
    /// Established connections as of the last snapshot, by connection id.
    tracked: IdMap<u64, Tracked>,
    snapshots: u64,
    cgroups: Resolver,
}

/// Identity and owner of a connection as the BPF side recorded it,
/// completed with what user space knows about seeded ones.
fn build_info(
    seeds: &HashMap<u64, SeedOwner>,
    comms: &mut CommCache,
    cgroups: &mut Resolver,
    sk: u64,
    v: &types::conn_value,
    clock: &Clock,
) -> ConnInfo {
    // Only seeded records can have an entry: the others skip the lookup.
    let seed = if v.flags & CONN_SEEDED != 0 {
        seeds.get(&sk)
    } else {
        None
    };
    let direction = if v.flags & CONN_ACTIVE != 0 {
        Direction::Outbound
    } else if v.flags & CONN_PASSIVE != 0 {
        Direction::Inbound
    } else {
        seed.map_or(Direction::Unknown, |s| s.direction)
    };
    let (pid, comm) = if v.flags & CONN_OWNED != 0 {
        (v.pid, comms.get(&v.comm))
    } else if let Some(s) = seed {
        (s.pid, s.comm.as_str().into())
    } else {
        (0, "".into())
    };
    ConnInfo {
        id: v.id,
        tuple: decode::tuple(v),
        pid,
        comm,
        netns: v.netns,
        direction,
        start: (v.flags & CONN_SEEDED == 0).then(|| clock.to_unix(v.start_ns)),
        connect_ns: (v.connect_ns != 0).then_some(v.connect_ns),
        cgroup: cgroups.resolve(v.cgroup_id),
    }
}

impl ConnTable {
    pub fn new() -> ConnTable {
        ConnTable::default()
    }

    /// A table that names owners' cgroups through `cgroups`.
    pub fn with_cgroups(cgroups: Resolver) -> ConnTable {
        ConnTable {
            cgroups,
            ..ConnTable::default()
        }
    }

    /// The cgroup resolver's last error (a missing privilege), if any.
    pub fn cgroup_error(&self) -> Option<&std::io::Error> {
        self.cgroups.error.as_ref()
    }

    pub fn add_seed(&mut self, sk: u64, owner: SeedOwner) {
        self.seeds.insert(sk, owner);
    }

    pub fn seed_count(&self) -> usize {
        self.seeds.len()
    }

    /// Identity and owner of a connection as the BPF side recorded it,
    /// completed with what user space knows.
    pub fn conn_info(&mut self, sk: u64, v: &types::conn_value, clock: &Clock) -> ConnInfo {
        build_info(
            &self.seeds,
            &mut self.comms,
            &mut self.cgroups,
            sk,
            v,
            clock,
        )
    }

    /// Turns one ring-buffer record into an event; forgets what belonged to
    /// a connection once it closed or failed.
    pub fn event(&mut self, e: &types::conn_event, clock: &Clock) -> Option<ConnEvent> {
        let kind = match e.r#type {
            EV_CONNECT => EventKind::Connect,
            EV_ACCEPT => EventKind::Accept,
            EV_CLOSE => EventKind::Close,
            EV_CONNECT_FAILED => EventKind::ConnectFailed(FailReason::from_errno(e.err)),
            _ => return None,
        };
        let conn = self.conn_info(e.sk, &e.conn, clock);
        let metrics = (kind == EventKind::Close).then(|| decode::metrics(&e.conn));
        if matches!(kind, EventKind::Close | EventKind::ConnectFailed(_)) {
            // Only seeded connections have an entry (see build_info).
            if e.conn.flags & CONN_SEEDED != 0 {
                self.seeds.remove(&e.sk);
            }
            self.tracked.remove(&e.conn.id);
        }
        Some(ConnEvent {
            kind,
            timestamp: clock.to_unix(e.ts_ns),
            conn,
            metrics,
        })
    }

    /// Rows for the established connections among `entries` (the tracked
    /// records, each naming its socket in `sk`) that pass `filter`, oldest
    /// first. For [`RowsFor::Print`], counters are deltas since the previous
    /// printed snapshot when `incremental` is set; [`RowsFor::Live`] rows
    /// always carry totals and leave the printed baseline alone, so a live
    /// output refreshed between two prints never changes their deltas.
    pub fn rows(
        &mut self,
        entries: &[types::conn_value],
        clock: &Clock,
        filter: &Filter,
        purpose: RowsFor,
    ) -> Vec<ConnRow> {
        self.snapshots += 1;
        let now = self.snapshots;
        let mut rows = Vec::with_capacity(self.tracked.len() + 16);
        for v in entries {
            if v.flags & CONN_ESTABLISHED == 0 {
                continue;
            }
            let sk = v.sk;
            let t = match self.tracked.entry(v.id) {
                Entry::Occupied(o) => {
                    let t = o.into_mut();
                    if t.flags != v.flags || t.pid != v.pid || t.cgroup_id != v.cgroup_id {
                        t.info = build_info(
                            &self.seeds,
                            &mut self.comms,
                            &mut self.cgroups,
                            sk,
                            v,
                            clock,
                        );
                        t.flags = v.flags;
                        t.pid = v.pid;
                        t.cgroup_id = v.cgroup_id;
                    }
                    t
                }
                Entry::Vacant(e) => e.insert(Tracked {
                    flags: v.flags,
                    pid: v.pid,
                    cgroup_id: v.cgroup_id,
                    info: build_info(
                        &self.seeds,
                        &mut self.comms,
                        &mut self.cgroups,
                        sk,
                        v,
                        clock,
                    ),
                    printed: None,
                    seen: now,
                }),
            };
            t.seen = now;
            if !filter.matches(&t.info) {
                continue;
            }
            let total = decode::metrics(v);
            let metrics = match purpose {
                RowsFor::Live => total,
                RowsFor::Print { incremental } => {
                    let shown = match (incremental, &t.printed) {
                        (true, Some(prev)) => total.delta_since(prev),
                        _ => total,
                    };
                    t.printed = Some(total);
                    shown
                }
            };
            rows.push(ConnRow {
                conn: t.info.clone(),
                metrics,
            });
        }
        // Connections that left the map are forgotten here too, so the table
        // cannot grow when a close event was lost.
        self.tracked.retain(|_, t| t.seen == now);
        // Ids are unique, so an unstable sort gives one order. Seeded
        // connections (no start) come first: they are the oldest.
        rows.sort_unstable_by_key(|r| (r.conn.start, r.conn.id));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::decode::AF_INET;

    const ESTABLISHED: u16 = CONN_ESTABLISHED;
    const PRINT_DELTAS: RowsFor = RowsFor::Print { incremental: true };
    const PRINT_TOTALS: RowsFor = RowsFor::Print { incremental: false };

    fn value(id: u64, flags: u16, pid: u32, sport: u16, bytes_sent: u64) -> types::conn_value {
        let mut v = types::conn_value {
            id,
            sk: 0xffff_0000 + id,
            start_ns: 1_000 * id,
            family: AF_INET,
            sport,
            dport: 80,
            flags,
            pid,
            netns: 4026531840,
            ..Default::default()
        };
        v.counters.bytes_sent = bytes_sent;
        v.counters.srtt_us = 42;
        v.saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        v.daddr[..4].copy_from_slice(&[192, 0, 2, 2]);
        v.comm[0] = b'x' as i8;
        v
    }

    #[test]
    fn clock_converts_boot_time() {
        let c = Clock::new(1_000_000);
        assert_eq!(c.to_unix(5), 1_000_005);
        assert_eq!(Clock::new(-10).to_unix(5), 0);
    }

    #[test]
    fn owner_comes_from_bpf_or_from_seeding() {
        let mut t = ConnTable::new();
        let clock = Clock::new(0);
        let owned = value(1, ESTABLISHED | CONN_ACTIVE | CONN_OWNED, 77, 1000, 0);
        let info = t.conn_info(0xa, &owned, &clock);
        assert_eq!((info.pid, info.comm.as_ref()), (77, "x"));
        assert_eq!(info.direction, Direction::Outbound);

        let unaccepted = value(2, ESTABLISHED | CONN_PASSIVE, 0, 80, 0);
        let info = t.conn_info(0xb, &unaccepted, &clock);
        assert_eq!((info.pid, info.comm.as_ref()), (0, ""));
        assert_eq!(info.direction, Direction::Inbound);

        let seeded = value(3, ESTABLISHED | CONN_SEEDED, 0, 22, 0);
        assert_eq!(
            t.conn_info(0xc, &seeded, &clock).direction,
            Direction::Unknown
        );
        t.add_seed(
            0xc,
            SeedOwner {
                pid: 500,
                comm: "sshd".into(),
                direction: Direction::Inbound,
            },
        );
        let info = t.conn_info(0xc, &seeded, &clock);
        assert_eq!((info.pid, info.comm.as_ref()), (500, "sshd"));
        assert_eq!(info.direction, Direction::Inbound);
        // Established before netlens started: when is unknown.
        assert_eq!(info.start, None);
        assert_eq!(t.conn_info(0xa, &owned, &clock).start, Some(owned.start_ns));
        // Once the BPF side saw the owner do I/O, its word wins.
        let mut seen = seeded;
        seen.flags |= CONN_OWNED;
        seen.pid = 501;
        assert_eq!(t.conn_info(0xc, &seen, &clock).pid, 501);
    }

    #[test]
    fn rows_skip_pending_and_filtered_and_compute_deltas() {
        let mut t = ConnTable::new();
        let clock = Clock::new(0);
        let flags = ESTABLISHED | CONN_ACTIVE | CONN_OWNED;
        let mut entries = [
            value(2, flags, 10, 1001, 100),
            value(1, flags, 11, 1002, 50),
            value(3, CONN_ACTIVE | CONN_OWNED, 10, 1003, 0), // SYN_SENT
        ];
        let rows = t.rows(&entries, &clock, &Filter::default(), PRINT_DELTAS);
        // Oldest first; the pending connect is not a row.
        assert_eq!(
            rows.iter().map(|r| r.conn.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // First print of a connection shows its totals.
        assert_eq!(rows[1].metrics.bytes_sent, 100);

        entries[0].counters.bytes_sent = 160;
        let only_pid_10 = Filter::new(vec![10], vec![], vec![]);
        let rows = t.rows(&entries, &clock, &only_pid_10, PRINT_DELTAS);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].metrics.bytes_sent, 60);
        assert_eq!(rows[0].metrics.rtt_us, 42);

        let totals = t.rows(&entries, &clock, &Filter::default(), PRINT_TOTALS);
        assert_eq!(totals[1].metrics.bytes_sent, 160);
    }

    #[test]
    fn live_rows_are_totals_and_leave_the_printed_deltas_alone() {
        let mut t = ConnTable::new();
        let clock = Clock::new(0);
        let flags = ESTABLISHED | CONN_ACTIVE | CONN_OWNED;
        let mut v = value(5, flags, 10, 1001, 100);
        let printed = t.rows(&[v], &clock, &Filter::default(), PRINT_DELTAS);
        assert_eq!(printed[0].metrics.bytes_sent, 100);
        // Two live refreshes between prints: totals each time.
        for sent in [130, 170] {
            v.counters.bytes_sent = sent;
            let live = t.rows(&[v], &clock, &Filter::default(), RowsFor::Live);
            assert_eq!(live[0].metrics.bytes_sent, sent);
        }
        // The next print's delta is since the last print, not the last
        // live refresh.
        v.counters.bytes_sent = 200;
        let printed = t.rows(&[v], &clock, &Filter::default(), PRINT_DELTAS);
        assert_eq!(printed[0].metrics.bytes_sent, 100);
        // A connection first seen by a live refresh prints its totals.
        let w = value(6, flags, 10, 1002, 40);
        t.rows(&[v, w], &clock, &Filter::default(), RowsFor::Live);
        let printed = t.rows(&[v, w], &clock, &Filter::default(), PRINT_DELTAS);
        assert_eq!(
            printed
                .iter()
                .map(|r| r.metrics.bytes_sent)
                .collect::<Vec<_>>(),
            vec![0, 40]
        );
    }

    #[test]
    fn identity_follows_a_late_owner_and_gone_connections_are_forgotten() {
        let mut t = ConnTable::new();
        let clock = Clock::new(0);
        let mut v = value(7, ESTABLISHED | CONN_PASSIVE, 0, 80, 10);
        let rows = t.rows(&[v], &clock, &Filter::default(), PRINT_DELTAS);
        assert_eq!(rows[0].conn.pid, 0);
        // accept() seen: owner known now; the counters stay deltas.
        v.flags |= CONN_OWNED;
        v.pid = 99;
        v.counters.bytes_sent = 25;
        let rows = t.rows(&[v], &clock, &Filter::default(), PRINT_DELTAS);
        assert_eq!((rows[0].conn.pid, rows[0].conn.comm.as_ref()), (99, "x"));
        assert_eq!(rows[0].metrics.bytes_sent, 15);
        // Gone from the map: forgotten, so a later entry with that id starts over.
        assert!(t
            .rows(&[], &clock, &Filter::default(), PRINT_DELTAS)
            .is_empty());
        let rows = t.rows(&[v], &clock, &Filter::default(), PRINT_DELTAS);
        assert_eq!(rows[0].metrics.bytes_sent, 25);
    }

    #[test]
    fn comm_cache_gives_each_name_also_after_evictions() {
        let mut cache = CommCache::default();
        let raw = |i: usize| {
            let mut r = [0i8; 16];
            for (j, b) in format!("proc{i}").bytes().enumerate() {
                r[j] = b as i8;
            }
            r
        };
        // Twice the cache size, twice over: hits, misses and replacements.
        for _ in 0..2 {
            for i in 0..2 * CommCache::SIZE {
                assert_eq!(&*cache.get(&raw(i)), format!("proc{i}"));
                assert_eq!(&*cache.get(&raw(i)), format!("proc{i}"));
            }
        }
        assert_eq!(cache.entries.len(), CommCache::SIZE);
    }

    #[test]
    fn filter_matches_ports_on_either_side_and_netns() {
        let clock = Clock::new(0);
        let mut t = ConnTable::new();
        let info = t.conn_info(1, &value(1, ESTABLISHED, 5, 40000, 0), &clock);
        let by_remote = Filter::new(vec![], vec![80], vec![]);
        assert!(by_remote.is_set() && !by_remote.matched_any());
        assert!(by_remote.matches(&info));
        assert!(by_remote.matched_any());
        let other_ns = Filter::new(vec![], vec![], vec![1]);
        assert!(!other_ns.matches(&info));
        assert!(!other_ns.matched_any(), "a miss is not a match");
        assert!(!Filter::default().is_set());
        assert_eq!(
            Filter::new(vec![7], vec![80, 443], vec![9]).describe(),
            "--pid 7 --port 80 --port 443 --netns 9"
        );
    }

    #[test]
    fn filter_by_container_and_cgroup() {
        use crate::model::{Cgroup, Container};
        let clock = Clock::new(0);
        let mut t = ConnTable::new();
        let host = t.conn_info(1, &value(1, ESTABLISHED, 5, 40000, 0), &clock);
        let mut boxed = host.clone();
        let id = "0123456789abcdef".repeat(4);
        boxed.cgroup = Some(Arc::new(Cgroup {
            id: 9,
            path: Some(format!("/libpod_parent/libpod-{id}")),
            container: Some(Container {
                runtime: "podman",
                id: id.clone(),
            }),
            pod_uid: None,
        }));
        let only = |containers: &[&str], cgroups: &[&str]| {
            Filter::default().with_owners(
                containers.iter().map(|s| s.to_string()).collect(),
                cgroups.iter().map(|s| s.to_string()).collect(),
            )
        };
        for f in [
            only(&["0123456789ab"], &[]),
            only(&[&format!("podman://{id}")], &[]),
            only(&["fff", "0123"], &[]),
            only(&[], &["/libpod_parent"]),
            only(&[], &["/libpod_parent/"]),
            only(&[], &[&format!("/libpod_parent/libpod-{id}")]),
            only(&[], &["/"]),
            only(&["0123"], &["/libpod_parent"]),
        ] {
            assert!(f.is_set());
            assert!(f.matches(&boxed), "{}", f.describe());
            assert!(!f.matches(&host), "no cgroup: {}", f.describe());
        }
        for f in [
            only(&["123"], &[]),
            only(&["docker://0123"], &[]),
            only(&[], &["/libpod"]),
            only(&[], &["/system.slice"]),
            only(&["0123"], &["/system.slice"]),
        ] {
            assert!(!f.matches(&boxed), "{}", f.describe());
        }
        assert_eq!(
            only(&["abc"], &["/a"]).describe(),
            "--container abc --cgroup /a"
        );
    }

    #[test]
    fn close_event_carries_final_metrics_and_forgets_seed() {
        let mut t = ConnTable::new();
        let clock = Clock::new(0);
        t.add_seed(
            9,
            SeedOwner {
                pid: 1,
                comm: "a".into(),
                direction: Direction::Outbound,
            },
        );
        let e = types::conn_event {
            sk: 9,
            ts_ns: 5,
            r#type: EV_CLOSE,
            err: 0,
            conn: value(4, ESTABLISHED | CONN_SEEDED, 0, 1, 1234),
        };
        let ev = t.event(&e, &clock).unwrap();
        assert_eq!(ev.kind, EventKind::Close);
        assert_eq!(ev.metrics.unwrap().bytes_sent, 1234);
        assert_eq!(ev.conn.pid, 1);
        assert_eq!(t.seed_count(), 0);

        let failed = types::conn_event {
            r#type: EV_CONNECT_FAILED,
            err: libc::ECONNREFUSED,
            ..e
        };
        let ev = t.event(&failed, &clock).unwrap();
        assert_eq!(ev.kind, EventKind::ConnectFailed(FailReason::Refused));
        assert!(ev.metrics.is_none());
    }
}
