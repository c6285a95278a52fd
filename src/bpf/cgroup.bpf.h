/* A task's cgroup, for conns.bpf.c and cost.bpf.c: its id, and the names
 * of its directory and parents, recorded the first time it is seen. Each
 * object that includes this has its own maps and cgroup_mode. */
#ifndef NETLENS_CGROUP_BPF_H
#define NETLENS_CGROUP_BPF_H

#include "cgroup.h"

/* enum cgroup_mode: which cgroup id task_cgroup_id() reads; set by user
 * space before load. */
const volatile __u32 cgroup_mode = CGROUP_MODE_OFF;

/* Names of the cgroups seen (struct cgroup_names), by cgroup id; least
 * recently used ones go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__uint(value_size, sizeof(struct cgroup_names));
} cgroup_names SEC(".maps");

/* Where a cgroup's names are assembled: too large for a program's stack
 * beside the record it fills. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(value_size, sizeof(struct cgroup_names));
} cgroup_names_scratch SEC(".maps");

/* Put the shared types into BTF so libbpf-cargo generates them for Rust. */
enum cgroup_names_layout _cgroup_names_layout;
enum cgroup_mode _cgroup_mode;

/* The kernfs node of the cgroup of `task` that names its container (see
 * enum cgroup_mode). Plain loads through the BTF task pointer (no helper
 * call each: this runs at every connect and accept, and at a process's
 * first network charge); the v1 controller's
 * index is an enum value of the running kernel, and a kernel without the
 * memory controller simply has no v1 cgroup. */
static __always_inline struct kernfs_node *task_cgroup_kn(struct task_struct *task)
{
	if (cgroup_mode == CGROUP_MODE_UNIFIED)
		return task->cgroups->dfl_cgrp->kn;
	if (cgroup_mode != CGROUP_MODE_V1_MEMORY ||
	    !bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return NULL;
	return task->cgroups->subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)]
		->cgroup->kn;
}

/* struct kernfs_node before 6.15, whose parent pointer is now __parent. */
struct kernfs_node___pre615 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___pre615, parent))
		return BPF_CORE_READ((struct kernfs_node___pre615 *)kn, parent);
	return BPF_CORE_READ(kn, __parent);
}

/* The id of `task`'s cgroup (its directory's inode number, which user
 * space maps to a path), its names recorded in cgroup_names the first
 * time (one map lookup afterwards); 0 if none. */
static __always_inline __u64 task_cgroup_id(struct task_struct *task)
{
	struct kernfs_node *kn = task_cgroup_kn(task);
	struct cgroup_names *names;
	__u32 zero = 0;
	__u64 id;

	if (!kn)
		return 0;
	id = kn->id;
	if (!id || bpf_map_lookup_elem(&cgroup_names, &id))
		return id;
	names = bpf_map_lookup_elem(&cgroup_names_scratch, &zero);
	if (!names)
		return id;
#pragma unroll
	for (int i = 0; i < NL_CGROUP_LEVELS; i++) {
		names->name[i][0] = 0;
		if (kn) {
			bpf_probe_read_kernel_str(names->name[i], NL_CGROUP_NAME_LEN,
						  BPF_CORE_READ(kn, name));
			kn = kn_parent(kn);
		}
	}
	bpf_map_update_elem(&cgroup_names, &id, names, BPF_NOEXIST);
	return id;
}

#endif
