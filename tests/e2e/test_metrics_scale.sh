#!/usr/bin/env bash
# /metrics and the admin API at 1,000 services x 10 backends: the exposition stays valid for
# promtool and complete, stalled scrapers are capped (each holds a snapshot) and give way to a
# new scrape, and meshctl's JSON covers every service.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root

MPORT=20040
observe_cgroup scale
python3 - "$CG" "$PIN" "$TMP" $MPORT >"$TMP/meshd.json" <<'PY'
import json, sys
cg, pin, tmp, port = sys.argv[1:]
services = [{"name": f"svc-{i}", "vip": f"127.77.4.{1 + i % 250}", "port": 10000 + i // 250,
             "backends": [{"address": "127.0.0.1", "port": 20100 + j + 10 * (i % 80)}
                          for j in range(10)]} for i in range(1000)]
print(json.dumps({"version": 1, "cgroup": cg, "bpf_pin_path": pin, "state_dir": f"{tmp}/state",
                  "admin": {"socket": f"{tmp}/run/admin.sock"},
                  "telemetry": {"metrics_listen": f"127.0.0.1:{port}"},
                  "load_balancer": {"health_check": {"type": "none"}}, "services": services}))
PY
start_meshd "$TMP/meshd.json" $MPORT || {
	fail setup "meshd not ready: $(tail -5 "$TMP/meshd.log")"
	exit 1
}
URL=http://127.0.0.1:$MPORT

curl -s $URL/metrics >"$TMP/metrics.txt"
check promtool_at_scale "promtool: $(promtool check metrics <"$TMP/metrics.txt" 2>&1 | head -3)" \
	promtool check metrics <"$TMP/metrics.txt"
n=$(grep -c '^meshd_backend_healthy{' "$TMP/metrics.txt")
check every_backend_exported "$n backends in meshd_backend_healthy, want 10000" test "$n" = 10000
n=$(grep -c '^meshd_passthrough_connections_total{' "$TMP/metrics.txt")
check every_service_exported "$n services, want 1000" test "$n" = 1000

# Four scrapers that send a request and never read hold the four snapshots; a fifth scrape is
# answered all the same: the scraper stalled longest loses its snapshot (its connection is
# closed), the other three keep theirs until they leave. Synchronised on the server's sockets:
# a stalled scrape is an established connection of the metrics port with bytes queued.
stalled() { ss -tnH state established "( sport = :$MPORT )" | awk '$2 > 0' | wc -l; }
stalled_at_least() { test "$(stalled)" -ge "$1"; }
# scrape_ok: /metrics answers 200 within 10 s (a 503 while no scraper has stalled long enough is
# retried).
scrape_ok() {
	local end=$((SECONDS + 10))
	until curl -sf -o /dev/null --max-time 10 "$URL/metrics"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}
python3 "$ROOT/tests/e2e/servers/http_attack.py" noread "127.0.0.1:$MPORT" 4 \
	"$TMP/stall.ready" "$TMP/stall.stop" 60 >"$TMP/stall.log" 2>&1 &
stall_pid=$!
defer "touch '$TMP/stall.stop'; kill $stall_pid 2>/dev/null"
if wait_for 20 stalled_at_least 4; then
	check stalled_scrape_gives_way "a fifth scrape was not answered with 4 stalled" scrape_ok
	check stalled_scrape_one_dropped "$(stalled) stalled scrapes left, want 3" \
		wait_for 5 eval 'test "$(stalled)" = 3'
else
	fail stalled_scrape_gives_way "the scrapers never stalled: $(ss -tnH "( sport = :$MPORT )" | head -3)"
fi
touch "$TMP/stall.stop"
wait "$stall_pid"
check capped_scrapes_released "no 200 once the stalled scrapers left" scrape_ok
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$MESHD_PID/status")
case "$MESH_BUILD" in
*asan*) skip rss_after_stalls "sanitizer build" ;;
*) check rss_after_stalls "meshd resident ${rss} kB after stalled scrapes (want < 24 MB)" \
	test "$rss" -lt 24576 ;;
esac

SOCK=$TMP/run/admin.sock
check services_json_at_scale "meshctl services -o json" \
	test "$("$MESHCTL" --socket "$SOCK" -o json services | jq '.services | length')" = 1000
check status_at_scale "meshctl status -o json" \
	test "$("$MESHCTL" --socket "$SOCK" -o json status | jq '.backends')" = 10000
check circuits_at_scale "meshctl circuits" \
	test "$("$MESHCTL" --socket "$SOCK" circuits | wc -l)" = 10001
exit 0
