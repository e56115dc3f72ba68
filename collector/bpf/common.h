// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Shared by contain's collector programs. Record layouts here are decoded
// by collector/decode.go; keep both in step (decode_test.go checks sizes).
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define TASK_COMM_LEN 16
#define FILENAME_MAX_LEN 512
#define ARGS_MAX_LEN 4096
#define PATH_MAX_LEN 256

// Record types: the first byte of every ring-buffer record.
enum record_type {
	RECORD_EXEC = 1,
	RECORD_SYSCALL = 2,
	RECORD_NET = 3,
	RECORD_FILE = 4,
	RECORD_PROC = 5,
	RECORD_SEQ = 6, // sequence mode: its own ring buffer (seq_events)
};

// Header flags.
#define FLAG_ARGS_TRUNCATED (1 << 0)
#define FLAG_FILENAME_TRUNCATED (1 << 1)
#define FLAG_ARGS_FAULT (1 << 2)
#define FLAG_PATH_TRUNCATED (1 << 3)     // file: path or new_path cut; exec: exe or cwd cut
#define FLAG_RATE_LIMITED (1 << 4)       // events of this container were dropped before this one

// Loss counters (per-CPU array index).
enum loss_index {
	LOSS_RINGBUF_EXEC = 0,
	LOSS_RINGBUF_SYSCALL = 1,
	LOSS_SYSCALL_MAP_FULL = 2,
	LOSS_RINGBUF_NET = 3,
	LOSS_RINGBUF_FILE = 4,
	LOSS_RINGBUF_PROC = 5,
	LOSS_RATE_LIMITED = 6,
	LOSS_ORIGIN_STORE = 7, // a task's origin could not be stored (no memory, or busy)
	LOSS_BULK_HEADROOM = 8, // a file or network record refused: the ring's headroom is kept for urgent records
	LOSS_PROGRAMS_FULL = 9, // a container's program start could not be marked (programs map full)
	LOSS_MAX = 16,
};

// Origin (schema Origin): on whose behalf a container task acts, decided
// by lineage (see docs/design/007-lineage.md), never by comm.
#define ORIGIN_UNSPECIFIED 0
#define ORIGIN_CONTAINER 1
#define ORIGIN_RUNTIME 2
#define ORIGIN_EXEC_SESSION 3
#define ORIGIN_CLASSES 4

// task_origin: a task's lineage state (task local storage).
struct task_origin {
	__u8 origin;
	__u8 _pad[3];
	__u32 session_tgid; // ORIGIN_EXEC_SESSION: the tgid of the task that entered
};

struct record_hdr {
	__u8 type;
	__u8 flags;
	__u8 origin; // ORIGIN_*
	__u8 _pad;
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
	__u32 session_tgid; // ORIGIN_EXEC_SESSION: the session's first tgid
	__u32 _pad2;
}; // 72 bytes

struct exec_event {
	struct record_hdr hdr;
	__u32 argc;
	__u32 args_len;      // bytes of args copied
	__u32 args_full_len; // arg_end - arg_start
	__u32 filename_len;  // bytes incl. NUL, as bpf_probe_read_kernel_str returned
	char filename[FILENAME_MAX_LEN];
	char args[ARGS_MAX_LEN];
	// exe (the bprm file) and cwd as path components from the leaf up,
	// each NUL-terminated: "busybox\0bin\0" is /bin/busybox.
	__u32 exe_len;
	__u32 cwd_len;
	char exe[PATH_MAX_LEN];
	char cwd[PATH_MAX_LEN];
	__u32 exe_flags; // EXE_*
	__u32 _pad_exe;
};

// exec_event.exe_flags: what the binary run is (exe_flags_of).
#define EXE_MEMFD 1    // an anonymous memory file (memfd_create)
#define EXE_DELETED 2  // unlinked: no name left at exec
#define EXE_WRITABLE 4 // overlayfs upper layer, or a writable tmpfs/ramfs mount
#define EXE_STDIO_INET 8 // stdin, stdout or stderr is a TCP/UDP socket (IPv4 or IPv6)

// Network record ops (schema Network.Op) and protocols.
#define NET_CONNECT 1
#define NET_ACCEPT 2
#define NET_BIND 3
#define NET_LISTEN 4

