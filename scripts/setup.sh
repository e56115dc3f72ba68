#!/usr/bin/env bash
# Installs what contain's tests and demo need on a fresh Debian machine with
# Go: runc, crun, busybox-static, ClickHouse, ZooKeeper, docker.io (a private dockerd and
# containerd for tests), chromium (the console's browser test), protoc, clang/bpftool (only to regenerate eBPF
# objects). Idempotent and quiet; run as root.
set -euo pipefail
need=()
command -v runc >/dev/null || need+=(runc)
# crun: a tested runtime on cgroup2-only hosts (the TestUnified* tests run it
# in a private mount namespace with cgroup2 alone on /sys/fs/cgroup).
command -v crun >/dev/null || need+=(crun)
[ -x /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q dynamically || need+=(busybox-static)
command -v clickhouse-server >/dev/null || need+=(clickhouse-server)
command -v clickhouse-client >/dev/null || need+=(clickhouse-client)
# ZooKeeper (with a Java runtime): the replicated ClickHouse cluster test
# (store TestClusterReplicated, docs/design/023-clickhouse-cluster.md).
[ -e /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v ip >/dev/null || need+=(iproute2)
# Docker Engine + containerd (+ ctr): run only privately by deploy/engines.
command -v dockerd >/dev/null && command -v ctr >/dev/null || need+=(docker.io)
# podman (root, cgroupfs manager): the podman identity tests (internal/testenv/podman.go).
command -v podman >/dev/null || need+=(podman)
command -v file >/dev/null || need+=(file)
# Headless Chromium: the web console's browser test (TestConsoleBrowser).
command -v chromium >/dev/null || need+=(chromium)
if [ "${CONTAIN_SETUP_BPF:-0}" = 1 ]; then
  command -v clang >/dev/null || need+=(clang llvm)
  command -v bpftool >/dev/null || need+=(bpftool)
  [ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  # arm64 syscall numbers for internal/syscalls/gen.sh.
  [ -e /usr/aarch64-linux-gnu/include/asm/unistd.h ] || need+=(linux-libc-dev-arm64-cross)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# tracefs for classic tracepoints (nothing mounts it on these machines).
if [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
echo "setup: ok"
