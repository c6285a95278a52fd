//! Owns the BPF side of `netlens cost`: loads and attaches the accounting
//! programs, opens one cpu-clock sampling event per online CPU, and reads
//! back the per-CPU totals, the sampled NET_RX stacks and the programs' own
//! run time. Produces raw values; cost::account turns them into the model.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{libbpf_sys, Link, MapCore, MapFlags, RingBuffer, RingBufferBuilder};

use super::probes::{SyscallHook, SyscallHookWanted, COST_TRACEPOINTS};
use super::skel::{types, CostSkel, CostSkelBuilder};
pub use crate::bpfio::AttachFailure;
pub use crate::bpfio::ProgStats;
use crate::bpfio::Tracepoint;
use crate::bpfio::{
    attach_tracepoints, load_error, prog_stats, read_record, skip_missing_tracepoints,
    ObjectStorage, Role,
};
use crate::model::cost::Sampler;
use crate::sys::cgroup;
use crate::sys::kernel::Probe;

/// Per-CPU totals as the BPF side keeps them (cumulative since load).
pub type RawCpuCost = types::cpu_cost;

/// Entry indices of `cpu_cost.ns` (see enum cost_entry in cost.h).
pub const ENTRY_COUNT: usize = types::cost_entry::COST_ENTRY_MAX.0 as usize;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where stack samples come from.
    pub sampler: Sampler,
    /// Processes whose own TX/RX system call time is kept (-u).
    pub pids: Vec<u32>,
    /// Capacity of the per-process map (`--max-processes`); 0 keeps no
    /// process but the -u ones.
    pub max_processes: u32,
    /// The cgroup hierarchy that names processes' containers
    /// ([`cgroup::layout`]); `None` records no cgroup.
    pub cgroups: Option<cgroup::Layout>,
    /// How TX/RX system calls are to be hooked (`--syscall-hook`).
    pub syscall_hook: SyscallHookWanted,
}

/// One sampled NET_RX stack: CPU and kernel instruction addresses, leaf first.
pub struct Sample<'a> {
    pub cpu: u32,
    pub ips: &'a [u64],
}

/// Samples read from the ring, waiting to be handed out: all frames in one
/// buffer, so the steady state allocates nothing per sample.
#[derive(Default)]
struct SampleQueue {
    /// (CPU, end of its frames in ips)
    samples: Vec<(u32, usize)>,
    ips: Vec<u64>,
}

impl SampleQueue {
    fn push(&mut self, cpu: u32, ips: &[u64]) {
        self.ips.extend_from_slice(ips);
        self.samples.push((cpu, self.ips.len()));
    }
}

pub struct Collector {
    skel: CostSkel<'static>,
    /// The accounting programs' links (empty before attach).
    links: Vec<Link>,
    /// The sampling program's links, one per CPU.
    sample_links: Vec<Link>,
    ring: RingBuffer<'static>,
    pending: Rc<RefCell<SampleQueue>>,
    /// Keeps BPF_ENABLE_STATS on while it is open.
    stats: Option<OwnedFd>,
    /// IRQ numbers currently marked as network IRQs in the BPF map.
    net_irqs: BTreeSet<u32>,
    /// CPUs sampled once start_sampling ran.
    pub sampled_cpus: Vec<u32>,
    sampler: Sampler,
    pub attach_failures: Vec<AttachFailure>,
    /// How TX/RX system calls are hooked on this kernel.
    pub syscall_hook: SyscallHook,
    /// The memory the skeleton's object lives in: the last field, so it is
    /// freed after everything that borrows it (see ObjectStorage).
    _storage: ObjectStorage,
}

