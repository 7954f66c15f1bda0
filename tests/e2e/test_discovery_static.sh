#!/usr/bin/env bash
# Static discovery with the real meshd and datapath: every configured service serves its
# backends; a reload rewrites only the services that changed, adds new ones and removes deleted
# ones (their VIP stops being redirected). DNS discovery has its own suite (test_discovery_dns).
# Ports 22301-22304 (backends), 22397 (metrics); VIPs 127.77.6.40-41.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup static)
VIP=127.77.6.40
VIP2=127.77.6.41
MPORT=22397
CONF=$TMP/meshd.json

for i in 1 2 3 4; do backend "s$i" "2230$i" || fail setup "backend s$i did not start"; done
# api on $VIP:80 (s1, s2) and web on $VIP2:80 (s3).
with_web=".services += [{ name: \"web\", vip: \"$VIP2\", port: 80,
	backends: [{ address: \"127.0.0.1\", port: 22303 }] }] | .log.level = \"debug\""
daemon_config "$CONF" "22301 22302" "$with_web"
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}

# one_connect VIP: the name the backend greets with, through the VIP (ERR when none answers).
one_connect() { through_vip "$1" 1; }
names_via() { # VIP N: sorted unique backend names over N connects
	local i
	for ((i = 0; i < $2; i++)); do one_connect "$1"; done | sort -u | tr '\n' ' '
}

check both_services_served "api: $(names_via $VIP 6) web: $(names_via $VIP2 2)" \
	test "$(names_via $VIP 6)" = "s1 s2 " -a "$(names_via $VIP2 2)" = "s3 "

# Reload: api gets s4 instead of s2, web is untouched.
applied_before=$(grep -c 'msg="service applied" service=web' "$TMP/meshd1.log")
daemon_config "$CONF" "22301 22304" "$with_web"
kill -HUP "$MESHD_PID"
reloaded() { test "$(grep -c 'msg="configuration reloaded"' "$TMP/meshd1.log")" -ge "$1"; }
wait_for 5 reloaded 1 || fail reload "no reload logged: $(grep -m2 -i reload "$TMP/meshd1.log")"
check reload_moves_changed_service "api: $(names_via $VIP 6)" test "$(names_via $VIP 6)" = "s1 s4 "
check reload_leaves_unchanged_service_alone \
	"web rewritten: $(grep 'service applied" service=web' "$TMP/meshd1.log" | tail -n 1)" \
	test "$(grep -c 'msg="service applied" service=web' "$TMP/meshd1.log")" = "$applied_before"

# Reload without web: it is removed, its VIP is no longer redirected (nothing listens there).
daemon_config "$CONF" "22301 22304" '.log.level = "debug"'
kill -HUP "$MESHD_PID"
check reload_removes_deleted_service "$(grep -m1 'service removed' "$TMP/meshd1.log")" \
	wait_for 5 grep -q 'msg="service removed" service=web' "$TMP/meshd1.log"
check removed_vip_not_redirected "still answered by '$(one_connect $VIP2)'" \
	test "$(one_connect $VIP2)" = ERR
check api_still_served_after_removal "api: $(names_via $VIP 4)" test "$(names_via $VIP 4)" = "s1 s4 "
stop_meshd "$MESHD_PID"
status=$STOP_STATUS
check clean_exit_on_sigterm "exit status $status: $(grep -m1 -i 'sanitizer' "$TMP/meshd1.log")" \
	test "$status" = 0

exit 0
