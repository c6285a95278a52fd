//! What each way of hooking `netlens cost` adds per event, measured inside
//! one process so that the machine's own drift (10-30 % from one second to
//! the next on these VMs) cancels out: the cost BPF object is loaded once,
//! with both system call hooks; each round attaches one configuration at a
//! time for a short window, during which a thread pinned to one CPU runs
//! system call loops, and every configuration is compared with the window
//! with nothing attached of the same round.
//!
//! Configurations:
//! - `per-call`: the per-call system call tracepoints and sched_switch
//!   (what `netlens cost` uses where the kernel has them);
//! - `raw_syscalls`: the raw_syscalls fallback and sched_switch;
//! - `softirq`: the softirq and IRQ handler programs only;
//! - `one syscall tp`: a single per-call program, on io_uring_enter's exit,
//!   which none of the loops makes: what any system call tracepoint with a
//!   user costs every system call of the host (the kernel then sends every
//!   task through its slow system call path; this tracepoint's probe tests
//!   a bitmap and returns).
//!
//! Loops (ns per system call):
//! - `getppid`: a system call that is no network call;
//! - `write /dev/null`: a write on a descriptor that is no socket;
//! - `recvfrom EAGAIN`: recvfrom on an empty non-blocking UDP socket, a
//!   network call (timed as RX) that does almost nothing else;
//! - `read EAGAIN`: the same with read, whose descriptor is tested;
//! - `udp sendto+recvfrom`: one byte over loopback UDP (NET_RX runs inside
//!   sendto: one softirq per packet).
//!
//! Run as root: `cargo bench --bench cost_hooks`. Output on stdout and in
//! target/bench-cost-hooks.json.

#[path = "../tests/common/mod.rs"]
mod common;

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};
use netlens::bpfio::Tracepoint;
use netlens::cost::probes::{
    COST_RAW_SYSCALL_TRACEPOINTS, COST_SYSCALL_TRACEPOINTS, COST_TRACEPOINTS,
};
use netlens::cost::skel::{CostSkel, CostSkelBuilder};
use serde_json::json;

const ROUNDS: usize = 15;
/// Runs of each loop per window; the fastest counts.
const REPEAT: usize = 5;
/// The CPU the loops run on.
const CPU: usize = 1;

#[derive(Clone, Copy)]
enum Config {
    Nothing,
    OneSyscallTracepoint,
    PerCall,
    Raw,
    Softirq,
}

impl Config {
    const ALL: [Config; 5] = [
        Config::Nothing,
        Config::OneSyscallTracepoint,
        Config::PerCall,
        Config::Raw,
        Config::Softirq,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::Nothing => "nothing",
            Config::OneSyscallTracepoint => "one syscall tp",
            Config::PerCall => "per-call",
            Config::Raw => "raw_syscalls",
            Config::Softirq => "softirq",
        }
    }

    /// The programs attached, in the collector's order.
    fn programs(self) -> Vec<&'static Tracepoint> {
        let sched = COST_TRACEPOINTS.iter().filter(|tp| tp.category == "sched");
        match self {
            Config::Nothing => Vec::new(),
            Config::OneSyscallTracepoint => COST_SYSCALL_TRACEPOINTS
                .iter()
                .filter(|tp| tp.name == "sys_exit_io_uring_enter")
                .collect(),
            Config::PerCall => sched.chain(&COST_SYSCALL_TRACEPOINTS).collect(),
            Config::Raw => sched.chain(&COST_RAW_SYSCALL_TRACEPOINTS).collect(),
            Config::Softirq => COST_TRACEPOINTS
                .iter()
                .filter(|tp| tp.category == "irq")
                .collect(),
        }
    }
}

