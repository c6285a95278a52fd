//! What `/proc` tells about processes: which sockets they hold, their names
//! and CPU times, the network namespaces they live in, and per-CPU time.
//!
//! Processes come and go while a scan runs, and some of them may be closed
//! to us; the scans skip those and carry on.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ParseError;

const PROC: &str = "/proc";

/// The directory where `ip netns add` keeps its bind mounts.
pub const RUN_NETNS: &str = "/run/netns";

/// The thread-group ids of `proc_root` (its numeric entries). Thread ids
/// that are not group leaders are not listed by readdir, so this is one
/// entry per process.
fn pids_in(proc_root: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The inode of a socket from the target of a `/proc/<pid>/fd/N` link,
/// which reads `socket:[12345]`; `None` for anything else (files, pipes,
/// anon inodes).
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The result of a socket ownership scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SocketScan {
    /// Socket inode to the thread-group ids holding a descriptor for it,
    /// ascending, each once.
    pub owners: HashMap<u64, Vec<u32>>,
    /// Processes that exited while the scan ran.
    pub vanished: usize,
    /// Processes whose descriptors could not be read (permissions, mostly).
    pub unreadable: usize,
}

/// Maps every socket inode on the host to the processes holding it, by
/// reading the `/proc/<pid>/fd` links of every process. Processes that
/// vanish or cannot be read are skipped and counted.
pub fn scan_socket_owners() -> Result<SocketScan> {
    scan_socket_owners_in(Path::new(PROC))
}

fn scan_socket_owners_in(proc_root: &Path) -> Result<SocketScan> {
    let pids = pids_in(proc_root).with_context(|| format!("listing {}", proc_root.display()))?;
    let mut scan = SocketScan::default();
    for pid in pids {
        let fd_dir = proc_root.join(pid.to_string()).join("fd");
        let entries = match fs::read_dir(&fd_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                scan.vanished += 1;
                continue;
            }
            Err(_) => {
                scan.unreadable += 1;
                continue;
            }
        };
        for entry in entries {
            // A descriptor closed between readdir and readlink is simply gone.
            let Ok(entry) = entry else { continue };
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            let Some(inode) = target.to_str().and_then(parse_socket_link) else {
                continue;
            };
            let pids = scan.owners.entry(inode).or_default();
            // One process's descriptors are read together, so a duplicate
            // (dup()ed descriptor) is always the last one pushed.
            if pids.last() != Some(&pid) {
                pids.push(pid);
            }
        }
    }
    for pids in scan.owners.values_mut() {
        pids.sort_unstable();
    }
    Ok(scan)
}

/// The command name of a process (`/proc/<pid>/comm`, newline removed);
/// `None` if the process is gone.
pub fn comm_of(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("{PROC}/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// A network namespace, and one path that opens it (for `setns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsHandle {
    /// The namespace's inode number, as the kernel reports it in
    /// `/proc/<pid>/ns/net` links and BPF `net->ns.inum`.
    pub inode: u32,
    pub path: PathBuf,
    /// The `/proc/<pid>/net` (or `/proc/<pid>/task/<tid>/net`) directory of
    /// a process or thread inside the namespace, which shows the
    /// namespace's socket tables without entering it; `None` when no
    /// process was found inside (a namespace kept only by a bind mount).
    pub proc_net: Option<PathBuf>,
}

/// The namespace inode behind `path`, if `path` is a namespace file: a
/// `/proc/.../ns/net` link, or a bind mount of one. A stale file left in
/// `/run/netns` is on another file system, so `nsfs_dev` tells them apart.
fn ns_inode(path: &Path, nsfs_dev: u64) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    if meta.dev() != nsfs_dev {
        return None;
    }
    u32::try_from(meta.ino()).ok()
}

