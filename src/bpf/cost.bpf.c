// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Exact CPU time of the kernel's networking entry points, from tracepoints
 * only (no kprobe, no fentry), and kernel stacks sampled while NET_RX runs.
 *
 * Accounting model. Every CPU runs at one of three levels: task (a system
 * call, a kernel thread), softirq, hard IRQ handler. Interrupt levels are
 * timed directly from their entry and exit tracepoints; a hard IRQ inside a
 * softirq is taken out of that softirq. For the task level, each CPU keeps
 * intr_ns, the total time it has spent in softirqs and IRQ handlers; a task
 * span (say a sendto) is timed per on-CPU stint, from the moment it starts
 * or is switched in to the moment it ends or is switched out, minus the
 * growth of intr_ns in between. So a softirq that runs inside a system call
 * (NET_RX on loopback runs inside the sender's sendmsg) is charged to the
 * softirq only, and time off-CPU is never charged. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cost.h"
#include "cgroup.bpf.h"

#define PF_IO_WORKER 0x00000010
#define PF_KTHREAD 0x00200000
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Indexed by system call number; filled by user space before load. */
#define SYSCALL_TABLE_SIZE 1024
const volatile __u8 syscall_kind[SYSCALL_TABLE_SIZE] = {};

/* Per-CPU totals read by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_cost);
} costs SEC(".maps");

enum task_mode {
	/* nothing is being timed */
	MODE_NONE = 0,
	/* a system call: every stint is charged to entry when it ends */
	MODE_SPAN = 1,
	/* a NAPI kthread: all its time is network time */
	MODE_THREAD = 2,
	/* io-wq workers and io_uring_enter: time accumulates in pending and
	 * is charged when a socket operation completes, dropped when a
	 * request completes without one */
	MODE_SEGMENT = 3,
};

enum task_role {
	ROLE_USER = 0,
	ROLE_NAPI = 1,
	ROLE_IO_WORKER = 2,
};

struct task_acct {
	/* start of the current on-CPU stint, and intr_ns of that CPU then */
	__u64 start;
	__u64 start_intr;
	/* MODE_SEGMENT: time of earlier stints not charged yet */
	__u64 pending;
	__u8 mode;
	__u8 entry;
	__u8 role;
};

/* Where each CPU is: which softirq / IRQ handler runs, since when. */
struct cpu_state {
	/* total time spent in softirqs and IRQ handlers (outermost level) */
	__u64 intr_ns;
	__u64 softirq_start;
	/* IRQ handler time inside the running softirq */
	__u64 softirq_irq_ns;
	__u64 irq_start;
	/* vector + 1 of the running softirq, 0 outside softirqs */
	__u32 softirq;
	/* irq + 1 of the running IRQ handler, 0 outside IRQ handlers */
	__u32 irq;
	/* PREEMPT_RT runs softirqs in task context, where they can be
	 * preempted: the task that entered the running softirq, the softirq
	 * time of its earlier stints, and whether it is switched out now (then
	 * the softirq is paused, and what runs meanwhile is not in it). Only
	 * one task per CPU can be inside a softirq there (the per-CPU BH lock).
	 * Without PREEMPT_RT a softirq never sees a context switch. */
	__u32 softirq_paused;
	__u64 softirq_task;
	__u64 softirq_done_ns;
	/* The span of the task running on this CPU, when it has one
	 * (cur.mode is not MODE_NONE). A task's task_acct lives here while the
	 * task is on this CPU, and in its task storage while it is switched
	 * out: it moves here when the task is switched in or starts a system
	 * call, and back when it is switched out. So a system call that does
	 * not leave the CPU, the common case, touches no task storage. */
	struct task_acct cur;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_states SEC(".maps");

/* Set by user space when it stops: nothing is charged from then on, at
 * once on every CPU, so its last reads of the per-CPU and per-process
 * counters agree exactly (detaching the programs takes seconds with the
 * per-call system call tracepoints, and is not atomic). */
__u32 frozen = 0;

/* enum pid_mode: which processes pid_costs holds. */
const volatile __u32 pid_mode = PIDS_OFF;
/* Every process's network time, by thread group id (-u processes are
 * inserted by user space before attaching). max_entries is set by user
 * space (--max-processes); it deletes the records of processes that have
 * exited once it has read them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pid_cost);
} pid_costs SEC(".maps");

/* 1 for the IRQ numbers of network devices; user space keeps it current. */
#define NET_IRQS_MAX 16384
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NET_IRQS_MAX);
	__type(key, __u32);
	__type(value, __u8);
} net_irqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_acct);
} task_accts SEC(".maps");

