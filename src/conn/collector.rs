//! Owns the BPF side of connection tracing: loads and attaches the programs,
//! drains the event ring buffer, reads the connection map and the loss
//! counters. Produces raw records; conn::table turns them into model values.

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder};

use super::decode::{read_record, LOSS_EVENTS, LOSS_MAP_FULL, LOSS_MAX, LOSS_SEED_MAP_FULL};
use super::skel::{types, ConnsSkel, ConnsSkelBuilder};
use crate::model::Losses;

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
}

/// A program that could not be attached, and why.
#[derive(Debug)]
pub struct AttachFailure {
    pub program: &'static str,
    pub what_is_lost: &'static str,
    pub error: String,
}

pub struct Collector {
    skel: ConnsSkel<'static>,
    _links: Vec<Link>,
    ring: RingBuffer<'static>,
    pending: Rc<RefCell<Vec<types::conn_event>>>,
    keys: Vec<u64>,
    values: Vec<types::conn_value>,
    pub attach_failures: Vec<AttachFailure>,
}

/// (program, required, what the user loses without it)
const PROGRAMS: &[(&str, bool, &str)] = &[
    ("on_set_state", true, "all connection events"),
    (
        "on_send_length",
        false,
        "counter refresh on send; sent counters refresh only on received segments",
    ),
    (
        "on_recv_length",
        false,
        "counter refresh on receive by the application",
    ),
    (
        "on_tcp_probe",
        false,
        "counter refresh on every received segment",
    ),
    (
        "on_retransmit",
        false,
        "counter refresh at each retransmission",
    ),
    (
        "on_accept4_exit",
        false,
        "accept4() attribution: inbound connections are attributed on their first send/receive",
    ),
    (
        "on_accept_exit_tp",
        false,
        "accept() attribution: inbound connections are attributed on their first send/receive",
    ),
];

impl Collector {
    /// Opens, configures, loads and attaches the connection tracer.
    pub fn start(cfg: &Config) -> Result<Collector> {
        // The skeleton borrows its object for as long as it lives; one tracer
        // lives for the whole process, so leaking this one allocation is fine.
        let object: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
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
        open.maps
            .conns
            .set_max_entries(cfg.map_size)
            .context("setting the connection map size")?;
        open.maps
            .events
            .set_max_entries(RING_BYTES)
            .context("setting the ring buffer size")?;
        // The iterator is attached per network namespace when seeding.
        open.progs.seed_tcp.set_autoattach(false);
        let mut skel = open.load().map_err(|e| load_error(&e))?;

        let mut links = Vec::new();
        let mut attach_failures = Vec::new();
        for &(name, required, lost) in PROGRAMS {
            let prog = skel
                .object_mut()
                .progs_mut()
                .find(|p| p.name() == name)
                .with_context(|| format!("program {name} missing from the BPF object"))?;
            match prog.attach() {
                Ok(link) => links.push(link),
                Err(e) if required => {
                    bail!("attaching {name} failed: {e}; netlens cannot trace connections on this kernel (run `netlens check`)")
                }
                Err(e) => attach_failures.push(AttachFailure {
                    program: name,
                    what_is_lost: lost,
                    error: e.to_string(),
                }),
            }
        }

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
        Ok(Collector {
            skel,
            _links: links,
            ring,
            pending,
            keys: Vec::new(),
            values: Vec::new(),
            attach_failures,
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
        if let Err(e) = self.ring.poll(timeout) {
            // EINTR from a signal is how Ctrl-C arrives; anything else is real.
            if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                return Err(e).context("polling the event ring buffer");
            }
        }
        self.ring
            .consume()
            .context("reading the event ring buffer")?;
        std::mem::swap(out, &mut *self.pending.borrow_mut());
        Ok(())
    }

    /// Everything in the connection map, read in batches into buffers that
    /// are reused from tick to tick (one system call per 4096 connections,
    /// no allocation per connection). Returns keys and values, index-aligned.
    pub fn connections(&mut self) -> Result<(&[u64], &[types::conn_value])> {
        let fd = self.skel.maps.conns.as_fd().as_raw_fd();
        let batch = (self.skel.maps.conns.max_entries() as usize).clamp(1, 4096);
        let mut filled = 0usize;
        // The kernel's batch position token (a bucket index for hash maps).
        let mut token: u64 = 0;
        let mut first = true;
        loop {
            // Buffers grow with the number of connections, not the map size.
            if self.keys.len() < filled + batch {
                self.keys.resize(filled + batch, 0);
                self.values
                    .resize(filled + batch, types::conn_value::default());
            }
            let mut count = batch as u32;
            let mut next: u64 = 0;
            let in_batch: *mut libc::c_void = if first {
                std::ptr::null_mut()
            } else {
                (&mut token as *mut u64).cast()
            };
            // SAFETY: keys and values have room for `count` more entries from
            // `filled` on (resized above); the token pointers point at live u64s,
            // larger than the kernel's 4-byte hash map token; fd is the map's.
            let ret = unsafe {
                libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                    fd,
                    in_batch,
                    (&mut next as *mut u64).cast(),
                    self.keys.as_mut_ptr().add(filled).cast(),
                    self.values.as_mut_ptr().add(filled).cast(),
                    &mut count,
                    std::ptr::null(),
                )
            };
            let errno = if ret < 0 {
                std::io::Error::last_os_error().raw_os_error()
            } else {
                None
            };
            if ret < 0 && errno != Some(libc::ENOENT) {
                return Err(std::io::Error::last_os_error()).context("reading the connection map");
            }
            filled += count as usize;
            if ret < 0 {
                break; // ENOENT: the whole map was read
            }
            token = next;
            first = false;
        }
        Ok((&self.keys[..filled], &self.values[..filled]))
    }

    /// Sum over CPUs of the loss counters.
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
        Ok(Losses {
            events_lost: totals[LOSS_EVENTS as usize],
            map_full: totals[LOSS_MAP_FULL as usize],
            seed_map_full: totals[LOSS_SEED_MAP_FULL as usize],
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
    // SAFETY: the caller keeps the iterator link (and so link_fd) open during the call; the
    // kernel returns a new fd that we own (or a negative errno).
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_iter_create(link_fd) };
    if fd < 0 {
        bail!(
            "creating a TCP socket iterator: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: fd was just returned by bpf_iter_create and nothing else owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .context("reading the TCP socket iterator")?;
    let size = std::mem::size_of::<types::seed_record>();
    Ok(buf
        .chunks_exact(size)
        .filter_map(read_record::<types::seed_record>)
        .collect())
}

fn load_error(e: &libbpf_rs::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "loading the BPF programs failed: {e}. netlens needs a kernel with BTF \
         (/sys/kernel/btf/vmlinux), tp_btf tracepoints and BPF ring buffers (Linux 5.9 or \
         later); run `netlens check` for details, and `netlens -v conns` for the verifier log"
    )
}
