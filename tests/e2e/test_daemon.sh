#!/usr/bin/env bash
# meshd lifecycle end to end: starts the real daemon with a static config on a child cgroup,
# balances traffic through a VIP, speaks sd_notify (ready, reloading, stopping, watchdog), stops
# gracefully on SIGTERM leaving the datapath attached, adopts it on restart, refuses a bad config,
# fails a start cleanly naming the component (nothing left attached or pinned), and
# `meshd --cleanup` removes everything. Ports 19001-19009, 19090-19094; VIPs 127.77.3.10-19.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_root
need_built "$MESHD"

CG=$(make_cgroup daemon)
VIP=127.77.3.10
MPORT=19090
for i in 1 2 3; do backend "b$i" "1900$i" || fail setup "backend b$i did not start"; done
daemon_config "$TMP/meshd.json" "19001 19002 19003"

# --- sd_notify listener: records every datagram meshd sends, one per line ---------------------
cat >"$TMP/notify.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
EOF
spawn notify python3 "$TMP/notify.py" "$TMP/notify.sock" "$TMP/notify.txt"
wait_for 5 test -S "$TMP/notify.sock"

# --- start, readiness, balance -----------------------------------------------------------------
if start_meshd meshd1 "$TMP/meshd.json" NOTIFY_SOCKET="$TMP/notify.sock" WATCHDOG_USEC=200000; then
	pass start_static_config
else
	fail start_static_config "meshd did not become ready: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
fi
pid1=$MESHD_PID
check programs_attached_once "$(attach_counts "$CG" | tr '\n' ' ')" attached_once "$CG"
check notify_ready "no READY=1 in $(cat "$TMP/notify.txt" 2>/dev/null)" \
	wait_for 3 grep -q '^READY=1' "$TMP/notify.txt"
check notify_watchdog "no WATCHDOG=1 pings at WATCHDOG_USEC/2" \
	wait_for 3 grep -q '^WATCHDOG=1' "$TMP/notify.txt"

client balance 3 0
wait "$CLIENT_PID"
counts=$(result balance '[.backends[]] | sort | join(" ")')
ok=$(result balance .ok)
fails=$(result balance .fail)
if [ "$fails" = 0 ] && [ "${ok:-0}" -ge 30 ] &&
	[ "$(result balance '.backends | length')" = 3 ] &&
	[ "$(result balance '[.backends[]] | max - min')" -le 1 ]; then
	pass balanced_round_robin
else
	fail balanced_round_robin "ok=$ok fail=$fails per-backend=[$counts]"
fi

kill -HUP "$pid1"
check notify_reloading "no RELOADING=1 with MONOTONIC_USEC on SIGHUP" \
	wait_for 3 grep -q '^RELOADING=1 MONOTONIC_USEC=[0-9]' "$TMP/notify.txt"

# --- SIGTERM: graceful, datapath stays ---------------------------------------------------------
stop_meshd "$pid1"
status=$STOP_STATUS
check sigterm_exits_zero "exit status $status" test "$status" = 0
check notify_stopping "no STOPPING=1" grep -q '^STOPPING=1' "$TMP/notify.txt"
check sigterm_leaves_datapath_attached "programs gone after SIGTERM" attached_once "$CG"
check sigterm_leaves_datapath_pinned "$PIN is gone" test -d "$PIN"
client after_stop 1 0
wait "$CLIENT_PID"
check traffic_flows_without_meshd "ok=$(result after_stop .ok) fail=$(result after_stop .fail)" \
	test "$(result after_stop .fail)" = 0 -a "$(result after_stop '.backends | length')" = 3

# --- restart adopts ----------------------------------------------------------------------------
if start_meshd meshd2 "$TMP/meshd.json"; then
	check restart_adopts "no adoption line: $(grep -m1 datapath "$TMP/meshd2.log")" \
		grep -q 'msg="adopted pinned datapath"' "$TMP/meshd2.log"
	check restart_attached_once "$(attach_counts "$CG" | tr '\n' ' ')" attached_once "$CG"
	stop_meshd "$MESHD_PID"
else
	fail restart_adopts "second meshd did not start: $(tail -n 3 "$TMP/meshd2.log")"
fi

