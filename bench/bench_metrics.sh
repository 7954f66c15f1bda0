#!/usr/bin/env bash
# meshd at scale: starts meshd with N_SVC services x N_BE backends (static config generated here,
# VIPs in 127.77.4.0/24 on many ports, backends need not listen: health checks off, no traffic),
# then measures idle resident memory (VmRSS) and the /metrics scrape time (median of 20 curl
# scrapes). Prints key=value lines; targets from issue 4: RSS <= 16 MB, scrape <= 50 ms.
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/lib_observe.sh"
if [ "$(id -u)" -ne 0 ]; then
	echo "bench_metrics=skipped reason=needs_root"
	exit 0
fi
N_SVC=${N_SVC:-1000} N_BE=${N_BE:-10} SCRAPES=${SCRAPES:-20}
MPORT=20030
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

start=$(date +%s%N)
spawn meshd env MESH_LOG__LEVEL=${BENCH_LOG_LEVEL:-info} "$MESHD" --config "$TMP/meshd.json"
pid=$SPAWNED_PID
defer "'$MESHD' --cleanup --config '$TMP/meshd.json'"
ready() { curl -sf -o /dev/null "http://127.0.0.1:$MPORT/readyz"; }
if ! wait_for 60 ready; then
	echo "bench_metrics=failed reason=meshd_not_ready"
	tail -5 "$TMP/meshd.log" >&2
	exit 1
fi
startup_ms=$((($(date +%s%N) - start) / 1000000))
sleep 3 # idle
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
rss_idle=$(rss_kb)

curl -s "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics.txt"
bytes=$(wc -c <"$TMP/metrics.txt")
series=$(grep -vc '^#' "$TMP/metrics.txt")
backends=$(grep -c '^meshd_backend_healthy{' "$TMP/metrics.txt")
for ((i = 0; i < SCRAPES; i++)); do
	curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$MPORT/metrics"
done | sort -n >"$TMP/times"
median_ms=$(awk '{t[NR] = $1} END {printf "%.1f", 1000 * (NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2)}' "$TMP/times")
max_ms=$(awk 'END {printf "%.1f", 1000 * $1}' "$TMP/times")
sleep 1
rss_after=$(rss_kb)

# Admin API at the same scale: median of 5 meshctl calls per read command.
admin_ms() {
	local i
	for ((i = 0; i < 5; i++)); do
		local t0=$(date +%s%N)
		"$MESHCTL" --socket "$TMP/run/admin.sock" -o json "$@" >/dev/null || return 1
		echo $((($(date +%s%N) - t0) / 100000))
	done | sort -n | awk 'NR == 3 {printf "%.1f", $1 / 10}'
}

ok() { awk -v v="$1" -v l="$2" 'BEGIN {print (v <= l) ? "yes" : "no"}'; }
echo "services=$N_SVC"
echo "backends_configured=$((N_SVC * N_BE))"
echo "backends_exported=$backends"
echo "startup_ms=$startup_ms"
echo "rss_idle_kb=$rss_idle"
echo "rss_idle_mb=$(awk -v k="$rss_idle" 'BEGIN {printf "%.1f", k / 1024}')"
echo "rss_limit_mb=16"
echo "rss_ok=$(ok "$rss_idle" 16384)"
echo "rss_after_scrapes_kb=$rss_after"
echo "metrics_bytes=$bytes"
echo "metrics_series=$series"
echo "scrapes=$SCRAPES"
echo "scrape_median_ms=$median_ms"
echo "scrape_max_ms=$max_ms"
echo "scrape_limit_ms=50"
echo "scrape_ok=$(ok "$median_ms" 50)"
echo "admin_status_ms=$(admin_ms status)"
echo "admin_services_ms=$(admin_ms services)"
echo "admin_backends_ms=$(admin_ms backends svc-500)"
echo "admin_circuits_ms=$(admin_ms circuits)"
if [ "${BENCH_LOG_LEVEL:-}" = debug ]; then
	grep 'msg=scrape' "$TMP/meshd.log" | tail -5 >&2
fi
