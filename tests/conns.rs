//! `netlens conns` against reality: the real BPF programs, real TCP traffic
//! between network namespaces (veth) and over loopback, compared with what
//! the applications did and with the kernel's TCP_INFO for the same sockets.
//!
//! Several tests run at once and every netlens instance sees the whole
//! host, so each test looks only at its own connections (its own ports).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEND: u64 = 100_000;
const RESPOND: u64 = 3_000;
const WAIT: Duration = Duration::from_secs(20);

/// netlens events whose local or remote endpoint is `ep`.
fn touching(events: &[Value], ep: SocketAddr) -> Vec<Value> {
    events
        .iter()
        .filter(|v| v.get("local_port").is_some())
        .filter(|v| {
            let (l, r) = nl_tuple(v);
            l == ep || r == ep
        })
        .cloned()
        .collect()
}

fn of_type<'a>(events: &'a [Value], typ: &str) -> Vec<&'a Value> {
    events.iter().filter(|v| v["type"] == typ).collect()
}

/// Waits until netlens reported `n` events of `typ` touching `ep`.
fn wait_count(nl: &Netlens, typ: &str, ep: SocketAddr, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let evs = touching(&nl.events(), ep);
        if of_type(&evs, typ).len() >= n {
            return evs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "netlens reported {} of {n} {typ} events for {ep} within {WAIT:?}; stderr:\n{}",
            of_type(&evs, typ).len(),
            nl.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One client in namespace A, one server in namespace B (both created after
/// netlens started): events, owners, namespaces and final counters.
fn exchange_between_namespaces(v6: bool) {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "1"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b,
    } = served_pair(
        "cx",
        if v6 { 1 } else { 0 },
        v6,
        &["--respond", &RESPOND.to_string(), "--max-conns", "1"],
    );
    let srv_pid = srv.pid() as u64;
    let (cli_pid, cli_out) = connect_once(&a, srv_addr, SEND);
    let cli_pid = cli_pid as u64;
    let srv_out = srv.finish_output();
    let c = conns(&cli_out.events, "client")[0].clone();
    let s = conns(&srv_out.events, "server")[0].clone();

    wait_count(&nl, "close", srv_addr, 2);
    let out = nl.stop();
    assert!(
        out.status.success(),
        "netlens exit: {:?}\n{}",
        out.status,
        out.stderr
    );
    let evs = touching(&out.events, srv_addr);
    let client_side = |typ: &str| -> Vec<&Value> {
        of_type(&evs, typ)
            .into_iter()
            .filter(|v| nl_tuple(v) == (addr(&c, "local"), addr(&c, "remote")))
            .collect()
    };
    let server_side = |typ: &str| -> Vec<&Value> {
        of_type(&evs, typ)
            .into_iter()
            .filter(|v| nl_tuple(v) == (addr(&s, "local"), addr(&s, "remote")))
            .collect()
    };

    // Every event exactly once, on the right side, with the right owner.
    let family = if v6 { 6 } else { 4 };
    let connect = client_side("connect");
    assert_eq!(connect.len(), 1, "{evs:#?}");
    assert_eq!(u(connect[0], "pid"), cli_pid);
    assert_eq!(connect[0]["comm"], "netlens-peer");
    assert_eq!(u(connect[0], "netns"), a.inode());
    assert_eq!(u(connect[0], "family"), family);
    assert_eq!(connect[0]["direction"], "out");
    // The kernel's SYN-to-established time lies within the application's
    // connect() call.
    let (kernel_us, app_us) = (u(connect[0], "connect_us"), u(&c, "connect_us"));
    assert!(
        kernel_us <= app_us,
        "connect_us {kernel_us} > the application's {app_us}"
    );
    // Both ends are children of this test, in its cgroup: the kernel's id
    // of it names the path /proc gives (no hierarchy mounted: no cgroup).
    let own = own_cgroup();
    eprintln!("this test's cgroup: {own:?}");
    for ev in [connect[0], server_side("accept")[0]] {
        assert_eq!(ev["cgroup"].as_str(), own.as_deref(), "{ev}");
        assert_eq!(ev["cgroup_id"].is_u64(), own.is_some(), "{ev}");
        assert!(ev["container_id"].is_null(), "{ev}");
    }
    let accept = server_side("accept");
    assert_eq!(accept.len(), 1, "{evs:#?}");
    assert_eq!(
        u(accept[0], "pid"),
        srv_pid,
        "accept must name the accepting process"
    );
    assert_eq!(u(accept[0], "netns"), b.inode());
    assert_eq!(accept[0]["direction"], "in");
    assert!(client_side("accept").is_empty() && server_side("connect").is_empty());
    assert!(of_type(&evs, "connect_failed").is_empty());
    let (cc, sc) = (client_side("close"), server_side("close"));
    assert_eq!((cc.len(), sc.len()), (1, 1), "{evs:#?}");
    let (cc, sc) = (cc[0], sc[0]);
    assert_eq!(u(cc, "pid"), cli_pid);
    assert_eq!(u(sc, "pid"), srv_pid);
    assert_eq!(u(cc, "id"), u(connect[0], "id"));

    // Bytes at close: exactly what the applications wrote and read.
    assert_eq!(u(cc, "bytes_sent"), u(&c, "bytes_written"));
    assert_eq!(u(cc, "bytes_received"), u(&c, "bytes_read"));
    assert_eq!(u(sc, "bytes_sent"), u(&s, "bytes_written"));
    assert_eq!(u(sc, "bytes_received"), u(&s, "bytes_read"));
    assert_eq!((u(cc, "bytes_sent"), u(sc, "bytes_sent")), (SEND, RESPOND));

    // The client takes TCP_INFO after reading EOF: by then its full socket
    // has passed to TIME_WAIT, so every counter is final and must be equal.
    assert_eq!(u(cc, "packets_sent"), ti(&c, "segs_out"), "{cc}\n{c}");
    assert_eq!(u(cc, "packets_received"), ti(&c, "segs_in"), "{cc}\n{c}");
    assert_eq!(u(cc, "retransmits"), ti(&c, "total_retrans"));
    assert_eq!(u(cc, "rtt_us"), ti(&c, "rtt_us"), "{cc}\n{c}");
    assert_eq!(u(cc, "rtt_var_us"), ti(&c, "rtt_var_us"), "{cc}\n{c}");
    // The server takes TCP_INFO before its close(): its FIN, the peer's ACK
    // and the ACKs of data still in flight come after.
    let slack = Slack {
        bytes: 0,
        segs: 3,
        ..Slack::default()
    };
    let (sent_extra, recv_extra) = (
        u(sc, "packets_sent") - ti(&s, "segs_out"),
        u(sc, "packets_received") - ti(&s, "segs_in"),
    );
    assert!(
        sent_extra <= slack.segs && recv_extra <= slack.segs,
        "{sc}\n{s}"
    );
    // A retransmission after that snapshot (the FIN's, when the peer's ACK
    // is slow on an emulated CPU) is one of the segments sent after it.
    let retrans_extra = u(sc, "retransmits")
        .checked_sub(ti(&s, "total_retrans"))
        .unwrap_or_else(|| panic!("fewer retransmits than TCP_INFO had:\n{sc}\n{s}"));
    assert!(retrans_extra <= sent_extra, "{sc}\n{s}");
    assert!(u(sc, "rtt_us") > 0 && u(sc, "rtt_var_us") > 0);
}

#[test]
fn ipv4_exchange_between_namespaces() {
    exchange_between_namespaces(false);
}

#[test]
fn ipv6_exchange_between_namespaces() {
    exchange_between_namespaces(true);
}

/// A refused connect is a connect_failed event, never a connection.
#[test]
fn refused_connect_is_connect_failed() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "1"]);
    let a = Netns::new("rfa");
    let b = Netns::new("rfb");
    let veth = link(&a, &b, 0);
    for v6 in [false, true] {
        let target = SocketAddr::new(veth.b(v6), 9);
        let out = peer(
            Some(&a),
            &["connect", "--to", &target.to_string(), "--send", "1"],
        );
        let pid = out.pid() as u64;
        let out = out.finish_output();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let err = one(&out.events, "connect_error");
        let exited = std::time::Instant::now();
        let evs = wait_count(&nl, "connect_failed", target, 1);
        // Batched output, yet prompt: the event is out within a second.
        assert!(
            exited.elapsed() < Duration::from_secs(1),
            "connect_failed reached the JSON reader after {:?}",
            exited.elapsed()
        );
        let failed = of_type(&evs, "connect_failed");
        assert_eq!(failed.len(), 1, "{evs:#?}");
        assert_eq!(failed[0]["reason"], "refused");
        // SYN to RST, inside one refused connect() on a veth link.
        let kernel_us = u(failed[0], "connect_us");
        assert!(kernel_us < 1_000_000, "{}", failed[0]);
        assert_eq!(u(failed[0], "pid"), pid);
        assert_eq!(u(failed[0], "netns"), a.inode());
        assert_eq!(u(failed[0], "local_port"), addr(err, "local").port() as u64);
        std::thread::sleep(Duration::from_millis(300));
        let evs = touching(&nl.events(), target);
        for typ in ["connect", "accept", "close", "metrics"] {
            assert!(
                of_type(&evs, typ).is_empty(),
                "{typ} for a refused connect: {evs:#?}"
            );
        }
    }
}

