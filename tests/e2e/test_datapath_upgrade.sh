#!/usr/bin/env bash
# Upgrading a pinned datapath of an earlier map layout while connections run, from each layout
# this build upgrades in place: ABI 3 (per-CPU counters, backends inline in the service value:
# every map but the socket ones copied) and ABI 4 (no dense mesh_be_hot: the maps kept, the
# active counts and breaker states moved over), each built here from the commit that last had
# it. Long-lived connections opened through the old datapath stay up and keep working, connects
# made throughout the upgrade all succeed, the active counts carried into the new layout are
# exact (and return exactly to zero when everything closes), services keep their ids and
# balancing, the links are the same (programs swapped in place), and (from 4) a breaker opened
# by the old programs is still open and avoided. Ports 18061-18069, VIPs 127.77.2.60-69.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

need_root
abi_version() { bpftool -j map dump pinned "$PIN/mesh_abi" | jq -r '.[0].formatted.value.version'; }
for i in 1 2 3; do backend "u$i" "1806$i" || fail setup "backend u$i did not start"; done
U1=127.0.0.1:18061 U2=127.0.0.1:18062 U3=127.0.0.1:18063 DEAD=127.0.0.1:18069

old() { "$OLD_DPTOOL" --pin "$PIN" "$@"; }

# build_old VERSION COMMIT: builds that commit's dptool into OLD_DPTOOL (empty: skipped, failed).
build_old() {
	local dir=$TMP/v$1
	OLD_DPTOOL=
	# A shallow clone has no old commit to build: nothing to upgrade from, said as a skip.
	if ! git -C "$ROOT" cat-file -e "$2^{commit}" 2>/dev/null; then
		skip "from_v$1" "commit $2 (ABI $1) is not in this clone's history (shallow clone?)"
		return 0
	fi
	mkdir -p "$dir"
	if ! git -C "$ROOT" archive "$2" | tar -x -C "$dir" ||
		! make -C "$dir" -j2 build/tests/tools/dptool >"$TMP/v$1-build.log" 2>&1; then
		fail "setup_v$1" "cannot build the ABI $1 dptool from $2: $(tail -3 "$TMP/v$1-build.log")"
		return 0
	fi
	OLD_DPTOOL=$dir/build/tests/tools/dptool
}

