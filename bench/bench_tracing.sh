#!/usr/bin/env bash
# Tracing overhead: connect + 1 B request/response + close through the VIP of a real meshd with
# connection tracing off, at 1% and at 100% sampling (telemetry.tracing.sample_ratio), exporting
# to `loadgen http-sink` (an OTLP/HTTP endpoint that answers 200 and costs next to nothing, so the
# figure is meshd's and the datapath's cost, not a collector's). Tracing is global, so the three
# cannot alternate sample by sample: each run measures them in short blocks, CYCLES cycles of one
# block each (a reload switches), the order rotating from cycle to cycle (off 1% 100%, 1% 100%
# off, 100% off 1%, ...) so that no variant always follows another. Within each block, connects
# straight to the backend from outside the cgroup (no BPF, not traced) alternate sample by sample
# with the VIP's, and the block's figure is the VIP's median over the direct one's: load from
# other tenants that changes between blocks cancels out. A variant's figure in a run is the
# median of its blocks; the target compares 1% with off within a run. The cost per cycle (1% over
# off, and 100% over off, from blocks next to each other) is noted with its spread.
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/lib_observe.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
need_built "$MESHD" "$LOADGEN"
N=$(bench_quick 1500 3000) W=200 # per block: samples per target, warm-up connects
CYCLES=$(bench_quick 3 10)
MPORT=20631 SPORT=20632

bench_about "Cost of connection tracing on connect + 1 B request/response + close through the" \
	"VIP of a real meshd: tracing off, at 1% and at 100% sampling, spans exported over" \
	"OTLP/HTTP (protobuf) to a sink that answers 200. Each run: $CYCLES cycles of one block of" \
	"$N connects per variant, the order rotating between cycles; in each block direct connects" \
	"(no BPF) alternate with the VIP's, and the block's figure is the VIP's median over the" \
	"direct one's (host load that changes between blocks cancels); a variant's figure in a run is" \
	"the median of its blocks."
bench_meta metric=vip_over_direct title="VIP median over direct median, same block (1%)" \
	unit=ratio better=lower subject=trace_1pct baselines=trace_off
bench_meta metric=vip_over_direct_100pct title="VIP median over direct median, same block (100%)" \
	unit=ratio better=lower subject=trace_100pct baselines=trace_off
bench_meta metric=connect_close_p50 title="connect + 1 B request/response + close through the VIP, median" \
	unit=us better=lower
bench_meta metric=spans_per_connect title="spans exported per connect" unit=ratio better=lower
if ! "$MESHD" config env | grep -q MESH_TELEMETRY__TRACING__SAMPLE_RATIO; then
	for v in trace_off trace_1pct trace_100pct; do
		bench_skip vip_over_direct "$v" - "meshd has no connection tracing in this build"
	done
	exit 0
fi
observe_cgroup bench-trace
spawn backends "$LOADGEN" serve 18900 2
spawn sink "$LOADGEN" http-sink $SPORT
wait_for 5 port_open 127.0.0.1 18901 && wait_for 5 port_open 127.0.0.1 $SPORT ||
	bench_fail "backends or sink did not start"

