//! The container image: built with podman by scripts/build-image.sh from
//! this test's own netlens binary (no registry, no base image), then run as
//! the README says, with the host's PID and network namespaces and exactly
//! the capabilities of the Privileges section: `netlens check` passes
//! inside, and the agent inside sees a connection made outside the
//! container, with its exact bytes and its owner's host PID.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SEND: u64 = 50_000;
const RESPOND: u64 = 3_000;
const WAIT: Duration = Duration::from_secs(20);
/// The capabilities the README's container command adds (all others are
/// dropped).
const CAPS: &str = "bpf,perfmon,sys_ptrace,dac_read_search,syslog,sys_admin";

/// An image built for this test, removed on Drop.
struct Image(String);

impl Image {
    fn build() -> Image {
        let tag = format!("localhost/netlens-test:{}", std::process::id());
        let out = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/build-image.sh"
            ))
            .args(["--binary", env!("CARGO_BIN_EXE_netlens"), "--tag", &tag])
            .output()
            .expect("scripts/build-image.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{stderr}");
        eprintln!("{}", stdout.trim());
        Image(tag)
    }

    /// `podman run` of this image as the README runs it, named `name`,
    /// with netlens's `args`.
    fn run_cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args([
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--name",
            name,
            "--pid=host",
            "--network=host",
            "--cap-drop=all",
            &format!("--cap-add={CAPS}"),
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            // Root here lacks CAP_SYS_RESOURCE: podman's default limits
            // cannot be set (../shared/DESIGN.md).
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            "-v",
            "/sys/kernel/tracing:/sys/kernel/tracing:ro",
            &self.0,
        ])
        .args(args);
        cmd
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
    }
}

/// Removes the named container on Drop, whatever happened to it.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "--time", "10", &self.0])
            .output();
    }
}

#[test]
fn the_image_runs_check_and_the_agent_sees_host_connections() {
    if !require_root() {
        return;
    }
    let image = Image::build();

    let name = format!("netlens-check-{}", std::process::id());
    let _check_container = Container(name.clone());
    let out = image
        .run_cmd(&name, &["check"])
        .output()
        .expect("podman run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("netlens conns: can run, with every feature"),
        "{text}"
    );
    assert!(text.contains("netlens cost: can run"), "{text}");

    let name = format!("netlens-agent-{}", std::process::id());
    let _agent_container = Container(name.clone());
    let nl = Netlens::start_cmd(image.run_cmd(
        &name,
        &["agent", "-P", "127.0.0.1:0", "--events", "--roles", "conns"],
    ));
    let pair = served_pair(
        "ctr",
        0,
        false,
        &["--respond", &RESPOND.to_string(), "--max-conns", "1"],
    );
    let (cli_pid, _) = connect_once(&pair.a, pair.addr, SEND);
    let close = nl
        .wait_for(|v| v["type"] == "close" && v["pid"] == cli_pid, WAIT)
        .unwrap_or_else(|| panic!("no close event; stderr:\n{}", nl.stderr()));
    assert_eq!(close["bytes_sent"], SEND, "{close}");
    assert_eq!(close["bytes_received"], RESPOND, "{close}");
    assert_eq!(close["remote_port"], pair.addr.port(), "{close}");
    let health = http_get(nl.prometheus_addr(), "/healthz").expect("GET /healthz");
    assert_eq!(health.status, 200);
    let stopped = nl.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("netlens: conns: stopped; lost: 0 events"),
        "{}",
        stopped.stderr
    );
}