/// Every distinct network namespace reachable on the host, one handle per
/// namespace, ordered by inode. Looks at the bind mounts in [`RUN_NETNS`]
/// (preferred, as they outlive processes), then `/proc/<pid>/ns/net` of
/// every process, then `/proc/<pid>/task/<tid>/ns/net` of every thread, as
/// a thread may have moved to a namespace of its own. The processes and
/// threads give each namespace its `proc_net` directory.
pub fn network_namespaces() -> Vec<NetnsHandle> {
    // All namespace files live on the one nsfs; our own tells its device.
    let Ok(own) = fs::metadata("/proc/self/ns/net") else {
        return Vec::new();
    };
    let nsfs_dev = own.dev();
    let mut found: Vec<NetnsHandle> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    // `dir`: the /proc/<pid> or /proc/<pid>/task/<tid> directory the
    // namespace file belongs to, if any.
    let mut offer = |path: PathBuf, dir: Option<&Path>| {
        let Some(inode) = ns_inode(&path, nsfs_dev) else {
            return;
        };
        let proc_net = dir.map(|d| d.join("net"));
        match index.get(&inode) {
            Some(&i) => {
                let handle = &mut found[i];
                if handle.proc_net.is_none() {
                    handle.proc_net = proc_net;
                }
            }
            None => {
                index.insert(inode, found.len());
                found.push(NetnsHandle {
                    inode,
                    path,
                    proc_net,
                });
            }
        }
    };

    if let Ok(entries) = fs::read_dir(RUN_NETNS) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            offer(path, None);
        }
    }
    let proc_root = Path::new(PROC);
    let pids = pids_in(proc_root).unwrap_or_default();
    for &pid in &pids {
        let dir = proc_root.join(pid.to_string());
        offer(dir.join("ns/net"), Some(&dir));
    }
    for &pid in &pids {
        let task_dir = proc_root.join(format!("{pid}/task"));
        for tid in pids_in(&task_dir).unwrap_or_default() {
            if tid != pid {
                let dir = task_dir.join(tid.to_string());
                offer(dir.join("ns/net"), Some(&dir));
            }
        }
    }
    found.sort_by_key(|h| h.inode);
    found
}

/// TCP states as `/proc/net/tcp` prints them (`st`, hexadecimal): those of
/// a connected socket, the ones the seeding iterator tracks. Listeners,
/// handshakes, TIME_WAIT and closed sockets are left out, as there.
const CONNECTED_TCP_STATES: [u8; 6] = [
    0x01, // ESTABLISHED
    0x04, // FIN_WAIT1
    0x05, // FIN_WAIT2
    0x08, // CLOSE_WAIT
    0x09, // LAST_ACK
    0x0b, // CLOSING
];

/// The timer code (`tr`) of a TIME_WAIT socket's line, whatever state it
/// shows (a FIN_WAIT2 orphan turned TIME_WAIT socket shows FIN_WAIT2).
const TIMEWAIT_TIMER: u8 = 3;

/// An address of `/proc/net/tcp` or `/proc/net/tcp6`: 8 or 32 hex digits,
/// each group of 8 a 32-bit word as it lies in memory, printed as a
/// native-endian number.
fn parse_proc_net_addr(hex: &str) -> Option<IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    if hex.len() % 8 != 0 {
        return None;
    }
    for i in (0..hex.len()).step_by(8) {
        let word = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let raw: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(raw)))
        }
        _ => None,
    }
}

/// Loopback as the BPF side's filter sees it: 127.0.0.0/8, `::1` and
/// IPv4-mapped 127.0.0.0/8.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Counts the connected TCP sockets in the text of `/proc/net/tcp` or
/// `/proc/net/tcp6` (the first line is the header): the sockets the seeding
/// iterator would track there, without the loopback ones when
/// `filter_loopback` is set.
pub fn count_connected_tcp(text: &str, filter_loopback: bool) -> Result<u64, ParseError> {
    let mut count = 0;
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || ParseError::malformed("/proc/net/tcp line", line);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 {
            return Err(bad());
        }
        let endpoint = |f: &str| -> Result<IpAddr, ParseError> {
            let (addr, _port) = f.split_once(':').ok_or_else(bad)?;
            parse_proc_net_addr(addr).ok_or_else(bad)
        };
        let (local, remote) = (endpoint(fields[1])?, endpoint(fields[2])?);
        let state = u8::from_str_radix(fields[3], 16).map_err(|_| bad())?;
        let (timer, _) = fields[5].split_once(':').ok_or_else(bad)?;
        let timer = u8::from_str_radix(timer, 16).map_err(|_| bad())?;
        if !CONNECTED_TCP_STATES.contains(&state) || timer == TIMEWAIT_TIMER {
            continue;
        }
        if filter_loopback && (is_loopback(local) || is_loopback(remote)) {
            continue;
        }
        count += 1;
    }
    Ok(count)
}

