// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// contain collector: programs that load on every kernel with BTF and
// tp_btf or raw tracepoints. Programs that may be refused (fentry, LSM,
// kprobes) live in other objects.
#include "common.h"
#include "syscall_nr.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// For bpf2go -type.
const struct exec_event *unused_exec_event __attribute__((unused));
const struct syscall_event *unused_syscall_event __attribute__((unused));
const struct net_event *unused_net_event __attribute__((unused));
const struct file_event *unused_file_event __attribute__((unused));
const struct lifecycle_event *unused_lifecycle_event __attribute__((unused));
const struct count_slot *unused_count_slot __attribute__((unused));
const struct seq_event *unused_seq_event __attribute__((unused));
const struct seq_cgroup *unused_seq_cgroup __attribute__((unused));
const struct inode_key *unused_inode_key __attribute__((unused));

const struct task_origin *unused_task_origin __attribute__((unused));

// Sequence mode (collector.sequence_select). seq_active is 1 while
// seq_cgroups holds at least one container: user space writes it through
// the mmapped .data, and it is the only cost sequence mode adds to
// every other container's syscalls (one load and a branch). Selected
// containers' syscalls go to their own ring buffer, written without a
// wakeup (the reader polls it every poll_interval), so a selected
// container's flood can only lose its own sequence records. No token
// bucket: a sequence with holes would be worse than a counted loss.
volatile __u32 seq_active SEC(".data") = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64); // cgroup id
	__type(value, struct seq_cgroup);
} seq_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); // resized by the loader (collector.sequence_ring_bytes)
} seq_events SEC(".maps");

#define PATH_DEPTH 32
#define NAME_READ 128 // bytes of one path component read at a time

// A path being walked by walk_step, one component per bpf_loop iteration
// (a plain loop makes the verifier explore every branch combination).
struct walk {
	__u64 dentry, vfsmnt; // kernel pointers
	__u64 root_d, root_m; // stop here: the task's root
	__u32 off;
	__u32 slot; // which half of path_scratch
	__u8 cut;
};

struct path_buf {
	char b[2][PATH_MAX_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_buf);
} path_scratch SEC(".maps");

// walk_step appends one component of w's path (leaf first, each
// NUL-terminated) to its scratch buffer, crossing mount points; it returns
// 1 when the walk is over.
static long walk_step(__u32 i, void *ctx)
{
	struct walk *w = ctx;
	struct dentry *dentry = (struct dentry *)w->dentry;
	struct vfsmount *vfsmnt = (struct vfsmount *)w->vfsmnt;
	if (!dentry || !vfsmnt || (w->dentry == w->root_d && w->vfsmnt == w->root_m))
		return 1;
	struct mount *mnt = (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt)
			return 1; // the namespace's root
		w->dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		w->vfsmnt = (__u64)((void *)parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(dentry, d_parent);
	if (!up || up == dentry)
		return 1;
	__u32 zero = 0;
	struct path_buf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!pb)
		return 1;
	__u32 off = w->off;
	if (off > PATH_MAX_LEN - NAME_READ) {
		w->cut = 1;
		return 1;
	}
	char *buf = w->slot ? pb->b[1] : pb->b[0];
	long n = bpf_probe_read_kernel_str(buf + off, NAME_READ, BPF_CORE_READ(dentry, d_name.name));
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->dentry = (__u64)up;
	return 0;
}

// walk_path resolves (dentry, mnt) up to the task's root into slot of
// path_scratch and returns the bytes written; *cut is set when the path was
// longer than PATH_MAX_LEN or deeper than PATH_DEPTH.
static __always_inline __u32 walk_path(__u32 slot, struct dentry *dentry, struct vfsmount *mnt,
				       struct dentry *root_d, struct vfsmount *root_m, bool *cut)
{
	struct walk w = {.dentry = (__u64)dentry, .vfsmnt = (__u64)mnt, .root_d = (__u64)root_d, .root_m = (__u64)root_m, .slot = slot};
	long n = bpf_loop(PATH_DEPTH, walk_step, &w, 0);
	if (w.cut || n == PATH_DEPTH)
		*cut = true;
	return w.off;
}

// exec_origin applies an exec to task's origin and returns the new one. A
// runtime task that execs outside the host's mount namespace starts the
// container's program (the cgroup's first such exec, or pid 1 of its pid
// namespace) or an exec session (any later one); in the host's mount
// namespace it is the runtime re-executing itself (runc's memfd clone,
// /proc/self/fd/N) and stays the runtime's.
static __always_inline struct task_origin exec_origin(struct task_struct *task, __u64 cgid, __u32 tgid, bool lazy)
{
	struct task_origin org = current_origin(cgid, lazy);
	if (org.origin != ORIGIN_RUNTIME)
		return org;
	if (BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum) == host_mnt_ns)
		return org;
	__u8 one = 1;
	// NOEXIST: of two racing first execs, one is the program (-EEXIST for
	// the other). A full map cannot tell: only pid 1 is then the program.
	long err = bpf_map_update_elem(&programs, &cgid, &one, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST */)
		count_loss(LOSS_PROGRAMS_FULL);
	if (err == 0 || task_ns_pid(task) == 1) {
		org.origin = ORIGIN_CONTAINER;
		org.session_tgid = 0;
	} else {
		org.origin = ORIGIN_EXEC_SESSION;
		org.session_tgid = tgid;
	}
	struct task_origin *o = bpf_task_storage_get(&origins, bpf_get_current_task_btf(), &org, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (o)
		*o = org;
	else
		count_loss(LOSS_ORIGIN_STORE);
	return org;
}

#define TMPFS_MAGIC 0x01021994
#define RAMFS_MAGIC 0x858458f6
#define HUGETLBFS_MAGIC 0x958458f6
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define PROC_SUPER_MAGIC 0x9fa0
#define MNT_READONLY 0x40