/// A client in a cgroup of its own (made by the test under the root of the
/// hierarchy netlens reads: cgroup v2 in the matrix VMs, the v1 memory
/// controller here): its connection carries that cgroup's id and path, the
/// server's end the test's cgroup; the kernel's id is the directory's inode.
#[test]
fn a_connection_names_its_owners_cgroup() {
    if !require_root() {
        return;
    }
    let Some(cg) = TestCgroup::new("own") else {
        eprintln!("skipped: no cgroup hierarchy mounted");
        return;
    };
    let nl = Netlens::start(&["-t", "1"]);
    let pair = served_pair("cg", 0, false, &["--respond", "10", "--max-conns", "1"]);
    let cli = peer_in_cgroup(
        &cg,
        Some(&pair.a),
        &["connect", "--to", &pair.addr.to_string(), "--send", "100"],
    );
    let cli_pid = u64::from(cli.pid());
    let out = cli.finish_output();
    assert!(out.status.success(), "{out:?}");
    let close = nl
        .wait_for(
            |v| v["type"] == "close" && v["pid"] == cli_pid,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("no close of the client; stderr:\n{}", nl.stderr()));
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&cg.dir).expect("the test's cgroup").ino();
    assert_eq!(close["cgroup"], cg.path.as_str(), "{close}");
    assert_eq!(u(&close, "cgroup_id"), ino, "{close}");
    assert!(close["container_id"].is_null(), "{close}");
    let accept = nl
        .wait_for(
            |v| v["type"] == "accept" && v["remote_port"] == close["local_port"],
            Duration::from_secs(20),
        )
        .expect("the server's accept");
    assert_eq!(
        accept["cgroup"].as_str(),
        own_cgroup().as_deref(),
        "{accept}"
    );
    let stopped = nl.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// A connection opened before netlens started is reported, with its
