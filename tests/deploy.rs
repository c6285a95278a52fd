//! The deployment files in deploy/. The systemd unit: systemd accepts it
//! (`systemd-analyze verify`), it stays sandboxed (`systemd-analyze
//! security --offline`), and the capabilities it grants are enough for the
//! agent it starts, which is run here as an unprivileged user holding
//! exactly those. (Its other sandboxing options are only checked by
//! systemd's own analysis: these machines have no systemd as PID 1 to run
//! the unit under.)

mod common;

use std::process::Command;

use common::*;

const UNIT: &str = include_str!("../deploy/systemd/netlens.service");
/// Where the unit expects the binary.
const UNIT_BINARY: &str = "/usr/local/bin/netlens";
/// The highest exposure `systemd-analyze security` may give the unit (0 is
/// the most locked down, 10 the least; the unit measured 4.1, "OK").
const MAX_EXPOSURE: f64 = 4.5;

/// The values of `key=` lines of the unit's [Service] section.
fn unit_values(key: &str) -> Vec<&'static str> {
    let prefix = format!("{key}=");
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// The capabilities the unit grants, lower case without `CAP_` (setpriv's
/// spelling); the bounding set must be the same.
fn unit_capabilities() -> Vec<String> {
    let parse = |key: &str| -> Vec<String> {
        let values = unit_values(key);
        assert_eq!(values.len(), 1, "one {key}= line");
        let mut caps: Vec<String> = values[0]
            .split_whitespace()
            .map(|c| {
                c.strip_prefix("CAP_")
                    .unwrap_or_else(|| panic!("{key}: {c}"))
                    .to_ascii_lowercase()
            })
            .collect();
        caps.sort();
        caps
    };
    let ambient = parse("AmbientCapabilities");
    assert_eq!(ambient, parse("CapabilityBoundingSet"));
    ambient
}

/// The unit's command line after the binary.
fn unit_arguments() -> Vec<&'static str> {
    let exec = unit_values("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart= line");
    let mut words = exec[0].split_whitespace();
    assert_eq!(words.next(), Some(UNIT_BINARY));
    words.collect()
}

/// The unit with ExecStart pointing at the binary under test (systemd
/// checks that it exists), in a directory of its own.
struct UnitCopy {
    dir: std::path::PathBuf,
}

impl UnitCopy {
    fn new() -> UnitCopy {
        let dir = temp_path("unit");
        std::fs::create_dir_all(&dir).expect("unit directory");
        let text = UNIT.replace(UNIT_BINARY, env!("CARGO_BIN_EXE_netlens"));
        std::fs::write(dir.join("netlens.service"), text).expect("unit copy");
        UnitCopy { dir }
    }

    fn path(&self) -> String {
        self.dir.join("netlens.service").display().to_string()
    }
}

impl Drop for UnitCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn systemd_accepts_the_unit() {
    let unit = UnitCopy::new();
    let out = Command::new("systemd-analyze")
        .args(["verify", &unit.path()])
        .output()
        .expect("systemd-analyze (package systemd, installed by scripts/deps.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are warnings on stderr, not failures.
    assert_eq!(stderr.trim(), "", "systemd-analyze verify complained");
}

#[test]
fn the_unit_stays_sandboxed() {
    let unit = UnitCopy::new();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", &unit.path()])
        .output()
        .expect("systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for netlens.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level:\n{stdout}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} above {MAX_EXPOSURE}:\n{stdout}"
    );
}

/// The unit's capabilities are the union of what the README's privilege
/// table names for the two roles the agent runs, plus CAP_SYS_ADMIN.
#[test]
fn the_unit_grants_what_the_readme_names() {
    assert_eq!(
        unit_capabilities(),
        [
            "bpf",
            "dac_read_search",
            "perfmon",
            "sys_admin",
            "sys_ptrace",
            "syslog"
        ]
    );
    assert!(UNIT.contains("\nDynamicUser=yes\n"), "not root");
    assert!(UNIT.contains("\nNoNewPrivileges=yes\n"));
}

/// The agent of the unit's ExecStart, as uid 65534 holding exactly the
/// unit's capabilities (what systemd's DynamicUser and
/// AmbientCapabilities give it): it gets ready, serves /healthz, and
/// reports nothing missing.
#[test]
fn the_agent_runs_with_the_units_capabilities_only() {
    if !require_root() {
        return;
    }
    let caps: Vec<String> = unit_capabilities()
        .iter()
        .map(|c| format!("+{c}"))
        .collect();
    let caps = caps.join(",");
    let mut args = unit_arguments();
    // The unit's port may be taken here (another netlens, another test).
    let at = args
        .iter()
        .position(|&a| a == "--prometheus")
        .expect("the unit sets --prometheus");
    args[at + 1] = "127.0.0.1:0";
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        env!("CARGO_BIN_EXE_netlens"),
    ])
    .args(&args);
    let nl = Netlens::start_cmd(cmd);
    let stderr = nl.stderr();
    assert!(
        stderr.contains("netlens: ready: agent running conns and cost"),
        "{stderr}"
    );
    let health = http_get(nl.prometheus_addr(), "/healthz").expect("GET /healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let out = nl.stop();
    assert!(out.status.success(), "{}", out.stderr);
    for lack in ["missing capabilities", "refused", "not measured"] {
        assert!(!out.stderr.contains(lack), "{lack}: {}", out.stderr);
    }
}