struct net_event {
	struct record_hdr hdr;
	__u8 op;
	__u8 protocol; // IPPROTO_*
	__u16 family;  // AF_INET, AF_INET6
	__s32 result;
	__u16 local_port; // host order
	__u16 remote_port;
	__u32 _pad;
	__u8 local_addr[16]; // IPv4: first 4 bytes
	__u8 remote_addr[16];
}; // 120 bytes

// File record ops (schema File.Op).
#define FILE_OPEN_WRITE 1
#define FILE_CREATE 2
#define FILE_RENAME 3
#define FILE_UNLINK 4
#define FILE_CHMOD 5
#define FILE_CHOWN 6
#define FILE_OPEN_READ 7
#define FILE_MKNOD 8
#define FILE_LINK 9     // path: the existing file, new_path: the link
#define FILE_SYMLINK 10 // path: the target (as passed), new_path: the link
#define FILE_TRUNCATE 11 // truncate(2), ftruncate(2) (no path: the fd's file), or an open with O_TRUNC and no O_CREAT
#define FILE_MKDIR 12
#define FILE_CONNECT 13 // connect(2) of a unix socket to a path: path is the sun_path

// file_event.dir_state / new_dir_state: how a path was based.
#define DIR_ABSOLUTE 0   // absolute path (or none): dir unused
#define DIR_RESOLVED 1   // relative: dir holds its base (cwd or dirfd's path)
#define DIR_UNRESOLVED 2 // relative: the base could not be read

struct file_event {
	struct record_hdr hdr;
	__u8 op;
	__u8 dir_state;
	__u8 new_dir_state;
	__u8 _pad;
	__u32 flags;
	__u32 mode;
	__s32 result;
	__u16 path_len; // bytes incl. NUL as bpf_probe_read_user_str returned
	__u16 new_path_len;
	__u32 dir_len; // bytes in dir (leaf first, NUL-separated)
	__u32 uid;     // chown's owner and group
	__u32 gid;
	char path[PATH_MAX_LEN];
	char new_path[PATH_MAX_LEN];
	char dir[PATH_MAX_LEN];
	// Opens that returned an fd: the opened file's inode number and
	// superblock dev (kernel encoding, MAJOR << 20 | MINOR), and its path
	// walked from its dentries up to the task's root (leaf first, like
	// dir; resolved_state RESOLVED_*).
	__u64 ino;
	__u32 dev;
	__u16 resolved_len;
	__u8 sensitive; // the opened file is a sensitive file (see sensitive_inodes)
	__u8 resolved_state;
	char resolved[PATH_MAX_LEN];
}; // 1144 bytes

// file_event.resolved_state.
#define RESOLVED_NONE 0 // not an open, or no fd
#define RESOLVED_OK 1
#define RESOLVED_CUT 2 // longer than PATH_MAX_LEN or deeper than the walk

#define PROC_FORK 1
#define PROC_EXIT 2

struct lifecycle_event {
	struct record_hdr hdr;
	__u32 op;
	__u32 child_tgid;
	__s32 exit_code; // the wait status: exit status << 8 | signal
	__u32 _pad;
}; // 88 bytes

#define SYSCALL_MAX 512

// Syscall record modes (schema Syscall.Mode).
#define SYSCALL_MODE_FIRST 1
#define SYSCALL_MODE_SENSITIVE 2

struct syscall_event {
	struct record_hdr hdr;
	__u32 nr;
	__u32 mode;
	__u64 args[6];
	__s64 ret;
}; // 136 bytes

// Sequence mode: one compact record per syscall of a selected container,
// in the seq_events ring buffer (not the 64-byte record_hdr).
struct seq_event {
	__u8 type; // RECORD_SEQ
	__u8 origin;
	__u16 nr;
	__u32 tid;
	__u32 tgid;
	__u32 session_tgid;
	__u64 cgroup_id;
	__u64 ktime_ns;
}; // 32 bytes

// seq_cgroups value: a selected container's sequence records lost to a
// full seq_events (user space reports deltas).
struct seq_cgroup {
	__u64 lost;
};

