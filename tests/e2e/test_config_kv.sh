#!/usr/bin/env bash
# Config from Consul KV (config_source.consul_kv) with the real meshd, the real datapath and the
# Consul emulator: Consul down at start -> the local file serves; the key's value arriving adds
# a service that real connects reach through its VIP; an invalid value is refused (each problem
# logged, meshd_config_reloads_total{result="error"} counted, the running config unchanged) and
# a later valid one still applies; a restart while Consul is down starts with the persisted
# value; the key deleted -> back to the file alone, the persisted copy removed.
# Ports 22741-22743 (backends), 22740 (emulator), 22797 (metrics); VIPs 127.77.74.10-11.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup config_kv)
VIP=127.77.74.10
WEB=127.77.74.11
MPORT=22797
CPORT=22740
CURL=http://127.0.0.1:$CPORT
KEY=meshd/node-kv
CONF=$TMP/meshd.json
STATE=$TMP/state/config_kv.state

start_consul() { consul_emulator $CPORT --data-file "$TMP/consul.json"; }
stop_consul() {
	exec 3>&2 2>/dev/null
	kill -9 "$CONSUL_PID"
	wait "$CONSUL_PID"
	exec 2>&3 3>&-
}
kv_put() { curl -sf -X PUT --data-binary "$1" "$CURL/v1/kv/$KEY" | grep -qx true; }
kv_delete() { curl -sf -X DELETE "$CURL/v1/kv/$KEY" | grep -qx true; }
# web_doc PORT: the KV document: service `web` on $WEB:80 served by 127.0.0.1:PORT.
web_doc() {
	printf '{"version":1,"services":[{"name":"api","vip":"%s","port":80,"backends":[{"address":"127.0.0.1","port":22741}]},{"name":"web","vip":"%s","port":80,"backends":[{"address":"127.0.0.1","port":%s}]}]}' \
		"$VIP" "$WEB" "$1"
}
# services: the names meshctl lists, as a JSON array.
services() { "$MESHCTL" --socket "$TMP/admin.sock" -o json services | jq -c '.services | map(.name)'; }
has_web() { services | jq -e 'index("web") != null' >/dev/null; }
no_web() { services | jq -e 'index("web") == null' >/dev/null; }
# served VIP N: the backends that answered N connects to VIP:80, sorted and joined.
served() { through_vip "$1" "$2" | sort -u | paste -sd, -; }
# metric SELECTOR: the sum of the samples of SELECTOR (name{labels...) on meshd's /metrics.
metric() {
	curl -s "http://127.0.0.1:$MPORT/metrics" |
		awk -v sel="$1" 'index($0, sel) == 1 { s += $NF; n++ } END { print n ? s : "none" }'
}
metric_is() { test "$(metric "$1")" = "$2"; }
generation() { "$MESHCTL" --socket "$TMP/admin.sock" -o json status | jq -r .config_generation; }
log_mark() { MARK=$(wc -l <"$TMP/$1.log"); }
logged_since_mark() { tail -n +$((MARK + 1)) "$TMP/$1.log" | grep -q "$2"; }

