//! The netlens command line.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use netlens::conn::collector::Config;
use netlens::conn::run::{self, Live, Options};
use netlens::conn::table::Filter;
use netlens::cost::probes::SyscallHookWanted;
use netlens::model::cost::Sampler;
use netlens::model::Readiness;
use netlens::output::prometheus::cost::{CostMetrics, CostMetricsSink};
use netlens::output::prometheus::{self, conns::ConnMetrics, conns::ConnSink};
use netlens::output::pyroscope::{self, PyroscopeSink};
use netlens::output::{self, Sink};
use netlens::sys::{caps, cgroup, check, kernel};

#[path = "cli/agent.rs"]
mod agent;

/// Exit status when the needed capabilities are missing.
const EXIT_PRIVILEGES: u8 = 3;
/// Exit status when the kernel cannot run the requested feature.
const EXIT_UNSUPPORTED: u8 = 4;

#[derive(Parser)]
#[command(
    name = "netlens",
    version,
    about = "eBPF network observability: every TCP connection with the kernel's own metrics, \
             and the CPU cost of the network stack",
    long_about = "netlens watches the Linux network stack with eBPF tracepoints (no kprobes, no \
                  fentry). `netlens conns` traces every TCP connection in every network \
                  namespace; `netlens cost` measures the CPU time the kernel spends in \
                  networking; `netlens check` tells what this kernel supports.\n\n\
                  Exit status: 0 success, 1 runtime error, 2 invalid command line, 3 missing \
                  privileges, 4 kernel not supported."
)]
struct Cli {
    /// Print libbpf's messages (verifier log on load failures) to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace TCP connections: connect, accept, close and failed connects, with
    /// per-connection bytes, packets, retransmissions, RTT and RTT variance.
    Conns(ConnsArgs),
    /// Measure the CPU time the kernel spends in networking, per CPU: TX/RX
    /// system calls, NET_TX/NET_RX softirqs, network hard IRQs, NAPI threads
    /// and io_uring workers, with NET_RX broken down by stack sampling.
    Cost(CostArgs),
    /// Run both roles in one process, as a host's agent (a systemd unit, a
    /// Kubernetes DaemonSet): one /metrics endpoint for both, /healthz, and
    /// optionally the web UI with both views.
    Agent(Box<agent::AgentArgs>),
    /// Report kernel version, BTF, capabilities and tracepoints, and which
    /// netlens features work here. Exits non-zero if `conns` or `cost`
    /// cannot run.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Check for `netlens cost --syscall-hook` with this value.
    #[arg(long, value_enum, default_value = "raw")]
    syscall_hook: SyscallHookWanted,
}

#[derive(Args)]
struct ConnsArgs {
    /// Seconds between two metrics prints (0.1 to 86400, decimals allowed).
    #[arg(short = 't', long = "interval", default_value = "30", value_parser = parse_interval)]
    interval: Duration,
    /// Show active connections as a table: a full-screen view on a terminal
    /// (keys in the README; Enter refreshes at once), a parseable line per
    /// connection when stdout is not a terminal.
    #[arg(short = 'd', long = "table", conflicts_with = "json")]
    table: bool,
    /// With -d on a terminal: redraw the plain table instead of the
    /// full-screen view.
    #[arg(long, requires = "table")]
    no_tui: bool,
    /// Print counters as deltas since the previous print.
    #[arg(short = 'i', long)]
    incremental: bool,
    /// Newline-delimited JSON on stdout (schema in the README).
    #[arg(long)]
    json: bool,
    /// Include connections with a loopback address (left out by default).
    #[arg(short = 'f', long = "with-loopback")]
    with_loopback: bool,
    /// Only connections owned by this PID (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Only connections with this local or remote port (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Only connections in the network namespace with this inode number
    /// (as in `ls -L -i /proc/PID/ns/net`; repeatable).
    #[arg(long = "netns", value_name = "INODE")]
    netns: Vec<u32>,
    /// Only connections whose owner is in this container: an ID or its
    /// first digits, optionally as `<runtime>://ID` (repeatable).
    #[arg(long = "container", value_name = "ID", value_parser = parse_container_filter)]
    containers: Vec<String>,
    /// Only connections whose owner's cgroup is this path or below it, as
    /// in /proc/PID/cgroup (repeatable).
    #[arg(long = "cgroup", value_name = "PATH", value_parser = parse_cgroup_filter)]
    cgroups: Vec<String>,
    /// Capacity of the connection map (16 to 16777216): connections beyond
    /// it are counted as lost, never silently dropped. Each entry takes about
    /// 200 bytes of kernel memory.
    #[arg(short = 'm', long = "map-size", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(16..=16_777_216))]
    map_size: u32,
    /// Directory of the log file.
    #[arg(long, default_value = "log", conflicts_with = "no_log_file")]
    log_dir: PathBuf,
    /// Do not write a log file.
    #[arg(long)]
    no_log_file: bool,
    /// Rotate the log file when it reaches this many MiB (1 to 1048576).
    #[arg(long, default_value_t = 64, conflicts_with = "no_log_file",
          value_parser = clap::value_parser!(u64).range(1..=MAX_LOG_MIB))]
    log_max_mib: u64,
    /// Rotated log files to keep (0 to 10000).
    #[arg(long, default_value_t = 5, conflicts_with = "no_log_file",
          value_parser = parse_log_keep)]
    log_keep: usize,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, aggregated per
    /// process, direction, remote address and service port. Without a value:
    /// 127.0.0.1:9474. A bare PORT listens on 127.0.0.1; use 0.0.0.0:PORT to
    /// be reachable from other hosts.
    #[arg(short = 'P', long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9474",
          value_parser = prometheus::parse_listen_addr)]
    prometheus: Option<SocketAddr>,
    /// Most label sets of the Prometheus connection metrics (1 to 10000000);
    /// connections of further ones are added to an overflow series (labels
    /// "other") and counted in netlens_prometheus_series_overflow_total.
    #[arg(long, value_name = "N", default_value_t = prometheus::conns::DEFAULT_MAX_SERIES,
          requires = "prometheus",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_series: u32,
    /// Serve a web UI at http://ADDR:PORT/: the open connections (sortable,
    /// filterable, with per-second rates), top talkers, recent events and
    /// losses, refreshed every second (JSON at /api/connections and
    /// /api/events). Without a value: 127.0.0.1:9475. A bare PORT listens
    /// on 127.0.0.1.
    #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9475",
          value_parser = output::web::parse_listen_addr)]
    web: Option<SocketAddr>,
}

