//! Owns the BPF side of connection tracing: loads and attaches the programs,
//! drains the event ring buffer, reads the connection records (from the
//! memory-mapped slot array, with their current counters from one refresh
//! pass) and the loss counters. Produces raw records; conn::table turns
//! them into model values.

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, RingBuffer, RingBufferBuilder};

use super::decode::{
    read_record, CONN_ESTABLISHED, LOSS_EVENTS, LOSS_MAP_FULL, LOSS_MAX, LOSS_SEED_MAP_FULL,
};
use super::probes::TRACEPOINTS;
use super::refresh::{LateOwners, Pass};
use super::skel::{types, ConnsSkel, ConnsSkelBuilder};
use super::table::clock_ns;
pub use crate::bpfio::AttachFailure;
use crate::bpfio::{
    attach_tracepoints, load_error, prog_stats, skip_missing_tracepoints, ObjectStorage, Role,
};
use crate::model::Losses;
use crate::sys::cgroup;
use crate::sys::kernel::Probe;

/// Size of the event ring buffer. At the ~20,000 connections/s this machine
/// sustains, 4 events of 160 bytes per connection fill 16 MiB in 1.3 s, far
/// more than the 100 ms between two drains.
const RING_BYTES: u32 = 16 << 20;
/// Wake the reader early once a quarter of the ring is used.
const WAKEUP_BYTES: u64 = (RING_BYTES / 4) as u64;

#[derive(Clone, Debug)]
pub struct Config {
    /// Capacity of the connection map (-m/--map-size).
    pub map_size: u32,
    /// Leave out connections with a loopback address (the default).
    pub filter_loopback: bool,
    /// The cgroup hierarchy that names owners' containers on this host
    /// ([`cgroup::layout`]); `None` records no cgroup.
    pub cgroups: Option<cgroup::Layout>,
}

pub struct Collector {
    skel: ConnsSkel<'static>,
    _links: Vec<Link>,
    ring: RingBuffer<'static>,
    pending: Rc<RefCell<Vec<types::conn_event>>>,
    slots: SlotArray,
    /// next_fresh in the BPF object's .bss: slots at and above it were never used.
    next_fresh: *const u64,
    values: Vec<types::conn_value>,
    /// The refresh iterator (a walk over every process's open files).
    refresh_link: Link,
    /// Each connection's counters as of the refresh walks, and the buffer a
    /// walk's output is read into.
    pass: Pass,
    pass_bytes: Vec<u8>,
    late_owners: LateOwners,
    pub attach_failures: Vec<AttachFailure>,
    /// The memory the skeleton's object lives in: the last field, so it is
    /// freed after everything that borrows it (see ObjectStorage).
    _storage: ObjectStorage,
}

/// The BPF array conn_slots, mapped read-only into this process.
struct SlotArray {
    base: NonNull<u8>,
    /// Bytes mapped.
    len: usize,
    /// Number of slots (max_entries).
    count: usize,
    /// Bytes from one slot to the next.
    stride: usize,
}

