//! The tracepoints of `netlens cost` and how its system calls are hooked:
//! what its collector attaches and `netlens check` reports.

use crate::bpfio::Tracepoint;
use crate::sys::kernel::Hook;

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

/// How `cost` is asked to hook TX/RX system calls (`--syscall-hook`).
///
/// raw_syscalls is the default because it was measured cheaper: a per-call
/// tracepoint keeps programs off the other system calls, but each network
/// call then goes through the kernel's perf-tracepoint path (a per-CPU
/// buffer, the arguments copied), which costs more than the one tp_btf
/// program of raw_syscalls; the servers benchmark measured per-call hooks
/// losing more throughput on five loads of six (README, Performance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallHookWanted {
    /// `raw_syscalls:sys_enter/sys_exit`: one tp_btf program on every system
    /// call, which returns at once for calls that are not network calls.
    #[default]
    Raw,
    /// The per-call `syscalls:sys_enter_<call>` tracepoints of the network
    /// calls only; raw_syscalls where one of them is missing.
    PerCall,
}

/// How `cost` hooks TX/RX system calls on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallHook {
    /// The per-call tracepoints, [`COST_SYSCALL_TRACEPOINTS`]: programs run
    /// on those calls only.
    PerCall,
    /// `raw_syscalls:sys_enter/sys_exit`, [`COST_RAW_SYSCALL_TRACEPOINTS`]:
    /// asked for (`missing` empty, the default), or because per-call hooks
    /// were asked for and these per-call tracepoints are missing, or could
    /// not be checked (`known`: false).
    Raw {
        missing: Vec<&'static str>,
        known: bool,
    },
}

impl SyscallHook {
    /// raw_syscalls when asked for; for per-call hooks, those when the kernel
    /// offers every one of them (asked through `offered`, the kernel probe),
    /// else raw_syscalls. Never by kernel version: CONFIG_FTRACE_SYSCALLS and
    /// perf_event_paranoid decide.
    pub fn choose(
        wanted: SyscallHookWanted,
        offered: &dyn Fn(&Tracepoint) -> Option<bool>,
    ) -> SyscallHook {
        if wanted == SyscallHookWanted::Raw {
            return SyscallHook::Raw {
                missing: Vec::new(),
                known: true,
            };
        }
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

    /// raw_syscalls because per-call hooks were asked for and are missing.
    pub fn fell_back(&self) -> bool {
        matches!(self, SyscallHook::Raw { missing, .. } if !missing.is_empty())
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
            SyscallHook::PerCall => {
                "system calls timed by their own tracepoints (--syscall-hook per-call)"
            }
            SyscallHook::Raw { .. } if self.fell_back() => {
                "system calls timed by raw_syscalls (the per-call system call tracepoints \
                 asked for are missing, or refused to this process: `netlens check \
                 --syscall-hook per-call` says which; a BPF program runs on every system call)"
            }
            SyscallHook::Raw { .. } => {
                "system calls timed by raw_syscalls (a BPF program on every system call, which \
                 returns at once for the others)"
            }
        }
    }
}

/// The other tracepoints `cost` attaches to (`required`: required by cost),
/// before those of its [`SyscallHook`]. The cost collector attaches from
/// this table.
pub const COST_TRACEPOINTS: [Tracepoint; 7] = [
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
    Tracepoint {
        category: "sched",
        name: "sched_process_exec",
        program: "on_exec",
        hook: Hook::TpBtf,
        required: false,
        gives: "per-process names and cgroups renewed when a process executes a program",
        without: "a process keeps the name and cgroup of its first network charge across exec",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn all_offered(_: &Tracepoint) -> Option<bool> {
        Some(true)
    }

    /// A kernel without CONFIG_FTRACE_SYSCALLS: no `syscalls` category.
    fn no_syscalls_category(tp: &Tracepoint) -> Option<bool> {
        Some(tp.category != "syscalls")
    }

    #[test]
    fn the_per_call_system_call_tracepoints_are_chosen_when_asked_and_all_are_there() {
        use SyscallHookWanted::PerCall;
        // raw_syscalls by default, whatever the kernel offers.
        let default = SyscallHook::choose(SyscallHookWanted::default(), &all_offered);
        assert_eq!(
            default,
            SyscallHook::Raw {
                missing: vec![],
                known: true
            }
        );
        assert!(!default.fell_back());
        assert!(!default.describe().contains("missing"));
        assert_eq!(default.tracepoints()[0].program, "on_sys_exit");
        assert_eq!(
            SyscallHook::choose(PerCall, &all_offered),
            SyscallHook::PerCall
        );
        let hook = SyscallHook::choose(PerCall, &no_syscalls_category);
        assert!(hook.fell_back());
        let SyscallHook::Raw { missing, known } = &hook else {
            panic!("{hook:?}")
        };
        assert!(known);
        assert_eq!(missing.len(), COST_SYSCALL_TRACEPOINTS.len());
        // One missing is enough to fall back: raw_syscalls covers them all.
        let no_splice = |tp: &Tracepoint| Some(tp.name != "sys_enter_splice");
        assert_eq!(
            SyscallHook::choose(PerCall, &no_splice),
            SyscallHook::Raw {
                missing: vec!["sys_enter_splice"],
                known: true
            }
        );
        let unknown = |tp: &Tracepoint| (tp.category != "syscalls").then_some(true);
        assert!(matches!(
            SyscallHook::choose(PerCall, &unknown),
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
        assert!(hook.describe().contains("raw_syscalls") && hook.describe().contains("missing"));
    }
}
