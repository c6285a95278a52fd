//! The pure part of `netlens check`: from what the host offers, which
//! netlens features work, and a readable report of it.

use std::fmt::Write as _;

use super::caps;
use super::kernel::{Hook, KernelVersion, VMLINUX_BTF};

/// One line of the check report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub available: bool,
    /// `netlens conns` cannot run without it; a missing optional feature
    /// only costs some detail.
    pub required: bool,
    /// `netlens cost` cannot run without it.
    pub required_by_cost: bool,
    pub detail: String,
}

/// The kernel facilities netlens's programs use, with the mainline release
/// that brought each and the commands that need it. `check` names those a
/// kernel older than that would lack, as a warning only: distributions
/// backport BPF features, and the load test, not the version, decides.
/// Tested: the kernels of the matrix (scripts/test-kernels.sh), 6.1 on.
pub const KERNEL_FACILITIES: [(u32, u32, &str, &str); 8] = [
    (5, 5, "tp_btf programs", "conns, cost"),
    (5, 8, "the BPF ring buffer", "conns, cost"),
    (5, 8, "the iter/task_file iterator", "conns"),
    (
        5,
        9,
        "bpf_skc_to_tcp_sock and the iter/tcp iterator",
        "conns",
    ),
    (5, 11, "bpf_get_current_task_btf", "conns, cost"),
    (5, 11, "bpf_sock_from_file", "conns"),
    (5, 12, "BPF atomic exchange and fetch-and-add", "conns"),
    (5, 12, "task storage in tracing programs", "cost"),
];

/// A tracepoint `conns` attaches to, the BPF program attached there, and
/// what is lost without it. The collector attaches from this table too, so
/// `check` and a running `conns` tell the same story.
pub struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
    /// The program in src/bpf/conns.bpf.c (or cost.bpf.c).
    pub program: &'static str,
    /// How the program attaches (its section in the .bpf.c file).
    pub hook: Hook,
    pub required: bool,
    /// What it gives when present.
    pub gives: &'static str,
    /// What netlens loses when it is absent.
    pub without: &'static str,
}

pub const TRACEPOINTS: [Tracepoint; 3] = [
    Tracepoint {
        category: "sock",
        name: "inet_sock_set_state",
        program: "on_set_state",
        hook: Hook::TpBtf,
        required: true,
        gives: "connection open, state changes and close",
        without: "connections cannot be tracked at all",
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_accept",
        program: "on_accept_exit_tp",
        hook: Hook::Tracefs,
        required: false,
        gives: "owner of inbound connections accepted with accept()",
        without: "inbound connections accepted with accept() get their owner \
                  from /proc at the next refresh, and none if they close before",
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_accept4",
        program: "on_accept4_exit",
        hook: Hook::Tracefs,
        required: false,
        gives: "owner of inbound connections accepted with accept4()",
        without: "inbound connections accepted with accept4() get their owner \
                  from /proc at the next refresh, and none if they close before",
    },
];

/// The exit programs of all the calls, then their enter programs.
macro_rules! syscall_tracepoints {
    ($($event:literal),*) => {
        [
            $(Tracepoint {
                category: "syscalls",
                name: concat!("sys_exit_", $event),
                program: concat!("on_exit_", $event),
                hook: Hook::Tracefs,
                required: true,
                gives: concat!("end of ", $event),
                without: "no system call time",
            },)*
            $(Tracepoint {
                category: "syscalls",
                name: concat!("sys_enter_", $event),
                program: concat!("on_enter_", $event),
                hook: Hook::Tracefs,
                required: true,
                gives: concat!("start of ", $event),
                without: "no system call time",
            },)*
        ]
    };
}

/// The per-call system call tracepoints `cost` uses where the kernel has
/// them all (see [`SyscallHook`]): an exit and an enter program for each
/// call of `cost::syscalls::all()`, exits first, so that whatever an enter
/// program opens, an exit program attached before it closes.
pub const COST_SYSCALL_TRACEPOINTS: [Tracepoint; 30] = syscall_tracepoints!(
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "write",
    "writev",
    "pwritev2",
    "sendfile64",
    "read",
    "readv",
    "preadv2",
    "splice",
    "io_uring_enter"
);

