//! What happens when an output fails: tracing goes on.
//!
//! A full disk under the log file, a reader that closed the stdout pipe, a
//! log that became unwritable: each output is guarded on its own. Its first
//! failure is warned about once, what it drops from then on is counted, and
//! the other outputs, the measurement and the servers keep running. A
//! transient failure (a full disk) is retried at the next batch, and its
//! recovery said; a closed pipe is final, and that output is not called
//! again.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Attached (as the outermost anyhow context) to a write error by an output
/// that knows how many of its records the failed write lost, e.g. the lines
/// of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped(pub u64);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dropped", self.0)
    }
}

/// The error of an output whose failure must end the run rather than be
/// counted: the full-screen view, whose user would otherwise face a dead
/// screen while netlens runs on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Where a guarded output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Writing,
    /// Failed at the last call; retried at the next one.
    Failing,
    /// Its reader is gone (EPIPE): never called again.
    Closed,
}

/// The health of one output: see the module documentation.
#[derive(Debug)]
pub struct Guard {
    name: &'static str,
    /// What a dropped record is, plural: "lines", "reports".
    unit: &'static str,
    state: State,
    dropped: u64,
    /// Dropped since the output last wrote successfully.
    dropped_in_outage: u64,
    first_error: Option<String>,
    /// Failures and recoveries are said once per run: a nearly full disk
    /// that takes a small batch and refuses the next must not flood stderr.
    recovery_said: bool,
}

impl Guard {
    pub fn new(name: &'static str, unit: &'static str) -> Guard {
        Guard {
            name,
            unit,
            state: State::Writing,
            dropped: 0,
            dropped_in_outage: 0,
            first_error: None,
            recovery_said: false,
        }
    }

    /// Runs one call to the output, unless its reader is gone. Returns the
    /// message to show the user, if the call changed the output's state
    /// (first failure, recovery, closed).
    pub fn call(&mut self, f: impl FnOnce() -> anyhow::Result<()>) -> Option<String> {
        if self.state == State::Closed {
            return None;
        }
        match f() {
            Ok(()) if self.state == State::Failing => {
                self.state = State::Writing;
                let lost = std::mem::take(&mut self.dropped_in_outage);
                (!std::mem::replace(&mut self.recovery_said, true)).then(|| {
                    format!(
                        "{} writes again; {lost} {} were dropped while it could not (further \
                         failures are only counted, on the exit line)",
                        self.name, self.unit
                    )
                })
            }
            Ok(()) => None,
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, e: &anyhow::Error) -> Option<String> {
        let lost = e.downcast_ref::<Dropped>().map_or(1, |d| d.0);
        self.dropped += lost;
        self.dropped_in_outage += lost;
        let error = error_text(e);
        let first = self.first_error.is_none();
        self.first_error.get_or_insert_with(|| error.clone());
        if reader_gone(e) {
            self.state = State::Closed;
            return Some(format!(
                "warning: {}: its reader is gone ({error}); netlens stops writing there and keeps \
                 tracing",
                self.name
            ));
        }
        self.state = State::Failing;
        if !first {
            return None;
        }
        Some(format!(
            "warning: {}: {error}; netlens keeps tracing, drops and counts what this output \
             cannot write, and retries at every batch",
            self.name
        ))
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// What this output lost in all, for the exit line: `None` if nothing.
    pub fn summary(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "{}: {} {} dropped ({})",
                self.name,
                self.dropped,
                self.unit,
                self.first_error.as_deref().unwrap_or("unknown error")
            )
        })
    }
}

/// The error without the [`Dropped`] count, which the summary gives apart.
fn error_text(e: &anyhow::Error) -> String {
    let skip = usize::from(e.downcast_ref::<Dropped>().is_some());
    e.chain()
        .skip(skip)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// EPIPE: the other end of a pipe or socket was closed for good.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The guards of a fan-out, with what to do when they change state.
pub(crate) struct Guards {
    pub(crate) guards: Vec<Guard>,
    say: Box<dyn FnMut(&str) + Send>,
    /// Set once every output's reader is gone, if the owner asked for it
    /// (when nothing else, such as a server, still serves the user).
    stop_when_all_closed: Option<Arc<AtomicBool>>,
}

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            guards: Vec::new(),
            say: Box::new(|line| eprintln!("netlens: {line}")),
            stop_when_all_closed: None,
        }
    }
}

impl Guards {
    pub(crate) fn push(&mut self, name: &'static str, unit: &'static str) {
        self.guards.push(Guard::new(name, unit));
    }