# upgrade_from VERSION SUFFIX: one upgrade from OLD_DPTOOL's datapath; expectations named with
# SUFFIX.
upgrade_from() {
	local v=$1 sfx=$2 out t0 t1 running link0 old_active
	CG=$(make_cgroup "upg$v")
	defer "'$DPTOOL' --pin '$PIN' cleanup"
	old --cgroup "$CG" open >/dev/null ||
		{ fail "setup$sfx" "the ABI $v datapath did not load"; return; }
	old set --name up --vip 127.77.2.60:80 --alg round_robin --backend $U1 --backend $U2 --backend $U3
	old set --name other --vip 127.77.2.61:80 --alg least_request --backend $U1 --backend $U2
	# A breaker the old programs open: nothing listens on DEAD, one failure opens it for 60 s.
	old set --name brk --vip 127.77.2.62:80 --alg round_robin --backend $U1 --backend $DEAD \
		--consecutive 1 --open 60s --max-open 60s
	client -n 4 127.77.2.62 80 >/dev/null

	# 30 connections held through the old datapath; each later sends a line and reads its echo.
	rm -f "$TMP/go" "$TMP/hold.out" # the previous scenario's holder said held=30 too
	in_cgroup "$CG" python3 - "$TMP/go" >"$TMP/hold.out" 2>&1 <<-'PY' &
	import os, socket, sys, time
	conns = []
	for _ in range(30):
	    s = socket.create_connection(("127.77.2.60", 80), timeout=5)
	    f = s.makefile()
	    f.readline()  # the backend's name
	    conns.append((s, f))
	print("held=%d" % len(conns), flush=True)
	for _ in range(600):
	    if os.path.exists(sys.argv[1]):
	        break
	    time.sleep(0.1)
	ok = 0
	for s, f in conns:
	    try:
	        s.sendall(b"ping\n")
	        ok += f.readline().strip() == "ping"
	    except OSError:
	        pass
	print("alive=%d" % ok, flush=True)
	for s, f in conns:
	    s.close()
	PY
	HOLDER=$!
	defer "kill -9 $HOLDER"
	wait_for 20 grep -qs held=30 "$TMP/hold.out" || fail "setup$sfx" "holder did not connect: $(cat "$TMP/hold.out")"
	old_active=$(old stats | awk '$2 == "name=up"' | tr ' ' '\n' | kv active)
	expect "old_datapath_counts_held$sfx" "active=$old_active" '[ "$old_active" -eq 30 ]'
	link0=$(bpftool -j link show pinned "$PIN/link_connect4" | jq -r .id)

	# Connects keep going while the new layout takes over.
	client_bg "$TMP/during.out" -n 20000 -t 2 127.77.2.61 80
	DURING=$BG_PID
	sleep 0.3
	t0=$(date +%s%N)
	out=$(dp --cgroup "$CG" open 2>"$TMP/upgrade.err")
	t1=$(date +%s%N)
	running=$(kill -0 "$DURING" 2>/dev/null && echo yes || echo no)
	wait "$DURING"
	expect "upgraded_in_place$sfx" "open: $out, abi $(abi_version), link $link0 -> $(bpftool -j link show pinned "$PIN/link_connect4" | jq -r .id), $(grep -o 'msg="[^"]*"' "$TMP/upgrade.err" | tr '\n' ' ')" \
		'[ "$(abi_version)" = 5 ] && [ "$(bpftool -j link show pinned "$PIN/link_connect4" | jq -r .id)" = "$link0" ] && [ "$(bpftool cgroup tree "$CG" | grep -c " mesh_")" -eq 10 ]'
	expect "no_connect_failed_during_upgrade$sfx" "upgrade took $(((t1 - t0) / 1000000)) ms, client still running after it: $running; ok=$(kv ok <"$TMP/during.out") failed=$(kv failed <"$TMP/during.out") mismatch=$(kv peer_mismatch <"$TMP/during.out")" \
		'[ "$running" = yes ] && [ "$(kv ok <"$TMP/during.out")" -eq 20000 ] && [ "$(kv peer_mismatch <"$TMP/during.out")" -eq 0 ]'
	expect "counts_exact_after_upgrade$sfx" "up active=$(svc_field up active) per backend $(be_field up $U1 active)/$(be_field up $U2 active)/$(be_field up $U3 active), other active=$(svc_field other active)" \
		'wait_value 10 0 svc_field other active && [ "$(svc_field up active)" -eq 30 ] && [ "$(be_field up $U1 active)" -eq 10 ] && [ "$(be_field up $U2 active)" -eq 10 ] && [ "$(be_field up $U3 active)" -eq 10 ]'
	if [ "$v" = 4 ]; then
		out=$(client -n 20 127.77.2.62 80)
		expect "breaker_state_carried$sfx" "dead backend circuit=$(be_field brk $DEAD circuit), 20 connects: ok=$(kv ok <<<"$out") failed=$(kv failed <<<"$out")" \
			'[ "$(be_field brk $DEAD circuit)" = open ] && [ "$(kv ok <<<"$out")" -eq 20 ]'
	fi
	out=$(client -n 30 127.77.2.60 80)
	expect "balances_after_upgrade$sfx" "u1=$(kv backend.u1 <<<"$out") ok=$(kv ok <<<"$out") mismatch=$(kv peer_mismatch <<<"$out")" \
		'[ "$(kv ok <<<"$out")" -eq 30 ] && [ "$(kv backend.u1 <<<"$out")" -eq 10 ] && [ "$(kv peer_mismatch <<<"$out")" -eq 0 ]'

	touch "$TMP/go"
	wait "$HOLDER"
	expect "held_connections_survive$sfx" "$(tr '\n' ' ' <"$TMP/hold.out")" 'grep -q alive=30 "$TMP/hold.out"'
	expect "counts_back_to_zero$sfx" "up active=$(svc_field up active) closed=$(counter closed)" \
		'wait_value 10 0 svc_field up active && [ "$(be_field up $U1 active)" -eq 0 ] && [ "$(be_field up $U2 active)" -eq 0 ] && [ "$(be_field up $U3 active)" -eq 0 ]'
	out=$(dp --cgroup "$CG" open)
	expect "adopted_after_upgrade$sfx" "$out" '[ "$out" = adopted=1 ]'
	"$DPTOOL" --pin "$PIN" cleanup
}

# ABI 3: the commit that last had it (expectations keep their names); ABI 4: likewise.
build_old 3 11899dc
[ -z "$OLD_DPTOOL" ] || upgrade_from 3 ""
build_old 4 66bd317
[ -z "$OLD_DPTOOL" ] || upgrade_from 4 _from_v4
exit $SUITE_FAILED