/// owners found in /proc and its direction from the listener.
#[test]
fn existing_connection_is_seeded_with_its_pid() {
    if !require_root() {
        return;
    }
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair("sd", 1, false, &["--respond", "777", "--max-conns", "1"]);
    let mut cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "4242",
            "--wait-stdin",
        ],
    );
    cli.wait_event("connected");
    let nl = Netlens::start(&["-t", "0.3"]);
    // The seeded connection is in the snapshots before any traffic.
    let seen = nl.wait_for(
        |v| {
            v["type"] == "metrics"
                && v.get("remote_port").and_then(Value::as_u64) == Some(srv_addr.port() as u64)
        },
        WAIT,
    );
    let seen = seen.expect("existing connection in a metrics snapshot");
    assert_eq!(u(&seen, "pid"), cli.pid() as u64);
    assert_eq!(seen["direction"], "out");
    assert_eq!(u(&seen, "netns"), a.inode());
    assert!(
        seen["age_s"].is_null(),
        "age of a seeded connection: {seen}"
    );
    let (cli_pid, srv_pid) = (cli.pid() as u64, srv.pid() as u64);
    cli.release();
    let c = conns(&cli.finish(), "client")[0].clone();
    let s = conns(&srv.finish(), "server")[0].clone();
    let evs = wait_count(&nl, "close", srv_addr, 2);
    let closes = of_type(&evs, "close");
    let cc = closes
        .iter()
        .find(|v| nl_tuple(v).1 == srv_addr)
        .expect("client close");
    let sc = closes
        .iter()
        .find(|v| nl_tuple(v).0 == srv_addr)
        .expect("server close");
    assert_eq!((u(cc, "pid"), u(sc, "pid")), (cli_pid, srv_pid));
    assert_eq!(
        (cc["direction"].as_str(), sc["direction"].as_str()),
        (Some("out"), Some("in"))
    );
    assert_eq!(u(cc, "bytes_sent"), 4242);
    assert_eq!(u(cc, "bytes_received"), 777);
    assert_eq!(u(sc, "bytes_received"), u(&s, "bytes_read"));
    assert_eq!(u(sc, "bytes_sent"), u(&s, "bytes_written"));
    assert_eq!(u(cc, "packets_sent"), ti(&c, "segs_out"));
    assert_eq!(u(cc, "rtt_us"), ti(&c, "rtt_us"));
    // Opened before netlens: no connect or accept event for it.
    assert!(of_type(&evs, "connect").is_empty() && of_type(&evs, "accept").is_empty());
}

/// Socket descriptors `pid` holds open.
fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| t.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// 5,000 idle loopback connections (10,000 sockets) opened before netlens
/// starts: every socket is seeded, with its owner and direction, although
/// their records fill the iterator's buffer about fifty times over.
#[test]
fn five_thousand_existing_connections_are_all_seeded() {
    if !require_root() {
        return;
    }
    const N: usize = 5000;
    // Each peer raises its soft limit to the hard one; the server needs N
    // accepted sockets and its listener, the holder N.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let needed = (N + 64) as libc::rlim_t;
    if lim.rlim_max < needed {
        // Root with CAP_SYS_RESOURCE may raise the hard limit (a VM's init
        // leaves it at 4096); the peers inherit it.
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_cur,
            rlim_max: needed,
        };
        // SAFETY: `raised` is a valid rlimit; failure leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    assert!(
        lim.rlim_max >= (N + 64) as libc::rlim_t,
        "hard RLIMIT_NOFILE {} is below the {N} descriptors each peer needs",
        lim.rlim_max
    );
    let (srv, srv_addr) = server(
        None,
        &[
            "--listen",
            "127.0.0.1:0",
            "--sink",
            "--max-conns",
            &N.to_string(),
            "--max-secs",
            "300",
        ],
    );
    let holder = peer(
        None,
        &[
            "hold",
            "--to",
            &srv_addr.to_string(),
            "--count",
            &N.to_string(),
            "--secs",
            "300",
        ],
    );
    let held = holder.wait_event("holding");
    assert_eq!(u(&held, "count"), N as u64);
    // Accepted, not only queued: a queued socket has no owner yet.
    let deadline = std::time::Instant::now() + WAIT;
    while socket_fds(srv.pid()) < N + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server accepted {} of {N} connections within {WAIT:?}",
            socket_fds(srv.pid()).saturating_sub(1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let port = srv_addr.port();
    let nl = Netlens::start(&["-f", "--port", &port.to_string(), "-t", "1"]);
    nl.wait_for(|v| v["type"] == "metrics", WAIT)
        .expect("a metrics snapshot");
    let out = nl.stop();
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);

    // Every snapshot, the one printed at exit included, has all sockets.
    let mut snapshots: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for m in of_type(&out.events, "metrics") {
        snapshots
            .entry(m["timestamp"].as_str().unwrap_or(""))
            .or_default()
            .push(m);
    }
    assert!(!snapshots.is_empty());
    let (srv_pid, holder_pid) = (srv.pid() as u64, holder.pid() as u64);
    for (ts, rows) in &snapshots {
        let tuples: HashSet<(SocketAddr, SocketAddr)> = rows.iter().map(|v| nl_tuple(v)).collect();
        assert_eq!(tuples.len(), rows.len(), "a socket twice at {ts}");
        let inbound: Vec<&&Value> = rows.iter().filter(|v| nl_tuple(v).0 == srv_addr).collect();
        let outbound: Vec<&&Value> = rows.iter().filter(|v| nl_tuple(v).1 == srv_addr).collect();
        assert_eq!(
            (inbound.len(), outbound.len(), rows.len()),
            (N, N, 2 * N),
            "snapshot {ts}; stderr:\n{}",
            out.stderr
        );
        for v in inbound {
            assert_eq!(
                (u(v, "pid"), v["direction"].as_str()),
                (srv_pid, Some("in")),
                "{v}"
            );
            assert_eq!(v["comm"], "netlens-peer", "{v}");
        }
        for v in outbound {
            assert_eq!(
                (u(v, "pid"), v["direction"].as_str()),
                (holder_pid, Some("out")),
                "{v}"
            );
        }
        assert!(
            rows.iter().all(|v| v["age_s"].is_null()),
            "seeded: age unknown"
        );
    }
    // No seeding loss anywhere: no losses object says so, nor stderr.
    for l in of_type(&out.events, "losses") {
        assert_eq!(u(l, "seed_map_full"), 0, "{l}");
    }
    assert!(
        out.stderr.contains(" 0 existing connections not seeded"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("without a seeding record"),
        "{}",
        out.stderr
    );
    let found: u64 = out
        .stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("netlens: ready: tracing TCP connections; ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no ready line with a count:\n{}", out.stderr));
    assert!(found >= 2 * N as u64, "{}", out.stderr);
}

/// The capabilities netlens conns runs with short of root: no
/// CAP_SYS_ADMIN, so no setns().
const UNPRIVILEGED_CAPS: &str = "+bpf,+perfmon,+sys_ptrace,+dac_read_search";