impl Collector {
    /// Loads the programs (nothing runs until [`Collector::attach`]: every
    /// counter is zero until then).
    pub fn load(cfg: &Config) -> Result<Collector> {
        // Declared before everything that borrows it, so that on an early
        // return it is dropped after them.
        let mut storage = ObjectStorage::new();
        // SAFETY: the only call; the skeleton and all that borrows from it
        // end up in the returned Collector, before its `storage` field.
        let object = unsafe { storage.get() };
        let mut open = CostSkelBuilder::default()
            .open(object)
            .context("opening the BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("BPF object has no .rodata")?;
        for (nr, kind) in super::syscalls::table() {
            if let Some(slot) = rodata.syscall_kind.get_mut(nr) {
                *slot = kind.0 as u8;
            }
        }
        rodata.pid_mode = if cfg.max_processes > 0 {
            types::pid_mode::PIDS_ALL.0
        } else if !cfg.pids.is_empty() {
            types::pid_mode::PIDS_LISTED.0
        } else {
            types::pid_mode::PIDS_OFF.0
        };
        rodata.cgroup_mode = crate::bpfio::cgroup_mode(cfg.cgroups.as_ref());
        // Room for every -u process beside the others.
        let pid_capacity = cfg
            .max_processes
            .saturating_add(cfg.pids.len() as u32)
            .max(1);
        open.maps
            .pid_costs
            .set_max_entries(pid_capacity)
            .context("setting the per-process map size")?;
        let cpus = libbpf_rs::num_possible_cpus().context("counting CPUs")?;
        open.maps
            .samples
            .set_max_entries(sample_ring_bytes(cpus, cfg.sampler))
            .context("setting the sample ring buffer size")?;
        open.progs.on_sample.set_autoattach(false);
        open.progs.on_tick.set_autoattach(false);
        if cfg.sampler == Sampler::Tick {
            rodata.tick_handlers = tick_handler_addresses()?;
        }
        // System calls: raw_syscalls, or the per-call tracepoints where asked
        // for and the kernel has them; the other way's programs are not loaded.
        let probe = Probe::new();
        let syscall_hook = SyscallHook::choose(cfg.syscall_hook, &|tp: &Tracepoint| {
            probe.has_tracepoint(tp.hook, tp.category, tp.name)
        });
        for tp in syscall_hook.unused() {
            open.open_object_mut()
                .progs_mut()
                .find(|p| p.name() == tp.program)
                .with_context(|| format!("program {} missing from the BPF object", tp.program))?
                .set_autoload(false);
        }
        let mut attach_failures = Vec::new();
        for table in [&COST_TRACEPOINTS[..], syscall_hook.tracepoints()] {
            attach_failures.extend(skip_missing_tracepoints(
                open.open_object_mut(),
                table,
                &probe,
                ROLE.command,
            )?);
        }
        let skel = open.load().map_err(|e| load_error(&e, ROLE))?;

        for pid in &cfg.pids {
            let zero = [0u8; std::mem::size_of::<types::pid_cost>()];
            skel.maps
                .pid_costs
                .update(&pid.to_ne_bytes(), &zero, MapFlags::NO_EXIST)
                .context("registering a -u process")?;
        }

        let pending: Rc<RefCell<SampleQueue>> = Rc::default();
        let sink = Rc::clone(&pending);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.samples, move |data: &[u8]| {
                if let Some(s) = read_record::<types::rx_sample>(data) {
                    let frames = usize::try_from(s.frames).unwrap_or(0).min(s.ips.len());
                    sink.borrow_mut().push(s.cpu, &s.ips[..frames]);
                }
                0
            })
            .context("setting up the sample ring buffer")?;
        let ring = builder
            .build()
            .context("setting up the sample ring buffer")?;
        let mut collector = Collector {
            skel,
            links: Vec::new(),
            sample_links: Vec::new(),
            ring,
            pending,
            stats: None,
            net_irqs: BTreeSet::new(),
            sampled_cpus: Vec::new(),
            sampler: cfg.sampler,
            attach_failures,
            syscall_hook,
            _storage: storage,
        };
        collector.refresh_net_irqs()?;
        Ok(collector)
    }

    /// Attaches the accounting programs: from here on every counter grows.
    pub fn attach(&mut self) -> Result<()> {
        // The sampling program (on_sample) is attached per CPU by
        // start_sampling. The context switch program is attached before any
        // system call program (a span must never meet a context switch
        // unseen), the system call exits before their enters (every span
        // opened is closed).
        self.links = attach_tracepoints(
            self.skel.object_mut(),
            COST_TRACEPOINTS
                .iter()
                .chain(self.syscall_hook.tracepoints()),
            &mut self.attach_failures,
            ROLE,
        )?;
        Ok(())
    }

