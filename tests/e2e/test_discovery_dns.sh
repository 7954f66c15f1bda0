#!/usr/bin/env bash
# DNS SRV discovery with the real meshd and datapath.
#  1. dnsmasq on 127.0.0.83 serving SRV, A and AAAA: backends appear with the SRV weights, only
#     the lowest priority is used, real connects through the VIP reach them; a changed record is
#     picked up once its TTL expired; a reload switches static -> dns.
#  2. A small responder (tests/e2e/dns_responder.py) for what dnsmasq cannot do: TTL 0 answers
#     asked again at min_ttl, not in a loop; more than 3 records (UDP truncated, retried over
#     TCP); SERVFAIL and timeouts keep the last set (sync errors counted, discovery down);
#     NXDOMAIN shorter than hold_nx changes nothing, longer empties the set; hold_timeout.
#  3. A restart during a DNS outage, datapath removed, serves the persisted set.
# Every step waits on what meshd, the datapath or the responder shows.
# Ports 22401-22406 (backends), 22453 (dnsmasq), 22454 (responder), 22497 (metrics);
# VIP 127.77.6.50; DNS servers on 127.0.0.83 and 127.0.0.84.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mesh_client" "$TOOLS/dptool"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup dns)
VIP=127.77.6.50
MPORT=22497
CONF=$TMP/meshd.json
SOCK=$TMP/admin.sock
for i in 1 2 3 4 5 6; do backend "d$i" "2240$i" || fail setup "backend d$i did not start"; done

# backends: "addr:port@weight" of service api in the datapath, sorted, comma-separated.
backends() {
	"$TOOLS/dptool" --pin "$PIN" stats -o json 2>/dev/null |
		jq -r '[.[] | select(.kind == "backend" and .service == "api") |
			"\(.addr)@\(.weight)"] | sort | join(",")'
}
backends_are() { [ "$(backends)" = "$1" ]; }
metric() { curl -s --max-time 2 "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
logged() { grep -Eq "$1" "$TMP/$LOG.log"; }
# logged_since MARK PATTERN: a line of this meshd's log after line MARK matches.
logged_since() { tail -n +$(($1 + 1)) "$TMP/$LOG.log" | grep -Eq "$2"; }

# --- 1. dnsmasq ---------------------------------------------------------------------------------
start_dnsmasq() { # EXTRA_ARGS...
	spawn dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file= \
		--no-resolv --no-hosts \
		--listen-address=127.0.0.83 --bind-interfaces --port=22453 --local-ttl=1 \
		--host-record=a.mesh.test,127.0.0.1,::1 --host-record=b.mesh.test,127.0.0.1 \
		--host-record=c.mesh.test,127.0.0.1 "$@"
	DNSMASQ_PID=$SPAWNED_PID
	wait_for 5 bash -c 'exec 3<>/dev/tcp/127.0.0.83/22453' 2>/dev/null
}
# api: a.mesh.test:22401 weight 10 and b.mesh.test:22402 weight 30 at priority 0; c at
# priority 1 (a backup that must not be used while priority 0 resolves).
start_dnsmasq --srv-host=_api._tcp.mesh.test,a.mesh.test,22401,0,10 \
	--srv-host=_api._tcp.mesh.test,b.mesh.test,22402,0,30 \
	--srv-host=_api._tcp.mesh.test,c.mesh.test,22403,1,5 || fail setup "dnsmasq did not start"

dns_conf='.discovery = { backend: "dns", dns: { servers: ["127.0.0.83:22453"], min_ttl: "200ms",
	services: [{ name: "api", srv: "_api._tcp.mesh.test" }] } } | .services[0].backends = []'
# Start static (d6), then switch to dns by reload.
daemon_config "$CONF" "22406"
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}
check static_first "backends: $(backends)" wait_for 5 backends_are "127.0.0.1:22406@1"
daemon_config "$CONF" "22406" "$dns_conf"
kill -HUP "$MESHD_PID"
want="127.0.0.1:22401@10,127.0.0.1:22402@30,[::1]:22401@10"
check switch_to_dns_by_reload "backends: $(backends)" wait_for 10 backends_are "$want"
check lowest_priority_only_with_weights "backends: $(backends)" backends_are "$want"
traffic t1 60
check connects_through_vip "served by '$(served_by t1)' fail=$(failed t1)" \
	test "$(served_by t1)" = "d1,d2" -a "$(failed t1)" = 0
check sync_counted "ok syncs: $(metric 'meshd_discovery_sync_total{backend="dns",result="ok"}')" \
	test "$(metric 'meshd_discovery_sync_total{backend="dns",result="ok"}')" -ge 1
check discovery_up "up: $(metric 'meshd_discovery_up{backend="dns"}')" \
	test "$(metric 'meshd_discovery_up{backend="dns"}')" = 1

