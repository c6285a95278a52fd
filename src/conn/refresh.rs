//! The counters of open connections, as of the last refresh pass.
//!
//! No BPF program runs per packet or per send/receive call: a slot's
//! counters are those of its last state change, and once per refresh user
//! space runs the refresh iterator (conns.bpf.c, `refresh_conns`), which
//! writes the current counters of every tracked connection it finds behind
//! an open file and that changed since its last record. This module keeps
//! each connection's last record, applies them to the slot copies, and
//! keeps the owners that only the walk could name. Pure logic, tested
//! without BPF.

use super::decode::{read_record, CONN_OWNED, EV_ACCEPT, EV_CLOSE};
use super::skel::types;
use crate::model::IdMap;

/// The counters of every connection as the refresh walks last reported
/// them, by slot index. A walk reports a connection only when it changed
/// since its last report, so what it does not report keeps its values.
#[derive(Default)]
pub struct Pass {
    /// Slot index -> the last record of the connection in that slot. A
    /// record of a connection that has closed stays until its slot is
    /// reused; it never applies to another connection (the ids differ).
    by_slot: Vec<Option<types::conn_refresh>>,
    /// The records of the latest walk.
    latest: Vec<types::conn_refresh>,
}

impl Pass {
    /// Takes in the records of one walk, `bytes` (the iterator's output).
    pub fn load(&mut self, bytes: &[u8]) {
        self.latest.clear();
        let size = std::mem::size_of::<types::conn_refresh>();
        for r in bytes
            .chunks_exact(size)
            .filter_map(read_record::<types::conn_refresh>)
        {
            let idx = r.idx as usize;
            if idx >= self.by_slot.len() {
                self.by_slot.resize(idx + 1, None);
            }
            self.by_slot[idx] = Some(r);
            self.latest.push(r);
        }
    }

    /// The last record of slot `idx`, if it belongs to connection `id`: a
    /// slot emptied and refilled since holds another connection.
    pub fn get(&self, idx: usize, id: u64) -> Option<&types::conn_refresh> {
        self.by_slot.get(idx)?.as_ref().filter(|r| r.id == id)
    }

    /// Copies the last reported counters into `v`, the copy of slot `idx`.
    pub fn apply(&self, idx: usize, v: &mut types::conn_value) {
        if let Some(r) = self.get(idx, v.id) {
            v.counters = r.counters;
        }
    }

    /// The records of the latest walk.
    pub fn latest(&self) -> &[types::conn_refresh] {
        &self.latest
    }
}

/// A process that holds a socket open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: [i8; 16],
}

/// Owners of passive connections that no accept(2) named (accepted by
/// io_uring, for one), as the refresh walk found them holding the socket;
/// and the cgroups of connections whose slot has none (those, and the
/// seeded ones). Kept until the connection closes.
#[derive(Default)]
pub struct LateOwners {
    found: IdMap<u64, Owner>,
    cgroups: IdMap<u64, u64>,
}

impl LateOwners {
    /// Takes the owners the latest walk found for connections that had
    /// none, and returns the connections named for the first time.
    pub fn adopt(&mut self, pass: &Pass) -> Vec<u64> {
        let mut named = Vec::new();
        for r in pass.latest().iter().filter(|r| r.cgroup_id != 0) {
            self.cgroups.entry(r.id).or_insert(r.cgroup_id);
        }
        for r in pass.latest().iter().filter(|r| r.pid != 0) {
            self.found.entry(r.id).or_insert_with(|| {
                named.push(r.id);
                Owner {
                    pid: r.pid,
                    comm: r.comm,
                }
            });
        }
        named
    }

    /// Names the owner (and its cgroup) in a copy of a slot that has none,
    /// when one was found.
    pub fn apply(&self, v: &mut types::conn_value) {
        if v.cgroup_id == 0 {
            v.cgroup_id = self.cgroups.get(&v.id).copied().unwrap_or(0);
        }
        if v.flags & CONN_OWNED != 0 {
            return;
        }
        if let Some(o) = self.found.get(&v.id) {
            set_owner(v, o);
        }
    }

    /// Fixes up an event from the ring buffer: a close of a connection named
    /// here gets its owner, and the owner-less accept that the kernel side
    /// reports at the close of a connection it never saw accepted is
    /// dropped (the accept was reported when the owner was found). Returns
    /// false for an event to drop. Forgets the connection at its close.
    pub fn fix_event(&mut self, e: &mut types::conn_event) -> bool {
        let id = e.conn.id;
        if e.r#type == EV_CLOSE {
            if let Some(cgroup) = self.cgroups.remove(&id) {
                if e.conn.cgroup_id == 0 {
                    e.conn.cgroup_id = cgroup;
                }
            }
            if let Some(o) = self.found.remove(&id) {
                if e.conn.flags & CONN_OWNED == 0 {
                    set_owner(&mut e.conn, &o);
                }
            }
            return true;
        }
        !(e.r#type == EV_ACCEPT && e.conn.flags & CONN_OWNED == 0 && self.found.contains_key(&id))
    }

    /// The accept event for a connection named from /proc, from its slot copy.
    pub fn accept_event(&self, v: &types::conn_value, ts_ns: u64) -> types::conn_event {
        let mut conn = *v;
        self.apply(&mut conn);
        types::conn_event {
            sk: v.sk,
            ts_ns,
            r#type: EV_ACCEPT,
            conn,
            ..Default::default()
        }
    }

