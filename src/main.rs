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
use netlens::model::cost::Sampler;
use netlens::output::prometheus::cost::{CostMetrics, CostMetricsSink};
use netlens::output::prometheus::{self, conns::ConnMetrics, conns::ConnSink};
use netlens::output::pyroscope::{self, PyroscopeSink};
use netlens::output::{self, Sink};
use netlens::sys::{caps, check, kernel};

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
    /// Report kernel version, BTF, capabilities and tracepoints, and which
    /// netlens features work here. Exits non-zero if `conns` or `cost`
    /// cannot run.
    Check,
}

#[derive(Args)]
struct ConnsArgs {
    /// Seconds between two metrics prints (decimals allowed).
    #[arg(short = 't', long = "interval", default_value = "30", value_parser = parse_interval)]
    interval: Duration,
    /// Show active connections as a table (a parseable line per connection
    /// when stdout is not a terminal). Press Enter to refresh at once.
    #[arg(short = 'd', long = "table", conflicts_with = "json")]
    table: bool,
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
    /// Capacity of the connection map: connections beyond it are counted
    /// as lost, never silently dropped. Each entry takes about 200 bytes of kernel memory.
    #[arg(short = 'm', long = "map-size", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(16..=16_777_216))]
    map_size: u32,
    /// Directory of the log file.
    #[arg(long, default_value = "log")]
    log_dir: PathBuf,
    /// Do not write a log file.
    #[arg(long)]
    no_log_file: bool,
    /// Rotate the log file when it reaches this many MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    log_max_mib: u64,
    /// Rotated log files to keep.
    #[arg(long, default_value_t = 5)]
    log_keep: usize,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, aggregated per
    /// process, direction, remote address and service port. Without a value:
    /// 127.0.0.1:9474. A bare PORT listens on 127.0.0.1; use 0.0.0.0:PORT to
    /// be reachable from other hosts.
    #[arg(short = 'P', long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9474",
          value_parser = prometheus::parse_listen_addr)]
    prometheus: Option<SocketAddr>,
    /// Most label sets of the Prometheus connection metrics; connections of
    /// further ones are added to an overflow series (labels "other") and
    /// counted in netlens_prometheus_series_overflow_total.
    #[arg(long, value_name = "N", default_value_t = prometheus::conns::DEFAULT_MAX_SERIES,
          requires = "prometheus",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_series: u32,
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
    /// Milliseconds between two reports (table refresh, log line).
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
    /// Stop after this many seconds (decimals allowed); default: until Ctrl-C.
    #[arg(long, value_parser = parse_interval)]
    duration: Option<Duration>,
    /// How netlens measures its own BPF run time: `sampled` turns the
    /// kernel's statistics on for one period in ten and estimates the rest;
    /// `always` measures every period (costs two clock reads per program
    /// run); `off` does not measure.
    #[arg(long, value_enum, default_value = "sampled")]
    bpf_stats: netlens::cost::selfstats::StatsMode,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics: per-CPU
    /// netlens_cost_*_seconds_total counters by entry and NET_RX category.
    /// Without a value: 127.0.0.1:9474. A bare PORT listens on 127.0.0.1.
    #[arg(short = 'P', long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9474",
          value_parser = prometheus::parse_listen_addr)]
    prometheus: Option<SocketAddr>,
    /// Push each period's NET_RX stacks (folded, that period's samples only)
    /// to the Grafana Pyroscope backend at URL, e.g. http://127.0.0.1:4040
    /// (POST /ingest). Plain http only (no TLS). Failed pushes are counted
    /// and never slow the measurement.
    #[arg(long, value_name = "URL", value_parser = pyroscope::Endpoint::parse,
          conflicts_with = "address")]
    pyroscope: Option<pyroscope::Endpoint>,
    /// Application name of the pushes, in Pyroscope's name{label=value}
    /// syntax [default: netlens.net_rx{host=HOSTNAME}].
    #[arg(long, value_name = "NAME")]
    pyroscope_app: Option<String>,
    /// Netto's spelling of --pyroscope: host of the Pyroscope backend
    /// (pushes to http://ADDRESS:PORT).
    #[arg(short = 'a', long, value_name = "ADDRESS")]
    address: Option<String>,
    /// With -a: port of the Pyroscope backend.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = pyroscope::DEFAULT_PORT,
          requires = "address", value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Serve a web UI at http://ADDR:PORT/: the per-CPU table and stacked
    /// charts of the last periods (JSON at /api/report and /api/history).
    /// Without a value: 127.0.0.1:9475. A bare PORT listens on 127.0.0.1.
    #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9475",
          value_parser = output::web::parse_listen_addr)]
    web: Option<SocketAddr>,
}

