#!/usr/bin/env bash
# The datapath at scale, attached for real: 100,000 services of 10 backends written, real
# connects to the first, a middle and the last; one service of 1,024 backends balanced with the
# no-scan path: round_robin exactly even over 10,240 connects, least_request never picking the
# busy backend, maglev sticky per caller with minimal disruption, a dead backend among 1,024
# ejected after consecutive_failures. The 1,024 backends are 127.1.x.y:18051, all served by one
# listener on 0.0.0.0 (this suite runs in its own network namespace) that answers with the
# address it was reached at. Ports 18041-18059, VIPs 127.77.2.100-199 (the 100,000 services)
# and 127.77.4.1-9.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

need_root
DP_OPEN_ARGS="--max-services 100000 --max-backends 1100000"
dp_setup scale
BENCH=$TOOLS/dpbench
need_built "$BENCH"
spawn bench-servers "$BENCH" serve 18041 10
wait_for 5 port_open 127.0.0.1 18050 || fail setup "bench servers did not start"
spawn backend-any python3 "$ROOT/tests/e2e/servers/backend.py" --name @local --port 18051 \
	--addr 0.0.0.0
wait_for 5 port_open 127.1.0.7 18051 || fail setup "wildcard backend did not start"

# bench_vip I: the VIP:port dpbench populate gives service I.
bench_vip() { echo "127.77.$((2 + $1 / 100000)).$((100 + $1 / 1000 % 100)) $((18000 + $1 % 1000))"; }
# one_connect VIP PORT: connect + close through the VIP (dpbench's echo servers send nothing).
one_connect() { in_cgroup "$CG" "$BENCH" connects "$1" "$2" 20 | kv connect_failed; }

# --- 100,000 services ----------------------------------------------------------------------
t0=$SECONDS
out=$("$BENCH" populate "$PIN" 100000 18041)
took=$((SECONDS - t0))
expect wrote_100000_services "$out in ${took}s, $(dp stats | grep -c '^service') services listed" \
	'[ "$out" = services=100000 ] && [ "$(dp stats | grep -c "^service")" -eq 100000 ]'
for i in 0 50000 99999; do
	read -r vip port < <(bench_vip $i)
	red0=$(counter redirected)
	failed=$(one_connect "$vip" "$port")
	expect "service_${i}_of_100000_connects" "failed=$failed redirected=+$(($(counter redirected) - red0))" \
		'[ "$failed" = 0 ] && [ $(($(counter redirected) - red0)) -eq 20 ]'
done
"$BENCH" populate "$PIN" 0 18041 >/dev/null # remove them all again

# --- one service of 1,024 backends ---------------------------------------------------------
seq 0 1023 | awk '{ printf "127.1.%d.%d:18051\n", int($1 / 256), $1 % 256 }' >"$TMP/bes"
dp set --name big --vip 127.77.4.1:80 --alg round_robin --backends-from "$TMP/bes"
scan0=$(counter scan)
out=$(client -n 10240 -t 4 127.77.4.1 80)
spread=$(grep '^backend\.' <<<"$out" | cut -d= -f2 | sort -n | uniq -c | tr '\n' ' ')
expect round_robin_1024_exactly_even "ok=$(kv ok <<<"$out") counts: $spread scan=+$(($(counter scan) - scan0))" \
	'[ "$(kv ok <<<"$out")" -eq 10240 ] && [ "$(grep -c "^backend\." <<<"$out")" -eq 1024 ] && [ "$spread" = "   1024 10 " ] && [ $(($(counter scan) - scan0)) -eq 0 ]'
expect getpeername_1024_is_vip "peer_mismatch=$(kv peer_mismatch <<<"$out")" \
	'[ "$(kv peer_mismatch <<<"$out")" -eq 0 ]'