/// As user 65534 with exactly CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and
/// CAP_DAC_READ_SEARCH: netlens walks its own network namespace in place and
/// seeds the connection there with its owners; a namespace it cannot enter
/// (no CAP_SYS_ADMIN) has its connections counted as not seeded, exactly.
#[test]
fn seeding_without_cap_sys_admin() {
    if !require_root() {
        return;
    }
    // One connection in netlens's own (the host) namespace.
    let (srv, srv_addr) = server(None, &["--listen", "127.0.0.1:0", "--max-conns", "1"]);
    let mut cli = peer(
        None,
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "10",
            "--wait-stdin",
        ],
    );
    cli.wait_event("connected");
    // Two connections (four sockets) in a namespace of the test's own.
    let ns = Netns::new("nsa");
    let (ns_srv, ns_addr) = server(
        Some(&ns),
        &[
            "--listen",
            "127.0.0.1:0",
            "--sink",
            "--max-conns",
            "2",
            "--max-secs",
            "120",
        ],
    );
    let holder = peer(
        Some(&ns),
        &[
            "hold",
            "--to",
            &ns_addr.to_string(),
            "--count",
            "2",
            "--secs",
            "120",
        ],
    );
    holder.wait_event("holding");
    const NS_SOCKETS: u64 = 4;

    let ambient = format!("--ambient-caps={UNPRIVILEGED_CAPS}");
    let inheritable = format!("--inh-caps={UNPRIVILEGED_CAPS}");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inheritable,
        &ambient,
        env!("CARGO_BIN_EXE_netlens"),
        "conns",
        "--json",
        "--no-log-file",
        "-f",
        "-t",
        "0.5",
        "--port",
        &srv_addr.port().to_string(),
    ]);
    let nl = Netlens::start_cmd(cmd);
    let row = |local: bool| {
        nl.wait_for(
            |v| {
                v["type"] == "metrics"
                    && v.get("local_port").is_some()
                    && (if local {
                        nl_tuple(v).0 == srv_addr
                    } else {
                        nl_tuple(v).1 == srv_addr
                    })
            },
            WAIT,
        )
        .unwrap_or_else(|| panic!("no seeded row; stderr:\n{}", nl.stderr()))
    };
    let (inbound, outbound) = (row(true), row(false));
    assert_eq!(u(&outbound, "pid"), cli.pid() as u64, "{outbound}");
    assert_eq!(outbound["direction"], "out", "{outbound}");
    assert_eq!(u(&inbound, "pid"), srv.pid() as u64, "{inbound}");
    assert_eq!(inbound["direction"], "in", "{inbound}");
    assert_eq!(u(&inbound, "netns"), host_netns_inode());
    let losses = nl
        .wait_for(|v| v["type"] == "losses", WAIT)
        .expect("a losses object");
    cli.release();
    let out = nl.stop();
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);

    // Our namespace's line: exactly its sockets, and the missing capability.
    let mine = format!("network namespace {} (", ns.inode());
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(&mine))
        .unwrap_or_else(|| panic!("no warning for {mine}:\n{}", out.stderr));
    assert!(
        line.contains(&format!(
            "; its {NS_SOCKETS} existing connections are not seeded"
        )),
        "{line}"
    );
    assert!(line.contains("lacks CAP_SYS_ADMIN"), "{line}");
    // The host namespace is netlens's own: walked, never "not entered".
    let own = format!("network namespace {} (", host_netns_inode());
    assert!(!out.stderr.contains(&own), "{}", out.stderr);
    // Other tests' namespaces may be there too: the total is the sum of
    // what each namespace's line says.
    let per_namespace: u64 = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: network namespace "))
        .filter_map(|l| {
            let n = l.split("; its ").nth(1)?.split(' ').next()?;
            n.parse::<u64>().ok()
        })
        .sum();
    assert!(per_namespace >= NS_SOCKETS);
    assert_eq!(u(&losses, "seed_unreached"), per_namespace, "{losses}");
    assert_eq!(u(&losses, "seed_map_full"), 0, "{losses}");
    assert!(
        out.stderr.contains(
            " existing connections not seeded (in network namespaces netlens could not enter"
        ),
        "{}",
        out.stderr
    );
    drop((holder, ns_srv, srv));
}

/// A handshake the kernel completed but no process ever accept()ed: its
/// owner is unknown, and netlens says so (PID 0) instead of naming whoever
/// ran the softirq.
#[test]
fn never_accepted_connection_has_pid_zero() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "0.5"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair("na", 0, false, &["--delay-accept-ms", "60000"]);
    let cli = peer(
        Some(&a),
        &[
            "--io-timeout",
            "1",
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "10",
        ],
    );
    let cli_pid = cli.pid() as u64;
    let out = cli.finish_output();
    assert!(!out.status.success(), "the server never answers: {out:?}");
    // The listener closes with the server process; so does the pending child.
    drop(srv);
    let evs = wait_count(&nl, "close", srv_addr, 2);
    let server_side = |typ: &str| -> Vec<Value> {
        of_type(&evs, typ)
            .into_iter()
            .filter(|v| nl_tuple(v).0 == srv_addr)
            .cloned()
            .collect()
    };
    let accepts = server_side("accept");
    assert_eq!(accepts.len(), 1, "{evs:#?}");
    assert_eq!(u(&accepts[0], "pid"), 0, "{}", accepts[0]);
    assert_eq!(accepts[0]["comm"], "");
    let closes = server_side("close");
    assert_eq!(closes.len(), 1, "{evs:#?}");
    assert_eq!(u(&closes[0], "pid"), 0);
    assert_eq!(u(&closes[0], "bytes_received"), 10);
    let connect = of_type(&evs, "connect");
    assert_eq!(connect.len(), 1);
    assert_eq!(u(connect[0], "pid"), cli_pid);
}

