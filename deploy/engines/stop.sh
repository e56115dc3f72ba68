#!/bin/sh
# Stop what start.sh started in RUN_DIR: remove every container left in the
# private docker and containerd (so no shim outlives them), then stop dockerd
# and containerd. Idempotent.
#
#   deploy/engines/stop.sh [RUN_DIR]       (default: /tmp/contain-engines)
set -u

RUN_DIR=${1:-/tmp/contain-engines}
CTD_SOCK="$RUN_DIR/containerd.sock"
DOCKER_SOCK="$RUN_DIR/docker.sock"
ctd() { timeout 20 ctr --address "$CTD_SOCK" "$@"; }
dkr() { timeout 20 docker -H "unix://$DOCKER_SOCK" "$@"; }

stop_pid() { # name pidfile
	[ -f "$2" ] || return 0
	pid=$(cat "$2")
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null; do
			i=$((i + 1))
			if [ "$i" -gt 150 ]; then
				echo "engines: $1 (pid $pid) still alive after 30s, killing" >&2
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
	fi
	rm -f "$2"
}

if [ -S "$DOCKER_SOCK" ]; then
	ids=$(dkr ps -aq 2>/dev/null || true)
	for id in $ids; do dkr unpause "$id" >/dev/null 2>&1 || true; done
	[ -z "$ids" ] || dkr rm -f $ids >/dev/null 2>&1 || true
fi
stop_pid dockerd "$RUN_DIR/dockerd.pid"
if [ -S "$CTD_SOCK" ]; then
	for ns in $(ctd namespaces ls -q 2>/dev/null); do
		for id in $(ctd -n "$ns" tasks ls -q 2>/dev/null); do
			ctd -n "$ns" tasks resume "$id" >/dev/null 2>&1 || true
			ctd -n "$ns" tasks kill -s KILL "$id" >/dev/null 2>&1 || true
			ctd -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctd -n "$ns" containers ls -q 2>/dev/null); do
			ctd -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
		done
	done
fi
stop_pid containerd "$RUN_DIR/containerd.pid"
echo "engines: stopped ($RUN_DIR)" >&2
