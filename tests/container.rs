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
        Image::of(env!("CARGO_BIN_EXE_netlens"), "netlens-test")
    }

    /// An image of `binary` (its entry point, whatever its name), tagged
    /// `localhost/<name>:<this test's PID>-<N>`.
    fn of(binary: &str, name: &str) -> Image {
        // Unique per call: tests of this file run at once, and each
        // removes its image when done.
        static BUILT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("localhost/{name}:{}-{n}", std::process::id());
        let out = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/build-image.sh"
            ))
            .args(["--binary", binary, "--tag", &tag])
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

/// `podman run` of the traffic peer's image as a client in `netns`, with
/// `args` after `connect`; its container ID is written to `cidfile`.
fn peer_container(
    image: &Image,
    netns: &Netns,
    cidfile: &std::path::Path,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "run", "--rm", "--cidfile"])
        .arg(cidfile)
        .arg(format!("--network=ns:/run/netns/{}", netns.name()))
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            &image.0,
            "connect",
        ])
        .args(args);
    cmd
}

fn read_cid(cidfile: &std::path::Path) -> String {
    let cid = std::fs::read_to_string(cidfile).expect("podman's --cidfile");
    let cid = cid.trim().to_string();
    assert!(
        cid.len() == 64 && cid.bytes().all(|c| c.is_ascii_hexdigit()),
        "{cid:?}"
    );
    cid
}