impl SlotArray {
    fn map(map: &libbpf_rs::Map) -> Result<SlotArray> {
        let value_size = map.value_size() as usize;
        if value_size != std::mem::size_of::<types::conn_value>() {
            bail!(
                "conn_slots holds {value_size}-byte values, expected {}",
                std::mem::size_of::<types::conn_value>()
            );
        }
        // The kernel lays an mmapable array out as max_entries values, each
        // rounded up to 8 bytes, from the start of a page, and accepts a
        // mapping of at most that size rounded up to whole pages.
        let stride = value_size.next_multiple_of(8);
        let count = map.max_entries() as usize;
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).unwrap_or(4096);
        let len = (count * stride).next_multiple_of(page);
        // SAFETY: a new shared read-only mapping of the map's fd, at an address the
        // kernel picks; nothing else is affected. The result is checked below.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("memory-mapping conn_slots");
        }
        let base = NonNull::new(addr.cast::<u8>()).context("mmap returned NULL")?;
        Ok(SlotArray {
            base,
            len,
            count,
            stride,
        })
    }

    /// A copy of slot `i` if it holds a connection record (non-zero id) and
    /// the BPF side did not empty or refill it while it was being copied.
    /// Counters may still be mid-update, as with any read of a map value.
    fn read(&self, i: usize) -> Option<types::conn_value> {
        debug_assert!(i < self.count);
        // SAFETY: i < count, so the slot lies inside the mapping (count * stride <= len);
        // the base is page-aligned and stride a multiple of 8, so the pointer is aligned
        // for conn_value.
        let slot = unsafe { self.base.as_ptr().add(i * self.stride) }.cast::<types::conn_value>();
        // SAFETY (the three reads): slot points at a readable, aligned conn_value in the
        // live mapping; the BPF side writes it concurrently, hence volatile reads, and
        // conn_value is plain integers, so any bytes read are a valid value.
        let id = unsafe { ptr::read_volatile(&raw const (*slot).id) };
        if id == 0 {
            return None;
        }
        fence(Ordering::Acquire);
        // SAFETY: see above.
        let v = unsafe { ptr::read_volatile(slot) };
        fence(Ordering::Acquire);
        // SAFETY: see above.
        let after = unsafe { ptr::read_volatile(&raw const (*slot).id) };
        (v.id == id && after == id).then_some(v)
    }
}

impl Drop for SlotArray {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping made in SlotArray::map, and no
        // reference into it outlives self (reads copy the slots out).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl Collector {
    /// Opens, configures, loads and attaches the connection tracer.
    pub fn start(cfg: &Config) -> Result<Collector> {
        // Declared before everything that borrows it, so that on an early
        // return it is dropped after them.
        let mut storage = ObjectStorage::new();
        // SAFETY: the only call; the skeleton and all that borrows from it
        // end up in the returned Collector, before its `storage` field.
        let object = unsafe { storage.get() };
        let mut open = ConnsSkelBuilder::default()
            .open(object)
            .context("opening the BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("BPF object has no .rodata")?;
        rodata.filter_loopback = cfg.filter_loopback;
        rodata.wakeup_bytes = WAKEUP_BYTES;
        rodata.map_size = cfg.map_size;
        rodata.cgroup_mode = crate::bpfio::cgroup_mode(cfg.cgroups.as_ref());
        for map in [
            &mut open.maps.conns,
            &mut open.maps.conn_slots,
            &mut open.maps.free_slots,
        ] {
            map.set_max_entries(cfg.map_size)
                .context("setting the connection map size")?;
        }
        open.maps
            .events
            .set_max_entries(RING_BYTES)
            .context("setting the ring buffer size")?;
        // The seeding iterator is attached per network namespace when
        // seeding, the refresh iterator once loaded.
        open.progs.seed_tcp.set_autoattach(false);
        open.progs.refresh_conns.set_autoattach(false);
        let mut attach_failures = skip_missing_tracepoints(
            open.open_object_mut(),
            &TRACEPOINTS,
            &Probe::new(),
            ROLE.command,
        )?;
        let mut skel = open.load().map_err(|e| load_error(&e, ROLE))?;

        let links =
            attach_tracepoints(skel.object_mut(), &TRACEPOINTS, &mut attach_failures, ROLE)?;

        let pending: Rc<RefCell<Vec<types::conn_event>>> = Rc::default();
        let sink = Rc::clone(&pending);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.events, move |data: &[u8]| {
                if let Some(e) = read_record::<types::conn_event>(data) {
                    sink.borrow_mut().push(e);
                }
                0
            })
            .context("setting up the event ring buffer")?;
        let ring = builder
            .build()
            .context("setting up the event ring buffer")?;
        let slots = SlotArray::map(&skel.maps.conn_slots)?;
        let refresh_link = skel
            .progs
            .refresh_conns
            .attach()
            .context("attaching the iterator that refreshes connection counters")?;
        let next_fresh = skel
            .maps
            .bss_data
            .as_deref()
            .map(|bss| &raw const bss.next_fresh)
            .context("BPF object has no memory-mapped .bss")?;
        Ok(Collector {
            skel,
            _links: links,
            ring,
            pending,
            slots,
            next_fresh,
            values: Vec::new(),
            refresh_link,
            pass: Pass::default(),
            pass_bytes: Vec::new(),
            late_owners: LateOwners::default(),
            attach_failures,
            _storage: storage,
        })
    }

