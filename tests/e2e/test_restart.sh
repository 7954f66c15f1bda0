#!/usr/bin/env bash
# Restart and crash safety with the real meshd: SIGKILL it while a client in the cgroup connects
# through the VIP in a loop and holds long-lived connections, start a new one, kill and restart
# again: zero failed connects, zero dropped connections, balancing throughout, each restart
# adopts the pinned datapath and `bpftool cgroup tree` shows every program attached once. Each step
# waits on the client's running counts (it connected N more times), never on a sleep.
# Ports 19021-19029, 19096; VIP 127.77.3.30.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_root
need_built "$MESHD"

CG=$(make_cgroup restart)
VIP=127.77.3.30
MPORT=19096
CONF=$TMP/meshd.json
for i in 1 2 3; do backend "k$i" "1902$i" || fail setup "backend k$i did not start"; done
daemon_config "$CONF" "19021 19022 19023"
start_meshd meshd0 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd0.log")"
	exit 1
}
pid=$MESHD_PID

client crash 60 20 "$TMP/crash.stop"
wait_for 10 connects_at_least crash 30 || fail client_runs "no connects: $(cat "$TMP/crash.log")"
adopted=0
for round in 1 2; do
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	# The client keeps connecting with no meshd at all.
	connects_grow crash 30 || fail "no_meshd_$round" "the client stalled without meshd"
	if start_meshd "meshd$round" "$CONF"; then
		pid=$MESHD_PID
		grep -q 'msg="adopted pinned datapath"' "$TMP/meshd$round.log" && adopted=$((adopted + 1))
	else
		fail "restart_$round" "meshd did not come back: $(tail -n 3 "$TMP/meshd$round.log")"
		break
	fi
	connects_grow crash 30 || fail "after_restart_$round" "the client stalled after the restart"
done
# The 20 held connections count against the backends they were balanced to before the restarts:
# the adopting meshd kept every backend's id (a new id would start at 0 and lose them).
held_active() {
	"$MESHCTL" --socket "$TMP/admin.sock" -o json backends api |
		jq '[.backends[].active_connections] | add'
}
check active_counts_kept_through_restarts "per-backend active $(held_active), 20 held" \
	wait_for 10 eval '[ "$(held_active)" -ge 20 ]'
touch "$TMP/crash.stop"
wait "$CLIENT_PID"

ok=$(result crash .ok)
check sigkill_no_failed_connects "ok=$ok fail=$(result crash .fail) $(result crash '.errors | join(";")')" \
	test "$(result crash .fail)" = 0 -a "${ok:-0}" -gt 100
check sigkill_no_dropped_connections \
	"alive $(result crash .held_alive)/20: $(result crash '.held_errors | join(";")')" \
	test "$(result crash .held_alive)" = 20
check balanced_through_restarts "per backend: $(result crash '.backends | tostring')" \
	test "$(result crash '[.backends[]] | length')" = 3 -a \
	"$(result crash '[.backends[]] | (max - min) <= 1')" = true
check restart_adopts_each_time "adopted $adopted of 2" test "$adopted" = 2
check attached_once_after_restarts "$(attach_counts "$CG" | tr '\n' ' ')" attached_once "$CG"

stop_meshd "$pid"
status=$STOP_STATUS
check sigterm_after_restarts "exit status $status" test "$status" = 0
exit 0