/// The Pyroscope push options of `cost` and `agent`.
#[derive(Args)]
pub struct PyroscopeArgs {
    /// Push each period's NET_RX stacks (folded, that period's samples only)
    /// to the Grafana Pyroscope backend at URL (POST /ingest), e.g.
    /// http://127.0.0.1:4040 or https://profiles.example (port 4040 for
    /// http, 443 for https by default). Failed pushes are counted and never
    /// slow the measurement.
    #[arg(long, value_name = "URL")]
    pub pyroscope: Option<String>,
    /// User of HTTP basic auth for the pushes (Grafana Cloud: the instance
    /// ID); the password comes from --pyroscope-password-file or the
    /// environment variable NETLENS_PYROSCOPE_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub pyroscope_user: Option<String>,
    /// File holding the password of --pyroscope-user (one line; Grafana
    /// Cloud: an access token). Takes precedence over
    /// NETLENS_PYROSCOPE_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub pyroscope_password_file: Option<PathBuf>,
    /// Tenant of a multi-tenant Pyroscope, sent as the X-Scope-OrgID header.
    #[arg(long, value_name = "ID")]
    pub pyroscope_tenant: Option<String>,
    /// Application name of the pushes, in Pyroscope's name{label=value}
    /// syntax [default: netlens.net_rx{host=HOSTNAME}].
    #[arg(long, value_name = "NAME")]
    pub pyroscope_app: Option<String>,
}

#[derive(Args)]
struct CostArgs {
    /// Stack sampling for the NET_RX breakdown: `auto` samples CPU cycles at
    /// 1000 Hz where the CPU has a PMU (NMI: also sees code that runs with
    /// interrupts off) and at the scheduler tick where it has none; `tick`
    /// samples at the scheduler tick (CONFIG_HZ) without adding an
    /// interrupt; a number is a cpu-clock frequency in Hz per CPU (at most
    /// kernel.perf_event_max_sample_rate; 0 turns sampling off).
    #[arg(short = 'f', long = "frequency", value_name = "auto|tick|HZ", default_value = "auto",
          value_parser = Sampler::parse)]
    frequency: Sampler,
    /// Milliseconds between two reports (table refresh, log line; 50 to
    /// 3600000).
    #[arg(long = "user-period", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    user_period: u64,
    /// Append one JSON object per period to this file (schema in the README).
    #[arg(short = 'l', long = "log-file", value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Write the sampled NET_RX stacks as folded stacks to FILE on exit.
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,
    /// Write a flame graph SVG of the sampled NET_RX stacks to FILE on exit.
    #[arg(long, value_name = "FILE.svg")]
    flamegraph: Option<PathBuf>,
    /// Show the user and system CPU time of these processes beside the
    /// kernel's network cost (comma-separated PIDs).
    #[arg(
        short = 'u',
        long = "user-pids",
        value_name = "PID,...",
        value_delimiter = ','
    )]
    user_pids: Vec<u32>,
    /// Account the network CPU time of every process, and of every
    /// container, keeping at most N processes in the kernel at once
    /// (records of exited processes are removed every period; time of
    /// processes beyond N is counted as unattributed). 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = netlens::cost::processes::DEFAULT_MAX_PROCESSES,
          value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    max_processes: u32,
    /// Processes and containers shown in the table and written to the log
    /// each period (the most network time first; 0 to 1000).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(0..=1000))]
    top: u16,
    /// Stop after this many seconds (0.1 to 86400, decimals allowed);
    /// default: until Ctrl-C.
    #[arg(long, value_parser = parse_interval)]
    duration: Option<Duration>,
    /// How netlens measures its own BPF run time: `sampled` turns the
    /// kernel's statistics on for one period in ten and estimates the rest;
    /// `always` measures every period (costs two clock reads per program
    /// run); `off` does not measure.
    #[arg(long, value_enum, default_value = "sampled")]
    bpf_stats: netlens::cost::selfstats::StatsMode,
    /// How TX/RX system calls are timed: `raw` (raw_syscalls: one program
    /// on every system call, returning at once for non-network calls) or
    /// `per-call` (the network calls' own tracepoints: no program on other
    /// calls, but each network call costs more; measured dearer on busy
    /// servers, see the README). `per-call` falls back to `raw` where the
    /// kernel lacks or refuses those tracepoints.
    #[arg(long, value_enum, default_value = "raw")]
    syscall_hook: SyscallHookWanted,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics: per-CPU
    /// netlens_cost_*_seconds_total counters by entry and NET_RX category.
    /// Without a value: 127.0.0.1:9474. A bare PORT listens on 127.0.0.1.
    #[arg(short = 'P', long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9474",
          value_parser = prometheus::parse_listen_addr)]
    prometheus: Option<SocketAddr>,
    #[command(flatten)]
    push: PyroscopeArgs,
    /// Netto's spelling of --pyroscope: host of the Pyroscope backend
    /// (pushes to http://ADDRESS:PORT).
    #[arg(
        short = 'a',
        long,
        value_name = "ADDRESS",
        conflicts_with = "pyroscope"
    )]
    address: Option<String>,
    /// With -a: port of the Pyroscope backend (1 to 65535).
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = pyroscope::DEFAULT_PORT,
          requires = "address", value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Serve a web UI at http://ADDR:PORT/: the per-CPU table, stacked
    /// charts of the last periods and a flame graph of their NET_RX stacks
    /// (JSON at /api/report and /api/history).
    /// Without a value: 127.0.0.1:9475. A bare PORT listens on 127.0.0.1.
    #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9475",
          value_parser = output::web::parse_listen_addr)]
    web: Option<SocketAddr>,
    /// On a terminal: redraw the plain table instead of the full-screen
    /// view.
    #[arg(long)]
    no_tui: bool,
}

/// Largest `--log-max-mib`: 1 TiB, far from overflowing a byte count.
const MAX_LOG_MIB: u64 = 1 << 20;

