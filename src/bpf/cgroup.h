/* Cgroup layouts shared by conns.bpf.c, cost.bpf.c and Rust (through
 * each object's BTF). */
#ifndef NETLENS_CGROUP_H
#define NETLENS_CGROUP_H

/* Which cgroup names a task's container (rodata cgroup_mode, chosen by
 * user space from the host's cgroup layout). */
enum cgroup_mode {
	CGROUP_MODE_OFF = 0,
	CGROUP_MODE_UNIFIED = 1,   /* the task's cgroup in the v2 hierarchy */
	CGROUP_MODE_V1_MEMORY = 2, /* its cgroup in the v1 memory controller's */
};

/* The names of a cgroup's directory and of its parents (leaf first; "" past
 * the root), kept in the map cgroup_names by cgroup id from the first
 * connection (conns) or charge (cost) of the cgroup on: a container's ID and pod UID are in them,
 * and they outlive the cgroup, which a short-lived container removes
 * before user space can look its path up. */
enum cgroup_names_layout {
	NL_CGROUP_LEVELS = 3,
	NL_CGROUP_NAME_LEN = 96,
};
/* Not generated for Rust (an array this long has no Default there): user
 * space reads the map's values as NL_CGROUP_LEVELS NUL-padded names. */
struct cgroup_names {
	char name[NL_CGROUP_LEVELS][NL_CGROUP_NAME_LEN];
};

#endif
