//! netlens-peer: a traffic peer for the integration tests and the benchmarks.
//!
//! It drives real TCP traffic and reports, one JSON object per line on stdout,
//! what the application did (bytes written and read) together with the
//! kernel's own `TCP_INFO` for the socket, taken just before close(). Those
//! numbers are the ground truth netlens is checked against.
//!
//! Exit status: 0 success, 1 setup error, 2 usage error, 3 connect error
//! (after a `connect_error` line), 4 a connection failed after connecting
//! (its line carries an `error` field).

use std::io::{self, BufRead, Read, Write};
use std::mem::size_of;
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::ptr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use serde_json::{json, Map, Value};

/// Upper bound for every duration given on the command line.
const MAX_SECS: f64 = 3600.0;
/// Write chunk of `bulk` (and the largest single write anywhere).
const CHUNK: usize = 128 * 1024;
/// Source of the bytes we send; the content does not matter.
static ZEROS: [u8; CHUNK] = [0; CHUNK];
/// Read buffer size.
const READ_BUF: usize = 64 * 1024;
/// Stack of the per-connection server threads (they only shuffle bytes).
const CONN_THREAD_STACK: usize = 256 * 1024;
/// Echo mode in the poll loop stops reading once this much is unsent.
const ECHO_BACKLOG: usize = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "netlens-peer",
    about = "TCP traffic peer reporting the kernel's TCP_INFO as JSON lines"
)]
struct Cli {
    /// Enter the network namespace /run/netns/NAME (or the namespace file at
    /// NAME if it contains a '/') before doing anything else.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,

    /// Timeout of a single blocking connect/read/write on the client side.
    #[arg(long, global = true, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    io_timeout: Duration,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Accept connections: read until EOF, write --respond bytes, report, close.
    Serve(ServeArgs),
    /// Open connections: write --send bytes, shut down writing, read until EOF, report, close.
    Connect(ConnectArgs),
    /// One connection writing 128 KiB chunks as fast as possible.
    Bulk(BulkArgs),
    /// Short connections one after another (1 byte each way).
    Churn(ChurnArgs),
    /// Request/response ping-pong on one connection (server: `serve --echo`).
    Rr(RrArgs),
    /// Open idle connections and hold them.
    Hold(HoldArgs),
    /// One connection sending --size bytes at a time through io_uring.
    Uring(UringArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 picks one; see the `listening` line).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Bytes to write back after the peer's EOF.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    respond: u64,
    /// Exit once this many connections are done.
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// Exit after this long in any case.
    #[arg(long, value_name = "T", default_value = "60", value_parser = parse_secs)]
    max_secs: Duration,
    /// Benchmark mode: one thread polls all connections, no per-connection lines.
    #[arg(long)]
    sink: bool,
    /// Echo everything read back to the peer (until EOF) instead of only counting it.
    #[arg(long)]
    echo: bool,
    /// Once a connection is waiting, sleep this long before accept().
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_accept_ms: u64,
    /// Accept one connection through io_uring (IORING_OP_ACCEPT, no
    /// accept(2) system call), serve it, and exit.
    #[arg(long, conflicts_with_all = ["sink", "delay_accept_ms", "max_conns"])]
    uring_accept: bool,
}

#[derive(Args, Debug)]
struct ConnectArgs {
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddr,
    /// Bytes to write on each connection.
    #[arg(long, value_name = "BYTES")]
    send: u64,
    /// Number of connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: usize,
    /// Open all connections first and run them concurrently.
    #[arg(long)]
    parallel: bool,
    /// Sleep this long after connecting, before sending.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    hold_ms: u64,
    /// After connecting print a `connected` line, then wait for a line on stdin
    /// (once per connection; once for all of them with --parallel).
    #[arg(long)]
    wait_stdin: bool,
    /// Once everything written is acknowledged, print a `sent` line (with
    /// TCP_INFO) and wait for a line on stdin before finishing: the
    /// connection stays open and silent meanwhile.
    #[arg(long)]
    pause_after_send: bool,
}

#[derive(Args, Debug)]
struct BulkArgs {
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddr,
    #[arg(long, value_name = "T", value_parser = parse_secs)]
    secs: Duration,
}

#[derive(Args, Debug)]
struct ChurnArgs {
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddr,
    #[arg(long, value_name = "T", value_parser = parse_secs)]
    secs: Duration,
    /// Stop after this many successful connections.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
}

#[derive(Args, Debug)]
struct RrArgs {
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddr,
    #[arg(long, value_name = "T", value_parser = parse_secs)]
    secs: Duration,
    /// Request and response size.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    size: u64,
    /// Stop after this many transactions (or at --secs, whichever is first).
    #[arg(long, value_name = "N")]
    max: Option<u64>,
}

#[derive(Args, Debug)]
struct HoldArgs {
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddr,
    #[arg(long, value_name = "N")]
    count: usize,
    #[arg(long, value_name = "T", value_parser = parse_secs)]
    secs: Duration,
}

#[derive(Args, Debug)]
struct UringArgs {
    #[arg(long, value_name = "ADDR:PORT")]
    to: SocketAddr,
    #[arg(long, value_name = "T", value_parser = parse_secs)]
    secs: Duration,
    /// Bytes per send request.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=CHUNK as i64))]
    size: u32,
    /// Set IOSQE_ASYNC on every request, so that io-wq worker threads
    /// (iou-wrk-*) send instead of io_uring_enter itself.
    #[arg(long = "async")]
    force_async: bool,
    /// After connecting print a `connected` line, then wait for a line on
    /// stdin before sending (a test can start measuring this PID meanwhile).
    #[arg(long)]
    wait_stdin: bool,
}