# write_config RATIO|off
write_config() {
	observe_config "$TMP/meshd.json" $MPORT '[{ "name": "tr", "vip": "127.77.2.97", "port": 18000,
		"backends": [ {"address":"127.0.0.1","port":18900}, {"address":"127.0.0.1","port":18901} ],
		"load_balancer": { "algorithm": "least_request" } }]'
	local t='del(.telemetry.tracing)'
	[ "$1" != off ] && t=".telemetry.tracing = { endpoint: \"http://127.0.0.1:$SPORT/v1/traces\", sample_ratio: $1 }"
	jq "$t | .log.level = \"warn\"" "$TMP/meshd.json" >"$TMP/m.json" && mv "$TMP/m.json" "$TMP/meshd.json"
}
write_config off
start_meshd "$TMP/meshd.json" $MPORT || bench_fail "meshd did not start: $(tail -n 3 "$TMP/meshd.log")"
CURRENT=off
switch_to() { # an unchanged config is no reload (the generation stays)
	local gen
	[ "$1" = "$CURRENT" ] && return 0
	CURRENT=$1
	gen=$(metric $MPORT meshd_config_generation)
	write_config "$1"
	kill -HUP "$MESHD_PID"
	wait_for 10 metric_is $MPORT meshd_config_generation $((gen + 1)) || bench_fail "reload to $1"
}
declare -A RATIO=([trace_off]=off [trace_1pct]=0.01 [trace_100pct]=1)
VARIANTS=(trace_off trace_1pct trace_100pct)
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# spread VALUES...: "median p25-p75 min-max" of per-cycle ratios
spread() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		printf "median %.4f, quartiles %.4f-%.4f, min-max %.4f-%.4f over %d cycles",
			(NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2,
			v[int((NR + 3) / 4)], v[int((3 * NR + 3) / 4)], v[1], v[NR], NR }'
}
cost1=() cost100=()
for ((run = 1; run <= REPEATS; run++)); do
	declare -A p50=() ratio=()
	spans=0 blocks100=0
	for ((c = 0; c < CYCLES; c++)); do
		declare -A cyc=()
		for ((k = 0; k < 3; k++)); do
			v=${VARIANTS[$(((c + k) % 3))]}
			switch_to "${RATIO[$v]}"
			spans0=$(metric $MPORT meshd_trace_spans_exported_total)
			"$LOADGEN" --cgroup "$CG" -n "$N" --warmup $W rr "mesh=127.77.2.97:18000@cg" \
				direct=127.0.0.1:18900 >"$TMP/rr" || bench_fail "loadgen failed"
			p50[$v]+=" $(kv "$TMP/rr" mesh.p50_us)"
			cyc[$v]=$(awk -v a="$(kv "$TMP/rr" mesh.p50_us)" -v b="$(kv "$TMP/rr" direct.p50_us)" \
				'BEGIN { print a / b }')
			ratio[$v]+=" ${cyc[$v]}"
			if [ "$v" = trace_100pct ]; then # spans leave within ~1 s of the block's end
				sleep 1.5
				spans=$((spans + $(metric $MPORT meshd_trace_spans_exported_total) - spans0))
				blocks100=$((blocks100 + 1))
			fi
		done
		cost1+=("$(awk -v a="${cyc[trace_1pct]}" -v b="${cyc[trace_off]}" 'BEGIN { printf "%.4f", a / b }')")
		cost100+=("$(awk -v a="${cyc[trace_100pct]}" -v b="${cyc[trace_off]}" 'BEGIN { printf "%.4f", a / b }')")
		unset cyc
	done
	bench_result spans_per_connect trace_100pct - "$run" \
		"$(awk -v s="$spans" -v n=$((blocks100 * (N + W))) 'BEGIN { printf "%.3f", s / n }')" ratio
	for v in "${VARIANTS[@]}"; do
		# shellcheck disable=SC2086 # the blocks' figures, one word each
		bench_result connect_close_p50 "$v" - "$run" "$(median ${p50[$v]})" us
		# shellcheck disable=SC2086
		r=$(median ${ratio[$v]})
		[ "$v" = trace_100pct ] || bench_result vip_over_direct "$v" - "$run" "$r" ratio
		[ "$v" = trace_1pct ] || bench_result vip_over_direct_100pct "$v" - "$run" "$r" ratio
	done
	unset p50 ratio
done
bench_note vip_over_direct "per cycle, 1% over off from blocks next to each other: $(spread "${cost1[@]}")"
bench_note vip_over_direct_100pct "per cycle, 100% over off: $(spread "${cost100[@]}")"
bench_note spans_per_connect "spans exported during and just after the 100% blocks over their" \
	"connects (warm-up included): 1.000 when none is lost"
