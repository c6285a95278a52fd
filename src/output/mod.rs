//! Presentation: everything that turns the model ([`ConnEvent`]s,
//! [`Snapshot`]s, cost reports) into output. Each output implements the
//! model's [`Sink`]; [`Fanout`] feeds several at once (for example the log
//! file and stdout), each under a guard.
//!
//! Every sink buffers in memory and writes whole batches of complete lines, so
//! a busy host never costs one write syscall per line, and a rotating log file
//! never splits a line between two files.

pub mod cost;
pub mod flamegraph;
pub mod guard;
pub mod json;
pub mod logfile;
pub mod prometheus;
pub mod pyroscope;
pub mod table;
pub mod text;
pub mod tui;
pub mod web;

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;

use crate::model::cost::CostReport;
pub use crate::model::Sink;
use crate::model::{ConnEvent, ConnInfo, Losses, Snapshot, UnixNanos};

/// Forwards everything to several sinks, in order, each under a
/// [`guard::Guard`]: a failing sink is warned about once and counted, and
/// never stops the others or the tracing; only an error marked
/// [`guard::Fatal`] (the full-screen view died) is passed on.
pub struct Fanout {
    sinks: Vec<Box<dyn Sink + Send>>,
    guards: guard::Guards,
    /// What a dropped record is, in the exit line: "lines", "reports".
    unit: &'static str,
}

impl Default for Fanout {
    fn default() -> Fanout {
        Fanout::new()
    }
}

impl Fanout {
    /// The outputs of `conns`, whose losses are counted in lines.
    pub fn new() -> Fanout {
        Fanout {
            sinks: Vec::new(),
            guards: guard::Guards::default(),
            unit: "lines",
        }
    }

    /// The outputs of `cost`, whose losses are counted in reports.
    pub fn of_reports() -> Fanout {
        Fanout {
            unit: "reports",
            ..Fanout::new()
        }
    }

    pub fn push(&mut self, sink: impl Sink + Send + 'static) {
        self.push_as(sink.name(), sink);
    }

    /// Adds `sink`, named `name` in messages ("stdout", "log file").
    pub fn push_as(&mut self, name: &'static str, sink: impl Sink + Send + 'static) {
        self.guards.push(name, self.unit);
        self.sinks.push(Box::new(sink));
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Sets `stop` once the readers of every output are gone (for example
    /// `netlens conns | head`), for a caller that has nothing else to serve.
    pub fn stop_when_all_closed(&mut self, stop: Arc<AtomicBool>) {
        self.guards.stop_when_all_closed(stop);
    }

    /// What the outputs dropped, for the exit line: `None` if nothing.
    pub fn losses(&self) -> Option<String> {
        self.guards.summary()
    }

    /// Sends the warnings about failing outputs to `say` instead of stderr
    /// (the full-screen view shows them), each as one line starting with
    /// `netlens: `.
    pub fn say_with(&mut self, mut say: impl FnMut(&str) + Send + 'static) {
        self.guards
            .say_with(move |line| say(&format!("netlens: {line}")));
    }

    /// Calls every sink; the first [`guard::Fatal`] error, if any, after all.
    fn each(
        &mut self,
        mut call: impl FnMut(&mut dyn Sink) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut fatal = None;
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = self.guards.call(i, || call(sink.as_mut())) {
                fatal.get_or_insert(e);
            }
        }
        fatal.map_or(Ok(()), Err)
    }
}

impl Sink for Fanout {
    fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
        self.each(|s| s.event(ev))
    }

    fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        self.each(|s| s.snapshot(snap))
    }

    fn report(&mut self, report: &CostReport) -> anyhow::Result<()> {
        self.each(|s| s.report(report))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.each(|s| s.flush())
    }
}

/// RFC 3339 in UTC with microseconds: `2026-11-23T13:31:47.123456Z`.
pub fn fmt_time(ns: UnixNanos) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_micros(t).to_string()
}