// Per-container syscall counts, one value per CPU, and per origin the
// syscalls this CPU has reported a first use of: a clear bit marks a
// (container, origin, syscall) this CPU has not seen yet.
struct syscall_counts {
	__u32 n[SYSCALL_MAX];
	__u64 seen[ORIGIN_CLASSES][SYSCALL_MAX / 64];
};

// Set by the loader before load.
volatile const __u64 host_cgroup_id = 0; // cgroup v2 root inode: host processes
volatile const __u32 self_tgid = 0;      // the collector itself
volatile const __u8 host_processes = 0;  // 1: report host processes too
volatile const __u8 filter_self = 1;     // 0: the cgroup filter already excludes the collector
volatile const __u8 track_counts = 1;   // count syscalls and report first uses
volatile const __u8 track_procs = 1;    // report fork and exit
volatile const __u32 only_tgid = 0;     // tests: report this process only
volatile const __u32 host_mnt_ns = 0;   // inode of the host's mount namespace
// Records of bulk kinds (file, network) are refused while the ring holds
// more than bulk_ring_limit bytes, keeping the rest for urgent records
// (exec, process, syscall); 0: no limit.
volatile const __u64 bulk_ring_limit = 0;
volatile const __u8 open_detail = 1;    // benchmarks: 0 skips the opened file's identity and walk
// syscall_class[nr]: what to do on nr besides counting.
#define CLASS_SENSITIVE 1 // always reported with args
#define CLASS_NET 2       // connect, accept, bind, listen
#define CLASS_FILE 4      // opens, rename, unlink, chmod, chown, mknod, link, symlink, truncate, mkdir
#define CLASS_SOCKET 8    // socket(): reported as sensitive when AF_PACKET or SOCK_RAW

// prctl option renaming the calling thread (linux/prctl.h).
#define PR_SET_NAME 15
volatile const __u8 syscall_class[SYSCALL_MAX] = {};
// In-kernel flood control: per container, a token bucket holding at most
// rate_cap_ns of credit, each record costing rate_cost_ns (1e9 / rate);
// rate_cost_ns 0 disables it.
volatile const __u64 rate_cost_ns = 0;
volatile const __u64 rate_cap_ns = 0;
// Reader wakeups: records whose type bit (1 << RECORD_*) is set in
// wake_types wake the reader at once; the others are submitted without a
// wakeup (user space polls) unless the ring buffer holds more than
// wake_bytes.
volatile const __u32 wake_types = 0xffffffff;
volatile const __u64 wake_bytes = 0;
// Wakeup coalescing (wake_gated 1), two gates the reader reopens:
// - wake_gate: an urgent record (wake_types) forces a wakeup while it is
//   open, and closes it; the reader, polling an urgent storm (1 ms
//   doubling up to collector.wakeup_coalesce), reopens it when a poll
//   finds no urgent record. So a lone exec wakes the reader at once and
//   an exec storm costs a poll per period.
// - idle_gate: any record forces a wakeup while it is open, and closes
//   it; it is open only while the reader waits with nothing to read, so an
//   idle host costs the reader no wakeup and no timer, and other records
//   are polled every wakeup_coalesce while they come.
// Both live in .data, mmapped: user space reopens them with a store, no
// system call. A CPU takes an open gate with an atomic exchange, so one
// wakeup is sent per opening.
// The reader waits for a wakeup without a timeout only after it opened
// both gates, drained, and found the ring empty (design 029); that is
// sound only if a record reserved after the reader looked sees the gate
// open: the reader orders its gate store before its look at the ring with
// a full barrier, and submit_flags orders the record's reservation before
// its final look at the gates with another.
volatile const __u32 wake_gated = 0;
volatile __u64 wake_gate = 1;
volatile __u64 idle_gate = 1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); // resized by the loader
} events SEC(".maps");

// gate_take closes an open gate; true on the one CPU that closed it.
static __always_inline bool gate_take(volatile __u64 *gate)
{
	return *gate && __sync_lock_test_and_set(gate, 0);
}

