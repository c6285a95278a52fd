//! The netlens command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use netlens::conn::collector::Config;
use netlens::conn::run::{self, Options};
use netlens::conn::table::Filter;
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
    about = "eBPF network observability: every TCP connection with the kernel's own metrics",
    long_about = "netlens watches the Linux network stack with eBPF tracepoints (no kprobes, no \
                  fentry). `netlens conns` traces every TCP connection in every network \
                  namespace; `netlens check` tells what this kernel supports.\n\n\
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
    /// Report kernel version, BTF, capabilities and tracepoints, and which
    /// netlens features work here. Exits non-zero if `conns` cannot run.
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
}

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

/// Refuses to start without the privileges or kernel features `conns` needs.
fn preflight() -> Result<(), Failure> {
    let version = kernel::running()?;
    let eff = caps::effective()?;
    let missing = caps::missing_for_tracing(eff, version);
    if !missing.is_empty() {
        return Err(Failure {
            status: EXIT_PRIVILEGES,
            error: anyhow::anyhow!(
                "missing capabilities: {}. Run netlens as root, or grant them with \
                 `setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep $(which netlens)`",
                missing.join(", ")
            ),
        });
    }
    if !kernel::has_btf() {
        return Err(Failure {
            status: EXIT_UNSUPPORTED,
            error: anyhow::anyhow!(
                "this kernel ({version}) has no BTF at {}: netlens needs a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y (Linux 5.9 or later). `netlens check` tells more",
                kernel::VMLINUX_BTF
            ),
        });
    }
    Ok(())
}

fn conns(args: ConnsArgs) -> Result<(), Failure> {
    preflight()?;
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
    let losses = run::run(&opts, sink.as_mut(), &stop, refresh.as_ref(), &mut |line| {
        eprintln!("{line}")
    })?;
    sink.flush()?;
    eprintln!(
        "netlens: stopped; lost: {} events, {} connections not tracked (map full), {} existing \
         connections not seeded",
        losses.events_lost, losses.map_full, losses.seed_map_full
    );
    Ok(())
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
    let version = kernel::running()?;
    let eff = caps::effective()?;
    let tracefs = kernel::tracefs_root().ok();
    let exists = |cat: &str, name: &str| {
        tracefs
            .as_deref()
            .is_some_and(|root| kernel::tracepoint_exists(root, cat, name))
    };
    let mut features = check::report(version, kernel::has_btf(), eff, &exists);
    // Without privileges tracefs cannot be listed: say so instead of
    // reporting every tracepoint as missing.
    let listable = tracefs
        .as_deref()
        .is_some_and(|root| std::fs::read_dir(root.join("events")).is_ok());
    if !listable {
        for f in features
            .iter_mut()
            .filter(|f| f.name.starts_with("tracepoint "))
        {
            f.available = false;
            f.required = false;
            f.detail = "not checked: tracefs cannot be read without privileges".into();
        }
    }
    print!("{}", check::format_report(&features));
    let missing = caps::missing_for_tracing(eff, version);
    if !missing.is_empty() {
        return Err(Failure {
            status: EXIT_PRIVILEGES,
            error: anyhow::anyhow!(
                "missing capabilities: {}; run `netlens check` as root for the full report",
                missing.join(", ")
            ),
        });
    }
    if !check::conns_can_run(&features) {
        return Err(Failure {
            status: EXIT_UNSUPPORTED,
            error: anyhow::anyhow!("`netlens conns` cannot run here (see above)"),
        });
    }
    // The report is based on what the kernel advertises; loading and
    // attaching the real programs is the proof.
    {
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
        let result = run::run(&opts, &mut null, &stop, None, &mut |_| {});
        match result {
            Ok(_) => println!("load test: all conns BPF programs loaded and attached: ok"),
            Err(e) => {
                println!("load test: FAILED: {e:#}");
                return Err(Failure {
                    status: EXIT_UNSUPPORTED,
                    error: e.context("the BPF programs do not load here"),
                });
            }
        }
    }
    Ok(())
}