    /// Stops every charge at once, on every CPU (the programs stay
    /// attached until the collector is dropped): the counters stay where
    /// they are, and a last read of them all agrees with itself (give a
    /// program already past the test on another CPU a moment to finish
    /// first).
    pub fn freeze(&mut self) {
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            // SAFETY: the field is a plain integer in memory the kernel
            // maps for the programs and this process; a volatile store
            // makes sure it is written, whatever the compiler sees.
            unsafe { std::ptr::write_volatile(&mut bss.frozen, 1) };
        }
    }

    /// Marks the IRQs of network devices for the BPF side (devices come and
    /// go, so this runs now and then); only changes are written.
    pub fn refresh_net_irqs(&mut self) -> Result<()> {
        let map = &self.skel.maps.net_irqs;
        let max = map.max_entries();
        let now: BTreeSet<u32> = super::irqs::network_irqs()
            .into_iter()
            .filter(|&irq| irq < max)
            .collect();
        for (irq, flag) in now
            .difference(&self.net_irqs)
            .map(|&i| (i, 1u8))
            .chain(self.net_irqs.difference(&now).map(|&i| (i, 0u8)))
        {
            map.update(&irq.to_ne_bytes(), &[flag], MapFlags::ANY)
                .context("updating the network IRQ map")?;
        }
        self.net_irqs = now;
        Ok(())
    }

    /// The IRQ numbers counted as network device IRQs.
    pub fn net_irqs(&self) -> &BTreeSet<u32> {
        &self.net_irqs
    }

    /// Cumulative totals per possible CPU (index = CPU number).
    pub fn cpu_costs(&self) -> Result<Vec<RawCpuCost>> {
        let per_cpu = self
            .skel
            .maps
            .costs
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading the per-CPU cost counters")?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .map(|v| read_record::<RawCpuCost>(v).unwrap_or_default())
            .collect())
    }

    /// Attaches the stack sampler (-f). Separate from start so that the
    /// caller can read its baseline counters first: every sample counted
    /// after that baseline then also reaches the ring buffer.
    pub fn start_sampling(&mut self) -> Result<()> {
        match self.sampler {
            Sampler::Off => {}
            Sampler::Tick => {
                let link = self
                    .skel
                    .progs
                    .on_tick
                    .attach()
                    .context("attaching the tick sampler to timer:hrtimer_expire_entry")?;
                self.sample_links.push(link);
                self.sampled_cpus = online_cpus()?;
            }
            Sampler::Auto => bail!("-f auto must be resolved before sampling starts"),
            Sampler::Hz(_) | Sampler::Cycles(_) => {
                let event = if matches!(self.sampler, Sampler::Cycles(_)) {
                    SampleEvent::Cycles
                } else {
                    SampleEvent::CpuClock
                };
                let frequency = self.sampler.hz();
                for cpu in online_cpus()? {
                    let fd = open_sampler(cpu, frequency, event)?;
                    let link = self
                        .skel
                        .progs
                        .on_sample
                        .attach_perf_event(fd.as_raw_fd())
                        .with_context(|| format!("attaching the sampling program on CPU {cpu}"))?;
                    // libbpf closes the event's fd when the link is destroyed:
                    // the link owns it from here on.
                    let _ = fd.into_raw_fd();
                    self.sample_links.push(link);
                    self.sampled_cpus.push(cpu);
                }
            }
        }
        Ok(())
    }

    /// Detaches the sampling program from every CPU (no more samples).
    pub fn stop_sampling(&mut self) {
        self.sample_links.clear();
    }

    /// The network time of every process that has a record (each -u
    /// process, and with `--max-processes` every process seen), since it
    /// was first seen.
    pub fn pid_costs(&self) -> Result<Vec<(u32, types::pid_cost)>> {
        let map = &self.skel.maps.pid_costs;
        let mut out = Vec::new();
        for key in map.keys() {
            let Some(pid) = read_record::<u32>(&key) else {
                continue;
            };
            let value = map
                .lookup(&key, MapFlags::ANY)
                .context("reading per-process system call time")?;
            if let Some(v) = value.as_deref().and_then(read_record::<types::pid_cost>) {
                out.push((pid, v));
            }
        }
        Ok(out)
    }

    /// Removes the record of a process that has exited and returns its
    /// last values: read and removed at once where the kernel can (5.14 on;
    /// before, read then removed, and a charge in between is lost).
    pub fn take_pid_cost(&self, pid: u32) -> Result<Option<types::pid_cost>> {
        let map = &self.skel.maps.pid_costs;
        let key = pid.to_ne_bytes();
        let value = match map.lookup_and_delete(&key) {
            Ok(v) => v,
            // Before 5.14 a hash map refuses it (ENOTSUPP, an errno of
            // the kernel's own that has no io::ErrorKind): any error falls
            // back, and a real one shows again below.
            Err(_) => {
                let v = map
                    .lookup(&key, MapFlags::ANY)
                    .context("reading an exited process's network time")?;
                match map.delete(&key) {
                    Ok(()) => {}
                    Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).context("removing an exited process's record"),
                }
                v
            }
        };
        Ok(value.as_deref().and_then(read_record::<types::pid_cost>))
    }

    /// A lookup of the cgroup names the BPF side recorded.
    pub fn cgroup_names(&self) -> Result<cgroup::NamesLookup> {
        crate::bpfio::cgroup_names_lookup(&self.skel.maps.cgroup_names)
    }

    /// Waits up to `timeout`, then hands every queued NET_RX sample to `f`.
    pub fn drain_samples(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(Sample<'_>),
    ) -> Result<()> {
        crate::bpfio::poll_ring(&self.ring, timeout, "sample")?;
        let mut queue = self.pending.borrow_mut();
        let mut start = 0;
        for &(cpu, end) in &queue.samples {
            f(Sample {
                cpu,
                ips: &queue.ips[start..end],
            });
            start = end;
        }
        queue.samples.clear();
        queue.ips.clear();
        Ok(())
    }

    /// Turns the kernel's run-time statistics of BPF programs on or off
    /// (see cost::selfstats). Returns false when the kernel refuses them.
    pub fn set_run_time_stats(&mut self, on: bool) -> bool {
        if !on {
            self.stats = None;
            return true;
        }
        if self.stats.is_none() {
            self.stats = enable_run_time_stats();
        }
        self.stats.is_some()
    }

    /// Run time, run count and skipped runs of all programs of this
    /// collector together (run time and count with BPF_ENABLE_STATS on).
    pub fn prog_stats(&self) -> ProgStats {
        self.skel
            .object()
            .progs()
            .filter_map(|prog| prog_stats(prog.as_fd()))
            .sum()
    }
}