// exe_flags_of says what the binary f is (EXE_*):
// - memfd: a tmpfs/hugetlbfs file with no parent (a pseudo dentry, as
//   memfd_create makes) named "memfd:...";
// - deleted: its inode has no link left, or its dentry was unhashed
//   (d_unlinked);
// - writable: an overlayfs file with an upper dentry (created or copied up
//   in the container's writable layer; read from the overlay inode), or a
//   file on a tmpfs/ramfs mount that is not read-only and is not the
//   task's root mount (a rootfs on tmpfs is image content).
static __always_inline __u32 exe_flags_of(struct task_struct *task, struct file *f)
{
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	struct vfsmount *m = BPF_CORE_READ(f, f_path.mnt);
	struct inode *ino = BPF_CORE_READ(d, d_inode);
	if (!d || !ino)
		return 0;
	unsigned long magic = BPF_CORE_READ(ino, i_sb, s_magic);
	bool is_root = BPF_CORE_READ(d, d_parent) == d;
	if (is_root && (magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC)) {
		char name[8] = {};
		bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(d, d_name.name));
		if (name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' && name[4] == 'd' && name[5] == ':')
			return EXE_MEMFD;
	}
	__u32 fl = 0;
	if (BPF_CORE_READ(ino, __i_nlink) == 0 || (!is_root && !BPF_CORE_READ(d, d_hash.pprev)))
		fl |= EXE_DELETED;
	if (magic == OVERLAYFS_SUPER_MAGIC) {
		if (bpf_core_type_exists(struct ovl_inode)) {
			struct ovl_inode *oi = (struct ovl_inode *)((void *)ino - bpf_core_field_offset(struct ovl_inode, vfs_inode));
			if (BPF_CORE_READ(oi, __upperdentry))
				fl |= EXE_WRITABLE;
		}
	} else if ((magic == TMPFS_MAGIC || magic == RAMFS_MAGIC) && !(BPF_CORE_READ(m, mnt_flags) & MNT_READONLY) &&
		   m != BPF_CORE_READ(task, fs, root.mnt)) {
		fl |= EXE_WRITABLE;
	}
	return fl;
}

static __always_inline bool stdio_inet(struct task_struct *task);

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm, bool lazy)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!wanted(cgid, tgid))
		return 0;
	// Exec records are never rate limited: a flood must not hide them.
	struct task_origin org = exec_origin(task, cgid, tgid, lazy);
	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_EXEC);
		return 0;
	}
	fill_hdr(&e->hdr, RECORD_EXEC, task, cgid, org);
	e->argc = BPF_CORE_READ(bprm, argc);

	const char *fn = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), fn);
	if (n < 0)
		n = 0;
	e->filename_len = n;
	if (n == sizeof(e->filename))
		e->hdr.flags |= FLAG_FILENAME_TRUNCATED;

	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	__u64 full = end > start ? end - start : 0;
	__u64 len = full;
	if (len > ARGS_MAX_LEN) {
		len = ARGS_MAX_LEN;
		e->hdr.flags |= FLAG_ARGS_TRUNCATED;
	}
	e->args_full_len = full > 0xffffffff ? 0xffffffff : full;
	if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) < 0) {
		e->hdr.flags |= FLAG_ARGS_FAULT;
		len = 0;
	}
	e->args_len = len;

	struct dentry *root_d = BPF_CORE_READ(task, fs, root.dentry);
	struct vfsmount *root_m = BPF_CORE_READ(task, fs, root.mnt);
	bool cut = false;
	e->exe_len = walk_path(0, BPF_CORE_READ(bprm, file, f_path.dentry), BPF_CORE_READ(bprm, file, f_path.mnt),
			       root_d, root_m, &cut);
	e->cwd_len = walk_path(1, BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt),
			       root_d, root_m, &cut);
	__u32 zero = 0;
	struct path_buf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	if (pb) {
		__builtin_memcpy(e->exe, pb->b[0], PATH_MAX_LEN);
		__builtin_memcpy(e->cwd, pb->b[1], PATH_MAX_LEN);
	} else {
		e->exe_len = e->cwd_len = 0;
	}
	if (cut)
		e->hdr.flags |= FLAG_PATH_TRUNCATED;
	e->exe_flags = exe_flags_of(task, BPF_CORE_READ(bprm, file));
	if (stdio_inet(task))
		e->exe_flags |= EXE_STDIO_INET;
	e->_pad_exe = 0;
	bpf_ringbuf_submit(e, submit_flags(RECORD_EXEC));
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm, false);
}

SEC("raw_tracepoint/sched_process_exec")
int exec_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_exec((struct task_struct *)ctx->args[0], (struct linux_binprm *)ctx->args[2], true);
}

#if defined(__TARGET_ARCH_arm64)
// arm64's pt_regs, relocated against the running kernel (CO-RE; vmlinux.h
// is x86's). At sys_exit x0 holds the result: the first argument is
// orig_x0.
struct pt_regs___c_arm64 {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));

// arm64 syscall arguments: orig_x0, x1-x5.
static __always_inline __u64 arg(struct pt_regs *regs, int i)
{
	struct pt_regs___c_arm64 *r = (void *)regs;
	switch (i) {
	case 0:
		return BPF_CORE_READ(r, orig_x0);
	case 1:
		return BPF_CORE_READ(r, regs[1]);
	case 2:
		return BPF_CORE_READ(r, regs[2]);
	case 3:
		return BPF_CORE_READ(r, regs[3]);
	case 4:
		return BPF_CORE_READ(r, regs[4]);
	default:
		return BPF_CORE_READ(r, regs[5]);
	}
}

