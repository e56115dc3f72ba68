#!/usr/bin/env bash
# Fails when committed generated code is stale: protobuf always (protoc from
# apt); eBPF objects when clang is present (CONTAIN_SETUP_BPF=1 installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
go generate ./schemas/...
if command -v clang >/dev/null && command -v bpftool >/dev/null; then
  go generate ./collector/...
fi
if ! git diff --quiet -- schemas collector; then
  echo "generated code differs from what is committed; run go generate and commit:"
  git diff --stat -- schemas collector
  exit 1
fi
echo "generated code is current"