// gate_pass: whether a record forces a wakeup through the gates.
static __always_inline bool gate_pass(bool urgent)
{
	if (urgent && gate_take(&wake_gate)) {
		idle_gate = 0; // the reader polls while urgent records come
		return true;
	}
	return gate_take(&idle_gate);
}

// submit_flags: see wake_types. Waking records force the wakeup: with
// flags 0 the kernel notifies only when the reader has consumed everything
// before this record, which is not the case after NO_WAKEUP records.
static __always_inline __u64 submit_flags(__u32 type)
{
	if (wake_gated) {
		// An urgent record wakes the reader unless an urgent storm is
		// being polled; any record wakes an idle reader.
		bool urgent = wake_types & (1u << type);
		if (gate_pass(urgent))
			return BPF_RB_FORCE_WAKEUP;
		// Both read closed: look again after a full barrier (an atomic
		// exchange on the stack) that orders this record's reservation
		// before the look. Only this path pays it; an open gate is taken
		// with an exchange anyway.
		volatile __u64 fence = 0;
		__sync_lock_test_and_set(&fence, 1);
		if (gate_pass(urgent))
			return BPF_RB_FORCE_WAKEUP;
	} else if (wake_types & (1u << type)) {
		return BPF_RB_FORCE_WAKEUP;
	}
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > wake_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); // cgroup id
	__type(value, struct syscall_counts);
} syscall_counts SEC(".maps");

// The fast path: a per-CPU array slot chosen by a hash of the cgroup id
// (inlined lookup, no hashing helper). A slot belongs to the first cgroup
// that used it on that CPU; a cgroup that finds its slot taken falls back
// to syscall_counts. User space sums both and frees slots of gone cgroups.
#define COUNT_SLOTS 256
struct count_slot {
	__u64 cgroup_id; // 0: free
	__u32 n[SYSCALL_MAX];
	__u64 seen[ORIGIN_CLASSES][SYSCALL_MAX / 64];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNT_SLOTS);
	__type(key, __u32);
	__type(value, struct count_slot);
} count_slots SEC(".maps");

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

#define SENSITIVE_PATH_LEN 64

// Paths whose read-only opens are reported (exact, NUL-padded): each path
// twice, absolute as passed ("/etc/shadow") and leaf first as walk_path
// writes it ("shadow\0etc\0"), for opens of relative paths.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, char[SENSITIVE_PATH_LEN]);
	__type(value, __u8);
} sensitive_files SEC(".maps");

// Sensitive files by identity: the (dev, ino) of each sensitive file as
// user space found it inside each container's root (through
// /proc/<init>/root, symlinks resolved in that root). An open whose file is
// here is sensitive whatever name it was opened by (hardlink, symlink,
// "..", /proc/self/root/...).
struct inode_key {
	__u64 ino;
	__u32 dev; // kernel encoding, as super_block.s_dev
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct inode_key);
	__type(value, __u8);
} sensitive_inodes SEC(".maps");

// Leaf names (values are NAME_* bits): an opened file whose name is here
// is sensitive when NAME_PATH: its walked path is one of sensitive_files
// (a file created after the container was announced, opened by any
// name); NAME_ENVIRON: it is procfs "environ" of another process;
// NAME_SSH: its parent directory is ".ssh" (any user's keys).
#define NAME_PATH 1
#define NAME_ENVIRON 2
#define NAME_SSH 4
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, char[SENSITIVE_PATH_LEN]);
	__type(value, __u8);
} sensitive_names SEC(".maps");

struct rate_bucket {
	__u64 credit_ns; // nanoseconds of credit, at most rate_cap_ns
	__u64 last_ns;
	__u64 dropped; // records refused, ever (user space reports deltas)
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); // cgroup id
	__type(value, struct rate_bucket);
} buckets SEC(".maps");

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

static __always_inline void fill_hdr(struct record_hdr *h, __u8 type, struct task_struct *task, __u64 cgid,
				     struct task_origin org)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	h->type = type;
	h->flags = 0;
	h->origin = org.origin;
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
	h->session_tgid = org.session_tgid;
	h->_pad2 = 0;
}

// Lineage (docs/design/007-lineage.md). Each task's origin lives in task
// local storage: created when a task forks from one that has it
// (inherited), or when a task without it is first seen in a container
// cgroup (it came in from outside: the runtime); freed with the task.
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_origin);
} origins SEC(".maps");

