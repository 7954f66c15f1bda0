#!/usr/bin/env bash
# Hot reload end to end with the real meshd: a valid change (a new backend) applied live while a
# client connects in a loop and holds connections (no connect fails, none drops), one audit line
# per changed service (not per key), one per added or removed service, an invalid file rejected
# with every error logged and the old config still serving, a key that needs a restart rejected,
# a log level change applied at once, the config file watch, `meshctl reload` and the reload
# error counter. Every step waits on what the daemon or the client shows, never on a sleep.
# Ports 19011-19019, 19095; VIPs 127.77.3.20-22.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

CG=$(make_cgroup reload)
VIP=127.77.3.20
MPORT=19095
CONF=$TMP/meshd.json
for i in 1 2 3; do backend "r$i" "1901$i" || fail setup "backend r$i did not start"; done
daemon_config "$CONF" "19011 19012"
start_meshd meshd "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
PID=$MESHD_PID

# new_lines SINCE: log lines after line SINCE; since SINCE PATTERN: one of them matches.
new_lines() { tail -n +$(($1 + 1)) "$TMP/meshd.log"; }
since() { new_lines "$1" | grep -q "$2"; }
# reload_and_wait PATTERN: SIGHUP, then waits for PATTERN to appear in a new log line.
reload_and_wait() {
	local before
	before=$(wc -l <"$TMP/meshd.log")
	kill -HUP "$PID"
	wait_for 5 since "$before" "$1"
}

# --- a valid change applied live ---------------------------------------------------------------
client live 30 5 "$TMP/live.stop"
wait_for 10 connects_at_least live 20 || fail valid_change_applied_live "client made no connects"
daemon_config "$CONF" "19011 19012 19013"
mark=$(wc -l <"$TMP/meshd.log")
reload_and_wait 'msg="configuration reloaded"'
wait_for 10 connects_at_least live 10 r3 || fail valid_change_applied_live "r3 never chosen"
connects_grow live 20
touch "$TMP/live.stop"
wait "$CLIENT_PID"
r3=$(result live '.backends.r3 // 0')
if [ "$(result live .fail)" = 0 ] && [ "$(result live .held_alive)" = 5 ] && [ "$r3" -gt 0 ]; then
	pass valid_change_applied_live
else
	fail valid_change_applied_live "fail=$(result live .fail) held_alive=$(result live .held_alive)/5 r3=$r3 errors=$(result live '.errors | join(";")')"
fi
audit=$(new_lines "$mark" | grep -e 'msg="config changed"' -e 'msg="service ')
check audit_line_per_changed_service "audit lines: $audit" \
	test "$audit" != "" -a "$(echo "$audit" | grep -c .)" = 1 -a \
	"$(echo "$audit" | grep -c 'msg="service changed" service=api keys=backends')" = 1
check generation_bumped "$(new_lines "$mark" | grep -m1 'configuration reloaded')" \
	since "$mark" 'msg="configuration reloaded" generation=2'

# --- two services added, then removed: one audit line each ---------------------------------------
two='.services += [{name: "extra1", vip: "127.77.3.21", port: 80,
	backends: [{address: "127.0.0.1", port: 19011}]},
	{name: "extra2", vip: "127.77.3.22", port: 80, backends: [{address: "127.0.0.1", port: 19012}]}]'
daemon_config "$CONF" "19011 19012 19013" "$two"
mark=$(wc -l <"$TMP/meshd.log")
reload_and_wait 'msg="configuration reloaded"'
audit=$(new_lines "$mark" | grep -e 'msg="config changed"' -e 'msg="service ')
check audit_line_per_added_service "audit lines: $audit" \
	test "$(echo "$audit" | grep -c .)" = 2 -a \
	"$(echo "$audit" | grep -c 'msg="service added" service=extra[12] vip=127.77.3.2[12]:80 backends=1')" = 2
