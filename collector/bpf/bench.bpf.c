// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The floor of any per-syscall hook: an empty tp_btf program on sys_enter,
// used by the overhead benchmark only.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(empty_sys_enter, struct pt_regs *regs, long id)
{
	return 0;
}
