#!/usr/bin/env bash
# Runs every benchmark: bench/*.sh scripts and bench/*.c binaries (built by `make bench`).
# Each prints key=value lines; every figure is a ratio against a baseline measured in the same run
# or an absolute measure the issue names (memory, milliseconds).
set -u
cd "$(dirname "$0")/.."
export MESH_BUILD=${MESH_BUILD:-build}
rc=0
for b in "$MESH_BUILD"/bench/*; do
	[ -x "$b" ] && [ -f "$b" ] || continue
	case "$b" in *.o | *.d) continue ;; esac
	echo "== $(basename "$b")"
	"$b" || rc=1
done
for s in bench/*.sh; do
	[ "$s" = bench/run.sh ] && continue
	[ -f "$s" ] || continue
	echo "== $(basename "$s")"
	bash "$s" || rc=1
done
exit $rc