/// The connected TCP sockets of the network namespace whose `/proc/.../net`
/// directory is `net_dir` (see [`NetnsHandle::proc_net`]), IPv4 and IPv6,
/// counted as [`count_connected_tcp`] does. Reading these tables needs no
/// privilege and no `setns`. A missing `tcp6` (IPv6 disabled) counts 0.
pub fn connected_tcp_sockets(net_dir: &Path, filter_loopback: bool) -> Result<u64> {
    let mut total = 0;
    for name in ["tcp", "tcp6"] {
        let path = net_dir.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if name == "tcp6" && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        total += count_connected_tcp(&text, filter_loopback)
            .with_context(|| format!("parsing {}", path.display()))?;
    }
    Ok(total)
}

fn netns_inode_at(path: &str) -> Result<u32> {
    let meta = fs::metadata(path).with_context(|| format!("stat {path}"))?;
    u32::try_from(meta.ino()).with_context(|| format!("namespace inode of {path} exceeds 32 bits"))
}

/// The network namespace of the calling thread (`/proc/thread-self/ns/net`).
/// Namespaces are per thread: inside [`super::netns::with_netns`] this is
/// the target namespace, while [`process_netns_inode`] is not.
pub fn current_netns_inode() -> Result<u32> {
    netns_inode_at("/proc/thread-self/ns/net")
}

/// The network namespace of this process's main thread
/// (`/proc/self/ns/net`).
pub fn process_netns_inode() -> Result<u32> {
    netns_inode_at("/proc/self/ns/net")
}

/// The fields netlens uses from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    pub comm: String,
    /// One letter: R, S, D, Z, T, ...
    pub state: char,
    /// Time spent in user mode, in clock ticks (field 14).
    pub utime: u64,
    /// Time spent in kernel mode, in clock ticks (field 15).
    pub stime: u64,
    /// When the process started, in clock ticks after boot (field 22):
    /// with the PID, it names one process, also after the PID is reused.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`).
/// The command name is in parentheses and may itself contain spaces and
/// parentheses, so the fields after it are found from the last `)`.
pub fn parse_pid_stat(text: &str) -> Result<PidStat, ParseError> {
    let bad = || ParseError::malformed("/proc/<pid>/stat", text);
    let open = text.find('(').ok_or_else(bad)?;
    let close = text.rfind(')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let comm = text[open + 1..close].to_owned();
    // Field 3 (state) is the first after the command name.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied().ok_or_else(bad);
    let mut state_chars = field(3)?.chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) => c,
        _ => return Err(bad()),
    };
    let utime = field(14)?.parse().map_err(|_| bad())?;
    let stime = field(15)?.parse().map_err(|_| bad())?;
    let start_time = field(22)?.parse().map_err(|_| bad())?;
    Ok(PidStat {
        comm,
        state,
        utime,
        stime,
        start_time,
    })
}

/// Reads and parses `/proc/<pid>/stat`.
pub fn pid_stat(pid: u32) -> Result<PidStat> {
    let path = format!("{PROC}/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_pid_stat(&text)?)
}

/// The unit of the times in `/proc/<pid>/stat` and `/proc/stat`
/// (`sysconf(_SC_CLK_TCK)`, USER_HZ). Linux fixes it at 100 on every
/// architecture, which is also the fallback should sysconf fail.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The time one CPU spent in each state, in clock ticks, from a `cpuN` line
/// of `/proc/stat`. Fields a kernel does not report read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub cpu: u32,
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    /// Running guests; already included in `user`.
    pub guest: u64,
    /// Running niced guests; already included in `nice`.
    pub guest_nice: u64,
}

impl CpuTimes {
    /// All time accounted, without counting guest time twice.
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }

    /// Time not idle (and not waiting for I/O).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }
}

/// Parses the per-CPU lines (`cpu0`, `cpu1`, ...) of `/proc/stat`, in file
/// order; the all-CPU `cpu` line and other lines are skipped. Offline CPUs
/// have no line, so `cpu` numbers may have gaps.
pub fn parse_proc_stat_cpus(text: &str) -> Result<Vec<CpuTimes>, ParseError> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(label) = words.next() else { continue };
        let Some(number) = label.strip_prefix("cpu") else {
            continue;
        };
        if number.is_empty() {
            continue;
        }
        let bad = || ParseError::malformed("/proc/stat cpu line", line);
        let cpu = number.parse().map_err(|_| bad())?;
        let values = words
            .map(|w| w.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() < 4 {
            return Err(bad());
        }
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        cpus.push(CpuTimes {
            cpu,
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
            guest: at(8),
            guest_nice: at(9),
        });
    }
    if cpus.is_empty() {
        return Err(ParseError::Missing("cpuN line in /proc/stat"));
    }
    Ok(cpus)
}

