//! The data model shared by collection and every output.
//!
//! The collector (BPF + maps) produces [`ConnEvent`]s for lifecycle changes and a
//! [`Snapshot`] on every tick; the outputs (log, table, JSON, ...) only ever see
//! these types, never BPF structures.

pub mod cost;
pub mod readiness;
pub mod sink;

pub use readiness::Readiness;
pub use sink::Sink;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// Wall-clock time as nanoseconds since the Unix epoch.
pub type UnixNanos = u64;

/// Who opened the connection, seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Active open: a local process called connect().
    Outbound,
    /// Passive open: a local listener accepted it.
    Inbound,
    /// Already established when netlens started; the opening was not seen.
    Unknown,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
            Direction::Unknown => "unknown",
        }
    }

    /// The arrow NetTracer users know: `->` active, `<-` passive, `--` unknown.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::Outbound => "->",
            Direction::Inbound => "<-",
            Direction::Unknown => "--",
        }
    }
}

/// The addresses of one TCP connection. IPv4-mapped IPv6 addresses are
/// already converted to IPv4 here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
}

impl Tuple {
    /// 4 or 6, from the addresses as shown (mapped addresses count as 4).
    pub fn family(&self) -> u8 {
        match self.local_addr {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }

    pub fn is_loopback(&self) -> bool {
        self.local_addr.is_loopback() || self.remote_addr.is_loopback()
    }
}

/// Formats an address with its port, bracketing IPv6 (`[2001:db8::1]:80`).
pub fn fmt_endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A container found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    /// As Kubernetes names it in `containerID` and kube-state-metrics in
    /// `container_id`: `docker`, `containerd`, `cri-o`; `podman` for
    /// podman's (Kubernetes never runs those).
    pub runtime: &'static str,
    /// The 64 hex digits of its ID.
    pub id: String,
}

impl Container {
    /// `<runtime>://<id>`, kube-state-metrics's `container_id`.
    pub fn kube_id(&self) -> String {
        format!("{}://{}", self.runtime, self.id)
    }

    /// The first 12 digits, as `docker ps` and `podman ps` show an ID.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// The cgroup of a connection's owner and what its path says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cgroup {
    /// The kernel's id of the cgroup (its directory's inode number).
    pub id: u64,
    /// Its path in the hierarchy netlens reads (`/` the root); `None` when
    /// the directory was not found (removed before netlens looked).
    pub path: Option<String>,
    pub container: Option<Container>,
    /// The Kubernetes pod's UID, from a `pod<UID>` component of the path.
    pub pod_uid: Option<String>,
}

/// Identity and ownership of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Unique for the lifetime of the connection (kernel socket address plus
    /// its start time, so a reused address never aliases an older connection).
    pub id: u64,
    pub tuple: Tuple,
    /// Thread-group id of the process that called connect() or accept();
    /// 0 when no process has accepted the connection (yet), or none was found.
    pub pid: u32,
    /// Shared, not copied, by every snapshot row of the connection.
    pub comm: Arc<str>,
    /// Inode number of the network namespace.
    pub netns: u32,
    pub direction: Direction,
    /// When the connection was established; `None` for a connection that
    /// already existed when netlens started (seeded): the kernel keeps no
    /// establishment time in its socket, so its age is unknown.
    pub start: Option<UnixNanos>,
    /// Outbound connections netlens saw from their SYN: nanoseconds from the
    /// SYN to the handshake's end (established) or to the failure.
    pub connect_ns: Option<u64>,
    /// The owner's cgroup, as the kernel saw it at connect or accept (or
    /// the refresh walk, for connections netlens did not see open); `None`
    /// without a cgroup hierarchy, or when not known yet. Shared by every
    /// connection of the cgroup.
    pub cgroup: Option<Arc<Cgroup>>,
}

impl ConnInfo {
    /// The owner's container, where its cgroup names one.
    pub fn container(&self) -> Option<&Container> {
        self.cgroup.as_ref()?.container.as_ref()
    }

    /// The kernel's id of the owner's cgroup; 0 when not known.
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup.as_ref().map_or(0, |cg| cg.id)
    }
}

