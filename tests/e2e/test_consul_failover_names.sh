#!/usr/bin/env bash
# Failover across datacenters for instances whose address is a host name: resolved (with
# discovery.dns.servers, here the test's DNS responder) before a datacenter's set counts, as for
# a service that does not fail over. A local instance whose name does not resolve counts as
# absent (logged as skipped): the service fails over to dc2's instance, itself a host name, and
# fails back once the local name resolves again.
# Ports 22621-22622 (backends), 22633-22634 (emulators), 22655 (DNS), 22699 (metrics);
# VIP 127.77.6.72.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mesh_client"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup consulfonames)
VIP=127.77.6.72
MPORT=22699
CONF=$TMP/meshd.json

backend local1 22621 || fail setup "backend local1 did not start"
backend remote1 22622 || fail setup "backend remote1 did not start"
jq -n '{ udp_max_answers: 100, srv: {}, hosts: {
	"api.dc1.mesh.test": { mode: "ok", ttl: 5, a: ["127.0.0.1"] },
	"api.dc2.mesh.test": { mode: "ok", ttl: 5, a: ["127.0.0.1"] } } }' >"$TMP/zone.json"
spawn responder python3 "$ROOT/tests/e2e/dns_responder.py" --addr 127.0.0.1 --port 22655 \
	--zone "$TMP/zone.json" --log "$TMP/queries.log"
consul_two_dcs 22633 22634 && wait_for 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/22655' 2>/dev/null || {
	fail setup "Consul emulators or the DNS responder did not start"
	exit 1
}
dc_register "$DC1" api-local api.dc1.mesh.test 22621
dc_register "$DC2" api-remote api.dc2.mesh.test 22622

failover_config "$CONF" '.discovery.dns = { servers: ["127.0.0.1:22655"] }'
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}

# 1. The local instance, a host name, is resolved and serves.
check local_name_serves "served by '$(served_by t1 2>/dev/null)'; $(tail -n 2 "$TMP/meshd1.log")" \
	wait_for 10 serves t1 local1
check local_name_asked "queries: $(tail -n 2 "$TMP/queries.log")" \
	grep -q 'api.dc1.mesh.test A ok 1' "$TMP/queries.log"

# 2. The local name stops resolving: no usable local instance, dc2's (a host name) serves.
dc_register "$DC1" api-local gone.dc1.mesh.test 22621
check fails_over_to_dc2_name "served by '$(served_by t2 2>/dev/null)'" \
	wait_for 10 serves t2 remote1
check unresolved_local_logged "$(grep 'instances skipped' "$TMP/meshd1.log" | tail -n1)" \
	grep -q 'instances skipped.*service=api datacenter=local skipped=1 first_problem="host name did not resolve"' \
	"$TMP/meshd1.log"
check failover_logged "$(grep 'failing over' "$TMP/meshd1.log" | tail -n1)" \
	grep -q 'failing over" service=api datacenter=dc2 from=local backends=1' "$TMP/meshd1.log"

# 3. It resolves again: back to the local instance.
dc_register "$DC1" api-local api.dc1.mesh.test 22621
check fails_back "served by '$(served_by t3 2>/dev/null)'" wait_for 20 serves t3 local1
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
