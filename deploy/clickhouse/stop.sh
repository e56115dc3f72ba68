#!/bin/sh
# Stop the ClickHouse server that start.sh started in RUN_DIR and wait until
# it has exited. Idempotent: nothing to stop is not an error.
#
#   deploy/clickhouse/stop.sh [RUN_DIR]      (default: /tmp/contain-clickhouse)
#
# Only the pid recorded in RUN_DIR/clickhouse.pid is signalled (TERM, then
# KILL after CH_WAIT seconds, default 30). The data stays in RUN_DIR.
set -eu

RUN_DIR=${1:-/tmp/contain-clickhouse}
WAIT=${CH_WAIT:-30}
PIDFILE="$RUN_DIR/clickhouse.pid"

if [ ! -f "$PIDFILE" ]; then
	echo "clickhouse: no $PIDFILE, nothing to stop" >&2
	exit 0
fi
pid=$(cat "$PIDFILE")
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
	rm -f "$PIDFILE"
	echo "clickhouse: pid ${pid:-?} not running" >&2
	exit 0
fi
kill -TERM "$pid"
i=0
while kill -0 "$pid" 2>/dev/null; do
	i=$((i + 1))
	if [ "$i" -gt $((WAIT * 5)) ]; then
		echo "clickhouse: pid $pid still alive after ${WAIT}s, killing" >&2
		kill -KILL "$pid" 2>/dev/null || true
		break
	fi
	sleep 0.2
done
rm -f "$PIDFILE"
echo "clickhouse: stopped pid $pid" >&2
