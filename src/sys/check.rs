//! The pure part of `netlens check`: from what the host offers, which
//! netlens features work, and a readable report of it.

use std::fmt::Write as _;

use super::caps;
use super::kernel::{Hook, KernelVersion, VMLINUX_BTF};
use crate::bpfio::Tracepoint;
use crate::conn::probes::TRACEPOINTS;
use crate::cost::probes::{
    SyscallHook, SyscallHookWanted, COST_RAW_SYSCALL_TRACEPOINTS, COST_SYSCALL_TRACEPOINTS,
    COST_TRACEPOINTS,
};

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

/// The per-call system calls, as `check` names them.
fn per_call_names() -> String {
    let half = COST_SYSCALL_TRACEPOINTS.len() / 2;
    COST_SYSCALL_TRACEPOINTS[..half]
        .iter()
        .map(|tp| tp.name.trim_start_matches("sys_exit_"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines of `cost`'s system call hook. By default (raw_syscalls): the
/// raw_syscalls tracepoints, required, and the per-call ones only when all
/// are offered, as an option. With `--syscall-hook per-call`: the per-call
/// tracepoints, and the raw_syscalls ones when cost falls back to them
/// (only then are they asked for, and required).
fn syscall_features(
    host: &Host,
    wanted: SyscallHookWanted,
    offered: &dyn Fn(&Tracepoint) -> Option<bool>,
) -> Vec<Feature> {
    let name = SYSCALL_LINE.to_string();
    let per_call = SyscallHook::choose(SyscallHookWanted::PerCall, offered);
    if wanted == SyscallHookWanted::Raw {
        let mut features = Vec::new();
        if per_call == SyscallHook::PerCall {
            features.push(Feature {
                name,
                available: true,
                required: false,
                required_by_cost: false,
                detail: format!(
                    "not used by default; `cost --syscall-hook per-call` would time TX/RX system \
                     calls on their own tracepoints ({}): no program on any other system call, \
                     but more per network call",
                    per_call_names()
                ),
            });
        }
        features.extend(
            COST_RAW_SYSCALL_TRACEPOINTS
                .iter()
                .map(|tp| tracepoint_feature(host, tp, offered(tp), true)),
        );
        return features;
    }
    let (missing, known) = match &per_call {
        SyscallHook::PerCall => {
            return vec![Feature {
                name,
                available: true,
                required: false,
                required_by_cost: false,
                detail: format!(
                    "cost: TX/RX system calls, each timed on its own tracepoints ({}): no \
                     program runs on any other system call",
                    per_call_names()
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

/// [`report_for`] `cost`'s default system call hook.
pub fn report(host: &Host, offered: &dyn Fn(&Tracepoint) -> Option<bool>) -> Vec<Feature> {
    report_for(host, SyscallHookWanted::default(), offered)
}

/// What the host offers `netlens conns` and `netlens cost` (with the system
/// call hook `wanted`): kernel version, BTF, capabilities, and each
/// tracepoint as answered by `offered` (the kernel probe).
pub fn report_for(
    host: &Host,
    wanted: SyscallHookWanted,
    offered: &dyn Fn(&Tracepoint) -> Option<bool>,
) -> Vec<Feature> {
    let mut features = vec![kernel_feature(host.kernel), btf_feature(host.btf)];
    features.extend(caps_features(host));
    features.extend(
        TRACEPOINTS
            .iter()
            .map(|tp| tracepoint_feature(host, tp, offered(tp), false)),
    );
    features.extend(syscall_features(host, wanted, offered));
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
        // No tracepoint serves both commands today: a line each, the two
        // raw_syscalls ones cost uses by default, and one for all the
        // per-call system call tracepoints (an option).
        assert_eq!(
            features.len(),
            5 + TRACEPOINTS.len() + 1 + 2 + COST_TRACEPOINTS.len()
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
        // raw_syscalls by default, required; the per-call tracepoints
        // offered as an option.
        for name in ["sys_enter", "sys_exit"] {
            let raw = find(&features, &format!("tracepoint raw_syscalls/{name}"));
            assert!(raw.available && raw.required_by_cost && !raw.required);
        }
        let line = find(&features, SYSCALL_LINE);
        assert!(line.available && !line.required && !line.required_by_cost);
        assert!(
            line.detail.contains("(sendto, sendmsg, sendmmsg, recvfrom")
                && line.detail.contains("--syscall-hook per-call"),
            "{}",
            line.detail
        );
        assert!(
            text.ends_with("netlens conns: can run, with every feature\nnetlens cost: can run\n")
        );

        // Asked for per-call hooks: those, and not the raw_syscalls lines.
        let features = report_for(
            &host(NEW, true, ALL_CAPS),
            SyscallHookWanted::PerCall,
            &all_tracepoints,
        );
        assert_eq!(
            features.len(),
            5 + TRACEPOINTS.len() + 1 + COST_TRACEPOINTS.len()
        );
        let line = find(&features, SYSCALL_LINE);
        assert!(line.available && !line.required && !line.required_by_cost);
        assert!(
            line.detail
                .contains("no program runs on any other system call"),
            "{}",
            line.detail
        );
        let text = format_report(&features);
        assert!(!text.contains("raw_syscalls"), "{text}");
        assert!(!text.contains("warn"), "{text}");
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
        // The per-call system call tracepoints (an option), then the
        // raw_syscalls ones cost uses by default.
        let conns = TRACEPOINTS.len();
        let end = conns + per_call.len();
        assert_eq!(asked[conns..end], per_call);
        assert_eq!(
            asked[end..end + 2],
            ["raw_syscalls/sys_exit", "raw_syscalls/sys_enter"]
        );
        let end = end + 2;
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
                "sched/sched_process_exec",
            ]
        );
    }

    /// A kernel without CONFIG_FTRACE_SYSCALLS: no `syscalls` category at
    /// all (conns then loses its accept owners, cost falls back).
    fn no_syscalls_category(tp: &Tracepoint) -> Option<bool> {
        Some(tp.category != "syscalls")
    }

    #[test]
    fn without_per_call_tracepoints_cost_falls_back_to_raw_syscalls() {
        // By default nothing is lost: no per-call line, no warning.
        let features = report(&host(NEW, true, ALL_CAPS), &no_syscalls_category);
        assert!(cost_can_run(&features));
        assert!(!features.iter().any(|f| f.name == SYSCALL_LINE));
        assert!(find(&features, "tracepoint raw_syscalls/sys_enter").required_by_cost);

        let report = |host: &Host, offered: &dyn Fn(&Tracepoint) -> Option<bool>| {
            report_for(host, SyscallHookWanted::PerCall, offered)
        };
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
        // By default, raw_syscalls (tp_btf, not refused): no per-call line.
        assert!(!features.iter().any(|f| f.name == SYSCALL_LINE));
        let text = format_report(&features);
        assert!(!text.contains("missing:"), "{text}");
        assert!(
            conns_can_run(&features) && cost_can_run(&features),
            "{text}"
        );
        let features = report_for(&h, SyscallHookWanted::PerCall, &refused);
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