/// Reads and parses the per-CPU lines of `/proc/stat`.
pub fn proc_stat_cpus() -> Result<Vec<CpuTimes>> {
    let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(parse_proc_stat_cpus(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn socket_links_parse() {
        assert_eq!(parse_socket_link("socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link("socket:[4026531840]"), Some(4026531840));
        assert_eq!(parse_socket_link("pipe:[12345]"), None);
        assert_eq!(parse_socket_link("anon_inode:[eventpoll]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[]"), None);
        assert_eq!(parse_socket_link("socket:[12a]"), None);
        assert_eq!(parse_socket_link("socket:[123"), None);
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netlens-procfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn owner_scan_of_a_fake_proc() {
        let root = scratch_dir("owners");
        let fd = |pid: &str| {
            let dir = root.join(pid).join("fd");
            fs::create_dir_all(&dir).expect("mkdir");
            dir
        };
        let p10 = fd("10");
        symlink("socket:[500]", p10.join("3")).expect("symlink");
        symlink("socket:[500]", p10.join("4")).expect("symlink");
        symlink("socket:[501]", p10.join("5")).expect("symlink");
        symlink("/dev/null", p10.join("0")).expect("symlink");
        let p7 = fd("7");
        symlink("socket:[500]", p7.join("9")).expect("symlink");
        symlink("pipe:[501]", p7.join("1")).expect("symlink");
        // A process whose fd directory is gone: exited mid-scan.
        fs::create_dir_all(root.join("99")).expect("mkdir");
        // Entries that are not processes.
        fs::create_dir_all(root.join("net")).expect("mkdir");
        fs::write(root.join("uptime"), "1.0 2.0\n").expect("write");

        let scan = scan_socket_owners_in(&root).expect("scan");
        assert_eq!(scan.owners.len(), 2);
        assert_eq!(scan.owners[&500], [7, 10]);
        assert_eq!(scan.owners[&501], [10]);
        assert_eq!(scan.vanished, 1);
        assert_eq!(scan.unreadable, 0);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn owner_scan_finds_our_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = {
            use std::os::fd::AsRawFd;
            let path = format!("/proc/self/fd/{}", listener.as_raw_fd());
            let target = fs::read_link(path).expect("readlink");
            parse_socket_link(target.to_str().expect("utf-8")).expect("a socket")
        };
        let owners = scan_socket_owners().expect("scan /proc").owners;
        assert!(
            owners
                .get(&inode)
                .is_some_and(|p| p.contains(&std::process::id())),
            "socket {inode} not attributed to us"
        );
    }

    #[test]
    fn comm_of_self_and_of_nobody() {
        let comm = comm_of(std::process::id()).expect("our comm");
        assert!(!comm.is_empty() && !comm.ends_with('\n'));
        // Above the kernel's PID_MAX_LIMIT (4M), so no process has it.
        assert_eq!(comm_of(u32::MAX - 1), None);
    }

    #[test]
    fn namespaces_include_our_own() {
        let own = process_netns_inode().expect("own netns");
        assert_eq!(current_netns_inode().expect("thread netns"), own);
        let all = network_namespaces();
        let handle = all
            .iter()
            .find(|h| h.inode == own)
            .expect("own netns listed");
        let meta = fs::metadata(&handle.path).expect("stat handle path");
        assert_eq!(meta.ino(), u64::from(own));
        // Some process of ours is in it: its socket tables are readable.
        let net = handle.proc_net.as_ref().expect("a /proc net directory");
        assert!(net.join("tcp").exists(), "{}", net.display());
        let mut inodes: Vec<u32> = all.iter().map(|h| h.inode).collect();
        inodes.dedup();
        assert_eq!(inodes.len(), all.len(), "duplicate namespaces");
    }

    /// A `/proc/net/tcp{,6}` line as this host's kernel prints it.
    fn tcp_line(local: &str, remote: &str, state: u8, timer: u8) -> String {
        let endpoint = |ep: &str| {
            let ep: std::net::SocketAddr = ep.parse().expect("test endpoint");
            let octets = match ep.ip() {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            let hex: String = octets
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().expect("4 bytes"))))
                .collect();
            format!("{hex}:{:04X}", ep.port())
        };
        format!(
            "   0: {} {} {state:02X} 00000000:00000000 {timer:02X}:00000000 00000000     0        \
             0 12345 1 0000000000000000 20 4 30 10 -1",
            endpoint(local),
            endpoint(remote)
        )
    }

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr \
                              tm->when retrnsmt   uid  timeout inode";

    #[test]
    fn connected_tcp_sockets_are_counted_as_the_iterator_tracks_them() {
        let v4 = [
            tcp_line("192.0.2.1:40000", "198.51.100.7:80", 0x01, 0), // counted
            tcp_line("192.0.2.1:40001", "198.51.100.7:80", 0x08, 2), // CLOSE_WAIT, counted
            tcp_line("192.0.2.1:40002", "198.51.100.7:80", 0x05, 0), // FIN_WAIT2, counted
            tcp_line("192.0.2.1:40003", "198.51.100.7:80", 0x05, 3), // TIME_WAIT in FIN_WAIT2
            tcp_line("192.0.2.1:40004", "198.51.100.7:80", 0x06, 3), // TIME_WAIT
            tcp_line("0.0.0.0:22", "0.0.0.0:0", 0x0a, 0),            // listener
            tcp_line("192.0.2.1:40005", "198.51.100.7:80", 0x02, 1), // SYN_SENT
            tcp_line("192.0.2.1:22", "198.51.100.7:50000", 0x03, 1), // SYN_RECV
            tcp_line("127.0.0.1:40006", "127.0.0.1:8080", 0x01, 0),  // loopback
            tcp_line("192.0.2.1:40007", "127.0.0.2:8080", 0x01, 0),  // loopback peer
        ];
        let text = format!("{TCP_HEADER}\n{}\n", v4.join("\n"));
        assert_eq!(count_connected_tcp(&text, true), Ok(3));
        assert_eq!(count_connected_tcp(&text, false), Ok(5));

        let v6 = [
            tcp_line("[2001:db8::1]:40000", "[2001:db8::2]:443", 0x01, 0),
            tcp_line("[::1]:40001", "[::1]:8080", 0x01, 0),
            tcp_line(
                "[::ffff:127.0.0.1]:40002",
                "[::ffff:127.0.0.1]:8080",
                0x01,
                0,
            ),
            tcp_line(
                "[::ffff:192.0.2.1]:40003",
                "[::ffff:198.51.100.7]:80",
                0x04,
                1,
            ),
            tcp_line("[::]:443", "[::]:0", 0x0a, 0),
        ];
        let text = format!("{TCP_HEADER}\n{}\n", v6.join("\n"));
        assert_eq!(count_connected_tcp(&text, true), Ok(2));
        assert_eq!(count_connected_tcp(&text, false), Ok(4));
        assert_eq!(count_connected_tcp(TCP_HEADER, true), Ok(0));
    }

    #[test]
    fn malformed_tcp_lines_are_errors() {
        for line in [
            "   0: 0100007F:1F90 0100007F 01 00000000:00000000 00:00000000",
            "   0: 0100007F:1F90 0100007F:9C40 0x 00000000:00000000 00:00000000",
            "   0: 0100:1F90 0100007F:9C40 01 00000000:00000000 00:00000000",
            "   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00",
            "   0: 0100007F:1F90",
        ] {
            let text = format!("{TCP_HEADER}\n{line}\n");
            assert!(count_connected_tcp(&text, false).is_err(), "{line}");
        }
    }

    #[test]
    fn our_own_connection_is_in_our_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let net = Path::new("/proc/thread-self/net");
        // Other tests' connections come and go: at least our two sockets.
        assert!(connected_tcp_sockets(net, false).expect("read tables") >= 2);
        drop((client, server));
    }

    #[test]
    fn stale_run_netns_files_are_not_namespaces() {
        let dir = scratch_dir("stale");
        let stale = dir.join("gone");
        fs::write(&stale, "").expect("write");
        let nsfs_dev = fs::metadata("/proc/self/ns/net").expect("stat").dev();
        assert_eq!(ns_inode(&stale, nsfs_dev), None);
        assert!(ns_inode(Path::new("/proc/self/ns/net"), nsfs_dev).is_some());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn pid_stat_plain() {
        let text = "1234 (sshd) S 1 1234 1234 0 -1 4194560 1573 0 2 0 \
                    37 12 0 0 20 0 1 0 2849 16367616 2117 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 81926 0 0 0 17 3 0 0 0 0 0\n";
        let st = parse_pid_stat(text).expect("parse");
        assert_eq!(
            st,
            PidStat {
                comm: "sshd".into(),
                state: 'S',
                utime: 37,
                stime: 12,
                start_time: 2849,
            }
        );
    }

    #[test]
    fn pid_stat_comm_with_spaces_and_parens() {
        let text = "98765 (Web Content (2) x) R 4321 4321 4321 0 -1 4194304 \
                    90210 0 0 0 123456 7890 0 0 20 0 27 0 55555 3000000000 \
                    60000 18446744073709551615 1 1 0 0 0 0 0 4096 1260 0 0 0 \
                    5 0 0 0 0 0";
        let st = parse_pid_stat(text).expect("parse");
        assert_eq!(st.comm, "Web Content (2) x");
        assert_eq!(st.state, 'R');
        assert_eq!((st.utime, st.stime), (123456, 7890));
        assert_eq!(st.start_time, 55555);
    }

    #[test]
    fn pid_stat_rejects_truncated_text() {
        assert!(parse_pid_stat("").is_err());
        assert!(parse_pid_stat("12 (a) S 1 2 3").is_err());
        assert!(parse_pid_stat("12 a) S 1 1 1 0 -1 0 0 0 0 0 5 6").is_err());
        assert!(parse_pid_stat("12 (a) S 1 1 1 0 -1 0 0 0 0 0 x 6").is_err());
    }

    #[test]
    fn own_pid_stat_is_readable() {
        let st = pid_stat(std::process::id()).expect("own stat");
        assert!(!st.comm.is_empty());
        assert!(clock_ticks_per_sec() > 0);
    }

    const PROC_STAT: &str = "\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335326 42210 367891 10830547 2860 0 4240 1 51640 7
cpu3 1346500 39200 380000 11000000 3000 0 1200 0 50000 0
intr 199292 127 0 0 0
ctxt 4209609
btime 1700000000
processes 12345
procs_running 2
procs_blocked 0
softirq 3120021 1 456 7 8 9 0 10 11 0 12
";

    #[test]
    fn proc_stat_per_cpu_lines() {
        let cpus = parse_proc_stat_cpus(PROC_STAT).expect("parse");
        assert_eq!(cpus.len(), 3, "aggregate line and others skipped");
        assert_eq!(
            cpus[1],
            CpuTimes {
                cpu: 1,
                user: 1335326,
                nice: 42210,
                system: 367891,
                idle: 10830547,
                iowait: 2860,
                irq: 0,
                softirq: 4240,
                steal: 1,
                guest: 51640,
                guest_nice: 7,
            }
        );
        assert_eq!(cpus[2].cpu, 3, "offline cpu2 leaves a gap");
        let c = cpus[0];
        assert_eq!(c.busy(), 1393280 + 32966 + 572056 + 17875);
        assert_eq!(c.total(), c.busy() + 13343292 + 6130);
    }

    #[test]
    fn proc_stat_old_kernel_short_lines() {
        let cpus = parse_proc_stat_cpus("cpu 4 3 2 1\ncpu0 4 3 2 1 9\n").expect("parse");
        assert_eq!(cpus[0].iowait, 9);
        assert_eq!(cpus[0].steal, 0);
        assert_eq!(cpus[0].guest_nice, 0);
    }

    #[test]
    fn proc_stat_rejects_malformed_lines() {
        assert!(parse_proc_stat_cpus("cpu0 1 2 3\n").is_err());
        assert!(parse_proc_stat_cpus("cpu0 1 2 x 4\n").is_err());
        assert!(parse_proc_stat_cpus("cpux 1 2 3 4\n").is_err());
        assert_eq!(
            parse_proc_stat_cpus("cpu 1 2 3 4\nintr 5\n"),
            Err(ParseError::Missing("cpuN line in /proc/stat"))
        );
    }

    #[test]
    fn own_proc_stat_is_readable() {
        let cpus = proc_stat_cpus().expect("read /proc/stat");
        assert!(!cpus.is_empty());
    }
}