    /// Connections currently remembered.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

fn set_owner(v: &mut types::conn_value, o: &Owner) {
    v.pid = o.pid;
    v.comm = o.comm;
    v.flags |= CONN_OWNED;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::decode::{CONN_ESTABLISHED, CONN_PASSIVE};

    fn record(idx: u32, id: u64, pid: u32, sent: u64) -> types::conn_refresh {
        let mut r = types::conn_refresh {
            idx,
            id,
            pid,
            ..Default::default()
        };
        r.comm[..3].copy_from_slice(&[b's' as _, b'r' as _, b'v' as _]);
        r.counters.bytes_sent = sent;
        r
    }

    fn bytes(records: &[types::conn_refresh]) -> Vec<u8> {
        let size = std::mem::size_of::<types::conn_refresh>();
        let mut out = Vec::new();
        for r in records {
            // SAFETY: conn_refresh is plain integers; viewing one as bytes is sound.
            let b = unsafe {
                std::slice::from_raw_parts((r as *const types::conn_refresh).cast::<u8>(), size)
            };
            out.extend_from_slice(b);
        }
        out
    }

    fn slot(id: u64, sent: u64) -> types::conn_value {
        let mut v = types::conn_value {
            id,
            flags: CONN_PASSIVE | CONN_ESTABLISHED,
            ..Default::default()
        };
        v.counters.bytes_sent = sent;
        v
    }

    #[test]
    fn a_walk_updates_only_the_connection_it_read() {
        let mut pass = Pass::default();
        pass.load(&bytes(&[record(3, 30, 0, 3000), record(0, 10, 0, 1000)]));
        let mut a = slot(10, 1);
        pass.apply(0, &mut a);
        assert_eq!(a.counters.bytes_sent, 1000);
        // Slot 3 now holds connection 31: the record of 30 is not its.
        let mut b = slot(31, 5);
        pass.apply(3, &mut b);
        assert_eq!(b.counters.bytes_sent, 5);
        // A slot no walk reported keeps its counters.
        let mut c = slot(20, 7);
        pass.apply(2, &mut c);
        assert_eq!(c.counters.bytes_sent, 7);
        pass.apply(999, &mut c);
        assert_eq!(c.counters.bytes_sent, 7);
    }

    #[test]
    fn a_connection_a_walk_skips_keeps_its_last_record() {
        let mut pass = Pass::default();
        pass.load(&bytes(&[record(5, 50, 0, 500), record(6, 60, 0, 600)]));
        // The next walk reports only the one that changed.
        pass.load(&bytes(&[record(6, 60, 0, 650)]));
        assert_eq!(pass.get(5, 50).unwrap().counters.bytes_sent, 500);
        assert_eq!(pass.get(6, 60).unwrap().counters.bytes_sent, 650);
        assert_eq!(pass.latest().len(), 1);
        // A torn trailing record (never written by the kernel) is ignored.
        let mut b = bytes(&[record(2, 22, 0, 1)]);
        b.pop();
        pass.load(&b);
        assert!(pass.latest().is_empty() && pass.get(2, 22).is_none());
    }

    #[test]
    fn owners_are_taken_once_and_given_to_the_close() {
        let mut pass = Pass::default();
        pass.load(&bytes(&[record(0, 1, 42, 0), record(2, 3, 0, 0)]));
        let mut late = LateOwners::default();
        assert_eq!(late.adopt(&pass), vec![1]);
        // Not named a second time.
        assert!(late.adopt(&pass).is_empty());

        let mut v = slot(1, 0);
        late.apply(&mut v);
        assert_eq!(v.pid, 42);
        assert!(v.flags & CONN_OWNED != 0);
        // An owner named by accept() on the kernel side stays.
        let mut owned = slot(1, 0);
        owned.flags |= CONN_OWNED;
        owned.pid = 7;
        late.apply(&mut owned);
        assert_eq!(owned.pid, 7);

        let accept = late.accept_event(&slot(1, 0), 9);
        assert_eq!(
            (accept.r#type, accept.conn.pid, accept.ts_ns),
            (EV_ACCEPT, 42, 9)
        );
        let comm: Vec<u8> = accept.conn.comm[..3].iter().map(|&c| c as u8).collect();
        assert_eq!(comm, b"srv");

        // At the close: the kernel's owner-less accept is dropped, the close
        // gets the owner, and the connection is forgotten.
        let mut ev = types::conn_event {
            r#type: EV_ACCEPT,
            conn: slot(1, 0),
            ..Default::default()
        };
        assert!(!late.fix_event(&mut ev));
        ev.r#type = EV_CLOSE;
        assert!(late.fix_event(&mut ev));
        assert_eq!(ev.conn.pid, 42);
        let mut other = types::conn_event {
            r#type: EV_CLOSE,
            conn: slot(3, 0),
            ..Default::default()
        };
        assert!(late.fix_event(&mut other));
        assert_eq!(other.conn.pid, 0);
        assert!(late.is_empty());
    }

    #[test]
    fn cgroups_fill_slots_without_one_until_the_close() {
        let mut pass = Pass::default();
        let mut seeded = record(0, 1, 0, 0);
        seeded.cgroup_id = 77;
        pass.load(&bytes(&[seeded, record(2, 3, 0, 0)]));
        let mut late = LateOwners::default();
        assert!(late.adopt(&pass).is_empty(), "a cgroup names no owner");
        let mut v = slot(1, 0);
        late.apply(&mut v);
        assert_eq!((v.cgroup_id, v.flags & CONN_OWNED), (77, 0));
        // The kernel's own record (connect, accept) stays.
        let mut own = slot(1, 0);
        own.cgroup_id = 5;
        late.apply(&mut own);
        assert_eq!(own.cgroup_id, 5);
        let mut close = types::conn_event {
            r#type: EV_CLOSE,
            conn: slot(1, 0),
            ..Default::default()
        };
        assert!(late.fix_event(&mut close));
        assert_eq!(close.conn.cgroup_id, 77);
        let mut again = slot(1, 0);
        late.apply(&mut again);
        assert_eq!(again.cgroup_id, 0, "forgotten at the close");
    }
}
