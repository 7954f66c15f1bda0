#!/usr/bin/env bash
# /metrics end to end: a real meshd with a real datapath in a child cgroup, known traffic through
# a VIP, the exposition checked by `promtool check metrics`, and a real Prometheus server that
# scrapes meshd and answers the expected meshd_connections_total through its query API.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root

MPORT=20010 PPORT=20011 B1=20012 B2=20013
VIP=127.77.4.10 N=20
observe_cgroup metrics
backend b1 $B1 && backend b2 $B2 || { fail setup "backends did not start"; exit 1; }
observe_config "$TMP/meshd.json" $MPORT "[
  { \"name\": \"web\", \"vip\": \"$VIP\", \"port\": 80,
    \"backends\": [ { \"address\": \"127.0.0.1\", \"port\": $B1 },
                    { \"address\": \"127.0.0.1\", \"port\": $B2 } ] } ]"
start_meshd "$TMP/meshd.json" $MPORT || {
	fail setup "meshd not ready: $(tail -5 "$TMP/meshd.log")"
	exit 1
}
URL=http://127.0.0.1:$MPORT

check healthz "want 200" test "$(curl -s -o /dev/null -w '%{http_code}' $URL/healthz)" = 200
check readyz "want 200" test "$(curl -s -o /dev/null -w '%{http_code}' $URL/readyz)" = 200
check not_found "want 404" test "$(curl -s -o /dev/null -w '%{http_code}' $URL/nope)" = 404
check content_type "want the 0.0.4 text format" \
	grep -qi '^content-type: text/plain; version=0.0.4' <<<"$(curl -sI $URL/metrics)"

curl -s $URL/metrics >"$TMP/before.txt"
check promtool_check "promtool: $(promtool check metrics <"$TMP/before.txt" 2>&1 | head -3)" \
	promtool check metrics <"$TMP/before.txt"
missing=""
for name in meshd_build_info meshd_config_generation meshd_config_reloads_total \
	meshd_connections_total meshd_backend_active_connections meshd_backend_healthy \
	meshd_backend_circuit_state meshd_circuit_transitions_total meshd_rejects_total \
	meshd_bytes_total meshd_discovery_sync_total meshd_discovery_last_sync_timestamp_seconds \
	meshd_mtls_handshakes_total; do
	grep -q "^# TYPE $name " "$TMP/before.txt" || missing="$missing $name"
done
check design_names "missing families:$missing" test -z "$missing"
check help_lines "a family without HELP" \
	test "$(grep -c '^# HELP' "$TMP/before.txt")" = "$(grep -c '^# TYPE' "$TMP/before.txt")"
check generation "meshd_config_generation $(metric $MPORT meshd_config_generation)" \
	test "$(metric $MPORT meshd_config_generation)" = 1
check backends_listed "a backend is missing from meshd_backend_healthy" \
	test "$(metric $MPORT 'meshd_backend_healthy{service="web"')" = 2

# Prometheus scrapes meshd every second.
cat >"$TMP/prom.yml" <<YAML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: meshd
    static_configs: [ { targets: ["127.0.0.1:$MPORT"] } ]
YAML
spawn prometheus prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/prom-data" \
	--web.listen-address=127.0.0.1:$PPORT
# promql EXPR: the first result's value (or "none").
promql() {
	curl -s "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" |
		jq -r '.data.result[0].value[1] // "none"' 2>/dev/null
}
promql_is() { test "$(promql "$1")" = "$2"; }
check prometheus_up "Prometheus never saw meshd up" wait_for 30 promql_is 'up{job="meshd"}' 1

ok=$(connect_vip $VIP 80 $N)
check traffic "$ok of $N connects through the VIP answered" test "$ok" = $N
q='sum(meshd_connections_total{service="web",result="ok"})'
check prometheus_connections "Prometheus says $(promql "$q") ok connections, want $N" \
	wait_for 20 promql_is "$q" $N
check balanced "round robin: $(promql 'meshd_connections_total{service="web",backend="127.0.0.1:'$B1'",result="ok"}') on b1" \
	test "$(promql 'meshd_connections_total{service="web",backend="127.0.0.1:'$B1'",result="ok"}')" = $((N / 2))
red=$(metric $MPORT 'meshd_datapath_events_total{event="redirected"}')
check datapath_redirected "meshd_datapath_events_total{event=redirected} is $red, want >= $N" \
	test "$red" != none -a "${red:-0}" -ge $N
check datapath_no_errors "datapath internal errors counted" \
	metric_is $MPORT 'meshd_datapath_events_total{event="err_internal"}' 0
check no_failures "failed connections counted" \
	test "$(metric $MPORT 'meshd_connections_total{service="web",backend="127.0.0.1:'$B1'",result="failed"}')" = 0

# Long-lived connections show as active, then go back to 0 once closed.
in_cgroup "$CG" python3 -c '
import os, socket, sys, time
c = [socket.create_connection(("'$VIP'", 80)) for _ in range(3)]
for _ in range(300):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)' "$TMP/release" >/dev/null 2>&1 &
hold=$!
check active_connections "active $(metric $MPORT 'meshd_backend_active_connections{service="web"'), want 3" \
	wait_for 10 metric_is $MPORT 'meshd_backend_active_connections{service="web"' 3
check prometheus_active "Prometheus active sum" \
	wait_for 10 promql_is 'sum(meshd_backend_active_connections{service="web"})' 3
touch "$TMP/release"
wait $hold
check active_back_to_zero "active stayed $(metric $MPORT 'meshd_backend_active_connections{service="web"')" \
	wait_for 10 metric_is $MPORT 'meshd_backend_active_connections{service="web"' 0

# Reloads are counted by result; an invalid file keeps generation and counts an error.
cp "$TMP/meshd.json" "$TMP/good.json"
sed -i 's/"round_robin"/"bogus"/' "$TMP/meshd.json"
kill -HUP $MESHD_PID
check reload_error_counted "meshd_config_reloads_total{result=error} stayed 0" \
	wait_for 5 metric_is $MPORT 'meshd_config_reloads_total{result="error"}' 1
cp "$TMP/good.json" "$TMP/meshd.json"
sed -i 's/"round_robin"/"least_request"/' "$TMP/meshd.json"
kill -HUP $MESHD_PID
check reload_ok_counted "meshd_config_reloads_total{result=ok} stayed 0" \
	wait_for 5 metric_is $MPORT 'meshd_config_reloads_total{result="ok"}' 1
check generation_bumped "generation $(metric $MPORT meshd_config_generation) after a change" \
	test "$(metric $MPORT meshd_config_generation)" = 2
check prometheus_generation "Prometheus generation" \
	wait_for 10 promql_is meshd_config_generation 2

curl -s $URL/metrics >"$TMP/after.txt"
check promtool_after_traffic "promtool: $(promtool check metrics <"$TMP/after.txt" 2>&1 | head -3)" \
	promtool check metrics <"$TMP/after.txt"

# Moving telemetry.metrics_listen on reload: the new port serves, the old one is closed.
sed -i "s/127.0.0.1:$MPORT/127.0.0.1:20015/" "$TMP/meshd.json"
kill -HUP $MESHD_PID
healthz_on() { curl -sf -o /dev/null "http://127.0.0.1:$1/healthz"; }
check listen_moved "nothing on the new metrics port" wait_for 5 healthz_on 20015
port_closed() { ! port_open 127.0.0.1 "$1"; }
check old_listener_closed "old metrics port still answers" port_closed $MPORT
check moved_generation "generation after the move" metric_is 20015 meshd_config_generation 3

# A taken metrics port stops a starting meshd, which exits non-zero naming the component.
spawn blocker python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 20014)); s.listen(); time.sleep(60)'
wait_for 5 port_open 127.0.0.1 20014
observe_cgroup busy
ADMIN_SOCK=$TMP/run2/admin.sock
observe_config "$TMP/busy.json" 20014 "[]" "$PIN-busy"
defer "'$MESHD' --cleanup --config '$TMP/busy.json'; rm -rf '$PIN-busy'"
timeout 20 "$MESHD" --config "$TMP/busy.json" >"$TMP/busy.log" 2>&1
r=$?
check port_in_use_exits "meshd exited $r with the metrics port taken" test $r -ne 0 -a $r -ne 124
check port_in_use_named "log does not name metrics: $(grep -i -m2 'error' "$TMP/busy.log")" \
	grep -q 'subsys=metrics msg="cannot listen" addr=127.0.0.1:20014 err="Address already in use"' \
	"$TMP/busy.log"
exit 0