fn parse_log_keep(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= 10_000 => Ok(n),
        _ => Err(format!("`{s}` is not a number from 0 to 10000")),
    }
}

/// At exit, how long the queued Pyroscope pushes may take to finish.
const PUSH_DRAIN: Duration = Duration::from_secs(5);

/// How often the Prometheus metrics and the web UI of active connections
/// are refreshed, whatever the print interval.
const LIVE_REFRESH: Duration = Duration::from_secs(1);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(format!(
            "interval must be between 0.1 and 86400 seconds, got {s}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An error with the exit status it deserves.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { status: 1, error }
    }
}

/// `--container`: hexadecimal digits, after an optional `<runtime>://`.
fn parse_container_filter(s: &str) -> Result<String, String> {
    let id = s.split_once("://").map_or(s, |(_, id)| id);
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(
            "expected a container ID or its first digits (hexadecimal), \
                    optionally as <runtime>://ID"
                .into(),
        );
    }
    Ok(s.to_ascii_lowercase())
}

/// `--cgroup`: an absolute path.
fn parse_cgroup_filter(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("expected a cgroup path from the hierarchy's root, such as \
                    /system.slice or /kubepods (see /proc/PID/cgroup)"
            .into());
    }
    Ok(s.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    route_libbpf_messages(cli.verbose);
    let result = match cli.command {
        Command::Conns(args) => conns(args),
        Command::Cost(args) => cost_cmd(args),
        Command::Check(args) => check_cmd(args),
        Command::Agent(args) => agent::agent_cmd(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("netlens: error: {:#}", f.error);
            ExitCode::from(f.status)
        }
    }
}

/// libbpf prints to stderr by default; keep it quiet unless asked, so a
/// user sees one clear message instead of a verifier dump.
fn route_libbpf_messages(verbose: bool) {
    if verbose {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |_, msg| {
            eprint!("libbpf: {msg}")
        })));
    } else {
        libbpf_rs::set_print(None);
    }
}

/// The capabilities a command needs, for [`preflight`].
enum Needs {
    Conns,
    /// `sampling`: stack sampling is on (kernel symbols are needed).
    Cost {
        sampling: bool,
    },
}

/// Refuses to start without the privileges or kernel features a command
/// needs: exit 3 naming the missing capabilities, exit 4 without BTF.
fn preflight(needs: Needs) -> Result<(), Failure> {
    let version = kernel::running()?;
    let eff = caps::effective()?;
    let (missing, setcap) = match needs {
        Needs::Conns => (
            caps::missing_for_conns(eff, version),
            "cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search,cap_sys_admin+ep",
        ),
        Needs::Cost { sampling } => (
            caps::missing_for_cost(
                eff,
                version,
                sampling && !netlens::cost::kallsyms::addresses_visible(),
            ),
            "cap_bpf,cap_perfmon,cap_syslog+ep",
        ),
    };
    if !missing.is_empty() {
        let why_syslog = if missing.contains(&"CAP_SYSLOG") {
            " (CAP_SYSLOG: kernel symbol addresses for the NET_RX breakdown; -f 0 runs \
             without it)"
        } else {
            ""
        };
        return Err(Failure {
            status: EXIT_PRIVILEGES,
            error: anyhow::anyhow!(
                "missing capabilities: {}{why_syslog}. Run netlens as root, or grant them with \
                 `setcap {setcap} $(which netlens)`",
                missing.join(", ")
            ),
        });
    }
    if !kernel::has_btf() {
        return Err(Failure {
            status: EXIT_UNSUPPORTED,
            error: no_btf_error(version),
        });
    }
    Ok(())
}

/// The one message for a kernel without BTF.
fn no_btf_error(version: kernel::KernelVersion) -> anyhow::Error {
    anyhow::anyhow!(
        "this kernel ({version}) has no BTF at {}: netlens needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2020 are: Debian 11+, \
         Ubuntu 20.10+, RHEL 8.2+); on this one, install a kernel that has it. \
         `netlens check` tells more",
        kernel::VMLINUX_BTF
    )
}

