#!/usr/bin/env bash
# Runs every fuzz target of the module for a while (FUZZTIME per target,
# default 4s; e.g. FUZZTIME=10m for a long hunt), FUZZ_JOBS targets at a
# time (default 2: most of the time goes to building each package's
# instrumented test binary).
# A failing input is written by `go test` to the package's
# testdata/fuzz/<Target>/ directory: commit it, it becomes part of the seed
# corpus that every plain `go test` run replays. Exits non-zero when any
# target found a failure.
#   scripts/fuzz.sh [PACKAGE_PREFIX]   (default: every package)
set -uo pipefail
cd "$(dirname "$0")/.."
export FUZZTIME=${FUZZTIME:-4s}
jobs=${FUZZ_JOBS:-2}
prefix=${1:-}
prefix=${prefix#./}
out=$(mktemp -d /tmp/contain-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)

# one DIR TARGET: fuzz one target; on a loaded machine the fuzzer can run
# out of its time before a worker answers ("context deadline exceeded", no
# failing input): that is no finding, so it is tried once more.
one() {
	local dir=$1 target=$2 log
	log="$OUT/$(echo "${dir#./}" | tr / _)_$target"
	for try in 1 2; do
		# -parallel 1: one worker per target; FUZZ_JOBS targets run at once.
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel 1 "$dir" >"$log.out" 2>&1; then
			echo "ok   $dir $target" >"$log.res"
			return 0
		fi
		if [ "$try" = 1 ] && ! grep -q 'Failing input written' "$log.out" && grep -q 'context deadline exceeded' "$log.out"; then
			continue
		fi
		echo "FAIL $dir $target" >"$log.res"
		return 0
	done
}
export -f one
export OUT=$out

git ls-files '*_test.go' | grep -E "^${prefix}" | xargs grep -l '^func Fuzz' | sort | while IFS= read -r file; do
	for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //'); do
		echo "./$(dirname "$file") $target"
	done
done | xargs -P "$jobs" -L 1 bash -c 'one "$0" "$1"'

n=$(ls "$out"/*.res 2>/dev/null | wc -l)
failed=$(cat "$out"/*.res 2>/dev/null | grep -c '^FAIL' || true)
for res in "$out"/*.res; do
	[ -e "$res" ] || continue
	if grep -q '^FAIL' "$res"; then
		cat "$res"
		tail -30 "${res%.res}.out"
	fi
done
echo "fuzz: $n targets, ${FUZZTIME} each, $jobs at a time, $(($(date +%s) - start))s, $failed failed"
if [ "$failed" -gt 0 ]; then
	echo "fuzz: failing inputs are in each package's testdata/fuzz/<target>/: commit them as seed corpus after fixing"
	exit 1
fi
