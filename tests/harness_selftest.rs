//! Tests of the test harness and of netlens-peer, without netlens.
//!
//! They establish what the kernel's TCP_INFO reports for a known exchange,
//! which is the ground truth the netlens tests compare against.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SEND: u64 = 100_000;
const RESPOND: u64 = 3_000;

/// Client in namespace A sends 100000 bytes to a server in B, which answers
/// with 3000 bytes after the client's EOF.
fn exchange_over_veth(v6: bool) {
    if !require_root() {
        return;
    }
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth,
        a,
        b: _b,
    } = served_pair(
        "st",
        0,
        v6,
        &[
            "--respond",
            &RESPOND.to_string(),
            "--max-conns",
            "1",
            "--max-secs",
            "30",
        ],
    );
    let cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            &SEND.to_string(),
        ],
    )
    .finish_output();
    assert!(cli.status.success(), "client failed: {cli:?}");
    let srv = srv.finish_output();
    assert!(srv.status.success(), "server failed: {srv:?}");
    eprintln!("client: {}", one(&cli.events, "conn"));
    eprintln!("server: {}", one(&srv.events, "conn"));
    let c = conns(&cli.events, "client");
    let s = conns(&srv.events, "server");
    assert_eq!((c.len(), s.len()), (1, 1));
    let (c, s) = (c[0], s[0]);
    assert!(c.get("error").is_none() && s.get("error").is_none());
    let family = if v6 { 6 } else { 4 };
    assert_eq!((u(c, "family"), u(s, "family")), (family, family));

    // The same connection seen from both ends.
    assert_eq!(addr(c, "local"), addr(s, "remote"));
    assert_eq!(addr(c, "remote"), addr(s, "local"));
    assert_eq!(addr(c, "local").ip(), veth.a(v6));
    assert_eq!(addr(s, "local"), srv_addr);
    assert_ne!(u(c, "pid"), u(s, "pid"));

    // What the applications did.
    assert_eq!(u(c, "bytes_written"), SEND);
    assert_eq!(u(s, "bytes_read"), SEND);
    assert_eq!(u(s, "bytes_written"), RESPOND);
    assert_eq!(u(c, "bytes_read"), RESPOND);

    // Kernel accounting. bytes_received counts the data plus the peer's FIN
    // (one sequence number), never the SYN.
    assert_eq!(ti(s, "bytes_received"), SEND + 1);
    assert_eq!(ti(c, "bytes_received"), RESPOND + 1);
    // bytes_acked on the active opener counts its SYN; the client reads EOF
    // only after the server's FIN, which acknowledges the client's FIN
    // (sent at shutdown), so the FIN is always counted too.
    assert_eq!(ti(c, "bytes_acked"), 1 + SEND + 1);
    // The passive opener's bytes_acked does not count its SYN-ACK; the server
    // takes TCP_INFO right after writing, with its FIN not yet sent, so it is
    // exactly the response when nothing is in flight.
    assert!(ti(s, "bytes_acked") <= RESPOND);
    if ti(s, "unacked") == 0 {
        assert_eq!(ti(s, "bytes_acked"), RESPOND);
    }
    // bytes_sent counts payload only (no SYN/FIN), retransmissions included.
    assert_eq!(ti(c, "bytes_sent"), SEND + ti(c, "bytes_retrans"));
    assert_eq!(ti(s, "bytes_sent"), RESPOND + ti(s, "bytes_retrans"));
    if ti(c, "total_retrans") + ti(s, "total_retrans") == 0 {
        // Segments: all client data reached the server before its TCP_INFO.
        assert_eq!(ti(c, "data_segs_out"), ti(s, "data_segs_in"));
        assert_eq!(ti(s, "data_segs_out"), ti(c, "data_segs_in"));
        // After the server's TCP_INFO it still sends its FIN, and the client
        // still acknowledges data and the FIN; hence only approximately.
        let (c_out, s_in) = (ti(c, "segs_out"), ti(s, "segs_in"));
        let (s_out, c_in) = (ti(s, "segs_out"), ti(c, "segs_in"));
        assert!(
            c_out >= s_in && c_out - s_in <= 3,
            "client segs_out {c_out} vs server segs_in {s_in}"
        );
        assert!(
            c_in >= s_out && c_in - s_out <= 3,
            "server segs_out {s_out} vs client segs_in {c_in}"
        );
    } else {
        eprintln!("note: retransmissions on a clean veth; segment checks skipped");
    }
    assert!(ti(c, "rtt_us") > 0 && ti(s, "rtt_us") > 0);

    let exit = one(&srv.events, "exit");
    assert_eq!(exit["reason"], "max_conns");
    assert_eq!(u(exit, "conns"), 1);
}