fn conns(args: ConnsArgs) -> Result<(), Failure> {
    preflight(Needs::Conns)?;
    // Bound before anything else is set up, so a taken port fails at once.
    let ready = Readiness::new();
    let (_servers, mut live_sinks) =
        serve_conns(args.prometheus, args.web, args.max_series, &ready)?;
    for warning in absent_filter_targets(&args.pids, &args.netns) {
        eprintln!("netlens: warning: {warning}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let (mut sink, screen) = build_sink(&args, &stop)?;
    if live_sinks.is_none() {
        // `netlens conns | head`: with no reader left and nothing served,
        // there is nobody to trace for.
        sink.stop_when_all_closed(Arc::clone(&stop));
    }
    let (screen_status, screen_refresh) = screen.unzip();
    let refresh = match screen_refresh {
        Some(r) => Some(r),
        None if args.table && std::io::stdin().is_terminal() => Some(enter_key_channel()),
        None => None,
    };
    let opts = Options {
        collector: Config {
            map_size: args.map_size,
            filter_loopback: !args.with_loopback,
            cgroups: cgroup::layout(),
        },
        interval: args.interval,
        incremental: args.incremental,
        filter: Filter::new(args.pids, args.ports, args.netns)
            .with_owners(args.containers, args.cgroups),
        ready,
    };
    let live = live_sinks.as_mut().map(|s| Live {
        sink: s,
        every: LIVE_REFRESH,
    });
    let result = run::run(
        &opts,
        &mut sink,
        live,
        &stop,
        refresh.as_ref(),
        &mut |line| status_line(screen_status.as_ref(), line),
    );
    let flushed = sink.flush();
    let output_lost = sink.losses();
    // Leaves the full-screen view before anything else is printed.
    drop(sink);
    let losses = result?;
    flushed?;
    if opts.filter.is_set() && !opts.filter.matched_any() {
        eprintln!(
            "netlens: warning: no connection matched {} during this run",
            opts.filter.describe()
        );
    }
    eprintln!(
        "netlens: stopped; {}",
        conns_losses_line(&losses, output_lost)
    );
    Ok(())
}

/// What `conns` lost, for its exit line.
fn conns_losses_line(losses: &netlens::model::Losses, outputs: Option<String>) -> String {
    format!(
        "lost: {} events, {} connections not tracked (map full), {} existing connections not \
         seeded (map full), {} existing connections not seeded (network namespaces netlens \
         could not enter, without CAP_SYS_ADMIN), {} BPF program runs skipped{}",
        losses.events_lost,
        losses.map_full,
        losses.seed_map_full,
        losses.seed_unreached,
        losses.runs_missed,
        output_losses(outputs)
    )
}

/// The exit line's part about outputs that could not write everything.
fn output_losses(summary: Option<String>) -> String {
    summary.map_or(String::new(), |s| format!("; outputs: {s}"))
}

/// `--pid` and `--netns` values that name nothing on the host now: they are
/// kept (a process or namespace may appear later), but said.
fn absent_filter_targets(pids: &[u32], netns: &[u32]) -> Vec<String> {
    let mut warnings: Vec<String> = pids
        .iter()
        .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .map(|pid| {
            format!("--pid {pid}: there is no process with PID {pid} now; only a process started later with that PID will match")
        })
        .collect();
    if !netns.is_empty() {
        let known: Vec<u32> = netlens::sys::procfs::network_namespaces()
            .iter()
            .map(|n| n.inode)
            .collect();
        warnings.extend(netns.iter().filter(|n| !known.contains(n)).map(|n| {
            format!(
                "--netns {n}: no process or /run/netns file is in a network namespace with inode \
                 {n} now (see `ls -L -i /proc/PID/ns/net`)"
            )
        }));
    }
    warnings
}

/// Exit status for input that is well-formed but wrong (as clap's own).
const EXIT_USAGE: u8 = 2;

fn usage_error(message: String) -> Failure {
    Failure {
        status: EXIT_USAGE,
        error: anyhow::anyhow!(message),
    }
}

/// Creates (truncating) an output file now, so a bad path fails at start
/// rather than after a long run.
fn check_writable(path: &std::path::Path, what: &str) -> Result<(), Failure> {
    std::fs::File::create(path)
        .map(drop)
        .with_context(|| format!("cannot write the {what} file {}", path.display()))
        .map_err(Failure::from)
}

/// `cost`'s exit line: what was measured and what was lost.
fn cost_stopped_line(
    r: &netlens::model::cost::CostReport,
    pushes: Option<pyroscope::PushSummary>,
    outputs: Option<String>,
) -> String {
    let network: u64 = r
        .entries
        .iter()
        .filter(|e| e.entry.is_network())
        .map(|e| e.time.total_sum())
        .sum();
    format!(
        "stopped after {:.1} s; the kernel spent {:.3} CPU-seconds in networking; lost: \
         {} NET_RX samples, {} unreadable stacks, {} BPF program runs skipped{}{}{}",
        r.elapsed_ns as f64 / 1e9,
        network as f64 / 1e9,
        r.sampling.lost_total,
        r.sampling.stack_errors_total,
        r.self_cost.bpf_runs_missed_total,
        match netlens::model::cost::network_sum(&r.processes.unattributed_total_ns) {
            0 => String::new(),
            ns => format!(
                ", {:.3} CPU-seconds on no process (--max-processes {} was full)",
                ns as f64 / 1e9,
                r.processes.capacity
            ),
        },
        match pushes {
            Some(summary) => format!("; Pyroscope: {summary}"),
            None => String::new(),
        },
        output_losses(outputs)
    )
}

/// Resolves `-f` for this machine (`auto`: cycles with a PMU, else the
/// tick) and checks that the kernel grants it: exit 3 when perf events are
/// refused, 2 above the kernel's maximum rate. Returns the sampler and
/// whether `auto` chose it.
fn resolve_sampler(asked: Sampler) -> Result<(Sampler, bool), Failure> {
    let sampler_auto = asked == Sampler::Auto;
    let frequency = asked.resolve(netlens::cost::collector::pmu_can_sample_cycles());
    // -f auto opened its event already (or chose the tick, which needs none).
    let permitted = if sampler_auto {
        Ok(())
    } else {
        netlens::cost::collector::try_sampling_event(frequency)
    };
    if let Err(e) = permitted {
        if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into());
            return Err(Failure {
                status: EXIT_PRIVILEGES,
                error: anyhow::anyhow!(
                    "-f {}: the kernel refuses this process a sampling perf event ({e}); \
                     kernel.perf_event_paranoid is {paranoid}, and above 2 (the default of \
                     Debian's and Ubuntu's kernels) perf events need CAP_SYS_ADMIN, CAP_PERFMON \
                     is not enough. Run as root, lower the sysctl to 2, or sample with -f tick \
                     (no perf event)",
                    frequency.hz()
                ),
            });
        }
    }
    if let Sampler::Hz(hz) | Sampler::Cycles(hz) = frequency {
        if let Some(max) = netlens::cost::run::max_sample_rate() {
            if hz > max {
                return Err(usage_error(format!(
                    "-f/--frequency {hz} Hz is above the kernel's maximum sampling rate of {max} Hz \
                     (kernel.perf_event_max_sample_rate); choose -f {max} or lower, or -f tick"
                )));
            }
        }
    }
    Ok((frequency, sampler_auto))
}

