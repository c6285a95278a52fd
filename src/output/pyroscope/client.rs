//! The HTTP(S) side of the pushes: one ureq agent (kept for the whole run,
//! so an https connection is reused between periods) with bounded name
//! resolution, connection and request times, rustls with the ring provider
//! for https, trusting the system's CA certificates.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::auth::Access;
use super::endpoint::{Endpoint, Scheme};

/// Longest wait for the backend's name to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time for one whole push: resolving, connecting, the TLS
/// handshake, sending and the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The bounds of one push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub resolve: Duration,
    pub connect: Duration,
    /// The whole push.
    pub request: Duration,
}

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        resolve: RESOLVE_TIMEOUT,
        connect: CONNECT_TIMEOUT,
        request: REQUEST_TIMEOUT,
    };
}

/// How much of a refusing answer's body goes into the warning.
const ANSWER_EXCERPT: u64 = 200;

/// Why a push was not delivered. Each kind is warned about once, then
/// only counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The queue was full: the oldest period waiting was dropped.
    QueueFull,
    /// The backend's name did not resolve (or not in time).
    Resolve,
    /// No TCP connection (refused, unreachable, timed out).
    Connect,
    /// The TLS handshake failed, e.g. an untrusted certificate.
    Tls,
    /// The push did not finish within its time ([`REQUEST_TIMEOUT`]).
    Timeout,
    /// The backend answered, but not with a 2xx status.
    Rejected,
    /// Anything else on the way (a connection reset, a malformed answer).
    Transport,
    /// Still queued or under way when netlens stopped waiting at exit.
    Unfinished,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        FailureKind::QueueFull,
        FailureKind::Resolve,
        FailureKind::Connect,
        FailureKind::Tls,
        FailureKind::Timeout,
        FailureKind::Rejected,
        FailureKind::Transport,
        FailureKind::Unfinished,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The word used in warnings and on the exit line.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::QueueFull => "queue full",
            FailureKind::Resolve => "resolve",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Rejected => "rejected",
            FailureKind::Transport => "transport",
            FailureKind::Unfinished => "unfinished at exit",
        }
    }
}

/// A push that failed: its kind and what to tell the user (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

/// Posts folded profiles to one backend.
pub struct Client {
    agent: ureq::Agent,
    timeouts: Timeouts,
    base: String,
    headers: Vec<(&'static str, String)>,
}

/// What loading the system's CA certificates gave.
pub struct Trust {
    pub roots: Vec<Certificate<'static>>,
    /// Files or directories that could not be read or parsed.
    pub problems: Vec<String>,
}

/// The CA certificates of the system's trust store (Debian's
/// /etc/ssl/certs and the like), or those of the files `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` name when they are set.
pub fn system_trust() -> Trust {
    let loaded = rustls_native_certs::load_native_certs();
    Trust {
        roots: loaded
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect(),
        problems: loaded.errors.iter().map(|e| e.to_string()).collect(),
    }
}

impl Client {
    /// A client of `endpoint`; `roots` are the CA certificates trusted for
    /// https (unused for http).
    pub fn new(
        endpoint: &Endpoint,
        access: &Access,
        roots: &[Certificate<'static>],
        timeouts: Timeouts,
    ) -> Client {
        // The provider is given here rather than installed as the process
        // default, so nothing else in the process depends on that choice.
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(RootCerts::new_with_certs(match endpoint.scheme {
                Scheme::Https => roots,
                Scheme::Http => &[],
            }))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_resolve(Some(timeouts.resolve))
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.request))
            // Statuses are judged here, with the answer's text in the warning.
            .http_status_as_error(false)
            // A redirected push would need its body again and could carry
            // the credentials elsewhere: a redirect is a failure that names
            // the new location instead.
            .max_redirects(0)
            // Pushes go straight to the backend: *_PROXY variables of the
            // environment are not used.
            .proxy(None)
            .user_agent(concat!("netlens/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            timeouts,
            base: format!("{}://{}", endpoint.scheme.as_str(), endpoint.authority()),
            headers: access.headers(),
        }
    }

    /// POSTs `body` to `target` (a path with its query); Ok on a 2xx answer.
    pub fn post(&self, target: &str, body: &str) -> Result<(), Failure> {
        let mut request = self
            .agent
            .post(format!("{}{target}", self.base))
            .content_type("text/plain");
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let mut answer = request
            .send(body)
            .map_err(|e| classify(&e, &self.timeouts))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let location = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut excerpt = Vec::new();
        let _ = answer
            .body_mut()
            .as_reader()
            .take(ANSWER_EXCERPT)
            .read_to_end(&mut excerpt);
        Err(rejected(
            status.as_u16(),
            location.as_deref(),
            &String::from_utf8_lossy(&excerpt),
        ))
    }
}

/// The failure of an answer with a non-2xx status.
fn rejected(status: u16, location: Option<&str>, excerpt: &str) -> Failure {
    let text: String = excerpt
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    let mut detail = format!("HTTP status {status}");
    if !text.is_empty() {
        detail.push_str(&format!(" ({text})"));
    }
    match status {
        300..=399 => detail.push_str(&format!(
            "; redirected to {}: give that URL to --pyroscope",
            location.unwrap_or("an unnamed location")
        )),
        401 | 403 => detail.push_str(
            "; check --pyroscope-user, the password (--pyroscope-password-file or \
             NETLENS_PYROSCOPE_PASSWORD) and --pyroscope-tenant",
        ),
        _ => {}
    }
    Failure {
        kind: FailureKind::Rejected,
        detail,
    }
}

/// The rustls error somewhere in `e`'s chain of causes.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error hides its inner error from source(); look inside.
        if let Some(tls) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cause = c.source();
    }
    None
}

