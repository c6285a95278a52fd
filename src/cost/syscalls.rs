//! Which system calls count as network TX or RX time.
//!
//! The BPF side looks each system call number up in a table filled from
//! here before load, so the numbers come from libc for the target
//! architecture and nothing is hard-coded per architecture in C.

use super::skel::types::syscall_kind;

/// (system call name, number, how it is accounted).
pub fn classified() -> Vec<(&'static str, usize, syscall_kind)> {
    use syscall_kind as k;
    let entries: [(&str, libc::c_long, syscall_kind); 12] = [
        ("sendto", libc::SYS_sendto, k::SYSCALL_TX),
        ("sendmsg", libc::SYS_sendmsg, k::SYSCALL_TX),
        ("sendmmsg", libc::SYS_sendmmsg, k::SYSCALL_TX),
        ("recvfrom", libc::SYS_recvfrom, k::SYSCALL_RX),
        ("recvmsg", libc::SYS_recvmsg, k::SYSCALL_RX),
        ("recvmmsg", libc::SYS_recvmmsg, k::SYSCALL_RX),
        ("write", libc::SYS_write, k::SYSCALL_TX_IF_SOCKET),
        ("writev", libc::SYS_writev, k::SYSCALL_TX_IF_SOCKET),
        // sendfile(out_fd, ...): the first argument is the destination.
        ("sendfile", libc::SYS_sendfile, k::SYSCALL_TX_IF_SOCKET),
        ("read", libc::SYS_read, k::SYSCALL_RX_IF_SOCKET),
        ("readv", libc::SYS_readv, k::SYSCALL_RX_IF_SOCKET),
        (
            "io_uring_enter",
            libc::SYS_io_uring_enter,
            k::SYSCALL_IO_URING,
        ),
    ];
    entries
        .into_iter()
        .filter_map(|(name, nr, kind)| Some((name, usize::try_from(nr).ok()?, kind)))
        .collect()
}

/// (number, kind) pairs for the BPF table.
pub fn table() -> impl Iterator<Item = (usize, syscall_kind)> {
    classified().into_iter().map(|(_, nr, kind)| (nr, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_and_fit_the_bpf_table() {
        let all = classified();
        let mut numbers: Vec<usize> = all.iter().map(|e| e.1).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), all.len());
        // SYSCALL_TABLE_SIZE in cost.bpf.c
        assert!(numbers.iter().all(|&nr| nr < 1024));
    }
}