# A changed record (b moves to 22404, weight 20) is picked up once the TTL (1 s) expired.
kill_wait "$DNSMASQ_PID"
start_dnsmasq --srv-host=_api._tcp.mesh.test,a.mesh.test,22401,0,10 \
	--srv-host=_api._tcp.mesh.test,b.mesh.test,22404,0,20 \
	--srv-host=_api._tcp.mesh.test,c.mesh.test,22403,1,5 || fail setup "dnsmasq did not restart"
want="127.0.0.1:22401@10,127.0.0.1:22404@20,[::1]:22401@10"
check changed_record_after_ttl "backends: $(backends)" wait_for 10 backends_are "$want"
traffic t2 60
check changed_record_serves "served by '$(served_by t2)' fail=$(failed t2)" \
	test "$(served_by t2)" = "d1,d4" -a "$(failed t2)" = 0
# Priority 0 gone: the backup priority takes over.
kill_wait "$DNSMASQ_PID"
start_dnsmasq --srv-host=_api._tcp.mesh.test,c.mesh.test,22403,1,5 ||
	fail setup "dnsmasq did not restart"
check backup_priority_when_first_is_gone "backends: $(backends)" \
	wait_for 10 backends_are "127.0.0.1:22403@5"
stop_meshd "$MESHD_PID"
kill_wait "$DNSMASQ_PID"
"$MESHD" --cleanup --config "$CONF" >/dev/null 2>&1

# --- 2. the responder -----------------------------------------------------------------------------
ZONE=$TMP/zone.json
QLOG=$TMP/queries.log
ONE='[[0,10,22401,"t1.mesh.test"]]'
zone() { # MODE TTL [RECORDS_JSON] [HOSTS_MODE]
	jq -n --arg mode "$1" --argjson ttl "$2" --argjson rec "${3:-$ONE}" \
		--arg hm "${4:-ok}" '{ udp_max_answers: 3,
		srv: { "_api._tcp.mesh.test": { mode: $mode, ttl: $ttl, records: $rec } },
		hosts: { "t1.mesh.test": { mode: $hm, ttl: $ttl, a: ["127.0.0.1"] } } }' >"$ZONE.tmp"
	mv "$ZONE.tmp" "$ZONE"
}
zone ok 0
spawn responder python3 "$ROOT/tests/e2e/dns_responder.py" --addr 127.0.0.84 --port 22454 \
	--zone "$ZONE" --log "$QLOG"
wait_for 5 bash -c 'exec 3<>/dev/tcp/127.0.0.84/22454' 2>/dev/null || fail setup "responder"
srv_queries() { grep -c ' _api._tcp.mesh.test SRV ' "$QLOG" 2>/dev/null || echo 0; }
queries_at_least() { [ "$(srv_queries)" -ge "$1" ]; }
responder_conf='.discovery = { backend: "dns", dns: { servers: ["127.0.0.84:22454"],
	min_ttl: "1s", hold_nx: "3s",
	services: [{ name: "api", srv: "_api._tcp.mesh.test" }] } } | .services[0].backends = []'
daemon_config "$CONF" "22406" "$responder_conf"
LOG=meshd2
start_meshd meshd2 "$CONF" || fail start2 "meshd did not start: $(tail -n 5 "$TMP/meshd2.log")"
check ttl0_backends "backends: $(backends)" wait_for 10 backends_are "127.0.0.1:22401@10"
# TTL 0: asked again at min_ttl (1 s), not in a loop.
wait_for 10 queries_at_least 4
gaps=$(grep ' _api._tcp.mesh.test SRV ' "$QLOG" | awk 'NR > 1 {printf "%.2f ", $1 - p} {p = $1}')
check ttl0_refreshed_at_min_ttl "gaps between SRV queries: $gaps" \
	awk -v g="$gaps" 'BEGIN {n = split(g, a, " "); for (i = 1; i <= n; i++) if (a[i] < 0.9 || a[i] > 2.5) exit 1; exit !(n >= 3)}'

# More than 3 records: the UDP answer is truncated, the TCP one has all five.
five='[[0,1,22401,"t1.mesh.test"],[0,2,22402,"t1.mesh.test"],[0,3,22403,"t1.mesh.test"],
	[0,4,22404,"t1.mesh.test"],[0,5,22405,"t1.mesh.test"]]'
zone ok 1 "$five"
want="127.0.0.1:22401@1,127.0.0.1:22402@2,127.0.0.1:22403@3,127.0.0.1:22404@4,127.0.0.1:22405@5"
check truncated_answer_retried_over_tcp "backends: $(backends)" wait_for 10 backends_are "$want"
check tcp_query_seen "no TCP query in $(tail -n 3 "$QLOG" | tr '\n' ' ')" \
	grep -q ' tcp _api._tcp.mesh.test SRV ok 5' "$QLOG"
