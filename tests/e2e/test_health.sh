#!/usr/bin/env bash
# Active health checks end to end: a real meshd (static config, datapath attached to a test
# cgroup), real backends, a client in the cgroup connecting through the VIP.
#  - http: a backend whose port stays open but whose /health answers 503 is marked unhealthy
#    (logged, counted) and receives no new connects; it comes back after healthy_threshold passes.
#  - tcp: killing a backend marks it unhealthy.
#  - reload: adding a backend keeps the others' state; switching checks off clears the flag.
#  - checks are not application traffic: connection counters only see the client's connects,
#    although meshd itself runs in the attached cgroup.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD"

VIP_HTTP=127.77.5.10 VIP_TCP=127.77.5.11 METRICS=127.0.0.1:21990
P1=21201 P2=21202 P3=21203 P4=21204 T1=21211 T2=21212
CG=$(make_cgroup health)
defer "kill_cgroup '$CG'; rmdir '$CG'" # make_cgroup ran in a subshell: its defer was lost
LOG=$TMP/meshd.log
CONF=$TMP/meshd.json

# write_config HTTP_TYPE EXTRA_BACKEND: the service under test with http (or none) checks, every
# $INTERVAL (default 200ms).
write_config() {
	local type=$1 extra=${2:-}
	cat >"$CONF" <<EOF
{
  "version": 1,
  "cgroup": "$CG",
  "bpf_pin_path": "$PIN",
  "state_dir": "$TMP/state",
  "log": { "level": "info" },
  "admin": { "socket": "$TMP/admin.sock" },
  "telemetry": { "metrics_listen": "$METRICS" },
  "load_balancer": {
    "algorithm": "round_robin",
    "panic_threshold": 0.2,
    "health_check": { "type": "$type", "interval": "${INTERVAL:-200ms}", "timeout": "150ms",
                      "unhealthy_threshold": 2, "healthy_threshold": 3, "http_path": "/health" }
  },
  "discovery": { "backend": "static" },
  "services": [
    { "name": "web", "vip": "$VIP_HTTP", "port": 80, "backends": [
        { "address": "127.0.0.1", "port": $P1 }, { "address": "127.0.0.1", "port": $P2 },
        { "address": "127.0.0.1", "port": $P3 }$extra ] },
    { "name": "db", "vip": "$VIP_TCP", "port": 80,
      "load_balancer": { "health_check": { "type": "tcp" } },
      "backends": [ { "address": "127.0.0.1", "port": $T1 }, { "address": "127.0.0.1", "port": $T2 } ] }
  ]
}
EOF
}

# seen VIP N NAME: true when NAME answered any of N connects.
seen() { through_vip "$1" "$2" | grep -x "$3" >/dev/null; }
# health_logged SERVICE PORT BOOL: the transition line is in meshd's log.
health_logged() {
	grep 'msg="backend health changed"' "$LOG" |
		grep "service=$1 " | grep "backend=127.0.0.1:$2 " | grep -q "healthy=$3"
}
count_logged() {
	grep 'msg="backend health changed"' "$LOG" | grep "service=$1 " |
		grep "backend=127.0.0.1:$2 " | grep -c "healthy=$3"
}

for p in $P1 $P2 $P3 $P4; do
	echo ok >"$TMP/health-$p"
	backend "b$p" $p --health-file "$TMP/health-$p"
done
backend "t$T1" $T1
T1_PID=$SPAWNED_PID
backend "t$T2" $T2

# start_meshd LOGFILE: meshd inside the attached cgroup itself (as when attached to the root
# cgroup): its checks then pass through connect4 and sockops and must still be neither redirected
# nor counted. Not through in_cgroup: a backgrounded function would leave $! naming a subshell.
start_meshd() {
	bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$MESHD" --config "$CONF" >"$1" 2>&1 &
	MESHD_PID=$!
	defer "kill -TERM $MESHD_PID; wait $MESHD_PID"
}
defer "'$MESHD' --cleanup --config '$CONF'"

write_config http
start_meshd "$LOG"

# Loading the datapath takes seconds on a busy host: wait for meshd to say it runs, then for
# traffic, rather than giving both one short bound.
running() { grep -q 'msg="meshd running"' "$LOG"; }
if ! wait_until 60 running || ! wait_until 10 seen $VIP_HTTP 3 b$P1; then
	fail started "no connect through $VIP_HTTP reached a backend: $(tail -n 5 "$LOG")"
	exit 1
fi
out=$(through_vip $VIP_HTTP 30)
check balances_over_all_three "got: $(echo $out)" \
	bash -c "[ \$(echo '$out' | sort -u | grep -c '^b') -eq 3 ]"

# --- http: port open, /health failing -------------------------------------------------------
echo fail >"$TMP/health-$P2"
check http_failure_marks_unhealthy "no transition logged: $(grep health "$LOG" | tail -n 3)" \
	wait_until 5 health_logged web $P2 false
check transition_reason_logged "no reason=\"http status 503\"" \
	grep -q "backend=127.0.0.1:$P2 healthy=false reason=\"http status 503\"" "$LOG"
check port_still_open "backend $P2 port closed" port_open 127.0.0.1 $P2
out=$(through_vip $VIP_HTTP 30)
check unhealthy_gets_no_new_connects "b$P2 still chosen or errors: $(echo $out)" \
	bash -c "! echo '$out' | grep -qx -e 'b$P2' -e ERR"