    /// Waits up to `timeout` for the BPF side to signal a full-ish ring,
    /// then moves every queued event into `out` (cleared first). The two
    /// buffers trade places, so neither is reallocated in steady state.
    pub fn poll_events(
        &mut self,
        timeout: Duration,
        out: &mut Vec<types::conn_event>,
    ) -> Result<()> {
        out.clear();
        crate::bpfio::poll_ring(&self.ring, timeout, "event")?;
        std::mem::swap(out, &mut *self.pending.borrow_mut());
        let late = &mut self.late_owners;
        out.retain_mut(|e| late.fix_event(e));
        Ok(())
    }

    /// The established connections, copied out of the memory-mapped slots
    /// into a buffer reused from tick to tick, with their counters as of
    /// now: one refresh pass (one iterator read) per call. Each record's
    /// `sk` is its socket. Passive connections that no accept() named get
    /// the owner the walk found holding them, and an accept event each
    /// (queued for the next [`Collector::poll_events`]).
    pub fn connections(&mut self) -> Result<&[types::conn_value]> {
        self.refresh()?;
        // SAFETY: next_fresh points into the skeleton's .bss mapping, which lives as
        // long as self.skel; the BPF side updates it atomically, hence a volatile read.
        let used = unsafe { ptr::read_volatile(self.next_fresh) } as usize;
        // Slot contents written before next_fresh moved are visible after it.
        fence(Ordering::Acquire);
        let named = self.late_owners.adopt(&self.pass);
        // Event times are CLOCK_BOOTTIME, as on the BPF side.
        let now = if named.is_empty() {
            0
        } else {
            clock_ns(libc::CLOCK_BOOTTIME) as u64
        };
        self.values.clear();
        for i in 0..used.min(self.slots.count) {
            if let Some(mut v) = self.slots.read(i) {
                if v.flags & CONN_ESTABLISHED != 0 {
                    self.pass.apply(i, &mut v);
                    if named.contains(&v.id) {
                        let e = self.late_owners.accept_event(&v, now);
                        self.pending.borrow_mut().push(e);
                    }
                    self.late_owners.apply(&mut v);
                    self.values.push(v);
                }
            }
        }
        Ok(&self.values)
    }

    /// A lookup of the cgroup names the BPF side recorded.
    pub fn cgroup_names(&self) -> Result<cgroup::NamesLookup> {
        crate::bpfio::cgroup_names_lookup(&self.skel.maps.cgroup_names)
    }

    /// What the last [`Collector::connections`] returned, without a new
    /// refresh walk.
    pub fn last_connections(&self) -> &[types::conn_value] {
        &self.values
    }

    /// Runs the refresh iterator once and keeps its records.
    fn refresh(&mut self) -> Result<()> {
        read_iterator(
            self.refresh_link.as_fd().as_raw_fd(),
            "the connection refresh iterator",
            &mut self.pass_bytes,
        )?;
        self.pass.load(&self.pass_bytes);
        Ok(())
    }