/// The fallback for system calls where a per-call tracepoint is missing:
/// programs that run on every system call of the host (exit first, as
/// above).
pub const COST_RAW_SYSCALL_TRACEPOINTS: [Tracepoint; 2] = [
    Tracepoint {
        category: "raw_syscalls",
        name: "sys_exit",
        program: "on_sys_exit",
        hook: Hook::TpBtf,
        required: true,
        gives: "end of TX/RX system calls (its program runs on every system call of the host)",
        without: "no system call time",
    },
    Tracepoint {
        category: "raw_syscalls",
        name: "sys_enter",
        program: "on_sys_enter",
        hook: Hook::TpBtf,
        required: true,
        gives: "start of TX/RX system calls (its program runs on every system call of the host)",
        without: "no system call time",
    },
];

/// How `cost` hooks TX/RX system calls on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallHook {
    /// The per-call tracepoints, [`COST_SYSCALL_TRACEPOINTS`]: programs run
    /// on those calls only.
    PerCall,
    /// `raw_syscalls:sys_enter/sys_exit`, [`COST_RAW_SYSCALL_TRACEPOINTS`],
    /// because these per-call tracepoints are missing, or could not be
    /// checked (`known`: false).
    Raw {
        missing: Vec<&'static str>,
        known: bool,
    },
}

impl SyscallHook {
    /// The per-call tracepoints when the kernel offers every one of them
    /// (asked through `offered`, the kernel probe), else raw_syscalls. Never
    /// by kernel version: CONFIG_FTRACE_SYSCALLS decides.
    pub fn choose(offered: &dyn Fn(&Tracepoint) -> Option<bool>) -> SyscallHook {
        let mut missing = Vec::new();
        let mut known = true;
        for tp in &COST_SYSCALL_TRACEPOINTS {
            match offered(tp) {
                Some(true) => {}
                Some(false) => missing.push(tp.name),
                None => {
                    known = false;
                    missing.push(tp.name);
                }
            }
        }
        if missing.is_empty() {
            SyscallHook::PerCall
        } else {
            SyscallHook::Raw { missing, known }
        }
    }

    /// The tracepoints `cost` attaches for system calls, exits first.
    pub fn tracepoints(&self) -> &'static [Tracepoint] {
        match self {
            SyscallHook::PerCall => &COST_SYSCALL_TRACEPOINTS,
            SyscallHook::Raw { .. } => &COST_RAW_SYSCALL_TRACEPOINTS,
        }
    }

    /// The other way's tracepoints, whose programs are not loaded.
    pub fn unused(&self) -> &'static [Tracepoint] {
        match self {
            SyscallHook::PerCall => &COST_RAW_SYSCALL_TRACEPOINTS,
            SyscallHook::Raw { .. } => &COST_SYSCALL_TRACEPOINTS,
        }
    }

    /// One phrase for status lines: what times system calls.
    pub fn describe(&self) -> &'static str {
        match self {
            SyscallHook::PerCall => "system calls timed by their own tracepoints",
            SyscallHook::Raw { .. } => {
                "system calls timed by raw_syscalls (the per-call system call tracepoints are \
                 missing, or refused to this process: `netlens check` says which; a BPF program \
                 runs on every system call)"
            }
        }
    }
}

/// The other tracepoints `cost` attaches to (`required`: required by cost),
/// before those of its [`SyscallHook`]. The cost collector attaches from
/// this table.
pub const COST_TRACEPOINTS: [Tracepoint; 6] = [
    Tracepoint {
        category: "sched",
        name: "sched_switch",
        program: "on_sched_switch",
        hook: Hook::TpBtf,
        required: true,
        gives: "pausing spans across context switches; NAPI thread time",
        without: "time off the CPU would be counted",
    },
    Tracepoint {
        category: "irq",
        name: "softirq_entry",
        program: "on_softirq_entry",
        hook: Hook::TpBtf,
        required: true,
        gives: "start of NET_TX/NET_RX softirqs",
        without: "no softirq time",
    },
    Tracepoint {
        category: "irq",
        name: "softirq_exit",
        program: "on_softirq_exit",
        hook: Hook::TpBtf,
        required: true,
        gives: "end of NET_TX/NET_RX softirqs",
        without: "no softirq time",
    },
    Tracepoint {
        category: "irq",
        name: "irq_handler_entry",
        program: "on_irq_entry",
        hook: Hook::TpBtf,
        required: true,
        gives: "start of hard IRQ handlers",
        without: "no hard IRQ time, and it would be counted in what it interrupted",
    },
    Tracepoint {
        category: "irq",
        name: "irq_handler_exit",
        program: "on_irq_exit",
        hook: Hook::TpBtf,
        required: true,
        gives: "end of hard IRQ handlers",
        without: "no hard IRQ time, and it would be counted in what it interrupted",
    },
    Tracepoint {
        category: "io_uring",
        name: "io_uring_complete",
        program: "on_io_uring_complete",
        hook: Hook::TpBtf,
        required: false,
        gives: "io_uring socket operations (io-wq workers, io_uring_enter)",
        without: "no io_uring worker time, and no io_uring_enter time for socket operations",
    },
];

