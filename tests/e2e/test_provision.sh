#!/usr/bin/env bash
# The Vagrant cluster's provisioning, run for real on two hosts made of network namespaces
# (198.18.<n>.1/.2, no route out) with the Consul emulator standing in for the agents:
# scripts/provision/consul-kv.sh writes the mesh's shared config to KV (a check-and-set: a
# second writer is refused), scripts/provision/meshd-node.sh configures and starts meshd on each
# host (MTLS=1: the Connect CA and intentions), scripts/provision/consul-intentions.sh writes the
# intentions. Then each meshd registered its host's service in Consul, took the services from
# KV, and a real connect from each host's service cgroup (its identity) reaches the other host's
# service through its VIP over mTLS with Connect CA certificates; an intention turned to deny
# refuses the next connect. Also checks that vagrant/Vagrantfile is valid (`vagrant validate`;
# the package is in install-deps.sh).
# Ports 22750 (emulator), 22751-22752 (services), 22798-22799 (metrics); VIPs 127.77.75.1-2.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"
. "$(dirname "$0")/mtls_lib.sh" # hosts_up, in_host, in_host_cg

PROV=$ROOT/scripts/provision
CPORT=22750
WEB_VIP=127.77.75.1
API_VIP=127.77.75.2

# vagrant validate needs no VM and no provider: it parses the Vagrantfile and checks its
# settings (machines, networks, provisioners' paths). A missing vagrant is a failure.
if ! command -v vagrant >/dev/null; then
	fail vagrantfile_valid "vagrant is not installed (scripts/install-deps.sh installs it)"
else
	(cd "$ROOT/vagrant" && VAGRANT_HOME=$TMP/vagrant.d VAGRANT_DOTFILE_PATH=$TMP/vagrant.dot \
		vagrant validate) >"$TMP/vagrant.out" 2>&1
	check vagrantfile_valid "$(tail -n 5 "$TMP/vagrant.out")" \
		grep -q 'Vagrantfile validated successfully' "$TMP/vagrant.out"
