#!/usr/bin/env bash
# Runs contain's whole test suite on a fresh machine, as root: installs what
# it needs, starts a throw-away ClickHouse and a private Docker Engine and
# containerd, runs `go test ./...`, stops it.
# Extra arguments go to `go test` (e.g. -run TestEndToEnd -v).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir=${CONTAIN_TEST_RUN_DIR:-$(mktemp -d /tmp/contain-test.XXXXXX)}
bash deploy/clickhouse/start.sh "$run_dir/clickhouse"
trap 'bash deploy/clickhouse/stop.sh "$run_dir/clickhouse" || true; bash deploy/engines/stop.sh "$run_dir/engines" || true' EXIT
export CONTAIN_TEST_CLICKHOUSE=127.0.0.1:19000
# A private Docker Engine and containerd (docker.io from apt) for the tests
# of docker/containerd identity and pause; it prints CONTAIN_TEST_* lines.
for kv in $(bash deploy/engines/start.sh "$run_dir/engines"); do export "$kv"; done
# -p 1: packages run one at a time. Their tests run real pipelines whose
# collector watches every container on the host and whose responder freezes
# what deviates, so two packages at once would act on each other's containers.
# -race: the stages share state between goroutines (the collector's reader
# and Run, the batcher, the responder's control handlers).
go test -race -count=1 -p 1 -timeout 20m "$@" ./...