#[test]
fn veth_ipv4_exchange_matches_tcp_info() {
    exchange_over_veth(false);
}

#[test]
fn veth_ipv6_exchange_matches_tcp_info() {
    exchange_over_veth(true);
}

/// A refused connect reports connect_error with ECONNREFUSED and exits 3.
#[test]
fn loopback_refused_connect() {
    // As root inside a fresh namespace, where nothing listens for sure;
    // otherwise on the host's loopback, at a port just freed.
    let ns = is_root().then(|| Netns::new("refuse"));
    let targets: Vec<String> = match &ns {
        Some(_) => vec!["127.0.0.1:9".into(), "[::1]:9".into()],
        None => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            vec![l.local_addr().unwrap().to_string()]
        }
    };
    for to in &targets {
        let out = peer(ns.as_ref(), &["connect", "--to", to, "--send", "10"]).finish_output();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let e = one(&out.events, "connect_error");
        assert_eq!(u(e, "errno"), libc::ECONNREFUSED as u64, "{e}");
        assert_eq!(e["remote"], to.as_str());
        // The kernel keeps the ephemeral port after the failure, not the
        // source address.
        assert_ne!(addr(e, "local").port(), 0, "{e}");
        assert!(conns(&out.events, "client").is_empty());
    }
}

/// Dropping a tenth of the packets towards the server (nftables in the
/// server's namespace) makes the bulk sender retransmit.
#[test]
fn nft_random_drop_causes_retransmits() {
    if !require_root() {
        return;
    }
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b,
    } = served_pair(
        "drop",
        1,
        false,
        &["--sink", "--max-conns", "1", "--max-secs", "30"],
    );
    b.drop_share(srv_addr.port(), 10);
    let out = peer(
        Some(&a),
        &["bulk", "--to", &srv_addr.to_string(), "--secs", "1.5"],
    )
    .finish_output();
    assert!(out.status.success(), "{out:?}");
    let bulk = one(&out.events, "bulk");
    eprintln!("bulk: {bulk}");
    assert!(u(bulk, "bytes") > 0);
    assert!(ti(bulk, "total_retrans") > 0, "no retransmits: {bulk}");
    assert!(
        ti(bulk, "bytes_retrans") > 0,
        "no retransmitted bytes: {bulk}"
    );
    // Payload counters: bytes_sent includes retransmissions, bytes_acked
    // counts each byte once (plus SYN and FIN).
    assert_eq!(ti(bulk, "bytes_acked"), u(bulk, "bytes") + 2);
    assert!(ti(bulk, "bytes_sent") >= u(bulk, "bytes") + ti(bulk, "bytes_retrans"));
    let srv = srv.finish_output();
    assert_eq!(one(&srv.events, "exit")["reason"], "max_conns");
}

/// Concurrent connections over IPv6: each client line pairs with exactly
/// one server line.
#[test]
fn parallel_ipv6_connections_pair_up() {
    if !require_root() {
        return;
    }
    const N: usize = 20;
    let ServedPair {
        server: srv,
        addr: srv_addr,
        veth: _veth,
        a,
        b: _b,
    } = served_pair(
        "par",
        1,
        true,
        &["--respond", "500", "--max-conns", &N.to_string()],
    );
    let cli = peer(
        Some(&a),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "2000",
            "--count",
            &N.to_string(),
            "--parallel",
        ],
    )
    .finish();
    let srv = srv.finish();
    let (c, s) = (conns(&cli, "client"), conns(&srv, "server"));
    assert_eq!((c.len(), s.len()), (N, N));
    let mut ports: Vec<u16> = c.iter().map(|v| addr(v, "local").port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), N);
    for cv in c {
        let matching: Vec<_> = s
            .iter()
            .filter(|sv| addr(sv, "remote") == addr(cv, "local"))
            .collect();
        assert_eq!(matching.len(), 1, "{cv}");
        let sv = matching[0];
        assert_eq!(addr(cv, "remote"), addr(sv, "local"));
        assert_eq!((u(cv, "bytes_written"), u(sv, "bytes_read")), (2000, 2000));
        assert_eq!((u(sv, "bytes_written"), u(cv, "bytes_read")), (500, 500));
        assert_eq!(ti(cv, "bytes_acked"), 2002);
        assert_eq!(ti(sv, "bytes_received"), 2001);
        assert_eq!(ti(cv, "bytes_received"), 501);
    }
}

