//! `netlens agent`: both roles in one process for a host, the way a
//! systemd unit or a Kubernetes DaemonSet runs netlens. One endpoint serves
//! `/metrics` of both roles and `/healthz` (200 once every role's programs
//! are attached); `--web` serves the one web UI with both views.
//!
//! Each role runs on a thread of its own, with the collector, run loop and
//! outputs of its subcommand. A role that fails stops the other, and the agent exits with
//! that role's error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use netlens::conn::collector::Config;
use netlens::conn::run::{self, Live, Options};
use netlens::conn::table::Filter;
use netlens::cost::probes::SyscallHookWanted;
use netlens::model::cost::Sampler;
use netlens::model::{ConnEvent, Readiness, Snapshot};
use netlens::output::prometheus::cost::{CostMetrics, CostMetricsSink};
use netlens::output::prometheus::{self, conns::ConnMetrics, conns::ConnSink};
use netlens::output::web::{ConnsUi, ConnsWebSink, CostUi, CostWebSink, Site, HISTORY};
use netlens::output::{self, Sink};
use netlens::sys::cgroup;

use super::{
    conns_losses_line, cost_stopped_line, preflight, pyroscope_target, resolve_sampler,
    serve_endpoints, start_pushes, usage_error, Failure, Needs, PyroscopeArgs, LIVE_REFRESH,
    PUSH_DRAIN,
};

/// What the agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Every TCP connection (what `netlens conns` traces).
    Conns,
    /// The CPU cost of the network stack (what `netlens cost` measures).
    Cost,
}

#[derive(Args)]
pub struct AgentArgs {
    /// Serve Prometheus metrics of every role at http://ADDR:PORT/metrics and
    /// readiness at /healthz. A bare PORT listens on 127.0.0.1; use
    /// 0.0.0.0:PORT to be reachable from other hosts (as a DaemonSet is).
    #[arg(short = 'P', long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9474",
          value_parser = prometheus::parse_listen_addr)]
    prometheus: SocketAddr,
    /// Also serve the web UI (both views) at http://ADDR:PORT/; on the -P
    /// address, one server answers both. Without a value: 127.0.0.1:9475.
    #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:9475",
          value_parser = output::web::parse_listen_addr)]
    web: Option<SocketAddr>,
    /// The roles to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "conns,cost")]
    roles: Vec<Role>,
    /// Print every connection event (connect, accept, close, connect_failed)
    /// as a JSON line on stdout, for a log collector.
    #[arg(long)]
    events: bool,
    /// conns: include connections with a loopback address.
    #[arg(long)]
    with_loopback: bool,
    /// conns: capacity of the connection map (16 to 16777216).
    #[arg(long, default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(16..=16_777_216))]
    map_size: u32,
    /// conns: most label sets of the Prometheus connection metrics (1 to
    /// 10000000); further ones go to an overflow series.
    #[arg(long, value_name = "N", default_value_t = prometheus::conns::DEFAULT_MAX_SERIES,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_series: u32,
    /// cost: stack sampling for the NET_RX breakdown (`auto`, `tick`, or a
    /// frequency in Hz; 0 turns it off), as `netlens cost -f`.
    #[arg(long, value_name = "auto|tick|HZ", default_value = "auto", value_parser = Sampler::parse)]
    frequency: Sampler,
    /// cost: milliseconds between two reports (50 to 3600000).
    #[arg(long = "user-period", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    user_period: u64,
    /// cost: how TX/RX system calls are timed, as `netlens cost --syscall-hook`.
    #[arg(long, value_enum, default_value = "raw")]
    syscall_hook: SyscallHookWanted,
    /// cost: processes whose network CPU time is kept at once in the kernel
    /// (0 turns per-process and per-container accounting off), as
    /// `netlens cost --max-processes`.
    #[arg(long, value_name = "N", default_value_t = netlens::cost::processes::DEFAULT_MAX_PROCESSES,
          value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub max_processes: u32,
    /// cost: how netlens's own BPF run time is measured.
    #[arg(long, value_enum, default_value = "sampled")]
    bpf_stats: netlens::cost::selfstats::StatsMode,
    /// cost: pushes of the NET_RX stacks to Pyroscope, as `netlens cost`.
    #[command(flatten)]
    push: PyroscopeArgs,
}

