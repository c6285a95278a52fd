//! `netlens cost --pyroscope`: a fake Pyroscope backend (a TCP listener of
//! the test that records each HTTP request and answers 200, over plain
//! http or over TLS with a certificate the test makes) receives each
//! period's NET_RX stacks while real TCP traffic flows between two network
//! namespaces; the stacks it receives are checked against the `-l` log.
//! Backends that cannot be reached (untrusted certificate, a name server
//! or a host that never answers, inside the test's namespaces) are warned
//! about and counted while netlens keeps measuring; bad options exit 2.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: String,
}

/// Percent-decoding of a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A fake Pyroscope: records every request, answers 200.
struct FakePyroscope {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    /// TCP connections accepted (with TLS: handshakes tried).
    connections: Arc<AtomicUsize>,
}

impl FakePyroscope {
    /// Plain http.
    fn start() -> FakePyroscope {
        FakePyroscope::start_with(None)
    }

    /// https with `pki`'s server certificate.
    fn start_tls(pki: &TestPki) -> FakePyroscope {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap();
        FakePyroscope::start_with(Some(Arc::new(config)))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> FakePyroscope {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::clone(&requests);
        let accepted = Arc::clone(&connections);
        // Left running: it ends with the test process.
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                // A client that stops talking does not hold the backend.
                let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                match &tls {
                    None => {
                        serve(&mut conn, &recorded);
                    }
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(Arc::clone(config)) else {
                            continue;
                        };
                        let mut stream = rustls::StreamOwned::new(session, conn);
                        if serve(&mut stream, &recorded).is_some() {
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                    }
                }
            }
        });
        FakePyroscope {
            port,
            requests,
            connections,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// A certificate authority made for one test, and a server certificate
/// (for 127.0.0.1 and localhost) it signed.
struct TestPki {
    ca: TempFile,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestPki {
    fn new(tag: &str) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("netlens test CA {tag}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        let ca_file = TempFile::new(&format!("{tag}-ca.pem"));
        std::fs::write(&ca_file.0, ca.pem()).unwrap();
        TestPki {
            ca: ca_file,
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// Records the request before answering: once netlens has its answer,
/// the test sees the request.
fn serve<S: Read + Write>(conn: &mut S, recorded: &Mutex<Vec<Request>>) -> Option<()> {
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut len = 0;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            if name == "content-length" {
                len = value.parse().ok()?;
            }
            headers.insert(name, value);
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    recorded.lock().unwrap().push(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body: String::from_utf8(body).ok()?,
    });
    reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    reader.get_mut().flush().ok()
}

/// The complete JSON lines of a `-l` log so far.
fn read_log(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Bulk TCP from a to the sink server in b for `secs`.
fn bulk(p: &ServedPair, secs: &str) {
    let out = peer(
        Some(&p.a),
        &["bulk", "--to", &p.addr.to_string(), "--secs", secs],
    )
    .finish();
    assert!(
        out.iter().any(|v| v["event"] == "bulk"),
        "no bulk result: {out:?}"
    );
}

/// (stack, count) of each body line.
fn body_lines(body: &str) -> Vec<(String, u64)> {
    body.lines()
        .map(|l| {
            let (stack, count) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a `stack count` line: {l:?}"));
            (stack.to_string(), count.parse().expect("count"))
        })
        .collect()
}

#[test]
fn each_period_stacks_are_pushed_to_pyroscope() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let backend = FakePyroscope::start();
    let p = served_pair("pyro", 0, false, &["--sink", "--max-secs", "30"]);
    let log = TempFile::new("pyro-log");
    let url = format!("http://127.0.0.1:{}", backend.port);
    let nl = Netlens::start_cost(&[
        "-f",
        "1000",
        "--pyroscope",
        &url,
        "--user-period",
        "250",
        "-l",
        log.arg(),
    ]);
    bulk(&p, "1.5");
    let out = nl.stop_any_output();
    drop(p);
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let requests = backend.requests();
    let lines = read_log(&log.0);
    assert!(!requests.is_empty(), "no push received:\n{}", out.stderr);

    let hz_ok = |r: &Request, k: &str, v: &str| r.query.get(k).map(String::as_str) == Some(v);
    let mut pushed_total = 0;
    let mut per_push = Vec::new();
    let mut rooted = 0;
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ingest"));
        let name = &r.query["name"];
        assert!(
            name.starts_with("netlens.net_rx{host=") && name.ends_with('}'),
            "{name}"
        );
        for (k, v) in [
            ("format", "folded"),
            ("sampleRate", "1000"),
            ("spyName", "netlens"),
            ("units", "samples"),
            ("aggregationType", "sum"),
        ] {
            assert!(hz_ok(r, k, v), "{k} is not {v}: {:?}", r.query);
        }
        let from: u64 = r.query["from"].parse().unwrap();
        let until: u64 = r.query["until"].parse().unwrap();
        assert!(from < until && until - from <= 2, "{from}..{until}");
        let stacks = body_lines(&r.body);
        assert!(!stacks.is_empty(), "empty push");
        assert!(r.body.ends_with('\n'));
        let sum: u64 = stacks.iter().map(|(_, c)| c).sum();
        rooted += stacks
            .iter()
            .filter(|(s, _)| s.starts_with("net_rx_action;"))
            .map(|(_, c)| c)
            .sum::<u64>();
        pushed_total += sum;
        per_push.push(sum);
    }
    assert!(
        requests.iter().any(|r| r
            .body
            .lines()
            .any(|l| l.starts_with("net_rx_action;") && l.contains("tcp_v4_rcv"))),
        "no net_rx_action ... tcp_v4_rcv stack pushed"
    );
    // Most samples are inside net_rx_action. The rest are pushed as they
    // are, like --folded writes them: samples the BPF side counts as NET_RX
    // at its edges (in handle_softirqs around the action, in the softirq
    // entry/exit hooks) have no net_rx_action frame.
    assert!(
        rooted * 2 > pushed_total,
        "only {rooted} of {pushed_total} samples start at net_rx_action"
    );

    // Exact, period by period: the n-th push holds the stack samples of the
    // n-th period that had some (the samples of the NET_RX categories, but
    // for those without a readable stack).
    let mut expected = Vec::new();
    let mut errors_before = 0;
    for l in &lines {
        let categories: u64 = l["net_rx_categories"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["samples"].as_u64().unwrap())
            .sum();
        let errors = l["sampling"]["stack_errors_total"].as_u64().unwrap();
        let stacks = categories - (errors - errors_before);
        errors_before = errors;
        if stacks > 0 {
            expected.push(stacks);
        }
    }
    assert_eq!(per_push, expected, "samples per push vs per logged period");
    // And in total: every NET_RX sample netlens counted was pushed, but for
    // those lost (ring buffer full) or without a readable stack.
    let logged: u64 = lines
        .iter()
        .map(|l| l["sampling"]["net_rx_samples"].as_u64().unwrap())
        .sum();
    let last = &lines.last().unwrap()["sampling"];
    let lost = last["lost_total"].as_u64().unwrap();
    let unreadable = last["stack_errors_total"].as_u64().unwrap();
    assert_eq!(
        pushed_total + unreadable,
        logged - lost,
        "pushed {pushed_total}, unreadable {unreadable}, logged {logged}, lost {lost}"
    );
    // The log counts pushes (those finished before each period's end).
    let last_push = &lines.last().unwrap()["pyroscope"];
    assert_eq!(last_push["failed_total"], 0, "{last_push}");
    assert!(last_push["pushed_total"].as_u64().unwrap() <= requests.len() as u64);
    assert!(
        out.stderr
            .contains(&format!("Pyroscope: {} pushes, 0 failed", requests.len())),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("warning: pyroscope"), "{}", out.stderr);
}

#[test]
fn an_unreachable_backend_is_counted_and_netlens_keeps_running() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = served_pair("pyrx", 0, false, &["--sink", "--max-secs", "30"]);
    let log = TempFile::new("pyrx-log");
    let port_s = port.to_string();
    // Netto's spelling of the backend.
    let nl = Netlens::start_cost(&[
        "-f",
        "1000",
        "-a",
        "127.0.0.1",
        "-p",
        &port_s,
        "--user-period",
        "250",
        "-l",
        log.arg(),
    ]);
    bulk(&p, "1");
    // Still measuring after the failures: more reports keep coming (two
    // more, waited for up to 15 s: an emulated CPU is many times slower
    // than the 250 ms period).
    let before = read_log(&log.0).len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while read_log(&log.0).len() < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "netlens stopped reporting"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = nl.stop_any_output();
    drop(p);
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    assert_eq!(
        out.stderr.matches("warning: pyroscope:").count(),
        1,
        "one warning, with the error:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
    let (pushed, failed, kinds) = exit_pushes(&out.stderr);
    assert_eq!(pushed, 0);
    assert!(failed >= 1, "{}", out.stderr);
    assert_eq!(kinds, format!("{failed} connect"), "{}", out.stderr);
    let lines = read_log(&log.0);
    let logged = lines.last().unwrap()["pyroscope"]["failed_total"]
        .as_u64()
        .unwrap();
    assert!((1..=failed).contains(&logged), "{logged} vs {failed}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// `netlens agent` pushes its cost role's stacks like `netlens cost`, and
/// says so on its exit line.
#[test]
fn the_agent_pushes_the_cost_roles_stacks() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let backend = FakePyroscope::start();
    let p = served_pair("pyag", 0, false, &["--sink", "--max-secs", "30"]);
    let url = format!("http://127.0.0.1:{}", backend.port);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"));
    cmd.args([
        "agent",
        "-P",
        "127.0.0.1:0",
        "--roles",
        "cost",
        "--frequency",
        "1000",
        "--user-period",
        "250",
        "--pyroscope",
        &url,
        "--pyroscope-tenant",
        "team-b",
    ]);
    let nl = Netlens::start_cmd(cmd);
    bulk(&p, "1.5");
    let out = nl.stop_any_output();
    drop(p);
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let requests = backend.requests();
    assert!(!requests.is_empty(), "no push received:\n{}", out.stderr);
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ingest"));
        assert!(
            r.query["name"].starts_with("netlens.net_rx{host="),
            "{:?}",
            r.query
        );
        assert_eq!(
            r.headers.get("x-scope-orgid").map(String::as_str),
            Some("team-b")
        );
        assert!(!body_lines(&r.body).is_empty(), "an empty push");
    }
    let (pushed, failed, _) = exit_pushes(&out.stderr);
    assert_eq!(
        (pushed, failed),
        (requests.len() as u64, 0),
        "{}",
        out.stderr
    );
}

/// `--pyroscope` without the cost role has nothing to push: exit 2.
#[test]
fn the_agent_refuses_pushes_without_the_cost_role() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netlens"))
        .args([
            "agent",
            "--roles",
            "conns",
            "--pyroscope",
            "http://127.0.0.1:4040",
        ])
        .output()
        .expect("netlens agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("add cost to --roles"), "{stderr}");
}

/// (pushed, failed, failures by kind) of the exit line's `Pyroscope: N
/// pushes, N failed (N kind, ...)`.
fn exit_pushes(stderr: &str) -> (u64, u64, String) {
    let exit = stderr
        .lines()
        .find(|l| {
            l.starts_with("netlens: stopped after") || l.starts_with("netlens: cost: stopped after")
        })
        .unwrap_or_else(|| panic!("no exit line:\n{stderr}"));
    let rest = exit
        .split_once("; Pyroscope: ")
        .unwrap_or_else(|| panic!("no Pyroscope counts: {exit}"))
        .1;
    let (pushed, rest) = rest
        .split_once(" pushes, ")
        .unwrap_or_else(|| panic!("{exit}"));
    let (failed, kinds) = rest
        .split_once(" failed")
        .unwrap_or_else(|| panic!("{exit}"));
    let kinds = kinds
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .to_string();
    (
        pushed.parse().unwrap_or_else(|_| panic!("{exit}")),
        failed.parse().unwrap_or_else(|_| panic!("{exit}")),
        kinds,
    )
}

/// `netlens cost ARGS` with `env` set and `env_remove` unset; in `netns`
/// when given (nsenter: only the network namespace changes, so tracefs
/// stays where it is); with `resolv_conf` as /etc/resolv.conf (in a mount
/// namespace of its own).
fn start_cost_env(
    netns: Option<&Netns>,
    resolv_conf: Option<&Path>,
    env: &[(&str, &str)],
    args: &[&str],
) -> Netlens {
    let netlens = env!("CARGO_BIN_EXE_netlens");
    let mut cmd = match netns {
        None => Command::new(netlens),
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.path().display()));
            match resolv_conf {
                // unshare and sh exec in turn: the child's PID is netlens's.
                Some(conf) => {
                    c.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                        .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
                        .arg(conf)
                        .arg(netlens);
                }
                None => {
                    c.arg(netlens);
                }
            }
            c
        }
    };
    cmd.arg("cost").args(args);
    // Only what the test gives: no password or CA from the caller.
    for var in [
        "NETLENS_PYROSCOPE_PASSWORD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    Netlens::start_cmd(cmd)
}

/// Waits (up to `timeout`) until stderr has `needle`; false if it never does.
fn wait_stderr(nl: &Netlens, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if nl.stderr().contains(needle) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits until the `-l` log has `more` lines more than now (netlens is
/// still measuring), failing the test after 15 s.
fn wait_more_reports(log: &Path, more: usize) {
    let before = read_log(log).len();
    let deadline = Instant::now() + Duration::from_secs(15);
    while read_log(log).len() < before + more {
        assert!(Instant::now() < deadline, "netlens stopped reporting");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pushes_arrive_over_https_with_basic_auth_and_the_tenant() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let pki = TestPki::new("pyrotls");
    let backend = FakePyroscope::start_tls(&pki);
    let password = "glc_s3cret-t0ken/+=";
    let password_file = TempFile::new("pyrotls-password");
    std::fs::write(&password_file.0, format!("{password}\n")).unwrap();
    let p = served_pair("pyrs", 0, false, &["--sink", "--max-secs", "30"]);
    let log = TempFile::new("pyrotls-log");
    // A host name: the certificate is checked for it (SNI and SAN).
    let url = format!("https://localhost:{}/", backend.port);
    // Only the test's CA is trusted: SSL_CERT_FILE is what makes this work.
    // Proxy variables are not used (the port they name refuses).
    let nl = start_cost_env(
        None,
        None,
        &[
            ("SSL_CERT_FILE", pki.ca.arg()),
            ("HTTPS_PROXY", "http://127.0.0.1:1"),
            ("https_proxy", "http://127.0.0.1:1"),
            ("ALL_PROXY", "http://127.0.0.1:1"),
        ],
        &[
            "-f",
            "1000",
            "--pyroscope",
            &url,
            "--pyroscope-user",
            "123456",
            "--pyroscope-password-file",
            password_file.arg(),
            "--pyroscope-tenant",
            "team-a",
            "--pyroscope-app",
            "netlens.tls{host=test}",
            "--user-period",
            "250",
            "-l",
            log.arg(),
        ],
    );
    bulk(&p, "1.5");
    let out = nl.stop_any_output();
    drop(p);
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let requests = backend.requests();
    assert!(!requests.is_empty(), "no push received:\n{}", out.stderr);
    // base64("123456:glc_s3cret-t0ken/+=")
    let basic = "Basic MTIzNDU2OmdsY19zM2NyZXQtdDBrZW4vKz0=";
    let mut samples = 0;
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ingest"));
        assert_eq!(r.query["name"], "netlens.tls{host=test}");
        assert_eq!(r.query["format"], "folded");
        assert_eq!(r.query["sampleRate"], "1000");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(basic)
        );
        assert_eq!(
            r.headers.get("x-scope-orgid").map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("text/plain")
        );
        let stacks = body_lines(&r.body);
        assert!(!stacks.is_empty(), "empty push");
        samples += stacks.iter().map(|(_, c)| c).sum::<u64>();
    }
    assert!(
        requests.iter().any(|r| r
            .body
            .lines()
            .any(|l| l.starts_with("net_rx_action;") && l.contains("tcp_v4_rcv"))),
        "no net_rx_action ... tcp_v4_rcv stack pushed"
    );
    // Every sample with a stack was pushed, as over http.
    let lines = read_log(&log.0);
    let last = &lines.last().unwrap()["sampling"];
    let logged: u64 = lines
        .iter()
        .map(|l| l["sampling"]["net_rx_samples"].as_u64().unwrap())
        .sum();
    assert_eq!(
        samples + last["stack_errors_total"].as_u64().unwrap(),
        logged - last["lost_total"].as_u64().unwrap()
    );
    assert_eq!(
        exit_pushes(&out.stderr),
        (requests.len() as u64, 0, String::new()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("netlens: pyroscope: pushing NET_RX stacks as netlens.tls{host=test} to https://localhost:"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("warning: pyroscope"), "{}", out.stderr);
    assert!(!out.stderr.contains(password), "{}", out.stderr);
}

#[test]
fn an_untrusted_certificate_is_refused_counted_and_measuring_goes_on() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let server_pki = TestPki::new("pyrountrusted");
    // netlens trusts another CA than the one that signed the server's.
    let other_pki = TestPki::new("pyroother");
    let backend = FakePyroscope::start_tls(&server_pki);
    let p = served_pair("pyru", 0, false, &["--sink", "--max-secs", "30"]);
    let log = TempFile::new("pyrountrusted-log");
    let url = format!("https://127.0.0.1:{}", backend.port);
    let nl = start_cost_env(
        None,
        None,
        &[
            ("SSL_CERT_FILE", other_pki.ca.arg()),
            ("NETLENS_PYROSCOPE_PASSWORD", "env-s3cret"),
        ],
        &[
            "-f",
            "1000",
            "--pyroscope",
            &url,
            "--pyroscope-user",
            "u",
            "--user-period",
            "250",
            "-l",
            log.arg(),
        ],
    );
    bulk(&p, "1");
    assert!(
        wait_stderr(&nl, "warning: pyroscope: TLS", Duration::from_secs(20)),
        "no TLS warning:\n{}",
        nl.stderr()
    );
    wait_more_reports(&log.0, 2);
    let out = nl.stop_any_output();
    drop(p);
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    assert!(backend.requests().is_empty(), "a push got through");
    assert!(backend.connections.load(Ordering::Relaxed) >= 1);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: pyroscope"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{}", out.stderr);
    assert!(
        warnings[0].contains("UnknownIssuer") && warnings[0].contains("not trusted"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("SSL_CERT_FILE"), "{}", warnings[0]);
    let (pushed, failed, kinds) = exit_pushes(&out.stderr);
    assert_eq!(pushed, 0);
    assert!(failed >= 1);
    assert_eq!(kinds, format!("{failed} tls"), "{}", out.stderr);
    let logged = read_log(&log.0).last().unwrap()["pyroscope"]["failed_total"]
        .as_u64()
        .unwrap();
    assert!((1..=failed).contains(&logged), "{logged} vs {failed}");
    assert!(!out.stderr.contains("env-s3cret"), "{}", out.stderr);
}

/// A served pair whose namespace B drops everything sent to ports 53 and
/// 443: from A, B's address is a name server and a backend that never
/// answer.
fn black_hole_pair(tag: &str) -> ServedPair {
    let p = served_pair(tag, 1, false, &["--sink", "--max-secs", "30"]);
    p.b.nft(&["add", "table", "inet", "hole"]);
    p.b.nft(&[
        "add",
        "chain",
        "inet",
        "hole",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    for proto in ["udp", "tcp"] {
        p.b.nft(&[
            "add",
            "rule",
            "inet",
            "hole",
            "in",
            proto,
            "dport",
            "{ 53, 443 }",
            "drop",
        ]);
    }
    p
}

/// How netlens fails against a backend that never answers, from inside
/// namespace A of a [`black_hole_pair`]: the warning comes once, with its
/// kind, while the reports go on.
fn unanswered_backend(
    p: &ServedPair,
    resolv_conf: Option<&Path>,
    url: &str,
    warning: &str,
    kind: &str,
) {
    let log = TempFile::new("pyrohole-log");
    let nl = start_cost_env(
        Some(&p.a),
        resolv_conf,
        &[],
        &[
            "-f",
            "1000",
            "--pyroscope",
            url,
            "--user-period",
            "250",
            "-l",
            log.arg(),
        ],
    );
    bulk(p, "1");
    // The timeouts are 3 s; 20 s is far more than an emulated CPU needs.
    assert!(
        wait_stderr(&nl, warning, Duration::from_secs(20)),
        "no `{warning}` warning:\n{}",
        nl.stderr()
    );
    wait_more_reports(&log.0, 2);
    let out = nl.stop_any_output();
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    // One warning per kind of failure: the pushes that wait behind the
    // slow ones may also fill the queue, or be left at exit.
    assert_eq!(
        out.stderr.matches(warning).count(),
        1,
        "one warning:\n{}",
        out.stderr
    );
    let kinds: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: pyroscope:"))
        .filter_map(|l| l.split_once(" (")?.1.split_once(';').map(|(k, _)| k))
        .collect();
    let mut distinct = kinds.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), kinds.len(), "{}", out.stderr);
    let (pushed, failed, by_kind) = exit_pushes(&out.stderr);
    assert_eq!(pushed, 0, "{}", out.stderr);
    assert!(failed >= 1, "{}", out.stderr);
    assert!(by_kind.contains(kind), "{}", out.stderr);
}

#[test]
fn a_name_server_that_never_answers_is_a_resolve_timeout() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = black_hole_pair("pyrd");
    // glibc would wait 2 x 5 s: the 3 s bound is netlens's own.
    let conf = TempFile::new("pyrohole-resolv.conf");
    std::fs::write(
        &conf.0,
        format!(
            "nameserver {}\noptions timeout:5 attempts:2\n",
            p.veth.b(false)
        ),
    )
    .unwrap();
    unanswered_backend(
        &p,
        Some(&conf.0),
        "https://pyroscope.invalid",
        "resolving the host name took more than 3s",
        "resolve",
    );
}

#[test]
fn a_host_that_never_answers_is_a_connect_timeout() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let p = black_hole_pair("pyrc");
    let url = format!("https://{}", p.veth.b(false));
    unanswered_backend(&p, None, &url, "no connection within 3s", "connect");
}

/// Environment variables given to netlens.
type Env<'a> = Vec<(&'a str, &'a str)>;

/// Runs `netlens cost ARGS` with `env`, expecting it to exit at once.
fn run_cost(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netlens"));
    cmd.arg("cost")
        .args(args)
        .env_remove("NETLENS_PYROSCOPE_PASSWORD")
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = cmd.output().expect("netlens runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_pyroscope_options_exit_2_before_anything_is_loaded() {
    let password_file = TempFile::new("pyrobad-password");
    std::fs::write(&password_file.0, "file-s3cret\n").unwrap();
    let missing = PathBuf::from("/nonexistent/netlens-test/password");
    let url = "https://127.0.0.1:9";
    let cases: Vec<(Env, Vec<&str>, &str)> = vec![
        (
            vec![],
            vec!["--pyroscope", "https://123:url-s3cret@profiles.example"],
            "credentials in the URL are not accepted",
        ),
        (
            vec![],
            vec!["--pyroscope", "ftp://profiles.example"],
            "the scheme must be http:// or https://, not ftp://",
        ),
        (
            vec![("NETLENS_PYROSCOPE_PASSWORD", "env-s3cret")],
            vec!["--pyroscope", url],
            "no --pyroscope-user",
        ),
        (
            vec![],
            vec![
                "--pyroscope",
                url,
                "--pyroscope-password-file",
                password_file.arg(),
            ],
            "no --pyroscope-user",
        ),
        (
            vec![],
            vec!["--pyroscope", url, "--pyroscope-user", "u"],
            "--pyroscope-user needs a password",
        ),
        (
            vec![],
            vec![
                "--pyroscope",
                url,
                "--pyroscope-user",
                "u",
                "--pyroscope-password-file",
                missing.to_str().unwrap(),
            ],
            "--pyroscope-password-file /nonexistent/netlens-test/password: cannot read it",
        ),
        (
            vec![],
            vec!["--pyroscope", url, "--pyroscope-tenant", "a b"],
            "--pyroscope-tenant",
        ),
        (
            vec![],
            vec!["--pyroscope-user", "u"],
            "--pyroscope-user needs --pyroscope URL",
        ),
    ];
    for (env, args, message) in cases {
        let (code, stderr) = run_cost(&env, &args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.starts_with("netlens: error: ") && stderr.contains(message),
            "{args:?}: {stderr}"
        );
        for secret in ["url-s3cret", "env-s3cret", "file-s3cret"] {
            assert!(!stderr.contains(secret), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn ca_certificate_problems_and_cleartext_passwords_at_start() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let (code, stderr) = run_cost(
        &[("SSL_CERT_FILE", "/nonexistent/netlens-test/ca.pem")],
        &["-f", "1000", "--pyroscope", "https://127.0.0.1:9"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no trusted CA certificate found for https")
            && stderr.contains("/nonexistent/netlens-test/ca.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("netlens: ready"), "{stderr}");
    // With certificates in SSL_CERT_DIR, the unreadable file is a warning.
    let (code, stderr) = run_cost(
        &[
            ("SSL_CERT_FILE", "/nonexistent/netlens-test/ca.pem"),
            ("SSL_CERT_DIR", "/etc/ssl/certs"),
        ],
        &[
            "-f",
            "1000",
            "--pyroscope",
            "https://127.0.0.1:9",
            "--duration",
            "0.5",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: pyroscope: CA certificates: ")
            && stderr.contains("/nonexistent/netlens-test/ca.pem"),
        "{stderr}"
    );
    // Basic auth over plain http is warned about.
    let (code, stderr) = run_cost(
        &[("NETLENS_PYROSCOPE_PASSWORD", "env-s3cret")],
        &[
            "-f",
            "1000",
            "--pyroscope",
            "http://127.0.0.1:9",
            "--pyroscope-user",
            "u",
            "--duration",
            "0.5",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the password travels unencrypted"),
        "{stderr}"
    );
    assert!(!stderr.contains("env-s3cret"), "{stderr}");
}