# --- meshd --cleanup ---------------------------------------------------------------------------
"$MESHD" --cleanup --config "$TMP/meshd.json" >"$TMP/cleanup.log" 2>&1
status=$?
check cleanup_exits_zero "exit $status: $(cat "$TMP/cleanup.log")" test "$status" = 0
check cleanup_detaches "still attached: $(attach_counts "$CG" | tr '\n' ' ')" nothing_attached "$CG"
check cleanup_unpins "$PIN still exists" test ! -e "$PIN"
check cleanup_removes_admin_socket "admin socket left" test ! -e "$TMP/admin.sock"

# --- invalid config: one line per problem, exit 1, nothing attached -----------------------------
daemon_config "$TMP/bad.json" "19001" '.services[0].port = 70000 | .load_balancer.algorithm = "nope"'
timeout 10 "$MESHD" --config "$TMP/bad.json" >"$TMP/bad.out" 2>&1
status=$?
if [ "$status" = 1 ] && grep -q 'services\[0\]\.port' "$TMP/bad.out" &&
	grep -q 'load_balancer\.algorithm' "$TMP/bad.out" && nothing_attached "$CG"; then
	pass invalid_config_refused
else
	fail invalid_config_refused "exit $status: $(head -c 400 "$TMP/bad.out")"
fi

# --- a component that cannot start: exits non-zero naming it, leaves nothing -------------------
# datapath: the pin path is on bpffs (validation passes) but is a pinned map, not a directory.
cleanup_pin
bpftool map create "$PIN" type array key 4 value 4 entries 1 name meshtest_notdir
defer "rm -f '$PIN'"
timeout 10 "$MESHD" --config "$TMP/meshd.json" >"$TMP/nocg.out" 2>&1
status=$?
if [ "$status" != 0 ] && grep -q 'component datapath failed to start: Not a directory' "$TMP/nocg.out" &&
	[ -f "$PIN" ] && nothing_attached "$CG"; then
	pass failed_start_names_datapath
else
	fail failed_start_names_datapath "exit $status, $(tail -n 2 "$TMP/nocg.out"), attached: $(attach_counts "$CG")"
fi
rm -f "$PIN"

# A component after the datapath fails: meshd names it, and the datapath this run loaded is
# removed again (nothing attached, nothing pinned).
# late_failure CASE COMPONENT CONFIG: runs meshd on CONFIG and checks all that.
late_failure() {
	local name=$1 want=$2 config=$3 status failed
	timeout 10 "$MESHD" --config "$config" >"$TMP/$name.out" 2>&1
	status=$?
	failed=$(sed -n 's/^meshd: component \([a-z]*\) failed to start.*/\1/p' "$TMP/$name.out")
	if [ "$status" = 1 ] && [ "$failed" = "$want" ] && [ ! -e "$PIN" ] && nothing_attached "$CG"; then
		pass "$name"
	else
		fail "$name" "exit $status failed=$failed pin=$(ls -d "$PIN" 2>/dev/null) attached=$(attach_counts "$CG" | tr '\n' ' ') $(grep -m1 'level=error' "$TMP/$name.out")"
	fi
}
python3 -c 'import socket,time,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(60)' 19094 &
blocker=$!
defer "kill -9 $blocker"
wait_for 5 port_open 127.0.0.1 19094
MPORT=19094 daemon_config "$TMP/busy.json" "19001"
late_failure metrics_port_in_use_fails_start metrics "$TMP/busy.json"

# admin: another process already listens on the socket path (validation cannot know that).
spawn busysock python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); time.sleep(300)' "$TMP/busy.sock"
wait_for 5 test -S "$TMP/busy.sock"
daemon_config "$TMP/noadmin.json" "19001" ".admin.socket = \"$TMP/busy.sock\""
late_failure admin_socket_unusable_fails_start admin "$TMP/noadmin.json"

# --- the unit's capability set is enough: start, serve, adopt, clean up with exactly it ----------
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$ROOT/config/meshd.service" | tr 'A-Z' 'a-z' |
	sed 's/cap_/+/g; s/ /,/g')
if [ -z "$caps" ]; then
	fail unit_capabilities_suffice "no CapabilityBoundingSet in config/meshd.service"
elif ! command -v setpriv >/dev/null; then
	skip unit_capabilities_suffice "setpriv missing"
