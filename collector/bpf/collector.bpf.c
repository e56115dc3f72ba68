// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// contain collector: programs that load on every kernel with BTF and
// tp_btf or raw tracepoints. Programs that may be refused (fentry, LSM,
// kprobes) live in other objects.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// For bpf2go -type.
const struct exec_event *unused_exec_event __attribute__((unused));
const struct syscall_event *unused_syscall_event __attribute__((unused));

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!wanted(cgid, tgid))
		return 0;

	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_EXEC);
		return 0;
	}
	fill_hdr(&e->hdr, RECORD_EXEC, task, cgid);
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
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

SEC("raw_tracepoint/sched_process_exec")
int exec_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_exec((struct task_struct *)ctx->args[0], (struct linux_binprm *)ctx->args[2]);
}

static __always_inline void emit_syscall(struct pt_regs *regs, __u64 cgid, __u32 nr, __u32 mode)
{
	struct syscall_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_RINGBUF_SYSCALL);
		return;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	fill_hdr(&e->hdr, RECORD_SYSCALL, task, cgid);
	e->nr = nr;
	e->mode = mode;
	if (mode == SYSCALL_MODE_SENSITIVE) {
		// x86-64 syscall convention: di, si, dx, r10, r8, r9.
		e->args[0] = BPF_CORE_READ(regs, di);
		e->args[1] = BPF_CORE_READ(regs, si);
		e->args[2] = BPF_CORE_READ(regs, dx);
		e->args[3] = BPF_CORE_READ(regs, r10);
		e->args[4] = BPF_CORE_READ(regs, r8);
		e->args[5] = BPF_CORE_READ(regs, r9);
	} else {
		__builtin_memset(e->args, 0, sizeof(e->args));
	}
	bpf_ringbuf_submit(e, 0);
}

// handle_sys_enter counts each syscall per (container, nr) in a per-CPU
// value, reports the first use on each CPU (user space keeps the first per
// container) and reports sensitive syscalls every time, with arguments.
static __always_inline int handle_sys_enter(struct pt_regs *regs, long id)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!host_processes && cgid == host_cgroup_id)
		return 0;
	if (filter_self && (__u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	if (id < 0 || id >= SYSCALL_MAX)
		return 0;
	__u32 nr = id;

	struct syscall_counts *c = bpf_map_lookup_elem(&syscall_counts, &cgid);
	if (!c) {
		__u32 zero = 0;
		struct syscall_counts *z = bpf_map_lookup_elem(&zero_counts, &zero);
		if (!z)
			return 0;
		if (bpf_map_update_elem(&syscall_counts, &cgid, z, BPF_NOEXIST) < 0) {
			c = bpf_map_lookup_elem(&syscall_counts, &cgid);
			if (!c) {
				count_loss(LOSS_SYSCALL_MAP_FULL);
				return 0;
			}
		} else {
			c = bpf_map_lookup_elem(&syscall_counts, &cgid);
			if (!c)
				return 0;
		}
	}
	__u32 n = c->n[nr & (SYSCALL_MAX - 1)]++;
	if (sensitive_bits[(nr / 64) & (SYSCALL_MAX / 64 - 1)] & (1ULL << (nr % 64)))
		emit_syscall(regs, cgid, nr, SYSCALL_MODE_SENSITIVE);
	else if (n == 0)
		emit_syscall(regs, cgid, nr, SYSCALL_MODE_FIRST);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter_tp_btf, struct pt_regs *regs, long id)
{
	return handle_sys_enter(regs, id);
}

SEC("raw_tracepoint/sys_enter")
int sys_enter_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_sys_enter((struct pt_regs *)ctx->args[0], (long)ctx->args[1]);
}
