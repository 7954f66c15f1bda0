#!/usr/bin/env bash
# Consul discovery with the real meshd, the real datapath and the Consul emulator: backends
# Consul reports receive traffic through the VIP; a registration or deregistration moves traffic
# within a couple of seconds (the blocking query wakes up); with Consul down the last backends
# keep serving; a meshd restarted (datapath removed) while Consul is still down serves the
# persisted backends; the ACL token from token_file is sent and never logged.
# Ports 22201-22204 (backends), 22530 (emulator), 22596 (metrics); VIP 127.77.6.30.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$TOOLS/mesh_client"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup consul)
VIP=127.77.6.30
MPORT=22596
CPORT=22530
CURL=http://127.0.0.1:$CPORT
TOKEN=meshd-token-$$
CONF=$TMP/meshd.json

start_consul() {
	consul_emulator $CPORT --acl-token "$TOKEN" --data-file "$TMP/catalog.json" \
		--log-file "$TMP/consul-requests.log"
}
consul_put() { curl -sf -X PUT -H "X-Consul-Token: $TOKEN" "$CURL$1" ${2:+-d "$2"} >/dev/null; }
register() { # ID PORT
	consul_put /v1/agent/service/register "{\"ID\":\"$1\",\"Name\":\"api\",\"Address\":\"127.0.0.1\",
		\"Port\":$2,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}
# traffic NAME COUNT: COUNT connects to the VIP from inside the cgroup (tests/tools/mesh_client).

# 10. Token rotation: Consul now wants another token. Meanwhile meshd keeps serving (its queries
#     get 403); a reload pointing token_file at the new token restarts the watcher with it, and
#     so does a reload after the token is rewritten in place (11).
# log_mark, since_mark, logged_since_mark PATTERN: meshd3's log from the last mark on.
log_mark() { MARK=$(wc -l <"$TMP/meshd3.log"); }
since_mark() { tail -n +$((MARK + 1)) "$TMP/meshd3.log"; }
logged_since_mark() { since_mark | grep -q "$1"; }
rotate_token() {
	kill_wait "$CONSUL_PID"
	TOKEN=rotated-token-$$
	start_consul || fail token_rotation "emulator did not restart"
	check stale_token_refused "no query with the old token reached Consul" \
		wait_for 15 grep -q 'token=bad' "$TMP/consul-requests.log"
	traffic t7 30
	check old_token_rejected_backends_kept "served by '$(served_by t7)' fail=$(failed t7)" \
		test "$(served_by t7)" = "c1,c2,c3" -a "$(failed t7)" = 0
	# meshd skips reload hooks when the config is unchanged, so rotation = a new token file.
	printf '%s\n' "$TOKEN" >"$TMP/token2"
	chmod 600 "$TMP/token2"
	jq --arg f "$TMP/token2" '.discovery.consul.token_file = $f' "$CONF" >"$CONF.new" &&
		mv "$CONF.new" "$CONF"
	# A secret key (token_file) changing must count as a change even though it is redacted.
	log_mark
	kill -HUP "$MESHD_PID"
	check secret_path_change_is_a_config_change \
		"after the reload: $(since_mark | grep -m1 'msg="configuration')" \
		wait_for 5 logged_since_mark 'msg="configuration reloaded"'
	consul_put /v1/agent/service/deregister/c3
	check reload_picks_up_rotated_token "$(grep 'backends changed' "$TMP/meshd3.log" | tail -n 1)" \
		wait_for 10 grep -q 'backends=3->2' "$TMP/meshd3.log"
	# 11. Rotation in place: the same token_file gets the new token; the config file does not
	#     change, yet the reload restarts the watcher with it.
	kill_wait "$CONSUL_PID"
	TOKEN=in-place-token-$$
	: >"$TMP/consul-requests.log"
	start_consul || fail token_rotation_in_place "emulator did not restart"
	check stale_token_refused_again "no query with the old token reached Consul" \
		wait_for 15 grep -q 'token=bad' "$TMP/consul-requests.log"
	printf '%s\n' "$TOKEN" >"$TMP/token2"
	log_mark
	kill -HUP "$MESHD_PID"
	check rewritten_token_file_noticed "after the reload: $(since_mark | grep -m1 'msg="config')" \
		wait_for 5 logged_since_mark 'msg="secret file changed" key=discovery.consul.token_file'
	consul_put /v1/agent/service/deregister/c2
	check reload_picks_up_token_rotated_in_place \
		"$(grep -E 'secret file changed|backends changed' "$TMP/meshd3.log" | tail -n 2 | tr '\n' ' ')" \
		wait_for 10 grep -q 'backends=2->1' "$TMP/meshd3.log"
}

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
traffic t1 60
check consul_backends_receive_traffic "served by '$(served_by t1)' fail=$(failed t1)" \
	test "$(served_by t1)" = "c1,c2" -a "$(failed t1)" = 0

# 2. A registration wakes the 30 s blocking query: traffic moves within a couple of seconds.
t0=$(date +%s%N)
register c3 22203
if wait_for 3 grep -q 'backends=2->3' "$TMP/meshd1.log"; then
	ms=$((($(date +%s%N) - t0) / 1000000))
	check registration_applied_within_2s "took ${ms} ms" test "$ms" -lt 2000
else
	fail registration_applied_within_2s "no change logged: $(grep -m2 discovery "$TMP/meshd1.log")"
fi
traffic t2 60
check registration_moves_traffic "served by '$(served_by t2)'" test "$(served_by t2)" = "c1,c2,c3"

# 3. A deregistration takes the backend out (still within the rate limiter's burst of 2 after
#    the first read, so it is delivered at once too).
consul_put /v1/agent/service/deregister/c1
wait_for 3 grep -q 'backends=3->2' "$TMP/meshd1.log" ||
	fail deregistration_applied "no change logged"
traffic t3 60
check deregistration_moves_traffic "served by '$(served_by t3)' fail=$(failed t3)" \
	test "$(served_by t3)" = "c2,c3" -a "$(failed t3)" = 0

# 4. The state is persisted atomically, private, with what was last discovered (written off the
#    loop within about a second of the change).
STATE=$TMP/state/discovery.state
check state_persisted "$(cat "$STATE" 2>&1 | tr '\n' ' ')" \
	wait_for 5 grep -qs '^service api consul [0-9]* 2$' "$STATE"
check state_file_mode_0600 "mode $(stat -c %a "$STATE" 2>&1)" test "$(stat -c %a "$STATE")" = 600

# 5. Consul down: errors are logged, the last backends keep serving.
kill_wait "$CONSUL_PID"
# Three quick deliveries used the rate limiter's burst: the next query may wait up to 15 s.
check outage_logged "no failure logged" \
	wait_for 20 grep -q 'msg="query failed, keeping last known backends"' "$TMP/meshd1.log"
traffic t4 60
check consul_down_keeps_backends "served by '$(served_by t4)' fail=$(failed t4)" \
	test "$(served_by t4)" = "c2,c3" -a "$(failed t4)" = 0

# 6. Restart while Consul is down, with the pinned datapath removed so that only the persisted
#    state can bring the backends back.
stop_meshd "$MESHD_PID"
"$MESHD" --cleanup --config "$CONF" >"$TMP/cleanup.log" 2>&1
start_meshd meshd2 "$CONF" || fail restart "meshd did not restart: $(tail -n 3 "$TMP/meshd2.log")"
check restart_restores_persisted_state "$(grep -m1 discovery "$TMP/meshd2.log")" \
	grep -q 'msg="restored persisted backends" service=api source=consul backends=2' "$TMP/meshd2.log"
traffic t5 60
check restart_with_consul_down_serves_persisted "served by '$(served_by t5)' fail=$(failed t5)" \
	test "$(served_by t5)" = "c2,c3" -a "$(failed t5)" = 0

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
stop_meshd "$MESHD_PID"
status=$STOP_STATUS
check clean_exit_on_sigterm "exit status $status (sanitizer report?): $(grep -m1 -i 'sanitizer' "$TMP/meshd2.log")" \
	test "$status" = 0

# 9. A corrupt state file is logged and ignored: meshd starts and syncs from Consul.
printf 'meshd-discovery-state 1\nservice api 9 3\nbackend 127.0.0.1 1\n' >"$STATE"
"$MESHD" --cleanup --config "$CONF" >>"$TMP/cleanup.log" 2>&1
if start_meshd meshd3 "$CONF"; then
	check corrupt_state_ignored "$(grep -m1 'state file' "$TMP/meshd3.log")" \
		grep -q 'msg="ignoring discovery state file".*why="corrupt at line 3"' "$TMP/meshd3.log"
	wait_for 5 grep -q 'backends=0->3' "$TMP/meshd3.log"
	traffic t6 60
	check corrupt_state_then_consul_serves "served by '$(served_by t6)' fail=$(failed t6)" \
		test "$(served_by t6)" = "c1,c2,c3" -a "$(failed t6)" = 0
	rotate_token
	stop_meshd "$MESHD_PID"
else
	fail corrupt_state_ignored "meshd did not start: $(tail -n 3 "$TMP/meshd3.log")"
fi
exit 0
