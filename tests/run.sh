#!/usr/bin/env bash
# Runs the unit binaries and the end-to-end suites, prints each case's PASS/FAIL/SKIP line and
# ends with one line `N passed, N failed, N skipped`. Exits 1 when anything failed. A suite that
# exits non-zero without a FAIL line, or prints no result line at all, counts as one failure.
#   tests/run.sh [unit|e2e|all] [filter]
set -u
cd "$(dirname "$0")/.."
export MESH_BUILD=${MESH_BUILD:-build}
what=${1:-all}
filter=${2:-}
passed=0 failed=0 skipped=0
log_dir=$MESH_BUILD/test-logs
mkdir -p "$log_dir"

# run_suite NAME TIMEOUT CMD...: runs one binary or script, counts its case lines.
run_suite() {
	local name=$1 limit=$2
	shift 2
	local out=$log_dir/$name.log rc
	timeout --kill-after=10 "$limit" "$@" >"$out" 2>"$out.err"
	rc=$?
	local p f s
	p=$(grep -c '^PASS ' "$out")
	f=$(grep -c '^FAIL ' "$out")
	s=$(grep -c '^SKIP ' "$out")
	grep -E '^(PASS|FAIL|SKIP) ' "$out"
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "FAIL $name: exited with status $rc (see $out.err)"
		f=$((f + 1))
	elif [ $((p + f + s)) -eq 0 ]; then
		# a suite that ran nothing (an early exit 0, a wrong filter inside) proves nothing
		echo "FAIL $name: printed no PASS, FAIL or SKIP line (see $out.err)"
		f=$((f + 1))
	fi
	if [ "$f" -ne 0 ]; then
		echo "---- $name stderr (last 30 lines) ----"
		tail -n 30 "$out.err"
		echo "----"
	fi
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

if [ "$what" = all ] || [ "$what" = unit ]; then
	for t in "$MESH_BUILD"/tests/unit/test_*; do
		[ -x "$t" ] || continue
		case "$t" in *.o | *.d) continue ;; esac
		[ -n "$filter" ] && [[ "$t" != *"$filter"* ]] && continue
		run_suite "$(basename "$t")" 300 "$t"
	done
fi
if [ "$what" = all ] || [ "$what" = e2e ]; then
	for t in tests/e2e/test_*.sh; do
		[ -f "$t" ] || continue
		[ -n "$filter" ] && [[ "$t" != *"$filter"* ]] && continue
		run_suite "$(basename "$t" .sh)" 900 bash "$t"
	done
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
