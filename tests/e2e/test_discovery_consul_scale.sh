#!/usr/bin/env bash
# Discovery at scale with the real meshd, the real datapath and the Consul emulator: 1,000
# watched services of 64 instances each (the per-service cap, or less when include/mesh_abi.h
# says so). The full resync reaches the maps; /metrics and the admin API answer throughout; a
# change of one instance reaches the maps while the 999 other blocking queries wait. The longest
# event-loop iteration is printed (bench/bench_consul_scale.sh measures it against its target).
# Ports 22630 (emulator), 22696 (metrics); VIPs 127.79.0.0/16.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/dptool"
. "$(dirname "$0")/daemon_lib.sh"

N_SVC=1000
CAP=$(awk '/#define MESH_MAX_BACKENDS_PER_SVC/ {print $3}' "$ROOT/include/mesh_abi.h")
PER=$((CAP < 64 ? CAP : 64))
TOTAL=$((N_SVC * PER))
CG=$(make_cgroup consulscale)
CONF=$TMP/meshd.json
MPORT=22696
CURL=http://127.0.0.1:22630

python3 - "$TMP" "$CG" "$PIN" "$N_SVC" "$PER" "$CURL" "$MPORT" <<'PY'
import json, sys
tmp, cg, pin, n, per, curl, mport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
regs = [{"ID": "s%d-%d" % (s, i), "Name": "s%d" % s,
         "Address": "127.%d.%d.%d" % (100 + s // 250, s % 250, 1 + i), "Port": 8000 + i}
        for s in range(n) for i in range(per)]
json.dump(regs, open(tmp + "/regs.json", "w"))
cfg = {"version": 1, "cgroup": cg, "bpf_pin_path": pin, "state_dir": tmp + "/state",
       "admin": {"socket": tmp + "/admin.sock"}, "telemetry": {"metrics_listen": "127.0.0.1:" + mport},
       "load_balancer": {"health_check": {"type": "none"}},
       "discovery": {"backend": "consul", "consul": {"address": curl, "wait": "60s",
                     "services": ["s%d" % s for s in range(n)]}},
       "services": [{"name": "s%d" % s, "vip": "127.79.%d.%d" % (s // 250, 1 + s % 250),
                     "port": 80} for s in range(n)]}
json.dump(cfg, open(tmp + "/meshd.json", "w"))
PY
spawn consul python3 "$ROOT/tests/e2e/consul_emulator.py" --port 22630 --register-file "$TMP/regs.json"
wait_for 60 port_open 127.0.0.1 22630 || {
	fail setup "Consul emulator did not start: $(tail -n 3 "$TMP/consul.log")"
	exit 1
}

backend_count() {
	"$TOOLS/dptool" --pin "$PIN" stats -o json 2>/dev/null | jq '[.[] | select(.kind == "backend")] | length'
}
svc_backends() {
	"$TOOLS/dptool" --pin "$PIN" stats -o json 2>/dev/null |
		jq --arg s "$1" '[.[] | select(.kind == "backend" and .service == $s)] | length'
}
all_synced() { [ "$(backend_count)" = "$TOTAL" ]; }

# A prober: /metrics and `meshctl status` every 200 ms while the resync runs; any answer that
# does not come (5 s) is recorded.
cat >"$TMP/probe.sh" <<PROBE
while [ ! -e "$TMP/probe.stop" ]; do
	curl -s -o /dev/null -m 5 -w '%{http_code} %{time_starttransfer}\n' http://127.0.0.1:$MPORT/metrics >>"$TMP/metrics.probe" || echo "fail" >>"$TMP/metrics.probe"
	timeout 5 "$MESHCTL" --socket "$TMP/admin.sock" status -o json >/dev/null 2>&1 && echo ok >>"$TMP/admin.probe" || echo fail >>"$TMP/admin.probe"
	sleep 0.2
done
PROBE
t0=$SECONDS
start_meshd meshd "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
spawn probe bash "$TMP/probe.sh"
check full_resync_reaches_the_maps "backends in the datapath: $(backend_count) of $TOTAL" \
	wait_for 120 all_synced
echo "resync took $((SECONDS - t0)) s (emulator included)" >&2
touch "$TMP/probe.stop"
wait_for 10 test -s "$TMP/admin.probe"
check metrics_answered_throughout "$(grep -c . "$TMP/metrics.probe") probes, failed: $(grep -vc '^200 ' "$TMP/metrics.probe")" \
	test "$(grep -c '^200 ' "$TMP/metrics.probe")" -ge 1 -a "$(grep -vc '^200 ' "$TMP/metrics.probe")" = 0
check admin_answered_throughout "$(grep -c . "$TMP/admin.probe") probes, failed: $(grep -c fail "$TMP/admin.probe")" \
	test "$(grep -c ok "$TMP/admin.probe")" -ge 1 -a "$(grep -c fail "$TMP/admin.probe")" = 0
max=$(curl -s "http://127.0.0.1:$MPORT/metrics" | awk '$1 == "meshd_event_loop_iteration_max_seconds" {print $2}')
echo "longest loop iteration since start: ${max} s; slowest /metrics answer: $(sort -k2 -n "$TMP/metrics.probe" | tail -n 1)" >&2
check loop_iteration_measured "max=$max" test -n "$max"

# One instance of one service changes: only that service is written.
curl -sf -X PUT "$CURL/v1/agent/service/deregister/s500-3" >/dev/null
check one_deregistration_reaches_the_maps "s500 backends: $(svc_backends s500)" \
	wait_output 10 $((PER - 1)) svc_backends s500
curl -sf -X PUT "$CURL/v1/agent/service/register" \
	-d '{"ID":"s500-new","Name":"s500","Address":"127.0.0.99","Port":9000}' >/dev/null
check one_registration_reaches_the_maps "s500 backends: $(svc_backends s500)" \
	wait_output 10 "$PER" svc_backends s500
check others_untouched "total $(backend_count) of $TOTAL" all_synced
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
