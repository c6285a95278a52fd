//! What each command needs, proven: netlens run as an unprivileged user
//! (uid 65534) holding exactly the capabilities the README names for a
//! command, and one less, through setpriv's ambient capabilities. The
//! README's privilege section is this file.

mod common;

use std::process::Output;

use common::*;

/// The capabilities `netlens conns` needs (README, "Requirements").
const CONNS_CAPS: &str = "+bpf,+perfmon,+sys_ptrace,+dac_read_search";
/// The capabilities `netlens cost` needs with stack sampling on.
const COST_CAPS: &str = "+bpf,+perfmon,+syslog";

/// Runs netlens as uid/gid 65534 with exactly the capabilities `caps`
/// (setpriv syntax, e.g. "+bpf,+perfmon").
fn netlens_as_nobody(caps: &str, args: &[&str]) -> Output {
    let inh = format!("--inh-caps={caps}");
    let ambient = format!("--ambient-caps={caps}");
    let mut argv = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        inh.as_str(),
        ambient.as_str(),
        env!("CARGO_BIN_EXE_netlens"),
    ];
    argv.extend_from_slice(args);
    run("setpriv", &argv)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Kernel symbol addresses are hidden from an unprivileged process without
/// CAP_SYSLOG unless kernel.kptr_restrict is 0 and perf_event_paranoid is
/// at most 1; the CAP_SYSLOG cases only mean something where they are.
fn symbols_hidden_without_syslog() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let kptr: i32 = read("/proc/sys/kernel/kptr_restrict")
        .trim()
        .parse()
        .unwrap_or(1);
    let paranoid: i32 = read("/proc/sys/kernel/perf_event_paranoid")
        .trim()
        .parse()
        .unwrap_or(2);
    kptr != 0 || paranoid > 1
}

#[test]
fn cost_runs_with_bpf_perfmon_and_syslog() {
    if !require_root() {
        return;
    }
    for sampler in ["1000", "tick"] {
        let out = netlens_as_nobody(COST_CAPS, &["cost", "-f", sampler, "--duration", "1.5"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "-f {sampler}: {t}");
        assert!(t.contains("netlens: stopped after"), "-f {sampler}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
}

#[test]
fn cost_names_cap_syslog_and_runs_without_sampling() {
    if !require_root() {
        return;
    }
    if !symbols_hidden_without_syslog() {
        eprintln!("SKIP part: kernel symbols are visible without CAP_SYSLOG on this host");
    } else {
        for sampler in ["1000", "tick"] {
            let out =
                netlens_as_nobody("+bpf,+perfmon", &["cost", "-f", sampler, "--duration", "1"]);
            let t = text(&out);
            assert_eq!(out.status.code(), Some(3), "-f {sampler}: {t}");
            assert!(t.contains("missing capabilities: CAP_SYSLOG"), "{t}");
            assert!(t.contains("-f 0"), "the way out is named: {t}");
        }
    }
    // Without sampling, no kernel symbols are read: CAP_BPF and CAP_PERFMON do.
    let out = netlens_as_nobody("+bpf,+perfmon", &["cost", "-f", "0", "--duration", "1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    // BPF run-time statistics need CAP_SYS_ADMIN: not measured, and said so.
    assert!(t.contains("BPF programs not measured"), "{t}");
    // One capability less: exit 3, naming it.
    let out = netlens_as_nobody("+bpf", &["cost", "-f", "0", "--duration", "1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("missing capabilities: CAP_PERFMON"), "{t}");
}

#[test]
fn conns_needs_its_four_capabilities() {
    if !require_root() {
        return;
    }
    // Each one missing in turn: exit 3, naming exactly that one.
    for (caps, missing) in [
        ("+perfmon,+sys_ptrace,+dac_read_search", "CAP_BPF"),
        ("+bpf,+sys_ptrace,+dac_read_search", "CAP_PERFMON"),
        ("+bpf,+perfmon,+dac_read_search", "CAP_SYS_PTRACE"),
        ("+bpf,+perfmon,+sys_ptrace", "CAP_DAC_READ_SEARCH"),
    ] {
        let out = netlens_as_nobody(caps, &["conns", "--no-log-file", "-t", "1"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(3), "{caps}: {t}");
        assert!(
            t.contains(&format!("missing capabilities: {missing}.")),
            "{caps}: {t}"
        );
    }
}

#[test]
fn check_tells_what_each_command_can_do() {
    if !require_root() {
        return;
    }
    // conns's capabilities only: conns loads; cost is refused for CAP_SYSLOG
    // (where symbols are hidden), exit 3 naming it.
    let out = netlens_as_nobody(CONNS_CAPS, &["check"]);
    let t = text(&out);
    assert!(
        t.contains("load test: all conns BPF programs loaded and attached: ok"),
        "{t}"
    );
    assert!(t.contains("netlens conns: can run"), "{t}");
    assert!(t.contains("[warn] CAP_SYS_ADMIN"), "{t}");
    if symbols_hidden_without_syslog() {
        assert_eq!(out.status.code(), Some(3), "{t}");
        assert!(t.contains("cost needs CAP_SYSLOG"), "{t}");
        assert!(t.contains("netlens cost: cannot run"), "{t}");
        assert!(!t.contains("cost BPF programs loaded"), "{t}");
    }
    // Both sets: both load tests pass, exit 0; what is missing without
    // CAP_SYS_ADMIN is a warning, not a failure.
    let both = format!("{CONNS_CAPS},+syslog");
    let out = netlens_as_nobody(&both, &["check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("netlens conns: can run"), "{t}");
    assert!(t.contains("netlens cost: can run"), "{t}");
    assert!(
        t.contains(
            "load test: all cost BPF programs loaded and attached, stack sampling (-f auto) works: ok"
        ),
        "{t}"
    );
}