/// Loopback connections are left out unless -f is given; --port filters.
#[test]
fn loopback_only_with_flag_and_port_filter() {
    if !require_root() {
        return;
    }
    let (srv, srv_addr) = server(None, &["--listen", "127.0.0.1:0", "--max-conns", "2"]);
    let port = srv_addr.port().to_string();
    let without = Netlens::start(&["-t", "0.5"]);
    let with = Netlens::start(&["-t", "0.5", "-f", "--port", &port]);
    // PID_MAX_LIMIT is 2^22: this PID cannot exist.
    let nothing = Netlens::start(&["-t", "0.5", "-f", "--port", &port, "--pid", "8388608"]);
    for _ in 0..2 {
        let out = peer(
            None,
            &["connect", "--to", &srv_addr.to_string(), "--send", "10"],
        )
        .finish_output();
        assert!(out.status.success(), "{out:?}");
    }
    srv.finish();
    let evs = wait_count(&with, "close", srv_addr, 4);
    assert_eq!(of_type(&evs, "connect").len(), 2);
    assert_eq!(of_type(&evs, "accept").len(), 2);
    // Nothing from other tests' connections got through the port filter.
    let with = with.stop();
    assert!(!with.stderr.contains("matched"), "{}", with.stderr);
    let all = with.events;
    for v in all.iter().filter(|v| v.get("local_port").is_some()) {
        assert!(
            v["local_port"] == srv_addr.port() || v["remote_port"] == srv_addr.port(),
            "--port {port} let through {v}"
        );
    }
    let out = without.stop();
    assert!(
        touching(&out.events, srv_addr).is_empty(),
        "loopback connection reported without -f"
    );
    // A filter that matches nothing is said, at start and at exit.
    let out = nothing.stop();
    assert!(
        touching(&out.events, srv_addr).is_empty(),
        "{:?}",
        out.events
    );
    assert!(
        out.stderr
            .contains("warning: --pid 8388608: there is no process with PID 8388608 now"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "warning: no connection matched --pid 8388608 --port {port} during this run"
        )),
        "{}",
        out.stderr
    );
}

/// Packet drops in the receiver's namespace: netlens counts exactly the
/// retransmissions TCP_INFO counts, and the bytes stay exact.
#[test]
fn retransmissions_under_packet_loss() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "1"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b,
    } = served_pair("rt", 0, false, &["--max-conns", "1"]);
    b.drop_share(srv_addr.port(), 10);
    const BULK: u64 = 8 << 20;
    let cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            &BULK.to_string(),
        ],
    )
    .finish_output();
    assert!(cli.status.success(), "{cli:?}");
    srv.finish();
    let c = conns(&cli.events, "client")[0].clone();
    let evs = wait_count(&nl, "close", srv_addr, 2);
    let cc = of_type(&evs, "close")
        .into_iter()
        .find(|v| nl_tuple(v).1 == srv_addr)
        .expect("client close")
        .clone();
    assert!(
        ti(&c, "total_retrans") > 0,
        "the drop rule caused no retransmission: {c}"
    );
    assert_eq!(u(&cc, "retransmits"), ti(&c, "total_retrans"), "{cc}\n{c}");
    assert_eq!(u(&cc, "bytes_sent"), BULK);
    assert_eq!(u(&cc, "packets_sent"), ti(&c, "segs_out"));
}