/// At exit, how long the queued Pyroscope pushes may take to finish.
const PUSH_DRAIN: Duration = Duration::from_secs(5);

/// How often the Prometheus metrics of active connections are refreshed,
/// whatever the print interval.
const PROMETHEUS_REFRESH: Duration = Duration::from_secs(1);

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    route_libbpf_messages(cli.verbose);
    let result = match cli.command {
        Command::Conns(args) => conns(args),
        Command::Cost(args) => cost_cmd(args),
        Command::Check => check_cmd(),
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
    let exporter = args
        .prometheus
        .map(|addr| start_exporter(addr, args.max_series))
        .transpose()?;
    let mut sink = build_sink(&args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let refresh = if args.table && std::io::stdin().is_terminal() {
        Some(enter_key_channel())
    } else {
        None
    };
    let opts = Options {
        collector: Config {
            map_size: args.map_size,
            filter_loopback: !args.with_loopback,
        },
        interval: args.interval,
        incremental: args.incremental,
        filter: Filter {
            pids: args.pids,
            ports: args.ports,
            netns: args.netns,
        },
    };
    let (_server, mut exporter_sink) = exporter.unzip();
    let live = exporter_sink.as_mut().map(|s| Live {
        sink: s,
        every: PROMETHEUS_REFRESH,
    });
    let losses = run::run(
        &opts,
        sink.as_mut(),
        live,
        &stop,
        refresh.as_ref(),
        &mut |line| eprintln!("{line}"),
    )?;
    sink.flush()?;
    eprintln!(
        "netlens: stopped; lost: {} events, {} connections not tracked (map full), {} existing \
         connections not seeded (map full), {} existing connections not seeded (network \
         namespaces netlens could not enter, without CAP_SYS_ADMIN), {} BPF program runs skipped",
        losses.events_lost,
        losses.map_full,
        losses.seed_map_full,
        losses.seed_unreached,
        losses.runs_missed
    );
    Ok(())
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

fn cost_cmd(mut args: CostArgs) -> Result<(), Failure> {
    preflight(Needs::Cost {
        sampling: args.frequency.is_on(),
    })?;
    let sampler_auto = args.frequency == Sampler::Auto;
    args.frequency = args
        .frequency
        .resolve(netlens::cost::collector::pmu_can_sample_cycles());
    args.user_pids.sort_unstable();
    args.user_pids.dedup();
    // -f auto opened its event already (or chose the tick, which needs none).
    let permitted = if sampler_auto {
        Ok(())
    } else {
        netlens::cost::collector::try_sampling_event(args.frequency)
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
                    args.frequency.hz()
                ),
            });
        }
    }
    if let Sampler::Hz(hz) | Sampler::Cycles(hz) = args.frequency {
        if let Some(max) = netlens::cost::run::max_sample_rate() {
            if hz > max {
                return Err(usage_error(format!(
                    "-f/--frequency {hz} Hz is above the kernel's maximum sampling rate of {max} Hz \
                     (kernel.perf_event_max_sample_rate); choose -f {max} or lower, or -f tick"
                )));
            }
        }
    } else if args.frequency == Sampler::Off && (args.folded.is_some() || args.flamegraph.is_some())
    {
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
    let mut sinks = output::cost::CostFanout::default();
    let _servers = serve_cost(args.prometheus, args.web, &mut sinks)?;
    let endpoint = match (&args.pyroscope, &args.address) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(host)) => {
            Some(pyroscope::Endpoint::from_host_port(host, args.port).map_err(usage_error)?)
        }
        (None, None) => None,
    };
    if endpoint.is_some() && args.frequency == Sampler::Off {
        return Err(usage_error(
            "--pyroscope (or -a) needs stack sampling: use -f with a non-zero frequency or -f tick"
                .into(),
        ));
    }
    if args.pyroscope_app.is_some() && endpoint.is_none() {
        return Err(usage_error(
            "--pyroscope-app needs --pyroscope URL (or -a ADDRESS)".into(),
        ));
    }
    let mut pusher = None;
    if let Some(endpoint) = endpoint {
        let app = args
            .pyroscope_app
            .clone()
            .unwrap_or_else(pyroscope::default_app_name);
        eprintln!(
            "netlens: pyroscope: pushing NET_RX stacks as {app} to {}/ingest every period",
            endpoint.url()
        );
        let (sink, worker) = PyroscopeSink::start(endpoint, app)?;
        pusher = Some((sink.counters(), worker));
        sinks.push(sink);
    }
    for (path, what) in [
        (&args.folded, "folded stacks"),
        (&args.flamegraph, "flame graph"),
    ] {
        if let Some(p) = path {
            check_writable(p, what)?;
        }
    }
    let stdout = std::io::stdout();
    let redraw = stdout.is_terminal();
    sinks.push(output::cost::CostTableSink::new(stdout, redraw));
    if let Some(path) = &args.log_file {
        sinks.push(output::cost::CostLogSink::open(path)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let opts = netlens::cost::run::Options {
        sampler: args.frequency,
        sampler_auto,
        period: Duration::from_millis(args.user_period),
        pids: args.user_pids.clone(),
        bpf_stats: args.bpf_stats,
        period_stacks: pusher.is_some(),
        push_counters: pusher.as_ref().map(|(c, _)| Arc::clone(c)),
        duration: args.duration,
    };
    let finished =
        netlens::cost::run::run(&opts, &mut sinks, &stop, &mut |line| eprintln!("{line}"));
    // The pushing thread ends once the sink is gone and its queue is done.
    drop(sinks);
    let pushes = pusher.map(|(_, worker)| worker.finish(PUSH_DRAIN));
    let finished = finished?;
    if let Some(book) = &finished.stacks {
        let folded = book.folded();
        if folded.is_empty() && (args.folded.is_some() || args.flamegraph.is_some()) {
            eprintln!(
                "netlens: no NET_RX stack was sampled (no network receive work while running): \
                 the folded stacks and flame graph files are left empty"
            );
        }
        if let Some(path) = &args.folded {
            folded
                .write_file(path)
                .with_context(|| format!("writing folded stacks to {}", path.display()))?;
        }
        if let (Some(path), false) = (&args.flamegraph, folded.is_empty()) {
            netlens::cost::folded::write_flamegraph(folded.lines(), path, "NET_RX (netlens cost)")
                .with_context(|| format!("writing the flame graph to {}", path.display()))?;
        }
    }
    let r = &finished.last;
    let network: u64 = r
        .entries
        .iter()
        .filter(|e| e.entry.is_network())
        .map(|e| e.time.total_sum())
        .sum();
    eprintln!(
        "netlens: stopped after {:.1} s; the kernel spent {:.3} CPU-seconds in networking; lost: \
         {} NET_RX samples, {} unreadable stacks, {} BPF program runs skipped{}",
        r.elapsed_ns as f64 / 1e9,
        network as f64 / 1e9,
        r.sampling.lost_total,
        r.sampling.stack_errors_total,
        r.self_cost.bpf_runs_missed_total,
        match pushes {
            Some((pushed, failed)) => format!("; Pyroscope: {pushed} pushes, {failed} failed"),
            None => String::new(),
        }
    );
    Ok(())
}

/// The endpoints of `netlens cost`: `-P` and `--web`, one server when they
/// share an address. Their sinks join `sinks`; the servers stop when dropped.
fn serve_cost(
    prom: Option<SocketAddr>,
    web: Option<SocketAddr>,
    sinks: &mut output::cost::CostFanout,
) -> Result<Vec<prometheus::Server>> {
    use output::web::{WebSink, WebUi, HISTORY, PURPOSE, PURPOSE_BOTH};
    let mut servers = Vec::new();
    if let Some(addr) = prom.filter(|&p| Some(p) != web) {
        let metrics = CostMetrics::new();
        servers.push(serve_prometheus(addr, metrics.clone())?);
        sinks.push(CostMetricsSink::new(metrics));
    }
    if let Some(addr) = web {
        let ui = WebUi::new(HISTORY);
        let mut routes = prometheus::Routes::new();
        ui.routes(&mut routes);
        let mut purpose = PURPOSE;
        if prom == Some(addr) {
            let metrics = CostMetrics::new();
            let registry = prometheus::Registry::new();
            registry.register(metrics.clone());
            routes.metrics(registry);
            sinks.push(CostMetricsSink::new(metrics));
            purpose = PURPOSE_BOTH;
        }
        let server = prometheus::Server::start_routes(addr, routes, purpose)?;
        if prom == Some(addr) {
            eprintln!(
                "netlens: prometheus: serving http://{}/metrics",
                server.addr()
            );
        }
        eprintln!("netlens: web: serving http://{}/", server.addr());
        servers.push(server);
        sinks.push(WebSink::new(ui));
    }
    Ok(servers)
}

/// Serves `producer`'s metrics at `addr`; the server stops when dropped.
fn serve_prometheus(
    addr: SocketAddr,
    producer: Arc<dyn prometheus::Producer>,
) -> Result<prometheus::Server> {
    let registry = prometheus::Registry::new();
    registry.register(producer);
    let server = prometheus::Server::start(addr, registry)?;
    eprintln!(
        "netlens: prometheus: serving http://{}/metrics",
        server.addr()
    );
    Ok(server)
}

/// Serves the connection metrics at `addr`; returns the server (stopped on
/// drop) and the sink that feeds it.
fn start_exporter(addr: SocketAddr, max_series: u32) -> Result<(prometheus::Server, ConnSink)> {
    let metrics = ConnMetrics::new(max_series);
    let server = serve_prometheus(addr, metrics.clone())?;
    Ok((server, ConnSink::new(metrics)))
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

fn build_sink(args: &ConnsArgs) -> Result<Box<dyn Sink + Send>> {
    let stdout = std::io::stdout();
    let mut sinks = output::Fanout::new();
    if args.json {
        sinks.push(output::json::JsonSink::new(stdout));
    } else if args.table {
        if stdout.is_terminal() {
            sinks.push(output::table::TableSink::new(stdout));
        } else {
            sinks.push(output::table::LinesSink::new(stdout));
        }
    } else {
        sinks.push(output::text::TextSink::new(stdout));
    }
    if !args.no_log_file {
        let file = output::logfile::RotatingFile::create(
            &args.log_dir,
            args.log_max_mib * 1024 * 1024,
            args.log_keep,
        )?;
        sinks.push(output::text::TextSink::new(file));
    }
    Ok(Box::new(sinks))
}

fn check_cmd() -> Result<(), Failure> {
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
    let offered = |tp: &check::Tracepoint| probe.has_tracepoint(tp.hook, tp.category, tp.name);
    let features = check::report(&host, &offered);
    print!("{}", check::format_features(&features));
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
                    },
                    interval: Duration::from_secs(1),
                    incremental: false,
                    filter: Filter::default(),
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
                    bpf_stats: netlens::cost::selfstats::StatsMode::Sampled,
                    period_stacks: false,
                    push_counters: None,
                    duration: None,
                };
                let mut null = output::cost::CostFanout::default();
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
    }
}
