//! The web UI (`--web [ADDR:PORT]`): one page, built into netlens (no
//! external assets), that polls JSON endpoints of the same server.
//!
//! A server carries one or more *roles* ([`Site`]): `conns` (the connections
//! of `netlens conns`, [`conns::ConnsUi`]) and `cost` (the CPU cost of
//! `netlens cost`, [`cost::CostUi`]). The page asks `/api/roles` which ones
//! are served and shows a tab for each, so the same page serves a process
//! that runs one role or both.
//!
//! Routes, served by the same HTTP server as `/metrics` ([`Routes`]; one
//! server when `-P` and `--web` share an address):
//! - `/`, `/app.css`, `/app.js`: the page;
//! - `/api/roles`: `{"roles": [...]}`;
//! - the endpoints of each role (see their modules).

pub mod conns;
pub mod cost;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::output::prometheus::{self, Purpose, Response, Routes};

pub use conns::{ConnsUi, ConnsWebSink};
pub use cost::{CostUi, CostWebSink, HISTORY};

/// Port of `--web` given without a value: the one after `-P`'s.
pub const DEFAULT_PORT: u16 = prometheus::DEFAULT_PORT + 1;

/// The address of `--web` given without a value: loopback only.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

const PAGE: &str = include_str!("page.html");
const STYLE: &str = include_str!("app.css");
/// The page's script: the shared part, then each role's view.
const SCRIPT: &str = concat!(
    include_str!("common.js"),
    include_str!("conns.js"),
    include_str!("cost.js"),
    include_str!("main.js")
);

pub(crate) const JSON: &str = "application/json";

/// The `--web` endpoint.
pub const PURPOSE: Purpose = Purpose {
    what: "the web UI",
    flag: "--web",
    thread: "web",
};

/// `-P` and `--web` on one address.
pub const PURPOSE_BOTH: Purpose = Purpose {
    what: "Prometheus metrics and the web UI",
    flag: "-P/--web",
    thread: "http",
};

/// Parses the value of `--web`, like `-P` (a bare address listens on
/// [`DEFAULT_PORT`]).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    prometheus::parse_listen_addr_on(s, DEFAULT_PORT)
}

/// The roles one web UI serves; [`Site::add_to`] adds their routes and the
/// page's.
#[derive(Default)]
pub struct Site {
    conns: Option<Arc<ConnsUi>>,
    cost: Option<Arc<CostUi>>,
}

impl Site {
    pub fn new() -> Site {
        Site::default()
    }

    pub fn with_conns(mut self, ui: Arc<ConnsUi>) -> Site {
        self.conns = Some(ui);
        self
    }

    pub fn with_cost(mut self, ui: Arc<CostUi>) -> Site {
        self.cost = Some(ui);
        self
    }

    /// Names of the roles served, in the order of the page's tabs.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if self.conns.is_some() {
            roles.push("conns");
        }
        if self.cost.is_some() {
            roles.push("cost");
        }
        roles
    }

    /// Adds the page, `/api/roles` and every role's endpoints to `routes`.
    pub fn add_to(self, routes: &mut Routes) {
        let roles = serde_json::json!({ "roles": self.roles() }).to_string();
        routes.add("/", |_| Response::ok("text/html; charset=utf-8", PAGE));
        routes.add("/app.css", |_| {
            Response::ok("text/css; charset=utf-8", STYLE)
        });
        routes.add("/app.js", |_| {
            Response::ok("text/javascript; charset=utf-8", SCRIPT)
        });
        routes.add("/api/roles", move |_| Response::ok(JSON, roles.clone()));
        if let Some(ui) = self.conns {
            ui.routes(routes);
        }
        if let Some(ui) = self.cost {
            ui.routes(routes);
        }
    }
}

/// The value of `key` in a query string (`a=1&b=2`), not decoded.
pub(crate) fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// `503` with `{"error": message}`: nothing measured yet.
pub(crate) fn not_yet(message: &'static str) -> Response {
    Response {
        status: "503 Service Unavailable",
        content_type: JSON,
        body: serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    }
}

#[cfg(test)]
pub(crate) mod test_http {
    //! A minimal HTTP/1.0 client for the endpoint tests.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    /// (status line, content type, body)
    pub fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
        let status = head.lines().next().unwrap_or("").to_string();
        let ct = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find_map(|(name, value)| {
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim())
            })
            .unwrap_or("")
            .to_string();
        (status, ct, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::test_http::get;
    use super::*;
    use crate::output::prometheus::Server;
    use serde_json::Value;

    fn serve(site: Site) -> Server {
        let mut routes = Routes::new();
        site.add_to(&mut routes);
        Server::start_routes("127.0.0.1:0".parse().unwrap(), routes, PURPOSE).expect("bind")
    }

    #[test]
    fn the_page_lists_the_roles_it_serves() {
        let both = Site::new()
            .with_cost(CostUi::new(2))
            .with_conns(ConnsUi::new());
        assert_eq!(both.roles(), ["conns", "cost"]);
        for (site, roles) in [
            (Site::new().with_conns(ConnsUi::new()), vec!["conns"]),
            (Site::new().with_cost(CostUi::new(2)), vec!["cost"]),
            (both, vec!["conns", "cost"]),
        ] {
            let server = serve(site);
            let (status, ct, body) = get(server.addr(), "/api/roles");
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(ct, JSON);
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["roles"], serde_json::json!(roles));
        }
    }

    #[test]
    fn the_page_and_its_assets_are_built_in() {
        let server = serve(Site::new().with_conns(ConnsUi::new()));
        let addr = server.addr();
        let (status, ct, page) = get(addr, "/");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, "text/html; charset=utf-8");
        assert!(page.contains("<title>netlens</title>"), "{page}");
        let (status, ct, css) = get(addr, "/app.css");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, "text/css; charset=utf-8");
        let (status, ct, js) = get(addr, "/app.js");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ct, "text/javascript; charset=utf-8");
        for (name, text) in [("page", &page), ("css", &css), ("js", &js)] {
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{name}: no external asset"
            );
        }
        assert!(js.contains("api/roles"));
        assert!(js.contains("api/connections") && js.contains("api/history"));
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param("since=5&x=1", "since"), Some("5"));
        assert_eq!(query_param("x=1&since=7", "since"), Some("7"));
        assert_eq!(query_param("nosince=7", "since"), None);
        assert_eq!(query_param("", "since"), None);
    }

    #[test]
    fn taken_port_names_the_option() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = Server::start_routes(addr, Routes::new(), PURPOSE)
            .err()
            .expect("port is taken")
            .to_string();
        assert!(
            err.starts_with(&format!("cannot serve the web UI on {addr}")),
            "{err}"
        );
        assert!(err.contains("--web ADDR:PORT"), "{err}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(DEFAULT_ADDR.to_string(), "127.0.0.1:9475");
        assert_eq!(
            parse_listen_addr("0.0.0.0"),
            Ok("0.0.0.0:9475".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert!(parse_listen_addr("nowhere:80").is_err());
    }
}