fn kernel_feature(kernel: KernelVersion) -> Feature {
    let lacking: Vec<String> = KERNEL_FACILITIES
        .iter()
        .filter(|(major, minor, _, _)| !kernel.at_least(*major, *minor))
        .map(|(major, minor, what, who)| format!("{what} ({major}.{minor}, {who})"))
        .collect();
    Feature {
        name: "kernel".into(),
        available: lacking.is_empty(),
        // The load test decides: a distribution kernel may have backports.
        required: false,
        required_by_cost: false,
        detail: if lacking.is_empty() {
            format!("{kernel}: has every BPF facility netlens uses (5.12 on)")
        } else {
            format!(
                "{kernel} is older than mainline's {}; unless backported, what needs them \
                 will not load (the load test tells)",
                lacking.join(", ")
            )
        },
    }
}

fn btf_feature(btf: bool) -> Feature {
    let detail = if btf {
        format!("{VMLINUX_BTF} present")
    } else {
        format!(
            "{VMLINUX_BTF} missing: the kernel was built without \
             CONFIG_DEBUG_INFO_BTF; BPF CO-RE and tp_btf programs need it"
        )
    };
    Feature {
        name: "BTF".into(),
        available: btf,
        required: true,
        required_by_cost: true,
        detail,
    }
}

fn caps_features(host: &Host) -> [Feature; 3] {
    let line = |missing: Vec<&str>, what: &str| {
        if missing.is_empty() {
            format!("all that {what} needs held")
        } else {
            format!(
                "{what} lacks {}; run as root or grant them (setcap)",
                missing.join(", ")
            )
        }
    };
    let conns = caps::missing_for_conns(host.caps_eff, host.kernel);
    let cost = caps::missing_for_cost(host.caps_eff, host.kernel, host.kallsyms_hidden);
    let admin = caps::has(host.caps_eff, caps::CAP_SYS_ADMIN);
    [
        Feature {
            name: "capabilities".into(),
            available: conns.is_empty(),
            required: true,
            required_by_cost: false,
            detail: line(conns, "conns"),
        },
        Feature {
            name: "capabilities for cost".into(),
            available: cost.is_empty(),
            required: false,
            required_by_cost: true,
            detail: line(cost, "cost (with stack sampling)"),
        },
        Feature {
            name: "CAP_SYS_ADMIN".into(),
            available: admin,
            required: false,
            required_by_cost: false,
            detail: if admin {
                "held: seeding enters every network namespace; BPF run-time statistics".into()
            } else {
                format!("not held: {}", caps::LOST_WITHOUT_SYS_ADMIN)
            },
        },
    ]
}

/// What `check` knows of the host before looking at tracepoints.
pub struct Host {
    pub kernel: KernelVersion,
    /// /sys/kernel/btf/vmlinux exists.
    pub btf: bool,
    /// The effective capability mask of this process.
    pub caps_eff: u64,
    /// /proc/kallsyms shows this process zeros instead of addresses.
    pub kallsyms_hidden: bool,
    /// The kernel refuses this process perf events (perf_event_paranoid
    /// above 2 without CAP_SYS_ADMIN), so tracefs tracepoints cannot attach.
    pub perf_refused: bool,
}

/// Why a tracefs tracepoint the kernel has cannot be used by this process.
const PERF_REFUSED: &str = "refused: kernel.perf_event_paranoid is above 2 and CAP_SYS_ADMIN \
                            is not held, so tracepoint programs cannot attach (grant \
                            CAP_SYS_ADMIN or set the sysctl to 2)";

/// A tracepoint's line: `offered` is what the kernel probe said (None:
/// this process could not tell, which needs privileges for tracefs).
fn tracepoint_feature(host: &Host, tp: &Tracepoint, offered: Option<bool>, cost: bool) -> Feature {
    let name = format!("tracepoint {}/{}", tp.category, tp.name);
    let prefix = if cost { "cost: " } else { "" };
    let refused = host.perf_refused && tp.hook == Hook::Tracefs;
    let Some(available) = offered else {
        return Feature {
            name,
            available: false,
            required: false,
            required_by_cost: false,
            detail: "not checked: tracefs cannot be read without privileges".into(),
        };
    };
    Feature {
        name,
        available,
        required: tp.required && !cost,
        required_by_cost: tp.required && cost,
        detail: if available {
            format!("{prefix}{}", tp.gives)
        } else if refused {
            format!("{PERF_REFUSED}; {prefix}{}", tp.without)
        } else {
            format!("missing: {prefix}{}", tp.without)
        },
    }
}

