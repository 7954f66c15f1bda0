#!/usr/bin/env bash
# Restart safety of the mTLS path. meshd SIGKILLed (twice) and started again while a client
# connects in a loop through an mTLS service: no connect is refused (the listening sockets stay
# with the holder process; connections queue until the next meshd accepts them; only the
# connections the killed process was proxying are lost). Graceful upgrade (SIGUSR2) of the
# calling host and then of the serving host while a connection streams: the stream survives on
# the old processes, new connections go to the new ones, the old ones exit once drained.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root api
backend_b api 8080 || fail setup "backend did not start"
host_config "$TMP/a.json" a "
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8080 }] }] |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
host_config "$TMP/b.json" b "
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
	.authorization.rules = [{ source: \"web\", destination: \"api\", action: \"allow\" }]"
start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || {
	fail start "meshd did not start: $(tail -n 3 "$TMP/a.log" "$TMP/b.log")"
	exit 1
}

# --- crash --------------------------------------------------------------------------------------
holder() { pgrep -f "meshd fdstore $TMP/a/state" >/dev/null; }
check holder_keeps_listeners "no listener holder for host a" holder
# meshd blocks its signals (signalfd); the holder must not inherit that, or SIGTERM cannot end it.
blocked=$(awk '/^SigBlk:/ { print $2 }' "/proc/$(pgrep -f "meshd fdstore $TMP/a/state" | head -n 1)/status")
check holder_signals_not_blocked "the holder blocks signals: SigBlk=${blocked:-none}" \
	test -n "$blocked" -a "$((16#${blocked:-1}))" -eq 0
bg_mc loop "$HA" "$CG_a/web" loop "$VIP" 80 "$TMP/stop"
wait_metric 5 a 'meshd_mtls_connections_total\{direction="outbound"' 10
for round in 1 2; do
	kill -9 "$(eval echo "\$PID_a")"
	sleep 0.5 # connects meanwhile queue on the held listener
	start_host a "$TMP/a.json" || fail "restart_$round" "meshd a did not come back"
	wait_metric 5 a 'meshd_mtls_connections_total\{direction="outbound"' 5
done
touch "$TMP/stop"
wait "$BG_loop"
check sigkill_no_connect_refused "$(cat "$TMP/loop.json")" \
	test "$(jq .refused "$TMP/loop.json")" = 0 -a "$(jq .ok "$TMP/loop.json")" -gt 10
check restarted_took_over_listeners "took over $(log_count a 'took over listening sockets') times" \
	test "$(log_count a 'took over listening sockets')" -ge 4

# --- graceful upgrade -----------------------------------------------------------------------------
rm -f "$TMP/stop"
bg_mc stream "$HA" "$CG_a/web" stream "$VIP" 80 "$TMP/stop"
wait_metric 5 b 'meshd_mtls_bytes_total\{direction="inbound",way="sent"' 100000
for h in a b; do
	old=$(pid_of_latest "$h")
	runs=$(log_count "$h" 'msg="meshd running"')
	kill -USR2 "$old"
	if wait_log 15 "$h" 'msg="meshd running"' $((runs + 1)); then
		new=$(pid_of_latest "$h")
		defer "kill -9 $new 2>/dev/null"
		pass "upgrade_${h}_new_process_runs"
	else
		fail "upgrade_${h}_new_process_runs" "$(tail -n 5 "$TMP/$h.log")"
	fi
	wait_log 5 "$h" 'new meshd ready; draining' 1
	out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
	check "upgrade_${h}_new_connections_work" "got '$out'" test "$out" = api
	check "upgrade_${h}_old_process_drains" "old meshd $old exited while the stream runs" \
		kill -0 "$old"
	eval "OLD_$h=$old"
done
sleep 1
touch "$TMP/stop"
wait "$BG_stream"
check upgrade_stream_survives "$(cat "$TMP/stream.json")" \
	test "$(jq -r .end "$TMP/stream.json")" = stopped -a "$(jq .got "$TMP/stream.json")" -gt 1000000
gone() { ! kill -0 "$OLD_a" 2>/dev/null && ! kill -0 "$OLD_b" 2>/dev/null; }
check upgrade_old_processes_exit_when_drained "still running: $OLD_a $OLD_b" wait_for 10 gone
[ -n "${MTLS_DEBUG:-}" ] && cp "$TMP"/*.log "$MTLS_DEBUG/" 2>/dev/null
exit 0