/// --wait-stdin holds each connection until released; --delay-accept-ms
/// leaves a handshake completed by the kernel but not yet accepted.
#[test]
fn wait_stdin_and_delayed_accept() {
    if !require_root() {
        return;
    }
    const DELAY_MS: u64 = 1500;
    let ns = Netns::new("delay");
    let (srv, srv_addr) = server(
        Some(&ns),
        &[
            "--listen",
            "127.0.0.1:0",
            "--max-conns",
            "2",
            "--delay-accept-ms",
            &DELAY_MS.to_string(),
        ],
    );
    let t0 = Instant::now();
    let mut cli = peer(
        Some(&ns),
        &[
            "connect",
            "--to",
            &srv_addr.to_string(),
            "--send",
            "10",
            "--count",
            "2",
            "--wait-stdin",
        ],
    );
    let first = cli.wait_event("connected");
    // connect() returned long before the server's accept().
    assert!(t0.elapsed() < Duration::from_millis(DELAY_MS - 500));
    assert_eq!(addr(&first, "remote"), srv_addr);
    // Nothing moves until released.
    assert!(cli
        .wait_event_timeout("conn", Duration::from_millis(200))
        .is_none());
    cli.release();
    let conn = cli.wait_event("conn");
    assert_eq!(addr(&conn, "local"), addr(&first, "local"));
    // The answer (EOF) needs the accept, which waited DELAY_MS.
    assert!(t0.elapsed() >= Duration::from_millis(DELAY_MS));
    let _second = cli.wait_event_timeout("connected", Duration::from_secs(10));
    cli.release();
    let out = cli.finish_output();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<&str> = out
        .events
        .iter()
        .filter_map(|v| v["event"].as_str())
        .collect();
    assert_eq!(names, ["connected", "conn", "connected", "conn"]);
    assert_eq!(conns(&srv.finish(), "server").len(), 2);
}

/// The poll-loop server (--sink) with churn, hold, rr (echo) and bulk.
#[test]
fn sink_server_with_churn_hold_rr_bulk() {
    if !require_root() {
        return;
    }
    const CHURN: u64 = 300;
    const HOLD: u64 = 1000;
    let ns = Netns::new("sink");
    let (srv, srv_addr) = server(
        Some(&ns),
        &[
            "--listen",
            "127.0.0.1:0",
            "--sink",
            "--respond",
            "1",
            "--max-conns",
            &(CHURN + HOLD + 1).to_string(),
            "--max-secs",
            "30",
        ],
    );
    let to = srv_addr.to_string();

    let churn = peer(
        Some(&ns),
        &[
            "churn",
            "--to",
            &to,
            "--secs",
            "10",
            "--max",
            &CHURN.to_string(),
        ],
    )
    .finish();
    let ev = one(&churn, "churn");
    assert_eq!(u(ev, "conns"), CHURN, "{ev}");
    assert_eq!(u(ev, "errors"), 0, "{ev}");
    assert_eq!(ev["stop_reason"], "max");

    let hold = peer(
        Some(&ns),
        &[
            "hold",
            "--to",
            &to,
            "--count",
            &HOLD.to_string(),
            "--secs",
            "0.3",
        ],
    );
    assert_eq!(u(&hold.wait_event("holding"), "count"), HOLD);
    let hold = hold.finish();
    assert_eq!(u(one(&hold, "released"), "count"), HOLD);

    // Bulk: all written bytes acked at the end, plus SYN and FIN.
    let bulk = peer(Some(&ns), &["bulk", "--to", &to, "--secs", "0.3"]).finish();
    let b = one(&bulk, "bulk");
    assert!(u(b, "bytes") > 0);
    assert_eq!(ti(b, "bytes_acked"), u(b, "bytes") + 2);
    eprintln!("loopback bulk: {b}");
    assert_eq!(ti(b, "bytes_sent"), u(b, "bytes") + ti(b, "bytes_retrans"));
    assert_eq!(u(b, "bytes_read"), 1);

    let srv = srv.finish();
    let exit = one(&srv, "exit");
    assert_eq!(exit["reason"], "max_conns", "{exit}");
    assert_eq!(u(exit, "conns"), CHURN + HOLD + 1);
    assert!(
        conns(&srv, "server").is_empty(),
        "--sink prints no conn lines"
    );

    // Echo, threaded and polled.
    for mode in [&["--echo"][..], &["--echo", "--sink"][..]] {
        let mut args = vec!["--listen", "[::1]:0", "--max-conns", "1"];
        args.extend_from_slice(mode);
        let (srv, srv_addr) = server(Some(&ns), &args);
        let rr = peer(
            Some(&ns),
            &[
                "rr",
                "--to",
                &srv_addr.to_string(),
                "--secs",
                "30",
                "--max",
                "20",
                "--size",
                "100",
            ],
        )
        .finish();
        let r = one(&rr, "rr");
        // A count, not a clock: an emulated CPU in the kernel matrix once
        // managed one transaction in 0.3 s.
        let tx = u(r, "transactions");
        assert_eq!(tx, 20, "{r}");
        assert_eq!(ti(r, "bytes_acked"), tx * 100 + 2);
        assert_eq!(ti(r, "bytes_received"), tx * 100 + 1);
        let srv = srv.finish();
        if let Some(s) = conns(&srv, "server").first() {
            assert_eq!(u(s, "bytes_read"), tx * 100);
            assert_eq!(u(s, "bytes_written"), tx * 100);
        }
    }
}

