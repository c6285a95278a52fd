// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* TCP connection tracing from tracepoints only (no kprobe, no fentry), and
 * none that runs per packet or per send/receive call: state changes put
 * connections into slots of a memory-mapped array (counters included, as of
 * that change) and lifecycle events into a ring buffer; the refresh iterator
 * reads the current counters of every tracked connection when user space
 * asks, once per refresh. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "conns.h"
#include "cgroup.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SEND_SHUTDOWN 2
#define MSG_PEEK 2
#define E2BIG 7
#define EEXIST 17

/* Set by user space before load. */
const volatile bool filter_loopback = true;
/* Wake the reader only once this much data is queued; below it the reader
 * picks events up on its own timer (waking per event is what makes peer
 * tools expensive at high connection rates). */
const volatile __u64 wakeup_bytes = 1 << 20;
/* max_entries of conns, conn_slots and free_slots (-m/--map-size). */
const volatile __u32 map_size = 65536;

/* A tracked socket's entry in conns. */
struct tracked {
	__u32 slot;	     /* index of its record in conn_slots */
	__u32 walk_segs_in;  /* segment counts of the socket when the refresh */
	__u32 walk_segs_out; /* walk last wrote a record of connection walk_id */
	__u32 _pad;
	__u64 id;      /* the connection's id once published, as in its slot */
	__u64 walk_id; /* 0: no record written yet */
};

/* Tracked sockets: struct sock * -> their entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* -m/--map-size overrides this */
	__type(key, __u64);
	__type(value, struct tracked);
} conns SEC(".maps");

/* The connection records, memory-mapped read-only by user space, which
 * reads slots [0, next_fresh) every tick (see struct conn_value for how a
 * slot is read without a lock). Lookups are inlined by the verifier. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536); /* -m/--map-size overrides this */
	__type(key, __u32);
	__type(value, struct conn_value);
} conn_slots SEC(".maps");

/* Indices of emptied slots, reused before fresh ones. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 65536); /* -m/--map-size overrides this */
	__type(value, __u32);
} free_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOSS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps");

/* Put the shared types into BTF so libbpf-cargo generates them for Rust. */
struct conn_event _conn_event = {};
struct seed_record _seed_record = {};
struct conn_refresh _conn_refresh = {};
enum conn_flag _conn_flag;
enum conn_event_type _conn_event_type;
enum loss_counter _loss_counter;

__u64 next_id = 1;
/* Slots below this index have been used at least once; no slot above it
 * has. May pass map_size by up to the number of CPUs (user space clamps). */
__u64 next_fresh = 0; /* 64-bit: the only fetch-and-add width without alu32 */

static __always_inline void count_loss(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&losses, &idx);

	if (v)
		*v += 1;
}

static __always_inline bool v4_loopback(__u32 addr_be)
{
	return (addr_be & 0xff) == 127; /* 127.0.0.0/8, network byte order */
}

static __always_inline bool v6_loopback(const __u8 *a)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, a + 8, 8);
	if (hi != 0)
		return false;
	/* ::1 */
	if (lo == 0x0100000000000000ULL)
		return true;
	/* ::ffff:127.x.y.z (IPv4-mapped loopback, which NetTracer missed) */
	return a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff && a[12] == 127;
}

static __always_inline void copy_in6(__u8 *dst, const struct in6_addr *a)
{
	__u32 w[4];

	w[0] = a->in6_u.u6_addr32[0];
	w[1] = a->in6_u.u6_addr32[1];
	w[2] = a->in6_u.u6_addr32[2];
	w[3] = a->in6_u.u6_addr32[3];
	__builtin_memcpy(dst, w, 16);
}

/* What bpf_skc_to_tcp_sock() returns, without the helper call where the
 * kernel allows: the same test (a full socket of protocol TCP), then
 * bpf_core_cast(), which the verifier turns into a register move. Loads
 * through the result are plain (fault-safe) loads, like loads through any
 * BTF pointer in a tracing program; a C cast would not do, the verifier
 * would still see a sock. bpf_core_cast() needs the bpf_rdonly_cast kfunc
 * (Linux 6.2); before it, libbpf leaves the kfunc unresolved, the branch
 * is dead for the verifier, and the helper (Linux 5.9) does the cast. */