/* Kernel stacks sampled during NET_RX. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* user space sizes it by CPUs and -f */
} samples SEC(".maps");

/* Put the shared types into BTF so libbpf-cargo generates them for Rust. */
struct rx_sample _rx_sample = {};
enum cost_entry _cost_entry;
enum syscall_kind _syscall_kind;
enum pid_mode _pid_mode;

static __always_inline struct cpu_cost *cpu_cost(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&costs, &zero);
}

static __always_inline struct cpu_state *cpu_state(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&cpu_states, &zero);
}

/* A softirq is running on this CPU right now (entered and not paused). */
static __always_inline bool in_softirq(const struct cpu_state *cs)
{
	return cs->softirq && !cs->softirq_paused;
}

/* The record of the current process (every charge is made in the context
 * of the task it is charged to: at sched_switch, prev is still current),
 * created on a miss when `create` and pid_mode is PIDS_ALL. NULL when it
 * has none (or the map is full). */
static __always_inline struct pid_cost *current_pid_cost(bool create)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task;
	struct pid_cost *p, fresh = {};

	p = bpf_map_lookup_elem(&pid_costs, &tgid);
	if (p || !create || pid_mode != PIDS_ALL)
		return p;
	task = bpf_get_current_task_btf();
	/* the process's name, not the thread's (see set_owner in conns) */
	bpf_probe_read_kernel(fresh.comm, sizeof(fresh.comm), task->group_leader->comm);
	fresh.cgroup_id = task_cgroup_id(task);
	bpf_map_update_elem(&pid_costs, &tgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&pid_costs, &tgid);
}

/* Charges ns to entry on this CPU and to the current process; intr_wall is
 * the wall time of an outermost-level interrupt that ends here (0 for any
 * other charge), kept per process for -u. */
static __always_inline void charge_current(__u32 entry, __u64 ns, bool span_end,
					   __u64 intr_wall)
{
	struct cpu_cost *c = cpu_cost();
	struct pid_cost *p;
	bool network;

	if (!c || entry >= COST_ENTRY_MAX || frozen)
		return;
	c->ns[entry] += ns;
	if (span_end)
		c->spans[entry]++;
	if (pid_mode == PIDS_OFF)
		return;
	/* only network time creates a record: a process that merely ran
	 * when a timer softirq came takes no room */
	network = entry != COST_OTHER_SOFTIRQ && entry != COST_OTHER_IRQ;
	p = current_pid_cost(network);
	if (!p) {
		if (network && pid_mode == PIDS_ALL)
			c->pid_lost_ns[entry] += ns;
		return;
	}
	__sync_fetch_and_add(&p->ns[entry], ns);
	if (span_end)
		__sync_fetch_and_add(&p->spans[entry], 1);
	if (intr_wall)
		__sync_fetch_and_add(&p->intr_ns, intr_wall);
}

static __always_inline void charge(__u32 entry, __u64 ns, bool span_end)
{
	charge_current(entry, ns, span_end, 0);
}

/* A process executes a program: its record, if it has one, takes the new
 * name (runc's init becomes the container's program) and its cgroup now.
 * The name is set before this tracepoint, and the task is the thread
 * group's leader by then. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = p->tgid;
	struct pid_cost *rec;

	if (pid_mode == PIDS_OFF)
		return 0;
	rec = bpf_map_lookup_elem(&pid_costs, &tgid);
	if (!rec)
		return 0;
	bpf_probe_read_kernel(rec->comm, sizeof(rec->comm), p->comm);
	rec->cgroup_id = task_cgroup_id(p);
	return 0;
}

/* Task-level time of the current stint: wall time minus the interrupt
 * time this CPU accumulated meanwhile. */