// syscall_id is the number of the syscall returning (regs a BTF pointer
// or not).
#define syscall_id(regs) ((long)BPF_CORE_READ((struct pt_regs___c_arm64 *)(regs), syscallno))
#define syscall_id_btf(regs) syscall_id(regs)
#else
// x86-64 syscall arguments: di, si, dx, r10, r8, r9.
static __always_inline __u64 arg(struct pt_regs *regs, int i)
{
	switch (i) {
	case 0:
		return BPF_CORE_READ(regs, di);
	case 1:
		return BPF_CORE_READ(regs, si);
	case 2:
		return BPF_CORE_READ(regs, dx);
	case 3:
		return BPF_CORE_READ(regs, r10);
	case 4:
		return BPF_CORE_READ(regs, r8);
	default:
		return BPF_CORE_READ(regs, r9);
	}
}

#define syscall_id(regs) ((long)BPF_CORE_READ(regs, orig_ax))
#define syscall_id_btf(regs) ((long)(regs)->orig_ax)
#endif

// emit_syscall writes a first-use or sensitive syscall record; never rate
// limited (a flood must not hide them). It returns false when the ring
// buffer refused the record (counted).
static __always_inline bool emit_syscall(struct pt_regs *regs, __u64 cgid, __u32 nr, __u32 mode, long ret,
					 struct task_origin org)
{
	struct syscall_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_SYSCALL);
		return false;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	fill_hdr(&e->hdr, RECORD_SYSCALL, task, cgid, org);
	e->nr = nr;
	e->mode = mode;
	e->ret = ret;
	if (mode == SYSCALL_MODE_SENSITIVE && regs) {
		for (int i = 0; i < 6; i++)
			e->args[i] = arg(regs, i);
	} else {
		__builtin_memset(e->args, 0, sizeof(e->args));
	}
	bpf_ringbuf_submit(e, submit_flags(RECORD_SYSCALL));
	return true;
}

// first_of marks nr as seen for origin in seen and reports whether it was new.
#define FIRST_OF(seen, origin, nr)                                                              \
	({                                                                                      \
		__u64 *w = &(seen)[(origin) & (ORIGIN_CLASSES - 1)][((nr) >> 6) & (SYSCALL_MAX / 64 - 1)]; \
		__u64 bit = 1ULL << ((nr) & 63);                                                \
		bool isnew = !(*w & bit);                                                       \
		if (isnew)                                                                      \
			*w |= bit;                                                              \
		isnew;                                                                          \
	})

// count_syscall increments (cgid, nr) on this CPU and returns 1 when this
// CPU had not seen nr used by a task of origin in cgid yet, 0 when it had,
// -1 when it could not count.
static __always_inline long count_syscall(__u64 cgid, __u32 nr, __u8 origin)
{
	__u32 slot = (cgid * 0x9E3779B97F4A7C15ULL) >> 56; // COUNT_SLOTS = 256
	struct count_slot *s = bpf_map_lookup_elem(&count_slots, &slot);
	if (s) {
		if (s->cgroup_id == 0)
			s->cgroup_id = cgid;
		if (s->cgroup_id == cgid) {
			s->n[nr & (SYSCALL_MAX - 1)]++;
			return FIRST_OF(s->seen, origin, nr);
		}
	}
	struct syscall_counts *c = bpf_map_lookup_elem(&syscall_counts, &cgid);
	if (!c) {
		__u32 zero = 0;
		struct syscall_counts *z = bpf_map_lookup_elem(&zero_counts, &zero);
		if (!z)
			return -1;
		if (bpf_map_update_elem(&syscall_counts, &cgid, z, BPF_NOEXIST) < 0) {
			c = bpf_map_lookup_elem(&syscall_counts, &cgid);
			if (!c) {
				count_loss(LOSS_SYSCALL_MAP_FULL);
				return -1;
			}
		} else {
			c = bpf_map_lookup_elem(&syscall_counts, &cgid);
			if (!c)
				return -1;
		}
	}
	c->n[nr & (SYSCALL_MAX - 1)]++;
	return FIRST_OF(c->seen, origin, nr);
}

// unsee clears the first-use bit count_syscall set on this CPU for (cgid,
// nr, origin): the record reporting it was lost, so the next use reports it
// again (a program runs on one CPU throughout, and the bits are per CPU).
static __always_inline void unsee(__u64 cgid, __u32 nr, __u8 origin)
{
	__u32 slot = (cgid * 0x9E3779B97F4A7C15ULL) >> 56;
	__u64 bit = 1ULL << (nr & 63);
	__u32 o = origin & (ORIGIN_CLASSES - 1), w = (nr >> 6) & (SYSCALL_MAX / 64 - 1);
	struct count_slot *s = bpf_map_lookup_elem(&count_slots, &slot);
	if (s && s->cgroup_id == cgid) {
		s->seen[o][w] &= ~bit;
		return;
	}
	struct syscall_counts *c = bpf_map_lookup_elem(&syscall_counts, &cgid);
	if (c)
		c->seen[o][w] &= ~bit;
}

// emit_first reports a first use, forgetting it when the record is lost.
static __always_inline void emit_first(struct pt_regs *regs, __u64 cgid, __u32 nr, long ret, struct task_origin org)
{
	if (!emit_syscall(regs, cgid, nr, SYSCALL_MODE_FIRST, ret, org))
		unsee(cgid, nr, org.origin);
}

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000

// sock_of returns the socket behind the current task's fd, or NULL.
static __always_inline struct sock *sock_of(struct task_struct *task, long fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned long)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *s = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(s, sk);
}

