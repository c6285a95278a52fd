//! The effective capabilities of this process, and which of them tracing
//! needs.

use std::fs;

use anyhow::{Context, Result};

use super::kernel::KernelVersion;
use super::ParseError;

/// Bypass directory read/search permission checks (reading other
/// processes' `/proc/<pid>/fd`).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// Inspect other processes (`/proc/<pid>/fd` links of foreign processes).
pub const CAP_SYS_PTRACE: u32 = 19;
/// The catch-all; before 5.8 the only way to load tracing BPF programs.
/// Also needed for setns() into another network namespace and for the
/// kernel's BPF run-time statistics (BPF_ENABLE_STATS).
pub const CAP_SYS_ADMIN: u32 = 21;
/// Kernel addresses in /proc/kallsyms (unless kernel.kptr_restrict is 0
/// and kernel.perf_event_paranoid at most 1).
pub const CAP_SYSLOG: u32 = 34;
/// Performance monitoring and tracing programs (since 5.8).
pub const CAP_PERFMON: u32 = 38;
/// BPF maps and programs (since 5.8).
pub const CAP_BPF: u32 = 39;

/// The kernel release that split CAP_BPF and CAP_PERFMON out of
/// CAP_SYS_ADMIN.
const SPLIT_CAPS: (u32, u32) = (5, 8);

/// The conventional name of a capability this module knows, such as
/// `CAP_BPF`.
pub fn name(cap: u32) -> Option<&'static str> {
    Some(match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_SYSLOG => "CAP_SYSLOG",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => return None,
    })
}

/// True if the capability set `set` contains `cap`.
pub fn has(set: u64, cap: u32) -> bool {
    cap < 64 && set & (1u64 << cap) != 0
}

/// The `CapEff:` mask from the text of `/proc/<pid>/status`.
pub fn parse_cap_eff(status: &str) -> Result<u64, ParseError> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or(ParseError::Missing("CapEff line"))?;
    let hex = line.trim();
    u64::from_str_radix(hex, 16).map_err(|_| ParseError::malformed("CapEff mask", hex))
}

/// The effective capability set of this process.
pub fn effective() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_cap_eff(&status).context("parsing /proc/self/status")
}

/// Loading and attaching tracing programs: CAP_BPF and CAP_PERFMON from 5.8
/// on (CAP_SYS_ADMIN covers both), CAP_SYS_ADMIN before.
fn for_bpf(eff: u64, kernel: KernelVersion) -> Vec<u32> {
    if !kernel.at_least(SPLIT_CAPS.0, SPLIT_CAPS.1) {
        vec![CAP_SYS_ADMIN]
    } else if has(eff, CAP_SYS_ADMIN) {
        Vec::new()
    } else {
        vec![CAP_BPF, CAP_PERFMON]
    }
}

fn names_missing(eff: u64, needed: impl IntoIterator<Item = u32>) -> Vec<&'static str> {
    needed
        .into_iter()
        .filter(|&cap| !has(eff, cap))
        .filter_map(name)
        .collect()
}

/// The capabilities `netlens conns` needs but `eff` lacks, by name: those
/// of the BPF programs, CAP_DAC_READ_SEARCH to read tracefs (the ids of the
/// accept system-call tracepoints; it is mode 0700) and other users'
/// `/proc/<pid>/fd`, and CAP_SYS_PTRACE to read the socket links there and
/// the network namespaces of other processes (owners and seeding).
/// CAP_SYS_ADMIN is optional: see [`LOST_WITHOUT_SYS_ADMIN`].
pub fn missing_for_conns(eff: u64, kernel: KernelVersion) -> Vec<&'static str> {
    let mut needed = for_bpf(eff, kernel);
    needed.extend([CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]);
    names_missing(eff, needed)
}

/// The capabilities `netlens cost` needs but `eff` lacks, by name: those of
/// the BPF programs, and CAP_SYSLOG when stack sampling is on and kernel
/// addresses are hidden from this process (`kallsyms_hidden`): samples
/// cannot be turned into function names without them.
pub fn missing_for_cost(
    eff: u64,
    kernel: KernelVersion,
    kallsyms_hidden: bool,
) -> Vec<&'static str> {
    let mut needed = for_bpf(eff, kernel);
    if kallsyms_hidden {
        needed.push(CAP_SYSLOG);
    }
    names_missing(eff, needed)
}

