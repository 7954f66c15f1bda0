#!/usr/bin/env bash
# Catalog discovery (discovery.consul.catalog) with the real meshd, the real datapath and the
# Consul emulator: a service tagged `mesh` with meta mesh-vip, listed nowhere in the config, is
# served at that VIP through real connects, shown by meshctl as from the catalog and exported in
# the metrics; a catalog service whose VIP is a configured service's is refused and logged once,
# naming both; a malformed mesh-vip is logged and skipped; Consul down keeps the catalog service
# served, and a meshd restarted (datapath removed) during the outage serves the persisted one;
# once it loses its tag its VIP is no longer redirected; a reload that lists a catalog service's
# name takes it over.
# Ports 22811-22814 (backends), 22830 (emulator), 22896 (metrics); VIPs 127.77.31.10, .20, .30.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mesh_client"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup catalog)
VIP=127.77.31.10 # the configured service `api`
SHOP=127.77.31.20
MPORT=22896
CPORT=22830
CURL=http://127.0.0.1:$CPORT
CONF=$TMP/meshd.json
ctl() { "$MESHCTL" --socket "$TMP/admin.sock" "$@"; }

start_consul() {
	consul_emulator $CPORT --data-file "$TMP/catalog.json" --log-file "$TMP/consul-requests.log"
}
consul_put() { curl -sf -X PUT "$CURL$1" ${2:+-d "$2"} >/dev/null; }
# register ID NAME PORT TAGS META: an instance on 127.0.0.1:PORT with a passing TTL check.
register() {
	consul_put /v1/agent/service/register "{\"ID\":\"$1\",\"Name\":\"$2\",\"Address\":\"127.0.0.1\",
		\"Port\":$3,\"Tags\":$4,\"Meta\":$5,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}
# traffic NAME VIP COUNT: COUNT connects to VIP:80 from inside the cgroup.
traffic() { in_cgroup "$CG" "$TOOLS/mesh_client" -n "$3" "$2" 80 >"$TMP/$1.out" 2>&1; }
logged() { grep -q "$2" "$TMP/$1.log"; }
origin() { ctl -o json services | jq -r --arg n "$1" '.services[] | select(.name == $n) | .origin'; }

for i in 1 2 4; do backend "k$i" "2281$i" || fail setup "backend k$i did not start"; done
start_consul || {
	fail setup "Consul emulator did not start"
	exit 1
}
register shop-1 shop 22811 '["mesh"]' '{"mesh-vip":"127.77.31.20:80"}'
register other-1 other 22812 '["web"]' '{"mesh-vip":"127.77.31.30:80"}' # not tagged

daemon_config "$CONF" "22814" "
	.discovery = { backend: \"consul\", consul: { address: \"$CURL\", wait: \"30s\",
		catalog: { enabled: true } } }"
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}

# 1. The tagged service is defined with its VIP, gets its backends and is served.
check tagged_service_defined "$(grep -m2 catalog "$TMP/meshd1.log")" \
	wait_for 10 logged meshd1 'msg="service from the catalog added" service=shop vip=127.77.31.20:80'
check tagged_service_backends "$(grep -m3 'backends changed' "$TMP/meshd1.log")" \
	wait_for 10 logged meshd1 'msg="backends changed" service=shop source=consul backends=0->1'
traffic t1 $SHOP 20
check catalog_service_served "served by '$(served_by t1)' fail=$(failed t1)" \
	test "$(served_by t1)" = "k1" -a "$(failed t1)" = 0
traffic t1b $VIP 10
check configured_service_still_served "served by '$(served_by t1b)'" test "$(served_by t1b)" = "k4"
check untagged_service_ignored "$(grep -m1 'service=other' "$TMP/meshd1.log")" \
	sh -c "! grep -q 'service=other' '$TMP/meshd1.log'"
check meshctl_marks_catalog "api=$(origin api) shop=$(origin shop)" \
	test "$(origin shop)" = catalog -a "$(origin api)" = config
check meshctl_backends_marks_catalog "$(ctl backends shop 2>&1 | head -n 2)" \
	sh -c "'$MESHCTL' --socket '$TMP/admin.sock' backends shop | grep -q 'defined by the consul catalog'"
check metrics_export_catalog_service "$(curl -s http://127.0.0.1:$MPORT/metrics | grep -m1 shop)" \
	sh -c "curl -s http://127.0.0.1:$MPORT/metrics | grep -q 'service=\"shop\"'"

# 2. A catalog service whose VIP is the configured service's is refused, logged once naming both;
#    a malformed mesh-vip is logged and skipped. Another catalog change repeats neither log.
register dup-1 dup 22812 '["mesh"]' '{"mesh-vip":"127.77.31.10:80"}'
check clashing_vip_refused "$(grep -m1 'refused' "$TMP/meshd1.log")" \
	wait_for 10 logged meshd1 'msg="service from the catalog refused: already served" service=dup vip=127.77.31.10:80 clashes_with=api on=vip'