# least_request: a backend holding 40 connections gets none of 2,000 new ones.
dp set --name big --vip 127.77.4.1:80 --alg least_request --backend 127.1.0.0:18051
client_bg "$TMP/hold.out" -n 40 --hold 60 127.77.4.1 80
HOLD=$BG_PID
wait_value 10 40 be_field big 127.1.0.0:18051 active || fail least_request_setup "never held 40"
dp set --name big --vip 127.77.4.1:80 --alg least_request --backends-from "$TMP/bes"
out=$(client -n 2000 -t 4 127.77.4.1 80)
expect least_request_1024_avoids_busy "busy got $(kv backend.127.1.0.0 <<<"$out"), ok=$(kv ok <<<"$out"), $(grep -c '^backend\.' <<<"$out") backends used" \
	'[ "$(kv backend.127.1.0.0 <<<"$out")" -eq 0 ] && [ "$(kv ok <<<"$out")" -eq 2000 ] && [ "$(grep -c "^backend\." <<<"$out")" -ge 800 ]'
kill -9 $HOLD
wait $HOLD 2>/dev/null
expect active_counts_back_to_zero "service active=$(svc_field big active)" \
	'wait_value 10 0 svc_field big active'

# maglev: 60 callers (child cgroups) each stick to one backend; removing one backend moves only
# its callers (plus at most 5% of all).
dp set --name big --vip 127.77.4.1:80 --alg maglev --backends-from "$TMP/bes"
defer "for c in '$CG'/caller*; do kill_cgroup \"\$c\"; rmdir \"\$c\"; done"
maglev_round() {
	local i out names
	for i in $(seq 1 60); do
		mkdir -p "$CG/caller$i"
		out=$(in_cgroup "$CG/caller$i" "$CLIENT" -n 3 127.77.4.1 80)
		names=$(grep '^backend\.' <<<"$out" | cut -d= -f1)
		if [ "$(wc -l <<<"$names")" -eq 1 ]; then echo "$i ${names#backend.}"; else echo "$i MIXED"; fi
	done
}
maglev_round >"$TMP/mg1"
expect maglev_1024_sticky_per_caller "$(grep -c MIXED "$TMP/mg1") callers spread, $(cut -d' ' -f2 "$TMP/mg1" | sort -u | wc -l) backends used" \
	'[ "$(grep -c MIXED "$TMP/mg1")" -eq 0 ] && [ "$(cut -d" " -f2 "$TMP/mg1" | sort -u | wc -l)" -ge 50 ]'
gone=$(head -1 "$TMP/mg1" | cut -d' ' -f2)
grep -v "^$gone:" "$TMP/bes" >"$TMP/bes-1"
dp set --name big --vip 127.77.4.1:80 --alg maglev --backends-from "$TMP/bes-1"
maglev_round >"$TMP/mg2"
moved=$(join "$TMP/mg1" "$TMP/mg2" | awk -v g="$gone" '$2 != g && $2 != $3' | wc -l)
expect maglev_1024_removal_moves_only_its_callers "removed $gone; $moved other callers moved" \
	'[ "$moved" -le 3 ] && ! grep -q " $gone\$" "$TMP/mg2"'

# A dead backend among 1,024 (nothing listens on its port) is ejected after 3 failures; the
# others keep exactly even turns.
sed '$d' "$TMP/bes" >"$TMP/bes-dead"
echo 127.1.3.255:18059 >>"$TMP/bes-dead"
dp set --name big --vip 127.77.4.1:80 --alg round_robin --backends-from "$TMP/bes-dead" \
	--consecutive 3 --open 60s
out=$(client -n 4092 -t 4 127.77.4.1 80)
expect dead_backend_of_1024_ejected_after_3_failures \
	"failed=$(kv failed <<<"$out") circuit=$(be_field big 127.1.3.255:18059 circuit)" \
	'[ "$(kv failed <<<"$out")" -eq 3 ] && [ "$(be_field big 127.1.3.255:18059 circuit)" = open ]'
scan0=$(counter scan)
out=$(client -n 3069 -t 4 127.77.4.1 80)
spread=$(grep '^backend\.' <<<"$out" | cut -d= -f2 | sort -n | uniq -c | tr '\n' ' ')
expect others_exactly_even_while_ejected "ok=$(kv ok <<<"$out") counts: $spread scan=+$(($(counter scan) - scan0))" \
	'[ "$(kv ok <<<"$out")" -eq 3069 ] && [ "$spread" = "   1023 3 " ] && [ $(($(counter scan) - scan0)) -eq 0 ]'
exit $SUITE_FAILED
