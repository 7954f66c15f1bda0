#!/usr/bin/env bash
# The datapath's event ring buffer is read once and each record handed to every subscriber: a
# service whose only backend is dead (no panic threshold, the breaker may eject it) opens its
# breaker (a circuit event) and then rejects connects (reject events); the log subscriber writes a line per record and the metrics
# subscriber counts the same records (meshd_events_read_total). Ports 19045 (dead backend),
# 19093 (metrics); VIP 127.77.3.45.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_root
need_built "$MESHD" "$TOOLS/mesh_client"

CG=$(make_cgroup events)
VIP=127.77.3.45
MPORT=19093
CONF=$TMP/meshd.json
daemon_config "$CONF" "19045" '.log.level = "debug" |
	.load_balancer.health_check.type = "none" | .load_balancer.panic_threshold = 0 |
	.circuit_breaker = { consecutive_failures: 2, open_duration: "1h", max_open_duration: "1h",
		max_ejection_percent: 100 }'
start_meshd meshd "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
metric() { curl -s --max-time 2 "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# Two refused connects open the breaker; the next ones are rejected by the datapath.
in_cgroup "$CG" "$TOOLS/mesh_client" -n 6 "$VIP" 80 >"$TMP/client.out" 2>&1
opened() { grep -q 'msg="circuit changed" service=api backend=127.0.0.1:19045 from=closed to=open' "$TMP/meshd.log"; }
check circuit_event_logged "$(grep -m1 circuit "$TMP/meshd.log")" wait_for 5 opened
rejects_logged() { [ "$(grep -c 'msg="connect rejected" service=api reason=' "$TMP/meshd.log")" -ge 1 ]; }
check reject_events_logged "client: $(tr '\n' ' ' <"$TMP/client.out")" wait_for 5 rejects_logged
circ=$(metric 'meshd_events_read_total{type="circuit"}')
rej=$(metric 'meshd_events_read_total{type="reject"}')
check metrics_count_the_same_records \
	"circuit: metric $circ, log $(grep -c 'msg="circuit changed"' "$TMP/meshd.log"); reject: metric $rej, log $(grep -c 'msg="connect rejected"' "$TMP/meshd.log")" \
	test "$circ" = "$(grep -c 'msg="circuit changed"' "$TMP/meshd.log")" -a \
	"$rej" = "$(grep -c 'msg="connect rejected"' "$TMP/meshd.log")" -a "$rej" -ge 1
stop_meshd "$MESHD_PID"
check stops_cleanly "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