fn cost_cmd(mut args: CostArgs) -> Result<(), Failure> {
    // Before anything is loaded: bad pyroscope options exit 2 at once.
    let push_target = pyroscope_target(
        &args.push,
        args.address.as_deref().map(|a| (a, args.port)),
        args.frequency,
    )?;
    preflight(Needs::Cost {
        sampling: args.frequency.is_on(),
    })?;
    let (frequency, sampler_auto) = resolve_sampler(args.frequency)?;
    args.frequency = frequency;
    args.user_pids.sort_unstable();
    args.user_pids.dedup();
    if args.frequency == Sampler::Off && (args.folded.is_some() || args.flamegraph.is_some()) {
        return Err(usage_error(
            "--folded and --flamegraph need stack sampling: use -f with a non-zero frequency \
             or -f tick"
                .into(),
        ));
    }
    // The BPF map of per-process times holds this many (cost.bpf.c).
    const MAX_USER_PIDS: usize = 1024;
    if args.user_pids.len() > MAX_USER_PIDS {
        return Err(usage_error(format!(
            "-u/--user-pids: at most {MAX_USER_PIDS} processes, got {}",
            args.user_pids.len()
        )));
    }
    for &pid in &args.user_pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(usage_error(format!(
                "-u/--user-pids: there is no process with PID {pid}"
            )));
        }
    }
    // Bound before anything else is set up, so a taken port fails at once.
    let mut sinks = output::Fanout::of_reports();
    let ready = Readiness::new();
    let _servers = serve_cost(args.prometheus, args.web, &mut sinks, &ready)?;
    let mut pusher = None;
    if let Some((endpoint, access)) = push_target {
        let (sink, worker) = start_pushes(&args.push, endpoint, access, &mut |line| {
            eprintln!("netlens: {line}")
        })?;
        pusher = Some((sink.counters(), worker));
        sinks.push_as("Pyroscope", sink);
    }
    for (path, what) in [
        (&args.folded, "folded stacks"),
        (&args.flamegraph, "flame graph"),
    ] {
        if let Some(p) = path {
            check_writable(p, what)?;
        }
    }
    if let Some(path) = &args.log_file {
        let mut log = output::cost::CostLogSink::open(path)?;
        if let Some((counters, _)) = &pusher {
            log = log.with_pushes(Arc::clone(counters));
        }
        sinks.push_as("log file", log);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let stdout = std::io::stdout();
    let redraw = stdout.is_terminal();
    let mut screen_status = None;
    if let Some((tui, status)) = (redraw && !args.no_tui)
        .then(|| start_screen(|| output::tui::CostTui::start(Arc::clone(&stop))))
        .flatten()
    {
        let tui = match &pusher {
            Some((counters, worker)) => {
                let shown = status.clone();
                worker.say_with(move |line| shown.line(line));
                tui.with_pushes(Arc::clone(counters))
            }
            None => tui,
        };
        sinks.push_as("terminal", tui);
        let shown = status.clone();
        sinks.say_with(move |line| shown.line(line));
        screen_status = Some(status);
    } else {
        let mut table = output::cost::CostTableSink::new(stdout, redraw);
        if let Some((counters, _)) = &pusher {
            table = table.with_pushes(Arc::clone(counters));
        }
        sinks.push_as("stdout", table);
    }
    if args.prometheus.is_none() && args.web.is_none() && pusher.is_none() {
        sinks.stop_when_all_closed(Arc::clone(&stop));
    }
    let opts = netlens::cost::run::Options {
        sampler: args.frequency,
        sampler_auto,
        period: Duration::from_millis(args.user_period),
        pids: args.user_pids.clone(),
        max_processes: args.max_processes,
        cgroups: (args.max_processes > 0).then(cgroup::layout).flatten(),
        top: usize::from(args.top),
        bpf_stats: args.bpf_stats,
        syscall_hook: args.syscall_hook,
        // The web UI draws a flame graph of the last periods' stacks.
        period_stacks: pusher.is_some() || args.web.is_some(),
        duration: args.duration,
        ready,
    };
    let finished = netlens::cost::run::run(&opts, &mut sinks, &stop, &mut |line| {
        status_line(screen_status.as_ref(), line)
    });
    let output_lost = sinks.losses();
    // The pushing thread ends once the sink is gone and its queue is done;
    // the full-screen view is left before anything else is printed.
    drop(sinks);
    let pushes = pusher.map(|(_, worker)| worker.finish(PUSH_DRAIN));
    let finished = finished?;
    if let Some(book) = &finished.stacks {
        let folded = book.folded();
        if folded.is_empty() && (args.folded.is_some() || args.flamegraph.is_some()) {
            eprintln!(
                "netlens: no NET_RX stack was sampled (no network receive work while running): \
                 the folded stacks file is left empty and the flame graph says so"
            );
        }
        if let Some(path) = &args.folded {
            folded
                .write_file(path)
                .with_context(|| format!("writing folded stacks to {}", path.display()))?;
        }
        if let Some(path) = &args.flamegraph {
            let lines = folded.lines();
            let titles = output::flamegraph::Titles {
                title: "NET_RX (netlens cost)",
                subtitle: None,
            };
            output::flamegraph::write_file(
                &lines,
                titles,
                "No stack was sampled: there was no network receive work while netlens ran.",
                path,
            )?;
        }
    }
    eprintln!(
        "netlens: {}",
        cost_stopped_line(&finished.last, pushes, output_lost)
    );
    Ok(())
}

/// The Pyroscope backend and what the pushes carry, from the options
/// (None without --pyroscope or -a). Errors are usage errors and never
/// contain the password.
/// Where `args` push to and with what credentials (None: no pushes);
/// `netto_address` is Netto's -a/-p spelling of the URL. Usage errors exit
/// 2 before anything is loaded.
fn pyroscope_target(
    args: &PyroscopeArgs,
    netto_address: Option<(&str, u16)>,
    sampler: Sampler,
) -> Result<Option<(pyroscope::Endpoint, pyroscope::Access)>, Failure> {
    let endpoint = match (&args.pyroscope, netto_address) {
        // Parsed here rather than by clap, whose error would repeat the
        // URL, credentials and all.
        (Some(url), _) => Some(
            pyroscope::Endpoint::parse(url).map_err(|e| usage_error(format!("--pyroscope {e}")))?,
        ),
        (None, Some((host, port))) => {
            Some(pyroscope::Endpoint::from_host_port(host, port).map_err(usage_error)?)
        }
        (None, None) => None,
    };
    let Some(endpoint) = endpoint else {
        for (given, option) in [
            (args.pyroscope_app.is_some(), "--pyroscope-app"),
            (args.pyroscope_user.is_some(), "--pyroscope-user"),
            (
                args.pyroscope_password_file.is_some(),
                "--pyroscope-password-file",
            ),
            (args.pyroscope_tenant.is_some(), "--pyroscope-tenant"),
        ] {
            if given {
                return Err(usage_error(format!(
                    "{option} needs --pyroscope URL (or -a ADDRESS)"
                )));
            }
        }
        return Ok(None);
    };
    if sampler == Sampler::Off {
        return Err(usage_error(
            "--pyroscope (or -a) needs stack sampling: use -f with a non-zero frequency or -f tick"
                .into(),
        ));
    }
    let options = pyroscope::AccessOptions {
        user: args.pyroscope_user.as_deref(),
        password_file: args.pyroscope_password_file.as_deref(),
        tenant: args.pyroscope_tenant.as_deref(),
    };
    let access = pyroscope::env_password()
        .and_then(|env| pyroscope::Access::from_options(&options, env))
        .map_err(usage_error)?;
    Ok(Some((endpoint, access)))
}