static __always_inline __u64 stint_ns(const struct task_acct *t,
				      const struct cpu_state *cs, __u64 now)
{
	__u64 wall = now - t->start;
	__u64 intr = cs->intr_ns - t->start_intr;

	return wall > intr ? wall - intr : 0;
}

static __always_inline void start_stint(struct task_acct *t,
					const struct cpu_state *cs, __u64 now)
{
	t->start = now;
	t->start_intr = cs->intr_ns;
}

/* True when the current task's file descriptor fd refers to a socket. The
 * descriptor table is reached by plain loads through the task's BTF
 * pointers (the verifier makes them fault-safe loads, no helper call); the
 * slot of the fd array, the file and its inode are untyped pointers to the
 * verifier and take one probe read each. */
static __always_inline bool fd_is_socket(int fd)
{
	struct files_struct *files = bpf_get_current_task_btf()->files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = NULL;
	umode_t mode;

	if (!files)
		return false;
	fdt = files->fdt;
	if (!fdt || fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return false;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return false;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	return (mode & S_IFMT) == S_IFSOCK;
}

/* The entry a system call of this kind is charged to (COST_TX_SYSCALL or
 * COST_RX_SYSCALL), or COST_ENTRY_MAX when this call is no network I/O.
 * arg0 and arg2 are its first and third arguments; only the kinds that
 * test a descriptor use them. io_uring_enter's entry is not used (its time
 * is charged per socket operation, see on_io_uring_complete). */
static __always_inline __u32 syscall_entry(__u8 kind, long arg0, long arg2)
{
	switch (kind) {
	case SYSCALL_TX:
		return COST_TX_SYSCALL;
	case SYSCALL_RX:
	case SYSCALL_IO_URING:
		return COST_RX_SYSCALL;
	case SYSCALL_TX_IF_SOCKET:
		return fd_is_socket(arg0) ? COST_TX_SYSCALL : COST_ENTRY_MAX;
	case SYSCALL_RX_IF_SOCKET:
		return fd_is_socket(arg0) ? COST_RX_SYSCALL : COST_ENTRY_MAX;
	case SYSCALL_SPLICE:
		/* splice(fd_in, off_in, fd_out, ...): one end is a pipe */
		if (fd_is_socket(arg0))
			return COST_RX_SYSCALL;
		return fd_is_socket(arg2) ? COST_TX_SYSCALL : COST_ENTRY_MAX;
	default:
		return COST_ENTRY_MAX;
	}
}

/* A system call of kind `kind` starts in the current task: when it is
 * network I/O, its first stint starts now. */
static __always_inline void syscall_enter(__u8 kind, long arg0, long arg2)
{
	struct cpu_state *cs;
	__u32 entry;

	entry = syscall_entry(kind, arg0, arg2);
	if (entry >= COST_ENTRY_MAX)
		return;
	cs = cpu_state();
	if (!cs)
		return;
	cs->cur.mode = kind == SYSCALL_IO_URING ? MODE_SEGMENT : MODE_SPAN;
	cs->cur.entry = entry;
	cs->cur.role = ROLE_USER;
	cs->cur.pending = 0;
	start_stint(&cs->cur, cs, bpf_ktime_get_ns());
}

/* A system call ends in the current task: closes what syscall_enter
 * opened, if it opened anything. */
static __always_inline void syscall_exit(void)
{
	struct cpu_state *cs = cpu_state();

	/* most leave here: with raw_syscalls every system call of the host
	 * ends here, with the per-call tracepoints every read and write of a
	 * descriptor that is not a socket */
	if (!cs || cs->cur.mode == MODE_NONE || cs->cur.role != ROLE_USER)
		return;
	if (cs->cur.mode == MODE_SPAN)
		charge(cs->cur.entry, stint_ns(&cs->cur, cs, bpf_ktime_get_ns()), true);
	/* MODE_SEGMENT (io_uring_enter): what was not followed by a socket
	 * operation was other I/O */
	cs->cur.mode = MODE_NONE;
}

/* System calls are hooked in one of two ways, chosen by user space before
 * load (the other way's programs are not loaded):
 *
 * - per-call tracepoints, syscalls:sys_enter_NAME and sys_exit_NAME, of
 *   exactly the calls in src/cost/syscalls.rs: no program runs for any
 *   other system call. They need CONFIG_FTRACE_SYSCALLS.
 * - the fallback, raw_syscalls:sys_enter and sys_exit: a program runs for
 *   every system call of the host and looks its number up in
 *   syscall_kind[].
 *
 * The per-call programs are classic tracepoint programs. Their context is
 * the event's own record, not raw_syscalls' struct trace_event_raw_sys_enter
 * (see conns.bpf.c): struct trace_entry (8 bytes, 12 on PREEMPT_RT) and the
 * int __syscall_nr end at or before offset 16, where the arguments start,
 * 8 bytes each (the tracefs format files of 6.1, 6.1-rt, 6.12 and 6.18
 * agree; the kernel refuses to attach a program that reads past the end
 * of the event). */
struct syscall_enter_args {
	__u64 head[2];
	long args[6];
};

/* The enter and exit programs of one system call. */
#define SYSCALL_PROGS(name, kind)                                             \
	SEC("tracepoint/syscalls/sys_enter_" #name)                           \
	int on_enter_##name(struct syscall_enter_args *ctx)                   \
	{                                                                     \
		if (kind == SYSCALL_SPLICE)                                   \
			syscall_enter(kind, ctx->args[0], ctx->args[2]);      \
		else if (kind == SYSCALL_TX_IF_SOCKET ||                      \
			 kind == SYSCALL_RX_IF_SOCKET)                        \
			syscall_enter(kind, ctx->args[0], 0);                 \
		else                                                          \
			syscall_enter(kind, 0, 0);                            \
		return 0;                                                     \
	}                                                                     \
	SEC("tracepoint/syscalls/sys_exit_" #name)                            \
	int on_exit_##name(void *ctx)                                         \
	{                                                                     \
		syscall_exit();                                               \
		return 0;                                                     \
	}

SYSCALL_PROGS(sendto, SYSCALL_TX)
SYSCALL_PROGS(sendmsg, SYSCALL_TX)
SYSCALL_PROGS(sendmmsg, SYSCALL_TX)
SYSCALL_PROGS(recvfrom, SYSCALL_RX)
SYSCALL_PROGS(recvmsg, SYSCALL_RX)
SYSCALL_PROGS(recvmmsg, SYSCALL_RX)
SYSCALL_PROGS(write, SYSCALL_TX_IF_SOCKET)
SYSCALL_PROGS(writev, SYSCALL_TX_IF_SOCKET)
SYSCALL_PROGS(pwritev2, SYSCALL_TX_IF_SOCKET)
SYSCALL_PROGS(sendfile64, SYSCALL_TX_IF_SOCKET)
SYSCALL_PROGS(read, SYSCALL_RX_IF_SOCKET)
SYSCALL_PROGS(readv, SYSCALL_RX_IF_SOCKET)
SYSCALL_PROGS(preadv2, SYSCALL_RX_IF_SOCKET)
SYSCALL_PROGS(splice, SYSCALL_SPLICE)
SYSCALL_PROGS(io_uring_enter, SYSCALL_IO_URING)

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	__u8 kind;

	if (id < 0 || id >= SYSCALL_TABLE_SIZE)
		return 0;
	kind = syscall_kind[id];
	if (kind == SYSCALL_NOT_NET)
		return 0;
	/* arguments are read only for the kinds that test descriptors */
	if (kind == SYSCALL_SPLICE)
		syscall_enter(kind, PT_REGS_PARM1_CORE(regs), PT_REGS_PARM3_CORE(regs));
	else if (kind == SYSCALL_TX_IF_SOCKET || kind == SYSCALL_RX_IF_SOCKET)
		syscall_enter(kind, PT_REGS_PARM1_CORE(regs), 0);
	else
		syscall_enter(kind, 0, 0);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	syscall_exit();
	return 0;
}

/* A task that is a NAPI kthread or an io-wq worker gets its storage, and
 * with it its role, the first time it is switched in. */
static __always_inline struct task_acct *kthread_acct(struct task_struct *task)
{
	/* plain loads: task is sched_switch's typed argument */
	unsigned int flags = task->flags;
	struct task_acct *t;
	__u8 role;

	if (flags & PF_IO_WORKER) {
		role = ROLE_IO_WORKER;
	} else if (flags & PF_KTHREAD) {
		if (task->comm[0] != 'n' || task->comm[1] != 'a' || task->comm[2] != 'p' ||
		    task->comm[3] != 'i' || task->comm[4] != '/')
			return NULL;
		role = ROLE_NAPI;
	} else {
		return NULL;
	}
	t = bpf_task_storage_get(&task_accts, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return NULL;
	t->role = role;
	t->pending = 0;
	if (role == ROLE_NAPI) {
		t->mode = MODE_THREAD;
		t->entry = COST_NAPI_THREAD;
	} else {
		t->mode = MODE_SEGMENT;
		t->entry = COST_IO_URING_WORKER;
	}
	return t;
}

/* True when the task is inside a system call that netlens times, going by
 * the number in its saved user registers (orig_ax on x86). A user task with
 * an open span that is not has had its exit missed: the kernel skips a
 * classic tracepoint program (the per-call ones) while another BPF program,
 * or a BPF map operation of a system call (bpf_disable_instrumentation),
 * is in progress on that CPU, which a preemptible kernel can switch out
 * meanwhile. Without this test every later stint of that task would be
 * charged to the span until its next timed system call ends. */
static __always_inline bool in_net_syscall(struct task_struct *task)
{
#if defined(__TARGET_ARCH_x86)
	struct pt_regs *regs;
	long nr;

	/* bpf_task_pt_regs came in 5.15: before, no test (the program still
	 * loads: the verifier drops the branch the relocation rules out) */
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return true;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	nr = regs->orig_ax;
	return nr >= 0 && nr < SYSCALL_TABLE_SIZE && syscall_kind[nr] != SYSCALL_NOT_NET;
#else
	return true;
#endif
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	struct cpu_state *cs = cpu_state();
	struct task_acct *t, *saved;
	__u64 now;

	if (!cs)
		return 0;
	now = bpf_ktime_get_ns();
	/* PREEMPT_RT: the task running a softirq is switched out. What ran of
	 * the softirq so far is interrupt time, taken out of the task's stint
	 * (charged just below) like a softirq that has ended. */
	if (cs->softirq && !cs->softirq_paused && cs->softirq_task == (__u64)prev) {
		__u64 ran = now - cs->softirq_start;

		cs->softirq_done_ns += ran;
		cs->intr_ns += ran;
		cs->softirq_paused = 1;
	}
	/* prev's span, if it has one: this stint is charged, and the span
	 * moves to prev's task storage until prev runs again */
	t = &cs->cur;
	if (t->mode != MODE_NONE) {
		if (t->role == ROLE_USER && !in_net_syscall(prev))
			/* a span whose end was missed: it is over, and this
			 * stint is not in it */
			t->mode = MODE_NONE;
		else if (t->mode == MODE_SPAN)
			charge(t->entry, stint_ns(t, cs, now), false);
		else if (t->mode == MODE_THREAD)
			charge(t->entry, stint_ns(t, cs, now), true);
		else if (t->mode == MODE_SEGMENT)
			t->pending += stint_ns(t, cs, now);
		if (t->mode != MODE_NONE) {
			saved = bpf_task_storage_get(&task_accts, prev, 0,
						     BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (saved)
				*saved = *t;
		}
		t->mode = MODE_NONE;
	}
	/* next's span, if it has one, runs here from now on */
	saved = bpf_task_storage_get(&task_accts, next, 0, 0);
	if (!saved)
		saved = kthread_acct(next);
	if (saved && saved->mode != MODE_NONE) {
		cs->cur = *saved;
		saved->mode = MODE_NONE;
		start_stint(&cs->cur, cs, now);
	}
	/* ... and switched back in: the softirq goes on from here. */
	if (cs->softirq_paused && cs->softirq_task == (__u64)next) {
		cs->softirq_start = now;
		cs->softirq_paused = 0;
	}
	return 0;
}

/* io_uring operations (UAPI numbers, stable) that are socket operations,
 * or may be (reads and writes, when the file is a socket). */
#define IORING_OP_READV 1
#define IORING_OP_WRITEV 2
#define IORING_OP_SENDMSG 9
#define IORING_OP_RECVMSG 10
#define IORING_OP_READ 22
#define IORING_OP_WRITE 23
#define IORING_OP_SEND 26
#define IORING_OP_RECV 27
#define IORING_OP_SEND_ZC 47
#define IORING_OP_SENDMSG_ZC 48

/* COST_TX_SYSCALL or COST_RX_SYSCALL for an io_uring request that is a
 * socket send or receive, COST_ENTRY_MAX for any other. */
static __always_inline __u32 io_uring_socket_op(void *req)
{
	struct io_kiocb *r = req;
	__u8 op = BPF_CORE_READ(r, opcode);
	bool tx;
	umode_t mode;

	switch (op) {
	case IORING_OP_SEND:
	case IORING_OP_SENDMSG:
	case IORING_OP_SEND_ZC:
	case IORING_OP_SENDMSG_ZC:
		return COST_TX_SYSCALL;
	case IORING_OP_RECV:
	case IORING_OP_RECVMSG:
		return COST_RX_SYSCALL;
	case IORING_OP_WRITE:
	case IORING_OP_WRITEV:
		tx = true;
		break;
	case IORING_OP_READ:
	case IORING_OP_READV:
		tx = false;
		break;
	default:
		return COST_ENTRY_MAX;
	}
	mode = BPF_CORE_READ(r, file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return COST_ENTRY_MAX;
	return tx ? COST_TX_SYSCALL : COST_RX_SYSCALL;
}

/* An io_uring request completed in the context of an io-wq worker or of
 * io_uring_enter: the time since the previous boundary led to it. A socket
 * operation is charged that time (to the worker entry, or as TX/RX system
 * call time); for any other request the time is dropped. One hook for
 * every kernel: it needs no socket tracepoint (sock_send_length and
 * sock_recv_length came in 6.3), and it runs only for io_uring requests,
 * not for every send and receive on the host. The request is the second
 * argument of this tracepoint on the kernels tested (6.1, 6.12, 6.18);
 * kernels before about 5.18 pass none, and then no request reads as a
 * socket operation. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(on_io_uring_complete, void *ring, void *req)
{
	struct cpu_state *cs = cpu_state();
	struct task_acct *t;
	__u32 entry;
	__u64 now;

	/* requests completed from softirq context are not the task's */
	if (!cs || cs->cur.mode != MODE_SEGMENT || in_softirq(cs) || cs->irq)
		return 0;
	t = &cs->cur;
	now = bpf_ktime_get_ns();
	entry = io_uring_socket_op(req);
	if (entry == COST_TX_SYSCALL || entry == COST_RX_SYSCALL) {
		if (t->role == ROLE_IO_WORKER)
			charge(COST_IO_URING_WORKER, t->pending + stint_ns(t, cs, now), true);
		else
			charge(entry, t->pending + stint_ns(t, cs, now), true);
	}
	t->pending = 0;
	start_stint(t, cs, now);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(on_softirq_entry, unsigned int vec)
{
	struct cpu_state *cs = cpu_state();

	if (!cs)
		return 0;
	cs->softirq_irq_ns = 0;
	cs->softirq_done_ns = 0;
	cs->softirq_paused = 0;
	cs->softirq_task = (__u64)bpf_get_current_task_btf();
	cs->softirq_start = bpf_ktime_get_ns();
	cs->softirq = vec + 1;
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(on_softirq_exit, unsigned int vec)
{
	struct cpu_state *cs = cpu_state();
	__u64 wall, busy;
	__u32 entry;

	__u64 ran;

	/* entered before the programs were attached */
	if (!cs || cs->softirq != vec + 1 || cs->softirq_paused)
		return 0;
	/* this stint, then the earlier ones (PREEMPT_RT), already in intr_ns */
	ran = bpf_ktime_get_ns() - cs->softirq_start;
	wall = cs->softirq_done_ns + ran;
	busy = wall > cs->softirq_irq_ns ? wall - cs->softirq_irq_ns : 0;
	if (vec == NET_RX_SOFTIRQ)
		entry = COST_NET_RX_SOFTIRQ;
	else if (vec == NET_TX_SOFTIRQ)
		entry = COST_NET_TX_SOFTIRQ;
	else
		entry = COST_OTHER_SOFTIRQ;
	charge_current(entry, busy, true, wall);
	cs->intr_ns += ran;
	/* last: an IRQ arriving before this line is still counted as inside
	 * the softirq, whose time already went to intr_ns */
	cs->softirq = 0;
	return 0;
}

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(on_irq_entry, int irq, struct irqaction *action)
{
	struct cpu_state *cs = cpu_state();

	if (!cs)
		return 0;
	cs->irq_start = bpf_ktime_get_ns();
	cs->irq = irq + 1;
	return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(on_irq_exit, int irq, struct irqaction *action, int ret)
{
	struct cpu_state *cs = cpu_state();
	__u32 key = irq;
	__u8 *is_net;
	__u64 wall;

	if (!cs || cs->irq != (__u32)irq + 1)
		return 0;
	wall = bpf_ktime_get_ns() - cs->irq_start;
	is_net = bpf_map_lookup_elem(&net_irqs, &key);
	/* inside a softirq, its wall time is the softirq's */
	charge_current(is_net && *is_net ? COST_NET_IRQ : COST_OTHER_IRQ, wall, true,
		       in_softirq(cs) ? 0 : wall);
	if (in_softirq(cs))
		cs->softirq_irq_ns += wall;
	else
		cs->intr_ns += wall;
	cs->irq = 0;
	return 0;
}

/* One sample: keep the kernel stack when NET_RX is running on this CPU. */
static __always_inline void take_sample(void *ctx)
{
	struct cpu_state *cs = cpu_state();
	struct cpu_cost *c = cpu_cost();
	struct rx_sample *s;
	long bytes;

	if (!cs || !c)
		return;
	c->samples++;
	if (cs->softirq != NET_RX_SOFTIRQ + 1 || cs->softirq_paused)
		return;
	c->net_rx_samples++;
	s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s) {
		c->samples_lost++;
		return;
	}
	s->cpu = bpf_get_smp_processor_id();
	bytes = bpf_get_stack(ctx, s->ips, sizeof(s->ips), 0);
	s->frames = bytes < 0 ? bytes : bytes / sizeof(__u64);
	bpf_ringbuf_submit(s, BPF_RB_NO_WAKEUP);
}

/* -f HZ: a cpu-clock perf event fired (a timer interrupt of its own). */
SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	take_sample(ctx);
	return 0;
}

/* Addresses of the functions the scheduler tick's hrtimer may run, set by
 * user space for -f tick: tick_sched_timer (before 6.10) and
 * tick_nohz_handler (6.10 on). Both can exist (before 6.10 the latter is
 * the low-resolution clockevent handler, never an hrtimer function), so a
 * timer matching either is the tick. 0: the symbol does not exist. */
const volatile __u64 tick_handlers[2] = {};

/* -f tick: the scheduler tick is about to run. Sampling there adds no
 * interrupt at all (on a VM without a PMU every extra timer interrupt is
 * expensive); the stack starts with the interrupt frames, then the code
 * the tick interrupted, which user space keeps. */
SEC("tp_btf/hrtimer_expire_entry")
int BPF_PROG(on_tick, struct hrtimer *timer, ktime_t *now)
{
	__u64 function = (__u64)timer->function;

	if (!function || (function != tick_handlers[0] && function != tick_handlers[1]))
		return 0;
	take_sample(ctx);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
