// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// contain collector: programs that load on every kernel with BTF and
// tp_btf or raw tracepoints. Programs that may be refused (fentry, LSM,
// kprobes) live in other objects.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// For bpf2go -type.
const struct exec_event *unused_exec_event __attribute__((unused));

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