/// Starts the pushes to `endpoint`, saying where they go.
fn start_pushes(
    args: &PyroscopeArgs,
    endpoint: pyroscope::Endpoint,
    access: pyroscope::Access,
    say: &mut dyn FnMut(&str),
) -> Result<(PyroscopeSink, pyroscope::PyroscopeWorker)> {
    let app = args
        .pyroscope_app
        .clone()
        .unwrap_or_else(pyroscope::default_app_name);
    say(&format!(
        "pyroscope: pushing NET_RX stacks as {app} to {}/ingest every period",
        endpoint.url()
    ));
    PyroscopeSink::start(endpoint, app, access)
}

/// The HTTP endpoints of every command: `registry`'s metrics at `prom`
/// (`/metrics`), the web UI `site` at `web`, one server when they share an
/// address, `/healthz` on each. Bound now, so a taken port fails at once;
/// the servers stop when dropped.
fn serve_endpoints(
    prom: Option<SocketAddr>,
    web: Option<(SocketAddr, output::web::Site)>,
    registry: &prometheus::Registry,
    ready: &Readiness,
) -> Result<Vec<prometheus::Server>> {
    let web_addr = web.as_ref().map(|(addr, _)| *addr);
    let mut servers = Vec::new();
    if let Some(addr) = prom.filter(|&p| Some(p) != web_addr) {
        let mut routes = prometheus::Routes::new();
        routes.metrics(registry.clone()).health(ready);
        let server =
            prometheus::Server::start_routes(addr, routes, prometheus::server::PROMETHEUS)?;
        eprintln!(
            "netlens: prometheus: serving http://{}/metrics",
            server.addr()
        );
        servers.push(server);
    }
    if let Some((addr, site)) = web {
        let shared = prom == Some(addr);
        let mut routes = prometheus::Routes::new();
        site.add_to(&mut routes);
        routes.health(ready);
        if shared {
            routes.metrics(registry.clone());
        }
        let purpose = if shared {
            output::web::PURPOSE_BOTH
        } else {
            output::web::PURPOSE
        };
        let server = prometheus::Server::start_routes(addr, routes, purpose)?;
        if shared {
            eprintln!(
                "netlens: prometheus: serving http://{}/metrics",
                server.addr()
            );
        }
        eprintln!("netlens: web: serving http://{}/", server.addr());
        servers.push(server);
    }
    Ok(servers)
}

/// The endpoints of `netlens cost`: `-P` and `--web`. Their sinks join
/// `sinks`; the servers stop when dropped.
fn serve_cost(
    prom: Option<SocketAddr>,
    web: Option<SocketAddr>,
    sinks: &mut output::Fanout,
    ready: &Readiness,
) -> Result<Vec<prometheus::Server>> {
    use output::web::{CostUi, CostWebSink, Site, HISTORY};
    let registry = prometheus::Registry::new();
    let metrics = prom.map(|_| CostMetrics::new());
    if let Some(m) = &metrics {
        registry.register(m.clone());
    }
    let ui = web.map(|_| CostUi::new(HISTORY));
    let site = ui.as_ref().map(|ui| Site::new().with_cost(Arc::clone(ui)));
    let servers = serve_endpoints(prom, web.zip(site), &registry, ready)?;
    if let Some(m) = metrics {
        sinks.push_as("Prometheus", CostMetricsSink::new(m));
    }
    if let Some(ui) = ui {
        sinks.push_as("web UI", CostWebSink::new(ui));
    }
    Ok(servers)
}

/// The endpoints of `netlens conns`: `-P` and `--web`. Returns the servers
/// (stopped when dropped) and the live sinks that feed them (None without
/// either).
fn serve_conns(
    prom: Option<SocketAddr>,
    web: Option<SocketAddr>,
    max_series: u32,
    ready: &Readiness,
) -> Result<(Vec<prometheus::Server>, Option<output::Fanout>)> {
    use output::web::{ConnsUi, ConnsWebSink, Site};
    let registry = prometheus::Registry::new();
    let metrics = prom.map(|_| ConnMetrics::new(max_series));
    if let Some(m) = &metrics {
        registry.register(m.clone());
    }
    let ui = web.map(|_| ConnsUi::new());
    let site = ui.as_ref().map(|ui| Site::new().with_conns(Arc::clone(ui)));
    let servers = serve_endpoints(prom, web.zip(site), &registry, ready)?;
    let mut live = output::Fanout::new();
    if let Some(m) = metrics {
        live.push_as("Prometheus", ConnSink::new(m));
    }
    if let Some(ui) = ui {
        live.push_as("web UI", ConnsWebSink::new(ui));
    }
    Ok((servers, (!live.is_empty()).then_some(live)))
}

/// Each line typed on the terminal requests a refresh of the table.
fn enter_key_channel() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() || tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// A status line of a run loop: shown in the full-screen view when there
/// is one (which also writes it to stderr, now or at exit), else on stderr.
fn status_line(screen: Option<&output::tui::StatusLines>, line: &str) {
    match screen {
        Some(s) => s.line(line),
        None => eprintln!("{line}"),
    }
}

/// The full-screen view, or `None` (with a warning) when the terminal
/// refuses it: the caller then uses the plain table.
fn start_screen<T>(start: impl FnOnce() -> Result<T>) -> Option<T> {
    match start() {
        Ok(screen) => Some(screen),
        Err(e) => {
            eprintln!("netlens: warning: {e:#}; showing the plain table instead");
            None
        }
    }
}

/// The outputs of `conns`, and with the full-screen view its status lines
/// and refresh requests.
type ConnsSinks = (
    output::Fanout,
    Option<(output::tui::StatusLines, mpsc::Receiver<()>)>,
);