static __always_inline struct tcp_sock *as_tcp_sock(const struct sock *sk)
{
	int state = sk->__sk_common.skc_state;

	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || sk->sk_protocol != IPPROTO_TCP)
		return NULL;
	if (bpf_ksym_exists(bpf_rdonly_cast))
		return bpf_core_cast(sk, struct tcp_sock);
	return bpf_skc_to_tcp_sock((void *)sk);
}

/* Addresses, ports, family and netns of a socket. Through a tcp_sock
 * pointer (as_tcp_sock() or bpf_skc_to_tcp_sock()) the verifier lets every
 * field, inet_sock ones included, be read with plain loads instead of one
 * bpf_probe_read_kernel() each. */
static __always_inline void read_tuple(const struct tcp_sock *tp, struct conn_value *v)
{
	const struct inet_sock *inet = &tp->inet_conn.icsk_inet;
	const struct sock_common *skc = &inet->sk.__sk_common;

	v->family = skc->skc_family;
	/* inet_sport, not skc_num: a failed connect releases the port (and
	 * zeroes skc_num) before the TCP_CLOSE transition is traced. */
	v->sport = __builtin_bswap16(inet->inet_sport);
	v->dport = __builtin_bswap16(skc->skc_dport);
	v->netns = skc->skc_net.net->ns.inum;
	if (v->family == AF_INET6) {
		copy_in6(v->saddr, &skc->skc_v6_rcv_saddr);
		copy_in6(v->daddr, &skc->skc_v6_daddr);
	} else {
		__u32 s = skc->skc_rcv_saddr;
		__u32 d = skc->skc_daddr;

		__builtin_memcpy(v->saddr, &s, 4);
		__builtin_memcpy(v->daddr, &d, 4);
	}
}

static __always_inline bool is_loopback(const struct conn_value *v)
{
	if (v->family == AF_INET6)
		return v6_loopback(v->saddr) || v6_loopback(v->daddr);
	__u32 s, d;

	__builtin_memcpy(&s, v->saddr, 4);
	__builtin_memcpy(&d, v->daddr, 4);
	return v4_loopback(s) || v4_loopback(d);
}

static __always_inline bool dst_is_loopback(const struct conn_value *v)
{
	__u32 d;

	if (v->family == AF_INET6)
		return v6_loopback(v->daddr);
	__builtin_memcpy(&d, v->daddr, 4);
	return v4_loopback(d);
}

static __always_inline void set_owner(struct conn_value *v)
{
	struct task_struct *task = bpf_get_current_task_btf();
	/* The process name, not the name of the thread that made the call.
	 * Plain loads through the BTF task pointer, no probe reads: comm is
	 * always NUL-padded to its full length (__set_task_comm() uses
	 * strscpy_pad()), so copying all 16 bytes gives what a string read
	 * into the zeroed field gave. */
	const __u64 *comm = (const __u64 *)task->group_leader->comm;
	__u64 *dst = (__u64 *)v->comm; /* at offset 64 of conn_value */

	v->pid = task->tgid;
	dst[0] = comm[0];
	dst[1] = comm[1];
	v->cgroup_id = task_cgroup_id(task);
}

/* The struct tcp_sock fields a connection's counters come from. */
struct tcp_fields {
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	unsigned long sk_flags;
	__u32 snd_una;
	__u32 write_seq;
	__u32 segs_out;
	__u32 segs_in;
	__u32 total_retrans;
	__u32 srtt_us;
	__u32 mdev_us;
	__u8 shutdown;
};