/// A container's connections carry its ID (podman's, `podman://<ID>`) and
/// cgroup, from the kernel at connect time, also when the container is gone
/// before netlens reads the event; the host's do not; `--container` keeps
/// only that container's; the Prometheus series has the `container_id`
/// label; and a connection the container opened before netlens started is
/// named by the refresh walk.
#[test]
fn connections_of_a_container_carry_its_id() {
    if !require_root() {
        return;
    }
    let image = Image::of(&peer_bin().to_string_lossy(), "netlens-peer-test");
    let pair = served_pair("ctid", 0, false, &["--respond", "100", "--max-secs", "120"]);
    let (to, port) = (pair.addr.to_string(), pair.addr.port());

    // Open from before netlens starts: 8 s between connect and send.
    let held_cid = temp_path("held.cid");
    let mut held = peer_container(
        &image,
        &pair.a,
        &held_cid,
        &["--to", &to, "--send", "10", "--hold-ms", "8000"],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("podman run");
    let deadline = std::time::Instant::now() + WAIT;
    let ss = [
        "netns",
        "exec",
        pair.b.name(),
        "ss",
        "-Htn",
        "state",
        "established",
    ];
    while run("ip", &ss).stdout.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the held connection never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = Netlens::start(&["-t", "1", "--port", &port.to_string(), "-P", "127.0.0.1:0"]);
    let held_id = read_cid(&held_cid);
    let only_held = Netlens::start(&["-t", "1", "--container", &held_id[..12]]);
    let seeded = all
        .wait_for(
            |v| v["type"] == "metrics" && v["remote_port"] == port && v["container_id"].is_string(),
            WAIT,
        )
        .unwrap_or_else(|| {
            panic!(
                "the held connection got no container; stderr:\n{}",
                all.stderr()
            )
        });
    assert_eq!(
        seeded["container_id"],
        format!("podman://{held_id}"),
        "{seeded}"
    );

    // A short-lived container: connect, send, close, exit.
    let short_cid = temp_path("short.cid");
    let out = peer_container(
        &image,
        &pair.a,
        &short_cid,
        &["--to", &to, "--send", "1000"],
    )
    .output()
    .expect("podman run");
    assert!(out.status.success(), "{out:?}");
    let short_id = read_cid(&short_cid);
    let client: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "conn")
        .expect("the client's report");
    let local_port = addr(&client, "local").port();
    let event = |typ: &'static str| {
        all.wait_for(|v| v["type"] == typ && v["local_port"] == local_port, WAIT)
            .unwrap_or_else(|| {
                panic!(
                    "no {typ} of the container's connection; stderr:\n{}",
                    all.stderr()
                )
            })
    };
    let kube_id = format!("podman://{short_id}");
    let (connect, close) = (event("connect"), event("close"));
    assert_eq!(connect["container_id"], kube_id, "{connect}");
    assert_eq!(close["container_id"], kube_id, "{close}");
    assert_eq!(close["bytes_sent"], 1000, "{close}");
    // Its cgroup's path, where netlens read it before the container was
    // removed, is the container's.
    if let Some(path) = close["cgroup"].as_str() {
        assert!(path.contains(&short_id), "{close}");
    }
    // The server's end is the host's: no container, the test's cgroup.
    let accept = all
        .wait_for(
            |v| v["type"] == "accept" && v["remote_port"] == local_port,
            WAIT,
        )
        .expect("the accept event");
    assert!(accept["container_id"].is_null(), "{accept}");
    assert_eq!(
        accept["cgroup"].as_str(),
        own_cgroup().as_deref(),
        "{accept}"
    );

    // The Prometheus series of the container's client.
    let labels = [("container_id", kube_id.as_str()), ("direction", "out")];
    let m = wait_metrics(&all, "the container's series", |s| {
        prom_value(s, "netlens_tcp_sent_bytes_total", &labels).is_some()
    });
    assert_eq!(
        prom_value(&m, "netlens_tcp_sent_bytes_total", &labels),
        Some(1000.0)
    );

    // --container: the held connection's lines, nothing of the other one.
    assert!(held.wait().expect("podman run").success());
    let held_kube_id = format!("podman://{held_id}");
    only_held
        .wait_for(|v| v["type"] == "close", WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no close of the held connection; stderr:\n{}",
                only_held.stderr()
            )
        });
    let lines = only_held.events();
    assert!(lines.iter().any(|v| v["type"] == "metrics"), "{lines:?}");
    for v in lines.iter().filter(|v| v["type"] != "losses") {
        assert_eq!(v["container_id"], held_kube_id.as_str(), "{v}");
    }
    for nl in [all, only_held] {
        let stopped = nl.stop();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

/// The network CPU of a container's process is charged to that container
/// (`podman://<ID>`) by `netlens cost`, from the cgroup the kernel saw at
/// its first charge, although the container is gone before netlens writes
/// the period's report; the host's own processes are `(host)`.
#[test]
fn network_cpu_of_a_container_is_charged_to_it() {
    if !require_root() {
        return;
    }
    let image = Image::of(&peer_bin().to_string_lossy(), "netlens-peer-test");
    let pair = served_pair("ccpu", 0, false, &["--respond", "100", "--max-secs", "120"]);
    let log = temp_path("container-cost.json");
    let nl = Netlens::start_cost(&[
        "-f",
        "0",
        "--user-period",
        "250",
        "--top",
        "1000",
        "-l",
        log.to_str().unwrap(),
    ]);
    let cidfile = temp_path("cost.cid");
    let out = peer_container(
        &image,
        &pair.a,
        &cidfile,
        &["--to", &pair.addr.to_string(), "--send", "20000000"],
    )
    .output()
    .expect("podman run");
    assert!(out.status.success(), "{out:?}");
    let kube_id = format!("podman://{}", read_cid(&cidfile));
    // A whole period after the container is gone.
    std::thread::sleep(Duration::from_millis(600));
    let stopped = nl.stop_any_output();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let text = std::fs::read_to_string(&log).expect("the cost log");
    let _ = std::fs::remove_file(&log);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let last = &lines.last().expect("a report")["processes"];
    let container = last["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container_id"] == kube_id.as_str())
        .unwrap_or_else(|| panic!("{kube_id} not among {}", last["containers"]));
    let tx = u(&container["ns_total"], "tx_syscall");
    assert!(
        tx > 1_000_000,
        "the container's TX time {tx} ns: {container}"
    );
    // Its process, under its host PID, with the container's ID.
    let rows: Vec<&serde_json::Value> = lines
        .iter()
        .flat_map(|l| l["processes"]["top"].as_array().into_iter().flatten())
        .filter(|t| t["container_id"] == kube_id.as_str())
        .collect();
    // runc's set-up processes run in the container's cgroup too; the
    // program (runc's init until it executes it) is named by its own name:
    // the image's entry point, `netlens` (build-image.sh names it so).
    let peer_rows: Vec<&&serde_json::Value> =
        rows.iter().filter(|t| t["comm"] == "netlens").collect();
    assert!(
        !peer_rows.is_empty(),
        "no entry point in {kube_id}: {rows:?}"
    );
    let peer_tx: u64 = peer_rows.iter().map(|t| u(&t["ns"], "tx_syscall")).sum();
    assert!(
        peer_tx * 10 >= tx * 9,
        "the program's TX {peer_tx} of {tx}: {rows:?}"
    );
    let by_process: u64 = rows.iter().map(|t| u(&t["ns"], "tx_syscall")).sum();
    assert_eq!(by_process, tx, "the container is its processes: {rows:?}");
    assert!(
        last["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["container_id"].is_null()),
        "no (host) row: {}",
        last["containers"]
    );
}
