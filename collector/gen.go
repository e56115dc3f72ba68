package collector

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type exec_event -type record_hdr collector bpf/collector.bpf.c -- -I./bpf