/// Passes a connection's events on, and nothing else (no snapshots).
struct EventsOnly<S>(S);

impl<S: Sink> Sink for EventsOnly<S> {
    fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
        self.0.event(ev)
    }

    fn snapshot(&mut self, _: &Snapshot) -> anyhow::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.0.flush()
    }
}

/// The agent prints no periodic view: snapshots only feed the live outputs.
const NO_PRINTS: Duration = Duration::from_secs(86_400);

pub fn agent_cmd(args: AgentArgs) -> Result<(), Failure> {
    let conns_on = args.roles.contains(&Role::Conns);
    let cost_on = args.roles.contains(&Role::Cost);
    if !conns_on && !cost_on {
        return Err(usage_error("--roles: name at least one role".into()));
    }
    if conns_on {
        preflight(Needs::Conns)?;
    }
    let push_target = pyroscope_target(&args.push, None, args.frequency)?;
    if push_target.is_some() && !cost_on {
        return Err(usage_error(
            "--pyroscope pushes the cost role's NET_RX stacks: add cost to --roles".into(),
        ));
    }
    let mut sampler = (Sampler::Off, false);
    if cost_on {
        preflight(Needs::Cost {
            sampling: args.frequency.is_on(),
        })?;
        sampler = resolve_sampler(args.frequency)?;
    }
    let ready = Readiness::needing(usize::from(conns_on) + usize::from(cost_on));

    // Bound before anything is loaded, so a taken port fails at once.
    let registry = prometheus::Registry::new();
    let conn_metrics = conns_on.then(|| ConnMetrics::new(args.max_series));
    let cost_metrics = cost_on.then(CostMetrics::new);
    if let Some(m) = &conn_metrics {
        registry.register(m.clone());
    }
    if let Some(m) = &cost_metrics {
        registry.register(m.clone());
    }
    let conns_ui = (conns_on && args.web.is_some()).then(ConnsUi::new);
    let cost_ui = (cost_on && args.web.is_some()).then(|| CostUi::new(HISTORY));
    let site = args.web.map(|_| {
        let mut site = Site::new();
        if let Some(ui) = &conns_ui {
            site = site.with_conns(Arc::clone(ui));
        }
        if let Some(ui) = &cost_ui {
            site = site.with_cost(Arc::clone(ui));
        }
        site
    });
    let servers = serve_endpoints(Some(args.prometheus), args.web.zip(site), &registry, &ready)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let cost_thread = if let Some(metrics) = cost_metrics {
        let mut sinks = output::Fanout::of_reports();
        sinks.push_as("Prometheus", CostMetricsSink::new(metrics));
        if let Some(ui) = &cost_ui {
            sinks.push_as("web UI", CostWebSink::new(Arc::clone(ui)));
        }
        let mut pusher = None;
        if let Some((endpoint, access)) = push_target {
            let (sink, worker) = start_pushes(&args.push, endpoint, access, &mut |line| {
                eprintln!("{}", role_line("cost", line))
            })?;
            // Its warnings are the cost role's lines too.
            worker.say_with(|line| eprintln!("{}", role_line("cost", line)));
            sinks.push_as("Pyroscope", sink);
            pusher = Some(worker);
        }
        let opts = netlens::cost::run::Options {
            sampler: sampler.0,
            sampler_auto: sampler.1,
            period: Duration::from_millis(args.user_period),
            pids: Vec::new(),
            max_processes: args.max_processes,
            cgroups: (args.max_processes > 0).then(cgroup::layout).flatten(),
            // What the web UI shows.
            top: 50,
            bpf_stats: args.bpf_stats,
            syscall_hook: args.syscall_hook,
            // The web UI's flame graph and the pushes are drawn from each
            // period's stacks.
            period_stacks: cost_ui.is_some() || pusher.is_some(),
            duration: None,
            ready: ready.clone(),
        };
        let stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cost".into())
            .spawn(move || {
                let status = &mut |line: &str| eprintln!("{}", role_line("cost", line));
                let result = netlens::cost::run::run(&opts, &mut sinks, &stop, status);
                // Whatever ended this role ends the agent.
                stop.store(true, Ordering::Relaxed);
                let outputs = sinks.losses();
                // The pushing thread ends once its sink is gone.
                drop(sinks);
                let pushes = pusher.map(|worker| worker.finish(PUSH_DRAIN));
                result.map(|finished| cost_stopped_line(&finished.last, pushes, outputs))
            })
            .context("starting the cost thread")?;
        Some(thread)
    } else {
        None
    };

    let conns_thread = if let Some(metrics) = conn_metrics {
        let mut live = output::Fanout::new();
        live.push_as("Prometheus", ConnSink::new(metrics));
        if let Some(ui) = &conns_ui {
            live.push_as("web UI", ConnsWebSink::new(Arc::clone(ui)));
        }
        let mut printed = output::Fanout::new();
        if args.events {
            printed.push_as(
                "stdout",
                EventsOnly(output::json::JsonSink::new(std::io::stdout())),
            );
        }
        let opts = Options {
            collector: Config {
                map_size: args.map_size,
                filter_loopback: !args.with_loopback,
                cgroups: cgroup::layout(),
            },
            interval: NO_PRINTS,
            incremental: false,
            filter: Filter::default(),
            ready: ready.clone(),
        };
        let stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("conns".into())
            .spawn(move || {
                let result = run::run(
                    &opts,
                    &mut printed,
                    Some(Live {
                        sink: &mut live,
                        every: LIVE_REFRESH,
                    }),
                    &stop,
                    None,
                    &mut |line| eprintln!("{}", role_line("conns", line)),
                );
                stop.store(true, Ordering::Relaxed);
                let outputs: Vec<String> = [printed.losses(), live.losses()]
                    .into_iter()
                    .flatten()
                    .collect();
                result.map(|losses| {
                    let outputs = (!outputs.is_empty()).then(|| outputs.join(", "));
                    format!("stopped; {}", conns_losses_line(&losses, outputs))
                })
            })
            .context("starting the conns thread")?;
        Some(thread)
    } else {
        None
    };

    // One line once every role is attached (what /healthz says too), or
    // nothing if a role ends first.
    let threads = [&conns_thread, &cost_thread];
    while !ready.is_ready()
        && !threads
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.is_finished()))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if ready.is_ready() {
        let roles: Vec<&str> = [(conns_on, "conns"), (cost_on, "cost")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        eprintln!("netlens: ready: agent running {}", roles.join(" and "));
    }
    let join = |t: Option<std::thread::JoinHandle<anyhow::Result<String>>>, role: &str| {
        t.map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the {role} role panicked")))
        })
    };
    let conns_result = join(conns_thread, "conns");
    let cost_result = join(cost_thread, "cost");
    drop(servers);
    let mut first_error = None;
    for (role, result) in [("conns", conns_result), ("cost", cost_result)] {
        match result {
            Some(Ok(line)) => eprintln!("netlens: {role}: {line}"),
            Some(Err(e)) => {
                eprintln!("netlens: {role}: failed: {e:#}");
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(Failure::from(e)),
        None => Ok(()),
    }
}

/// A role's status line, prefixed with the role: `netlens: conns: ready: ...`.
fn role_line(role: &str, line: &str) -> String {
    match line.strip_prefix("netlens: ") {
        Some(rest) => format!("netlens: {role}: {rest}"),
        None => format!("netlens: {role}: {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_name_their_role() {
        assert_eq!(
            role_line("conns", "netlens: ready: tracing TCP connections"),
            "netlens: conns: ready: tracing TCP connections"
        );
        assert_eq!(
            role_line("cost", "warning: lost so far"),
            "netlens: cost: warning: lost so far"
        );
    }
}