// stdio_inet reports whether the task's stdin, stdout or stderr is an
// IPv4/IPv6 socket: a program run on a network connection (a reverse
// shell's dup2 of its socket, nc -e, inetd). Read at exec, after the
// close-on-exec descriptors are gone.
static __always_inline bool stdio_inet(struct task_struct *task)
{
	for (long fd = 0; fd < 3; fd++) {
		struct sock *sk = sock_of(task, fd);
		if (!sk)
			continue;
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family == AF_INET || family == AF_INET6)
			return true;
	}
	return false;
}

#define AF_UNIX 1

// unix_path_connect reports whether a connect's address is a unix socket
// named by a path (not an abstract or unnamed one).
static __always_inline bool unix_path_connect(struct pt_regs *regs)
{
	__u8 head[3] = {};
	if (bpf_probe_read_user(head, sizeof(head), (void *)arg(regs, 1)) < 0)
		return false;
	return (head[0] | head[1] << 8) == AF_UNIX && head[2] != 0;
}

// is_dup reports whether nr duplicates a descriptor onto a chosen number.
static __always_inline bool is_dup(__u32 nr)
{
#ifdef NR_dup2
	if (nr == NR_dup2)
		return true;
#endif
	return nr == NR_dup3;
}

// stdio_inet_fd reports whether the current task's fd (0..2) is an
// IPv4/IPv6 socket.
static __always_inline bool stdio_inet_fd(long fd)
{
	struct sock *sk = sock_of((struct task_struct *)bpf_get_current_task_btf(), fd);
	if (!sk)
		return false;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return family == AF_INET || family == AF_INET6;
}

// sock_ends copies a socket's local (and, when remote, its peer) address.
static __always_inline void sock_ends(struct sock *sk, struct net_event *e, bool remote)
{
	e->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		if (remote)
			BPF_CORE_READ_INTO(&e->remote_addr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->local_addr, sk, __sk_common.skc_rcv_saddr);
		if (remote)
			BPF_CORE_READ_INTO((__u32 *)e->remote_addr, sk, __sk_common.skc_daddr);
	}
	if (remote)
		e->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

struct sockaddr_any {
	__u16 family;
	__u16 port; // network order
	__u32 flowinfo_or_v4;
	__u8 v6[16];
	__u32 scope;
};

static __always_inline void handle_net(struct pt_regs *regs, __u64 cgid, __u32 nr, long ret, struct task_origin org)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	long fd = (long)(int)arg(regs, 0);
	__u8 op;
	switch (nr) {
	case NR_connect:
		op = NET_CONNECT;
		break;
	case NR_bind:
		op = NET_BIND;
		break;
	case NR_listen:
		op = NET_LISTEN;
		break;
	default: // accept, accept4: the new socket
		if (ret < 0)
			return;
		op = NET_ACCEPT;
		fd = ret;
	}
	struct sock *sk = sock_of(task, fd);
	struct sockaddr_any sa = {};
	__u16 family;
	if (op == NET_CONNECT || op == NET_BIND) {
		if (bpf_probe_read_user(&sa, sizeof(sa), (void *)arg(regs, 1)) < 0 &&
		    bpf_probe_read_user(&sa, 16, (void *)arg(regs, 1)) < 0)
			return;
		family = sa.family;
	} else {
		if (!sk)
			return;
		family = BPF_CORE_READ(sk, __sk_common.skc_family);
	}
	if (family != AF_INET && family != AF_INET6)
		return;
	if (!allow(cgid) || !bulk_allowed())
		return;
	struct net_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_NET);
		return;
	}
	fill_hdr(&e->hdr, RECORD_NET, task, cgid, org);
	e->op = op;
	e->family = family;
	e->result = ret;
	e->protocol = 0;
	e->local_port = 0;
	e->remote_port = 0;
	e->_pad = 0;
	__builtin_memset(e->local_addr, 0, sizeof(e->local_addr));
	__builtin_memset(e->remote_addr, 0, sizeof(e->remote_addr));
	if (sk)
		e->protocol = BPF_CORE_READ(sk, sk_protocol);
	switch (op) {
	case NET_CONNECT:
		if (sk)
			sock_ends(sk, e, false);
		e->remote_port = bpf_ntohs(sa.port);
		if (family == AF_INET6)
			__builtin_memcpy(e->remote_addr, sa.v6, 16);
		else
			__builtin_memcpy(e->remote_addr, &sa.flowinfo_or_v4, 4);
		break;
	case NET_BIND:
		e->local_port = bpf_ntohs(sa.port);
		if (family == AF_INET6)
			__builtin_memcpy(e->local_addr, sa.v6, 16);
		else
			__builtin_memcpy(e->local_addr, &sa.flowinfo_or_v4, 4);
		break;
	case NET_LISTEN:
		sock_ends(sk, e, false);
		break;
	default:
		sock_ends(sk, e, true);
	}
	bpf_ringbuf_submit(e, submit_flags(RECORD_NET));
}

#define O_ACCMODE 03
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_PATH 010000000
#define WRITE_INTENT (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)
#define AT_FDCWD -100

// file_of is the task's open file fd, or NULL.
static __always_inline struct file *file_of(struct task_struct *task, long fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned long)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

// opened is what the sys_exit of an open learned about the file it opened.
struct opened {
	struct file *f; // NULL: no fd (failed, or not an open)
	__u64 ino;
	__u32 dev;
	__u32 walked; // bytes of path_scratch slot 1 (the walked path)
	__u8 state;   // RESOLVED_*: NONE until walked
	__u8 sensitive;
};

// resolve walks o's file's path (its dentries, crossing mounts, up to the
// task's root) into path_scratch slot 1, once.
static __always_inline void resolve(struct task_struct *task, struct opened *o)
{
	struct file *f = o->f; // a local: BPF_CORE_READ relocates every access in its argument
	if (o->state != RESOLVED_NONE || !f)
		return;
	bool cut = false;
	o->walked = walk_path(1, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
			      BPF_CORE_READ(task, fs, root.dentry), BPF_CORE_READ(task, fs, root.mnt), &cut);
	o->state = cut ? RESOLVED_CUT : RESOLVED_OK;
}