else
	capped=(setpriv --bounding-set "-all,$caps" --inh-caps -all "$MESHD")
	"${capped[@]}" --config "$TMP/meshd.json" >"$TMP/capped.log" 2>&1 &
	pid=$!
	defer "kill -9 $pid 2>/dev/null"
	wait_for 10 meshd_ready capped "$pid"
	client capped-client 1 0
	wait "$CLIENT_PID"
	stop_meshd "$pid"
	first=$STOP_STATUS
	"${capped[@]}" --config "$TMP/meshd.json" >"$TMP/capped2.log" 2>&1 &
	pid=$!
	defer "kill -9 $pid 2>/dev/null"
	wait_for 10 meshd_ready capped2 "$pid"
	stop_meshd "$pid"
	"${capped[@]}" --cleanup --config "$TMP/meshd.json" >/dev/null 2>&1
	cleaned=$?
	setpriv --bounding-set "-all,$caps" --inh-caps -all "$MESHCTL" check --pre \
		--config "$TMP/meshd.json" >"$TMP/capped-check.out" 2>&1
	check unit_capabilities_pass_meshctl_check "$(grep capabilities "$TMP/capped-check.out")" \
		grep -q '^\[ok\] *capabilities' "$TMP/capped-check.out"
	if [ "$first" = 0 ] && [ "$(result capped-client .fail)" = 0 ] &&
		[ "$(result capped-client '.backends | length')" = 3 ] &&
		grep -q 'msg="adopted pinned datapath"' "$TMP/capped2.log" && [ "$STOP_STATUS" = 0 ] &&
		[ "$cleaned" = 0 ] && nothing_attached "$CG" && [ ! -e "$PIN" ]; then
		pass unit_capabilities_suffice
	else
		fail unit_capabilities_suffice "caps=$caps stop=$first/$STOP_STATUS cleanup=$cleaned fail=$(result capped-client .fail) $(grep -m1 level=error "$TMP/capped.log" "$TMP/capped2.log")"
	fi
fi

# refused_start CASE CONFIG LINE...: meshd with CONFIG exits non-zero printing each LINE (a
# regex) before touching anything: nothing attached to $CG, nothing pinned.
refused_start() {
	local name=$1 config=$2 pid rc line missing=""
	shift 2
	cleanup_pin
	"$MESHD" --config "$config" >"$TMP/$name.log" 2>&1 &
	pid=$!
	defer "kill -9 $pid 2>/dev/null"
	wait_for 10 eval '! kill -0 '"$pid"' 2>/dev/null'
	wait "$pid" 2>/dev/null
	rc=$?
	for line in "$@"; do grep -q -- "$line" "$TMP/$name.log" || missing="$missing [$line]"; done
	if [ "$rc" -ne 0 ] && [ -z "$missing" ] && nothing_attached "$CG" && [ ! -e "$PIN" ]; then
		pass "$name"
	else
		fail "$name" "rc=$rc missing:$missing pinned=$([ -e "$PIN" ] && echo yes) $(tail -n 3 "$TMP/$name.log")"
	fi
}

# --- mTLS without its certificate material: refused at start, naming the file; nothing stays -----
daemon_config "$TMP/mtls.json" "19001" \
	".services[0].mtls = true | .mtls = {enabled: true, ca_file: \"$TMP/ca.pem\", cert_dir: \"$TMP\"}"
refused_start mtls_material_missing_refused "$TMP/mtls.json" \
	"cannot start the mTLS proxy.*mtls.ca_file $TMP/ca.pem: No such file"

# --- a cgroup that is missing or not cgroup v2 is said before the datapath starts --------------
daemon_config "$TMP/nocg.json" "19001" ".cgroup = \"$TMP/nocg\""
refused_start missing_cgroup_refused "$TMP/nocg.json" \
	"^cgroup: not a cgroup v2 directory: No such file or directory (got \"$TMP/nocg\""
mkdir -p "$TMP/plaindir"
daemon_config "$TMP/v1.json" "19001" ".cgroup = \"$TMP/plaindir\""
refused_start non_cgroup2_refused "$TMP/v1.json" \
	"^cgroup: not a cgroup v2 directory: on .*, not cgroup2; the cgroup2 mount is $CG2"
"$MESHD" --cleanup --config "$TMP/mtls.json" >/dev/null 2>&1
exit 0
