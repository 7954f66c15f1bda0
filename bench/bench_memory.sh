#!/usr/bin/env bash
# meshd at scale: starts meshd with N_SVC services x N_BE backends (static config generated here,
# VIPs in 127.77.4.0/24 on many ports, backends need not listen: health checks off, no traffic),
# then measures its idle resident memory (VmRSS), the memory the pinned BPF maps take (memlock),
# the /metrics scrape time (median of SCRAPES curl scrapes), the admin API's read commands and
# startup to ready. meshd is started afresh for each repeated run. Targets from issue 4: RSS <=
# 16 MB, scrape <= 50 ms.
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/lib_observe.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
need_built "$MESHD" "$MESHCTL"
N_SVC=${N_SVC:-1000} N_BE=${N_BE:-10} SCRAPES=${SCRAPES:-$(bench_quick 10 20)}
MPORT=20030

bench_about "meshd with $N_SVC services x $N_BE backends (static discovery, health checks off," \
	"no traffic): resident memory once idle, the BPF maps' memory, /metrics scrape time" \
	"(median of $SCRAPES scrapes by curl), the admin API's read commands (median of 5" \
	"meshctl calls) and the time from start to ready. meshd is started afresh for each run."
bench_meta metric=rss_idle title="meshd resident memory, idle" unit=MB better=lower
bench_meta metric=bpf_maps title="memory of the pinned BPF maps (memlock)" unit=MB better=lower
bench_meta metric=scrape_p50 title="/metrics scrape, median" unit=ms better=lower
bench_meta metric=scrape_max title="/metrics scrape, slowest" unit=ms better=lower
bench_meta metric=metrics_series title="series in one scrape" unit=series better=lower
bench_meta metric=startup title="start to ready" unit=ms better=lower
bench_meta metric=admin_ms title="meshctl read command, median of 5" unit=ms better=lower
observe_cgroup bench

python3 - "$N_SVC" "$N_BE" "$CG" "$PIN" "$TMP" "$MPORT" >"$TMP/meshd.json" <<'PY'
import json, sys
n_svc, n_be, cg, pin, tmp, port = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
services = [{
    "name": f"svc-{i}",
    "vip": f"127.77.4.{1 + i % 250}",
    "port": 10000 + i // 250,
    "backends": [{"address": "127.0.0.1", "port": 20100 + j + n_be * (i % 80)}
                 for j in range(n_be)],
} for i in range(n_svc)]
print(json.dumps({
    "version": 1, "cgroup": cg, "bpf_pin_path": pin, "state_dir": f"{tmp}/state",
    "admin": {"socket": f"{tmp}/run/admin.sock"},
    "telemetry": {"metrics_listen": f"127.0.0.1:{port}"},
    "load_balancer": {"health_check": {"type": "none"}},
    "services": services,
}))
PY
defer "'$MESHD' --cleanup --config '$TMP/meshd.json'"
ready() { curl -sf -o /dev/null "http://127.0.0.1:$MPORT/readyz"; }
rss_mb() { awk '/^VmRSS:/ {printf "%.2f", $2 / 1024}' "/proc/$1/status"; }
maps_mb() {
	local f total=0 m
	for f in "$PIN"/*; do
		m=$(bpftool -j map show pinned "$f" 2>/dev/null | sed -n 's/.*"bytes_memlock":\([0-9]*\).*/\1/p')
		total=$((total + ${m:-0}))
	done
	awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }'
}
admin_ms() {
	local i t0
	for ((i = 0; i < 5; i++)); do
		t0=$(date +%s%N)
		"$MESHCTL" --socket "$TMP/run/admin.sock" -o json "$@" >/dev/null || return 1
		echo $((($(date +%s%N) - t0) / 100000))
	done | sort -n | awk 'NR == 3 {printf "%.1f", $1 / 10}'
}

for ((run = 1; run <= REPEATS; run++)); do
	start=$(date +%s%N)
	spawn meshd env MESH_LOG__LEVEL=info "$MESHD" --config "$TMP/meshd.json"
	pid=$SPAWNED_PID
	wait_for 60 ready || bench_fail "meshd not ready: $(tail -n 3 "$TMP/meshd.log")"
	bench_result startup meshd - "$run" $((($(date +%s%N) - start) / 1000000)) ms
	sleep 3 # idle
	bench_result rss_idle meshd - "$run" "$(rss_mb "$pid")" MB
	bench_result bpf_maps datapath - "$run" "$(maps_mb)" MB
	curl -s "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics.txt"
	bench_result metrics_series meshd - "$run" "$(grep -vc '^#' "$TMP/metrics.txt")" series
	for ((i = 0; i < SCRAPES; i++)); do
		curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$MPORT/metrics"
	done | sort -n >"$TMP/times"
	bench_result scrape_p50 meshd - "$run" "$(awk '{t[NR] = $1} END {printf "%.1f", 1000 * t[int((NR + 1) / 2)]}' "$TMP/times")" ms
	bench_result scrape_max meshd - "$run" "$(awk 'END {printf "%.1f", 1000 * $1}' "$TMP/times")" ms
	for c in status services circuits; do
		bench_result admin_ms "$c" - "$run" "$(admin_ms "$c")" ms
	done
	bench_result admin_ms backends - "$run" "$(admin_ms backends svc-500)" ms
	kill "$pid"
	wait "$pid" 2>/dev/null
done
bench_note rss_idle "$N_SVC services x $N_BE backends"
