/* Layouts shared by cost.bpf.c and Rust (libbpf-cargo generates the Rust
 * types from BTF, so nothing here is mirrored by hand). User space reads
 * these structs back from raw bytes (bpfio::Record): keep their fields
 * integers, integer arrays and structs of those, never pointers or bools. */
#ifndef NETLENS_COST_H
#define NETLENS_COST_H

#include "cgroup.h"

/* What a span of CPU time is charged to. Exactly one entry is charged for
 * any nanosecond: time in a hard IRQ handler is taken out of the softirq or
 * task it interrupted, time in a softirq out of the task it interrupted. */
enum cost_entry {
	COST_TX_SYSCALL = 0,      /* send*, and write/writev/pwritev2/sendfile on a
				   * socket, splice into a socket */
	COST_RX_SYSCALL = 1,      /* recv*, and read/readv/preadv2 on a socket,
				   * splice out of a socket */
	COST_NET_TX_SOFTIRQ = 2,  /* NET_TX softirq, also in ksoftirqd */
	COST_NET_RX_SOFTIRQ = 3,  /* NET_RX softirq, also in ksoftirqd */
	COST_NET_IRQ = 4,         /* hard IRQ handlers of network devices */
	COST_NAPI_THREAD = 5,     /* threaded NAPI kthreads (napi/...) */
	COST_IO_URING_WORKER = 6, /* io-wq workers, up to each socket operation */
	COST_OTHER_SOFTIRQ = 7,   /* context: every other softirq */
	COST_OTHER_IRQ = 8,       /* context: hard IRQ handlers of other devices */
	COST_ENTRY_MAX = 9,
};

/* syscall_kind[nr]: how a system call is accounted. */
enum syscall_kind {
	SYSCALL_NOT_NET = 0,
	SYSCALL_TX = 1,           /* always socket I/O (send, sendto, ...) */
	SYSCALL_RX = 2,
	SYSCALL_TX_IF_SOCKET = 3, /* only when the fd (first argument) is a socket */
	SYSCALL_RX_IF_SOCKET = 4,
	SYSCALL_IO_URING = 5,     /* io_uring_enter: up to each socket operation */
	SYSCALL_SPLICE = 6,       /* splice: RX when fd_in (first argument) is a socket,
				   * else TX when fd_out (third) is */
};

/* Cumulative totals of one CPU since the programs were loaded (one per-CPU
 * array entry; user space reads them every period). */
struct cpu_cost {
	__u64 ns[COST_ENTRY_MAX];
	__u64 spans[COST_ENTRY_MAX]; /* completed spans charged */
	__u64 samples;               /* perf_event samples taken on this CPU */
	__u64 net_rx_samples;        /* ... of which while NET_RX was running */
	__u64 samples_lost;          /* NET_RX samples dropped: ring buffer full */
	/* network time of processes that found the pid_costs map full
	 * (PIDS_ALL): on no process's record */
	__u64 pid_lost_ns[COST_ENTRY_MAX];
};

/* Which processes have a struct pid_cost (rodata pid_mode). */
enum pid_mode {
	PIDS_OFF = 0,    /* none */
	PIDS_LISTED = 1, /* only those user space inserted (-u) */
	PIDS_ALL = 2,    /* every process, inserted at its first network charge */
};

/* The time charged while one process (thread group) was current on a CPU,
 * since it was first seen: its own system calls, its io-wq workers, a NAPI
 * kthread's polling, and the interrupts that ran in its context. For the
 * network entries the sum over all processes (the idle tasks are process
 * 0), plus cpu_cost.pid_lost_ns, is the per-CPU total exactly; the other
 * entries are charged only to processes that already have a record. */
struct pid_cost {
	__u64 ns[COST_ENTRY_MAX];
	__u64 spans[COST_ENTRY_MAX];
	/* softirqs and IRQ handlers (outermost level, wall time, network or
	 * not) that ran while it was current; with tick-based accounting the
	 * kernel counts them in its stime */
	__u64 intr_ns;
	/* its cgroup (kernfs id, see enum cgroup_mode) at its first charge */
	__u64 cgroup_id;
	/* its main thread's name then (NUL-padded) */
	__u8 comm[16];
};

/* Kernel stack depth kept per sample (the kernel's own maximum is 127). */
#define COST_MAX_FRAMES 127

/* One kernel stack sampled during NET_RX. */
struct rx_sample {
	__u32 cpu;
	/* frames in ips (leaf first), or a negative errno from bpf_get_stack */
	__s32 frames;
	__u64 ips[COST_MAX_FRAMES];
};

#endif
