#!/bin/sh
# Start a ClickHouse server as the current user (root in CI) in a run
# directory of its own, from the config.xml/users.xml templates beside this
# script, and wait until it answers on the native port.
#
#   deploy/clickhouse/start.sh [RUN_DIR]     (default: /tmp/contain-clickhouse)
#
# Idempotent: if a server already answers on the port, it does nothing.
# Prints the server's pid on stdout (empty if an existing server answered and
# was not started by this script). Environment: CH_PORT (native port,
# default 19000), CH_HTTP_PORT (default 18123), CH_CONFIG_D (a directory
# whose *.xml files are copied into RUN_DIR/config.d, which ClickHouse merges
# over config.xml: a cluster's remote_servers, macros, zookeeper, interserver
# port; see docs/design/023-clickhouse-cluster.md), CH_WAIT (seconds to wait,
# default 60). A second server on the same host needs its own RUN_DIR and
# ports.
set -eu

RUN_DIR=${1:-/tmp/contain-clickhouse}
PORT=${CH_PORT:-19000}
HTTP_PORT=${CH_HTTP_PORT:-18123}
WAIT=${CH_WAIT:-60}
HERE=$(cd "$(dirname "$0")" && pwd)

ping_ch() {
	clickhouse-client --host 127.0.0.1 --port "$PORT" -q 'SELECT 1' >/dev/null 2>&1
}

if ping_ch; then
	if [ -f "$RUN_DIR/clickhouse.pid" ]; then cat "$RUN_DIR/clickhouse.pid"; fi
	echo "clickhouse: already answering on 127.0.0.1:$PORT" >&2
	exit 0
fi

for bin in clickhouse-server clickhouse-client; do
	if ! command -v "$bin" >/dev/null 2>&1; then
		echo "clickhouse: $bin not found (apt-get install -y clickhouse-server clickhouse-client)" >&2
		exit 1
	fi
done

RUN_DIR=$(mkdir -p "$RUN_DIR" && cd "$RUN_DIR" && pwd)
mkdir -p "$RUN_DIR/log" "$RUN_DIR/data" "$RUN_DIR/tmp" "$RUN_DIR/user_files" "$RUN_DIR/format_schemas"

# A stale pid file from a server that died: remove it.
if [ -f "$RUN_DIR/clickhouse.pid" ]; then
	old=$(cat "$RUN_DIR/clickhouse.pid")
	if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
		# Alive but not answering yet (starting up): just wait for it below.
		:
	else
		rm -f "$RUN_DIR/clickhouse.pid"
	fi
fi

if [ ! -f "$RUN_DIR/clickhouse.pid" ]; then
	sed -e "s#RUN_DIR#$RUN_DIR#g" \
		-e "s#<tcp_port>19000</tcp_port>#<tcp_port>$PORT</tcp_port>#" \
		-e "s#<http_port>18123</http_port>#<http_port>$HTTP_PORT</http_port>#" \
		"$HERE/config.xml" >"$RUN_DIR/config.xml"
	rm -rf "$RUN_DIR/config.d"
	if [ -n "${CH_CONFIG_D:-}" ]; then
		mkdir -p "$RUN_DIR/config.d"
		cp "$CH_CONFIG_D"/*.xml "$RUN_DIR/config.d/"
	fi
	sed "s#RUN_DIR#$RUN_DIR#g" "$HERE/users.xml" >"$RUN_DIR/users.xml"
	# Detached from this script's stdout/stderr, so a caller reading them
	# (a pipe, CI) sees EOF when this script exits.
	(cd "$RUN_DIR" && exec setsid clickhouse-server --config-file="$RUN_DIR/config.xml" \
		>"$RUN_DIR/log/stdout.log" 2>&1 </dev/null) >/dev/null 2>&1 </dev/null &
	echo $! >"$RUN_DIR/clickhouse.pid"
fi
pid=$(cat "$RUN_DIR/clickhouse.pid")

i=0
while ! ping_ch; do
	if ! kill -0 "$pid" 2>/dev/null; then
		rm -f "$RUN_DIR/clickhouse.pid"
		echo "clickhouse: server exited during start-up; last log lines:" >&2
		tail -n 20 "$RUN_DIR/log/clickhouse-server.err.log" "$RUN_DIR/log/stdout.log" >&2 2>/dev/null || true
		exit 1
	fi
	i=$((i + 1))
	if [ "$i" -gt $((WAIT * 5)) ]; then
		echo "clickhouse: not answering on 127.0.0.1:$PORT after ${WAIT}s (pid $pid, logs in $RUN_DIR/log)" >&2
		exit 1
	fi
	sleep 0.2
done
echo "$pid"
