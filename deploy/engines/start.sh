#!/bin/sh
# Start a private containerd and Docker Engine (dockerd) in RUN_DIR, on
# sockets of their own, and import a busybox image into both, so tests and
# the demo can run real docker and containerd containers on a machine with
# no engine of its own (apt: docker.io, which brings containerd and runc).
#
#   deploy/engines/start.sh [RUN_DIR]      (default: /tmp/contain-engines)
#
# Afterwards:
#   docker:     DOCKER_HOST=unix://RUN_DIR/docker.sock, data root RUN_DIR/docker
#   containerd: RUN_DIR/containerd.sock, namespace contain-test
#   image:      contain/busybox:test in both (docker.io/contain/busybox:test
#               in containerd), CMD sleep 1000000
# Idempotent: daemons already answering are left as they are. Prints the
# environment lines above as shell assignments on stdout.
set -eu

RUN_DIR=${1:-/tmp/contain-engines}
WAIT=${ENGINES_WAIT:-60}
RUN_DIR=$(mkdir -p "$RUN_DIR" && cd "$RUN_DIR" && pwd)
CTD_SOCK="$RUN_DIR/containerd.sock"
DOCKER_SOCK="$RUN_DIR/docker.sock"
NS=contain-test
IMAGE=contain/busybox:test

for bin in containerd dockerd docker ctr runc; do
	if ! command -v "$bin" >/dev/null 2>&1; then
		echo "engines: $bin not found (apt-get install -y docker.io)" >&2
		exit 1
	fi
done

ctd() { ctr --address "$CTD_SOCK" "$@"; }
dkr() { docker -H "unix://$DOCKER_SOCK" "$@"; }

wait_for() { # name pidfile command...
	name=$1 pidfile=$2
	shift 2
	i=0
	while ! "$@" >/dev/null 2>&1; do
		if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
			echo "engines: $name exited during start-up; last log lines:" >&2
			tail -n 20 "$RUN_DIR/$name.log" >&2 || true
			exit 1
		fi
		i=$((i + 1))
		if [ "$i" -gt $((WAIT * 5)) ]; then
			echo "engines: $name not answering after ${WAIT}s (log: $RUN_DIR/$name.log)" >&2
			exit 1
		fi
		sleep 0.2
	done
}

if ! ctd version >/dev/null 2>&1; then
	(exec setsid containerd --root "$RUN_DIR/containerd" --state "$RUN_DIR/containerd-state" \
		--address "$CTD_SOCK" >"$RUN_DIR/containerd.log" 2>&1 </dev/null) >/dev/null 2>&1 </dev/null &
	echo $! >"$RUN_DIR/containerd.pid"
	wait_for containerd "$RUN_DIR/containerd.pid" ctd version
fi

if ! dkr version >/dev/null 2>&1; then
	# A pidfile left by an earlier run names a dead process: wait_for would
	# take it for this dockerd having exited.
	rm -f "$RUN_DIR/dockerd.pid"
	# No bridge and no iptables: these machines have no network beyond
	# loopback, and containers run with --network none or host.
	(exec setsid dockerd --containerd "$CTD_SOCK" --data-root "$RUN_DIR/docker" \
		--exec-root "$RUN_DIR/docker-exec" -H "unix://$DOCKER_SOCK" --pidfile "$RUN_DIR/dockerd.pid" \
		--iptables=false --ip6tables=false --bridge=none --userland-proxy=false \
		>"$RUN_DIR/dockerd.log" 2>&1 </dev/null) >/dev/null 2>&1 </dev/null &
	wait_for dockerd "$RUN_DIR/dockerd.pid" dkr version
fi

if ! dkr image inspect "$IMAGE" >/dev/null 2>&1; then
	rootfs="$RUN_DIR/busybox-rootfs"
	rm -rf "$rootfs"
	mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/www"
	cp "$(command -v busybox)" "$rootfs/bin/busybox"
	for a in sh sleep ls cat echo wget httpd id ps true false nc gzip tar; do
		ln -sf busybox "$rootfs/bin/$a"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
	echo 'root:x:0:' >"$rootfs/etc/group"
	tar -C "$rootfs" -c . | dkr import -c 'CMD ["/bin/sleep","1000000"]' - "$IMAGE" >/dev/null
fi
if ! ctd -n "$NS" images check "name==docker.io/$IMAGE" 2>/dev/null | grep -q complete; then
	dkr save "$IMAGE" | ctd -n "$NS" images import - >/dev/null
fi

echo "CONTAIN_TEST_DOCKER_HOST=unix://$DOCKER_SOCK"
echo "CONTAIN_TEST_DOCKER_ROOT=$RUN_DIR/docker"
echo "CONTAIN_TEST_CONTAINERD=$CTD_SOCK"
