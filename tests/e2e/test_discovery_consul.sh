#!/usr/bin/env bash
# Consul discovery with the real meshd, the real datapath and the Consul emulator: backends
# Consul reports receive traffic through the VIP; a registration or deregistration moves traffic
# within a couple of seconds (the blocking query wakes up); with Consul down the last backends
# keep serving; a meshd restarted (datapath removed) while Consul is still down serves the
# persisted backends; the ACL token from token_file is sent and never logged.
# Ports 22201-22204 (backends), 22530 (emulator), 22596 (metrics); VIP 127.77.6.30.
. "$(dirname "$0")/lib.sh"
need_root
if [ ! -x "$MESHD" ] || [ ! -f "$(dirname "$0")/daemon_lib.sh" ]; then
	skip all "meshd or daemon_lib.sh not available"
	exit 0
fi
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup consul)
VIP=127.77.6.30
MPORT=22596
CPORT=22530
CURL=http://127.0.0.1:$CPORT
TOKEN=meshd-token-$$
CONF=$TMP/meshd.json
EMU=$ROOT/tests/e2e/consul_emulator.py

start_consul() {
	spawn consul python3 "$EMU" --port $CPORT --acl-token "$TOKEN" --data-file "$TMP/catalog.json" \
		--log-file "$TMP/consul-requests.log"
	CONSUL_PID=$SPAWNED_PID
	wait_for 5 port_open 127.0.0.1 $CPORT
}
consul_put() { curl -sf -X PUT -H "X-Consul-Token: $TOKEN" "$CURL$1" ${2:+-d "$2"} >/dev/null; }
register() { # ID PORT
	consul_put /v1/agent/service/register "{\"ID\":\"$1\",\"Name\":\"api\",\"Address\":\"127.0.0.1\",
		\"Port\":$2,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}
# traffic NAME SECONDS: runs the client in the cgroup to completion.
traffic() {
	client "$1" "$2" 0
	wait "$CLIENT_PID"
}
served_by() { result "$1" '.backends | keys | join(",")'; }

for i in 1 2 3; do backend "c$i" "2220$i" || fail setup "backend c$i did not start"; done
printf '%s\n' "$TOKEN" >"$TMP/token"
chmod 600 "$TMP/token"
start_consul || {
	fail setup "Consul emulator did not start"
	exit 1
}
register c1 22201
register c2 22202

daemon_config "$CONF" "22204" "
	.discovery = { backend: \"consul\", consul: { address: \"$CURL\", token_file: \"$TMP/token\",
		services: [\"api\"], wait: \"30s\" } } |
	.services[0].backends = []"
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}

# 1. What Consul reports is what the VIP serves.
wait_for 5 grep -q 'backends=0->2' "$TMP/meshd1.log"
traffic t1 2
check consul_backends_receive_traffic "served by '$(served_by t1)' fail=$(result t1 .fail)" \
	test "$(served_by t1)" = "c1,c2" -a "$(result t1 .fail)" = 0

# 2. A registration wakes the 30 s blocking query: traffic moves within a couple of seconds.
t0=$(date +%s%N)
register c3 22203
if wait_for 3 grep -q 'backends=2->3' "$TMP/meshd1.log"; then
	ms=$((($(date +%s%N) - t0) / 1000000))
	check registration_applied_within_2s "took ${ms} ms" test "$ms" -lt 2000
else
	fail registration_applied_within_2s "no change logged: $(grep -m2 discovery "$TMP/meshd1.log")"
fi
traffic t2 2
check registration_moves_traffic "served by '$(served_by t2)'" test "$(served_by t2)" = "c1,c2,c3"

# 3. A deregistration takes the backend out (still within the rate limiter's burst of 2 after
#    the first read, so it is delivered at once too).
consul_put /v1/agent/service/deregister/c1
wait_for 3 grep -q 'backends=3->2' "$TMP/meshd1.log" ||
	fail deregistration_applied "no change logged"
traffic t3 2
check deregistration_moves_traffic "served by '$(served_by t3)' fail=$(result t3 .fail)" \
	test "$(served_by t3)" = "c2,c3" -a "$(result t3 .fail)" = 0

# 4. The state is persisted atomically, private, with what was last discovered.
STATE=$TMP/state/discovery.state
check state_persisted "$(cat "$STATE" 2>&1 | tr '\n' ' ')" \
	grep -q '^service api [0-9]* 2$' "$STATE"
check state_file_mode_0600 "mode $(stat -c %a "$STATE" 2>&1)" test "$(stat -c %a "$STATE")" = 600

# 5. Consul down: errors are logged, the last backends keep serving.
kill -9 "$CONSUL_PID"
wait "$CONSUL_PID" 2>/dev/null
wait_for 5 grep -q 'msg="query failed, keeping last known backends"' "$TMP/meshd1.log" ||
	fail outage_logged "no failure logged"
traffic t4 2
check consul_down_keeps_backends "served by '$(served_by t4)' fail=$(result t4 .fail)" \
	test "$(served_by t4)" = "c2,c3" -a "$(result t4 .fail)" = 0

# 6. Restart while Consul is down, with the pinned datapath removed so that only the persisted
#    state can bring the backends back.
stop_meshd "$MESHD_PID" >/dev/null
"$MESHD" --cleanup --config "$CONF" >"$TMP/cleanup.log" 2>&1
start_meshd meshd2 "$CONF" || fail restart "meshd did not restart: $(tail -n 3 "$TMP/meshd2.log")"
check restart_restores_persisted_state "$(grep -m1 discovery "$TMP/meshd2.log")" \
	grep -q 'msg="restored persisted backends" service=api backends=2' "$TMP/meshd2.log"
traffic t5 2
check restart_with_consul_down_serves_persisted "served by '$(served_by t5)' fail=$(result t5 .fail)" \
	test "$(served_by t5)" = "c2,c3" -a "$(result t5 .fail)" = 0

# 7. Consul back: the watcher recovers by itself and applies what changed meanwhile.
start_consul || fail consul_back "emulator did not restart"
register c1 22201
check consul_back_resyncs "$(grep 'backends changed' "$TMP/meshd2.log" | tail -n 1)" \
	wait_for 15 grep -q 'backends=2->3' "$TMP/meshd2.log"

# 8. The token from token_file went in every request; it never appears in meshd's logs.
check token_sent_on_every_request "$(grep -v 'token=ok' "$TMP/consul-requests.log" | head -n 2)" \
	test "$(grep -c 'token=ok' "$TMP/consul-requests.log")" -gt 0 -a \
	"$(grep -vc 'token=ok' "$TMP/consul-requests.log")" = 0
if grep -q "$TOKEN" "$TMP"/meshd*.log; then
	fail token_never_logged "token found in meshd's log"
else
	pass token_never_logged
fi
stop_meshd "$MESHD_PID" >/dev/null
exit 0