fn build_sink(args: &ConnsArgs, stop: &Arc<AtomicBool>) -> Result<ConnsSinks> {
    let log_file = if args.no_log_file {
        None
    } else {
        Some(output::logfile::RotatingFile::create(
            &args.log_dir,
            args.log_max_mib * 1024 * 1024,
            args.log_keep,
        )?)
    };
    let stdout = std::io::stdout();
    let mut sinks = output::Fanout::new();
    let mut screen = None;
    if args.json {
        sinks.push_as("stdout", output::json::JsonSink::new(stdout));
    } else if args.table {
        if !stdout.is_terminal() {
            sinks.push_as("stdout", output::table::LinesSink::new(stdout));
        } else if let Some((tui, status, refresh)) = (!args.no_tui)
            .then(|| start_screen(|| output::tui::ConnsTui::start(Arc::clone(stop))))
            .flatten()
        {
            sinks.push_as("terminal", tui);
            let shown = status.clone();
            sinks.say_with(move |line| shown.line(line));
            screen = Some((status, refresh));
        } else {
            sinks.push_as("stdout", output::table::TableSink::new(stdout));
        }
    } else {
        sinks.push_as("stdout", output::text::TextSink::new(stdout));
    }
    if let Some(file) = log_file {
        sinks.push_as("log file", output::text::TextSink::new(file));
    }
    Ok((sinks, screen))
}

fn check_cmd(args: CheckArgs) -> Result<(), Failure> {
    use check::LoadTest;
    let version = kernel::running()?;
    let eff = caps::effective()?;
    let probe = kernel::Probe::new();
    let host = check::Host {
        kernel: version,
        btf: kernel::has_btf(),
        caps_eff: eff,
        kallsyms_hidden: !netlens::cost::kallsyms::addresses_visible(),
        perf_refused: probe.perf_refused(),
    };
    let offered =
        |tp: &netlens::bpfio::Tracepoint| probe.has_tracepoint(tp.hook, tp.category, tp.name);
    let features = check::report_for(&host, args.syscall_hook, &offered);
    print!("{}", check::format_features(&features));
    print!("{}", cgroup::check_line());
    // The report is what the kernel advertises; loading and attaching the
    // real programs, as the commands do, is the proof. Each is tried only
    // where the report says its command can run.
    let conns_test = if check::conns_can_run(&features) {
        load_test(
            "conns",
            "all conns BPF programs loaded and attached",
            || {
                let stop = Arc::new(AtomicBool::new(true));
                let opts = Options {
                    collector: Config {
                        map_size: 1024,
                        filter_loopback: true,
                        cgroups: cgroup::layout(),
                    },
                    interval: Duration::from_secs(1),
                    incremental: false,
                    filter: Filter::default(),
                    ready: Readiness::new(),
                };
                let mut null = output::Fanout::new();
                run::run(&opts, &mut null, None, &stop, None, &mut |_| {}).map(drop)
            },
        )
    } else {
        LoadTest::NotRun
    };
    let cost_test = if check::cost_can_run(&features) {
        load_test(
            "cost",
            "all cost BPF programs loaded and attached, stack sampling (-f auto) works",
            || {
                // With a short burst of stack sampling.
                let stop = Arc::new(AtomicBool::new(true));
                // What `netlens cost` samples with by default.
                let opts = netlens::cost::run::Options {
                    sampler: Sampler::Auto
                        .resolve(netlens::cost::collector::pmu_can_sample_cycles()),
                    sampler_auto: true,
                    period: Duration::from_secs(1),
                    pids: Vec::new(),
                    max_processes: netlens::cost::processes::DEFAULT_MAX_PROCESSES,
                    cgroups: cgroup::layout(),
                    top: 10,
                    bpf_stats: netlens::cost::selfstats::StatsMode::Sampled,
                    syscall_hook: args.syscall_hook,
                    period_stacks: false,
                    duration: None,
                    ready: Readiness::new(),
                };
                let mut null = output::Fanout::of_reports();
                netlens::cost::run::run(&opts, &mut null, &stop, &mut |_| {}).map(drop)
            },
        )
    } else {
        LoadTest::NotRun
    };
    print!(
        "{}",
        check::format_verdict(&features, &conns_test, &cost_test)
    );
    // The load tests are done: leave no mount of ours behind.
    probe.unmount_what_it_mounted();
    let mut missing: Vec<String> = Vec::new();
    let conns_missing = caps::missing_for_conns(eff, version);
    if !conns_missing.is_empty() {
        missing.push(format!("conns needs {}", conns_missing.join(", ")));
    }
    let cost_missing = caps::missing_for_cost(eff, version, host.kallsyms_hidden);
    if !cost_missing.is_empty() {
        missing.push(format!("cost needs {}", cost_missing.join(", ")));
    }
    if !missing.is_empty() {
        return Err(Failure {
            status: EXIT_PRIVILEGES,
            error: anyhow::anyhow!(
                "missing capabilities: {}; run as root, or grant them with setcap (see the README)",
                missing.join("; ")
            ),
        });
    }
    let blocked: Vec<&str> = [("conns", &conns_test), ("cost", &cost_test)]
        .into_iter()
        .filter(|(_, t)| **t != LoadTest::Passed)
        .map(|(name, _)| name)
        .collect();
    if !blocked.is_empty() {
        return Err(Failure {
            status: EXIT_UNSUPPORTED,
            error: anyhow::anyhow!(
                "netlens {} cannot run on this kernel (see above)",
                blocked.join(" and ")
            ),
        });
    }
    Ok(())
}