/// Formats times as [`fmt_time`] does, appending to a buffer without
/// allocating. Events come in bursts within the same second, so the date and
/// time down to the second are formatted once per second and reused; only
/// the microseconds are formatted per call.
#[derive(Default)]
pub(crate) struct TimeFormatter {
    /// The whole second `prefix` is for.
    sec: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.`
    prefix: String,
}

impl TimeFormatter {
    /// Appends the time `ns` to `buf`.
    pub(crate) fn push(&mut self, buf: &mut Vec<u8>, ns: UnixNanos) {
        let digits = self.micros(ns);
        buf.extend_from_slice(self.prefix.as_bytes());
        buf.extend_from_slice(&digits);
    }

    /// Appends the time `ns` to `s`.
    pub(crate) fn push_str(&mut self, s: &mut String, ns: UnixNanos) {
        let digits = self.micros(ns);
        s.push_str(&self.prefix);
        // Always ASCII digits and 'Z'.
        s.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    }

    /// Makes `prefix` the one of `ns`'s second and returns the rest: the
    /// microseconds (truncated, as humantime does) and the `Z`.
    fn micros(&mut self, ns: UnixNanos) -> [u8; 7] {
        let sec = ns / 1_000_000_000;
        if self.sec != Some(sec) {
            let full = fmt_time(sec * 1_000_000_000);
            // "....SS.000000Z": keep up to and including the dot.
            self.prefix.clear();
            self.prefix.push_str(&full[..full.len() - "000000Z".len()]);
            self.sec = Some(sec);
        }
        let mut micros = (ns % 1_000_000_000 / 1_000) as u32;
        let mut out = [b'0'; 7];
        for d in out[..6].iter_mut().rev() {
            *d = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[6] = b'Z';
        out
    }
}

/// A process name as one whitespace-free token: whitespace and control
/// characters become `_`, and an empty name (no owning process) becomes `-`.
pub fn comm_token(comm: &str) -> Cow<'_, str> {
    if comm.is_empty() {
        return Cow::Borrowed("-");
    }
    if !comm.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Cow::Borrowed(comm);
    }
    Cow::Owned(
        comm.chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// What the user can do about the losses, or `None` when nothing was lost.
pub fn losses_hint(l: &Losses) -> Option<String> {
    let mut parts = Vec::new();
    if l.map_full > 0 || l.seed_map_full > 0 {
        parts.push("connection map was full, raise -m/--map-size");
    }
    if l.seed_unreached > 0 {
        parts.push(
            "existing connections in network namespaces netlens could not enter were not seeded \
             and are not reported (entering one needs CAP_SYS_ADMIN)",
        );
    }
    if l.events_lost > 0 {
        parts.push("events were dropped because user space fell behind reading them");
    }
    if l.runs_missed > 0 {
        parts.push(
            "the kernel skipped BPF program runs because the program was already running on that \
             CPU, so events or counter updates may be missing",
        );
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

/// Above this many buffered bytes a sink writes out early (still at a line
/// boundary), so one huge snapshot cannot grow the buffer without bound.
const SPILL_BYTES: usize = 1 << 20;

/// An in-memory line buffer in front of a writer: lines are collected and
/// written with one `write_all` per batch.
pub(crate) struct LineBuf<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Lines in `buf`: what a failed write drops.
    lines: u64,
    /// The last write failed.
    failing: bool,
}

impl<W: Write> LineBuf<W> {
    pub(crate) fn new(out: W) -> LineBuf<W> {
        LineBuf {
            out,
            buf: Vec::with_capacity(16 * 1024),
            lines: 0,
            failing: false,
        }
    }

    /// Appends one complete line; the newline is added here.
    pub(crate) fn line(&mut self, line: &str) -> anyhow::Result<()> {
        self.buf.extend_from_slice(line.as_bytes());
        self.end_line()
    }

    /// The raw buffer, to serialize a line into directly; finish it with
    /// [`LineBuf::end_line`].
    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn end_line(&mut self) -> anyhow::Result<()> {
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= SPILL_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> anyhow::Result<()> {
        if self.buf.is_empty() {
            // Nothing written proves nothing: a failing writer stays failing
            // (so an empty batch is never taken for a recovery).
            return match self.failing {
                true => Err(anyhow::anyhow!("nothing written since the failure"))
                    .context(guard::Dropped(0)),
                false => Ok(()),
            };
        }
        let res = self.out.write_all(&self.buf);
        // Dropped even on error: retrying would duplicate whatever part was
        // already written.
        self.buf.clear();
        let lines = std::mem::take(&mut self.lines);
        self.failing = res.is_err();
        res.context("writing output").context(guard::Dropped(lines))
    }

    /// Writes everything buffered, then flushes the writer.
    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        self.write_out()?;
        self.out.flush().context("flushing output")
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.out
    }
}

/// The formatted identity of each connection (tuple, owner, netns), kept
/// from one snapshot to the next: with thousands of idle connections the
/// identity never changes while the counters do, and formatting addresses
/// is most of a line's cost.
///
/// Snapshot rows come sorted by (start, id), so the cache is a vector in
/// that order, walked alongside the rows (a merge, with sequential memory
/// access, no hashing). Rows in another order still get correct bytes, only
/// rendered afresh. Connections absent from a snapshot are dropped at its end.
#[derive(Default)]
pub(crate) struct IdentityCache {
    previous: Vec<CachedIdentity>,
    cursor: usize,
    current: Vec<CachedIdentity>,
}

struct CachedIdentity {
    start: Option<UnixNanos>,
    id: u64,
    /// The owner, and its cgroup, can be learned after a connection was
    /// first shown.
    pid: u32,
    cgroup: u64,
    bytes: Vec<u8>,
}

impl IdentityCache {
    /// The bytes for `c`, rendered by `render` unless the previous snapshot
    /// had them.
    pub(crate) fn get(&mut self, c: &ConnInfo, render: impl FnOnce(&ConnInfo) -> Vec<u8>) -> &[u8] {
        let key = (c.start, c.id);
        let cgroup = c.cgroup_id();
        while self
            .previous
            .get(self.cursor)
            .is_some_and(|p| (p.start, p.id) < key)
        {
            self.cursor += 1;
        }
        let bytes = match self.previous.get_mut(self.cursor) {
            Some(p) if (p.start, p.id) == key && p.pid == c.pid && p.cgroup == cgroup => {
                std::mem::take(&mut p.bytes)
            }
            _ => render(c),
        };
        self.current.push(CachedIdentity {
            start: c.start,
            id: c.id,
            pid: c.pid,
            cgroup,
            bytes,
        });
        &self.current[self.current.len() - 1].bytes
    }

    /// Ends a snapshot: what was not used in it is forgotten.
    pub(crate) fn end_snapshot(&mut self) {
        self.previous = std::mem::take(&mut self.current);
        self.current = Vec::with_capacity(self.previous.len());
        self.cursor = 0;
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Hand-made model values shared by the output tests.

    use std::io::{self, Write};
    use std::net::IpAddr;

    use crate::model::{ConnInfo, Direction, Metrics, Tuple};

    /// 2026-11-23T13:31:47Z
    pub const T0: u64 = 1_795_440_707_000_000_000;

    pub fn conn(local: &str, lport: u16, remote: &str, rport: u16, dir: Direction) -> ConnInfo {
        let local_addr: IpAddr = local.parse().expect("test address");
        let remote_addr: IpAddr = remote.parse().expect("test address");
        ConnInfo {
            // Unique per tuple, as real ids are unique per connection.
            id: (lport as u64) << 16 | rport as u64,
            tuple: Tuple {
                local_addr,
                local_port: lport,
                remote_addr,
                remote_port: rport,
            },
            pid: 1234,
            comm: "curl".into(),
            netns: 4_026_531_840,
            direction: dir,
            start: Some(T0),
            connect_ns: (dir == Direction::Outbound).then_some(250_000),
            cgroup: None,
        }
    }

    pub fn metrics() -> Metrics {
        Metrics {
            bytes_sent: 1000,
            bytes_received: 2_000_000,
            packets_sent: 10,
            packets_received: 1500,
            retransmits: 2,
            rtt_us: 345,
            rtt_var_us: 67,
        }
    }

    /// A writer that records each write call separately.
    #[derive(Default)]
    pub struct CountingWriter {
        pub writes: Vec<Vec<u8>>,
        pub flushes: usize,
    }

    impl CountingWriter {
        pub fn all(&self) -> String {
            String::from_utf8(self.writes.concat()).expect("utf-8 output")
        }
    }

    impl Write for CountingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnRow, Direction, EventKind};
    use std::sync::{Arc, Mutex};

    #[test]
    fn identity_cache_reuses_in_order_and_rerenders_on_change() {
        let mk = |port: u16, start: u64| {
            let mut c = test_util::conn("192.0.2.1", port, "192.0.2.2", 80, Direction::Outbound);
            c.start = Some(start);
            c
        };
        let (a, b, c) = (mk(1, 10), mk(2, 20), mk(3, 30));
        let renders = std::cell::Cell::new(0);
        let render = |c: &ConnInfo| {
            renders.set(renders.get() + 1);
            c.tuple.local_port.to_string().into_bytes()
        };
        let mut cache = IdentityCache::default();
        for c in [&a, &b, &c] {
            cache.get(c, render);
        }
        cache.end_snapshot();
        assert_eq!(renders.get(), 3);
        // b is gone, a's owner changed, c is unchanged: only a is rendered.
        let mut a2 = a.clone();
        a2.pid = 4321;
        assert_eq!(cache.get(&a2, render), b"1");
        assert_eq!(cache.get(&c, render), b"3");
        cache.end_snapshot();
        assert_eq!(renders.get(), 4);
        // Out of order still gives the right bytes (rendered again).
        assert_eq!(cache.get(&c, render), b"3");
        assert_eq!(cache.get(&a2, render), b"1");
        assert_eq!(renders.get(), 5);
        cache.end_snapshot();
        // A cgroup learned later (a seeded connection named by the walk).
        let mut c2 = c.clone();
        c2.cgroup = Some(Arc::new(crate::model::Cgroup {
            id: 9,
            path: None,
            container: None,
            pod_uid: None,
        }));
        cache.get(&a2, render);
        cache.get(&c2, render);
        assert_eq!(renders.get(), 7, "c rendered again");
    }

    #[test]
    fn time_is_rfc3339_utc_with_micros() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            fmt_time(test_util::T0 + 123_456_789),
            "2026-11-23T13:31:47.123456Z"
        );
    }

    #[test]
    fn time_formatter_matches_fmt_time() {
        let mut f = TimeFormatter::default();
        let mut buf = Vec::new();
        // Same second twice (the cached prefix), the next second, the last
        // nanosecond of a second (truncated, not rounded), and going back.
        let mut s = String::new();
        for ns in [
            test_util::T0 + 123_456_789,
            test_util::T0 + 999_999,
            test_util::T0 + 1_000_000_000,
            test_util::T0 + 1_999_999_999,
            0,
            test_util::T0 + 5,
        ] {
            buf.clear();
            f.push(&mut buf, ns);
            assert_eq!(String::from_utf8_lossy(&buf), fmt_time(ns), "{ns}");
            s.clear();
            f.push_str(&mut s, ns);
            assert_eq!(s, fmt_time(ns), "{ns}");
        }
    }

    #[test]
    fn comm_becomes_one_token() {
        assert_eq!(comm_token("curl"), "curl");
        assert!(matches!(comm_token("curl"), Cow::Borrowed(_)));
        assert_eq!(comm_token("Web Content"), "Web_Content");
        assert_eq!(comm_token("a\tb\nc"), "a_b_c");
        assert_eq!(comm_token(""), "-");
    }

    #[test]
    fn hint_names_the_fix() {
        assert_eq!(losses_hint(&Losses::default()), None);
        let map = Losses {
            map_full: 1,
            ..Losses::default()
        };
        assert_eq!(
            losses_hint(&map).as_deref(),
            Some("connection map was full, raise -m/--map-size")
        );
        let seed = Losses {
            seed_map_full: 3,
            ..Losses::default()
        };
        assert_eq!(losses_hint(&seed), losses_hint(&map));
        let both = Losses {
            events_lost: 7,
            map_full: 1,
            seed_map_full: 0,
            seed_unreached: 0,
            runs_missed: 0,
        };
        assert_eq!(
            losses_hint(&both).as_deref(),
            Some(
                "connection map was full, raise -m/--map-size; \
                 events were dropped because user space fell behind reading them"
            )
        );
        let runs = Losses {
            runs_missed: 2,
            ..Losses::default()
        };
        assert!(runs.any());
        assert_eq!(
            losses_hint(&runs).as_deref(),
            Some(
                "the kernel skipped BPF program runs because the program was already running \
                 on that CPU, so events or counter updates may be missing"
            )
        );
        let unreached = Losses {
            seed_unreached: 2,
            ..Losses::default()
        };
        assert!(unreached.any());
        assert!(
            losses_hint(&unreached).is_some_and(|h| h.contains("CAP_SYS_ADMIN")),
            "{:?}",
            losses_hint(&unreached)
        );
        let all = Losses {
            runs_missed: 2,
            seed_unreached: 5,
            ..both
        };
        assert_eq!(
            losses_hint(&all).as_deref(),
            Some(
                "connection map was full, raise -m/--map-size; \
                 existing connections in network namespaces netlens could not enter were not \
                 seeded and are not reported (entering one needs CAP_SYS_ADMIN); \
                 events were dropped because user space fell behind reading them; \
                 the kernel skipped BPF program runs because the program was already running \
                 on that CPU, so events or counter updates may be missing"
            )
        );
    }

    #[test]
    fn line_buf_writes_once_per_batch() {
        let mut lb = LineBuf::new(test_util::CountingWriter::default());
        lb.line("one").expect("line");
        lb.line("two").expect("line");
        assert!(lb.get_ref().writes.is_empty());
        lb.flush().expect("flush");
        assert_eq!(lb.get_ref().writes, vec![b"one\ntwo\n".to_vec()]);
        assert_eq!(lb.get_ref().flushes, 1);
        // Nothing buffered: flushing writes nothing more.
        lb.flush().expect("flush");
        assert_eq!(lb.get_ref().writes.len(), 1);
    }

    /// Fails its writes while `full` is set.
    struct FullDisk {
        full: bool,
        written: Vec<u8>,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn line_buf_counts_a_failed_batch_and_an_empty_one_is_no_recovery() {
        let mut lb = LineBuf::new(FullDisk {
            full: true,
            written: Vec::new(),
        });
        let mut guard = guard::Guard::new("log file", "lines");
        lb.line("one").expect("line");
        lb.line("two").expect("line");
        assert!(guard.call(|| lb.flush()).is_some(), "the failure is said");
        // An empty batch while failing: no recovery said, nothing counted.
        assert_eq!(guard.call(|| lb.flush()), None);
        lb.out.full = false;
        assert_eq!(guard.call(|| lb.flush()), None, "still nothing written");
        lb.line("three").expect("line");
        let back = guard.call(|| lb.flush()).expect("recovery said");
        assert!(
            back.starts_with("log file writes again; 2 lines were dropped"),
            "{back}"
        );
        assert_eq!(lb.get_ref().written, b"three\n");
        assert!(guard
            .summary()
            .is_some_and(|s| s.starts_with("log file: 2 lines dropped")));
    }

    #[test]
    fn line_buf_spills_at_line_boundaries() {
        let mut lb = LineBuf::new(test_util::CountingWriter::default());
        let line = "x".repeat(1000);
        for _ in 0..2000 {
            lb.line(&line).expect("line");
        }
        lb.flush().expect("flush");
        let w = lb.get_ref();
        assert!(w.writes.len() >= 2, "a 2 MB batch is spilled early");
        assert!(w.writes.len() < 10);
        for chunk in &w.writes {
            assert_eq!(chunk.last(), Some(&b'\n'), "every write ends a line");
        }
        assert_eq!(w.all().len(), 2000 * 1001);
    }

    /// Records calls into a shared log, optionally failing.
    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail: bool,
    }

    impl Recorder {
        fn push(&self, what: &str) -> anyhow::Result<()> {
            self.log
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(format!("{} {what}", self.name));
            if self.fail {
                anyhow::bail!("{} failed", self.name);
            }
            Ok(())
        }
    }

    impl Sink for Recorder {
        fn event(&mut self, ev: &ConnEvent) -> anyhow::Result<()> {
            self.push(ev.kind.name())
        }
        fn snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
            self.push(&format!("snapshot {}", snap.conns.len()))
        }
        fn flush(&mut self) -> anyhow::Result<()> {
            self.push("flush")
        }
    }

    #[test]
    fn fanout_forwards_to_all_even_after_an_error() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut fan = Fanout::new();
        fan.push_as(
            "a",
            Recorder {
                name: "a",
                log: log.clone(),
                fail: true,
            },
        );
        fan.push_as(
            "b",
            Recorder {
                name: "b",
                log: log.clone(),
                fail: false,
            },
        );
        assert_eq!(fan.len(), 2);
        let ev = ConnEvent {
            kind: EventKind::Accept,
            timestamp: test_util::T0,
            conn: test_util::conn("192.0.2.1", 80, "192.0.2.9", 5555, Direction::Inbound),
            metrics: None,
        };
        let snap = Snapshot {
            timestamp: test_util::T0,
            conns: vec![ConnRow {
                conn: ev.conn.clone(),
                metrics: test_util::metrics(),
            }],
            incremental: false,
            losses: Losses::default(),
        };
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let said_log = Arc::clone(&said);
        fan.guards
            .say_with(move |l| said_log.lock().expect("said").push(l.to_owned()));
        fan.event(&ev)
            .expect("a failing sink is not the fan-out's failure");
        fan.snapshot(&snap).expect("nor here");
        fan.flush().expect("nor here");
        let got = log.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(
            got,
            [
                "a accept",
                "b accept",
                "a snapshot 1",
                "b snapshot 1",
                "a flush",
                "b flush"
            ]
        );
        // Said once, counted three times.
        let said = said.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("warning: a: a failed;"), "{said:?}");
        assert_eq!(
            fan.losses().as_deref(),
            Some("a: 3 lines dropped (a failed)")
        );
    }

    #[test]
    fn empty_fanout_is_fine() {
        let mut fan = Fanout::new();
        assert!(fan.is_empty());
        fan.flush().expect("nothing to do");
        fan.snapshot(&Snapshot::default()).expect("nothing to do");
    }
}
