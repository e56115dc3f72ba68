#!/usr/bin/env bash
# Runs every fuzz target of the module for a while (FUZZTIME per target,
# default 4s: CI; e.g. FUZZTIME=10m for a long hunt), one at a time.
# A failing input is written by `go test` to the package's
# testdata/fuzz/<Target>/ directory: commit it, it becomes part of the seed
# corpus that every plain `go test` run replays. Exits non-zero when any
# target found a failure.
#   scripts/fuzz.sh [PACKAGE_PATTERN]   (default: every package)
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-4s}
pattern=${1:-.}
failed=()
n=0
start=$(date +%s)
while IFS= read -r file; do
	dir=./$(dirname "$file")
	for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //'); do
		n=$((n + 1))
		# -parallel 1: the machine's cores are shared with the rest of CI.
		# On a loaded machine the fuzzer can run out of its time before a
		# worker answers ("context deadline exceeded", no failing input):
		# that is no finding, so it is tried once more, then reported.
		for try in 1 2; do
			if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 1 "$dir" 2>&1); then
				break
			fi
			if [ "$try" = 1 ] && ! grep -q 'Failing input written' <<<"$out" && grep -q 'context deadline exceeded' <<<"$out"; then
				echo "fuzz: $dir $target: worker timed out on a loaded machine (no finding); trying again"
				continue
			fi
			echo "fuzz: $dir $target FAILED"
			echo "$out" | tail -30
			failed+=("$dir:$target")
			break
		done
	done
done < <(git ls-files '*_test.go' | grep -E "^${pattern#./}" | xargs grep -l '^func Fuzz' | sort)
echo "fuzz: $n targets, ${fuzztime} each, $(($(date +%s) - start))s, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failing inputs are in each package's testdata/fuzz/<target>/: commit them as seed corpus after fixing"
	exit 1
fi
