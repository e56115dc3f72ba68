#!/usr/bin/env bash
# Runs contain's whole test suite on a fresh machine, as root: installs what
# it needs, starts a throw-away ClickHouse, runs `go test ./...`, stops it.
# Extra arguments go to `go test` (e.g. -run TestEndToEnd -v).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir=${CONTAIN_TEST_RUN_DIR:-$(mktemp -d /tmp/contain-test.XXXXXX)}
bash deploy/clickhouse/start.sh "$run_dir/clickhouse"
trap 'bash deploy/clickhouse/stop.sh "$run_dir/clickhouse" || true' EXIT
export CONTAIN_TEST_CLICKHOUSE=127.0.0.1:19000
# -p 1: packages run one at a time. Their tests run real pipelines whose
# collector watches every container on the host and whose responder freezes
# what deviates, so two packages at once would act on each other's containers.
go test -count=1 -p 1 -timeout 20m "$@" ./...