# --- recovery after healthy_threshold passes ------------------------------------------------
echo ok >"$TMP/health-$P2"
t0=$(date +%s%N)
check recovers_after_healthy_threshold "no healthy=true for $P2" \
	wait_until 5 health_logged web $P2 true
ms=$((($(date +%s%N) - t0) / 1000000))
# 3 passes 200 ms apart cannot complete in less than ~400 ms.
check recovery_waits_for_threshold "recovered after ${ms}ms" test "$ms" -ge 300
check recovered_gets_connects "b$P2 not chosen again" wait_until 3 seen $VIP_HTTP 12 b$P2

# --- tcp: killing the backend ---------------------------------------------------------------
{ kill -9 "$T1_PID" && wait "$T1_PID"; } 2>/dev/null
check tcp_killed_backend_marked_unhealthy "no transition for $T1" \
	wait_until 5 health_logged db $T1 false
check tcp_reason_is_refused "reason not refused" \
	bash -c "grep 'backend=127.0.0.1:$T1 healthy=false' '$LOG' | grep -q 'Connection refused'"
out=$(through_vip $VIP_TCP 10)
check tcp_traffic_goes_to_survivor "got: $(echo $out)" \
	bash -c "[ \"\$(echo '$out' | sort -u)\" = t$T2 ]"

# --- reload: add a backend, state of the others kept ----------------------------------------
echo fail >"$TMP/health-$P3"
wait_until 5 health_logged web $P3 false
write_config http ", { \"address\": \"127.0.0.1\", \"port\": $P4 }"
kill -HUP $MESHD_PID
check reload_adds_backend "b$P4 never chosen" wait_until 5 seen $VIP_HTTP 12 b$P4
sleep 0.5
check reload_keeps_unhealthy_state "b$P3 flipped or chosen after reload" \
	bash -c "[ $(count_logged web $P3 true) -eq 0 ] && ! echo '$(through_vip $VIP_HTTP 16)' | grep -qx b$P3"

# --- reload: checks off clears the flag the checks had set ----------------------------------
write_config none ", { \"address\": \"127.0.0.1\", \"port\": $P4 }"
kill -HUP $MESHD_PID
check checks_off_clears_unhealthy_flag "b$P3 not chosen after checks were switched off" \
	wait_until 5 seen $VIP_HTTP 12 b$P3

# --- checks are not application traffic -----------------------------------------------------
metrics=$(curl -s --max-time 2 "http://$METRICS/metrics" || true)
check metrics_endpoint_answers "no metrics from $METRICS" test -n "$metrics"
# db got exactly the 10 client connects above (the client made no other); its checks,
# five per second per backend since the start, must not show up.
n=$(echo "$metrics" | awk '/^meshd_connections_total\{/ && /service="db"/ {s += $NF} END {print s + 0}')
check checks_not_counted_as_traffic "db connections counted: $n, client made 10" \
	test "$n" -eq 10
# Transitions: web b2 down and up, db t1 down, web b3 down (switching checks off later
# clears b3's flag without a transition).
down=$(echo "$metrics" | awk '/^meshd_health_transitions_total\{to="unhealthy"\}/ {print $NF}')
up=$(echo "$metrics" | awk '/^meshd_health_transitions_total\{to="healthy"\}/ {print $NF}')
check transitions_counted "to unhealthy=${down:-none} (want 3), to healthy=${up:-none} (want 1)" \
	test "${down:-x}" = 3 -a "${up:-x}" = 1
check dead_backend_exported_unhealthy "no meshd_backend_healthy 0 sample for db $T1" \
	grep -q "^meshd_backend_healthy{service=\"db\",backend=\"127.0.0.1:$T1\"} 0" \
	<<<"$metrics"
check meshd_still_running "meshd exited: $(tail -n 3 "$LOG")" kill -0 $MESHD_PID
kill -TERM $MESHD_PID
wait $MESHD_PID
rc=$?
check meshd_stops_cleanly "exit $rc: $(grep -m1 -A4 -e Sanitizer -e 'level=error' "$LOG")" \
	test "$rc" -eq 0

# --- restart: a backend the last run flagged down stays down --------------------------------
# Checks back on: b3 (still failing) goes down again; then meshd stops and a new one starts with
# a slow interval. Were the flag reset on start, b3 would take connects for two 3 s intervals.
LOG=$TMP/meshd-1b.log
start_meshd "$LOG"
write_config http ", { \"address\": \"127.0.0.1\", \"port\": $P4 }"
wait_until 10 grep -qs "health checks started" "$LOG"
kill -HUP $MESHD_PID
wait_until 5 health_logged web $P3 false
kill -TERM $MESHD_PID
wait $MESHD_PID
LOG=$TMP/meshd-2.log
INTERVAL=3s write_config http ", { \"address\": \"127.0.0.1\", \"port\": $P4 }"
start_meshd "$LOG"
if wait_until 10 grep -qs '"meshd running"' "$LOG"; then
	out=$(through_vip $VIP_HTTP 16)
	check restart_keeps_backend_down "b$P3 chosen right after the restart: $(echo $out)" \
		bash -c "! echo '$out' | grep -qx b$P3 && echo '$out' | grep -qx b$P4"
	check restart_says_why "no 'stays unhealthy' line" \
		grep -q "backend stays unhealthy from the previous run.*backend=127.0.0.1:$P3" "$LOG"
else
	fail restart_keeps_backend_down "meshd did not start again: $(tail -n 3 "$LOG")"
fi
exit $SUITE_FAILED
