#!/usr/bin/env bash
# The connect program's cheap paths, attached for real: a service is balanced without scanning
# its backends (counter `scan` stays put): unhealthy backends are left out of the draws, below
# the panic threshold the draws go over every backend, and a backend whose breaker is open is
# drawn again around (`redraw`); an IPv6 backend behind an IPv4 VIP brings the scan back.
# Decisions travel to sockops
# through the hand-off slots: with every slot taken, connects fall back to socket storage
# created in connect (`handoff_busy`) and stay exact; a slot held by a connect that failed
# before reaching TCP is freed by the socket's next connect or by its release.
# Ports 18031-18039 (18034 on ::1, 18039 never listens), VIPs 127.77.2.40-49.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

dp_setup hof
for i in 1 2 3; do backend "b$i" "1803$i" || fail setup "backend b$i did not start"; done
spawn backend-v6 python3 "$ROOT/tests/e2e/servers/backend.py" --name v6 --port 18034 --addr ::1
wait_for 5 port_open ::1 18034 || fail setup "backend v6 did not start"
B1=127.0.0.1:18031 B2=127.0.0.1:18032 B3=127.0.0.1:18033 DEAD=127.0.0.1:18039
HANDOFF=$PIN/mesh_handoff

delta() { echo $(($(counter "$1") - $2)); }
# held: hand-off slots held by some socket.
held() {
	bpftool -j map dump pinned "$HANDOFF" | jq '[.[] | select(.formatted.value.cookie != 0)] | length'
}
slots_free() { [ "$(held)" -eq 0 ]; }
# fill_slots BYTE: every slot's cookie set to 0xBYTE...00NN (BYTE 00: all free again).
fill_slots() {
	awk -v pin="$HANDOFF" -v b="$1" 'BEGIN {
		for (i = 0; i < 8192; i++) {
			printf "map update pinned %s key %d %d 0 0 value", pin, i % 256, int(i / 256)
			if (b == "00")
				printf " 0 0"
			else
				printf " %d %d", i % 256, int(i / 256)
			printf " 0 0 0 0 0 0x%s", b
			for (j = 8; j < 64; j++)
				printf " 0"
			print ""
		}
	}' >"$TMP/slots.batch"
	bpftool batch file "$TMP/slots.batch" >/dev/null
}

# --- all healthy, all closed: no scan, no storage in connect ---------------------------------
dp set --name fast --vip 127.77.2.40:80 --alg round_robin --backend $B1 --backend $B2
scan0=$(counter scan) busy0=$(counter handoff_busy)
out=$(client -n 200 127.77.2.40 80)
expect healthy_service_never_scans \
	"ok=$(kv ok <<<"$out") b1=$(kv backend.b1 <<<"$out") b2=$(kv backend.b2 <<<"$out") mismatch=$(kv peer_mismatch <<<"$out") scan=+$(delta scan "$scan0") busy=+$(delta handoff_busy "$busy0")" \
	'[ "$(kv ok <<<"$out")" -eq 200 ] && [ "$(kv backend.b1 <<<"$out")" -eq 100 ] && [ "$(kv peer_mismatch <<<"$out")" -eq 0 ] && [ "$(delta scan "$scan0")" -eq 0 ] && [ "$(delta handoff_busy "$busy0")" -eq 0 ]'
expect handoff_slots_all_free_after "held=$(held) active=$(svc_field fast active)" \
	'[ "$(held)" -eq 0 ] && [ "$(svc_field fast active)" -eq 0 ]'

# A service connection keeps its slot while it is open (the decision lives there, no socket
# storage is created) and frees it when it closes; getpeername shows the VIP from it.
out=$(in_cgroup "$CG" python3 - "$HANDOFF" <<'PY'
import json, socket, subprocess, sys

def held():
    dump = json.loads(subprocess.check_output(["bpftool", "-j", "map", "dump", "pinned", sys.argv[1]]))
    return sum(1 for e in dump if e["formatted"]["value"]["cookie"])

s = socket.create_connection(("127.77.2.40", 80))
print("peer=%s:%d" % s.getpeername())
print("held_open=%d" % held())
s.close()
PY
)
expect open_connection_keeps_its_slot "$(tr '\n' ' ' <<<"$out") held_after=$(held) active=$(svc_field fast active)" \
	'[ "$(kv peer <<<"$out")" = 127.77.2.40:80 ] && [ "$(kv held_open <<<"$out")" -eq 1 ] && wait_for 5 slots_free && [ "$(svc_field fast active)" -eq 0 ]'

for alg in random least_request maglev; do
	dp set --name "fast-$alg" --vip 127.77.2.41:80 --alg "$alg" --backend $B1 --backend $B2 \
		--backend $B3
	scan0=$(counter scan)
	out=$(client -n 60 127.77.2.41 80)
	expect "${alg}_never_scans" "ok=$(kv ok <<<"$out") scan=+$(delta scan "$scan0")" \
		'[ "$(kv ok <<<"$out")" -eq 60 ] && [ "$(delta scan "$scan0")" -eq 0 ]'
	dp del --name "fast-$alg"