for i in 1 2 3; do backend "k$i" "2274$i" || fail setup "backend k$i did not start"; done
daemon_config "$CONF" "22741" "
	.config_source = { consul_kv: \"$KEY\" } |
	.discovery.consul = { address: \"$CURL\" }"

# 1. Consul down at start: the local file is the configuration.
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start with Consul down: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}
check consul_down_at_start_uses_file "services: $(services)" \
	test "$(services)" = '["api"]'
check file_config_serves "served by $(served $VIP 10)" test "$(served $VIP 10)" = k1
check kv_outage_logged "$(grep -m1 consul "$TMP/meshd1.log")" \
	wait_for 10 grep -q 'msg="query failed, keeping last known backends" service="/v1/kv/meshd/node-kv?raw' \
	"$TMP/meshd1.log"

# 2. Consul comes up with the key set: its service is added, and real connects reach it.
start_consul || {
	fail setup "Consul emulator did not start"
	exit 1
}
kv_put "$(web_doc 22742)" || fail setup "cannot put the KV value"
check kv_value_applied "services: $(services)" wait_for 20 has_web
check kv_service_served "served by $(served $WEB 10)" test "$(served $WEB 10)" = k2
check kv_reload_counted_ok "$(metric 'meshd_config_reloads_total{result="ok"}')" \
	metric_is 'meshd_config_reloads_total{result="ok"}' 1
check kv_value_persisted "$(head -c 200 "$STATE" 2>&1)" \
	test "$(head -n 1 "$STATE")" = "$KEY" -a "$(tail -n +2 "$STATE")" = "$(web_doc 22742)"
"$MESHCTL" --socket "$TMP/admin.sock" -o json config show >"$TMP/running.json"
check config_show_has_kv_service "$(jq -c '.services | map(.name)' "$TMP/running.json" 2>&1)" \
	test "$(jq -c '.services | map(.name)' "$TMP/running.json")" = '["api","web"]'

# 3. An invalid value: every problem logged, the error counted, nothing changes.
gen=$(generation)
log_mark meshd1
kv_put '{"cgroup":"/sys/fs/cgroup","services":[{"name":"web","vip":"not-an-ip","port":80}]}' ||
	fail setup "cannot put the invalid KV value"
check invalid_kv_counted "$(metric 'meshd_config_reloads_total{result="error"}')" \
	wait_for 20 metric_is 'meshd_config_reloads_total{result="error"}' 1
check invalid_kv_errors_logged "$(grep 'invalid configuration' "$TMP/meshd1.log" | tail -n 3)" \
	logged_since_mark meshd1 'error="services\[0\]\.vip: '
check restart_only_key_refused "$(grep 'cgroup: ' "$TMP/meshd1.log" | tail -n 1)" \
	logged_since_mark meshd1 'error="cgroup: cannot come from the Consul KV config'
check invalid_kv_says_running_stays "$(grep 'reload failed' "$TMP/meshd1.log" | tail -n 1)" \
	logged_since_mark meshd1 'reload failed; the running configuration stays.*source=consul_kv'
check invalid_kv_keeps_generation "generation $(generation), was $gen" test "$(generation)" = "$gen"
check invalid_kv_keeps_service "served by $(served $WEB 10)" test "$(served $WEB 10)" = k2
check invalid_kv_not_persisted "$(tail -n +2 "$STATE" | head -c 120)" \
	test "$(tail -n +2 "$STATE")" = "$(web_doc 22742)"

# 4. A valid value after the refused one applies (web moves to k3).
kv_put "$(web_doc 22743)" || fail setup "cannot put the second KV value"
check later_valid_kv_applied "served by $(served $WEB 10)" \
	wait_output 25 k3 served $WEB 10
check later_valid_kv_persisted "$(tail -n +2 "$STATE" | head -c 120)" \
	wait_output 5 "$(web_doc 22743)" tail -n +2 "$STATE"

# 5. A SIGHUP reload of the file keeps the KV layer over it.
log_mark meshd1
kill -HUP "$MESHD_PID"
wait_for 10 logged_since_mark meshd1 'msg="configuration unchanged"\|msg="configuration reloaded"'
check file_reload_keeps_kv_layer "services: $(services)" has_web

# 6. Restart while Consul is down: the persisted value is the configuration at start.
stop_meshd "$MESHD_PID"
stop_consul
start_meshd meshd2 "$CONF" || {
	fail restart "meshd did not start: $(tail -n 5 "$TMP/meshd2.log")"
	exit 1
}
check restart_logs_persisted_kv "$(grep -m1 'persisted' "$TMP/meshd2.log")" \
	grep -q 'msg="starting with the persisted Consul KV config" key=meshd/node-kv' \
	"$TMP/meshd2.log"
check restart_during_outage_serves_kv "served by $(served $WEB 10)" test "$(served $WEB 10)" = k3

# 7. Consul back, the key deleted: back to the file alone; the persisted copy goes.
start_consul || fail setup "Consul emulator did not restart"
kv_delete || fail setup "cannot delete the key"
check deleted_key_back_to_file "services: $(services)" wait_for 25 no_web
check deleted_key_unpersisted "$(ls "$TMP/state")" wait_for 5 test ! -e "$STATE"
check file_still_serves "served by $(served $VIP 10)" test "$(served $VIP 10)" = k1
exit $SUITE_FAILED