/* Plain loads, through a pointer the verifier types as a tcp_sock. */
static __always_inline void load_fields(struct tcp_sock *tp, struct tcp_fields *f)
{
	struct sock *sk = (struct sock *)tp;

	f->bytes_acked = tp->bytes_acked;
	f->bytes_received = tp->bytes_received;
	f->bytes_sent = tp->bytes_sent;
	f->bytes_retrans = tp->bytes_retrans;
	f->sk_flags = sk->__sk_common.skc_flags;
	f->snd_una = tp->snd_una;
	f->write_seq = tp->write_seq;
	f->segs_out = tp->segs_out;
	f->segs_in = tp->segs_in;
	f->total_retrans = tp->total_retrans;
	f->srtt_us = tp->srtt_us;
	f->mdev_us = tp->mdev_us;
	f->shutdown = sk->sk_shutdown;
}

/* The counters of a connection with flags `flags`, from its tcp_sock
 * fields. tcp_sock keeps them in odd units and with the handshake in them:
 *  - bytes_acked counts the SYN on the active side (snd_una starts at the
 *    ISN there, at ISN+1 on the passive side) and the FIN once it is acked;
 *  - bytes_received counts the peer's FIN (rcv_nxt moves past it);
 *  - srtt_us is 8x the smoothed RTT, mdev_us 4x its variance (as TCP_INFO). */
static __always_inline void to_counters(const struct tcp_fields *f, __u16 flags,
					struct conn_counters *c)
{
	__u64 acked = f->bytes_acked;
	__u64 received = f->bytes_received;
	__u64 unique_sent = f->bytes_sent - f->bytes_retrans;
	bool fin_acked = (f->shutdown & SEND_SHUTDOWN) && f->snd_una == f->write_seq;
	/* SOCK_DONE is set by tcp_fin() when the peer's FIN arrives, and by
	 * nothing else before the socket reaches TCP_CLOSE. */
	bool fin_received = f->sk_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE));

	if (fin_acked && acked > 0)
		acked -= 1;
	if (flags & CONN_ACTIVE) {
		if (acked > 0)
			acked -= 1;
	} else if (flags & CONN_SEEDED) {
		/* Direction unknown: acked payload never exceeds the payload sent
		 * once, so a surplus can only be the SYN. */
		if (acked > unique_sent)
			acked = unique_sent;
	}
	if (fin_received && received > 0)
		received -= 1;

	c->bytes_sent = acked;
	c->bytes_received = received;
	c->segs_out = f->segs_out;
	c->segs_in = f->segs_in;
	c->retrans = f->total_retrans;
	c->srtt_us = f->srtt_us >> 3;
	c->rttvar_us = f->mdev_us >> 2;
}

/* The counters of a connection with flags `flags`, read now from its socket. */
static __always_inline void read_fields_into(struct tcp_sock *tp, __u16 flags,
					     struct conn_counters *c)
{
	struct tcp_fields f;

	load_fields(tp, &f);
	to_counters(&f, flags, c);
}

/* The counters of record *v, read now from its socket. */
static __always_inline void read_counters(struct tcp_sock *tp, struct conn_value *v)
{
	read_fields_into(tp, v->flags, &v->counters);
}

/* The slot of a tracked socket, NULL if the socket is not tracked. */
static __always_inline struct conn_value *slot_of(__u64 key, __u32 *idx)
{
	struct tracked *e = bpf_map_lookup_elem(&conns, &key);

	if (!e)
		return NULL;
	*idx = e->slot;
	return bpf_map_lookup_elem(&conn_slots, idx);
}

/* Sets a slot's id with a fully ordered exchange: the slot's other fields,
 * written before, are visible to user space before a non-zero id is, and a
 * zero id is visible before what is written after. */
static __always_inline void slot_set_id(struct conn_value *slot, __u64 id)
{
	__sync_lock_test_and_set(&slot->id, id);
}

/* Copies *v into an empty slot (id 0), leaving the id for the caller to
 * publish with slot_set_id(). */
static __always_inline void slot_write(struct conn_value *slot, struct conn_value *v)
{
	__u64 id = v->id;

	v->id = 0;
	__builtin_memcpy(slot, v, sizeof(*v));
	v->id = id;
}