traffic t3 50
check five_backends_serve "served by '$(served_by t3)' fail=$(failed t3)" \
	test "$(served_by t3)" = "d1,d2,d3,d4,d5" -a "$(failed t3)" = 0

# SERVFAIL and timeouts keep the last set; the failures are counted and discovery is down. (On
# SERVFAIL c-ares asks the next server; when none answers better it reports "error".)
errors_before=$(metric 'meshd_discovery_sync_total{backend="dns",result="error"}')
for mode in servfail timeout; do
	mark=$(wc -l <"$TMP/$LOG.log")
	zone "$mode" 1 "$five"
	base=$(srv_queries)
	wait_for 15 queries_at_least $((base + 2))
	check "${mode}_keeps_last_set" "backends: $(backends)" backends_are "$want"
	check "${mode}_logged" "no warning" \
		wait_for 10 logged_since "$mark" \
		"dns resolution failed, keeping last known backends.*status=($mode|error)"
	check "${mode}_discovery_down" "up: $(metric 'meshd_discovery_up{backend="dns"}')" \
		wait_output 10 0 metric 'meshd_discovery_up{backend="dns"}'
	zone ok 1 "$five"
	wait_output 10 1 metric 'meshd_discovery_up{backend="dns"}'
done
check failures_counted "sync errors: $errors_before -> $(metric 'meshd_discovery_sync_total{backend="dns",result="error"}')" \
	test "$(metric 'meshd_discovery_sync_total{backend="dns",result="error"}')" -gt "${errors_before:-0}"
traffic t4 20
check served_after_failures "served by '$(served_by t4)' fail=$(failed t4)" test "$(failed t4)" = 0

# NXDOMAIN for less than hold_nx (3 s): nothing changes. For longer: the set empties.
mark=$(wc -l <"$TMP/meshd2.log")
zone nxdomain 1 "$five"
base=$(srv_queries)
wait_for 10 queries_at_least $((base + 1))
zone ok 1 "$five"
wait_for 10 queries_at_least $((base + 3))
check nxdomain_shorter_than_hold_keeps "backends: $(backends)" backends_are "$want"
check nxdomain_shorter_never_emptied "$(tail -n +$mark "$TMP/meshd2.log" | grep -m1 'serving none')" \
	bash -c "! tail -n +$mark '$TMP/meshd2.log' | grep -q 'backends=5->0'"
zone nxdomain 1 "$five"
t0=$SECONDS
check nxdomain_longer_than_hold_empties "backends: $(backends)" wait_for 15 backends_are ""
check nxdomain_waited_for_hold "emptied after $((SECONDS - t0)) s (hold_nx 3 s)" \
	test $((SECONDS - t0)) -ge 2
zone ok 1 "$five"
check recovers_after_nxdomain "backends: $(backends)" wait_for 10 backends_are "$want"

# --- 3. restart during a DNS outage serves the persisted set --------------------------------------
check state_persisted_with_source "$(cat "$TMP/state/discovery.state" 2>&1 | head -n 2 | tr '\n' ' ')" \
	wait_for 5 grep -q '^service api dns [0-9]* 5$' "$TMP/state/discovery.state"
zone timeout 1 "$five"
stop_meshd "$MESHD_PID"
"$MESHD" --cleanup --config "$CONF" >/dev/null 2>&1
LOG=meshd3
start_meshd meshd3 "$CONF" || fail start3 "meshd did not restart: $(tail -n 5 "$TMP/meshd3.log")"
check restart_restores_persisted "$(grep -m1 'persisted' "$TMP/meshd3.log")" \
	grep -q 'msg="restored persisted backends" service=api source=dns backends=5' "$TMP/meshd3.log"
check restart_during_outage_serves "backends: $(backends)" backends_are "$want"
traffic t5 50
check restart_during_outage_connects "served by '$(served_by t5)' fail=$(failed t5)" \
	test "$(served_by t5)" = "d1,d2,d3,d4,d5" -a "$(failed t5)" = 0
check outage_still_logged "no timeout warning" \
	wait_for 15 logged 'dns resolution failed, keeping last known backends.*status=timeout'

# hold_timeout set: timeouts keep the set that long, then empty it.
daemon_config "$CONF" "22406" "$responder_conf | .discovery.dns.hold_timeout = \"2s\""
kill -HUP "$MESHD_PID"
check hold_timeout_empties "backends: $(backends)" wait_for 20 backends_are ""
zone ok 1 "$five"
check recovers_after_hold_timeout "backends: $(backends)" wait_for 10 backends_are "$want"
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
