#!/usr/bin/env bash
# Outbound mTLS dials the port a peer advertises in Consul (Service.Meta["mesh-port"]), not this
# host's own mtls.inbound_listen port. Two hosts whose meshd listen on different inbound ports
# (a: 15008, b: 15018) register their service in the Consul emulator (meshd adds `mesh-port`)
# and discover each other's through it: web (host a) -> api (host b) and api -> web both
# connect. A hand-registered instance with a malformed mesh-port is logged once and dialled at
# the default port. VIPs 127.77.9.10 (api) and 127.77.9.11 (web); backends 8080 (b), 8081 (a).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root api
backend_b api 8080 || fail setup "backend api did not start"
spawn backend-web nsenter --net="/run/netns/$HA" python3 "$ROOT/tests/e2e/servers/backend.py" \
	--name web --port 8081 --addr "$IP_A" --health-file /dev/null
wait_for 5 in_host "$HA" bash -c "exec 3<>/dev/tcp/$IP_A/8081" 2>/dev/null ||
	fail setup "backend web did not start"
consul_up || {
	fail setup "consul emulator did not start: $(tail -n 3 "$TMP/consul.log")"
	exit 1
}

# mesh_config HOST INBOUND_PORT LOCAL LOCAL_ADDR LOCAL_PORT REMOTE REMOTE_VIP
mesh_config() {
	host_config "$TMP/$1.json" "$1" "
		.mtls.inbound_listen = \"0.0.0.0:$2\" |
		.discovery = { backend: \"consul\", consul: { address: \"$CONSUL_URL\", wait: \"30s\",
			services: [\"$6\"], register: [{ name: \"$3\", address: \"$4:$5\",
				check: { type: \"tcp\", interval: \"1s\", timeout: \"500ms\" } }] } } |
		.services = [{ name: \"$6\", vip: \"$7\", port: 80, mtls: true, backends: [] }] |
		.identities = [{ cgroup: \"$(eval echo "\${CG_$1#"$CG2"}")/$3\", service: \"$3\",
			ports: [$5] }] |
		.authorization = { default_action: \"deny\", rules: [
			{ source: \"$6\", destination: \"$3\", action: \"allow\" }] }"
}
mesh_config a 15008 web "$IP_A" 8081 api 127.77.9.10
mesh_config b 15018 api "$IP_B" 8080 web 127.77.9.11
start_hosts

passing() { # SERVICE: one passing instance with a mesh-port
	[ "$(consul_api GET "/v1/health/service/$1?passing=1" |
		jq -r '.[0].Service.Meta["mesh-port"] // empty')" = "$2" ]
}
check mesh_port_registered "api: $(consul_api GET /v1/health/service/api | jq -c '.[].Service.Meta')" \
	wait_for 15 passing api 15018
wait_for 15 passing web 15008
# Both instances turned passing while each meshd was already watching: their query loops may be
# paced by the client rate limit (2 answers, then one per 15 s). Restarted, each reads the other's
# passing instance at once (and starts from its persisted set, mesh ports included).
for h in a b; do
	kill "$(eval echo "\$PID_$h")" && wait "$(eval echo "\$PID_$h")" 2>/dev/null
	start_host $h "$TMP/$h.json" || fail "restart_$h" "meshd $h did not start again"
done
has_backend() { ctl "$1" backends "$2" 2>/dev/null | grep -q "$3"; }
wait_for 10 has_backend a api "$IP_B" && wait_for 10 has_backend b web "$IP_A" ||
	fail discovered "a: $(ctl a backends api 2>&1 | tail -n 3) b: $(ctl b backends web 2>&1 | tail -n 3)"

many=$(mc "$HA" "$CG_a/web" many 127.77.9.10 80 5)
check a_to_b_at_advertised_port "$many; $(grep -i 'mtls' "$TMP/a.log" | tail -n 2)" \
	test "$(jq .ok <<<"$many")" = 5
many=$(mc "$HB" "$CG_b/api" many 127.77.9.11 80 5)
check b_to_a_at_advertised_port "$many; $(grep -i 'mtls' "$TMP/b.log" | tail -n 2)" \
	test "$(jq .ok <<<"$many")" = 5
peer=$(ctl a -o json pool 2>/dev/null | jq -r ".pool[0].peer // empty")
check pool_peer_is_mesh_port "a's pool: $(ctl a -o json pool 2>&1 | head -c 300)" \
	test "$peer" = "$IP_B:15018"

# A malformed mesh-port: the instance stays, dialled at the default port (a's own 15008, where
# nothing listens on b: connects to it fail), and the warning is logged once.
consul_api PUT /v1/agent/service/register "{\"ID\":\"api-bad\",\"Name\":\"api\",
	\"Address\":\"$IP_B\",\"Port\":8082,\"Meta\":{\"mesh-port\":\"15x\"}}" >/dev/null
warned() { log_has a 'malformed mesh-port.*instance=api-bad' 1; }
check malformed_mesh_port_logged "$(grep -c 'malformed mesh-port' "$TMP/a.log") lines" \
	wait_for 10 warned
consul_api PUT /v1/agent/service/register "{\"ID\":\"api-bad\",\"Name\":\"api\",
	\"Address\":\"$IP_B\",\"Port\":8082,\"Meta\":{\"mesh-port\":\"15x\"},\"Tags\":[\"again\"]}" \
	>/dev/null
sleep 1 # the second answer (a blocking query round trip) is logged, if at all, by now
check malformed_mesh_port_logged_once "$(grep 'malformed mesh-port' "$TMP/a.log")" \
	test "$(log_count a 'malformed mesh-port.*instance=api-bad')" = 1
exit 0