/* Takes a free slot index: a recycled one, else a never-used one. */
static __always_inline int slot_take(__u32 *idx)
{
	__u64 fresh;

	if (bpf_map_pop_elem(&free_slots, idx) == 0)
		return 0;
	if (next_fresh >= map_size)
		return -E2BIG;
	fresh = __sync_fetch_and_add(&next_fresh, 1);
	if (fresh >= map_size)
		return -E2BIG;
	*idx = fresh;
	return 0;
}

/* Starts tracking socket `key` with record *v (v->sk is set here).
 * replace: an entry already there can only be stale, its slot is reused;
 * otherwise it is kept and -EEXIST returned. -E2BIG when no slot is free
 * (and there is no entry to replace), as the hash map said when it held
 * the records. */
static __always_inline int track(__u64 key, struct conn_value *v, bool replace)
{
	struct tracked entry = {.id = v->id};
	struct conn_value *slot;
	struct tracked *cur;
	__u32 idx;
	int err;

	v->sk = key;
	/* The common case first, without a lookup: the socket is new. */
	err = slot_take(&idx);
	if (err == 0) {
		slot = bpf_map_lookup_elem(&conn_slots, &idx);
		if (!slot)
			return -E2BIG; /* idx < map_size: cannot happen */
		/* Filled before it is reachable from conns, published (non-zero
		 * id) only once it is: user space never sees a record the hooks
		 * cannot find, and a failed insert leaves nothing visible. */
		slot_write(slot, v);
		entry.slot = idx;
		err = bpf_map_update_elem(&conns, &key, &entry, BPF_NOEXIST);
		if (err == 0) {
			if (v->id)
				slot_set_id(slot, v->id);
			return 0;
		}
		slot->flags = 0;
		bpf_map_push_elem(&free_slots, &idx, 0);
	}
	cur = bpf_map_lookup_elem(&conns, &key);
	if (!cur)
		return err;
	if (!replace)
		return -EEXIST;
	idx = cur->slot;
	slot = bpf_map_lookup_elem(&conn_slots, &idx);
	if (!slot)
		return -E2BIG;
	slot_set_id(slot, 0);
	cur->walk_id = 0;
	cur->id = v->id;
	slot_write(slot, v);
	if (v->id)
		slot_set_id(slot, v->id);
	return 0;
}

/* Stops tracking socket `key`, whose slot is `slot` at index idx: empties
 * the slot first (a reader finds it dead from here on), then frees it. */
static __always_inline void untrack(__u64 key, struct conn_value *slot, __u32 idx)
{
	slot_set_id(slot, 0);
	slot->flags = 0;
	/* Only the caller that removed the entry frees the slot. */
	if (bpf_map_delete_elem(&conns, &key) == 0)
		bpf_map_push_elem(&free_slots, &idx, 0);
}

/* Reserves an event record and fills its header; NULL (and a counted
 * loss) when the ring buffer is full. */
static __always_inline struct conn_event *event_start(__u64 sk, __u32 type, __s32 err, __u64 ts)
{
	struct conn_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_loss(LOSS_EVENTS);
		return NULL;
	}
	e->sk = sk;
	e->ts_ns = ts;
	e->type = type;
	e->err = err;
	return e;
}

static __always_inline void event_submit(struct conn_event *e)
{
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
}

/* ts: CLOCK_BOOTTIME of the event; callers that have just read the clock
 * pass that reading (bpf_ktime_get_boot_ns() costs as much as a map
 * update on these machines). */
static __always_inline void emit(__u64 sk, __u32 type, __s32 err, __u64 ts,
				 const struct conn_value *v)
{
	struct conn_event *e = event_start(sk, type, err, ts);

	if (!e)
		return;
	__builtin_memcpy(&e->conn, v, sizeof(*v));
	event_submit(e);
}

/* Nanoseconds from `start` to `now`; 0 when `start` is unknown (0). */
static __always_inline __u64 since(__u64 start, __u64 now)
{
	return start && start < now ? now - start : 0;
}