fn check(what: &str, ret: isize) {
    assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// The loops; each returns ns per system call.
struct Loops {
    null: std::fs::File,
    empty: std::net::UdpSocket,
    udp_tx: std::net::UdpSocket,
    udp_rx: std::net::UdpSocket,
}

impl Loops {
    const NAMES: [&'static str; 5] = [
        "getppid",
        "write /dev/null",
        "recvfrom EAGAIN",
        "read EAGAIN",
        "udp sendto+recvfrom",
    ];

    fn new() -> Loops {
        let empty = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        empty.set_nonblocking(true).expect("non-blocking");
        let udp_rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let udp_tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp_tx
            .connect(udp_rx.local_addr().unwrap())
            .expect("connect");
        Loops {
            null: std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .expect("open /dev/null"),
            empty,
            udp_tx,
            udp_rx,
        }
    }

    fn run(&self, which: usize) -> f64 {
        let (n, calls) = match which {
            0..=3 => (100_000, 1),
            _ => (30_000, 2),
        };
        let mut b = [0u8; 1];
        let start = thread_cpu_ns();
        for _ in 0..n {
            // SAFETY: plain system calls on descriptors this struct owns,
            // with a one-byte buffer that outlives them.
            unsafe {
                match which {
                    0 => {
                        libc::syscall(libc::SYS_getppid);
                    }
                    1 => check(
                        "write",
                        libc::write(self.null.as_raw_fd(), b.as_ptr().cast(), 1),
                    ),
                    2 => {
                        let ret = libc::recv(self.empty.as_raw_fd(), b.as_mut_ptr().cast(), 1, 0);
                        assert_eq!(ret, -1, "recvfrom on an empty socket");
                    }
                    3 => {
                        let ret = libc::read(self.empty.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                        assert_eq!(ret, -1, "read on an empty socket");
                    }
                    _ => {
                        check(
                            "sendto",
                            libc::send(self.udp_tx.as_raw_fd(), b.as_ptr().cast(), 1, 0),
                        );
                        check(
                            "recvfrom",
                            libc::recv(self.udp_rx.as_raw_fd(), b.as_mut_ptr().cast(), 1, 0),
                        );
                    }
                }
            }
        }
        (thread_cpu_ns() - start) as f64 / (n * calls) as f64
    }
}

/// This thread's CPU time: without the time its virtual CPU was not
/// running (steal), which wall time would count.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The median (upper middle for an even count); `v` must not be empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only touch that local set and this thread.
    unsafe {
        let mut mask: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut mask);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask);
    }
}

fn load() -> CostSkel<'static> {
    let object: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = CostSkelBuilder::default().open(object).expect("open");
    let rodata = open.maps.rodata_data.as_deref_mut().expect("rodata");
    for (nr, kind) in netlens::cost::syscalls::table() {
        rodata.syscall_kind[nr] = kind.0 as u8;
    }
    open.progs.on_sample.set_autoload(false);
    open.progs.on_tick.set_autoload(false);
    open.load().expect("load the cost BPF object")
}

fn attach(skel: &mut CostSkel<'static>, config: Config) -> Vec<Link> {
    config
        .programs()
        .into_iter()
        .map(|tp| {
            skel.object_mut()
                .progs_mut()
                .find(|p| p.name() == tp.program)
                .unwrap_or_else(|| panic!("no program {}", tp.program))
                .attach()
                .unwrap_or_else(|e| panic!("attach {}: {e}", tp.program))
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("hook cost benchmark: run it with `cargo bench --bench cost_hooks` (as root)");
        return;
    }
    if !common::require_root() {
        return;
    }
    let mut skel = load();
    pin(CPU);
    let loops = Loops::new();
    // [config][loop] -> ns per call, one per round
    let mut ns = vec![vec![Vec::new(); Loops::NAMES.len()]; Config::ALL.len()];
    for round in 0..ROUNDS {
        // The fastest of REPEAT runs per configuration and loop, the
        // configurations taking turns run by run.
        let mut best = vec![vec![f64::INFINITY; Loops::NAMES.len()]; Config::ALL.len()];
        for rep in 0..REPEAT {
            for k in 0..Config::ALL.len() {
                let c = (k + round + rep) % Config::ALL.len();
                let links = attach(&mut skel, Config::ALL[c]);
                for (l, b) in best[c].iter_mut().enumerate() {
                    *b = b.min(loops.run(l));
                }
                drop(links);
            }
        }
        for (c, per_config) in best.iter().enumerate() {
            for (l, b) in per_config.iter().enumerate() {
                ns[c][l].push(*b);
            }
        }
        eprintln!(
            "round {round}: {}",
            Config::ALL
                .iter()
                .enumerate()
                .map(|(c, cfg)| format!(
                    "{} [{}]",
                    cfg.name(),
                    ns[c]
                        .iter()
                        .map(|v| format!("{:.0}", v[round]))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "ns per system call with nothing attached, and added by each configuration (median over \
         {ROUNDS} rounds of the difference to the same round's window with nothing; [min..max])"
    );
    println!(
        "{:14} {}",
        "",
        Loops::NAMES
            .iter()
            .map(|n| format!("{n:>26}"))
            .collect::<String>()
    );
    let mut out = serde_json::Map::new();
    for (c, cfg) in Config::ALL.iter().enumerate() {
        let mut cells = String::new();
        let mut per_loop = serde_json::Map::new();
        for (l, name) in Loops::NAMES.iter().enumerate() {
            let v: Vec<f64> = if c == 0 {
                ns[0][l].clone()
            } else {
                ns[c][l].iter().zip(&ns[0][l]).map(|(a, b)| a - b).collect()
            };
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                });
            let m = median(v.clone());
            cells += &format!("{:>26}", format!("{m:.1} [{lo:.0}..{hi:.0}]"));
            per_loop.insert(
                (*name).into(),
                json!({"median": m, "min": lo, "max": hi, "rounds": v}),
            );
        }
        println!("{:14} {cells}", cfg.name());
        out.insert(cfg.name().into(), serde_json::Value::Object(per_loop));
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cost-hooks.json");
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()) {
        eprintln!("writing {}: {e}", path.display());
    }
}