// walked_sensitive reports whether o's walked path is one of
// sensitive_files (leaf-first keys).
static __always_inline bool walked_sensitive(struct opened *o)
{
	__u32 n = o->walked;
	if (o->state != RESOLVED_OK || n == 0 || n >= SENSITIVE_PATH_LEN)
		return false;
	__u32 zero = 0;
	struct path_buf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!pb)
		return false;
	char key[SENSITIVE_PATH_LEN] = {};
	asm volatile("" : "+r"(n)); // keep the mask: the verifier needs it
	bpf_probe_read_kernel(key, n & (SENSITIVE_PATH_LEN - 1), pb->b[1]);
	return bpf_map_lookup_elem(&sensitive_files, key) != NULL;
}

// inspect fills o from the fd an open returned: the file, its identity
// (inode number, superblock dev) and whether it is sensitive: by identity
// (sensitive_inodes), as procfs "environ" of another process, or by its
// walked path when its leaf name is a sensitive file's (a file created
// after the container was announced, opened through any name). Only
// then is the path walked here; the caller walks it for records it emits.
static __always_inline void inspect(struct task_struct *task, long fd, struct opened *o)
{
	struct file *f = file_of(task, fd);
	if (!f)
		return;
	o->f = f;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	struct inode_key k = {};
	k.ino = BPF_CORE_READ(ino, i_ino);
	k.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	o->ino = k.ino;
	o->dev = k.dev;
	if (bpf_map_lookup_elem(&sensitive_inodes, &k)) {
		o->sensitive = 1;
		return;
	}
	char name[SENSITIVE_PATH_LEN] = {};
	if (bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(f, f_path.dentry, d_name.name)) <= 0)
		return;
	__u8 *kindp = bpf_map_lookup_elem(&sensitive_names, name);
	if (!kindp)
		return;
	__u8 kind = *kindp;
	if ((kind & NAME_ENVIRON) && BPF_CORE_READ(ino, i_sb, s_magic) == PROC_SUPER_MAGIC) {
		struct proc_inode *pi = (struct proc_inode *)((void *)ino - bpf_core_field_offset(struct proc_inode, vfs_inode));
		struct pid *p = BPF_CORE_READ(pi, pid);
		if (!p)
			return;
		__u32 owner = BPF_CORE_READ(p, numbers[0].nr);
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		if (owner != (__u32)(pid_tgid >> 32) && owner != (__u32)pid_tgid)
			o->sensitive = 1;
		return;
	}
	if (kind & NAME_SSH) {
		// A key or config in any .ssh directory (every user's).
		char parent[8] = {};
		bpf_probe_read_kernel_str(parent, sizeof(parent), BPF_CORE_READ(f, f_path.dentry, d_parent, d_name.name));
		if (parent[0] == '.' && parent[1] == 's' && parent[2] == 's' && parent[3] == 'h' && parent[4] == 0) {
			o->sensitive = 1;
			return;
		}
	}
	if (!(kind & NAME_PATH))
		return;
	resolve(task, o);
	o->sensitive = walked_sensitive(o);
}

// base_dir walks the directory relative paths of fd start from (the cwd
// for AT_FDCWD) into e->dir, leaf first; false when it cannot be read or
// was cut.
static __always_inline bool base_dir(struct task_struct *task, int fd, struct file_event *e)
{
	struct dentry *d;
	struct vfsmount *m;
	if (fd == AT_FDCWD) {
		d = BPF_CORE_READ(task, fs, pwd.dentry);
		m = BPF_CORE_READ(task, fs, pwd.mnt);
	} else {
		struct file *f = file_of(task, fd);
		if (!f)
			return false;
		d = BPF_CORE_READ(f, f_path.dentry);
		m = BPF_CORE_READ(f, f_path.mnt);
	}
	bool cut = false;
	__u32 n = walk_path(0, d, m, BPF_CORE_READ(task, fs, root.dentry), BPF_CORE_READ(task, fs, root.mnt), &cut);
	__u32 zero = 0;
	struct path_buf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!pb || cut)
		return false;
	__builtin_memcpy(e->dir, pb->b[0], PATH_MAX_LEN);
	e->dir_len = n;
	return true;
}