static __always_inline void on_active_start(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct conn_value v = {};
	/* Never NULL here: tcp_set_state() only runs on full TCP sockets. */
	struct tcp_sock *tp = as_tcp_sock(sk);

	if (!tp)
		return;
	/* The source port may still be 0 here (chosen after SYN_SENT is set);
	 * the tuple is read when the handshake ends. */
	read_tuple(tp, &v);
	if (filter_loopback && dst_is_loopback(&v))
		return;
	v.flags = CONN_ACTIVE | CONN_OWNED;
	/* When the SYN leaves, until the outcome: the connect time. */
	v.start_ns = bpf_ktime_get_boot_ns();
	set_owner(&v);
	if (track(key, &v, true))
		count_loss(LOSS_MAP_FULL);
}

static __always_inline void on_established(const struct sock *sk, int oldstate)
{
	__u64 key = (__u64)sk;
	struct tracked *e = bpf_map_lookup_elem(&conns, &key);
	__u32 idx = e ? e->slot : 0;
	struct conn_value *v = e ? bpf_map_lookup_elem(&conn_slots, &idx) : NULL;
	struct tcp_sock *tp;
	__u64 id, now;

	/* An active open completes from SYN_SENT, or from SYN_RECV after a
	 * simultaneous open (both ends sent SYNs): the entry made at SYN_SENT
	 * tells them apart from a passive child. */
	if (v && (v->flags & (CONN_ACTIVE | CONN_ESTABLISHED)) == CONN_ACTIVE) {
		tp = as_tcp_sock(sk);
		if (!tp)
			return;
		read_tuple(tp, v);
		v->flags |= CONN_ESTABLISHED;
		now = bpf_ktime_get_boot_ns();
		v->connect_ns = since(v->start_ns, now);
		v->start_ns = now;
		read_counters(tp, v);
		/* Published last: the record is complete when user space sees it. */
		id = __sync_fetch_and_add(&next_id, 1);
		e->id = id;
		slot_set_id(v, id);
		/* The event happens at the establishment: one clock reading. */
		emit(key, EV_CONNECT, 0, v->start_ns, v);
		return;
	}
	if (oldstate != TCP_SYN_RECV)
		return;
	tp = as_tcp_sock(sk);
	if (!tp)
		return;

	/* Passive open, in softirq: the current task is unrelated, so the
	 * owner stays unknown until a process accept()s this socket, unless
	 * it already has: the child is queued for accept() before this
	 * transition, and the softirq can be preempted in between (PREEMPT_RT)
	 * or race an accept() on another CPU. on_accept_exit() then left an
	 * owner-only entry (passive, owned, not established). */
	struct conn_value nv = {};
	bool accepted = v && (v->flags & (CONN_PASSIVE | CONN_OWNED | CONN_ESTABLISHED)) ==
				     (CONN_PASSIVE | CONN_OWNED);

	read_tuple(tp, &nv);
	if (filter_loopback && is_loopback(&nv)) {
		if (accepted)
			untrack(key, v, idx);
		return;
	}
	nv.flags = CONN_PASSIVE | CONN_ESTABLISHED;
	nv.start_ns = bpf_ktime_get_boot_ns();
	nv.id = __sync_fetch_and_add(&next_id, 1);
	read_counters(tp, &nv);
	if (accepted) {
		const __u64 *comm = (const __u64 *)v->comm;
		__u64 *dst = (__u64 *)nv.comm;

		nv.flags |= CONN_OWNED;
		nv.pid = v->pid;
		nv.cgroup_id = v->cgroup_id;
		dst[0] = comm[0];
		dst[1] = comm[1];
	}
	/* Any other entry left under this socket address could only be a
	 * stale one (a fresh child has none); replacing it is right. */
	if (track(key, &nv, true)) {
		count_loss(LOSS_MAP_FULL);
		return;
	}
	if (accepted)
		emit(key, EV_ACCEPT, 0, nv.start_ns, &nv);
}

/* Every ring buffer record reserved below is tested for NULL exactly once,
 * and used only on the non-NULL side of that test: the 6.1 verifier does
 * not know that a record is non-NULL after the test, so a second test of
 * the same pointer makes it explore a NULL path that still holds the
 * reference, and it rejects the program ("Unreleased reference"). The slot
 * is emptied before the events are submitted: a reader that has seen the
 * close (or the failure) never finds the connection live afterwards. */
