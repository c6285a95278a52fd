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

/// kernel.perf_event_paranoid above 2 (Debian's and Ubuntu's default; a
/// patch of theirs) refuses perf events to anyone without CAP_SYS_ADMIN.
fn perf_events_need_sys_admin() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|p| p > 2)
}

#[test]
fn cost_runs_with_bpf_perfmon_and_syslog() {
    if !require_root() {
        return;
    }
    // The default (-f auto) and -f tick sample without a perf event.
    for args in [
        &["cost", "--duration", "1.5"][..],
        &["cost", "-f", "tick", "--duration", "1.5"],
    ] {
        let out = netlens_as_nobody(COST_CAPS, args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {t}");
        assert!(t.contains("netlens: stopped after 1."), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    // A cpu-clock rate needs a perf event: allowed with CAP_PERFMON unless
    // perf_event_paranoid is above 2, and then refused up front, exit 3.
    let out = netlens_as_nobody(COST_CAPS, &["cost", "-f", "1000", "--duration", "1.5"]);
    let t = text(&out);
    if perf_events_need_sys_admin() {
        assert_eq!(out.status.code(), Some(3), "{t}");
        assert!(t.contains("perf_event_paranoid is"), "{t}");
        assert!(t.contains("CAP_SYS_ADMIN") && t.contains("-f tick"), "{t}");
    } else {
        assert_eq!(out.status.code(), Some(0), "{t}");
        assert!(t.contains("netlens: stopped after 1."), "{t}");
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
    assert!(t.contains("netlens: stopped after 1."), "{t}");
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

/// The tracepoints `check` reports missing, as `category:name`.
fn missing_tracepoints(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.starts_with("[warn] tracepoint ") || l.starts_with("[FAIL] tracepoint "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|t| t.replacen('/', ":", 1))
        .collect()
}

/// Runs a command for about `secs` seconds (SIGINT then), as root.
fn run_for(secs: &str, args: &[&str]) -> Output {
    let mut argv = vec![
        "--preserve-status",
        "-s",
        "INT",
        secs,
        env!("CARGO_BIN_EXE_netlens"),
    ];
    argv.extend_from_slice(args);
    run("timeout", &argv)
}

/// What `check` says on this kernel is what the commands then do: a
/// command it calls runnable runs, and the tracepoints it reports missing
/// are exactly those whose programs the command leaves out, saying so.
/// (On the kernel matrix, 6.1 lacks sock_send_length and sock_recv_length.)
#[test]
fn check_predicts_what_the_commands_do() {
    if !require_root() {
        return;
    }
    let out = run(env!("CARGO_BIN_EXE_netlens"), &["check"]);
    let report = text(&out);
    let missing = missing_tracepoints(&report);
    eprintln!("check reports missing: {missing:?}");
    for (name, args) in [
        ("conns", &["conns", "--no-log-file", "-t", "1"][..]),
        ("cost", &["cost", "--user-period", "200"][..]),
    ] {
        let can_run = report.contains(&format!("netlens {name}: can run"));
        // Long enough to load and attach on an emulated CPU beside other
        // VMs (cost loads some 40 programs), then SIGINT.
        let out = run_for("20", args);
        let t = text(&out);
        assert_eq!(
            out.status.success(),
            can_run,
            "check said {name} can run: {can_run}\n{report}\n{name}: {t}"
        );
        if !can_run {
            continue;
        }
        // Every program left out names its missing tracepoint on stderr,
        // and nothing else fails to attach.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut left_out: Vec<String> = Vec::new();
        for line in stderr.lines().filter(|l| l.contains(" not attached (")) {
            let (_, tp) = line
                .split_once("the kernel has no tracepoint ")
                .unwrap_or_else(|| panic!("{name}: a program failed to attach: {line}\n{t}"));
            left_out.push(tp.split(')').next().unwrap().to_string());
        }
        let table = if name == "conns" {
            &netlens::conn::probes::TRACEPOINTS[..]
        } else {
            &netlens::cost::probes::COST_TRACEPOINTS[..]
        };
        let expected: Vec<String> = table
            .iter()
            .map(|tp| format!("{}:{}", tp.category, tp.name))
            .filter(|tp| missing.contains(tp))
            .collect();
        assert_eq!(
            left_out, expected,
            "{name}: programs left out vs check's report\n{report}\n{t}"
        );
    }
}

/// Without BTF (simulated: the suite's kernels all have it), every command
/// says what is missing and what to do, and exits 4.
#[test]
fn a_kernel_without_btf_gets_one_clear_message() {
    if !require_root() {
        return;
    }
    let missing = "/nonexistent/netlens-test/vmlinux";
    for args in [
        &["conns", "--no-log-file"][..],
        &["cost", "--duration", "1"],
        &["check"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"))
            .args(args)
            .env(netlens::sys::kernel::BTF_PATH_ENV, missing)
            .output()
            .expect("run netlens");
        let t = text(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {t}");
        assert!(t.contains("CONFIG_DEBUG_INFO_BTF"), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
        if args[0] != "check" {
            assert!(t.contains("has no BTF at /sys/kernel/btf/vmlinux"), "{t}");
            assert!(t.contains("install a kernel that has it"), "{t}");
            assert_eq!(t.matches("error:").count(), 1, "one message: {t}");
        } else {
            assert!(t.contains("[FAIL] BTF"), "{t}");
            assert!(t.contains("netlens conns: cannot run"), "{t}");
            assert!(t.contains("netlens cost: cannot run"), "{t}");
        }
    }
}