/// 1,000 connections open at once: all tracked in one snapshot, every
/// event exactly once, totals exact.
#[test]
fn thousand_concurrent_connections() {
    if !require_root() {
        return;
    }
    const N: usize = 1000;
    let nl = Netlens::start(&["-t", "0.5"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair(
        "th",
        1,
        false,
        // Long enough for a slow CPU to open and show all N first.
        &[
            "--respond",
            "100",
            "--max-conns",
            &N.to_string(),
            "--max-secs",
            "150",
        ],
    );
    // The client opens all N connections, then waits until netlens has
    // shown them all in one snapshot before it sends and closes: however
    // slow the CPU, there is such a snapshot to check.
    let mut cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "1000",
            "--count",
            &N.to_string(),
            "--parallel",
            "--wait-stdin",
        ],
    );
    let deadline = std::time::Instant::now() + 3 * WAIT;
    loop {
        let mut per_snapshot: BTreeMap<String, usize> = BTreeMap::new();
        for m in of_type(&touching(&nl.events(), srv_addr), "metrics") {
            if nl_tuple(m).1 == srv_addr {
                *per_snapshot
                    .entry(m["timestamp"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
        }
        if per_snapshot.values().any(|&n| n == N) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot with all {N} connections within {:?}: {per_snapshot:?}",
            3 * WAIT
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cli.release();
    let cli = cli.finish_within(3 * WAIT);
    let errors: Vec<&Value> = cli
        .events
        .iter()
        .filter(|v| v.get("error").is_some_and(|e| !e.is_null()))
        .collect();
    assert!(
        cli.status.success(),
        "{}: {:?}; {} connections failed, the first: {:?}",
        cli.status,
        cli.stderr,
        errors.len(),
        errors.first()
    );
    assert_eq!(conns(&cli.events, "client").len(), N);
    srv.finish();
    wait_count(&nl, "close", srv_addr, 2 * N);
    let out = nl.stop();
    assert!(out.status.success());
    let evs = touching(&out.events, srv_addr);

    // Some snapshot held all N client connections at once.
    let mut per_snapshot: BTreeMap<String, usize> = BTreeMap::new();
    for m in of_type(&evs, "metrics") {
        if nl_tuple(m).1 == srv_addr {
            *per_snapshot
                .entry(m["timestamp"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
            // While open: never more than the application wrote.
            assert!(
                u(m, "bytes_sent") <= 1000 && u(m, "bytes_received") <= 100,
                "{m}"
            );
        }
    }
    assert!(
        per_snapshot.values().any(|&n| n == N),
        "no snapshot with all {N} connections: {per_snapshot:?}"
    );

    let unique = |typ: &str| -> usize {
        let list = of_type(&evs, typ);
        let ids: HashSet<u64> = list.iter().map(|v| u(v, "id")).collect();
        assert_eq!(ids.len(), list.len(), "duplicate {typ} events");
        list.len()
    };
    assert_eq!(unique("connect"), N);
    assert_eq!(unique("accept"), N);
    assert_eq!(unique("close"), 2 * N);
    let sum = |side_is_client: bool, key: &str| -> u64 {
        of_type(&evs, "close")
            .into_iter()
            .filter(|v| (nl_tuple(v).1 == srv_addr) == side_is_client)
            .map(|v| u(v, key))
            .sum()
    };
    assert_eq!(sum(true, "bytes_sent"), 1000 * N as u64);
    assert_eq!(sum(true, "bytes_received"), 100 * N as u64);
    assert_eq!(sum(false, "bytes_received"), 1000 * N as u64);
    assert_eq!(sum(false, "bytes_sent"), 100 * N as u64);
    // No event and no connection lost. (Skipped refreshes, runs_missed,
    // may be reported on a busy host: the exact totals above show they
    // cost nothing here.)
    for line in out.stderr.lines() {
        if let Some(rest) = line.strip_prefix("warning: lost so far: ") {
            let numbers: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(numbers[0], "0", "events lost: {line}");
            assert!(
                rest.contains(", 0 connections not tracked"),
                "connections lost: {line}"
            );
        }
    }
}

/// A map too small for the connections: a visible loss count, no crash,
/// and the connections that fit are still reported.
#[test]
fn full_map_is_counted_not_fatal() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "0.3", "-m", "16"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair("fm", 0, false, &["--max-conns", "100"]);
    let cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "10",
            "--count",
            "100",
            "--parallel",
            "--hold-ms",
            "1000",
        ],
    )
    .finish_output();
    assert!(cli.status.success());
    srv.finish();
    let losses = nl
        .wait_for(
            |v| v["type"] == "losses" && v["map_full"].as_u64() > Some(0),
            WAIT,
        )
        .expect("a losses object with map_full > 0");
    assert!(u(&losses, "map_full") > 0);
    assert!(losses["runs_missed"].is_u64(), "{losses}");
    let out = nl.stop();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stderr.contains("not tracked (map full"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(" BPF program runs skipped"),
        "{}",
        out.stderr
    );
    let evs = touching(&out.events, srv_addr);
    assert!(
        !of_type(&evs, "connect").is_empty(),
        "connections that fit are reported"
    );
    assert!(of_type(&evs, "connect").len() < 100);
}

/// Bad input gets one clear message and the documented exit status.
#[test]
fn bad_input_and_missing_privileges() {
    let bin = env!("CARGO_BIN_EXE_netlens");
    let out = run(bin, &["conns", "-t", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interval must be between"));
    let out = run(bin, &["conns", "-m", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    if !is_root() {
        let out = run(bin, &["conns"]);
        assert_eq!(out.status.code(), Some(3));
        return;
    }
    // As an unprivileged user: exit 3, names the capabilities, no backtrace.
    let out = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin,
            "conns",
            "--no-log-file",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("missing capabilities: CAP_BPF"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    // `check` without privileges: exit 3, and tracepoints marked unchecked
    // (tracefs unreadable) or refused (perf_event_paranoid 3, as on
    // Debian's kernels), never missing.
    let out = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin,
            "check",
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{report}");
    assert!(
        report.contains("not checked") || report.contains("refused: "),
        "{report}"
    );
    assert!(!report.contains("missing:"), "{report}");
    // An unwritable log directory.
    let out = run(bin, &["conns", "--log-dir", "/proc/netlens-no-such-dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/netlens-no-such-dir"));
}

/// `netlens check` on this machine: everything conns needs is here.
#[test]
fn check_reports_this_kernel() {
    if !require_root() {
        return;
    }
    let out = run(env!("CARGO_BIN_EXE_netlens"), &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("tracepoint sock/inet_sock_set_state"),
        "{text}"
    );
    assert!(
        text.contains("load test: all conns BPF programs loaded and attached: ok"),
        "{text}"
    );
}

/// Where tracefs is not mounted, `check` mounts it for its load test and
/// unmounts it again (in a mount namespace of the test's own).
#[test]
fn check_leaves_no_tracefs_mount() {
    if !require_root() {
        return;
    }
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         before=$(grep -c ' /sys/kernel/tracing ' /proc/self/mounts); \
         {} check > /dev/null; echo \"check=$? before=$before \
         after=$(grep -c ' /sys/kernel/tracing ' /proc/self/mounts)\"",
        env!("CARGO_BIN_EXE_netlens")
    );
    let out = run(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "check=0 before=0 after=0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text outputs on real traffic: `-d` with stdout not a terminal gives
/// key=value lines per connection and a summary; the log file (logging
/// format) records the events with the final counters.
#[test]
fn table_lines_and_log_file() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netlens-test-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let log_dir = dir.join("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"))
        .args(["conns", "-d", "-f", "-t", "0.3", "--log-dir"])
        .arg(&log_dir)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start netlens");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let deadline = std::time::Instant::now() + WAIT;
    while !read("stderr").contains(NETLENS_READY) {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {}",
            read("stderr")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (srv, srv_addr) = server(
        None,
        &[
            "--listen",
            "127.0.0.1:0",
            "--respond",
            "55",
            "--max-conns",
            "1",
        ],
    );
    let mut cli = peer(
        None,
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "66",
            "--wait-stdin",
        ],
    );
    let local = addr(&cli.wait_event("connected"), "local");
    let cli_pid = cli.pid();
    std::thread::sleep(Duration::from_millis(800));
    cli.release();
    cli.finish();
    srv.finish();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill() on our own child's PID, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait netlens");
    assert!(status.success(), "{status:?}: {}", read("stderr"));

    let lines = read("stdout");
    let mine: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains(&format!(" local={local} ")))
        .collect();
    assert!(!mine.is_empty(), "no table line for {local}:\n{lines}");
    for l in &mine {
        assert!(l.starts_with("ts="), "{l}");
        assert!(l.contains(&format!(" remote={srv_addr} ")), "{l}");
        assert!(l.contains(&format!(" pid={cli_pid} ")), "{l}");
        assert!(l.contains(" dir=out ") && l.contains(" family=4 "), "{l}");
    }
    assert!(lines.lines().any(|l| l.starts_with("summary ")), "{lines}");

    let logs: Vec<_> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(logs.len(), 1, "one log file");
    let log = std::fs::read_to_string(logs[0].path()).expect("log file");
    let connect = format!("event connect {local} -> {srv_addr} ");
    let close = format!("event close {local} -> {srv_addr} ");
    assert!(log.contains(&connect), "{log}");
    let close_line = log
        .lines()
        .find(|l| l.contains(&close))
        .expect("close line");
    assert!(
        close_line.contains(&format!("PID:{cli_pid} ")),
        "{close_line}"
    );
    assert!(close_line.contains(" sent:66 recv:55 "), "{close_line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// No program runs per packet: an open connection's counters come from the
/// refresh walk. After a transfer, a silent connection shows exactly what
/// the kernel has (the sender's TCP_INFO, the bytes the application wrote
/// and the receiver read), at the next refresh, on both sides.
#[test]
fn silent_open_connection_shows_exact_counters_at_the_next_refresh() {
    if !require_root() {
        return;
    }
    const SEND: u64 = 3_000_000;
    let nl = Netlens::start(&["-t", "0.3"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair("rf", 0, false, &["--max-conns", "1"]);
    let mut cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            &SEND.to_string(),
            "--pause-after-send",
        ],
    );
    let sent = cli.wait_event("sent");
    let port = srv_addr.port() as u64;
    let row_of = |local: bool| {
        let key = if local { "local_port" } else { "remote_port" };
        nl.wait_for(
            |v| {
                v["type"] == "metrics"
                    && v.get(key).and_then(Value::as_u64) == Some(port)
                    && v["bytes_sent"].as_u64().unwrap_or(0)
                        + v["bytes_received"].as_u64().unwrap_or(0)
                        == SEND
            },
            WAIT,
        )
        .unwrap_or_else(|| {
            panic!(
                "no snapshot with all {SEND} bytes on the open connection ({key} {port}); \
                 stderr:\n{}",
                nl.stderr()
            )
        })
    };
    let client = row_of(false);
    let server = row_of(true);
    assert_eq!(u(&client, "pid"), cli.pid() as u64);
    assert_eq!(
        (u(&client, "bytes_sent"), u(&client, "bytes_received")),
        (SEND, 0)
    );
    assert_eq!(u(&server, "bytes_received"), SEND);
    // The connection is silent: the sender's kernel counters are what they
    // were at the pause.
    assert_eq!(u(&client, "packets_sent"), ti(&sent, "segs_out"));
    assert_eq!(u(&client, "packets_received"), ti(&sent, "segs_in"));
    assert_eq!(u(&client, "rtt_us"), ti(&sent, "rtt_us"));
    cli.release();
    let c = conns(&cli.finish(), "client")[0].clone();
    let s = conns(&srv.finish(), "server")[0].clone();
    assert_eq!(u(&s, "bytes_read"), SEND);
    let evs = wait_count(&nl, "close", srv_addr, 2);
    let close = of_type(&evs, "close")
        .into_iter()
        .find(|v| nl_tuple(v).1 == srv_addr)
        .expect("client close");
    tcp_info_matches(close, &c, Slack::default()).unwrap();
}

/// Sending many segments on an open connection runs no BPF program: only
/// state changes do (and the refresh walk, once per refresh; none happens
/// here, the interval is longer than the test).
#[test]
fn no_program_runs_per_packet() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "600"]);
    // Counted while this descriptor is open (the kernel's BPF statistics,
    // reference-counted: other users are not disturbed).
    // SAFETY: a plain bpf() system call; the returned descriptor is owned below.
    let stats_fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    assert!(stats_fd >= 0, "BPF_ENABLE_STATS failed: {stats_fd}");
    // SAFETY: stats_fd was just returned by the kernel and nothing else owns it.
    let _stats = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(stats_fd) };
    let pair = served_pair("pp", 1, false, &["--max-conns", "1"]);
    let before = prog_run_stats(nl.pid());
    let (_, cli_out) = connect_once(&pair.a, pair.addr, 20_000_000);
    let c = conns(&cli_out.events, "client")[0].clone();
    let segments = ti(&c, "segs_out") + ti(&c, "segs_in");
    wait_count(&nl, "close", pair.addr, 2);
    let runs = prog_run_stats(nl.pid()).runs() - before.runs();
    eprintln!("{runs} program runs for one connection of {segments} segments");
    assert!(
        segments > 1000,
        "the transfer took only {segments} segments"
    );
    // Both ends: connect (SYN_SENT, ESTABLISHED), accept (SYN_RECV ->
    // ESTABLISHED, the accept exit), close (FIN and CLOSE states on each
    // side); about 15 in all.
    assert!(
        runs <= 40,
        "{runs} BPF program runs for {segments} segments"
    );
}

/// A connection accepted without accept(2) (io_uring's IORING_OP_ACCEPT)
/// gets its owner from the refresh walk, which finds the socket among the
/// server's open files: an accept event naming the server, then a close
/// with the same owner and exact counters.
#[test]
fn connection_accepted_by_io_uring_gets_its_owner_from_the_walk() {
    if !require_root() {
        return;
    }
    let nl = Netlens::start(&["-t", "0.3"]);
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair("ua", 0, false, &["--uring-accept", "--respond", "512"]);
    let mut cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "1000",
            "--pause-after-send",
        ],
    );
    cli.wait_event("sent");
    let srv_pid = srv.pid() as u64;
    let accept = nl
        .wait_for(
            |v| {
                v["type"] == "accept"
                    && v.get("local_port").and_then(Value::as_u64) == Some(srv_addr.port() as u64)
            },
            WAIT,
        )
        .unwrap_or_else(|| panic!("no accept event; stderr:\n{}", nl.stderr()));
    assert_eq!(u(&accept, "pid"), srv_pid, "{accept}");
    assert_eq!(accept["comm"], "netlens-peer");
    cli.release();
    cli.finish();
    let s = conns(&srv.finish(), "server")[0].clone();
    let evs = wait_count(&nl, "close", srv_addr, 2);
    let close = of_type(&evs, "close")
        .into_iter()
        .find(|v| nl_tuple(v).0 == srv_addr)
        .expect("server close");
    assert_eq!(u(close, "pid"), srv_pid);
    assert_eq!(u(close, "bytes_received"), u(&s, "bytes_read"));
    assert_eq!(u(close, "bytes_sent"), 512);
    // One accept for the connection: the walk's, none at the close.
    let accepts: Vec<_> = of_type(&evs, "accept")
        .into_iter()
        .filter(|v| nl_tuple(v).0 == srv_addr)
        .collect();
    assert_eq!(accepts.len(), 1, "{accepts:?}");
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on Drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = temp_path("smalldisk");
        std::fs::create_dir_all(&dir).expect("mount point");
        run_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A log file on a full disk is warned about once and counted; stdout and
/// the tracing go on, and the file never ends in half a line.
#[test]
fn full_log_disk_never_stops_tracing() {
    if !require_root() {
        return;
    }
    // The log gets 16 KiB; the ballast takes the rest until the test frees
    // it to see the log resume.
    let disk = SmallDisk::mount("32k");
    let ballast = disk.0.join("ballast");
    std::fs::write(&ballast, vec![0u8; 16 * 1024]).expect("ballast file");
    let (srv, srv_addr) = server(None, &["--listen", "127.0.0.1:0", "--max-conns", "400"]);
    // Only this test's connections: other tests' could fill the disk before
    // the first line, and then there would be nothing to check.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"));
    cmd.args(["conns", "--json", "-f", "-t", "0.5", "--port"])
        .arg(srv_addr.port().to_string())
        .arg("--log-dir")
        .arg(&disk.0);
    let nl = Netlens::start_cmd(cmd);
    // About 150 bytes of log per event, 4 events per connection: 16 KiB is
    // full after some 30 connections, whatever the batches.
    let churn = peer(
        None,
        &[
            "churn",
            "--to",
            &srv_addr.to_string(),
            "--secs",
            "120",
            "--max",
            "150",
        ],
    )
    .finish();
    assert_eq!(churn[0]["conns"], 150, "{churn:?}");
    // Every churned connection written out (both ends close), so that the
    // next connection's lines come in a batch of their own, which fits. An
    // emulated CPU in the kernel matrix needs far longer than this host.
    let deadline = std::time::Instant::now() + 6 * WAIT;
    while of_type(&touching(&nl.events(), srv_addr), "close").len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the churned connections' closes did not all come; stderr:\n{}",
            nl.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        nl.wait_stderr("warning: log file: ", WAIT),
        "no warning about the full disk; stderr:\n{}",
        nl.stderr()
    );
    // Space again: the batches that come now are written whole. (Without
    // freeing some, whether the next batch fits in what the dropped one
    // left is luck: on an emulated kernel the last written batch left too
    // little.)
    std::fs::remove_file(&ballast).expect("removing the ballast");
    // Still tracing after the disk filled: a new connection is reported.
    let out = peer(
        None,
        &["connect", "--to", &srv_addr.to_string(), "--send", "10"],
    )
    .finish_output();
    assert!(out.status.success(), "{out:?}");
    let conn = &out.events[0];
    let local: SocketAddr = conn["local"].as_str().unwrap().parse().unwrap();
    let closes = wait_count(&nl, "close", local, 1);
    assert!(!closes.is_empty());
    drop(srv);
    let out = nl.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("warning: log file: ").count(),
        1,
        "warned once: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.stderr
    );
    let dropped: u64 = out
        .stderr
        .split("outputs: log file: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped count on the exit line: {}", out.stderr));
    assert!(dropped > 0);
    let log = std::fs::read_dir(&disk.0)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a log file");
    let text = std::fs::read(&log).expect("log file");
    assert!(
        !text.is_empty() && text.ends_with(b"\n"),
        "half a line at the end of {} bytes: {:?}; stderr: {}",
        text.len(),
        String::from_utf8_lossy(&text[text.len().saturating_sub(200)..]),
        out.stderr
    );
    // Logging resumed once there was space: the last connection is there.
    assert!(
        String::from_utf8_lossy(&text).contains(&format!("{local}")),
        "{}",
        String::from_utf8_lossy(&text)
    );
}