static __always_inline void handle_file(struct pt_regs *regs, __u64 cgid, __u32 nr, long ret, struct task_origin org)
{
	const char *path = NULL, *new_path = NULL;
	__u32 flags = 0, mode = 0, uid = 0, gid = 0;
	int dfd = AT_FDCWD, ndfd = AT_FDCWD;
	__u8 op = 0;
	bool literal = false; // path is kept as passed (a symlink's target)
	long fd_file = -1;    // ftruncate: the file is the fd's
	switch (nr) {
#ifdef NR_open
	case NR_open: // open(path, flags, mode)
		path = (const char *)arg(regs, 0);
		flags = arg(regs, 1);
		mode = arg(regs, 2);
		break;
#endif
	case NR_openat: // openat(dfd, path, flags, mode)
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		flags = arg(regs, 2);
		mode = arg(regs, 3);
		break;
	case NR_openat2: { // openat2(dfd, path, how, size)
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		__u64 how[2] = {};
		bpf_probe_read_user(how, sizeof(how), (void *)arg(regs, 2));
		flags = how[0];
		mode = how[1];
		break;
	}
#ifdef NR_creat
	case NR_creat: // creat(path, mode)
		path = (const char *)arg(regs, 0);
		flags = O_CREAT | O_WRONLY | O_TRUNC;
		mode = arg(regs, 1);
		break;
#endif
#ifdef NR_mknod
	case NR_mknod: // mknod(path, mode, dev)
		op = FILE_MKNOD;
		path = (const char *)arg(regs, 0);
		mode = arg(regs, 1);
		break;
#endif
	case NR_mknodat: // mknodat(dfd, path, mode, dev)
		op = FILE_MKNOD;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		mode = arg(regs, 2);
		break;
#ifdef NR_link
	case NR_link: // link(old, new)
		op = FILE_LINK;
		path = (const char *)arg(regs, 0);
		new_path = (const char *)arg(regs, 1);
		break;
#endif
	case NR_linkat: // linkat(odfd, old, ndfd, new, flags)
		op = FILE_LINK;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		ndfd = arg(regs, 2);
		new_path = (const char *)arg(regs, 3);
		flags = arg(regs, 4);
		break;
#ifdef NR_symlink
	case NR_symlink: // symlink(target, link)
		op = FILE_SYMLINK;
		literal = true;
		path = (const char *)arg(regs, 0);
		new_path = (const char *)arg(regs, 1);
		break;
#endif
	case NR_symlinkat: // symlinkat(target, ndfd, link)
		op = FILE_SYMLINK;
		literal = true;
		path = (const char *)arg(regs, 0);
		ndfd = arg(regs, 1);
		new_path = (const char *)arg(regs, 2);
		break;
	case NR_truncate: // truncate(path, length)
		op = FILE_TRUNCATE;
		path = (const char *)arg(regs, 0);
		break;
	case NR_ftruncate: // ftruncate(fd, length): the fd's file (inspected below)
		op = FILE_TRUNCATE;
		fd_file = arg(regs, 0);
		break;
#ifdef NR_mkdir
	case NR_mkdir: // mkdir(path, mode)
		op = FILE_MKDIR;
		path = (const char *)arg(regs, 0);
		mode = arg(regs, 1);
		break;
#endif
	case NR_mkdirat: // mkdirat(dfd, path, mode)
		op = FILE_MKDIR;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		mode = arg(regs, 2);
		break;
#ifdef NR_rename
	case NR_rename: // rename(old, new)
		op = FILE_RENAME;
		path = (const char *)arg(regs, 0);
		new_path = (const char *)arg(regs, 1);
		break;
#endif
	case NR_renameat: // renameat(odfd, old, ndfd, new)
	case NR_renameat2: // renameat2(odfd, old, ndfd, new, flags)
		op = FILE_RENAME;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		ndfd = arg(regs, 2);
		new_path = (const char *)arg(regs, 3);
		if (nr == NR_renameat2)
			flags = arg(regs, 4);
		break;
#ifdef NR_unlink
	case NR_unlink: // unlink(path)
		op = FILE_UNLINK;
		path = (const char *)arg(regs, 0);
		break;
#endif
	case NR_unlinkat: // unlinkat(dfd, path, flags)
		op = FILE_UNLINK;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		flags = arg(regs, 2);
		break;
#ifdef NR_chmod
	case NR_chmod: // chmod(path, mode)
		op = FILE_CHMOD;
		path = (const char *)arg(regs, 0);
		mode = arg(regs, 1);
		break;
#endif
	case NR_fchmodat: // fchmodat(dfd, path, mode)
	case NR_fchmodat2: // fchmodat2(dfd, path, mode, flags)
		op = FILE_CHMOD;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		mode = arg(regs, 2);
		break;
#ifdef NR_chown
	case NR_chown: // chown(path, uid, gid)
	case NR_lchown:
		op = FILE_CHOWN;
		path = (const char *)arg(regs, 0);
		uid = arg(regs, 1);
		gid = arg(regs, 2);
		break;
#endif
	case NR_connect: // connect(fd, sockaddr_un, len): a unix socket by path
		op = FILE_CONNECT;
		path = (const char *)arg(regs, 1) + 2; // sun_path
		break;
	case NR_fchownat: // fchownat(dfd, path, uid, gid, flags)
		op = FILE_CHOWN;
		dfd = arg(regs, 0);
		path = (const char *)arg(regs, 1);
		uid = arg(regs, 2);
		gid = arg(regs, 3);
		flags = arg(regs, 4);
		break;
	default:
		return;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct opened o = {};
	if (!op) {
		// An open: what did it open?
		// O_PATH opens neither read nor write the file: no detail.
		if (open_detail && ret >= 0 && !(flags & O_PATH))
			inspect(task, ret, &o);
		if (flags & WRITE_INTENT) {
			// O_TRUNC without O_CREAT overwrites an existing file; with
			// O_CREAT the file may be new: OP_CREATE, flags say O_TRUNC.
			if (flags & O_CREAT)
				op = FILE_CREATE;
			else if (flags & O_TRUNC)
				op = FILE_TRUNCATE;
			else
				op = FILE_OPEN_WRITE;
		} else {
			// A read: reported only when sensitive, or when the path
			// as passed is one of sensitive_files (a failed open).
			if (!o.sensitive) {
				char key[SENSITIVE_PATH_LEN] = {};
				long n = bpf_probe_read_user_str(key, sizeof(key), path);
				if (n <= 0 || n == sizeof(key) || key[0] != '/' || !bpf_map_lookup_elem(&sensitive_files, key))
					return;
			}
			op = FILE_OPEN_READ;
		}
	}
	if (fd_file >= 0 && open_detail)
		inspect(task, (int)fd_file, &o);
	if (!allow(cgid) || !bulk_allowed())
		return;
	if (open_detail)
		resolve(task, &o); // after allow: a refused record costs no walk
	struct file_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_FILE);
		return;
	}
	fill_hdr(&e->hdr, RECORD_FILE, task, cgid, org);
	e->op = op;
	e->_pad = 0;
	e->uid = uid;
	e->gid = gid;
	e->flags = flags;
	e->mode = mode;
	e->result = ret;
	long n = 0;
	if (path)
		n = bpf_probe_read_user_str(e->path, sizeof(e->path), path);
	else
		e->path[0] = 0;
	e->path_len = n > 0 ? n : 0;
	if (n == sizeof(e->path))
		e->hdr.flags |= FLAG_PATH_TRUNCATED;
	n = 0;
	if (new_path)
		n = bpf_probe_read_user_str(e->new_path, sizeof(e->new_path), new_path);
	e->new_path_len = n > 0 ? n : 0;
	if (n == sizeof(e->new_path))
		e->hdr.flags |= FLAG_PATH_TRUNCATED;

	// Relative paths: the base is the cwd (AT_FDCWD) or the dirfd's path,
	// walked up to the task's root. new_path shares it when its dirfd is
	// the same; otherwise its own base is walked only if path needed none.
	e->dir_state = e->new_dir_state = DIR_ABSOLUTE;
	e->dir_len = 0;
	bool rel = !literal && e->path_len > 0 && e->path[0] != '/';
	bool nrel = e->new_path_len > 0 && e->new_path[0] != '/';
	int base = dfd;
	if (rel || nrel) {
		if (!rel)
			base = ndfd;
		bool ok = base_dir(task, base, e);
		if (rel)
			e->dir_state = ok ? DIR_RESOLVED : DIR_UNRESOLVED;
		if (nrel)
			e->new_dir_state = ok && (!rel || ndfd == dfd) ? DIR_RESOLVED : DIR_UNRESOLVED;
	}

	// The opened file: identity and the path the kernel opened.
	e->ino = o.ino;
	e->dev = o.dev;
	e->sensitive = o.sensitive;
	e->resolved_state = o.state;
	e->resolved_len = 0;
	if (o.state == RESOLVED_OK) {
		__u32 zero = 0;
		struct path_buf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
		if (pb) {
			__builtin_memcpy(e->resolved, pb->b[1], PATH_MAX_LEN);
			e->resolved_len = o.walked;
		} else {
			e->resolved_state = RESOLVED_NONE;
		}
	} else if (o.state == RESOLVED_CUT) {
		e->hdr.flags |= FLAG_PATH_TRUNCATED;
	}
	bpf_ringbuf_submit(e, submit_flags(RECORD_FILE));
}