/// Seconds as a decimal number ("1.5") or a humantime duration ("250ms").
fn parse_secs(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Duration::from_secs_f64(f),
        Ok(_) => return Err(format!("invalid duration {s:?}")),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?
        }
    };
    if d.as_secs_f64() > MAX_SECS {
        return Err(format!("duration {s:?} exceeds {MAX_SECS} s"));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Still single-threaded here: setns() must happen before any thread exists
    // so that every thread of the process lives in the namespace.
    if let Some(name) = &cli.netns {
        if let Err(e) = enter_netns(name) {
            eprintln!("netlens-peer: {e:#}");
            return ExitCode::from(1);
        }
    }
    raise_nofile_limit();
    let res = match &cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Connect(a) => connect_cmd(a, cli.io_timeout),
        Cmd::Bulk(a) => bulk(a, cli.io_timeout),
        Cmd::Churn(a) => churn(a, cli.io_timeout),
        Cmd::Rr(a) => rr(a, cli.io_timeout),
        Cmd::Hold(a) => hold(a, cli.io_timeout),
        Cmd::Uring(a) => uring(a, cli.io_timeout),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("netlens-peer: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------
// Process setup

fn enter_netns(name: &str) -> Result<()> {
    let path = if name.contains('/') {
        name.to_string()
    } else {
        format!("/run/netns/{name}")
    };
    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns() only reads the descriptor, which `file` keeps open for
    // the duration of the call; the process has no other threads yet.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (hold/churn/servers need
/// thousands of descriptors). Failure is not fatal.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let want = if lim.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur < want {
        lim.rlim_cur = want;
        // SAFETY: `lim` is a valid rlimit; the kernel only reads it.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

fn getpid() -> u32 {
    std::process::id()
}

/// Prints one JSON line and flushes, atomically with respect to other threads.
fn emit(v: &Value) {
    let line = v.to_string();
    let mut out = io::stdout().lock();
    // A closed stdout is not our problem; the exit status still tells.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------
// Socket plumbing

fn family_of(addr: &SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

fn raw_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data for which all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned
            // for any socket address type, sockaddr_in included.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_raw_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is suitably aligned for it.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// getsockname(); works after a failed connect() too.
fn sock_name(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is writable for `len` bytes; the kernel writes at most that.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    from_raw_sockaddr(&ss)
}

fn new_tcp_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointer arguments.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_opt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

/// Listening socket with SO_REUSEADDR and a large backlog.
fn listen_on(addr: SocketAddr) -> Result<TcpListener> {
    let fd = new_tcp_socket(family_of(&addr)).context("socket")?;
    set_opt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &1 as &libc::c_int,
    )
    .context("SO_REUSEADDR")?;
    let (ss, len) = raw_sockaddr(&addr);
    // SAFETY: `ss` holds a valid socket address of length `len`.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("bind {addr}"));
    }
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 4096) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("listen {addr}"));
    }
    Ok(TcpListener::from(fd))
}

#[derive(Debug)]
struct ConnectError {
    errno: i32,
    error: String,
    local: Option<SocketAddr>,
}

impl ConnectError {
    fn to_json(&self, to: SocketAddr) -> Value {
        let mut v = json!({
            "event": "connect_error",
            "pid": getpid(),
            "remote": to.to_string(),
            "errno": self.errno,
            "error": self.error,
        });
        if let Some(l) = self.local {
            v["local"] = json!(l.to_string());
        }
        v
    }
}

/// Blocking connect bounded by `timeout` (SO_SNDTIMEO bounds connect() on
/// Linux). The stream gets `timeout` as read and write timeout as well.
fn connect_to(to: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let sys_err = |e: io::Error, what: &str| ConnectError {
        errno: e.raw_os_error().unwrap_or(0),
        error: format!("{what}: {e}"),
        local: None,
    };
    let fd = new_tcp_socket(family_of(&to)).map_err(|e| sys_err(e, "socket"))?;
    let tv = timeval(timeout.max(Duration::from_millis(1)));
    set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)
        .map_err(|e| sys_err(e, "SO_SNDTIMEO"))?;
    set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
        .map_err(|e| sys_err(e, "SO_RCVTIMEO"))?;
    let (ss, len) = raw_sockaddr(&to);
    // SAFETY: `ss` holds a valid socket address of length `len`.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        let local = sock_name(fd.as_raw_fd()).filter(|a| a.port() != 0);
        let errno = e.raw_os_error().unwrap_or(0);
        // With SO_SNDTIMEO expired, connect() returns EINPROGRESS: report the
        // timeout for what it is.
        let (errno, error) = if errno == libc::EINPROGRESS {
            (
                libc::ETIMEDOUT,
                format!("connect timed out after {timeout:?}"),
            )
        } else {
            (errno, e.to_string())
        };
        return Err(ConnectError {
            errno,
            error,
            local,
        });
    }
    Ok(TcpStream::from(fd))
}

/// Connects or reports `connect_error` and yields the exit status 3.
fn connect_or_report(to: SocketAddr, timeout: Duration) -> Result<TcpStream, u8> {
    connect_to(to, timeout).map_err(|e| {
        emit(&e.to_json(to));
        3
    })
}