/// Hashes connection ids (sequential u64s, optionally with a PID) cheaply:
/// SipHash is a visible share of a tick with tens of thousands of
/// connections, and ids are not attacker-controlled.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }

    fn write_u64(&mut self, v: u64) {
        // Odd multiplier: a bijection with well-mixed high bits.
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by connection id (or id and PID).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Per-connection counters, equal to the kernel's own (`TCP_INFO`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Payload bytes the peer acknowledged (SYN and FIN excluded).
    pub bytes_sent: u64,
    /// Payload bytes received in order (FIN excluded).
    pub bytes_received: u64,
    /// Segments sent (`tcpi_segs_out`).
    pub packets_sent: u64,
    /// Segments received (`tcpi_segs_in`).
    pub packets_received: u64,
    /// Retransmitted segments (`tcpi_total_retrans`).
    pub retransmits: u64,
    /// Smoothed RTT in microseconds (`tcpi_rtt`).
    pub rtt_us: u32,
    /// RTT variance in microseconds (`tcpi_rttvar`).
    pub rtt_var_us: u32,
}

impl Metrics {
    /// Counters as deltas since `prev`; RTT values stay as they are (they are
    /// gauges, not counters). Saturates rather than wrapping if a counter went
    /// backwards (it never should; a reused id would be the only cause).
    pub fn delta_since(&self, prev: &Metrics) -> Metrics {
        Metrics {
            bytes_sent: self.bytes_sent.saturating_sub(prev.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(prev.bytes_received),
            packets_sent: self.packets_sent.saturating_sub(prev.packets_sent),
            packets_received: self.packets_received.saturating_sub(prev.packets_received),
            retransmits: self.retransmits.saturating_sub(prev.retransmits),
            rtt_us: self.rtt_us,
            rtt_var_us: self.rtt_var_us,
        }
    }
}

/// Why an active open failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The peer answered with a reset (ECONNREFUSED).
    Refused,
    /// No answer in time (ETIMEDOUT).
    TimedOut,
    /// No route, or an ICMP host/network unreachable during the handshake
    /// (EHOSTUNREACH, ENETUNREACH).
    Unreachable,
    /// Reset or another error while the handshake was running.
    Reset,
    /// The socket was closed by its owner before the handshake finished.
    Aborted,
    /// Any other errno, as given.
    Other(i32),
}

impl FailReason {
    pub fn from_errno(errno: i32) -> FailReason {
        match errno {
            0 => FailReason::Aborted,
            libc::ECONNREFUSED => FailReason::Refused,
            libc::ETIMEDOUT => FailReason::TimedOut,
            libc::EHOSTUNREACH | libc::ENETUNREACH => FailReason::Unreachable,
            libc::ECONNRESET | libc::EPIPE => FailReason::Reset,
            other => FailReason::Other(other),
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Refused => f.write_str("refused"),
            FailReason::TimedOut => f.write_str("timed_out"),
            FailReason::Unreachable => f.write_str("unreachable"),
            FailReason::Reset => f.write_str("reset"),
            FailReason::Aborted => f.write_str("aborted"),
            FailReason::Other(e) => write!(f, "errno_{e}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Connect,
    Accept,
    Close,
    ConnectFailed(FailReason),
}

impl EventKind {
    /// The `type` value of the JSON schema and the word of the log line.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Accept => "accept",
            EventKind::Close => "close",
            EventKind::ConnectFailed(_) => "connect_failed",
        }
    }
}

/// One lifecycle event.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnEvent {
    pub kind: EventKind,
    pub timestamp: UnixNanos,
    pub conn: ConnInfo,
    /// Final counters; present on `Close` only.
    pub metrics: Option<Metrics>,
}

impl ConnEvent {
    /// The connect time an event reports: that of a `Connect` or
    /// `ConnectFailed` netlens saw from its SYN.
    pub fn connect_ns(&self) -> Option<u64> {
        match self.kind {
            EventKind::Connect | EventKind::ConnectFailed(_) => self.conn.connect_ns,
            EventKind::Accept | EventKind::Close => None,
        }
    }
}

