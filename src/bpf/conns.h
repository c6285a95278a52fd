/* Layouts shared by conns.bpf.c and Rust (libbpf-cargo generates the Rust
 * types from BTF, so nothing here is mirrored by hand). User space reads
 * these structs back from raw bytes (bpfio::Record): keep their fields
 * integers, integer arrays and structs of those, never pointers or bools. */
#ifndef NETLENS_CONNS_H
#define NETLENS_CONNS_H

#include "cgroup.h"

#define NL_COMM_LEN 16

/* conn_value.flags */
enum conn_flag {
	CONN_ACTIVE = 1,      /* opened by connect() on this host */
	CONN_PASSIVE = 2,     /* opened by a local listener */
	CONN_SEEDED = 4,      /* already established when netlens started */
	CONN_ESTABLISHED = 8, /* handshake completed */
	CONN_OWNED = 16,      /* pid/comm name the owner (connect/accept seen) */
};

/* conn_event.type */
enum conn_event_type {
	EV_CONNECT = 1,
	EV_ACCEPT = 2,
	EV_CLOSE = 3,
	EV_CONNECT_FAILED = 4,
};

/* Indices of the per-CPU loss counters. */
enum loss_counter {
	LOSS_EVENTS = 0,   /* ring buffer full: an event was dropped */
	LOSS_MAP_FULL = 1, /* connection map full: a connection is not tracked */
	LOSS_SEED_MAP_FULL = 2,
	LOSS_MAX = 3,
};

/* A connection's counters: copies of struct tcp_sock fields, corrected to
 * payload bytes (SYN and FIN sequence numbers removed) and to microseconds. */
struct conn_counters {
	__u64 bytes_sent; /* payload acknowledged by the peer */
	__u64 bytes_received;
	__u64 segs_out;
	__u64 segs_in;
	__u64 retrans;
	__u32 srtt_us;
	__u32 rttvar_us;
};

/* One tracked connection, in a slot of the memory-mapped array conn_slots
 * (the hash map conns gives the slot of a socket). The counters in a slot
 * are those of the last state change; the refresh iterator reads the
 * current ones (struct conn_refresh).
 *
 * User space reads slots without any lock: a slot is live while id != 0,
 * and id is written last when a slot is filled (first, to 0, when it is
 * emptied or refilled), so a reader that sees the same non-zero id before
 * and after copying a slot has one connection's record. */
struct conn_value {
	__u64 id;       /* unique per connection, assigned at establishment */
	__u64 start_ns; /* CLOCK_BOOTTIME at establishment; 0 if seeded (unknown);
			 * of the SYN while an active open is in progress */
	__u64 connect_ns; /* active opens: SYN to established, or to failure */
	__u8 saddr[16]; /* IPv4 in the first 4 bytes when family == AF_INET */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u16 family;
	__u16 flags;
	__u32 pid; /* thread group id of the owner, 0 if none known */
	__u32 netns;
	char comm[NL_COMM_LEN];
	struct conn_counters counters;
	__u64 sk; /* struct sock address, the connection's key in conns */
	/* The owner's cgroup (kernfs id, see enum cgroup_mode) when the kernel
	 * named the owner (connect, accept); 0 if unknown. */
	__u64 cgroup_id;
};

struct conn_event {
	__u64 sk;
	__u64 ts_ns; /* CLOCK_BOOTTIME */
	__u32 type;
	__s32 err; /* sk_err for EV_CONNECT_FAILED */
	struct conn_value conn;
};

/* What the seeding iterator writes for every connected TCP socket of a
 * network namespace (and for every listener, with is_listener set, so user
 * space can tell inbound from outbound). */
struct seed_record {
	__u64 sk;
	__u64 ino; /* socket inode, to find the owning process in /proc */
	__u32 is_listener;
	__u32 tracked; /* 1 if this walk inserted the socket into the map (on
			* this run of the program or an earlier one for the same
			* socket whose record did not fit in the buffer) */
	struct conn_value conn;
};

/* What the refresh iterator writes for a tracked, established connection it
 * finds behind a file descriptor, when the connection changed since its
 * last record (or has none yet): the current counters of connection `id`,
 * in slot `idx`. */
struct conn_refresh {
	__u64 id;
	__u32 idx;
	/* For a connection whose owner is not known yet (a passive one accepted
	 * other than by accept(2), e.g. by io_uring): a process that holds the
	 * socket open, where the walk found it. 0 otherwise. */
	__u32 pid;
	char comm[NL_COMM_LEN];
	struct conn_counters counters;
	/* For a connection whose slot has no cgroup (seeded, or named here):
	 * the cgroup of the process the walk found holding it. 0 otherwise. */
	__u64 cgroup_id;
};

#endif