/// Runs one command's load test, printing its outcome.
fn load_test(name: &str, what: &str, run: impl FnOnce() -> Result<()>) -> check::LoadTest {
    match run() {
        Ok(()) => {
            println!("load test: {what}: ok");
            check::LoadTest::Passed
        }
        Err(e) => {
            println!("load test: {name}: FAILED: {e:#}");
            check::LoadTest::Failed(format!("{e:#}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns_args(args: &[&str]) -> Result<ConnsArgs, clap::Error> {
        let full = ["netlens", "conns"].iter().chain(args);
        match Cli::try_parse_from(full)?.command {
            Command::Conns(a) => Ok(a),
            _ => unreachable!("parsed conns"),
        }
    }

    #[test]
    fn container_and_cgroup_filters() {
        let a = conns_args(&[
            "--container",
            "ABC123",
            "--container",
            "containerd://0f",
            "--cgroup",
            "/kubepods",
        ])
        .expect("valid");
        assert_eq!(a.containers, ["abc123", "containerd://0f"]);
        assert_eq!(a.cgroups, ["/kubepods"]);
        for bad in [
            &["--container", "nginx"][..],
            &["--container", "docker://"],
            &["--container", ""],
            &["--cgroup", "kubepods"],
        ] {
            let Err(e) = conns_args(bad) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
        }
    }

    #[test]
    fn prometheus_flag() {
        let a = conns_args(&[]).expect("no flags");
        assert_eq!(a.prometheus, None);
        let a = conns_args(&["-P"]).expect("-P alone");
        assert_eq!(a.prometheus, Some(prometheus::DEFAULT_ADDR));
        let a = conns_args(&["-P", "-t", "2"]).expect("-P then another flag");
        assert_eq!(a.prometheus, Some(prometheus::DEFAULT_ADDR));
        assert_eq!(a.interval, Duration::from_secs(2));
        let a = conns_args(&["--prometheus", "0.0.0.0:9100", "--max-series", "50"])
            .expect("address and limit");
        assert_eq!(a.prometheus, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(a.max_series, 50);
        assert_eq!(
            conns_args(&["-P"]).map(|a| a.max_series).ok(),
            Some(prometheus::conns::DEFAULT_MAX_SERIES)
        );
        for bad in [
            &["-P", "nope:1"][..],
            &["--max-series", "5"],
            &["-P", "--max-series", "0"],
        ] {
            let err = conns_args(bad).err().expect("refused");
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn absent_pids_and_namespaces_are_named() {
        let own_pid = std::process::id();
        let own_ns = netlens::sys::procfs::process_netns_inode().expect("own netns");
        assert!(absent_filter_targets(&[own_pid], &[own_ns]).is_empty());
        // PID_MAX_LIMIT is 2^22: no process has a larger PID; no namespace
        // has inode 1.
        let w = absent_filter_targets(&[own_pid, 1 << 23], &[own_ns, 1]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("--pid 8388608: there is no process"),
            "{w:?}"
        );
        assert!(w[1].starts_with("--netns 1: no process"), "{w:?}");
    }

    #[test]
    fn log_options() {
        let a = conns_args(&["--log-max-mib", "1048576", "--log-keep", "0"]).expect("bounds");
        assert_eq!(a.log_max_mib * 1024 * 1024, 1 << 40);
        assert_eq!(a.log_keep, 0);
        for bad in [
            // Would overflow a byte count (and once rotated on every write).
            &["--log-max-mib", "17592186044416"][..],
            &["--log-max-mib", "1048577"],
            &["--log-max-mib", "0"],
            &["--log-keep", "10001"],
            &["--log-keep", "-1"],
            // Options of a log file that is not written.
            &["--no-log-file", "--log-dir", "/tmp"],
            &["--no-log-file", "--log-keep", "3"],
            &["--no-log-file", "--log-max-mib", "3"],
        ] {
            let err = conns_args(bad).err().expect("refused");
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
        conns_args(&["--no-log-file"]).expect("alone");
    }

    #[test]
    fn numeric_ranges_are_in_the_help() {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let conns = cmd
            .find_subcommand_mut("conns")
            .expect("conns")
            .render_help();
        for range in [
            "16 to 16777216",
            "1 to 1048576",
            "0 to 10000",
            "1 to 10000000",
            "0.1 to 86400",
        ] {
            assert!(
                conns.to_string().contains(range),
                "conns --help lacks {range}"
            );
        }
        let cost = cmd.find_subcommand_mut("cost").expect("cost").render_help();
        for range in ["50 to", "0.1 to 86400", "1 to 65535"] {
            assert!(
                cost.to_string().contains(range),
                "cost --help lacks {range}"
            );
        }
    }

    #[test]
    fn no_tui_flag() {
        let a = conns_args(&["-d", "--no-tui"]).expect("-d --no-tui");
        assert!(a.table && a.no_tui);
        assert!(!conns_args(&["-d"]).expect("-d").no_tui);
        // Without -d there is no view to turn off.
        let err = conns_args(&["--no-tui"]).err().expect("refused");
        assert_eq!(err.exit_code(), 2, "{err}");
        let cost = |args: &[&str]| {
            let full = ["netlens", "cost"].iter().chain(args);
            match Cli::try_parse_from(full).map(|c| c.command) {
                Ok(Command::Cost(a)) => a.no_tui,
                _ => unreachable!("parsed cost"),
            }
        };
        assert!(cost(&["--no-tui"]));
        assert!(!cost(&[]));
    }

    #[test]
    fn web_flag() {
        let cost = |args: &[&str]| {
            let full = ["netlens", "cost"].iter().chain(args);
            match Cli::try_parse_from(full).map(|c| c.command) {
                Ok(Command::Cost(a)) => Ok(a.web),
                Ok(_) => unreachable!("parsed cost"),
                Err(e) => Err(e.exit_code()),
            }
        };
        assert_eq!(cost(&[]), Ok(None));
        assert_eq!(cost(&["--web"]), Ok(Some(output::web::DEFAULT_ADDR)));
        assert_eq!(
            cost(&["--web", "-f", "0"]),
            Ok(Some(output::web::DEFAULT_ADDR))
        );
        assert_eq!(
            cost(&["--web", "0.0.0.0:8080"]),
            Ok(Some("0.0.0.0:8080".parse().unwrap()))
        );
        assert_eq!(cost(&["--web", "nope:1"]), Err(2));
        let conns = |args: &[&str]| conns_args(args).map(|a| a.web).map_err(|e| e.exit_code());
        assert_eq!(conns(&[]), Ok(None));
        assert_eq!(conns(&["--web"]), Ok(Some(output::web::DEFAULT_ADDR)));
        assert_eq!(
            conns(&["--web", "-t", "2"]),
            Ok(Some(output::web::DEFAULT_ADDR))
        );
        assert_eq!(
            conns(&["--web", "[::1]:0"]),
            Ok(Some("[::1]:0".parse().unwrap()))
        );
        assert_eq!(conns(&["--web", "nope:1"]), Err(2));
    }
}
