#!/usr/bin/env bash
# Active connection counts never drift: thousands of connections through the VIP closed in every
# way (normal close, reset, failed connect, holder process killed, backend removed while
# connections are open) and the per-backend and per-service counts return exactly to zero.
# Ports 18021-18029 (18029 never listens), VIPs 127.77.2.30-39.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

dp_setup act
for i in 1 2 3; do backend "a$i" "1802$i" || fail setup "backend a$i did not start"; done
A1=127.0.0.1:18021 A2=127.0.0.1:18022 A3=127.0.0.1:18023 DEAD=127.0.0.1:18029
VIP=127.77.2.30

# all_zero SERVICE: every backend's and the service's active count is 0.
all_zero() {
	[ "$(svc_field "$1" active)" = 0 ] &&
		[ -z "$(dp stats | awk -v s="service=$1" '$2 == s' | grep -v ' active=0 ')" ]
}

# Breaker off (consecutive 0, error rate 0) so the dead backend keeps taking connects.
dp set --name act --vip $VIP:80 --alg least_request --backend $A1 --backend $A2 --backend $A3 \
	--backend $DEAD --consecutive 0 --error-rate 0

# P2C picks 2 of the 4 backends; the dead one is in the pair half the time. Its connects fail at
# once, so its active count stays 0: it wins against a live backend holding a connection, and
# ties with an idle one (the first draw wins a tie). So P(dead) lies between 1/4 (live ones
# always idle) and 1/2 (always busy): 500..1000 of 2000 fail, sd <= 22. The bounds only ask for
# plenty of both, 8 sd beyond the worst case.
out=$(client -n 2000 -t 4 --timeout 3000 $VIP 80)
ok1=$(kv ok <<<"$out") failed1=$(kv failed <<<"$out")
expect normal_close_and_failed_connects "ok=$ok1 failed=$failed1" \
	'[ "$ok1" -ge 800 ] && [ "$failed1" -ge 350 ] && [ $((ok1 + failed1)) -eq 2000 ]'
expect zero_after_close_and_failures "service active=$(svc_field act active)" \
	'wait_value 10 0 svc_field act active && all_zero act'

out=$(client -n 2000 -t 4 --rst --timeout 3000 $VIP 80)
expect zero_after_reset "ok=$(kv ok <<<"$out") service active=$(svc_field act active)" \
	'[ "$(kv ok <<<"$out")" -ge 1000 ] && wait_value 10 0 svc_field act active && all_zero act'

# A process holding the connections that succeeded of 600 (the dead backend, always least
# loaded, takes many of them) is killed: the kernel closes them all.
client_bg "$TMP/hold.out" -n 600 -t 4 --hold 60 $VIP 80
wait_for 20 grep -qs holding= "$TMP/hold.out"
held=$(kv holding <"$TMP/hold.out")
active=$(svc_field act active)
expect held_connections_counted "holding=$held active=$active" \
	'[ "$held" -ge 100 ] && [ "$active" -eq "$held" ]'
kill -9 "$BG_PID"
wait "$BG_PID" 2>/dev/null
expect zero_after_process_killed "service active=$(svc_field act active)" \
	'wait_value 10 0 svc_field act active && all_zero act'

# Connections open while their backend leaves the service, then close: nothing goes negative
# and the remaining backends stay exact.
client_bg "$TMP/hold2.out" -n 300 --hold 3 $VIP 80
wait_for 20 grep -qs holding= "$TMP/hold2.out"
dp set --name act --vip $VIP:80 --alg least_request --backend $A1 --backend $A2 \
	--consecutive 0 --error-rate 0
wait "$BG_PID" 2>/dev/null
expect zero_after_backend_removed "service active=$(svc_field act active)" \
	'wait_value 10 0 svc_field act active && all_zero act'
closed=$(counter closed)
redirected=$(counter redirected)
expect every_redirected_socket_released "redirected=$redirected closed=$closed" \
	'[ "$closed" -eq "$redirected" ]'
exit $SUITE_FAILED