// emit_seq writes one sequence record when cgid is selected.
static __always_inline void emit_seq(__u64 cgid, __u32 nr, struct task_origin org)
{
	struct seq_cgroup *s = bpf_map_lookup_elem(&seq_cgroups, &cgid);
	if (!s)
		return;
	struct seq_event *e = bpf_ringbuf_reserve(&seq_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&s->lost, 1); // reported per container
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->type = RECORD_SEQ;
	e->origin = org.origin;
	e->nr = nr;
	e->tid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->session_tgid = org.session_tgid;
	e->cgroup_id = cgid;
	e->ktime_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

#define AF_PACKET 17
#define SOCK_RAW 3
#define SOCK_TYPE_MASK 0xf

// packet_or_raw reports whether socket(family, type, protocol) asked for a
// packet socket or a raw one (the type's low bits; SOCK_NONBLOCK and
// SOCK_CLOEXEC above them).
static __always_inline bool packet_or_raw(struct pt_regs *regs)
{
	return arg(regs, 0) == AF_PACKET || (arg(regs, 1) & SOCK_TYPE_MASK) == SOCK_RAW;
}

// handle_sys_exit runs on every syscall's return. It counts each syscall
// per (container, nr) in a per-CPU value, reports the first use per origin
// on each CPU (user space keeps the first per container and origin), reports sensitive syscalls
// every time with arguments and result, and turns network and file
// syscalls into records with their result; for containers in sequence
// mode it then writes a sequence record (emit_seq).
static __always_inline int handle_sys_exit(struct pt_regs *regs, long id, long ret, bool lazy)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!host_processes && cgid == host_cgroup_id)
		return 0;
	if (filter_self || only_tgid) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (filter_self && tgid == self_tgid)
			return 0;
		if (only_tgid && tgid != only_tgid)
			return 0;
	}
	if (id < 0 || id >= SYSCALL_MAX)
		return 0;
	__u32 nr = id;
	struct task_origin org = current_origin(cgid, lazy);
	long first = 0;
	if (track_counts)
		first = count_syscall(cgid, nr, org.origin);
	__u8 class = syscall_class[nr & (SYSCALL_MAX - 1)];
	if (class & CLASS_SENSITIVE)
		emit_syscall(regs, cgid, nr, SYSCALL_MODE_SENSITIVE, ret, org);
	else if (first == 1)
		emit_first(regs, cgid, nr, ret, org);
	if ((class & (CLASS_SOCKET | CLASS_SENSITIVE)) == CLASS_SOCKET && packet_or_raw(regs))
		emit_syscall(regs, cgid, nr, SYSCALL_MODE_SENSITIVE, ret, org);
	// A socket duplicated onto stdin, stdout or stderr (a reverse shell's
	// dup2, whatever then runs): reported with its arguments, as a
	// sensitive syscall is, whether or not dup2/dup3 are sensitive.
	if (!(class & CLASS_SENSITIVE) && ret >= 0 && ret <= 2 && is_dup(nr) && stdio_inet_fd(ret))
		emit_syscall(regs, cgid, nr, SYSCALL_MODE_SENSITIVE, ret, org);
	// A task renaming itself (prctl PR_SET_NAME): a multi-call binary
	// (busybox) runs an applet without exec so, in a shell's child or in
	// the shell itself. Reported every time, with its arguments (the
	// record's comm is the new name), so that the analyzer names the
	// applet at each run, not only when a first use happens to fall in it.
	// Unlike an exec, a rename costs a task next to nothing: renames are
	// charged to the container's flood control (a flood is counted as
	// its loss, not taken from other containers' records).
	if (nr == NR_prctl && ret == 0 && !(class & CLASS_SENSITIVE) && arg(regs, 0) == PR_SET_NAME && allow(cgid))
		emit_syscall(regs, cgid, nr, SYSCALL_MODE_SENSITIVE, ret, org);
	// A connect to a unix socket by path is a file record (the path is
	// what matters: a container runtime's socket).
	bool ux = (class & CLASS_NET) && nr == NR_connect && unix_path_connect(regs);
	if ((class & CLASS_NET) && !ux)
		handle_net(regs, cgid, nr, ret, org);
	else if ((class & CLASS_FILE) || ux)
		handle_file(regs, cgid, nr, ret, org);
	if (seq_active)
		emit_seq(cgid, nr, org);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_tp_btf, struct pt_regs *regs, long ret)
{
	return handle_sys_exit(regs, syscall_id_btf(regs), ret, false);
}