register bad-1 bad 22812 '["mesh"]' '{"mesh-vip":"not-an-endpoint"}'
check malformed_vip_skipped "$(grep -m1 'service=bad' "$TMP/meshd1.log")" \
	wait_for 10 logged meshd1 'msg="consul catalog service skipped: bad mesh-vip" service=bad'
register late-1 late 22812 '["mesh"]' '{"mesh-vip":"127.77.31.30:80"}'
wait_for 10 logged meshd1 'msg="service from the catalog added" service=late'
check refusal_logged_once "$(grep -c 'service=dup' "$TMP/meshd1.log") lines" \
	test "$(grep -c 'refused: already served" service=dup' "$TMP/meshd1.log")" = 1
check neither_served "dup=$(origin dup) bad=$(origin bad)" test -z "$(origin dup)$(origin bad)"
traffic t2 $VIP 10
check clash_leaves_configured_alone "served by '$(served_by t2)'" test "$(served_by t2)" = "k4"
STATE=$TMP/state/discovery.state
check catalog_service_persisted "$(cat "$STATE" 2>&1 | tr '\n' ' ')" \
	wait_for 5 grep -qs '^service shop consul [0-9]* 1 0 127.77.31.20 80$' "$STATE"

# 3. Consul down: the catalog service keeps being served. Restart while it is down, the pinned
#    datapath removed: the persisted catalog service is served again.
kill_wait "$CONSUL_PID"
check outage_noticed "$(grep -c 'query failed' "$TMP/meshd1.log") failures logged" \
	wait_for 10 logged meshd1 'msg="query failed, keeping last known backends" service="/v1/catalog/services'
traffic t2b $SHOP 10
check consul_down_keeps_catalog_service "served by '$(served_by t2b)' fail=$(failed t2b)" \
	test "$(served_by t2b)" = "k1" -a "$(failed t2b)" = 0
stop_meshd "$MESHD_PID"
"$MESHD" --cleanup --config "$CONF" >"$TMP/cleanup.log" 2>&1
start_meshd meshd2 "$CONF" || fail restart "meshd did not restart: $(tail -n 3 "$TMP/meshd2.log")"
check restart_restores_catalog_service "$(grep -m2 restored "$TMP/meshd2.log")" \
	logged meshd2 'msg="restored persisted service from the catalog" service=shop backends=1'
traffic t3 $SHOP 20
check restart_with_consul_down_serves_it "served by '$(served_by t3)' fail=$(failed t3)" \
	test "$(served_by t3)" = "k1" -a "$(failed t3)" = 0

# 4. Consul back: the service loses its tag (its instance still runs), then its VIP is no longer
#    redirected.
start_consul || fail consul_back "emulator did not restart"
wait_for 15 logged meshd2 'msg="consul catalog: tagged services changed'
register shop-1 shop 22811 '["web"]' '{"mesh-vip":"127.77.31.20:80"}'
check leaving_service_removed "$(grep 'catalog' "$TMP/meshd2.log" | tail -n 2)" \
	wait_for 15 logged meshd2 'msg="service from the catalog removed" service=shop'
traffic t4 $SHOP 5
check removed_vip_not_redirected "served by '$(served_by t4)' fail=$(failed t4)" \
	test -z "$(served_by t4)" -a "$(failed t4)" = 5
check removed_from_meshctl "origin '$(origin shop)'" test -z "$(origin shop)"

# 5. A reload that lists `late` in the config (another VIP, backend k2): the catalog's `late`
#    leaves in the reload's transaction, the configured one is served, the catalog's is refused.
traffic t5 127.77.31.30 5
check catalog_late_served "served by '$(served_by t5)'" test "$(served_by t5)" = "k2"
jq '.services += [{ name: "late", vip: "127.77.31.31", port: 80,
	backends: [{ address: "127.0.0.1", port: 22814, weight: 1 }] }]' "$CONF" >"$CONF.new" &&
	mv "$CONF.new" "$CONF"
kill -HUP "$MESHD_PID"
check reload_takes_name_from_catalog "$(grep 'late' "$TMP/meshd2.log" | tail -n 2)" \
	wait_for 10 logged meshd2 'msg="service from the catalog leaves with the reload" service=late'
check catalog_twin_refused_after_reload "$(grep 'refused' "$TMP/meshd2.log" | tail -n 1)" \
	wait_for 10 logged meshd2 'refused: already served" service=late vip=127.77.31.30:80 clashes_with=late on=name'
traffic t6 127.77.31.31 5
check configured_late_served "served by '$(served_by t6)' origin $(origin late)" \
	test "$(served_by t6)" = "k4" -a "$(origin late)" = config
traffic t7 127.77.31.30 3
check old_catalog_vip_released "served by '$(served_by t7)' fail=$(failed t7)" \
	test -z "$(served_by t7)" -a "$(failed t7)" = 3
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