/// Reads until EOF; returns the byte count, or the error with what was read.
fn read_to_eof(s: &mut TcpStream, buf: &mut [u8]) -> Result<u64, (u64, io::Error)> {
    let mut total = 0u64;
    loop {
        match s.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((total, e)),
        }
    }
}

/// Writes `n` bytes; returns the count written, or the error with it.
fn write_n(s: &mut TcpStream, n: u64) -> Result<u64, (u64, io::Error)> {
    let mut done = 0u64;
    while done < n {
        let want = (n - done).min(CHUNK as u64) as usize;
        match s.write(&ZEROS[..want]) {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(k) => done += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------
// TCP_INFO

/// Size of the buffer handed to getsockopt(); larger than any kernel's
/// struct tcp_info so far, the kernel tells how much it filled.
const TCP_INFO_BUF: usize = 512;

/// Offsets into `struct tcp_info` (include/uapi/linux/tcp.h). Eight u8 fields
/// (two are bitfields) come first, then u32s; the first u64
/// (tcpi_pacing_rate) lands at 104, already 8-aligned. Checked against the
/// libc crate's definition in the unit tests below.
const TCP_INFO_FIELDS: &[(&str, usize, usize)] = &[
    ("state", 0, 1),
    ("ca_state", 1, 1),
    ("retransmits", 2, 1),
    ("probes", 3, 1),
    ("backoff", 4, 1),
    ("rto_us", 8, 4),
    ("ato_us", 12, 4),
    ("snd_mss", 16, 4),
    ("rcv_mss", 20, 4),
    ("unacked", 24, 4),
    ("sacked", 28, 4),
    ("lost", 32, 4),
    ("retrans", 36, 4),
    ("last_data_sent_ms", 44, 4),
    ("last_data_recv_ms", 52, 4),
    ("last_ack_recv_ms", 56, 4),
    ("pmtu", 60, 4),
    ("rcv_ssthresh", 64, 4),
    ("rtt_us", 68, 4),
    ("rtt_var_us", 72, 4),
    ("snd_ssthresh", 76, 4),
    ("snd_cwnd", 80, 4),
    ("advmss", 84, 4),
    ("reordering", 88, 4),
    ("rcv_rtt_us", 92, 4),
    ("rcv_space", 96, 4),
    ("total_retrans", 100, 4),
    ("pacing_rate", 104, 8),
    ("max_pacing_rate", 112, 8),
    ("bytes_acked", 120, 8),
    ("bytes_received", 128, 8),
    ("segs_out", 136, 4),
    ("segs_in", 140, 4),
    ("notsent_bytes", 144, 4),
    ("min_rtt_us", 148, 4),
    ("data_segs_in", 152, 4),
    ("data_segs_out", 156, 4),
    ("delivery_rate", 160, 8),
    ("busy_time_us", 168, 8),
    ("rwnd_limited_us", 176, 8),
    ("sndbuf_limited_us", 184, 8),
    ("delivered", 192, 4),
    ("delivered_ce", 196, 4),
    ("bytes_sent", 200, 8),
    ("bytes_retrans", 208, 8),
    ("dsack_dups", 216, 4),
    ("reord_seen", 220, 4),
    ("rcv_ooopack", 224, 4),
    ("snd_wnd", 228, 4),
    // Linux 6.7+; absent (null) when the kernel returns less.
    ("rcv_wnd", 232, 4),
    ("rehash", 236, 4),
    ("total_rto", 240, 2),
    ("total_rto_recoveries", 242, 2),
    ("total_rto_time_ms", 244, 4),
];

struct TcpInfo {
    raw: [u8; TCP_INFO_BUF],
    len: usize,
}

impl TcpInfo {
    fn of(fd: RawFd) -> io::Result<TcpInfo> {
        let mut raw = [0u8; TCP_INFO_BUF];
        let mut len = TCP_INFO_BUF as libc::socklen_t;
        // SAFETY: `raw` is writable for `len` bytes; the kernel copies at most
        // `len` bytes and stores the amount in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                raw.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpInfo {
            raw,
            len: (len as usize).min(TCP_INFO_BUF),
        })
    }

    /// Field at `off` of `width` bytes (native endian), None if the kernel's
    /// struct is too short for it.
    fn field(&self, off: usize, width: usize) -> Option<u64> {
        let b = self
            .raw
            .get(off..off + width)
            .filter(|_| off + width <= self.len)?;
        Some(match width {
            1 => u64::from(b[0]),
            2 => u64::from(u16::from_ne_bytes(b.try_into().ok()?)),
            4 => u64::from(u32::from_ne_bytes(b.try_into().ok()?)),
            8 => u64::from_ne_bytes(b.try_into().ok()?),
            _ => return None,
        })
    }

    #[cfg(test)]
    fn get(&self, name: &str) -> Option<u64> {
        let &(_, off, width) = TCP_INFO_FIELDS.iter().find(|f| f.0 == name)?;
        self.field(off, width)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for &(name, off, width) in TCP_INFO_FIELDS {
            m.insert(name.to_string(), json!(self.field(off, width)));
        }
        m.insert("len".to_string(), json!(self.len));
        Value::Object(m)
    }
}

fn tcp_info_json(fd: RawFd) -> Value {
    match TcpInfo::of(fd) {
        Ok(i) => i.to_json(),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

// ---------------------------------------------------------------------------
// Per-connection reports

struct ConnReport {
    role: &'static str,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    bytes_written: u64,
    bytes_read: u64,
    tcp_info: Value,
    error: Option<String>,
}

impl ConnReport {
    fn new(role: &'static str, s: &TcpStream) -> ConnReport {
        ConnReport {
            role,
            local: s.local_addr().ok(),
            remote: s.peer_addr().ok(),
            bytes_written: 0,
            bytes_read: 0,
            tcp_info: Value::Null,
            error: None,
        }
    }

    fn fail(&mut self, what: &str, e: io::Error) {
        if self.error.is_none() {
            self.error = Some(format!("{what}: {e}"));
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "event": "conn",
            "role": self.role,
            "pid": getpid(),
            "family": match self.local { Some(SocketAddr::V6(_)) => 6, _ => 4 },
            "local": self.local.map(|a| a.to_string()),
            "remote": self.remote.map(|a| a.to_string()),
            "bytes_written": self.bytes_written,
            "bytes_read": self.bytes_read,
            "tcp_info": self.tcp_info,
        });
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

fn endpoints_json(v: &mut Value, s: &TcpStream) {
    v["local"] = json!(s.local_addr().ok().map(|a| a.to_string()));
    v["remote"] = json!(s.peer_addr().ok().map(|a| a.to_string()));
}

// ---------------------------------------------------------------------------
// serve

fn serve(a: &ServeArgs) -> Result<u8> {
    let start = Instant::now();
    let deadline = start + a.max_secs;
    let listener = listen_on(a.listen)?;
    let addr = listener.local_addr().context("getsockname")?;
    listener.set_nonblocking(true).context("O_NONBLOCK")?;
    emit(&json!({"event": "listening", "pid": getpid(), "addr": addr.to_string()}));
    let (done, accepted, reason) = if a.uring_accept {
        let s = uring_accept(&listener, deadline)?;
        s.set_nonblocking(false).context("clearing O_NONBLOCK")?;
        let r = serve_conn(s, a.respond, a.echo, deadline);
        emit(&r.to_json());
        (1, 1, "max-conns")
    } else if a.sink {
        serve_poll_loop(&listener, a, deadline)?
    } else {
        serve_threads(&listener, a, deadline)?
    };
    emit(&json!({
        "event": "exit",
        "role": "server",
        "pid": getpid(),
        "accepted": accepted,
        "conns": done,
        "reason": reason,
        "secs": start.elapsed().as_secs_f64(),
    }));
    Ok(0)
}

fn poll_one(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(0, 1000) as libc::c_int;
    // SAFETY: `p` is one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(p.revents)
}

/// accept() errors that only concern one connection (or are transient).
fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EPROTO
        )
    )
}

/// One thread per connection; each prints its own `conn` line.
fn serve_threads(
    listener: &TcpListener,
    a: &ServeArgs,
    deadline: Instant,
) -> Result<(usize, usize, &'static str)> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut accepted = 0usize;
    let mut done = 0usize;
    loop {
        while rx.try_recv().is_ok() {
            done += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok((done, accepted, "max_secs"));
        }
        if a.max_conns.is_some_and(|m| accepted >= m) {
            break;
        }
        let rev = poll_one(listener.as_raw_fd(), libc::POLLIN, deadline - now)?;
        if rev & libc::POLLIN == 0 {
            continue;
        }
        if a.delay_accept_ms > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            thread::sleep(Duration::from_millis(a.delay_accept_ms).min(left));
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if accept_error_is_transient(&e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    thread::sleep(Duration::from_millis(5));
                }
                continue;
            }
            Err(e) => return Err(e).context("accept"),
        };
        accepted += 1;
        let tx = tx.clone();
        let respond = a.respond;
        let echo = a.echo;
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(CONN_THREAD_STACK)
            .spawn(move || {
                let report = serve_conn(stream, respond, echo, deadline);
                emit(&report.to_json());
                let _ = tx.send(());
            });
        if let Err(e) = spawned {
            // The stream went down with the closure: the connection is
            // closed unreported, so say so.
            eprintln!("netlens-peer: cannot spawn connection thread: {e}");
            done += 1;
        }
    }
    while done < accepted {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((done, accepted, "max_secs"));
        }
        if rx.recv_timeout(left).is_ok() {
            done += 1;
        }
    }
    Ok((done, accepted, "max_conns"))
}