/// Ring size for about half a second of samples on every CPU, as a power
/// of two between 1 and 256 MiB (samples are only taken inside NET_RX, so
/// this is the worst case).
fn sample_ring_bytes(cpus: usize, sampler: Sampler) -> u32 {
    // The tick runs at CONFIG_HZ, at most 1000.
    let frequency = match sampler {
        Sampler::Hz(hz) | Sampler::Cycles(hz) => hz,
        Sampler::Tick | Sampler::Auto => 1000,
        Sampler::Off => 1,
    };
    let record = std::mem::size_of::<types::rx_sample>() as u64 + 8;
    let want = (cpus as u64) * frequency * record / 2;
    want.clamp(1 << 20, 256 << 20).next_power_of_two() as u32
}

/// The kernel's periodic tick handler, whose hrtimer expiries -f tick
/// samples at: tick_nohz_handler since Linux 6.10, tick_sched_timer before.
/// The addresses of tick_sched_timer and tick_nohz_handler (0 for one that
/// does not exist); see `tick_handlers` in cost.bpf.c.
fn tick_handler_addresses() -> Result<[u64; 2]> {
    let text = std::fs::read_to_string(super::kallsyms::PROC_KALLSYMS)
        .context("reading /proc/kallsyms for the tick handler")?;
    let found = ["tick_sched_timer", "tick_nohz_handler"]
        .map(|name| symbol_address(&text, name).unwrap_or(0));
    if found == [0, 0] {
        bail!(
            "-f tick: the tick handler (tick_sched_timer or tick_nohz_handler) is not in \
             /proc/kallsyms, or addresses are hidden (kernel.kptr_restrict); use -f HZ"
        );
    }
    Ok(found)
}

/// The address of the text symbol `name` in /proc/kallsyms text.
fn symbol_address(kallsyms: &str, name: &str) -> Option<u64> {
    kallsyms.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let addr = fields.next()?;
        let kind = fields.next()?;
        (matches!(kind, "t" | "T") && fields.next()? == name)
            .then(|| u64::from_str_radix(addr, 16).ok())
            .flatten()
    })
}

/// The CPUs in /sys/devices/system/cpu/online ("0-3,5").
pub fn online_cpus() -> Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading /sys/devices/system/cpu/online")?;
    parse_cpu_list(text.trim())
        .with_context(|| format!("unexpected /sys/devices/system/cpu/online: {text:?}"))
}

fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// A cpu-clock software event on one CPU, sampling at `frequency` Hz.
/// What a sampling perf event counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SampleEvent {
    /// Software cpu-clock: an hrtimer interrupt per sample.
    CpuClock,
    /// Hardware CPU cycles: the PMU's overflow interrupt (NMI on x86).
    Cycles,
}

/// Opens a sampling perf event on one CPU, for all tasks.
fn perf_sampling_event(cpu: u32, frequency: u64, event: SampleEvent) -> std::io::Result<OwnedFd> {
    let (type_, config) = match event {
        SampleEvent::CpuClock => (
            libbpf_sys::PERF_TYPE_SOFTWARE,
            u64::from(libbpf_sys::PERF_COUNT_SW_CPU_CLOCK),
        ),
        SampleEvent::Cycles => (
            libbpf_sys::PERF_TYPE_HARDWARE,
            u64::from(libbpf_sys::PERF_COUNT_HW_CPU_CYCLES),
        ),
    };
    let mut attr = libbpf_sys::perf_event_attr {
        type_,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_freq = frequency;
    attr.set_freq(1);
    // SAFETY: attr is a fully initialised perf_event_attr whose size field is
    // its own size; the other arguments are plain integers. The kernel returns
    // a new fd that we own, or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            libc::c_ulong::from(libbpf_sys::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by perf_event_open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// True when the CPU has a PMU that can sample CPU cycles and the kernel
/// lets this process do it. VMs often have none.
pub fn pmu_can_sample_cycles() -> bool {
    try_sampling_event(Sampler::Cycles(crate::model::cost::AUTO_HZ)).is_ok()
}

/// Opens and closes one sampling event of the kind `sampler` uses (on the
/// first online CPU), to learn before loading anything whether the kernel
/// lets this process sample. Ok for samplers without perf events.
pub fn try_sampling_event(sampler: Sampler) -> std::io::Result<()> {
    let event = match sampler {
        Sampler::Hz(_) => SampleEvent::CpuClock,
        Sampler::Cycles(_) => SampleEvent::Cycles,
        Sampler::Off | Sampler::Tick | Sampler::Auto => return Ok(()),
    };
    let cpu = online_cpus()
        .ok()
        .and_then(|c| c.first().copied())
        .unwrap_or(0);
    perf_sampling_event(cpu, sampler.hz(), event).map(drop)
}

fn open_sampler(cpu: u32, frequency: u64, event: SampleEvent) -> Result<OwnedFd> {
    perf_sampling_event(cpu, frequency, event).map_err(|err| {
        let what = match event {
            SampleEvent::CpuClock => "cpu-clock",
            SampleEvent::Cycles => "CPU-cycles",
        };
        anyhow::anyhow!(
            "opening a {what} sampling event at {frequency} Hz on CPU {cpu}: {err}; \
             `-f 0` measures without stack sampling (no NET_RX breakdown)"
        )
    })
}

/// BPF_ENABLE_STATS: the kernel records every program's run time while the
/// returned fd is open. None when the kernel refuses (then netlens's BPF
/// time is reported as unknown).
fn enable_run_time_stats() -> Option<OwnedFd> {
    // SAFETY: plain system call wrapper; returns a new fd or a negative errno.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    // SAFETY: a non-negative fd was just created for us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `netlens cost`, in the loader's messages.
const ROLE: Role = Role {
    command: "netlens cost",
    purpose: "measure network CPU cost",
    subcommand: "cost",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn sample_ring_is_a_bounded_power_of_two() {
        assert_eq!(sample_ring_bytes(2, Sampler::Hz(1000)), 1 << 20);
        let big = sample_ring_bytes(256, Sampler::Hz(10_000));
        assert!(big.is_power_of_two() && big <= 256 << 20);
        assert!(sample_ring_bytes(1, Sampler::Off).is_power_of_two());
        assert_eq!(sample_ring_bytes(2, Sampler::Tick), 1 << 20);
    }

    #[test]
    fn symbols_by_name() {
        let text = "ffffffff814352e0 t tick_nohz_handler\n\
                    ffffffff81000000 T _stext\n\
                    ffffffff82000000 d tick_nohz_data\n";
        assert_eq!(
            symbol_address(text, "tick_nohz_handler"),
            Some(0xffffffff814352e0)
        );
        assert_eq!(
            symbol_address(text, "tick_nohz_data"),
            None,
            "data, not text"
        );
        assert_eq!(symbol_address(text, "tick_sched_timer"), None);
    }
}