    /// Runs `f` as output `i`'s call under its guard. A [`Fatal`] error is
    /// passed on, not counted.
    pub(crate) fn call(
        &mut self,
        i: usize,
        f: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut fatal = None;
        let said = self.guards[i].call(|| match f() {
            Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                fatal = Some(e);
                Ok(())
            }
            other => other,
        });
        if let Some(e) = fatal {
            return Err(e);
        }
        if let Some(message) = said {
            (self.say)(&message);
            if self.guards[i].is_closed() && self.guards.iter().all(Guard::is_closed) {
                if let Some(stop) = &self.stop_when_all_closed {
                    (self.say)("every output is closed: stopping");
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn stop_when_all_closed(&mut self, stop: Arc<AtomicBool>) {
        self.stop_when_all_closed = Some(stop);
    }

    /// Where the guards' messages go (stderr by default), given without
    /// the `netlens: ` prefix.
    pub(crate) fn say_with(&mut self, say: impl FnMut(&str) + Send + 'static) {
        self.say = Box::new(say);
    }

    /// What the outputs lost, for the exit line: `None` if nothing.
    pub(crate) fn summary(&self) -> Option<String> {
        let parts: Vec<String> = self.guards.iter().filter_map(Guard::summary).collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn enospc(lines: u64) -> anyhow::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing log file log/netlens.log")
            .context(Dropped(lines))
    }

    #[test]
    fn a_full_disk_is_warned_once_counted_and_recovered() {
        let mut g = Guard::new("log file", "lines");
        assert_eq!(g.call(|| Ok(())), None);
        assert_eq!(g.summary(), None);
        let first = g.call(|| enospc(10)).expect("first failure is said");
        assert!(
            first.starts_with(
                "warning: log file: writing log file log/netlens.log: No space left on device"
            ),
            "{first}"
        );
        assert!(first.contains("keeps tracing"), "{first}");
        // Further failures are counted, not said again.
        assert_eq!(g.call(|| enospc(5)), None);
        assert_eq!(g.call(|| Err(anyhow::anyhow!("no count"))), None);
        let again = g.call(|| Ok(())).expect("recovery is said");
        assert!(
            again.starts_with("log file writes again; 16 lines were dropped while it could not"),
            "{again}"
        );
        assert_eq!(g.call(|| Ok(())), None);
        // A second outage and recovery are only counted.
        assert_eq!(g.call(|| enospc(4)), None);
        assert_eq!(g.call(|| Ok(())), None);
        let summary = g.summary().expect("losses");
        assert!(
            summary.starts_with("log file: 20 lines dropped (writing log file log/netlens.log: No space left on device"),
            "{summary}"
        );
        assert!(!g.is_closed());
    }

    #[test]
    fn a_closed_pipe_is_final() {
        let mut g = Guard::new("stdout", "lines");
        let epipe = || -> anyhow::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
                .context("writing output")
                .context(Dropped(3))
        };
        let said = g.call(epipe).expect("said");
        assert!(said.contains("its reader is gone"), "{said}");
        assert!(g.is_closed());
        let mut called = false;
        assert_eq!(
            g.call(|| {
                called = true;
                Ok(())
            }),
            None
        );
        assert!(!called, "a closed output is not called again");
        assert!(g
            .summary()
            .is_some_and(|s| s.starts_with("stdout: 3 lines dropped")));
    }

    #[test]
    fn stop_is_asked_only_when_every_output_is_closed_and_the_owner_wants_it() {
        let said = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut guards = Guards::default();
        let log = Arc::clone(&said);
        guards.say_with(move |l| log.lock().expect("log").push(l.to_owned()));
        guards.push("stdout", "lines");
        guards.push("log file", "lines");
        let stop = Arc::new(AtomicBool::new(false));
        guards.stop_when_all_closed(Arc::clone(&stop));
        let epipe =
            || -> anyhow::Result<()> { Err(io::Error::from(io::ErrorKind::BrokenPipe).into()) };
        guards.call(0, epipe).expect("counted, not passed on");
        assert!(!stop.load(Ordering::Relaxed), "the log file still writes");
        guards.call(1, epipe).expect("counted, not passed on");
        assert!(stop.load(Ordering::Relaxed));
        let said = said.lock().expect("log");
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(said[2], "every output is closed: stopping");
        assert!(guards
            .summary()
            .is_some_and(|s| s.contains("stdout: 1 lines") && s.contains("log file: 1 lines")));

        // A fatal failure ends the run: passed on, not counted.
        guards.push("terminal", "lines");
        let fatal = guards
            .call(2, || Err(Fatal("the view died".into()).into()))
            .expect_err("passed on");
        assert_eq!(fatal.to_string(), "the view died");
        assert!(guards.guards[2].summary().is_none(), "not counted");
    }
}
