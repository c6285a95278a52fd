//! The one interface between collection and presentation: the collectors
//! hand every output the values of the model through it, and every output
//! (text, JSON, table, log, Prometheus, web UI, Pyroscope) implements the
//! calls of the roles it shows. Collection knows this trait only, never an
//! output.

use super::cost::CostReport;
use super::{ConnEvent, Snapshot};

/// One output of netlens. Every call has a default that ignores it, so an
/// output of one role implements that role's calls only.
pub trait Sink {
    /// `conns`: one lifecycle event (connect, accept, close, connect_failed).
    fn event(&mut self, _ev: &ConnEvent) -> anyhow::Result<()> {
        Ok(())
    }

    /// `conns`: the periodic view of active connections.
    fn snapshot(&mut self, _snap: &Snapshot) -> anyhow::Result<()> {
        Ok(())
    }

    /// `cost`: one period's report.
    fn report(&mut self, _report: &CostReport) -> anyhow::Result<()> {
        Ok(())
    }

    /// After each batch (about every 100 ms in `conns`) and at exit: push
    /// buffered output out.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// What the output is, in messages about it ("stdout", "log file").
    fn name(&self) -> &'static str {
        "an output"
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
        (**self).event(ev)
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        (**self).snapshot(snap)
    }

    fn report(&mut self, report: &CostReport) -> anyhow::Result<()> {
        (**self).report(report)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}
