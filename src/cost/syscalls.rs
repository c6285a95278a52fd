//! Which system calls count as network TX or RX time.
//!
//! Two ways to hook them (see cost.bpf.c): the per-call tracepoints
//! `syscalls:sys_enter_<event>` / `sys_exit_<event>` of exactly these calls
//! (one BPF program pair per call, see `probes::COST_SYSCALL_TRACEPOINTS`),
//! or, where the kernel has none, `raw_syscalls:sys_enter/sys_exit` with a
//! table indexed by system call number, filled from here before load, so
//! that the numbers come from libc for the target architecture and nothing
//! is hard-coded per architecture in C. The table is filled either way: the
//! context switch program reads it too.
//!
//! Left out on purpose: `pread64`, `pwrite64`, `preadv` and `pwritev` fail
//! with ESPIPE on a socket before any network work; `vmsplice` and `tee`
//! work on pipes only; `copy_file_range` on regular files only. `preadv2`
//! and `pwritev2` with offset -1 read and write a socket like `readv` and
//! `writev`, and `splice` moves data between a pipe and a socket (proxies
//! such as HAProxy forward that way), so they are in.

use super::skel::types::syscall_kind;

/// One system call netlens times.
#[derive(Clone, Copy, Debug)]
pub struct NetSyscall {
    /// Its name (as in its man page).
    pub name: &'static str,
    /// The name of its tracepoints, `syscalls:sys_enter_<event>` (the
    /// kernel's SYSCALL_DEFINE name: `sendfile` is `sendfile64`), and of
    /// its BPF programs, `on_enter_<event>` and `on_exit_<event>`.
    pub event: &'static str,
    /// Its number on this architecture.
    pub nr: libc::c_long,
    pub kind: syscall_kind,
}

/// The system calls netlens times, in the order of their BPF programs.
pub fn all() -> [NetSyscall; 15] {
    use syscall_kind as k;
    let call = |name, event, nr, kind| NetSyscall {
        name,
        event,
        nr,
        kind,
    };
    [
        call("sendto", "sendto", libc::SYS_sendto, k::SYSCALL_TX),
        call("sendmsg", "sendmsg", libc::SYS_sendmsg, k::SYSCALL_TX),
        call("sendmmsg", "sendmmsg", libc::SYS_sendmmsg, k::SYSCALL_TX),
        call("recvfrom", "recvfrom", libc::SYS_recvfrom, k::SYSCALL_RX),
        call("recvmsg", "recvmsg", libc::SYS_recvmsg, k::SYSCALL_RX),
        call("recvmmsg", "recvmmsg", libc::SYS_recvmmsg, k::SYSCALL_RX),
        call("write", "write", libc::SYS_write, k::SYSCALL_TX_IF_SOCKET),
        call(
            "writev",
            "writev",
            libc::SYS_writev,
            k::SYSCALL_TX_IF_SOCKET,
        ),
        call(
            "pwritev2",
            "pwritev2",
            libc::SYS_pwritev2,
            k::SYSCALL_TX_IF_SOCKET,
        ),
        // sendfile(out_fd, ...): the first argument is the destination.
        call(
            "sendfile",
            "sendfile64",
            libc::SYS_sendfile,
            k::SYSCALL_TX_IF_SOCKET,
        ),
        call("read", "read", libc::SYS_read, k::SYSCALL_RX_IF_SOCKET),
        call("readv", "readv", libc::SYS_readv, k::SYSCALL_RX_IF_SOCKET),
        call(
            "preadv2",
            "preadv2",
            libc::SYS_preadv2,
            k::SYSCALL_RX_IF_SOCKET,
        ),
        call("splice", "splice", libc::SYS_splice, k::SYSCALL_SPLICE),
        call(
            "io_uring_enter",
            "io_uring_enter",
            libc::SYS_io_uring_enter,
            k::SYSCALL_IO_URING,
        ),
    ]
}

/// (number, kind) pairs for the BPF table.
pub fn table() -> impl Iterator<Item = (usize, syscall_kind)> {
    all()
        .into_iter()
        .filter_map(|c| Some((usize::try_from(c.nr).ok()?, c.kind)))
}

#[cfg(test)]
mod tests {
    use super::super::probes::{COST_RAW_SYSCALL_TRACEPOINTS, COST_SYSCALL_TRACEPOINTS};
    use super::*;

    #[test]
    fn numbers_are_distinct_and_fit_the_bpf_table() {
        let all = all();
        let mut numbers: Vec<usize> = table().map(|e| e.0).collect();
        assert_eq!(numbers.len(), all.len());
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), all.len());
        // SYSCALL_TABLE_SIZE in cost.bpf.c
        assert!(numbers.iter().all(|&nr| nr < 1024));
    }

    #[test]
    fn every_call_has_its_tracepoint_pair_in_the_check_table() {
        let all = all();
        assert_eq!(COST_SYSCALL_TRACEPOINTS.len(), 2 * all.len());
        for c in &all {
            for (dir, program) in [("exit", "on_exit_"), ("enter", "on_enter_")] {
                let name = format!("sys_{dir}_{}", c.event);
                let tp = COST_SYSCALL_TRACEPOINTS
                    .iter()
                    .find(|tp| tp.name == name)
                    .unwrap_or_else(|| panic!("no {name} in COST_SYSCALL_TRACEPOINTS"));
                assert_eq!(tp.category, "syscalls");
                assert_eq!(tp.program, format!("{program}{}", c.event));
                assert!(tp.required);
            }
        }
        // Exits are attached first (see COST_SYSCALL_TRACEPOINTS).
        let half = all.len();
        assert!(COST_SYSCALL_TRACEPOINTS[..half]
            .iter()
            .all(|tp| tp.name.starts_with("sys_exit_")));
        assert!(COST_RAW_SYSCALL_TRACEPOINTS[0].name == "sys_exit");
    }

    /// The BPF object has, for every call, the programs the table names, in
    /// the sections libbpf attaches them by.
    #[test]
    fn the_bpf_object_has_a_program_pair_per_call() {
        use libbpf_rs::skel::{OpenSkel, SkelBuilder};
        let mut object = std::mem::MaybeUninit::uninit();
        let open = super::super::skel::CostSkelBuilder::default()
            .open(&mut object)
            .expect("open the cost BPF object");
        let sections: Vec<(String, String)> = open
            .open_object()
            .progs()
            .map(|p| {
                (
                    p.name().to_string_lossy().into_owned(),
                    p.section().to_string_lossy().into_owned(),
                )
            })
            .collect();
        for tp in COST_SYSCALL_TRACEPOINTS
            .iter()
            .chain(&COST_RAW_SYSCALL_TRACEPOINTS)
        {
            let want = match tp.hook {
                crate::sys::kernel::Hook::Tracefs => {
                    format!("tracepoint/{}/{}", tp.category, tp.name)
                }
                crate::sys::kernel::Hook::TpBtf => format!("tp_btf/{}", tp.name),
            };
            assert!(
                sections.contains(&(tp.program.to_string(), want.clone())),
                "no program {} in section {want}",
                tp.program
            );
        }
        let per_call = sections
            .iter()
            .filter(|(_, s)| s.starts_with("tracepoint/syscalls/"))
            .count();
        assert_eq!(per_call, COST_SYSCALL_TRACEPOINTS.len());
    }
}