done

# --- unhealthy backends: drawn around without a scan, unless so few are healthy that the
# scan's panic threshold applies. round_robin stays exactly even over the healthy; random and
# least_request never pick the unhealthy one and share evenly (300 connects: 150 +- 5 sd = 43).
dp health --name fast --backend $B2 down
scan0=$(counter scan)
out=$(client -n 20 127.77.2.40 80)
expect unhealthy_backend_skipped_without_scan "b1=$(kv backend.b1 <<<"$out") scan=+$(delta scan "$scan0")" \
	'[ "$(kv backend.b1 <<<"$out")" -eq 20 ] && [ "$(delta scan "$scan0")" -eq 0 ]'
dp health --name fast --backend $B2 up
out=$(client -n 20 127.77.2.40 80)
expect healthy_again_gets_its_share "b2=$(kv backend.b2 <<<"$out")" '[ "$(kv backend.b2 <<<"$out")" -eq 10 ]'
for alg in round_robin random least_request; do
	dp set --name "part-$alg" --vip 127.77.2.45:80 --alg "$alg" --backend $B1 --backend $B2 \
		--backend $B3 --panic 0.5
	dp health --name "part-$alg" --backend $B2 down
	scan0=$(counter scan)
	out=$(client -n 300 127.77.2.45 80)
	lo=107 hi=193
	[ $alg = round_robin ] && lo=150 hi=150
	expect "${alg}_skips_unhealthy_without_scan" \
		"b1=$(kv backend.b1 <<<"$out") b2=$(kv backend.b2 <<<"$out") b3=$(kv backend.b3 <<<"$out") scan=+$(delta scan "$scan0")" \
		'[ "$(kv backend.b2 <<<"$out")" -eq 0 ] && within "$(kv backend.b1 <<<"$out")" $lo $hi && [ "$(kv ok <<<"$out")" -eq 300 ] && [ "$(delta scan "$scan0")" -eq 0 ]'
	dp health --name "part-$alg" --backend $B3 down
	scan0=$(counter scan) panic0=$(svc_field "part-$alg" panic)
	out=$(client -n 60 127.77.2.45 80)
	expect "${alg}_below_panic_threshold_draws_over_all" \
		"b2=$(kv backend.b2 <<<"$out") b3=$(kv backend.b3 <<<"$out") scan=+$(delta scan "$scan0") panic=+$(($(svc_field "part-$alg" panic) - panic0))" \
		'[ "$(kv backend.b2 <<<"$out")" -gt 0 ] && [ "$(kv backend.b3 <<<"$out")" -gt 0 ] && [ "$(delta scan "$scan0")" -eq 0 ] && [ $(($(svc_field "part-$alg" panic) - panic0)) -eq 60 ]'
	dp del --name "part-$alg"
done

# --- an IPv6 backend behind an IPv4 VIP: never drawn for an IPv4 connect, so always a scan -----
dp set --name mixed --vip 127.77.2.44:80 --alg round_robin --backend $B1 --backend '[::1]:18034'
scan0=$(counter scan)
out=$(client -n 20 127.77.2.44 80)
expect mixed_family_means_scan "ok=$(kv ok <<<"$out") b1=$(kv backend.b1 <<<"$out") scan=+$(delta scan "$scan0")" \
	'[ "$(kv ok <<<"$out")" -eq 20 ] && [ "$(kv backend.b1 <<<"$out")" -eq 20 ] && [ "$(delta scan "$scan0")" -eq 20 ]'

# --- a breaker out of closed: its backend is drawn around without a scan, round_robin stays
# exactly even over the others; its backend removed while open, the count it leaves is only a
# hint: still no scan, still exact ---------------------------------------------------------
dp set --name trip --vip 127.77.2.42:80 --alg round_robin --backend $B1 --backend $B2 \
	--backend $DEAD --consecutive 1 --open 30s
out=$(client -n 10 --timeout 500 127.77.2.42 80)
scan0=$(counter scan) redraw0=$(counter redraw)
out=$(client -n 40 127.77.2.42 80)
expect open_breaker_drawn_around_without_scan \
	"circuit=$(be_field trip $DEAD circuit) ok=$(kv ok <<<"$out") b1=$(kv backend.b1 <<<"$out") scan=+$(delta scan "$scan0") redraw=+$(delta redraw "$redraw0")" \
	'[ "$(be_field trip $DEAD circuit)" = open ] && [ "$(kv ok <<<"$out")" -eq 40 ] && [ "$(kv backend.b1 <<<"$out")" -eq 20 ] && [ "$(delta scan "$scan0")" -eq 0 ] && [ "$(delta redraw "$redraw0")" -ge 15 ]'
dp set --name trip --vip 127.77.2.42:80 --alg round_robin --backend $B1 --backend $B3 \
	--consecutive 1 --open 30s