static __always_inline void on_close(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	__u32 idx;
	struct conn_value *v = slot_of(key, &idx);
	struct conn_event *accept_ev, *close_ev;
	struct tcp_sock *tp;
	__u64 now;

	if (!v)
		return;
	tp = as_tcp_sock(sk);
	now = bpf_ktime_get_boot_ns();
	if ((v->flags & (CONN_PASSIVE | CONN_ESTABLISHED)) == CONN_PASSIVE) {
		/* An owner-only entry from on_accept_exit(): the child never got
		 * to ESTABLISHED, so there is no connection to report. */
		untrack(key, v, idx);
		return;
	}
	if (!(v->flags & CONN_ESTABLISHED)) {
		if (tp)
			read_tuple(tp, v);
		v->connect_ns = since(v->start_ns, now);
		v->start_ns = now;
		close_ev = event_start(key, EV_CONNECT_FAILED, sk->sk_err, now);
		if (!close_ev) {
			untrack(key, v, idx);
			return;
		}
		__builtin_memcpy(&close_ev->conn, v, sizeof(*v));
		/* In the event only: the slot of a connection that is not
		 * established keeps id 0 until it is emptied. */
		close_ev->conn.id = __sync_fetch_and_add(&next_id, 1);
		untrack(key, v, idx);
		event_submit(close_ev);
		return;
	}
	if (tp)
		read_counters(tp, v);
	/* Never accepted: an accept event with pid 0 says so, before the close. */
	if ((v->flags & (CONN_PASSIVE | CONN_OWNED)) == CONN_PASSIVE) {
		accept_ev = event_start(key, EV_ACCEPT, 0, now);
		if (accept_ev) {
			__builtin_memcpy(&accept_ev->conn, v, sizeof(*v));
			close_ev = event_start(key, EV_CLOSE, 0, now);
			if (!close_ev) {
				untrack(key, v, idx);
				event_submit(accept_ev);
				return;
			}
			__builtin_memcpy(&close_ev->conn, v, sizeof(*v));
			untrack(key, v, idx);
			event_submit(accept_ev);
			event_submit(close_ev);
			return;
		}
	}
	close_ev = event_start(key, EV_CLOSE, 0, now);
	if (!close_ev) {
		untrack(key, v, idx);
		return;
	}
	__builtin_memcpy(&close_ev->conn, v, sizeof(*v));
	untrack(key, v, idx);
	event_submit(close_ev);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	/* Half of all transitions (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, SYN_RECV)
	 * are of no interest: decide on the states, already in registers,
	 * before touching the socket. */
	switch (newstate) {
	case TCP_SYN_SENT:
		if (oldstate != TCP_CLOSE)
			return 0;
		break;
	case TCP_ESTABLISHED:
		if (oldstate != TCP_SYN_SENT && oldstate != TCP_SYN_RECV)
			return 0;
		break;
	case TCP_CLOSE:
		break;
	default:
		return 0;
	}
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT)
		on_active_start(sk);
	else if (newstate == TCP_ESTABLISHED)
		on_established(sk, oldstate);
	else
		on_close(sk);
	return 0;
}

/* accept() returned a new socket: resolve the fd to its struct sock and
 * name the accepting process as the owner. */