/// Reads until EOF (echoing if asked), writes `respond` bytes, takes TCP_INFO,
/// closes.
fn serve_conn(mut s: TcpStream, respond: u64, echo: bool, deadline: Instant) -> ConnReport {
    let mut r = ConnReport::new("server", &s);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let mut buf = vec![0u8; READ_BUF];
    if echo {
        let _ = s.set_nodelay(true);
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    r.bytes_read += n as u64;
                    if let Err(e) = s.write_all(&buf[..n]) {
                        r.fail("write", e);
                        break;
                    }
                    r.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    r.fail("read", e);
                    break;
                }
            }
        }
    } else {
        match read_to_eof(&mut s, &mut buf) {
            Ok(n) => r.bytes_read = n,
            Err((n, e)) => {
                r.bytes_read = n;
                r.fail("read", e);
            }
        }
    }
    if r.error.is_none() {
        match write_n(&mut s, respond) {
            Ok(n) => r.bytes_written += n,
            Err((n, e)) => {
                r.bytes_written += n;
                r.fail("write", e);
            }
        }
    }
    r.tcp_info = tcp_info_json(s.as_raw_fd());
    drop(s);
    r
}

/// State of one connection in the poll loop.
struct SinkConn {
    s: TcpStream,
    eof: bool,
    respond_left: u64,
    out: Vec<u8>,
    out_pos: usize,
}