    /// Sum over CPUs of the loss counters, and the program runs the kernel
    /// skipped. `seed_unreached` is not the BPF side's to count: 0 here.
    pub fn losses(&self) -> Result<Losses> {
        let map = &self.skel.maps.losses;
        let mut totals = [0u64; LOSS_MAX as usize];
        for (idx, total) in totals.iter_mut().enumerate() {
            let key = (idx as u32).to_ne_bytes();
            let per_cpu = map
                .lookup_percpu(&key, MapFlags::ANY)
                .context("reading the loss counters")?
                .unwrap_or_default();
            *total = per_cpu.iter().filter_map(|v| read_record::<u64>(v)).sum();
        }
        // Counted by the kernel itself, whether BPF_ENABLE_STATS is on or not.
        let runs_missed = self
            .skel
            .object()
            .progs()
            .filter_map(|prog| prog_stats(prog.as_fd()))
            .map(|s| s.recursion_misses)
            .sum();
        Ok(Losses {
            events_lost: totals[LOSS_EVENTS as usize],
            map_full: totals[LOSS_MAP_FULL as usize],
            seed_map_full: totals[LOSS_SEED_MAP_FULL as usize],
            // Counted in user space, when seeding (see conn::seed).
            seed_unreached: 0,
            runs_missed,
        })
    }

    /// Attaches the seeding iterator (the walk itself runs per namespace).
    pub fn seed_link(&self) -> Result<Link> {
        self.skel
            .progs
            .seed_tcp
            .attach()
            .context("attaching the TCP socket iterator used to find existing connections")
    }
}

/// Runs the seeding iterator (attached as `link_fd`) in the calling
/// thread's network namespace and returns the records it wrote.
pub fn walk_tcp_sockets(link_fd: RawFd) -> Result<Vec<types::seed_record>> {
    let mut buf = Vec::new();
    read_iterator(link_fd, "a TCP socket iterator", &mut buf)?;
    let size = std::mem::size_of::<types::seed_record>();
    Ok(buf
        .chunks_exact(size)
        .filter_map(read_record::<types::seed_record>)
        .collect())
}

/// Creates an iterator from the iterator link `link_fd` (which the caller
/// keeps open) and reads all it writes into `buf` (cleared first).
fn read_iterator(link_fd: RawFd, what: &str, buf: &mut Vec<u8>) -> Result<()> {
    // SAFETY: the caller keeps the link (and so link_fd) open during the call; the
    // kernel returns a new fd that we own (or a negative errno).
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_iter_create(link_fd) };
    if fd < 0 {
        bail!(
            "creating {what}: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: fd was just returned by bpf_iter_create and nothing else owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    buf.clear();
    file.read_to_end(buf)
        .with_context(|| format!("reading {what}"))?;
    Ok(())
}

/// `netlens conns`, in the loader's messages.
const ROLE: Role = Role {
    command: "netlens conns",
    purpose: "trace connections",
    subcommand: "conns",
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A SlotArray over anonymous memory, laid out as the kernel lays out
    /// conn_slots, written through the returned pointer.
    fn anonymous(count: usize) -> (SlotArray, *mut types::conn_value) {
        let stride = std::mem::size_of::<types::conn_value>().next_multiple_of(8);
        let len = (count * stride).next_multiple_of(4096);
        // SAFETY: a new private anonymous mapping; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let base = NonNull::new(addr.cast::<u8>()).unwrap();
        let slots = SlotArray {
            base,
            len,
            count,
            stride,
        };
        (slots, addr.cast())
    }

    #[test]
    fn slots_with_an_id_are_read_and_empty_ones_skipped() {
        let (slots, raw) = anonymous(3);
        let v = types::conn_value {
            id: 7,
            sk: 0xffff_8880_0000_1000,
            flags: CONN_ESTABLISHED,
            ..Default::default()
        };
        let mut v = v;
        v.counters.bytes_sent = 42;
        // SAFETY: slot 1 of 3 lies in the writable mapping, aligned (stride is a
        // multiple of 8 from a page boundary); no reference into it is held.
        unsafe { raw.add(1).write(v) };
        assert!(slots.read(0).is_none(), "zero-filled slot has id 0");
        let got = slots.read(1).expect("slot 1 holds a record");
        assert_eq!((got.id, got.sk, got.counters.bytes_sent), (7, v.sk, 42));
        // Emptied (id 0): skipped even though the rest is still there.
        // SAFETY: as above.
        unsafe { (*raw.add(1)).id = 0 };
        assert!(slots.read(1).is_none());
    }
}
