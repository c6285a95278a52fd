//! The deployment files in deploy/. The Kubernetes manifest: valid for the
//! API schemas (kubernetes-validate, offline), and its pod runs the agent
//! with exactly its capabilities. The systemd unit: systemd accepts it
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
    let caps = setpriv_caps(&unit_capabilities());
    let mut args: Vec<String> = unit_arguments().iter().map(|a| a.to_string()).collect();
    // The unit's port may be taken here (another netlens, another test).
    let at = args
        .iter()
        .position(|a| a == "--prometheus")
        .expect("the unit sets --prometheus");
    args[at + 1] = "127.0.0.1:0".into();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--no-new-privs",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        env!("CARGO_BIN_EXE_netlens"),
    ])
    .args(&args);
    agent_runs_fully(cmd);
}

/// `+bpf,+perfmon,...`: setpriv's spelling of a capability list.
fn setpriv_caps(caps: &[String]) -> String {
    caps.iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts `cmd` (an agent serving on an ephemeral port): it must get ready
/// with both roles, answer /healthz, stop cleanly and say nothing is
/// missing, refused or unmeasured.
fn agent_runs_fully(cmd: Command) {
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
    for lack in ["missing capabilities", "refused", "not measured", "warning"] {
        assert!(!out.stderr.contains(lack), "{lack}: {}", out.stderr);
    }
}

const MANIFEST: &str = "deploy/kubernetes/netlens.yaml";
/// The oldest Kubernetes release the manifest is valid for
/// (`securityContext.appArmorProfile` came in 1.30), and the newest
/// schemas of the pinned kubernetes-validate.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// A tool of the Python virtual environment that scripts/test.sh installs.
fn python_tool(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs it (netlens_install_python_tools in \
         scripts/deps.sh)",
        path.display()
    );
    path
}

fn manifest_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST)
}

/// The manifest's objects, as JSON (read by the venv's PyYAML).
fn manifest_objects() -> Vec<serde_json::Value> {
    let out = Command::new(python_tool("python3"))
        .args([
            "-c",
            "import json, sys, yaml; \
             print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(manifest_path())
        .output()
        .expect("python3 of the tools venv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the manifest as JSON")
}

/// The capabilities a container adds, lower case (setpriv's spelling),
/// sorted.
fn added_capabilities(container: &serde_json::Value) -> Vec<String> {
    let mut caps: Vec<String> = container["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("added capabilities")
        .iter()
        .map(|c| c.as_str().expect("a name").to_ascii_lowercase())
        .collect();
    caps.sort();
    caps
}

/// A container's `args`.
fn container_args(container: &serde_json::Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("an argument"))
        .collect()
}

fn daemonset() -> serde_json::Value {
    manifest_objects()
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("a DaemonSet in the manifest")
}

#[test]
fn the_kubernetes_manifest_validates_against_the_api_schemas() {
    let tool = python_tool("kubernetes-validate");
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&tool)
            .args(["--strict", "--quiet", "-k", version])
            .arg(manifest_path())
            .output()
            .expect("kubernetes-validate");
        assert!(
            out.status.success(),
            "Kubernetes {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kinds: Vec<String> = manifest_objects()
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);
}

/// The pod: the node's processes and network, no privileged mode, the
/// capabilities of the systemd unit and nothing else, probes and scrape
/// annotations on the port the agent listens on.
#[test]
fn the_daemonset_is_what_the_agent_needs_and_no_more() {
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        added_capabilities(c),
        unit_capabilities(),
        "the unit's capabilities"
    );

    let args = container_args(c);
    assert_eq!(args.first(), Some(&"agent"));
    let listen = args
        .iter()
        .find_map(|a| a.strip_prefix("--prometheus="))
        .expect("--prometheus=ADDR:PORT");
    let port: u16 = listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port");
    assert_eq!(c["ports"][0]["containerPort"], port);
    let port_name = c["ports"][0]["name"].clone();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port_name, "{probe}");
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for limit in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                c["resources"][limit][what].is_string(),
                "resources.{limit}.{what}"
            );
        }
    }
}

/// The agent of the DaemonSet's container arguments, as root holding only
/// the container's capabilities (root in a container whose capabilities
/// are dropped and added so), with no new privileges: it gets ready,
/// serves /healthz and reports nothing missing.
#[test]
fn the_agent_runs_with_the_pods_capabilities_only() {
    if !require_root() {
        return;
    }
    let pod = daemonset();
    let c = &pod["spec"]["template"]["spec"]["containers"][0];
    let caps = setpriv_caps(&added_capabilities(c));
    // $(NODE_IP) is the node's address; the port may be taken here.
    let args: Vec<&str> = container_args(c)
        .into_iter()
        .map(|a| {
            if a.starts_with("--prometheus=") {
                "--prometheus=127.0.0.1:0"
            } else {
                a
            }
        })
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--no-new-privs",
        &format!("--bounding-set=-all,{caps}"),
        &format!("--inh-caps=-all,{caps}"),
        env!("CARGO_BIN_EXE_netlens"),
    ])
    .args(&args);
    agent_runs_fully(cmd);
}