daemon_config "$CONF" "19011 19012 19013"
mark=$(wc -l <"$TMP/meshd.log")
reload_and_wait 'msg="configuration reloaded"'
audit=$(new_lines "$mark" | grep -e 'msg="config changed"' -e 'msg="service ')
check audit_line_per_removed_service "audit lines: $audit" \
	test "$(echo "$audit" | grep -c .)" = 2 -a \
	"$(echo "$audit" | grep -c 'msg="service removed" service=extra[12]')" = 2


# --- an invalid change is rejected; the running config stays ------------------------------------
cp "$CONF" "$TMP/good.json"
daemon_config "$CONF" "19011" '.services[0].port = 70000 | .load_balancer.algorithm = "nope"'
mark=$(wc -l <"$TMP/meshd.log")
reload_and_wait 'reload failed'
errors=$(new_lines "$mark" | grep -c 'msg="invalid configuration"')
if [ "$errors" -ge 2 ] && new_lines "$mark" | grep 'invalid configuration' | grep -q 'port' &&
	! new_lines "$mark" | grep -q 'msg="config changed"'; then
	pass invalid_change_logged_every_error
else
	fail invalid_change_logged_every_error "$(new_lines "$mark" | head -n 5)"
fi
client old_still 1 0
wait "$CLIENT_PID"
check invalid_change_keeps_old_config \
	"fail=$(result old_still .fail) backends=$(result old_still '.backends | keys | join(",")')" \
	test "$(result old_still .fail)" = 0 -a "$(result old_still '.backends | length')" = 3

# --- a key that needs a restart is rejected on reload ------------------------------------------
daemon_config "$CONF" "19011 19012 19013" ".cgroup = \"$CG/..\""
mark=$(wc -l <"$TMP/meshd.log")
reload_and_wait 'reload failed'
check restart_only_key_rejected "$(new_lines "$mark" | grep -m1 cgroup)" \
	since "$mark" 'cgroup cannot change on reload'
check restart_only_key_keeps_attachment "$(attach_counts "$CG" | tr '\n' ' ')" attached_once "$CG"

# --- log level applies at once ------------------------------------------------------------------
daemon_config "$CONF" "19011 19012 19013" '.log.level = "debug"'
mark=$(wc -l <"$TMP/meshd.log")
reload_and_wait 'msg="configuration reloaded"'
reload_and_wait 'msg="configuration unchanged"' # an unchanged reload logs at debug too now
check log_level_change_applies "no debug lines after switching to debug" since "$mark" 'level=debug'

# --- the config file watch ----------------------------------------------------------------------
daemon_config "$CONF" "19011 19012 19013" '.config_watch = true'
reload_and_wait 'watching the config file' || fail config_watch "watch not started: $(tail -n 3 "$TMP/meshd.log")"
mark=$(wc -l <"$TMP/meshd.log")
daemon_config "$CONF" "19011 19012" '.config_watch = true' # a write + rename, no signal
if wait_for 5 since "$mark" 'msg="configuration reloaded"'; then
	client watched 1 0
	wait "$CLIENT_PID"
	check config_watch_reloads "backends=$(result watched '.backends | keys | join(",")')" \
		test "$(result watched '.backends | keys | join(",")')" = "r1,r2"
else
	fail config_watch_reloads "no reload after the file changed: $(new_lines "$mark" | head -n 3)"
fi

# --- meshctl reload and the error counter (admin and metrics components) -------------------------
mark=$(wc -l <"$TMP/meshd.log")
"$MESHCTL" --socket "$TMP/admin.sock" reload >"$TMP/ctl.out" 2>&1
status=$?
check meshctl_reload "exit $status: $(cat "$TMP/ctl.out")" \
	test "$status" = 0 -a -n "$(new_lines "$mark" | grep 'reloading configuration')"
metrics=$(curl -s "http://127.0.0.1:$MPORT/metrics")
check reload_error_counted "$(echo "$metrics" | grep reloads_total)" grep -Eq \
	'^meshd_config_reloads_total\{result="error"\} 2(\.0)?$' <<<"$metrics"

stop_meshd "$PID"
status=$STOP_STATUS
check stops_cleanly "exit status $status" test "$status" = 0
exit 0
