//! The `netlens conns` main loop: one thread owns the collector, turns its
//! records into events and snapshots, and hands them to the outputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::collector::{Collector, Config};
use super::seed;
use super::table::{Clock, ConnTable, Filter, RowsFor};
use crate::model::Sink;
use crate::model::{Losses, Readiness, Snapshot};
use crate::sys::cgroup::Resolver;

/// How often events are drained and output is flushed: a reader sees every
/// event within this time (plus formatting), well under a second.
const DRAIN_PERIOD: Duration = Duration::from_millis(100);

pub struct Options {
    pub collector: Config,
    pub interval: Duration,
    pub incremental: bool,
    pub filter: Filter,
    /// Set once the programs are attached and existing connections seeded
    /// (what the endpoints answer at `/healthz`).
    pub ready: Readiness,
}

/// An output fed apart from the printed ones, more often and always with
/// totals: the Prometheus exporter, whose scrapes should not see values as
/// old as the print interval (30 s by default), nor deltas in `-i` mode.
///
/// It gets every event, and every `every` a snapshot of the established
/// connections with absolute counters (`incremental` false), from the same
/// connection table as the printed snapshots (a live refresh leaves their
/// `-i` deltas alone). Building that snapshot costs one pass over the
/// memory-mapped records, shared with a print that falls due at the same
/// time; without a live output nothing extra runs.
pub struct Live<'a> {
    pub sink: &'a mut dyn Sink,
    pub every: Duration,
}

/// Loads the tracer, seeds existing connections and runs until `stop` is
/// set. `refresh` requests an immediate snapshot (Enter in table mode).
/// `status` receives human-readable progress lines (stderr in the binary).
pub fn run(
    opts: &Options,
    sink: &mut dyn Sink,
    mut live: Option<Live<'_>>,
    stop: &Arc<AtomicBool>,
    refresh: Option<&Receiver<()>>,
    status: &mut dyn FnMut(&str),
) -> Result<Losses> {
    let clock = Clock::system();
    let mut collector = Collector::start(&opts.collector)?;
    for f in &collector.attach_failures {
        status(&format!(
            "warning: {} not attached ({}); lost: {}",
            f.program, f.error, f.what_is_lost
        ));
    }
    let cgroups =
        Resolver::new(opts.collector.cgroups.clone()).with_names(collector.cgroup_names()?);
    let mut table = ConnTable::with_cgroups(cgroups);
    let report = seed::seed(&mut collector, &mut table, opts.collector.filter_loopback)?;
    for warning in report.warnings() {
        status(&format!("warning: {warning}"));
    }
    // Before the line, so that whoever reads it finds /healthz ready.
    opts.ready.set_ready();
    status(&format!(
        "netlens: ready: tracing TCP connections; {}",
        report.summary()
    ));
    match &opts.collector.cgroups {
        Some(l) => status(&format!(
            "netlens: owners' cgroups from the {} hierarchy at {}",
            l.hierarchy.describe(),
            l.mount_point.display()
        )),
        None => {
            status("warning: no cgroup hierarchy mounted: connections carry no cgroup or container")
        }
    }
    let mut cgroup_warned = false;
    // Counted by user space once, at start; the BPF side counts the rest.
    let seed_unreached = report.unreached_connections();
    let losses_now = |collector: &Collector| -> Result<Losses> {
        Ok(Losses {
            seed_unreached,
            ..collector.losses()?
        })
    };

    let mut next_tick = Instant::now() + opts.interval;
    let mut next_live = Instant::now();
    let mut last_losses = Losses::default();
    let mut raw_events = Vec::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let wait = if stopping {
            Duration::ZERO
        } else {
            DRAIN_PERIOD.min(next_tick.saturating_duration_since(Instant::now()))
        };
        collector.poll_events(wait, &mut raw_events)?;
        for raw in &raw_events {
            if let Some(ev) = table.event(raw, &clock) {
                if opts.filter.matches(&ev.conn) {
                    sink.event(&ev)?;
                    if let Some(l) = live.as_mut() {
                        l.sink.event(&ev)?;
                    }
                }
            }
        }
        if let (false, Some(e)) = (cgroup_warned, table.cgroup_error()) {
            status(&format!(
                "warning: cgroup paths cannot be read ({e}): connections carry their cgroup id \
                 and container but no path; reading paths needs CAP_DAC_READ_SEARCH"
            ));
            cgroup_warned = true;
        }
        let now = Instant::now();
        let live_due = live.is_some() && (stopping || now >= next_live);
        let requested = refresh.is_some_and(|r| r.try_iter().count() > 0);
        let print_due = stopping || requested || now >= next_tick;
        if live_due || print_due {
            // One refresh walk feeds both outputs when both are due.
            collector.connections()?;
        }
        if let Some(l) = live.as_mut().filter(|_| live_due) {
            let snap = Snapshot {
                timestamp: clock.now_unix(),
                conns: table.rows(
                    collector.last_connections(),
                    &clock,
                    &opts.filter,
                    RowsFor::Live,
                ),
                incremental: false,
                losses: losses_now(&collector)?,
            };
            l.sink.snapshot(&snap)?;
            l.sink.flush()?;
            next_live = Instant::now() + l.every;
        }
        if print_due {
            let losses = losses_now(&collector)?;
            let snap = Snapshot {
                timestamp: clock.now_unix(),
                conns: table.rows(
                    collector.last_connections(),
                    &clock,
                    &opts.filter,
                    RowsFor::Print {
                        incremental: opts.incremental,
                    },
                ),
                incremental: opts.incremental,
                losses,
            };
            if losses != last_losses && losses.any() {
                status(&format!(
                    "warning: lost so far: {} events (ring buffer full), {} connections not \
                     tracked (map full, raise -m/--map-size), {} existing connections not \
                     seeded (map full), {} existing connections not seeded (in network \
                     namespaces netlens could not enter: entering one needs CAP_SYS_ADMIN), {} \
                     BPF program runs skipped (the program was already running on that CPU)",
                    losses.events_lost,
                    losses.map_full,
                    losses.seed_map_full,
                    losses.seed_unreached,
                    losses.runs_missed
                ));
            }
            last_losses = losses;
            sink.snapshot(&snap)?;
            if !requested {
                next_tick = Instant::now() + opts.interval;
            }
        }
        sink.flush()?;
        if stopping {
            return Ok(last_losses);
        }
    }
}
