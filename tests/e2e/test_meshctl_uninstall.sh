#!/usr/bin/env bash
# meshctl uninstall: refuses while meshd runs (datapath untouched), and once meshd is stopped
# removes the pinned datapath and the admin socket so the VIP is no longer redirected.
# Ports 19041-19042, 19097; VIP 127.77.3.40.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_root

CG=$(make_cgroup uninstall)
VIP=127.77.3.40
MPORT=19097
backend u1 19041 || fail setup "backend did not start"
daemon_config "$TMP/meshd.json" "19041"
one_connect() { through_vip "$VIP" 1; }

if ! start_meshd meshd "$TMP/meshd.json"; then
	fail start "meshd did not start: $(tail -n 3 "$TMP/meshd.log")"
	exit 1
fi
check vip_served "VIP not served" test "$(one_connect)" = u1

"$MESHCTL" --config "$TMP/meshd.json" uninstall >"$TMP/u1.out" 2>&1
rc=$?
check refuses_while_running "rc=$rc: $(cat "$TMP/u1.out")" test "$rc" = 1
check refusal_says_why "$(cat "$TMP/u1.out")" grep -q 'meshd is running' "$TMP/u1.out"
check datapath_kept_while_running "$PIN gone" test -d "$PIN"

stop_meshd "$MESHD_PID"
check still_served_after_stop "VIP not served without meshd" test "$(one_connect)" = u1

"$MESHCTL" --config "$TMP/meshd.json" uninstall >"$TMP/u2.out" 2>&1
rc=$?
check uninstall_ok "rc=$rc: $(cat "$TMP/u2.out")" test "$rc" = 0
check unpinned "$PIN still exists" test ! -e "$PIN"
check detached "programs still attached: $(attach_counts "$CG")" nothing_attached "$CG"
check vip_no_longer_redirected "VIP still answered" test "$(one_connect)" = ERR
"$MESHCTL" --config "$TMP/meshd.json" uninstall >"$TMP/u3.out" 2>&1
check second_uninstall_is_noop "rc=$?: $(cat "$TMP/u3.out")" grep -q '^no datapath' "$TMP/u3.out"
"$MESHCTL" --config "$TMP/nonexistent.json" uninstall >/dev/null 2>&1
check bad_config_fails "rc=$?" test $? = 1
