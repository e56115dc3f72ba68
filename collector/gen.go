package collector

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type exec_event -type record_hdr -type syscall_event -type net_event -type file_event -type lifecycle_event -type count_slot -type seq_event -type seq_cgroup -type task_origin -type inode_key collector bpf/collector.bpf.c -- -I./bpf
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 bench bpf/bench.bpf.c -- -I./bpf
