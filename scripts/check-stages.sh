#!/usr/bin/env bash
# Fails when a stage package depends on another stage (go list -deps,
# non-test code): stages share only schemas/ (docs/design/001, 019).
# Stages are the top-level directories named below that exist, plus any
# other top-level package whose doc.go calls itself a stage ("is
# contain's ... stage").
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
stages=()
for d in collector enricher analyzer responder store notify console; do
	[ -d "$d" ] && stages+=("$d")
done
for f in */doc.go; do
	d=${f%/doc.go}
	if grep -qE "^// Package $d is contain's .*stage" "$f" && [[ ! " ${stages[*]} " =~ " $d " ]]; then
		stages+=("$d")
	fi
done
pattern=$(printf '%s|' "${stages[@]}")
pattern="^${mod//./\\.}/(${pattern%|})(/|\$)"
bad=0
for s in "${stages[@]}"; do
	# Every package of the stage, and everything it links.
	deps=$(go list -deps "./$s/..." | grep -E "$pattern" | grep -vE "^${mod//./\\.}/$s(/|\$)" || true)
	if [ -n "$deps" ]; then
		echo "stage $s depends on another stage:"
		for dep in $deps; do
			via=$(go list -f '{{.ImportPath}}: {{join .Imports " "}}' "./$s/..." | grep -E " $dep( |$)" | cut -d: -f1 | tr '\n' ' ' || true)
			echo "  $dep (imported by: ${via:-a dependency})"
		done
		bad=1
	fi
done
if [ "$bad" = 0 ]; then
	echo "stages: ${stages[*]}: none imports another"
fi
exit "$bad"