/// A closed stdout pipe: with -P the tracing and serving go on; without any
/// other output netlens stops by itself, as `netlens conns | head` expects.
#[test]
fn closed_stdout_pipe() {
    if !require_root() {
        return;
    }
    let closed_pipe = || {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        drop(read);
        std::process::Stdio::from(write)
    };
    let (srv, srv_addr) = server(None, &["--listen", "127.0.0.1:0", "--max-conns", "4"]);
    let start = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"));
        cmd.args([
            "conns",
            "--json",
            "--no-log-file",
            "-f",
            "-t",
            "0.5",
            "--port",
        ])
        .arg(srv_addr.port().to_string())
        .args(extra);
        Netlens::start_cmd_with_stdout(cmd, closed_pipe())
    };
    let mut serving = start(&["-P", "127.0.0.1:0"]);
    let mut alone = start(&[]);
    let out = peer(
        None,
        &["connect", "--to", &srv_addr.to_string(), "--send", "10"],
    )
    .finish_output();
    assert!(out.status.success(), "{out:?}");
    for nl in [&serving, &alone] {
        assert!(
            nl.wait_stderr("warning: stdout: its reader is gone", WAIT),
            "{}",
            nl.stderr()
        );
    }
    assert!(
        alone.wait_stderr("every output is closed: stopping", WAIT),
        "{}",
        alone.stderr()
    );
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = alone.exited() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", alone.stderr());
    // The other one still serves the connection's bytes, and more.
    assert!(serving.exited().is_none(), "{}", serving.stderr());
    let out = peer(
        None,
        &["connect", "--to", &srv_addr.to_string(), "--send", "10"],
    )
    .finish_output();
    assert!(out.status.success(), "{out:?}");
    let metrics = http_get(serving.prometheus_addr(), "/metrics").expect("scrape");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .contains("netlens_tcp_connections_closed_total"));
    drop(srv);
    let out = serving.stop_any_output();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("outputs: stdout: "), "{}", out.stderr);
}
