#!/usr/bin/env bash
# Records the current event schema as the released one: TestNoBreakingChange
# (schemas/compat_test.go) then checks every later change against it.
# Run when a release ships, and commit schemas/contain/v1/released.binpb.
set -euo pipefail
cd "$(dirname "$0")/.."
protoc -I schemas --descriptor_set_out=schemas/contain/v1/released.binpb schemas/contain/v1/events.proto
echo "released schema recorded in schemas/contain/v1/released.binpb"
