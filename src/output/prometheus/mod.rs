//! Prometheus export (`-P/--prometheus [ADDR:PORT]`): a `/metrics` endpoint
//! in the text exposition format 0.0.4.
//!
//! Three parts, kept apart so that every netlens command can export through
//! the same endpoint:
//! - [`exposition`]: the text format (HELP/TYPE lines, names, escaping);
//! - [`server`]: the HTTP endpoint and the [`Registry`] of producers it serves
//!   (its [`Routes`] also carry the web UI of `netlens cost`, see
//!   [`output::web`](crate::output::web));
//! - [`conns`]: the producer of `netlens conns`, fed as a [`Sink`](crate::model::Sink);
//! - [`cost`]: the producer of `netlens cost`, fed as a
//!   [`Sink`](crate::model::Sink).
//!
//! # Adding a producer (e.g. `netlens cost`)
//!
//! A producer is anything that implements [`Producer`]: at each scrape its
//! `render` writes its families into the [`Exposition`]. Keep the state behind a
//! lock shared with the thread that collects it, take the lock only to update
//! or to render (never across I/O), and register it:
//!
//! ```ignore
//! let registry = Registry::new();
//! registry.register(Arc::new(CostMetrics::new(...)));    // impl Producer
//! let server = Server::start(addr, registry.clone())?;   // bind errors: exit 1
//! // ... collect, updating CostMetrics' state ...
//! drop(server);                                         // stops and joins the thread
//! ```
//!
//! In `render`, one call to [`Exposition::family`] per family, then one sample
//! per series, e.g. `netlens_cpu_network_seconds_total` with
//! `Labels::new().with("cpu", "0").with("category", "net_rx")`. Family names are
//! `netlens_<area>_<what>_<unit>`, counters end in `_total`, and units are base
//! units (seconds, bytes). A family name may appear in only one producer: a
//! second one is refused and reported by [`Exposition::refused`], which each
//! producer's unit tests should check is empty. Keep the number of series
//! bounded (see `--max-series` in [`conns`]).

pub mod conns;
pub mod cost;
pub mod exposition;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The family of the kernel's `recursion_misses` of netlens's BPF programs.
/// Both producers export it (`conns` and `cost` never share an endpoint),
/// with this help text, so it reads the same whichever command serves it.
pub const BPF_RUNS_MISSED_TOTAL: &str = "netlens_bpf_runs_missed_total";
pub const BPF_RUNS_MISSED_HELP: &str =
    "Runs of netlens's BPF programs the kernel skipped rather than nest them in a BPF program \
     already running on that CPU, usually the same one (bpf_prog_info recursion_misses).";

pub use exposition::{Exposition, Kind, Labels};
pub use server::{Producer, Purpose, Registry, Request, Response, Routes, Server};

/// Port of `-P` given without a value. The range exporters traditionally use
/// (9100-9999) is crowded: 9090 is Prometheus itself, 9100 node_exporter,
/// 9435 ebpf_exporter, 9464 the OpenTelemetry Prometheus exporter; 9474 is
/// none of those.
pub const DEFAULT_PORT: u16 = 9474;

/// The address of `-P` given without a value: loopback only.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

/// Parses the value of `-P`: `ADDR:PORT`, `[IPv6]:PORT`, a bare `PORT`
/// (on 127.0.0.1) or a bare address (on [`DEFAULT_PORT`]). Port 0 lets the
/// kernel pick one (netlens prints the address it got).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    parse_listen_addr_on(s, DEFAULT_PORT)
}

/// [`parse_listen_addr`] with another port for a bare address.
pub fn parse_listen_addr_on(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = s.strip_prefix(':').unwrap_or(s).parse::<u16>() {
        return Ok(SocketAddr::new(DEFAULT_ADDR.ip(), port));
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "`{s}` is not a listen address: use ADDR:PORT (127.0.0.1:{default_port}, \
         0.0.0.0:9100, [::1]:{default_port}), a PORT, or an IP address"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let p = |s| parse_listen_addr(s).map(|a| a.to_string());
        assert_eq!(p("0.0.0.0:9100").as_deref(), Ok("0.0.0.0:9100"));
        assert_eq!(p("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(p("[::1]:9200").as_deref(), Ok("[::1]:9200"));
        assert_eq!(p("9100").as_deref(), Ok("127.0.0.1:9100"));
        assert_eq!(p(":9100").as_deref(), Ok("127.0.0.1:9100"));
        assert_eq!(p("0.0.0.0").as_deref(), Ok("0.0.0.0:9474"));
        assert_eq!(p("::").as_deref(), Ok("[::]:9474"));
        assert_eq!(p("[2001:db8::1]").as_deref(), Ok("[2001:db8::1]:9474"));
        assert_eq!(p(" 9100 ").as_deref(), Ok("127.0.0.1:9100"));
        for bad in [
            "",
            "localhost:9100",
            "1.2.3.4:99999",
            "abc",
            "9100:1.2.3.4",
            "::1:x",
        ] {
            let err = parse_listen_addr(bad).expect_err(bad);
            assert!(err.contains("ADDR:PORT"), "{err}");
        }
        assert_eq!(DEFAULT_ADDR.to_string(), "127.0.0.1:9474");
    }
}