/// The name of the line of the per-call system call tracepoints.
pub const SYSCALL_LINE: &str = "tracepoints syscalls/sys_*_<call>";

/// The lines of `cost`'s system call hook: the per-call tracepoints, and
/// the raw_syscalls ones when cost falls back to them (only then are they
/// asked for, and required).
fn syscall_features(
    host: &Host,
    hook: &SyscallHook,
    offered: &dyn Fn(&Tracepoint) -> Option<bool>,
) -> Vec<Feature> {
    let name = SYSCALL_LINE.to_string();
    let (missing, known) = match hook {
        SyscallHook::PerCall => {
            let half = COST_SYSCALL_TRACEPOINTS.len() / 2;
            let calls: Vec<&str> = COST_SYSCALL_TRACEPOINTS[..half]
                .iter()
                .map(|tp| tp.name.trim_start_matches("sys_exit_"))
                .collect();
            return vec![Feature {
                name,
                available: true,
                required: false,
                required_by_cost: false,
                detail: format!(
                    "cost: TX/RX system calls, each timed on its own tracepoints ({}): no \
                     program runs on any other system call",
                    calls.join(", ")
                ),
            }];
        }
        SyscallHook::Raw { missing, known } => (missing, *known),
    };
    let detail = if known && host.perf_refused {
        format!(
            "{PERF_REFUSED}; cost: TX/RX system calls from raw_syscalls instead, whose programs \
             run on every system call of the host"
        )
    } else if !known {
        "not checked: tracefs cannot be read without privileges; cost: where they are \
         missing, raw_syscalls instead"
            .to_string()
    } else {
        let which = if missing.len() == COST_SYSCALL_TRACEPOINTS.len() {
            "all of them (as on a kernel built without CONFIG_FTRACE_SYSCALLS)".to_string()
        } else {
            missing
                .iter()
                .map(|n| format!("syscalls:{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "missing: {which}; cost: TX/RX system calls from raw_syscalls instead, whose \
             programs run on every system call of the host"
        )
    };
    let mut features = vec![Feature {
        name,
        available: false,
        required: false,
        required_by_cost: false,
        detail,
    }];
    for tp in &COST_RAW_SYSCALL_TRACEPOINTS {
        let mut f = tracepoint_feature(host, tp, offered(tp), true);
        // Needed only where the per-call ones are known to be missing.
        f.required_by_cost &= known;
        features.push(f);
    }
    features
}

/// What the host offers `netlens conns` and `netlens cost`: kernel version,
/// BTF, capabilities, and each tracepoint as answered by `offered` (the
/// kernel probe).
pub fn report(host: &Host, offered: &dyn Fn(&Tracepoint) -> Option<bool>) -> Vec<Feature> {
    let mut features = vec![kernel_feature(host.kernel), btf_feature(host.btf)];
    features.extend(caps_features(host));
    features.extend(
        TRACEPOINTS
            .iter()
            .map(|tp| tracepoint_feature(host, tp, offered(tp), false)),
    );
    features.extend(syscall_features(
        host,
        &SyscallHook::choose(offered),
        offered,
    ));
    for tp in &COST_TRACEPOINTS {
        let name = format!("tracepoint {}/{}", tp.category, tp.name);
        // Shared with conns: one line telling both.
        if let Some(f) = features.iter_mut().find(|f| f.name == name) {
            if f.detail.starts_with("not checked") {
                continue;
            }
            f.required_by_cost |= tp.required;
            let _ = write!(
                f.detail,
                "; cost: {}",
                if f.available { tp.gives } else { tp.without }
            );
            continue;
        }
        features.push(tracepoint_feature(host, tp, offered(tp), true));
    }
    features
}

/// True if every feature `cost` needs is available.
pub fn cost_can_run(features: &[Feature]) -> bool {
    features.iter().all(|f| f.available || !f.required_by_cost)
}

/// True if every required feature is available.
pub fn conns_can_run(features: &[Feature]) -> bool {
    features.iter().all(|f| f.available || !f.required)
}

/// The feature lines: `ok`, `FAIL` for a missing required feature, `warn`
/// for a missing optional one.
pub fn format_features(features: &[Feature]) -> String {
    let width = features.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in features {
        let mark = match (f.available, f.required || f.required_by_cost) {
            (true, _) => " ok ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "[{mark}] {:<width$}  {}", f.name, f.detail);
    }
    out
}

/// The outcome of loading and attaching a command's real programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadTest {
    /// Not tried: the report already says the command cannot run.
    NotRun,
    Passed,
    Failed(String),
}

/// One verdict line per command, from the features and the load tests: a
/// command "can run" only when its load test passed.
pub fn format_verdict(features: &[Feature], conns: &LoadTest, cost: &LoadTest) -> String {
    let mut out = String::new();
    let failed = |name: &str, test: &LoadTest, out: &mut String| -> bool {
        match test {
            LoadTest::Failed(e) => {
                let _ = writeln!(
                    out,
                    "netlens {name}: cannot run: its BPF programs do not load: {e}"
                );
                true
            }
            _ => false,
        }
    };
    if !conns_can_run(features) {
        out.push_str("netlens conns: cannot run; fix the FAIL lines above\n");
    } else if !failed("conns", conns, &mut out) {
        let degraded = features
            .iter()
            .filter(|f| !f.available && !f.required_by_cost)
            .count();
        if degraded == 0 {
            out.push_str("netlens conns: can run, with every feature\n");
        } else {
            let _ = writeln!(
                out,
                "netlens conns: can run, with less detail ({degraded} warning{})",
                if degraded == 1 { "" } else { "s" }
            );
        }
    }
    if !cost_can_run(features) {
        out.push_str("netlens cost: cannot run; fix the FAIL lines above\n");
    } else if !failed("cost", cost, &mut out) {
        out.push_str("netlens cost: can run\n");
    }
    out
}

/// The whole report when the load tests passed (what a healthy host
/// prints).
pub fn format_report(features: &[Feature]) -> String {
    format_features(features) + &format_verdict(features, &LoadTest::Passed, &LoadTest::Passed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::caps::{CAP_BPF, CAP_DAC_READ_SEARCH, CAP_PERFMON, CAP_SYS_PTRACE};

    const NEW: KernelVersion = KernelVersion::new(6, 18, 44);
    const ALL_CAPS: u64 = u64::MAX;

    fn host(kernel: KernelVersion, btf: bool, caps_eff: u64) -> Host {
        Host {
            kernel,
            btf,
            caps_eff,
            kallsyms_hidden: false,
            perf_refused: false,
        }
    }

    fn all_tracepoints(_: &Tracepoint) -> Option<bool> {
        Some(true)
    }

    fn find<'a>(features: &'a [Feature], name: &str) -> &'a Feature {
        features
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no feature {name}"))
    }

    #[test]
    fn healthy_host_is_all_ok() {
        let features = report(&host(NEW, true, ALL_CAPS), &all_tracepoints);
        // No tracepoint serves both commands today: a line each, and one
        // for all the per-call system call tracepoints.
        assert_eq!(
            features.len(),
            5 + TRACEPOINTS.len() + 1 + COST_TRACEPOINTS.len()
        );
        assert!(features.iter().all(|f| f.available));
        assert!(conns_can_run(&features));
        assert!(cost_can_run(&features));
        let text = format_report(&features);
        assert!(!text.contains("FAIL") && !text.contains("warn"), "{text}");
        assert!(text.contains("6.18.44"), "{text}");
        assert!(
            text.contains("cost: io_uring socket operations (io-wq workers, io_uring_enter)"),
            "{text}"
        );
        // The per-call system call tracepoints, and not the fallback.
        let line = find(&features, SYSCALL_LINE);
        assert!(line.available && !line.required && !line.required_by_cost);
        assert!(
            line.detail.contains("(sendto, sendmsg, sendmmsg, recvfrom")
                && line
                    .detail
                    .contains("no program runs on any other system call"),
            "{}",
            line.detail
        );
        assert!(!text.contains("raw_syscalls"), "{text}");
        assert!(
            text.ends_with("netlens conns: can run, with every feature\nnetlens cost: can run\n")
        );
    }

    #[test]
    fn old_kernels_get_a_warning_and_the_load_test_decides() {
        for (v, ok, lacks) in [
            (KernelVersion::new(5, 12, 0), true, ""),
            (KernelVersion::new(5, 11, 22), false, "atomic"),
            (KernelVersion::new(5, 8, 18), false, "bpf_skc_to_tcp_sock"),
            (KernelVersion::new(5, 4, 0), false, "tp_btf"),
        ] {
            let features = report(&host(v, true, ALL_CAPS), &all_tracepoints);
            let k = find(&features, "kernel");
            assert_eq!(k.available, ok, "{v}");
            assert!(!k.required && !k.required_by_cost, "{v}");
            assert!(k.detail.contains(lacks), "{v}: {}", k.detail);
            assert!(conns_can_run(&features) && cost_can_run(&features), "{v}");
        }
        let features = report(
            &host(KernelVersion::new(5, 10, 0), true, ALL_CAPS),
            &all_tracepoints,
        );
        let detail = &find(&features, "kernel").detail;
        assert!(
            detail.contains("task storage in tracing programs (5.12, cost)"),
            "{detail}"
        );
        assert!(!detail.contains("ring buffer"), "{detail}");
    }

    #[test]
    fn missing_btf_blocks_conns() {
        let features = report(&host(NEW, false, ALL_CAPS), &all_tracepoints);
        let btf = find(&features, "BTF");
        assert!(!btf.available && btf.detail.contains("CONFIG_DEBUG_INFO_BTF"));
        assert!(!conns_can_run(&features));
        assert!(format_report(&features).contains("[FAIL] BTF"));
    }

    #[test]
    fn missing_capabilities_are_named() {
        let eff = 1 << CAP_BPF | 1 << CAP_SYS_PTRACE | 1 << CAP_DAC_READ_SEARCH;
        let features = report(&host(NEW, true, eff), &all_tracepoints);
        let caps = find(&features, "capabilities");
        assert!(!caps.available);
        assert!(caps.detail.contains("CAP_PERFMON"), "{}", caps.detail);
        assert!(!caps.detail.contains("CAP_BPF"), "{}", caps.detail);
        assert!(!conns_can_run(&features));

        let eff = eff | 1 << CAP_PERFMON;
        assert!(conns_can_run(&report(
            &host(NEW, true, eff),
            &all_tracepoints
        )));
    }

    #[test]
    fn optional_tracepoints_only_warn() {
        let no_accept4 = |tp: &Tracepoint| Some(tp.name != "sys_exit_accept4");
        let features = report(&host(NEW, true, ALL_CAPS), &no_accept4);
        let tp = find(&features, "tracepoint syscalls/sys_exit_accept4");
        assert!(!tp.available && !tp.required);
        assert!(tp.detail.contains("from /proc at the next refresh"));
        assert!(conns_can_run(&features));
        let text = format_report(&features);
        assert!(
            text.contains("[warn] tracepoint syscalls/sys_exit_accept4"),
            "{text}"
        );
        assert!(
            text.contains("can run, with less detail (1 warning)"),
            "{text}"
        );
    }

    #[test]
    fn inet_sock_set_state_is_required() {
        let none = |_: &Tracepoint| Some(false);
        let features = report(&host(NEW, true, ALL_CAPS), &none);
        assert!(!conns_can_run(&features));
        let tp = find(&features, "tracepoint sock/inet_sock_set_state");
        assert!(tp.required && !tp.available);
        let syscalls = find(&features, "tracepoint syscalls/sys_exit_accept4");
        assert!(syscalls.detail.contains("from /proc at the next refresh"));
        assert!(!cost_can_run(&features));
        assert!(format_report(&features).contains("conns: cannot run; fix the FAIL lines above\n"));
        assert!(format_report(&features).ends_with("cost: cannot run; fix the FAIL lines above\n"));
    }

    #[test]
    fn asks_for_exactly_the_listed_tracepoints() {
        let asked = std::cell::RefCell::new(Vec::new());
        let record = |tp: &Tracepoint| {
            asked
                .borrow_mut()
                .push(format!("{}/{}", tp.category, tp.name));
            Some(true)
        };
        report(&host(NEW, true, ALL_CAPS), &record);
        let asked = asked.into_inner();
        let per_call: Vec<String> = COST_SYSCALL_TRACEPOINTS
            .iter()
            .map(|tp| format!("syscalls/{}", tp.name))
            .collect();
        // The per-call system call tracepoints; raw_syscalls are not asked
        // about when they are all there.
        let conns = TRACEPOINTS.len();
        let end = conns + per_call.len();
        assert_eq!(asked[conns..end], per_call);
        assert!(per_call.contains(&"syscalls/sys_enter_sendto".to_string()));
        assert!(per_call.contains(&"syscalls/sys_exit_io_uring_enter".to_string()));
        let others: Vec<&str> = asked[..conns]
            .iter()
            .chain(&asked[end..])
            .map(String::as_str)
            .collect();
        assert_eq!(
            others,
            [
                "sock/inet_sock_set_state",
                "syscalls/sys_exit_accept",
                "syscalls/sys_exit_accept4",
                "sched/sched_switch",
                "irq/softirq_entry",
                "irq/softirq_exit",
                "irq/irq_handler_entry",
                "irq/irq_handler_exit",
                "io_uring/io_uring_complete",
            ]
        );
    }

    /// A kernel without CONFIG_FTRACE_SYSCALLS: no `syscalls` category at
    /// all (conns then loses its accept owners, cost falls back).
    fn no_syscalls_category(tp: &Tracepoint) -> Option<bool> {
        Some(tp.category != "syscalls")
    }

    #[test]
    fn the_per_call_system_call_tracepoints_are_chosen_when_all_are_there() {
        assert_eq!(SyscallHook::choose(&all_tracepoints), SyscallHook::PerCall);
        let hook = SyscallHook::choose(&no_syscalls_category);
        let SyscallHook::Raw { missing, known } = &hook else {
            panic!("{hook:?}")
        };
        assert!(known);
        assert_eq!(missing.len(), COST_SYSCALL_TRACEPOINTS.len());
        // One missing is enough to fall back: raw_syscalls covers them all.
        let no_splice = |tp: &Tracepoint| Some(tp.name != "sys_enter_splice");
        assert_eq!(
            SyscallHook::choose(&no_splice),
            SyscallHook::Raw {
                missing: vec!["sys_enter_splice"],
                known: true
            }
        );
        let unknown = |tp: &Tracepoint| (tp.category != "syscalls").then_some(true);
        assert!(matches!(
            SyscallHook::choose(&unknown),
            SyscallHook::Raw { known: false, .. }
        ));
        // What is attached, exits before enters; and what is not loaded.
        assert_eq!(SyscallHook::PerCall.tracepoints().len(), 30);
        assert_eq!(hook.tracepoints()[0].program, "on_sys_exit");
        assert_eq!(hook.tracepoints()[1].program, "on_sys_enter");
        assert_eq!(hook.unused().len(), 30);
        assert_eq!(SyscallHook::PerCall.unused()[0].name, "sys_exit");
        assert!(SyscallHook::PerCall
            .describe()
            .contains("their own tracepoints"));
        assert!(hook.describe().contains("raw_syscalls"));
    }

    #[test]
    fn without_per_call_tracepoints_cost_falls_back_to_raw_syscalls() {
        let features = report(&host(NEW, true, ALL_CAPS), &no_syscalls_category);
        assert!(cost_can_run(&features));
        let line = find(&features, SYSCALL_LINE);
        assert!(!line.available && !line.required && !line.required_by_cost);
        assert!(
            line.detail.contains("CONFIG_FTRACE_SYSCALLS")
                && line.detail.contains("raw_syscalls instead"),
            "{}",
            line.detail
        );
        for name in ["sys_enter", "sys_exit"] {
            let raw = find(&features, &format!("tracepoint raw_syscalls/{name}"));
            assert!(raw.available && raw.required_by_cost && !raw.required);
            assert!(raw.detail.contains("every system call of the host"));
        }
        let text = format_report(&features);
        assert!(
            text.contains("[warn] tracepoints syscalls/sys_*_<call>"),
            "{text}"
        );
        assert!(text.ends_with("netlens cost: can run\n"), "{text}");

        // Some missing: they are named.
        let no_splice = |tp: &Tracepoint| Some(!tp.name.ends_with("_splice"));
        let features = report(&host(NEW, true, ALL_CAPS), &no_splice);
        let detail = &find(&features, SYSCALL_LINE).detail;
        assert!(
            detail.starts_with("missing: syscalls:sys_exit_splice, syscalls:sys_enter_splice;"),
            "{detail}"
        );

        // Neither way: cost cannot run, and the fallback's lines say why.
        let neither = |tp: &Tracepoint| Some(!tp.name.starts_with("sys_"));
        let features = report(&host(NEW, true, ALL_CAPS), &neither);
        assert!(!cost_can_run(&features));
        let text = format_report(&features);
        assert!(
            text.contains("[FAIL] tracepoint raw_syscalls/sys_enter"),
            "{text}"
        );

        // Not checked (tracefs unreadable): the fallback is not required.
        let unknown = |tp: &Tracepoint| (tp.category != "syscalls").then_some(true);
        let features = report(&host(NEW, true, ALL_CAPS), &unknown);
        assert!(find(&features, SYSCALL_LINE)
            .detail
            .starts_with("not checked"));
        assert!(!find(&features, "tracepoint raw_syscalls/sys_exit").required_by_cost);
    }

    #[test]
    fn cost_needs_its_tracepoints_but_not_conns_ones() {
        let no_conns_tp = |tp: &Tracepoint| Some(tp.name != "inet_sock_set_state");
        let features = report(&host(NEW, true, ALL_CAPS), &no_conns_tp);
        assert!(!conns_can_run(&features));
        assert!(cost_can_run(&features));
        let no_sched = |tp: &Tracepoint| Some(tp.category != "sched");
        let features = report(&host(NEW, true, ALL_CAPS), &no_sched);
        assert!(conns_can_run(&features));
        assert!(!cost_can_run(&features));
        assert!(format_report(&features).contains("[FAIL] tracepoint sched/sched_switch"));
    }

    #[test]
    fn names_line_up() {
        let features = report(&host(NEW, true, ALL_CAPS), &all_tracepoints);
        let text = format_report(&features);
        let columns: Vec<usize> = text
            .lines()
            .filter(|l| l.starts_with('['))
            .map(|l| {
                let after_name = l[7..].find("  ").expect("gap") + 7;
                after_name + l[after_name..].len() - l[after_name..].trim_start().len()
            })
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");
    }

    #[test]
    fn cost_capabilities_are_their_own_line() {
        let eff = 1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_SYS_PTRACE | 1 << CAP_DAC_READ_SEARCH;
        let mut h = host(NEW, true, eff);
        h.kallsyms_hidden = true;
        let features = report(&h, &all_tracepoints);
        assert!(conns_can_run(&features));
        assert!(!cost_can_run(&features));
        let cost = find(&features, "capabilities for cost");
        assert!(cost.detail.contains("CAP_SYSLOG"), "{}", cost.detail);
        let admin = find(&features, "CAP_SYS_ADMIN");
        assert!(!admin.available && !admin.required && !admin.required_by_cost);
        assert!(admin.detail.contains("not seeded"), "{}", admin.detail);
        let text = format_report(&features);
        assert!(text.contains("[FAIL] capabilities for cost"), "{text}");
        assert!(text.contains("[warn] CAP_SYS_ADMIN"), "{text}");
        assert!(
            text.ends_with(
                "netlens conns: can run, with less detail (1 warning)\n\
                 netlens cost: cannot run; fix the FAIL lines above\n"
            ),
            "{text}"
        );
        // Symbols visible without CAP_SYSLOG (kptr_restrict 0): cost runs.
        h.kallsyms_hidden = false;
        assert!(cost_can_run(&report(&h, &all_tracepoints)));
    }

    #[test]
    fn a_failed_load_test_means_cannot_run() {
        let features = report(&host(NEW, true, ALL_CAPS), &all_tracepoints);
        let text = format_verdict(
            &features,
            &LoadTest::Failed("Invalid argument".into()),
            &LoadTest::Passed,
        );
        assert_eq!(
            text,
            "netlens conns: cannot run: its BPF programs do not load: Invalid argument\n\
             netlens cost: can run\n"
        );
    }

    #[test]
    fn unknown_tracepoints_are_not_checked_not_missing() {
        let features = report(&host(NEW, true, ALL_CAPS), &|_: &Tracepoint| None);
        let tp = find(&features, "tracepoint syscalls/sys_exit_accept4");
        assert!(tp.detail.starts_with("not checked"), "{}", tp.detail);
        assert!(!tp.required && !tp.required_by_cost);
    }

    /// A tracefs tracepoint the kernel lists but refuses this process
    /// (perf_event_paranoid 3 without CAP_SYS_ADMIN, as on Debian) is named
    /// refused, never missing; BTF-checked ones are unaffected.
    #[test]
    fn perf_refused_tracepoints_are_refused_not_missing() {
        let mut h = host(NEW, true, ALL_CAPS);
        h.perf_refused = true;
        let refused = |tp: &Tracepoint| Some(tp.hook != Hook::Tracefs);
        let features = report(&h, &refused);
        let accept = find(&features, "tracepoint syscalls/sys_exit_accept4");
        assert!(!accept.available);
        assert!(accept.detail.starts_with("refused: "), "{}", accept.detail);
        let calls = find(&features, SYSCALL_LINE);
        assert!(calls.detail.starts_with("refused: "), "{}", calls.detail);
        assert!(
            calls.detail.contains("raw_syscalls instead"),
            "{}",
            calls.detail
        );
        let text = format_report(&features);
        assert!(!text.contains("missing:"), "{text}");
        assert!(
            conns_can_run(&features) && cost_can_run(&features),
            "{text}"
        );
    }
}