SEC("raw_tracepoint/sys_exit")
int sys_exit_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	return handle_sys_exit(regs, syscall_id(regs), (long)ctx->args[1], true);
}

// test_sys_exit runs handle_sys_exit with the syscall number given in the
// context (BPF_PROG_TEST_RUN cannot pass a pt_regs); never attached.
SEC("raw_tracepoint/sys_exit")
int sys_exit_test(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_sys_exit((struct pt_regs *)ctx->args[0], (long)ctx->args[1], 0, true);
}

static long spin_step(__u64 i, void *ctx)
{
	return 0;
}

// slow_record_test writes a sensitive syscall record (number in args[1])
// that takes args[0] bpf_loop iterations between its reservation and its
// commit: the wakeup protocol's tests widen that window with it (design
// 029); never attached.
SEC("raw_tracepoint/sys_exit")
int slow_record_test(struct bpf_raw_tracepoint_args *ctx)
{
	struct syscall_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct task_origin org = {};
	fill_hdr(&e->hdr, RECORD_SYSCALL, task, bpf_get_current_cgroup_id(), org);
	e->nr = ctx->args[1];
	e->mode = SYSCALL_MODE_SENSITIVE;
	e->ret = 0;
	__builtin_memset(e->args, 0, sizeof(e->args));
	bpf_loop(ctx->args[0] & 0xfffff, spin_step, NULL, 0);
	bpf_ringbuf_submit(e, submit_flags(RECORD_SYSCALL));
	return 0;
}

// exit and exit_group never return, so sys_exit never sees them: they are
// counted when the task exits (exit_group when the whole group exits
// without a fatal signal, exit otherwise).
#define SIGNAL_GROUP_EXIT 0x00000004

// emit_proc writes a fork or exit record; never rate limited.
static __always_inline void emit_proc(struct task_struct *task, __u64 cgid, __u32 op, __u32 child, __s32 code,
				      struct task_origin org)
{
	struct lifecycle_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_PROC);
		return;
	}
	fill_hdr(&e->hdr, RECORD_PROC, task, cgid, org);
	e->op = op;
	e->child_tgid = child;
	e->exit_code = code;
	e->_pad = 0;
	bpf_ringbuf_submit(e, submit_flags(RECORD_PROC));
}

// handle_fork runs for every new task, thread or process, in the parent's
// context: the child inherits the parent's origin (taking one for a parent
// in a container cgroup without any: the runtime's), then a new process of
// a container is reported. child is NULL where its storage cannot be
// written (raw tracepoints: the child inherits lazily, current_origin).
static __always_inline int handle_fork(struct task_struct *child_btf, struct task_struct *child)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	struct task_origin org = current_origin(cgid, !child_btf);
	if (child_btf && org.origin != ORIGIN_UNSPECIFIED &&
	    !bpf_task_storage_get(&origins, child_btf, &org, BPF_LOCAL_STORAGE_GET_F_CREATE))
		count_loss(LOSS_ORIGIN_STORE);
	if (!track_procs)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!wanted(cgid, tgid))
		return 0;
	if (only_tgid && tgid != only_tgid)
		return 0;
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (BPF_CORE_READ(child, pid) != ctgid)
		return 0; // a thread
	emit_proc((struct task_struct *)bpf_get_current_task_btf(), cgid, PROC_FORK, ctgid, 0, org);
	return 0;
}

static __always_inline int handle_exit(struct task_struct *task, bool group_dead, bool lazy)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!wanted(cgid, tgid))
		return 0;
	if (only_tgid && tgid != only_tgid)
		return 0;
	struct task_origin org = current_origin(cgid, lazy);
	int code = BPF_CORE_READ(task, exit_code);
	if (track_counts && (code & 0x7f) == 0) {
		__u32 nr = (BPF_CORE_READ(task, signal, flags) & SIGNAL_GROUP_EXIT) ? NR_exit_group : NR_exit;
		if (count_syscall(cgid, nr, org.origin) == 1)
			emit_first(NULL, cgid, nr, 0, org);
	}
	if (track_procs && group_dead)
		emit_proc(task, cgid, PROC_EXIT, 0, code, org);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fork_tp_btf, struct task_struct *parent, struct task_struct *child)
{
	return handle_fork(child, child);
}

SEC("raw_tracepoint/sched_process_fork")
int fork_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_fork(NULL, (struct task_struct *)ctx->args[1]);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_tp_btf, struct task_struct *p, bool group_dead)
{
	return handle_exit(p, group_dead, false);
}

SEC("raw_tracepoint/sched_process_exit")
int exit_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_exit((struct task_struct *)ctx->args[0], (bool)ctx->args[1], true);
}
