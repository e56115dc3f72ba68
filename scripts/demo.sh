#!/usr/bin/env bash
# contain end to end on one host, as root, on a fresh Debian machine with Go:
# installs runc, busybox and ClickHouse, starts ClickHouse, runs a demo
# container with runc, runs `contain run` (embedded NATS, every stage), lets
# it learn the container, runs an unexpected binary inside it, and shows the
# container frozen, the rows in ClickHouse, and its release.
# KEEP=1 leaves ClickHouse and the container running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
run=$top/.run
learning=${LEARNING:-8s}
mkdir -p "$run"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what the demo needs"
bash scripts/setup.sh
# CGO_ENABLED=0: a static binary, and one that can drop its capabilities
# on every thread once it is set up (docs/security.md, Privileges).
CGO_ENABLED=0 go build -o "$run/contain" ./cmd/contain

say "starting ClickHouse"
bash deploy/clickhouse/start.sh "$run/clickhouse"
# The demo keeps its rows in a database of its own, emptied at each run.
db=contain_demo
clickhouse-client --port 19000 -q "DROP DATABASE IF EXISTS $db"
export CONTAIN_STORE_DATABASE=$db
ch() { clickhouse-client --port 19000 --database "$db" --format PrettyCompactMonoBlock -q "$1"; }
# wait_rows N QUERY: waits up to 15 s for QUERY (a count) to reach N. The
# store inserts alerts and actions every store.alerts_insert_max_age (5 s
# by default), events every insert_max_age (1 s).
wait_rows() {
  for _ in $(seq 75); do
    [ "$(clickhouse-client --port 19000 --database "$db" -q "$2" 2>/dev/null || echo 0)" -ge "$1" ] && return 0
    sleep 0.2
  done
  echo "(still fewer than $1 rows for: $2)"
}

cleanup() {
  set +e
  [ -n "${contain_pid:-}" ] && kill "$contain_pid" 2>/dev/null && wait "$contain_pid" 2>/dev/null
  if [ "${KEEP:-0}" != 1 ]; then
    runc resume demo-web >/dev/null 2>&1; runc kill demo-web KILL >/dev/null 2>&1; sleep 0.2; runc delete -f demo-web >/dev/null 2>&1
    bash deploy/clickhouse/stop.sh "$run/clickhouse"
  fi
}
trap cleanup EXIT

say "preparing a busybox container (runc bundle in $run/demo-web)"
runc delete -f demo-web >/dev/null 2>&1 || true
rm -rf "$run/demo-web"; mkdir -p "$run/demo-web/rootfs/bin" "$run/demo-web/rootfs/www" "$run/demo-web/rootfs/etc" "$run/demo-web/rootfs/tmp"
cp /bin/busybox "$run/demo-web/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$run/demo-web/rootfs/bin/$a"; done
echo '<h1>hello from demo-web</h1>' > "$run/demo-web/rootfs/www/index.html"
echo 'root:x:0:0:root:/:/bin/sh' > "$run/demo-web/rootfs/etc/passwd"
(cd "$run/demo-web" && runc spec)
go run ./scripts/ocispec -f "$run/demo-web/config.json" \
  -a org.opencontainers.image.ref.name=demo/web:1.0 \
  -a org.opencontainers.image.digest=sha256:$(printf 'd%.0s' $(seq 64)) \
  -- /bin/sh -c '/bin/httpd -p 8080 -h /www; while true; do /bin/sleep 1; printf "GET / HTTP/1.0\r\n\r\n" | /bin/nc 127.0.0.1 8080 >/dev/null; if [ -e /tmp/go ]; then /bin/wget -q -O - http://127.0.0.1:8080/ >/dev/null; fi; done'

say "starting contain run (embedded NATS, all stages; log in $run/contain.log)"
rm -rf "$run/nats"
CONTAIN_ANALYZER_LEARNING_WINDOW=$learning "$run/contain" run --nats-store-dir "$run/nats" >"$run/contain.log" 2>&1 &
contain_pid=$!
for _ in $(seq 100); do grep -q "contain running" "$run/contain.log" && break; sleep 0.1; done
grep -q "contain running" "$run/contain.log" || { cat "$run/contain.log"; exit 1; }

say "starting the container demo-web (httpd + a client loop: nc GET / every second) and learning it for $learning"
runc run -d --bundle "$run/demo-web" demo-web </dev/null >/dev/null 2>&1
sleep "${learning%s}"; sleep 2

say "an unexpected binary runs inside demo-web: the container's own shell runs /bin/wget (as code running in it would)"
# The loop runs wget once /tmp/go exists. (A `runc exec` would be an
# operator's exec session: recorded, not paused, by default.)
touch "$run/demo-web/rootfs/tmp/go"
for _ in $(seq 300); do
  [ "$(cat /sys/fs/cgroup/freezer/demo-web/freezer.state 2>/dev/null)" = FROZEN ] && break; sleep 0.02
done
echo "freezer state of demo-web: $(cat /sys/fs/cgroup/freezer/demo-web/freezer.state)"
runc state demo-web | grep -E "\"(id|status)\""

say "what ClickHouse holds (database $db)"
wait_rows 1 "SELECT count() FROM alerts WHERE container_id = 'demo-web'"
wait_rows 1 "SELECT count() FROM actions WHERE container_id = 'demo-web'"
ch "SELECT kind, count() AS events FROM events WHERE container_id = 'demo-web' GROUP BY kind ORDER BY kind"
ch "SELECT ts, exec_filename, exec_argv FROM events WHERE container_id = 'demo-web' AND kind = 'exec' ORDER BY ts DESC LIMIT 5"
# What the SOC reads must be what ran: the wget row carries its arguments.
argv_q="SELECT count() FROM events WHERE container_id = 'demo-web' AND kind = 'exec' AND exec_filename = '/bin/wget' AND has(exec_argv, 'http://127.0.0.1:8080/')"
wait_rows 1 "$argv_q"
if [ "$(clickhouse-client --port 19000 --database "$db" -q "$argv_q")" -lt 1 ]; then
  echo "demo: FAILED: no /bin/wget exec row with its arguments in ClickHouse" >&2
  exit 1
fi
ch "SELECT ts, score, rule, priority, reason_messages FROM alerts WHERE container_id = 'demo-web' ORDER BY score DESC, ts"
ch "SELECT ts, type, result, method, latency_ns / 1e6 AS ms, reason FROM actions WHERE container_id = 'demo-web'"

say "releasing demo-web"
"$run/contain" release demo-web --reason "demo: wget was me"
sleep 0.5
echo "freezer state of demo-web: $(cat /sys/fs/cgroup/freezer/demo-web/freezer.state)"
wait_rows 1 "SELECT count() FROM actions WHERE container_id = 'demo-web' AND type = 'release'"
ch "SELECT ts, type, result, actor, reason FROM actions WHERE container_id = 'demo-web' ORDER BY ts"
say "done (metrics were at http://127.0.0.1:9464/metrics; contain log: $run/contain.log)"
