#!/usr/bin/env bash
# `make bench`: runs every scenario (bench/bench_*.sh, in the order below, then any other) in a
# private network namespace (iptables rules and fixed ports stay in it), collects their result
# lines (bench/lib.sh) into build/bench/raw.txt and has bench/report.py write
# build/bench/results.csv, a PNG chart per scenario and the report: docs/benchmarks.md (and its
# charts, docs/benchmarks/) for a full run, build/bench/benchmarks.md for QUICK=1 unless
# BENCH_DOC=1. A scenario that fails is reported as such; the others still run.
#   QUICK=1        fewer samples and repeats (the whole run stays under 5 minutes)
#   REPEATS=N      repeated runs per scenario (default 5, QUICK 3)
#   BENCH_ONLY=RE  only scenarios whose name matches RE (the report keeps only those)
#   BENCH_OUT=DIR  where raw.txt, results.csv, logs and a QUICK report go (build/bench)
set -u
cd "$(dirname "$0")/.."
export MESH_BUILD=${MESH_BUILD:-build}
if [ "${BENCH_NETNS:-}" != 1 ]; then
	exec unshare --net env BENCH_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
export QUICK=${QUICK:-0}
OUT=${BENCH_OUT:-$MESH_BUILD/bench}
mkdir -p "$OUT/logs"
# connect4 and datapath time BPF programs in nanoseconds: they run before scale, whose
# teardown of up to 100,000 iptables services and BPF services keeps the kernel busy freeing
# for a while after it ends (connect4 right after it read 263-417 ns where alone it reads
# 240-267).
ORDER=(l4 connect4 datapath scale breaker discovery tracing memory config mtls)
scenarios=()
for s in "${ORDER[@]}"; do [ -f "bench/bench_$s.sh" ] && scenarios+=("$s"); done
for f in bench/bench_*.sh; do
	s=$(basename "$f" .sh)
	s=${s#bench_}
	[[ " ${ORDER[*]} " == *" $s "* ]] || scenarios+=("$s")
done

host_info() {
	echo "@env date=$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "@env kernel=$(uname -r)"
	echo "@env cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1) x $(nproc)"
	echo "@env memory=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "@env machine=$(systemd-detect-virt 2>/dev/null || echo unknown) $(cat /sys/class/dmi/id/product_name 2>/dev/null)"
	echo "@env commit=$(git describe --always --dirty 2>/dev/null || echo unknown)"
	echo "@env mode=$([ "$QUICK" = 1 ] && echo "QUICK=1 (fewer samples)" || echo full), repeats ${REPEATS:-$([ "$QUICK" = 1 ] && echo 3 || echo 5)}"
}

raw=$OUT/raw.txt
host_info >"$raw"
echo "@env load_before=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw"
start=$SECONDS
for s in "${scenarios[@]}"; do
	[ -n "${BENCH_ONLY:-}" ] && ! [[ $s =~ $BENCH_ONLY ]] && continue
	t0=$SECONDS
	echo "== $s"
	timeout --kill-after=10 1800 bash "bench/bench_$s.sh" >"$OUT/logs/$s.out" 2>"$OUT/logs/$s.err"
	rc=$?
	grep -v '^@' "$OUT/logs/$s.out" | sed 's/^/   /'
	sed -n 's/^\(@[a-z]*\) /\1 scenario='"$s"' /p' "$OUT/logs/$s.out" >>"$raw"
	# A scenario of plain key=value lines (no @result): each numeric value is a figure of one run
	# (several may share a line; a `target=` beside a figure is the scenario's own note; a key
	# printed again, like a per-line `failed=`, keeps its first value).
	grep -q '^@result' "$OUT/logs/$s.out" ||
		awk -v s="$s" '!/^@/ { for (i = 1; i <= NF; i++) {
			if ($i !~ /^[a-z][a-z0-9_]*=-?[0-9][0-9.]*$/ || $i ~ /^target=/) continue
			k = substr($i, 1, index($i, "=") - 1); v = substr($i, index($i, "=") + 1)
			if (seen[k]++) continue
			print "@result scenario=" s " metric=" k " variant=- x=- run=1 value=" v " unit=-" } }' \
			"$OUT/logs/$s.out" >>"$raw"
	if [ "$rc" -ne 0 ]; then
		grep -q '^@error' "$OUT/logs/$s.out" ||
			echo "@error scenario=$s text=exited with status $rc (see $OUT/logs/$s.err)" >>"$raw"
		echo "   FAILED (status $rc): $(sed -n 's/^@error text=//p' "$OUT/logs/$s.out" | head -n 1)"
		tail -n 5 "$OUT/logs/$s.err" | sed 's/^/   /'
	fi
	echo "   $(grep -c '^@result' "$OUT/logs/$s.out") figures, $(grep -c '^@skip' "$OUT/logs/$s.out") skipped, $((SECONDS - t0)) s"
done
echo "@env load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw"
echo "@env duration=$((SECONDS - start)) s" >>"$raw"

doc=$OUT/benchmarks.md
if [ "${BENCH_DOC:-}" = 1 ] || { [ "$QUICK" != 1 ] && [ -z "${BENCH_ONLY:-}" ]; }; then
	doc=docs/benchmarks.md
fi
python3 bench/report.py --raw "$raw" --targets bench/targets.csv --csv "$OUT/results.csv" \
	--only "${BENCH_ONLY:-}" --doc "$doc" --charts "$(dirname "$doc")/$(basename "$doc" .md)" || exit 1
echo "bench: $OUT/results.csv, $doc ($((SECONDS - start)) s)"
grep -q '^@error' "$raw" && exit 1
exit 0