/// What netlens does without CAP_SYS_ADMIN (when it has the rest).
pub const LOST_WITHOUT_SYS_ADMIN: &str = "existing connections in other network namespaces \
    are counted but not seeded, so not reported (setns needs it); BPF \
    run-time statistics are not measured (BPF_ENABLE_STATS needs it)";

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Name:\tnetlens
Umask:\t0022
State:\tR (running)
Tgid:\t4242
Pid:\t4242
Uid:\t0\t0\t0\t0
Gid:\t0\t0\t0\t0
CapInh:\t0000000000000000
CapPrm:\t000001ffffffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
Seccomp:\t0
";

    fn set(caps: &[u32]) -> u64 {
        caps.iter().fold(0, |acc, &c| acc | 1 << c)
    }

    const NEW: KernelVersion = KernelVersion::new(6, 1, 0);
    const OLD: KernelVersion = KernelVersion::new(5, 4, 0);

    #[test]
    fn parses_cap_eff_not_cap_prm() {
        let eff = parse_cap_eff(STATUS).expect("parse");
        assert_eq!(eff, 0x0000_01ff_feff_ffff);
        assert!(has(eff, CAP_BPF));
        assert!(!has(eff, 24), "CAP_SYS_RESOURCE is cleared in the sample");
    }

    #[test]
    fn unprivileged_status_parses_to_zero() {
        let status = "Name:\tcat\nCapEff:\t0000000000000000\n";
        assert_eq!(parse_cap_eff(status), Ok(0));
    }

    #[test]
    fn missing_or_bad_cap_eff_is_an_error() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapPrm:\t0\n"),
            Err(ParseError::Missing("CapEff line"))
        );
        assert!(matches!(
            parse_cap_eff("CapEff:\tzz\n"),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn own_capabilities_are_readable() {
        effective().expect("read /proc/self/status");
    }

    #[test]
    fn root_lacks_nothing() {
        assert!(missing_for_conns(u64::MAX, NEW).is_empty());
        assert!(missing_for_conns(u64::MAX, OLD).is_empty());
    }

    #[test]
    fn nothing_held_lists_everything() {
        assert_eq!(
            missing_for_conns(0, NEW),
            [
                "CAP_BPF",
                "CAP_PERFMON",
                "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH"
            ]
        );
        assert_eq!(
            missing_for_conns(0, OLD),
            ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        );
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let eff = set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]);
        assert!(missing_for_conns(eff, NEW).is_empty());
        assert!(missing_for_conns(eff, OLD).is_empty());
    }

    #[test]
    fn bpf_and_perfmon_are_not_enough_before_5_8() {
        let eff = set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]);
        assert!(missing_for_conns(eff, KernelVersion::new(5, 8, 0)).is_empty());
        assert_eq!(
            missing_for_conns(eff, KernelVersion::new(5, 7, 19)),
            ["CAP_SYS_ADMIN"]
        );
    }

    #[test]
    fn partial_sets_report_only_the_gaps() {
        let eff = set(&[CAP_BPF, CAP_SYS_PTRACE]);
        assert_eq!(
            missing_for_conns(eff, NEW),
            ["CAP_PERFMON", "CAP_DAC_READ_SEARCH"]
        );
    }

    #[test]
    fn cost_needs_syslog_only_for_hidden_symbols() {
        let eff = set(&[CAP_BPF, CAP_PERFMON]);
        assert!(missing_for_cost(eff, NEW, false).is_empty());
        assert_eq!(missing_for_cost(eff, NEW, true), ["CAP_SYSLOG"]);
        assert!(missing_for_cost(eff | 1 << CAP_SYSLOG, NEW, true).is_empty());
        assert_eq!(
            missing_for_cost(0, NEW, true),
            ["CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG"]
        );
        // cost reads no other process's /proc entries and no tracefs.
        assert!(missing_for_cost(set(&[CAP_SYS_ADMIN]), NEW, false).is_empty());
    }
}