// programs: container cgroups whose program has started (its first exec
// inside the container's mount namespace); later such execs are exec
// sessions. User space deletes the entries of gone cgroups.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // cgroup id
	__type(value, __u8);
} programs SEC(".maps");

// lineage_ready: user space sets it once it has seeded the tasks that ran
// before the programs were loaded; until then a task without an origin is
// not taken for the runtime's.
volatile __u32 lineage_ready SEC(".data") = 0;

// unstamped_origin decides the origin of a task in container cgroup cgid
// that has none: one that was never stamped at fork. Whether it entered
// the cgroup from outside is read from its lineage, never its name: a
// task whose parent lives in another cgroup was put there by someone
// outside (the runtime migrating its init, `runc exec`, nsenter, a
// CLONE_INTO_CGROUP clone) and is the runtime's until it execs; a task
// whose parent lives in the same cgroup was born inside, before its
// parent could be stamped (a process already running when the collector
// started, forked while seeding), and takes its parent's origin, or
// its thread group leader's, or else the container's.
static __always_inline struct task_origin unstamped_origin(struct task_struct *task, __u64 cgid)
{
	struct task_origin n = {.origin = ORIGIN_RUNTIME};
	// Direct (BTF) loads, not BPF_CORE_READ: bpf_task_storage_get takes
	// only trusted task pointers.
	struct task_struct *leader = task->group_leader;
	if (leader && leader != task) {
		struct task_origin *o = bpf_task_storage_get(&origins, leader, 0, 0);
		if (o)
			return *o;
	}
	struct task_struct *parent = leader ? leader->real_parent : task->real_parent;
	if (!parent || BPF_CORE_READ(parent, cgroups, dfl_cgrp, kn, id) != cgid)
		return n;
	struct task_origin *o = bpf_task_storage_get(&origins, parent, 0, 0);
	if (o)
		return *o;
	n.origin = ORIGIN_CONTAINER;
	return n;
}

// current_origin returns the current task's origin, deciding and storing
// one (unstamped_origin) for a task in a container cgroup that has none,
// once seeding is done.
static __always_inline struct task_origin current_origin(__u64 cgid, bool lazy)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_origin *o = bpf_task_storage_get(&origins, task, 0, 0);
	if (o)
		return *o;
	struct task_origin n = {};
	if (cgid == host_cgroup_id || !lineage_ready)
		return n;
	n = unstamped_origin(task, cgid);
	if (!bpf_task_storage_get(&origins, task, &n, BPF_LOCAL_STORAGE_GET_F_CREATE))
		count_loss(LOSS_ORIGIN_STORE);
	return n;
}

// bulk_allowed reports whether a bulk record (file, network) may be
// reserved: not while the ring is filled past bulk_ring_limit.
static __always_inline bool bulk_allowed(void)
{
	if (!bulk_ring_limit || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) <= bulk_ring_limit)
		return true;
	count_loss(LOSS_BULK_HEADROOM);
	return false;
}

// allow charges one record to cgid's token bucket and reports whether it
// may be emitted; refusals are counted per container and per CPU.
static __always_inline bool allow(__u64 cgid)
{
	if (!rate_cost_ns)
		return true;
	__u64 now = bpf_ktime_get_ns();
	struct rate_bucket *b = bpf_map_lookup_elem(&buckets, &cgid);
	if (!b) {
		struct rate_bucket nb = {.credit_ns = rate_cap_ns - rate_cost_ns, .last_ns = now};
		bpf_map_update_elem(&buckets, &cgid, &nb, BPF_ANY);
		return true;
	}
	__u64 credit = b->credit_ns + (now - b->last_ns);
	if (credit > rate_cap_ns)
		credit = rate_cap_ns;
	b->last_ns = now;
	if (credit < rate_cost_ns) {
		b->credit_ns = credit;
		__sync_fetch_and_add(&b->dropped, 1);
		count_loss(LOSS_RATE_LIMITED);
		return false;
	}
	b->credit_ns = credit - rate_cost_ns;
	return true;
}