/// churn stops at the first EADDRNOTAVAIL instead of spinning. Eight
/// local ports and no TIME_WAIT reuse off loopback: the client closes first,
/// so each port sits in TIME_WAIT after one connection.
#[test]
fn churn_stops_on_port_exhaustion() {
    if !require_root() {
        return;
    }
    let a = Netns::new("porta");
    let b = Netns::new("portb");
    let veth = link(&a, &b, 0);
    a.sysctl("net.ipv4.ip_local_port_range", "40000 40007");
    let (_srv, srv_addr) = server(
        Some(&b),
        &[
            "--listen",
            &sock(veth.b(false), 0),
            "--sink",
            "--respond",
            "1",
            "--max-secs",
            "20",
        ],
    );
    let t0 = Instant::now();
    let out = peer(
        Some(&a),
        &["churn", "--to", &srv_addr.to_string(), "--secs", "10"],
    )
    .finish_output();
    assert!(out.status.success(), "{out:?}");
    let ev = one(&out.events, "churn");
    assert_eq!(ev["stop_reason"], "EADDRNOTAVAIL", "{ev}");
    assert_eq!(u(ev, "conns"), 8, "{ev}");
    assert_eq!(u(ev, "errors"), 1, "{ev}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Namespaces and veth pairs exist while their guards live, and not after.
#[test]
fn netns_and_veth_lifecycle() {
    if !require_root() {
        return;
    }
    let a = Netns::new("life");
    let b = Netns::new("life");
    assert_ne!(a.name(), b.name());
    let path = a.path();
    assert!(path.exists());
    assert_ne!(a.inode(), host_netns_inode());
    assert_ne!(a.inode(), b.inode());
    assert!(a.ip(&["-j", "link", "show", "lo"]).contains("\"UP\""));
    let veth = link(&a, &b, 0);
    assert!(veth.a_if.len() <= 15 && veth.b_if.len() <= 15);
    assert!(b.ip(&["link", "show", &veth.b_if]).contains(&veth.b_if));
    let b_if = veth.b_if.clone();
    drop(veth);
    assert!(!b.ip(&["link", "show"]).contains(&b_if));
    drop(a);
    assert!(!path.exists());
}

/// A stand-in for netlens: prints a JSON line, `netlens: ready`, and a
/// last line on SIGTERM.
const STAND_IN: &str = r#"
echo 'netlens: starting' >&2
echo '{"type":"connect","pid":1,"local_addr":"192.0.2.1","local_port":40000,"remote_addr":"2001:db8::2","remote_port":80}'
echo 'netlens: ready' >&2
trap 'echo "{\"type\":\"close\",\"pid\":1}"; exit 0' TERM
i=0
while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
"#;

#[test]
fn netlens_harness_with_stand_in() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", STAND_IN]);
    let nl = Netlens::start_cmd(cmd);
    let v = nl
        .wait_for(|v| v["type"] == "connect", Duration::from_secs(5))
        .expect("connect event");
    let (local, remote) = nl_tuple(&v);
    assert_eq!(local, "192.0.2.1:40000".parse().unwrap());
    assert_eq!(remote, "[2001:db8::2]:80".parse().unwrap());
    assert!(nl
        .wait_for(|v| v["type"] == "nothing", Duration::from_millis(100))
        .is_none());
    let out = nl.stop();
    assert!(out.status.success(), "{out:?}");
    let types: Vec<&str> = out
        .events
        .iter()
        .filter_map(|v| v["type"].as_str())
        .collect();
    assert_eq!(types, ["connect", "close"]);
    assert!(out.stderr.contains(NETLENS_READY));
}

#[test]
#[should_panic(expected = "non-JSON")]
fn netlens_harness_rejects_non_json() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &STAND_IN.replace("echo '{", "echo 'oops'; echo '{")]);
    let nl = Netlens::start_cmd(cmd);
    nl.stop();
}
