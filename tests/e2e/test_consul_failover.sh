#!/usr/bin/env bash
# Failover across datacenters with the real meshd, the real datapath and two Consul emulators
# (dc1, whose server forwards ?dc=dc2 reads to dc2's, as over the WAN): a service with
# discovery.consul.failover is served from the local datacenter while an instance passes there,
# from dc2 (real connects land there) once none does, and from dc1 again when one passes; meshctl
# backends and the metrics say which datacenter serves.
# Ports 22611-22612 (backends), 22631-22632 (emulators), 22698 (metrics); VIP 127.77.6.71.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mesh_client"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup consulfo)
VIP=127.77.6.71
MPORT=22698
CONF=$TMP/meshd.json
SOCK=$TMP/admin.sock

ctl() { "$MESHCTL" --socket "$SOCK" "$@"; }
metric() {
	curl -s --max-time 2 "http://127.0.0.1:$MPORT/metrics" |
		awk -v m="meshd_consul_failover_active{$1}" '$1 == m {print $2}'
}
metric_is() { test "$(metric "$1")" = "$2"; }

backend local1 22611 || fail setup "backend local1 did not start"
backend remote1 22612 || fail setup "backend remote1 did not start"
consul_two_dcs 22631 22632 || {
	fail setup "Consul emulators did not start"
	exit 1
}
dc_register "$DC1" api-local 127.0.0.1 22611
dc_register "$DC2" api-remote 127.0.0.1 22612

# The emulator forwards ?dc= to the other datacenter's server; an unknown one has no path.
check emulator_forwards_dc "$(curl -s "$DC1/v1/health/service/api?dc=dc2" | jq -c 'map(.Service.ID)')" \
	test "$(curl -s "$DC1/v1/health/service/api?dc=dc2" | jq -c 'map(.Service.ID)')" = '["api-remote"]'
check emulator_unknown_dc "$(curl -s -w ' %{http_code}' "$DC1/v1/health/service/api?dc=dc9")" \
	test "$(curl -s -w ' %{http_code}' "$DC1/v1/health/service/api?dc=dc9")" = "No path to datacenter 500"

failover_config "$CONF"
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}

# 1. An instance passes locally: the local datacenter serves.
check local_serves "served by '$(served_by t1 2>/dev/null)'" wait_for 10 serves t1 local1 20
check backends_say_local "$(ctl backends api | head -n 1)" \
	bash -c "'$MESHCTL' --socket '$SOCK' backends api | head -n 1 | grep -qx 'datacenter local'"
check metric_local "$(metric 'service="api",datacenter=""')" metric_is 'service="api",datacenter=""' 0

# 2. None passes locally: dc2's instance takes the connects.
dc_put "$DC1/v1/agent/check/fail/service:api-local"
check fails_over_to_dc2 "served by '$(served_by t2 2>/dev/null)'" wait_for 10 serves t2 remote1 20
check backends_say_failover "$(ctl backends api | head -n 1)" \
	bash -c "'$MESHCTL' --socket '$SOCK' backends api | head -n 1 | grep -q '^datacenter dc2 (failover'"
check metric_failover "$(metric 'service="api",datacenter="dc2"')" \
	wait_for 5 metric_is 'service="api",datacenter="dc2"' 1
check failover_logged "$(grep -m1 'failing over' "$TMP/meshd1.log")" \
	grep -q 'failing over" service=api datacenter=dc2 from=local backends=1' "$TMP/meshd1.log"

# 3. It passes locally again: back to dc1.
dc_put "$DC1/v1/agent/check/pass/service:api-local"
check fails_back "served by '$(served_by t3 2>/dev/null)'" wait_for 10 serves t3 local1 20
check failback_logged "$(grep -m1 'failing back' "$TMP/meshd1.log")" \
	grep -q 'failing back" service=api datacenter=local from=dc2' "$TMP/meshd1.log"

# 4. Neither passes: nothing is served (the local answer, empty). Consul's client rate limit
#    (2 queries, then one per 15 s per service) is spent by now: allow for it.
dc_put "$DC1/v1/agent/check/fail/service:api-local"
dc_put "$DC2/v1/agent/check/fail/service:api-remote"
empty() { ctl backends api | grep -q 127.0.0.1 && return 1 || return 0; }
check none_passing_anywhere "$(ctl backends api)" wait_for 40 empty
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