static __always_inline void on_accept_exit(long ret)
{
	struct task_struct *task;
	struct fdtable *fdt;
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;
	__u64 key;
	struct conn_value *v;
	__u32 idx;

	if (ret < 0)
		return;
	/* Plain loads through BTF pointers where the verifier types them:
	 * task->files->fdt. fdt->fd is a pointer to pointers (a scalar to the
	 * verifier), so the file pointer needs one probe read, and so do the
	 * file's socket and the socket's sock (CO-RE probe reads: this runs
	 * once per accept, and needs no kfunc, unlike bpf_core_cast()). */
	task = bpf_get_current_task_btf();
	fdt = task->files->fdt;
	if ((unsigned long)ret >= fdt->max_fds)
		return;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[ret]);
	if (!file)
		return;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return;
	sk = BPF_CORE_READ(sock, sk);
	key = (__u64)sk;
	v = slot_of(key, &idx);
	if (!v) {
		/* Accepted before its handshake was traced to the end (see
		 * on_established()): leave the owner for that transition. A
		 * socket past SYN_RECV and not tracked is not ours to track
		 * (filtered, or there before netlens). */
		struct conn_value nv = {};

		if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_SYN_RECV)
			return;
		nv.flags = CONN_PASSIVE | CONN_OWNED;
		set_owner(&nv);
		if (track(key, &nv, false) == -E2BIG)
			count_loss(LOSS_MAP_FULL);
		return;
	}
	if ((v->flags & CONN_OWNED) || !(v->flags & CONN_PASSIVE))
		return;
	v->flags |= CONN_OWNED;
	set_owner(v);
	emit(key, EV_ACCEPT, 0, bpf_ktime_get_boot_ns(), v);
}

/* The context of a syscalls:sys_exit_* program as the kernel lays it out
 * (the event's tracefs format): the common fields, the system call number,
 * then ret, at offset 16 on every kernel netlens runs on. Deliberately not
 * CO-RE: struct trace_event_raw_sys_exit belongs to raw_syscalls:sys_exit,
 * whose ret moves to offset 24 where struct trace_entry is 12 bytes
 * (PREEMPT_RT), and the kernel then refuses to attach a program that reads
 * past the end of this smaller event. */
struct syscall_exit_args {
	__u64 common;
	__u64 nr;
	long ret;
};

SEC("tracepoint/syscalls/sys_exit_accept4")
int on_accept4_exit(struct syscall_exit_args *ctx)
{
	on_accept_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int on_accept_exit_tp(struct syscall_exit_args *ctx)
{
	on_accept_exit(ctx->ret);
	return 0;
}

/* Seeding: walk the TCP sockets of the network namespace this iterator was
 * created in; track every connected one that the hooks do not track yet,
 * and write one record per connected socket and per listener.
 *
 * A record that does not fit in the seq_file buffer is dropped by the
 * kernel, which runs this program again for the same socket at the start
 * of the next read(). That second run finds the socket already in the map:
 * a slot flagged CONN_SEEDED was inserted by this walk (only the iterator
 * sets that flag, and it walks each namespace once), so the socket counts
 * as tracked by this walk and its record is written now; a slot without
 * the flag belongs to the hooks, which saw the connection open or close
 * (no seed, no owner to look up). Should a kernel show a socket twice
 * with both records written, user space keeps one. */
SEC("iter/tcp")
int seed_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct seed_record rec = {};
	struct conn_value *cur;
	struct tcp_sock *tp;
	struct sock *sk;
	bool map_full = false;
	int state, err;
	__u32 idx;

	if (!skc)
		return 0;
	state = skc->skc_state;
	if (state == TCP_LISTEN) {
		rec.is_listener = 1;
	} else if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_TIME_WAIT ||
		   state == TCP_NEW_SYN_RECV || state == TCP_CLOSE) {
		return 0;
	}
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	rec.sk = (__u64)sk;
	read_tuple(tp, &rec.conn);
	if (filter_loopback && is_loopback(&rec.conn))
		return 0;
	/* Plain loads (NULL-safe: a faulting load through a BTF pointer reads 0,
	 * as the probe reads did for an orphaned socket). */
	rec.ino = tp->inet_conn.icsk_inet.sk.sk_socket->file->f_inode->i_ino;
	if (!rec.is_listener) {
		cur = slot_of(rec.sk, &idx);
		if (cur) {
			/* A second run for this socket, or the hooks' entry. */
			rec.tracked = (cur->flags & CONN_SEEDED) != 0;
		} else {
			/* start_ns stays 0: when it was established is unknown. */
			rec.conn.flags = CONN_SEEDED | CONN_ESTABLISHED;
			rec.conn.id = __sync_fetch_and_add(&next_id, 1);
			read_counters(tp, &rec.conn);
			err = track(rec.sk, &rec.conn, false);
			if (err == 0)
				rec.tracked = 1;
			else if (err != -EEXIST /* the hooks tracked it meanwhile */)
				map_full = true;
		}
	}
	/* Fails only when the buffer is full: nothing was written, and the
	 * next read() runs this program again for this socket (see above).
	 * The loss of a socket that did not fit in the map is counted on the
	 * run whose record is written, so once. */
	if (bpf_seq_write(seq, &rec, sizeof(rec)) != 0)
		return 0;
	if (map_full)
		count_loss(LOSS_SEED_MAP_FULL);
	return 0;
}

