#!/usr/bin/env bash
# Breaker reaction: a service of two backends (round_robin, consecutive_failures 5, open 500 ms);
# `loadgen breaker`, inside the mesh cgroup, serves the second backend itself, makes serial
# connects through the VIP, closes that backend's listener (connects to it are refused) and
# counts the connects the application sees fail until the breaker has taken the backend out,
# and the time to the last failure; then it listens again and times until the backend is served
# (at least the open duration: the half-open probe goes after it).
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
need_built "$LOADGEN" "$TOOLS/dptool"
DPTOOL=$TOOLS/dptool
CONSECUTIVE=5 OPEN_MS=500

bench_about "How fast the datapath's circuit breaker takes a failing backend out and lets it" \
	"back in: two backends (round_robin, consecutive_failures $CONSECUTIVE, open_duration" \
	"${OPEN_MS}ms), serial connect + 1 B + close through the VIP, one backend's listener closed" \
	"(connects refused), then opened again."
bench_meta metric=eject_failed title="connects failed before the backend was out" \
	unit=connects better=lower
bench_meta metric=eject_ms title="backend failing -> last failed connect" unit=ms better=lower
bench_meta metric=recover_ms title="backend back -> served again (open_duration ${OPEN_MS} ms)" \
	unit=ms better=lower
bench_note eject_failed "the breaker trips after consecutive_failures = $CONSECUTIVE failed connects"

CG=$(make_cgroup bench-breaker)
defer "'$DPTOOL' --pin '$PIN' cleanup"
"$DPTOOL" --pin "$PIN" --cgroup "$CG" open >/dev/null || bench_fail "datapath did not load"
spawn backends "$LOADGEN" serve 18900 1
wait_for 5 port_open 127.0.0.1 18900 || bench_fail "backend did not start"
for ((run = 1; run <= REPEATS; run++)); do
	# A fresh service each run: breaker state, streak and open duration start from zero.
	"$DPTOOL" --pin "$PIN" del --name brk >/dev/null 2>&1
	"$DPTOOL" --pin "$PIN" set --name brk --vip 127.77.2.98:18000 --alg round_robin \
		--consecutive $CONSECUTIVE --error-rate 0 --open ${OPEN_MS}ms --max-ejection 50 \
		--backend 127.0.0.1:18900 --backend 127.0.0.1:18950 >/dev/null || bench_fail "service set"
	in_cgroup "$CG" "$LOADGEN" breaker 127.77.2.98:18000 18950 >"$TMP/out" 2>"$TMP/err" ||
		bench_fail "loadgen breaker: $(head -c 200 "$TMP/err")"
	bench_result eject_failed mesh - "$run" "$(kv "$TMP/out" eject_failed)" connects
	bench_result eject_ms mesh - "$run" "$(kv "$TMP/out" eject_ms)" ms
	bench_result recover_ms mesh - "$run" "$(kv "$TMP/out" recover_ms)" ms
done
