// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Shared by contain's collector programs. Record layouts here are decoded
// by collector/decode.go; keep both in step (decode_test.go checks sizes).
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define FILENAME_MAX_LEN 512
#define ARGS_MAX_LEN 4096

// Record types: the first byte of every ring-buffer record.
enum record_type {
	RECORD_EXEC = 1,
	RECORD_SYSCALL = 2,
};

// Header flags.
#define FLAG_ARGS_TRUNCATED (1 << 0)
#define FLAG_FILENAME_TRUNCATED (1 << 1)
#define FLAG_ARGS_FAULT (1 << 2)

// Loss counters (per-CPU array index).
enum loss_index {
	LOSS_RINGBUF_EXEC = 0,
	LOSS_RINGBUF_SYSCALL = 1,
	LOSS_SYSCALL_MAP_FULL = 2,
	LOSS_MAX = 4,
};

struct record_hdr {
	__u8 type;
	__u8 flags;
	__u16 _pad;
	__u32 pid;
	__u32 tgid;
	__u32 ppid;
	__u32 ns_pid;
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u64 cgroup_id;
	__u64 ktime_ns;
	char comm[TASK_COMM_LEN];
}; // 64 bytes

struct exec_event {
	struct record_hdr hdr;
	__u32 argc;
	__u32 args_len;      // bytes of args copied
	__u32 args_full_len; // arg_end - arg_start
	__u32 filename_len;  // bytes incl. NUL, as bpf_probe_read_kernel_str returned
	char filename[FILENAME_MAX_LEN];
	char args[ARGS_MAX_LEN];
};

#define SYSCALL_MAX 512

// Syscall record modes (schema Syscall.Mode).
#define SYSCALL_MODE_FIRST 1
#define SYSCALL_MODE_SENSITIVE 2

struct syscall_event {
	struct record_hdr hdr;
	__u32 nr;
	__u32 mode;
	__u64 args[6];
}; // 120 bytes

// Per-container syscall counts, one value per CPU: a zero count on this CPU
// marks a (container, syscall) pair this CPU has not seen yet.
struct syscall_counts {
	__u32 n[SYSCALL_MAX];
};

// Set by the loader before load.
volatile const __u64 host_cgroup_id = 0; // cgroup v2 root inode: host processes
volatile const __u32 self_tgid = 0;      // the collector itself
volatile const __u8 host_processes = 0;  // 1: report host processes too
volatile const __u8 filter_self = 1;     // 0: the cgroup filter already excludes the collector
volatile const __u64 sensitive_bits[SYSCALL_MAX / 64] = {}; // syscalls always reported with args

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); // resized by the loader
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); // cgroup id
	__type(value, struct syscall_counts);
} syscall_counts SEC(".maps");

// All zeros: the initial value of a syscall_counts entry (too big for the stack).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_counts);
} zero_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOSS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} loss SEC(".maps");

static __always_inline void count_loss(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&loss, &idx);
	if (v)
		*v += 1;
}

// wanted reports whether the current task should be reported at all.
static __always_inline bool wanted(__u64 cgid, __u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (!host_processes && cgid == host_cgroup_id)
		return false;
	return true;
}

static __always_inline __u32 task_ns_pid(struct task_struct *task)
{
	struct pid *p = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(p, level);
	struct upid up = {};
	bpf_core_read(&up, sizeof(up), &p->numbers[level & 31]);
	return up.nr;
}

static __always_inline void fill_hdr(struct record_hdr *h, __u8 type, struct task_struct *task, __u64 cgid)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	h->type = type;
	h->flags = 0;
	h->_pad = 0;
	h->pid = (__u32)pid_tgid;
	h->tgid = pid_tgid >> 32;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->ns_pid = task_ns_pid(task);
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->euid = BPF_CORE_READ(task, cred, euid.val);
	h->cgroup_id = cgid;
	h->ktime_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}
