//! Small pieces shared by every collector: reading the records BPF
//! programs write, draining a BPF ring buffer, and the kernel's statistics
//! of a BPF program.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::{libbpf_sys, OpenObject, RingBuffer};

use crate::sys::check::Tracepoint;
use crate::sys::kernel::{Hook, Probe};

/// A program that is not attached, and what is missing because of it.
#[derive(Debug)]
pub struct AttachFailure {
    pub program: &'static str,
    pub what_is_lost: &'static str,
    pub error: String,
}

/// Turns off loading of every program in `table` whose tracepoint the
/// kernel lacks, before load: libbpf would otherwise fail the whole object
/// on it (a missing tp_btf type fails the load, not the attach). Returns
/// those programs as failures, with what is lost. A missing required one
/// is an error; `role` names the command in it. Programs whose tracepoint
/// the probe cannot tell about are left to load and attach as usual.
pub fn skip_missing_tracepoints(
    object: &mut OpenObject,
    table: &[Tracepoint],
    probe: &Probe,
    role: &str,
) -> Result<Vec<AttachFailure>> {
    let mut skipped = Vec::new();
    for tp in table {
        if probe.has_tracepoint(tp.hook, tp.category, tp.name) != Some(false) {
            continue;
        }
        let why = if probe.perf_refused() && tp.hook == Hook::Tracefs {
            format!(
                "kernel.perf_event_paranoid above 2 refuses tracepoint {}:{} to a process \
                 without CAP_SYS_ADMIN",
                tp.category, tp.name
            )
        } else {
            format!("the kernel has no tracepoint {}:{}", tp.category, tp.name)
        };
        if tp.required {
            bail!(
                "{why}, which {role} needs: {}; run `netlens check`",
                tp.without
            );
        }
        let mut prog = object
            .progs_mut()
            .find(|p| p.name() == tp.program)
            .with_context(|| format!("program {} missing from the BPF object", tp.program))?;
        prog.set_autoload(false);
        skipped.push(AttachFailure {
            program: tp.program,
            what_is_lost: tp.without,
            error: why,
        });
    }
    Ok(skipped)
}

/// Reads a plain-old-data record from the start of `bytes`.
///
/// Only for the skeleton's generated `types::*` structs, which contain
/// integers and integer arrays only, so every bit pattern is a valid value.
pub fn read_record<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, read_unaligned copes with any
    // alignment, and T is a repr(C) struct of integers (see doc comment), for
    // which every bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Waits up to `timeout` for the ring to signal data, then runs the
/// callbacks of every record queued. A signal interrupting the wait (that
/// is how Ctrl-C arrives) is not an error. `what` names the ring in errors.
pub fn poll_ring(ring: &RingBuffer<'_>, timeout: Duration, what: &str) -> Result<()> {
    if let Err(e) = ring.poll(timeout) {
        if e.kind() != libbpf_rs::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("polling the {what} ring buffer"));
        }
    }
    ring.consume()
        .with_context(|| format!("reading the {what} ring buffer"))?;
    Ok(())
}

/// What the kernel counts for a BPF program (from its `bpf_prog_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Run time and runs: counted only while BPF_ENABLE_STATS is on.
    pub run_ns: u64,
    pub runs: u64,
    /// Runs the kernel skipped rather than nest the program in a BPF
    /// program already running on that CPU (for tp_btf programs: itself,
    /// interrupted by a softirq or IRQ that hits the same tracepoint).
    /// Counted whether BPF_ENABLE_STATS is on or not.
    pub recursion_misses: u64,
}

impl std::ops::Add for ProgStats {
    type Output = ProgStats;

    fn add(self, o: ProgStats) -> ProgStats {
        ProgStats {
            run_ns: self.run_ns.saturating_add(o.run_ns),
            runs: self.runs.saturating_add(o.runs),
            recursion_misses: self.recursion_misses.saturating_add(o.recursion_misses),
        }
    }
}

impl std::iter::Sum for ProgStats {
    fn sum<I: Iterator<Item = ProgStats>>(iter: I) -> ProgStats {
        iter.fold(ProgStats::default(), |a, b| a + b)
    }
}

/// The kernel's statistics of the BPF program `prog` (a program fd), or
/// None when the kernel does not answer (not a BPF program).
pub fn prog_stats(prog: BorrowedFd<'_>) -> Option<ProgStats> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a zeroed bpf_prog_info of len bytes with no array
    // pointers set, so the kernel writes only into it; the fd is borrowed,
    // so it stays open during the call.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
    (ret == 0).then_some(ProgStats {
        run_ns: info.run_time_ns,
        runs: info.run_cnt,
        recursion_misses: info.recursion_misses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn stats_add_up_field_by_field() {
        let a = ProgStats {
            run_ns: 10,
            runs: 2,
            recursion_misses: 1,
        };
        let b = ProgStats {
            run_ns: 5,
            runs: 1,
            recursion_misses: 3,
        };
        assert_eq!(
            [a, b].into_iter().sum::<ProgStats>(),
            ProgStats {
                run_ns: 15,
                runs: 3,
                recursion_misses: 4
            }
        );
        assert_eq!(std::iter::empty().sum::<ProgStats>(), ProgStats::default());
        let max = ProgStats {
            runs: u64::MAX,
            ..a
        };
        assert_eq!((max + b).runs, u64::MAX, "saturates");
    }

    #[test]
    fn a_file_that_is_no_bpf_program_has_no_stats() {
        let f = std::fs::File::open("/dev/null").expect("open /dev/null");
        assert_eq!(prog_stats(f.as_fd()), None);
    }
}