fi
for s in "$PROV"/*.sh; do
	check "script_syntax_$(basename "$s" .sh | tr - _)" "$(bash -n "$s" 2>&1)" bash -n "$s"
done

hosts_up || {
	fail setup "cannot build the two hosts"
	exit 1
}
CG_a=$(make_cgroup a)
CG_b=$(make_cgroup b)
mkdir -p "$CG_a/web" "$CG_b/api" # each host's service identity (IDENTITY_CGROUP)
defer "rmdir '$CG_a/web' '$CG_b/api'"
CONSUL=http://$IP_A:$CPORT

# spawn, not `in_host ... &`: a backgrounded shell function's $! is a subshell, and killing it
# would leave the server running.
spawn consul nsenter --net="/run/netns/$HA" python3 "$ROOT/tests/e2e/consul_emulator.py" \
	--addr "$IP_A" --port $CPORT --node-address "$IP_A" --ca-dir "$TMP/consul-ca"
spawn web nsenter --net="/run/netns/$HA" python3 "$ROOT/tests/e2e/servers/backend.py" \
	--name web-a --addr "$IP_A" --port 22751
spawn api nsenter --net="/run/netns/$HB" python3 "$ROOT/tests/e2e/servers/backend.py" \
	--name api-b --addr "$IP_B" --port 22752
open_in() { in_host "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }
wait_for 5 open_in "$HA" "$IP_A" $CPORT && wait_for 5 open_in "$HA" "$IP_A" 22751 &&
	wait_for 5 open_in "$HB" "$IP_B" 22752 || {
	fail setup "the emulator or a service did not start"
	exit 1
}

# 1. The shared config into KV, as the Vagrant server does; a second writer that read before
#    the first wrote is refused by the check-and-set.
kv() { in_host "$HB" env CONSUL_HTTP_ADDR="$CONSUL" "$@" "$PROV/consul-kv.sh"; }
kv SERVICES="web=$WEB_VIP api=$API_VIP" >"$TMP/kv.out" 2>&1
check kv_written "$(cat "$TMP/kv.out")" grep -q 'wrote meshd/config' "$TMP/kv.out"
doc=$(in_host "$HB" curl -s "$CONSUL/v1/kv/meshd/config?raw")
check kv_document_valid_config "$(jq -c .services <<<"$doc" 2>&1)" \
	test "$(jq -c '[.services[] | .name + "=" + .vip]' <<<"$doc")" = \
	"[\"web=$WEB_VIP\",\"api=$API_VIP\"]"
idx=$(in_host "$HB" curl -s "$CONSUL/v1/kv/meshd/config" | jq -r '.[0].ModifyIndex')
in_host "$HB" curl -s -X PUT --data-binary "$doc" "$CONSUL/v1/kv/meshd/config" >/dev/null
check kv_concurrent_writer_refused "a stale check-and-set was accepted" \
	test "$(in_host "$HB" curl -s -X PUT --data-binary x "$CONSUL/v1/kv/meshd/config?cas=$idx")" = false

# 2. The intentions, as the Vagrant server writes them; a malformed one is refused.
intentions() { in_host "$HB" env CONSUL_HTTP_ADDR="$CONSUL" INTENTIONS="$1" "$PROV/consul-intentions.sh"; }
intentions "api->web=allow web->api=allow" >"$TMP/intentions.out" 2>&1
check intentions_written "$(cat "$TMP/intentions.out")" \
	test "$(grep -c '^intention .*: allow$' "$TMP/intentions.out")" = 2
check intention_malformed_refused "accepted" sh -c "! INTENTIONS='api=allow' '$PROV/consul-intentions.sh' 2>/dev/null"

# 3. meshd on each host, by the script the Vagrant nodes run.
node() { # h IP SERVICE:PORT METRICS
	in_host "$(eval echo "\$H$(echo "$1" | tr a-z A-Z)")" env NODE_NAME="node-$1" NODE_ADDR="$2" \
		CONSUL_HTTP_ADDR="$CONSUL" REGISTER="$3" MESHD_ROOT="$TMP/$1" MESHD_BIN="$MESHD" \
		MESHD_CGROUP="$(eval echo "\$CG_$1")" MESHD_PIN="$PIN-$1" METRICS_LISTEN="127.0.0.1:$4" \
		IDENTITY_CGROUP="$(eval echo "\${CG_$1#\"\$CG2\"}")/%s" \
		MESHD_START=background "$PROV/meshd-node.sh" >"$TMP/node-$1.out" 2>&1
	local rc=$? pid
	pid=$(cat "$TMP/$1/run/meshd/meshd.pid" 2>/dev/null)
	[ -n "$pid" ] && defer "kill -9 $pid 2>/dev/null"
	defer "'$MESHD' --cleanup --config '$TMP/$1/etc/meshd/meshd.json' >/dev/null 2>&1"
	return $rc
}
running() { grep -q 'msg="meshd running"' "$TMP/$1/var/log/meshd.log" 2>/dev/null; }
for h in a b; do
	ip=$IP_A svc=web:22751 mport=22798
	[ $h = b ] && ip=$IP_B svc=api:22752 mport=22799
	node $h "$ip" $svc $mport
	check "node_${h}_provisioned" "$(tail -n 3 "$TMP/node-$h.out")" wait_for 10 running $h
done

# 4. Registration: each host's service is in Consul at the host's address.
health() { in_host "$HA" curl -s "$CONSUL/v1/health/service/$1" | jq -r '.[].Service | "\(.Address):\(.Port)"'; }
check web_registered "$(health web)" wait_output 10 "$IP_A:22751" health web
check api_registered "$(health api)" wait_output 10 "$IP_B:22752" health api

# 5. Both meshd took the services from KV and serve them across the hosts, over mTLS between
#    the service identities, with the Connect CA's certificates, as the intentions allow.
names() { "$MESHCTL" --socket "$TMP/$1/run/meshd/admin.sock" -o json services | jq -c '.services | map(.name) | sort'; }
for h in a b; do
	check "node_${h}_services_from_kv" "$(names $h)" wait_output 20 '["api","web"]' names $h
done
# ask HOST CG VIP: the name the service behind VIP:80 answers, from HOST inside cgroup CG.
ask() {
	in_host_cg "$1" "$2" python3 -c '
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 80), timeout=2)
    s.sendall(b"hi\n")
    print(s.makefile().readline().strip() or "ERR")
except OSError as e:
    print("ERR", e)' "$3"
}
# reaches NAME HOST CG VIP WANT: waits until VIP answers WANT (Consul's checks pass within
# their 10 s interval, then the blocking query brings the instance, its rate limit permitting).
reaches() {
	local i last
	for ((i = 0; i < 60; i++)); do
		last=$(ask "$2" "$3" "$4")
		[ "$last" = "$5" ] && break
		sleep 0.5
	done
	if [ "$last" = "$5" ]; then pass "$1"; else fail "$1" "answered '$last', want $5"; fi
}
reaches node_b_reaches_web_on_a "$HB" "$CG_b/api" $WEB_VIP web-a
reaches node_a_reaches_api_on_b "$HA" "$CG_a/web" $API_VIP api-b
td=$(in_host "$HA" curl -s "$CONSUL/v1/agent/connect/ca/roots" | jq -r .TrustDomain)
check mtls_across_hosts_with_connect_ca "a's log: $(grep -m1 'peer connected' "$TMP/a/var/log/meshd.log")" \
	grep -q "peer connected.*spiffe://$td/ns/default/dc/dc1/svc/api" "$TMP/a/var/log/meshd.log"
src=$("$MESHCTL" --socket "$TMP/b/run/meshd/admin.sock" -o json identities |
	jq -r '.identities[] | select(.service == "api") | .source')
check identity_from_consul "api's source on b: '$src'" test "$src" = consul

# 6. An intention turned to deny takes effect: b's api can no longer reach web on a, a says why.
intentions "api->web=deny" >>"$TMP/intentions.out" 2>&1
denied() { [ "$(ask "$HB" "$CG_b/api" $WEB_VIP)" != web-a ]; }
check intention_deny_takes_effect "b still reaches web: $(tail -n 1 "$TMP/intentions.out")" \
	wait_until 15 denied
check deny_logged_by_a "$(grep -m1 'connection denied' "$TMP/a/var/log/meshd.log")" \
	grep -q "connection denied.*source=spiffe://$td/ns/default/dc/dc1/svc/api" "$TMP/a/var/log/meshd.log"
reaches other_direction_still_allowed "$HA" "$CG_a/web" $API_VIP api-b
exit $SUITE_FAILED