/* Refresh: walk the open files of every process and write the current
 * counters of each tracked, established connection found behind one, so an
 * open connection's figures are those of the moment of the walk, at no cost
 * per packet. User space runs it once per refresh, and keeps each
 * connection's last record: a connection whose segment counts did not
 * move since its last record is skipped (no counter it reports can change
 * without a segment in or out), so a silent connection costs a few loads.
 * The walk covers every network namespace at once, needs no privilege
 * beyond loading the program, and names the holder of each socket: the
 * owner of a passive connection that no accept(2) named (io_uring accepts,
 * for one). Iterators over the
 * tracked-socket map itself (iter/bpf_map_elem, iter/bpf_sk_storage_map)
 * would visit only tracked sockets, but some kernels refuse to load them.
 *
 * The walk holds a reference on each file, so the socket cannot be freed
 * under it; the connection can still close on another CPU and its slot be
 * refilled: the slot's id is read before the counters and again after (a
 * close empties the slot, id 0, before anything else), and the record is
 * written only if it did not change. User space applies a record only to
 * the connection with that id. */
SEC("iter/task_file")
int refresh_conns(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct conn_refresh r = {};
	struct conn_value *slot;
	struct tracked *e;
	struct tcp_sock *tp;
	struct socket *sock;
	__u32 segs_in, segs_out;
	__u64 key;
	__u16 flags;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	/* Straight to the map, without a look at the socket: only full TCP
	 * sockets are in it, and a silent connection costs the fewest loads. */
	key = (__u64)sock->sk;
	e = bpf_map_lookup_elem(&conns, &key);
	if (!e || !e->id)
		return 0;
	if (bpf_ksym_exists(bpf_rdonly_cast))
		tp = bpf_core_cast(sock->sk, struct tcp_sock);
	else
		tp = bpf_skc_to_tcp_sock(sock->sk);
	if (!tp)
		return 0;
	r.id = e->id;
	segs_in = tp->segs_in;
	segs_out = tp->segs_out;
	if (e->walk_id == r.id && e->walk_segs_in == segs_in && e->walk_segs_out == segs_out)
		return 0;
	r.idx = e->slot;
	slot = bpf_map_lookup_elem(&conn_slots, &r.idx);
	if (!slot || __sync_fetch_and_add(&slot->id, 0) != r.id)
		return 0;
	flags = slot->flags;
	if (slot->sk != key || !(flags & CONN_ESTABLISHED))
		return 0;
	read_fields_into(tp, flags, &r.counters);
	if ((flags & (CONN_PASSIVE | CONN_OWNED)) == CONN_PASSIVE) {
		const __u64 *comm = (const __u64 *)task->group_leader->comm;
		__u64 *dst = (__u64 *)r.comm;

		r.pid = task->tgid;
		dst[0] = comm[0];
		dst[1] = comm[1];
	}
	if (!slot->cgroup_id)
		r.cgroup_id = task_cgroup_id(task);
	if (__sync_fetch_and_add(&slot->id, 0) != r.id)
		return 0;
	/* A record that does not fit is not written, and this program runs
	 * again for the same file at the next read(): the entry's walk fields
	 * move only once the record is out. Should the entry have been deleted
	 * and reused meanwhile, they name this connection, not the new one,
	 * which the next walk then reads in full. */
	if (bpf_seq_write(ctx->meta->seq, &r, sizeof(r)))
		return 0;
	e->walk_id = r.id;
	e->walk_segs_in = r.counters.segs_in;
	e->walk_segs_out = r.counters.segs_out;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
