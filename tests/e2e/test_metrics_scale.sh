#!/usr/bin/env bash
# /metrics and the admin API at 1,000 services x 10 backends: the exposition stays valid for
# promtool and complete, stalled scrapers are capped (each holds a snapshot) and released when
# they leave, and meshctl's JSON covers every service.
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

# Four scrapers that send a request and never read hold their snapshots; a fifth is refused
# with 503 until they leave.
python3 - $MPORT >"$TMP/stall.out" <<'PY'
import socket, sys, time, urllib.request, urllib.error
port = int(sys.argv[1])
stalled = []
for _ in range(4):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    stalled.append(s)
time.sleep(0.5)
def status():
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
print("fifth", status())
for s in stalled:
    s.close()
time.sleep(0.5)
print("after", status())
PY
check stalled_scrapes_capped "$(cat "$TMP/stall.out")" grep -q "fifth 503" "$TMP/stall.out"
check capped_scrapes_released "$(cat "$TMP/stall.out")" grep -q "after 200" "$TMP/stall.out"
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