impl SinkConn {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn wants_write(&self) -> bool {
        self.pending() > 0 || (self.eof && self.respond_left > 0)
    }

    /// Writes what it can without blocking. Err means: drop the connection.
    fn flush(&mut self) -> io::Result<()> {
        loop {
            let res = if self.pending() > 0 {
                self.s.write(&self.out[self.out_pos..])
            } else if self.eof && self.respond_left > 0 {
                let n = self.respond_left.min(CHUNK as u64) as usize;
                self.s.write(&ZEROS[..n])
            } else {
                return Ok(());
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if self.pending() > 0 {
                        self.out_pos += n;
                        if self.out_pos == self.out.len() {
                            self.out.clear();
                            self.out_pos = 0;
                        }
                    } else {
                        self.respond_left -= n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// One read. Err means: drop the connection.
    fn read_some(&mut self, buf: &mut [u8], echo: bool) -> io::Result<()> {
        match self.s.read(buf) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                if echo {
                    self.out.extend_from_slice(&buf[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.eof && !self.wants_write()
    }
}

/// Sink mode: one thread, poll() over all connections, no per-connection
/// output. Scales to many thousands of (mostly idle) connections.
fn serve_poll_loop(
    listener: &TcpListener,
    a: &ServeArgs,
    deadline: Instant,
) -> Result<(usize, usize, &'static str)> {
    let delay = Duration::from_millis(a.delay_accept_ms);
    let mut conns: Vec<SinkConn> = Vec::new();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut accepted = 0usize;
    let mut done = 0usize;
    // When the listener was first seen readable (for --delay-accept-ms).
    let mut waiting_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok((done, accepted, "max_secs"));
        }
        let accepting = a.max_conns.is_none_or(|m| accepted < m);
        if !accepting && conns.is_empty() {
            return Ok((done, accepted, "max_conns"));
        }
        let mut timeout = deadline - now;
        pfds.clear();
        let mut lfd = libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        };
        if accepting {
            lfd.fd = listener.as_raw_fd();
            if let Some(t) = waiting_since {
                // Already known readable; just sleep out the delay.
                lfd.fd = -1;
                timeout = timeout.min((t + delay).saturating_duration_since(now));
            }
        }
        pfds.push(lfd);
        for c in &conns {
            let mut events = 0;
            if !c.eof && c.pending() < ECHO_BACKLOG {
                events |= libc::POLLIN;
            }
            if c.wants_write() {
                events |= libc::POLLOUT;
            }
            pfds.push(libc::pollfd {
                fd: c.s.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().clamp(0, 1000) as libc::c_int;
        // SAFETY: `pfds` is a valid array of pollfd of the length we pass.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }

        // Existing connections first (indices match pfds[1..]).
        let closed: Vec<bool> = conns
            .iter_mut()
            .zip(&pfds[1..])
            .map(|(c, p)| {
                let rev = p.revents;
                let mut ok = Ok(());
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !c.eof {
                    ok = c.read_some(&mut buf, a.echo);
                }
                if ok.is_ok() && rev != 0 {
                    ok = c.flush();
                }
                ok.is_err() || c.finished()
            })
            .collect();
        let mut k = 0;
        conns.retain(|_| {
            let keep = !closed[k];
            k += 1;
            keep
        });
        done += closed.iter().filter(|&&c| c).count();

        if !accepting {
            continue;
        }
        if pfds[0].revents & libc::POLLIN != 0 && !delay.is_zero() {
            waiting_since = Some(Instant::now());
            continue;
        }
        let ready = match waiting_since {
            Some(t) => Instant::now() >= t + delay,
            None => pfds[0].revents & libc::POLLIN != 0,
        };
        if !ready {
            continue;
        }
        waiting_since = None;
        // Accept a batch (only one at a time when delaying each accept).
        let batch = if delay.is_zero() { 256 } else { 1 };
        for _ in 0..batch {
            if a.max_conns.is_some_and(|m| accepted >= m) {
                break;
            }
            match listener.accept() {
                Ok((s, _)) => {
                    accepted += 1;
                    if s.set_nonblocking(true).is_err() {
                        done += 1;
                        continue;
                    }
                    let c = SinkConn {
                        s,
                        eof: false,
                        respond_left: a.respond,
                        out: Vec::new(),
                        out_pos: 0,
                    };
                    conns.push(c);
                }
                Err(e) if accept_error_is_transient(&e) => break,
                Err(e) => return Err(e).context("accept"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// connect

/// Client exchange: write `send` bytes, shut down writing, read until EOF,
/// TCP_INFO, close.
fn client_exchange(mut s: TcpStream, send: u64, pause_after_send: bool) -> ConnReport {
    let mut r = ConnReport::new("client", &s);
    match write_n(&mut s, send) {
        Ok(n) => r.bytes_written = n,
        Err((n, e)) => {
            r.bytes_written = n;
            r.fail("write", e);
        }
    }
    if pause_after_send && r.error.is_none() {
        if let Err(e) = wait_all_acked(&s) {
            r.fail("waiting for acknowledgements", e);
        }
        let mut v =
            json!({"event": "sent", "pid": getpid(), "tcp_info": tcp_info_json(s.as_raw_fd())});
        endpoints_json(&mut v, &s);
        emit(&v);
        wait_stdin_line();
    }
    if let Err(e) = s.shutdown(Shutdown::Write) {
        r.fail("shutdown", e);
    }
    let mut buf = vec![0u8; READ_BUF];
    match read_to_eof(&mut s, &mut buf) {
        Ok(n) => r.bytes_read = n,
        Err((n, e)) => {
            r.bytes_read = n;
            r.fail("read", e);
        }
    }
    r.tcp_info = tcp_info_json(s.as_raw_fd());
    drop(s);
    r
}

/// Waits (up to 10 s) until every byte written was sent and acknowledged.
fn wait_all_acked(s: &TcpStream) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = TcpInfo::of(s.as_raw_fd())?;
        let field = |name: &str| {
            TCP_INFO_FIELDS
                .iter()
                .find(|f| f.0 == name)
                .and_then(|&(_, off, width)| info.field(off, width))
        };
        // Nothing in flight is not enough: data still queued behind the
        // window has not been sent yet (seen under load: more segments went
        // out after "sent").
        if field("unacked") == Some(0) && field("notsent_bytes") == Some(0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "data still unacknowledged after 10 s",
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn announce_connected(s: &TcpStream) {
    let mut v = json!({"event": "connected", "pid": getpid()});
    endpoints_json(&mut v, s);
    emit(&v);
}

/// Waits for one line (or EOF) on stdin.
fn wait_stdin_line() {
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
}

/// [`connect_or_report`], with how long connect() took in microseconds (what
/// the application sees of the handshake).
fn timed_connect(to: SocketAddr, timeout: Duration) -> Result<(TcpStream, u64), u8> {
    let start = Instant::now();
    let s = connect_or_report(to, timeout)?;
    Ok((s, start.elapsed().as_micros() as u64))
}

/// A client connection's report, with its `connect_us`.
fn emit_with_connect_time(r: &ConnReport, connect_us: u64) {
    let mut v = r.to_json();
    v["connect_us"] = json!(connect_us);
    emit(&v);
}

fn connect_cmd(a: &ConnectArgs, timeout: Duration) -> Result<u8> {
    let hold = Duration::from_millis(a.hold_ms.min((MAX_SECS * 1000.0) as u64));
    let mut failed = false;
    if a.parallel {
        let mut streams = Vec::with_capacity(a.count);
        for _ in 0..a.count {
            match timed_connect(a.to, timeout) {
                Ok(s) => streams.push(s),
                Err(code) => return Ok(code),
            }
        }
        if a.wait_stdin {
            streams.iter().for_each(|(s, _)| announce_connected(s));
            wait_stdin_line();
        }
        thread::sleep(hold);
        let (send, pause) = (a.send, a.pause_after_send);
        let reports: Vec<ConnReport> = thread::scope(|scope| {
            let handles: Vec<_> = streams
                .into_iter()
                .map(|(s, connect_us)| {
                    thread::Builder::new()
                        .stack_size(CONN_THREAD_STACK)
                        .spawn_scoped(scope, move || {
                            let r = client_exchange(s, send, pause);
                            emit_with_connect_time(&r, connect_us);
                            r
                        })
                })
                .collect::<io::Result<_>>()?;
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("connection thread panicked"))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        failed = reports.iter().any(|r| r.error.is_some());
    } else {
        for _ in 0..a.count {
            let (s, connect_us) = match timed_connect(a.to, timeout) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            if a.wait_stdin {
                announce_connected(&s);
                wait_stdin_line();
            }
            thread::sleep(hold);
            let r = client_exchange(s, a.send, a.pause_after_send);
            emit_with_connect_time(&r, connect_us);
            failed |= r.error.is_some();
        }
    }
    Ok(if failed { 4 } else { 0 })
}

// ---------------------------------------------------------------------------
// bulk, rr, churn, hold

/// Ends a sending client's run: adds the endpoints, finishes the
/// connection (see finish_client) and emits `v` with what it read, the
/// kernel's TCP_INFO and any error (`err` first). Returns the exit status:
/// 4 on error, else 0.
fn report_sender(mut v: Value, mut s: TcpStream, err: Option<String>) -> u8 {
    endpoints_json(&mut v, &s);
    let (info, read, ferr) = finish_client(&mut s);
    drop(s);
    v["bytes_read"] = json!(read);
    v["tcp_info"] = info;
    let status = match err.or(ferr) {
        Some(e) => {
            v["error"] = json!(e);
            4
        }
        None => 0,
    };
    emit(&v);
    status
}

/// Ends a client connection: shut down writing, drain until EOF (bounded by
/// the read timeout), TCP_INFO. Returns (tcp_info, bytes read, error).
fn finish_client(s: &mut TcpStream) -> (Value, u64, Option<String>) {
    let mut err = None;
    if let Err(e) = s.shutdown(Shutdown::Write) {
        err = Some(format!("shutdown: {e}"));
    }
    let mut buf = vec![0u8; READ_BUF];
    let read = match read_to_eof(s, &mut buf) {
        Ok(n) => n,
        Err((n, e)) => {
            err.get_or_insert(format!("read: {e}"));
            n
        }
    };
    (tcp_info_json(s.as_raw_fd()), read, err)
}

fn bulk(a: &BulkArgs, timeout: Duration) -> Result<u8> {
    let mut s = match connect_or_report(a.to, timeout) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut err = None;
    while start.elapsed() < a.secs {
        match s.write(&ZEROS) {
            Ok(0) => {
                err = Some("write: wrote zero bytes".to_string());
                break;
            }
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                err = Some(format!("write: {e}"));
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let v = json!({
        "event": "bulk",
        "pid": getpid(),
        "bytes": bytes,
        "secs": secs,
        "bytes_per_sec": bytes as f64 / secs.max(1e-9),
    });
    Ok(report_sender(v, s, err))
}

fn rr(a: &RrArgs, timeout: Duration) -> Result<u8> {
    let mut s = match connect_or_report(a.to, timeout) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    s.set_nodelay(true).context("TCP_NODELAY")?;
    let size = a.size as usize;
    let req = vec![0x5au8; size];
    let mut resp = vec![0u8; size];
    let start = Instant::now();
    let mut transactions = 0u64;
    let mut err = None;
    while start.elapsed() < a.secs && a.max.is_none_or(|m| transactions < m) {
        if let Err(e) = s.write_all(&req) {
            err = Some(format!("write: {e}"));
            break;
        }
        if let Err(e) = s.read_exact(&mut resp) {
            err = Some(format!("read: {e}"));
            break;
        }
        transactions += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut v = json!({
        "event": "rr",
        "pid": getpid(),
        "size": a.size,
        "transactions": transactions,
        "secs": secs,
        "transactions_per_sec": transactions as f64 / secs.max(1e-9),
    });
    endpoints_json(&mut v, &s);
    let (info, _, ferr) = finish_client(&mut s);
    drop(s);
    v["tcp_info"] = info;
    if let Some(e) = err.or(ferr) {
        v["error"] = json!(e);
        emit(&v);
        return Ok(4);
    }
    emit(&v);
    Ok(0)
}

/// Consecutive non-fatal failures after which churn gives up.
const CHURN_MAX_CONSECUTIVE_ERRORS: u32 = 100;

fn churn(a: &ChurnArgs, timeout: Duration) -> Result<u8> {
    let start = Instant::now();
    let mut conns = 0u64;
    let mut errors = 0u64;
    let mut consecutive = 0u32;
    let mut last_error: Option<String> = None;
    let mut buf = vec![0u8; 4096];
    let reason = loop {
        if start.elapsed() >= a.secs {
            break "secs";
        }
        if a.max.is_some_and(|m| conns >= m) {
            break "max";
        }
        if consecutive >= CHURN_MAX_CONSECUTIVE_ERRORS {
            break "errors";
        }
        let mut s = match connect_to(a.to, timeout) {
            Ok(s) => s,
            Err(e) => {
                errors += 1;
                consecutive += 1;
                let exhausted = e.errno == libc::EADDRNOTAVAIL;
                last_error = Some(e.error);
                if exhausted {
                    // Out of local ports: waiting would take TIME_WAIT's
                    // 60 s, so stop here instead of spinning.
                    break "EADDRNOTAVAIL";
                }
                thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let res = s
            .write_all(&ZEROS[..1])
            .and_then(|_| s.shutdown(Shutdown::Write))
            .map_err(|e| (0, e))
            .and_then(|_| read_to_eof(&mut s, &mut buf));
        drop(s);
        match res {
            Ok(_) => {
                conns += 1;
                consecutive = 0;
            }
            Err((_, e)) => {
                errors += 1;
                consecutive += 1;
                last_error = Some(e.to_string());
            }
        }
    };
    let secs = start.elapsed().as_secs_f64();
    emit(&json!({
        "event": "churn",
        "pid": getpid(),
        "conns": conns,
        "secs": secs,
        "conns_per_sec": conns as f64 / secs.max(1e-9),
        "errors": errors,
        "stop_reason": reason,
        "last_error": last_error,
    }));
    Ok(0)
}

fn hold(a: &HoldArgs, timeout: Duration) -> Result<u8> {
    let mut streams = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        match connect_or_report(a.to, timeout) {
            Ok(s) => streams.push(s),
            Err(code) => return Ok(code),
        }
    }
    emit(&json!({"event": "holding", "pid": getpid(), "count": streams.len()}));
    thread::sleep(a.secs);
    let n = streams.len();
    drop(streams);
    emit(&json!({"event": "released", "pid": getpid(), "count": n}));
    Ok(0)
}

// ---------------------------------------------------------------------------
// uring

/// Entries of the ring; one request is in flight at a time.
const URING_ENTRIES: u32 = 8;

fn uring(a: &UringArgs, timeout: Duration) -> Result<u8> {
    // The ring before the connection: where io_uring is unavailable
    // (kernel.io_uring_disabled, a seccomp filter, an old kernel) nothing
    // should reach the server.
    let mut ring = IoUring::new(URING_ENTRIES).context("io_uring unavailable: io_uring_setup")?;
    if !ring.params().is_feature_ext_arg() {
        anyhow::bail!(
            "io_uring unavailable: no IORING_FEAT_EXT_ARG (Linux 5.11), needed to bound waits"
        );
    }
    let s = match connect_or_report(a.to, timeout) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if a.wait_stdin {
        announce_connected(&s);
        wait_stdin_line();
    }
    let fd = Fd(s.as_raw_fd());
    let flags = if a.force_async {
        squeue::Flags::ASYNC
    } else {
        squeue::Flags::empty()
    };
    let start = Instant::now();
    let (mut bytes, mut ops) = (0u64, 0u64);
    let mut err = None;
    while start.elapsed() < a.secs {
        match uring_send(&mut ring, fd, a.size, flags, timeout) {
            Ok(0) => {
                err = Some("send: sent zero bytes".to_string());
                break;
            }
            Ok(n) => {
                bytes += n;
                ops += 1;
            }
            Err(e) => {
                err = Some(format!("send: {e}"));
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let v = json!({
        "event": "uring",
        "pid": getpid(),
        "async": a.force_async,
        "size": a.size,
        "bytes": bytes,
        "ops": ops,
        "secs": secs,
    });
    Ok(report_sender(v, s, err))
}

/// Accepts one connection on `listener` with IORING_OP_ACCEPT, waiting
/// until `deadline`.
fn uring_accept(listener: &TcpListener, deadline: Instant) -> Result<TcpStream> {
    let mut ring = IoUring::new(URING_ENTRIES).context("io_uring unavailable: io_uring_setup")?;
    let sqe = opcode::Accept::new(Fd(listener.as_raw_fd()), ptr::null_mut(), ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build();
    // SAFETY: the request takes no buffer (no peer address is asked for).
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| anyhow::anyhow!("submission queue full"))?;
    let fd = uring_complete_one(&mut ring, deadline).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut => {
            anyhow::anyhow!("no connection to accept before the deadline")
        }
        _ => anyhow::Error::new(e).context("IORING_OP_ACCEPT"),
    })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// One IORING_OP_SEND of `len` bytes on `fd`, waited for: each request
/// completes before the next is submitted, so with IOSQE_ASYNC every byte is
/// sent by an io-wq worker and without it every byte is sent inside
/// io_uring_enter (a blocked send is retried there from task work). Returns
/// the bytes sent; a short send is not an error.
fn uring_send(
    ring: &mut IoUring,
    fd: Fd,
    len: u32,
    flags: squeue::Flags,
    timeout: Duration,
) -> io::Result<u64> {
    let sqe = opcode::Send::new(fd, ZEROS.as_ptr(), len)
        .build()
        .flags(flags);
    // SAFETY: the request reads ZEROS, a static that outlives it, and holds
    // its own reference to the socket's file; nothing else is borrowed.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    let res = uring_complete_one(ring, Instant::now() + timeout)?;
    Ok(res as u64)
}

/// Submits what is queued on `ring` and waits, until `deadline`, for one
/// completion; returns its result (an error for a negative one, and
/// TimedOut when nothing completed in time).
fn uring_complete_one(ring: &mut IoUring, deadline: Instant) -> io::Result<i32> {
    loop {
        let wait = Timespec::from(deadline.saturating_duration_since(Instant::now()));
        match ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&wait))
        {
            Ok(_) => {}
            // ETIME: the wait ran out (the deadline is checked below); the
            // call that submits returns the count even then, so an empty
            // completion queue is the only reliable sign.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
        if let Some(cqe) = ring.completion().next() {
            let res = cqe.result();
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res));
            }
            return Ok(res);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no completion before the deadline",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    fn off(name: &str) -> usize {
        TCP_INFO_FIELDS.iter().find(|f| f.0 == name).unwrap().1
    }

    #[test]
    fn tcp_info_offsets_match_libc() {
        type T = libc::tcp_info;
        let pairs = [
            ("rto_us", offset_of!(T, tcpi_rto)),
            ("unacked", offset_of!(T, tcpi_unacked)),
            ("rtt_us", offset_of!(T, tcpi_rtt)),
            ("rtt_var_us", offset_of!(T, tcpi_rttvar)),
            ("snd_cwnd", offset_of!(T, tcpi_snd_cwnd)),
            ("total_retrans", offset_of!(T, tcpi_total_retrans)),
            ("pacing_rate", offset_of!(T, tcpi_pacing_rate)),
            ("bytes_acked", offset_of!(T, tcpi_bytes_acked)),
            ("bytes_received", offset_of!(T, tcpi_bytes_received)),
            ("segs_out", offset_of!(T, tcpi_segs_out)),
            ("segs_in", offset_of!(T, tcpi_segs_in)),
            ("min_rtt_us", offset_of!(T, tcpi_min_rtt)),
            ("data_segs_in", offset_of!(T, tcpi_data_segs_in)),
            ("data_segs_out", offset_of!(T, tcpi_data_segs_out)),
            ("delivery_rate", offset_of!(T, tcpi_delivery_rate)),
            ("delivered", offset_of!(T, tcpi_delivered)),
            ("bytes_sent", offset_of!(T, tcpi_bytes_sent)),
            ("bytes_retrans", offset_of!(T, tcpi_bytes_retrans)),
            ("snd_wnd", offset_of!(T, tcpi_snd_wnd)),
            ("rcv_wnd", offset_of!(T, tcpi_rcv_wnd)),
            ("total_rto", offset_of!(T, tcpi_total_rto)),
            ("total_rto_time_ms", offset_of!(T, tcpi_total_rto_time)),
        ];
        for (name, want) in pairs {
            assert_eq!(off(name), want, "offset of {name}");
        }
    }

    #[test]
    fn tcp_info_fields_beyond_len_are_null() {
        let mut info = TcpInfo {
            raw: [0; TCP_INFO_BUF],
            len: 232,
        };
        info.raw[120..128].copy_from_slice(&100_001u64.to_ne_bytes());
        assert_eq!(info.get("bytes_acked"), Some(100_001));
        assert_eq!(info.get("snd_wnd"), Some(0));
        assert_eq!(info.get("rcv_wnd"), None);
        assert!(info.to_json()["rcv_wnd"].is_null());
    }

    #[test]
    fn sockaddr_round_trip() {
        for s in ["192.0.2.1:80", "[2001:db8::1]:443", "127.0.0.1:0"] {
            let a: SocketAddr = s.parse().unwrap();
            let (ss, _) = raw_sockaddr(&a);
            assert_eq!(from_raw_sockaddr(&ss), Some(a));
        }
    }

    #[test]
    fn secs_parsing() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("99999").is_err());
    }
}