/// One active connection as of a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    pub conn: ConnInfo,
    /// Totals, or deltas since the previous print in incremental mode.
    pub metrics: Metrics,
}

/// Everything that was lost or left out; always shown, never silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Events dropped because the ring buffer was full.
    pub events_lost: u64,
    /// Connections not tracked because the connection map was full.
    pub map_full: u64,
    /// Existing connections found at start that did not fit in the map.
    pub seed_map_full: u64,
    /// Existing connections at start in network namespaces netlens could
    /// not enter (entering one other than its own needs CAP_SYS_ADMIN),
    /// counted from `/proc/<pid>/net/tcp{,6}`: not seeded, so never
    /// reported. Set once, at start.
    pub seed_unreached: u64,
    /// Program runs the kernel skipped because the same program was already
    /// running on that CPU (interrupted by a softirq that hit the same
    /// tracepoint; for the classic accept tracepoints, any BPF tracing
    /// program), summed over the programs' `recursion_misses`. A skipped
    /// run can miss an event (even a close) or a counter update.
    pub runs_missed: u64,
}

impl Losses {
    pub fn any(&self) -> bool {
        *self != Losses::default()
    }
}

/// The periodic view of all active connections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub timestamp: UnixNanos,
    /// Sorted by connection start time, oldest first.
    pub conns: Vec<ConnRow>,
    /// True when `metrics` are deltas since the previous snapshot.
    pub incremental: bool,
    pub losses: Losses,
}

impl Snapshot {
    /// (active opens, passive opens) among the rows, for the summary line.
    pub fn open_counts(&self) -> (usize, usize) {
        let active = self
            .conns
            .iter()
            .filter(|r| r.conn.direction == Direction::Outbound)
            .count();
        let passive = self
            .conns
            .iter()
            .filter(|r| r.conn.direction == Direction::Inbound)
            .count();
        (active, passive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_subtracts_counters_and_keeps_gauges() {
        let prev = Metrics {
            bytes_sent: 100,
            bytes_received: 50,
            packets_sent: 3,
            packets_received: 2,
            retransmits: 1,
            rtt_us: 10,
            rtt_var_us: 5,
        };
        let now = Metrics {
            bytes_sent: 350,
            bytes_received: 60,
            packets_sent: 9,
            packets_received: 4,
            retransmits: 1,
            rtt_us: 20,
            rtt_var_us: 7,
        };
        let d = now.delta_since(&prev);
        assert_eq!(d.bytes_sent, 250);
        assert_eq!(d.bytes_received, 10);
        assert_eq!(d.packets_sent, 6);
        assert_eq!(d.packets_received, 2);
        assert_eq!(d.retransmits, 0);
        assert_eq!(d.rtt_us, 20);
        assert_eq!(d.rtt_var_us, 7);
        // A counter that went backwards saturates at zero instead of wrapping.
        assert_eq!(prev.delta_since(&now).bytes_sent, 0);
    }

    #[test]
    fn fail_reason_from_errno() {
        assert_eq!(
            FailReason::from_errno(libc::ECONNREFUSED),
            FailReason::Refused
        );
        assert_eq!(
            FailReason::from_errno(libc::ETIMEDOUT),
            FailReason::TimedOut
        );
        for unreachable in [libc::EHOSTUNREACH, libc::ENETUNREACH] {
            assert_eq!(FailReason::from_errno(unreachable), FailReason::Unreachable);
        }
        assert_eq!(FailReason::Unreachable.to_string(), "unreachable");
        assert_eq!(FailReason::from_errno(0), FailReason::Aborted);
        assert_eq!(FailReason::from_errno(5).to_string(), "errno_5");
    }

    #[test]
    fn endpoint_formatting_brackets_v6() {
        assert_eq!(
            fmt_endpoint("192.0.2.1".parse().unwrap(), 80),
            "192.0.2.1:80"
        );
        assert_eq!(
            fmt_endpoint("2001:db8::1".parse().unwrap(), 443),
            "[2001:db8::1]:443"
        );
    }
}
