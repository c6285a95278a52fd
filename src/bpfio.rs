//! Small pieces shared by every collector: reading the records BPF
//! programs write, draining a BPF ring buffer, and the kernel's statistics
//! of a BPF program.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::{libbpf_sys, Link, MapCore, Object, OpenObject, RingBuffer};

use crate::sys::cgroup;
use crate::sys::kernel::{Hook, Probe};

/// A tracepoint a collector attaches to, the BPF program attached there,
/// and what is lost without it. Each collector's table of them lives with
/// its programs (`conn::probes`, `cost::probes`); the collectors attach from
/// those tables and `netlens check` reports from them, so `check` and a
/// running command tell the same story.
pub struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
    /// The program in src/bpf/conns.bpf.c (or cost.bpf.c).
    pub program: &'static str,
    /// How the program attaches (its section in the .bpf.c file).
    pub hook: Hook,
    pub required: bool,
    /// What it gives when present.
    pub gives: &'static str,
    /// What netlens loses when it is absent.
    pub without: &'static str,
}

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

/// Which command a collector serves, in its error messages.
#[derive(Clone, Copy, Debug)]
pub struct Role {
    /// `netlens conns`, `netlens cost`.
    pub command: &'static str,
    /// What it cannot do when a required program does not attach:
    /// "trace connections".
    pub purpose: &'static str,
    /// The subcommand, for `netlens -v <subcommand>`.
    pub subcommand: &'static str,
}

/// Attaches the program of each tracepoint of `table` in order, except those
/// already in `failures` (left out before load). A required one that fails
/// is an error; an optional one joins `failures`, with what is lost.
pub fn attach_tracepoints<'t>(
    object: &mut Object,
    table: impl IntoIterator<Item = &'t Tracepoint>,
    failures: &mut Vec<AttachFailure>,
    role: Role,
) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for tp in table {
        if failures.iter().any(|f| f.program == tp.program) {
            continue;
        }
        let name = tp.program;
        let prog = object
            .progs_mut()
            .find(|p| p.name() == name)
            .with_context(|| format!("program {name} missing from the BPF object"))?;
        match prog.attach() {
            Ok(link) => links.push(link),
            Err(e) if tp.required => bail!(
                "attaching {name} failed: {e}; {} cannot {} on this kernel (run `netlens check`)",
                role.command,
                role.purpose
            ),
            Err(e) => failures.push(AttachFailure {
                program: name,
                what_is_lost: tp.without,
                error: e.to_string(),
            }),
        }
    }
    Ok(links)
}

/// The error of a failed load: the kernel refused a program (the verifier,
/// a missing helper or kfunc, no BTF).
pub fn load_error(e: &libbpf_rs::Error, role: Role) -> anyhow::Error {
    anyhow::anyhow!(
        "loading the BPF programs of {} failed: {e}. It needs a kernel with BTF \
         (/sys/kernel/btf/vmlinux) and the BPF facilities the README lists under Kernels; run \
         `netlens check` for what this kernel lacks, and `netlens -v {}` for the verifier log",
        role.command,
        role.subcommand
    )
}

/// A type that BPF programs write and user space reads back as raw bytes:
/// integers, arrays of integers, and structs of those only, so that every
/// bit pattern of its size is a valid value.
///
/// # Safety
///
/// Implement it only for such types: no references, pointers, `bool`,
/// `char`, enums with invalid discriminants, or anything with a drop.
/// Padding is fine (its bytes are never read as a value).
pub unsafe trait Record: Copy {}

// SAFETY: integers: every bit pattern is a value.
unsafe impl Record for u32 {}
// SAFETY: as above.
unsafe impl Record for u64 {}

/// Reads a [`Record`] from the start of `bytes`, or `None` when `bytes` is
/// too short. Any alignment.
pub fn read_record<T: Record>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, read_unaligned copes with any
    // alignment, and `T: Record` promises that every bit pattern is a valid
    // `T`.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The memory a libbpf-rs skeleton keeps its `OpenObject` in, owned by the
