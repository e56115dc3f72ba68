#!/usr/bin/env bash
# Fails when committed generated code is stale: protobuf always (protoc from
# apt); docs/config.md; eBPF objects when clang is present (CONTAIN_SETUP_BPF=1 installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
go generate ./schemas/...
if command -v clang >/dev/null && command -v bpftool >/dev/null; then
  go generate ./collector/...
fi
# docs/config.md from the typed config structs.
CONTAIN_UPDATE_DOCS=1 go test -count=1 -run '^TestConfigDoc$' ./cmd/contain >/dev/null
if ! git diff --quiet -- schemas collector docs/config.md; then
  echo "generated code differs from what is committed; run go generate (docs/config.md: CONTAIN_UPDATE_DOCS=1 go test -run TestConfigDoc ./cmd/contain) and commit:"
  git diff --stat -- schemas collector docs/config.md
  exit 1
fi
echo "generated code is current"