/// Sorts a transport error into its [`FailureKind`], with a message.
pub fn classify(e: &ureq::Error, timeouts: &Timeouts) -> Failure {
    use std::io::ErrorKind as Io;
    use ureq::Timeout;
    let failure = |kind, detail: String| Failure { kind, detail };
    let tls = match e {
        ureq::Error::Rustls(tls) => Some(tls),
        ureq::Error::Io(io) => tls_cause(io),
        other => tls_cause(other),
    };
    if let Some(tls) = tls {
        use rustls::CertificateError as Cert;
        let hint = match tls {
            rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => {
                "; the server's certificate is not trusted by the system's CA certificates \
                 (SSL_CERT_FILE can name a PEM file with the CA that signed it)"
            }
            rustls::Error::InvalidCertificate(
                Cert::NotValidForName | Cert::NotValidForNameContext { .. },
            ) => "; give --pyroscope the host name the certificate was issued for",
            _ => "",
        };
        return failure(FailureKind::Tls, format!("TLS: {tls}{hint}"));
    }
    match e {
        ureq::Error::HostNotFound => failure(
            FailureKind::Resolve,
            "the host name does not resolve".into(),
        ),
        ureq::Error::Timeout(Timeout::Resolve) => failure(
            FailureKind::Resolve,
            format!(
                "resolving the host name took more than {:?}",
                timeouts.resolve
            ),
        ),
        ureq::Error::Timeout(Timeout::Connect) => failure(
            FailureKind::Connect,
            format!("no connection within {:?}", timeouts.connect),
        ),
        ureq::Error::Timeout(_) => failure(
            FailureKind::Timeout,
            format!("the push did not finish within {:?}", timeouts.request),
        ),
        ureq::Error::ConnectionFailed => failure(FailureKind::Connect, "cannot connect".into()),
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::HostUnreachable
                    | Io::NetworkUnreachable
                    | Io::AddrNotAvailable
                    | Io::TimedOut
            ) =>
        {
            failure(FailureKind::Connect, format!("cannot connect: {io}"))
        }
        other => failure(FailureKind::Transport, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_kind() {
        let kind = |e: ureq::Error| classify(&e, &Timeouts::DEFAULT).kind;
        assert_eq!(kind(ureq::Error::HostNotFound), FailureKind::Resolve);
        assert_eq!(
            kind(ureq::Error::Timeout(ureq::Timeout::Resolve)),
            FailureKind::Resolve
        );
        assert_eq!(
            kind(ureq::Error::Timeout(ureq::Timeout::Connect)),
            FailureKind::Connect
        );
        assert_eq!(
            kind(ureq::Error::Timeout(ureq::Timeout::Global)),
            FailureKind::Timeout
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(kind(ureq::Error::Io(refused)), FailureKind::Connect);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(kind(ureq::Error::Io(reset)), FailureKind::Transport);
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let f = classify(
            &ureq::Error::Io(std::io::Error::other(untrusted.clone())),
            &Timeouts::DEFAULT,
        );
        assert_eq!(f.kind, FailureKind::Tls);
        assert!(f.detail.contains("not trusted"), "{}", f.detail);
        assert_eq!(kind(ureq::Error::Rustls(untrusted)), FailureKind::Tls);
    }

    #[test]
    fn refusals_say_what_to_check() {
        let f = rejected(401, None, "invalid credentials\n");
        assert_eq!(f.kind, FailureKind::Rejected);
        assert!(
            f.detail
                .starts_with("HTTP status 401 (invalid credentials); check --pyroscope-user"),
            "{}",
            f.detail
        );
        let f = rejected(308, Some("https://elsewhere/ingest"), "");
        assert!(
            f.detail.contains("redirected to https://elsewhere/ingest"),
            "{}",
            f.detail
        );
        assert_eq!(rejected(500, None, "").detail, "HTTP status 500");
    }

    #[test]
    fn kinds_are_indexed_in_order() {
        for (i, kind) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    /// Reads one HTTP/1.1 request (head and body) from `conn`; None at EOF.
    fn read_request(conn: &mut impl std::io::BufRead) -> Option<(String, String)> {
        let mut head = String::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).ok()?;
        Some((head, String::from_utf8(body).ok()?))
    }

    /// A test CA (its certificate in DER) and a server configuration with
    /// a certificate it signed for `name`, speaking `versions` of TLS.
    fn test_tls_server(
        name: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Vec<u8>, rustls::ServerConfig) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        (ca.der().to_vec(), config)
    }

    #[test]
    fn https_over_tls12_reuses_its_connection() {
        use std::io::{BufReader, Write};
        // The server speaks TLS 1.2 only.
        let (ca_der, config) = test_tls_server("127.0.0.1", &[&rustls::version::TLS12]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // One connection only: both requests must come over it.
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut conn = BufReader::new(rustls::StreamOwned::new(session, tcp));
            let mut requests = Vec::new();
            while requests.len() < 2 {
                let Some(request) = read_request(&mut conn) else {
                    break;
                };
                requests.push(request);
                let stream = conn.get_mut();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
                stream.flush().unwrap();
            }
            let version = conn.get_ref().conn.protocol_version();
            (requests, version)
        });
        let endpoint = Endpoint::parse(&format!("https://127.0.0.1:{port}/pyro")).unwrap();
        let access = Access::from_options(
            &super::super::auth::AccessOptions {
                user: Some("u"),
                password_file: None,
                tenant: Some("t"),
            },
            Some("p".into()),
        )
        .unwrap();
        let roots = [Certificate::from_der(&ca_der).to_owned()];
        let client = Client::new(&endpoint, &access, &roots, Timeouts::DEFAULT);
        assert_eq!(client.post("/pyro/ingest?n=1", "a;b 1\n"), Ok(()));
        assert_eq!(client.post("/pyro/ingest?n=2", "a;b 2\n"), Ok(()));
        let (requests, version) = server.join().unwrap();
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(requests.len(), 2, "{requests:?}");
        let (head, body) = &requests[1];
        assert!(
            head.starts_with("POST /pyro/ingest?n=2 HTTP/1.1\r\n"),
            "{head}"
        );
        let head = head.to_ascii_lowercase();
        // base64("u:p")
        assert!(head.contains("\r\nauthorization: basic dtpw\r\n"), "{head}");
        assert!(head.contains("\r\nx-scope-orgid: t\r\n"), "{head}");
        assert_eq!(body, "a;b 2\n");
    }

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        // Signed by a trusted CA, but for another host.
        let (ca_der, config) = test_tls_server("pyroscope.example", rustls::DEFAULT_VERSIONS);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut conn = std::io::BufReader::new(rustls::StreamOwned::new(session, tcp));
            let _ = read_request(&mut conn);
        });
        let endpoint = Endpoint::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        let roots = [Certificate::from_der(&ca_der).to_owned()];
        let client = Client::new(&endpoint, &Access::default(), &roots, Timeouts::DEFAULT);
        let f = client.post("/ingest", "a 1\n").unwrap_err();
        assert_eq!(f.kind, FailureKind::Tls, "{}", f.detail);
        assert!(
            f.detail.contains("not valid for name")
                && f.detail.contains("pyroscope.example")
                && f.detail
                    .ends_with("give --pyroscope the host name the certificate was issued for"),
            "{}",
            f.detail
        );
    }

    /// A plain http server answering one request with `answer`.
    fn answer_once(answer: &'static str) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::Write;
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut conn = std::io::BufReader::new(tcp);
            if read_request(&mut conn).is_some() {
                let _ = conn.get_mut().write_all(answer.as_bytes());
            }
        });
        port
    }

    #[test]
    fn redirects_and_refusals_are_failures_with_their_reason() {
        let post = |answer| {
            let port = answer_once(answer);
            let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
            Client::new(&endpoint, &Access::default(), &[], Timeouts::DEFAULT)
                .post("/ingest", "a 1\n")
        };
        let f = post(
            "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://elsewhere.example/ingest\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap_err();
        assert_eq!(f.kind, FailureKind::Rejected);
        assert!(
            f.detail
                .starts_with("HTTP status 308; redirected to https://elsewhere.example/ingest"),
            "{}",
            f.detail
        );
        let f = post(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 22\r\nConnection: close\r\n\r\n\
             invalid token\r\nsorry\r\n",
        )
        .unwrap_err();
        assert!(
            f.detail
                .starts_with("HTTP status 401 (invalid token  sorry); check --pyroscope-user"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn a_backend_that_never_answers_is_a_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        // Reads the request, then holds the connection without answering
        // until the test is over.
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut conn = std::io::BufReader::new(tcp);
            let _ = read_request(&mut conn);
            let _ = done.recv();
        });
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let timeouts = Timeouts {
            request: Duration::from_millis(300),
            ..Timeouts::DEFAULT
        };
        let client = Client::new(&endpoint, &Access::default(), &[], timeouts);
        let f = client.post("/ingest", "a 1\n").unwrap_err();
        drop(done_tx);
        assert_eq!(f.kind, FailureKind::Timeout, "{}", f.detail);
        assert_eq!(f.detail, "the push did not finish within 300ms");
    }
}