/// collector that owns the skeleton and freed after it.
///
/// A skeleton borrows that memory for its whole life, which the collector
/// cannot express as a lifetime (it owns both), so the skeleton is typed
/// `'static` and this storage is declared as the collector's *last* field:
/// fields drop in declaration order, so the skeleton (which drops the
/// object inside) is gone before the memory is freed.
pub struct ObjectStorage(NonNull<MaybeUninit<OpenObject>>);

impl ObjectStorage {
    pub fn new() -> ObjectStorage {
        ObjectStorage(NonNull::from(Box::leak(Box::new(MaybeUninit::uninit()))))
    }

    /// The memory, to open a skeleton in.
    ///
    /// # Safety
    ///
    /// Call it once, and drop whatever borrows the result (the skeleton,
    /// its maps, programs, links and ring buffers) before this storage.
    pub unsafe fn get(&mut self) -> &'static mut MaybeUninit<OpenObject> {
        // SAFETY: the pointer comes from a live Box, freed only in Drop; the
        // caller promises a single borrow that ends before that.
        unsafe { self.0.as_mut() }
    }
}

impl Default for ObjectStorage {
    fn default() -> ObjectStorage {
        ObjectStorage::new()
    }
}

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::leak in new() and is freed once,
        // here; by the contract of get() nothing borrows it any more. The
        // MaybeUninit is dropped without dropping its content: the skeleton
        // already did.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: the storage is only memory; whoever uses it from another thread
// goes through the skeleton, which is Send itself.
unsafe impl Send for ObjectStorage {}

/// The value of rodata `cgroup_mode` (enum cgroup_mode of src/bpf/cgroup.h,
/// which both objects share) for a host's cgroup layout.
pub fn cgroup_mode(layout: Option<&cgroup::Layout>) -> u32 {
    use crate::conn::skel::types::cgroup_mode as mode;
    match layout.map(|l| l.hierarchy) {
        None => mode::CGROUP_MODE_OFF.0,
        Some(cgroup::Hierarchy::Unified) => mode::CGROUP_MODE_UNIFIED.0,
        Some(cgroup::Hierarchy::V1Memory) => mode::CGROUP_MODE_V1_MEMORY.0,
    }
}

/// A lookup of the names an object's map `cgroup_names` (src/bpf/
/// cgroup.bpf.h) recorded, usable apart from its collector (it holds its
/// own descriptor of the map).
pub fn cgroup_names_lookup(map: &libbpf_rs::Map<'_>) -> Result<cgroup::NamesLookup> {
    use crate::conn::skel::types::cgroup_names_layout as layout;
    let map = libbpf_rs::MapHandle::try_from(map).context("opening the cgroup names map")?;
    let levels = layout::NL_CGROUP_LEVELS.0 as usize;
    let len = layout::NL_CGROUP_NAME_LEN.0 as usize;
    Ok(Box::new(move |id: u64| {
        let value = map
            .lookup(&id.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
            .ok()??;
        let names = value
            .chunks_exact(len)
            .take(levels)
            .map(|name| {
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                String::from_utf8_lossy(&name[..end]).into_owned()
            })
            .collect();
        Some(names)
    }))
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
    fn records_are_read_at_any_alignment_and_checked_for_length() {
        let bytes: Vec<u8> = (0u8..13).collect();
        // From an odd offset: unaligned for u64.
        let v: u64 = read_record(&bytes[1..]).expect("long enough");
        assert_eq!(v, u64::from_ne_bytes([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(read_record::<u64>(&bytes[6..]), None, "7 bytes");
        assert_eq!(
            read_record::<u32>(&bytes[9..]),
            Some(u32::from_ne_bytes([9, 10, 11, 12]))
        );
    }

    #[test]
    fn a_file_that_is_no_bpf_program_has_no_stats() {
        let f = std::fs::File::open("/dev/null").expect("open /dev/null");
        assert_eq!(prog_stats(f.as_fd()), None);
    }
}