scan0=$(counter scan)
out=$(client -n 20 127.77.2.42 80)
expect stale_not_closed_count_is_harmless \
	"ok=$(kv ok <<<"$out") b3=$(kv backend.b3 <<<"$out") scan=+$(delta scan "$scan0")" \
	'[ "$(kv ok <<<"$out")" -eq 20 ] && [ "$(kv backend.b3 <<<"$out")" -eq 10 ] && [ "$(delta scan "$scan0")" -eq 0 ]'

# --- every hand-off slot taken: decisions go straight to socket storage, still exact --------
fill_slots de
busy0=$(counter handoff_busy)
out=$(client -n 100 127.77.2.40 80)
expect busy_slots_fall_back_to_storage \
	"ok=$(kv ok <<<"$out") b1=$(kv backend.b1 <<<"$out") mismatch=$(kv peer_mismatch <<<"$out") busy=+$(delta handoff_busy "$busy0") active=$(svc_field fast active)" \
	'[ "$(kv ok <<<"$out")" -eq 100 ] && [ "$(kv backend.b1 <<<"$out")" -eq 50 ] && [ "$(kv peer_mismatch <<<"$out")" -eq 0 ] && [ "$(delta handoff_busy "$busy0")" -eq 100 ] && [ "$(svc_field fast active)" -eq 0 ]'
fill_slots 00
busy0=$(counter handoff_busy)
out=$(client -n 20 127.77.2.40 80)
expect freed_slots_used_again "ok=$(kv ok <<<"$out") busy=+$(delta handoff_busy "$busy0")" \
	'[ "$(kv ok <<<"$out")" -eq 20 ] && [ "$(delta handoff_busy "$busy0")" -eq 0 ]'

# --- a connect that fails before TCP (EADDRNOTAVAIL: the 4-tuple is taken) holds its slot ----
# One socket bound to a port connects to B1 directly; a second, bound to the same port,
# connects to a VIP whose only backend is B1: redirected, then refused by the kernel before
# TCP_CONNECT_CB. Its slot is freed by its next connect (here to a plain address) or, for a
# third socket, by closing it; a fourth listens before it is closed.
dp set --name one --vip 127.77.2.43:80 --alg round_robin --backend $B1
out=$(in_cgroup "$CG" python3 - "$HANDOFF" <<'PY'
import errno, json, socket, subprocess, sys

def held():
    dump = json.loads(subprocess.check_output(["bpftool", "-j", "map", "dump", "pinned", sys.argv[1]]))
    return sum(1 for e in dump if e["formatted"]["value"]["cookie"])

def bound(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s

def vip_connect(s):
    try:
        s.connect(("127.77.2.43", 80))
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

first = bound(0)
port = first.getsockname()[1]
first.connect(("127.0.0.1", 18031))
second = bound(port)
print("second_connect=%s" % vip_connect(second))
print("held_after_failure=%d" % held())
second.connect(("127.0.0.1", 18032))
print("second_peer=%s:%d" % second.getpeername())
print("held_after_reconnect=%d" % held())
third = bound(port)
print("third_connect=%s" % vip_connect(third))
print("held_before_close=%d" % held())
third.close()
print("held_after_close=%d" % held())
fourth = bound(port)
print("fourth_connect=%s" % vip_connect(fourth))
fourth.listen(1)
print("held_listening=%d" % held())
fourth.close()
print("held_after_listen_close=%d" % held())
PY
)
expect failed_connect_holds_slot "$(tr '\n' ' ' <<<"$out")" \
	'[ "$(kv second_connect <<<"$out")" = EADDRNOTAVAIL ] && [ "$(kv held_after_failure <<<"$out")" -eq 1 ]'
expect next_connect_frees_slot "$(tr '\n' ' ' <<<"$out")" \
	'[ "$(kv second_peer <<<"$out")" = 127.0.0.1:18032 ] && [ "$(kv held_after_reconnect <<<"$out")" -eq 0 ]'
expect release_frees_slot "$(tr '\n' ' ' <<<"$out")" \
	'[ "$(kv third_connect <<<"$out")" = EADDRNOTAVAIL ] && [ "$(kv held_before_close <<<"$out")" -eq 1 ] && [ "$(kv held_after_close <<<"$out")" -eq 0 ]'
# sock_release looks only at sockets that can hold a slot (CLOSE, SYN_SENT, LISTEN).
expect listen_release_frees_slot "$(tr '\n' ' ' <<<"$out")" \
	'[ "$(kv fourth_connect <<<"$out")" = EADDRNOTAVAIL ] && [ "$(kv held_listening <<<"$out")" -eq 1 ] && [ "$(kv held_after_listen_close <<<"$out")" -eq 0 ]'
expect counts_exact_after_failures "active one=$(svc_field one active) b1=$(be_field one $B1 active)" \
	'[ "$(svc_field one active)" -eq 0 ] && [ "$(be_field one $B1 active)" -eq 0 ]'

exit $SUITE_FAILED
