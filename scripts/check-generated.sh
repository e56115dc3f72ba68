#!/usr/bin/env bash
# Fails when committed generated code is stale: protobuf always (protoc from
# apt); syscall tables and eBPF objects (amd64 and arm64) when clang is
# present (CONTAIN_SETUP_BPF=1 installs it and the arm64 kernel headers);
# docs/config.md from the config structs.
set -euo pipefail
cd "$(dirname "$0")/.."
go generate ./schemas/...
if command -v clang >/dev/null && command -v bpftool >/dev/null; then
  # Syscall tables (amd64, arm64) and collector/bpf/syscall_nr.h from the
  # kernel headers, then the eBPF objects for both architectures.
  go generate ./internal/syscalls/...
  go generate ./collector/...
fi
# docs/config.md from the typed config structs.
CONTAIN_UPDATE_DOCS=1 go test -count=1 -run '^TestConfigDoc$' ./cmd/contain >/dev/null
if ! git diff --quiet -- schemas collector internal/syscalls docs/config.md || [ -n "$(git status --porcelain -- schemas collector internal/syscalls docs/config.md)" ]; then
  echo "generated code differs from what is committed; run go generate (docs/config.md: CONTAIN_UPDATE_DOCS=1 go test -run TestConfigDoc ./cmd/contain) and commit:"
  git status --short -- schemas collector internal/syscalls docs/config.md
  exit 1
fi
echo "generated code is current"
