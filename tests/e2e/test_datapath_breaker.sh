#!/usr/bin/env bash
# The circuit breaker and the datapath's decided outcomes, attached for real: a killed backend
# costs at most consecutive_failures failed connects, one probe after open_duration, closing when
# it is back and reopening for longer while it is dead; the error-rate trip after the request
# volume; connect timeouts; the ejection cap and the panic threshold; reject and passthrough;
# max_connections.
# Ports 18011-18019 (18015 drops SYNs, 18018-18019 never listen), VIPs 127.77.2.20-29.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

dp_setup brk

# The breaker's timing is read, not slept on: open_until_ns is CLOCK_MONOTONIC (the clock of
# bpf_ktime_get_ns), compared with stamps taken around the connects that trip it.
now_ms() { python3 -c 'import time; print(time.monotonic_ns() // 1000000)'; }
open_until_ms() { echo $(($(be_field "$1" "$2" open_until_ns) / 1000000)); }
# open_expired SERVICE ADDR: the open period is over (the next connect may probe).
open_expired() { [ "$(now_ms)" -ge "$(open_until_ms "$1" "$2")" ]; }
# opened_for LO HI: the circuit tripped between stamps T0 and T1 (ms) for LO..HI ms.
opened_for() { [ $((UNTIL - T0)) -ge "$1" ] && [ $((UNTIL - T1)) -le "$2" ]; }
for i in 1 2 3; do backend "b$i" "1801$i" || fail setup "backend b$i did not start"; done
B3PID=$SPAWNED_PID
B1=127.0.0.1:18011 B2=127.0.0.1:18012 B3=127.0.0.1:18013 D1=127.0.0.1:18018 D2=127.0.0.1:18019

# --- consecutive failures: b3 dies; exactly consecutive_failures (3) connects fail ----------
dp set --name api --vip 127.77.2.20:80 --alg round_robin --backend $B1 --backend $B2 \
	--backend $B3 --consecutive 3 --open 2s --max-open 20s
kill "$B3PID"
wait_for 5 bash -c '! (exec 3<>/dev/tcp/127.0.0.1/18013) 2>/dev/null'
T0=$(now_ms)
out=$(client -n 90 127.77.2.20 80)
T1=$(now_ms) UNTIL=$(open_until_ms api $B3)
expect kill_backend_costs_consecutive_failures \
	"failed=$(kv failed <<<"$out") circuit=$(be_field api $B3 circuit)" \
	'[ "$(kv failed <<<"$out")" -eq 3 ] && [ "$(kv ok <<<"$out")" -eq 87 ] && [ "$(be_field api $B3 circuit)" = open ]'
ev=$(dp events)
expect transition_event_open "events: $ev" \
	'grep -q "event=circuit service=api backend=$B3 from=closed to=open" <<<"$ev"'

# --- after open_duration (2s, +1/8 jitter) exactly one probe goes to b3; it fails: reopen ---
expect open_for_open_duration "open until +$((UNTIL - T0)) ms of the first connect, +$((UNTIL - T1)) ms of the last" \
	'opened_for 2000 2250'
wait_for 5 open_expired api $B3
T0=$(now_ms)
out=$(client -n 30 127.77.2.20 80)
T1=$(now_ms) UNTIL=$(open_until_ms api $B3)
expect one_probe_after_open_duration \
	"failed=$(kv failed <<<"$out") probes=$(be_field api $B3 probes)" \
	'[ "$(kv failed <<<"$out")" -eq 1 ] && [ "$(be_field api $B3 probes)" -eq 1 ]'
expect failed_probe_reopens "circuit=$(be_field api $B3 circuit) trips=$(be_field api $B3 trips)" \
	'[ "$(be_field api $B3 circuit)" = open ] && [ "$(be_field api $B3 trips)" -eq 2 ]'

# --- reopened for longer (4s..4.5s): no probe meanwhile -------------------------------------
expect reopened_for_longer "reopened until +$((UNTIL - T0)) ms of the probing connects' start" \
	'opened_for 4000 4500'
out=$(client -n 30 127.77.2.20 80)
expect no_probe_while_reopened "failed=$(kv failed <<<"$out") probes=$(be_field api $B3 probes)" \
	'! open_expired api $B3 && [ "$(kv failed <<<"$out")" -eq 0 ] && [ "$(be_field api $B3 probes)" -eq 1 ]'

# --- b3 back: the next probe succeeds, the breaker closes and b3 gets traffic again ---------
backend b3 18013 || fail setup "backend b3 did not restart"
wait_for 6 open_expired api $B3
out=$(client -n 30 127.77.2.20 80)
expect probe_success_closes "circuit=$(be_field api $B3 circuit) b3=$(kv backend.b3 <<<"$out")" \
	'[ "$(be_field api $B3 circuit)" = closed ] && [ "$(kv failed <<<"$out")" -eq 0 ] && [ "$(kv backend.b3 <<<"$out")" -ge 9 ]'
ev=$(dp events)
expect transition_events_half_open_closed "events: $(tr '\n' ' ' <<<"$ev")" \
	'grep -q "from=open to=half_open" <<<"$ev" && grep -q "from=half_open to=closed" <<<"$ev"'

# --- connect timeouts count as failures: a backend whose accept queue is full drops SYNs ----
spawn blackhole python3 -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 18015)); s.listen(0); time.sleep(300)'
wait_for 5 port_open 127.0.0.1 18015
"$CLIENT" -n 3 --no-read --hold 300 --timeout 300 127.0.0.1 18015 >"$TMP/fill.out" &
defer "kill -9 $!"
wait_for 5 grep -qs holding= "$TMP/fill.out"
dp set --name slow --vip 127.77.2.28:80 --alg round_robin --backend 127.0.0.1:18015 \
	--backend $B1 --consecutive 2 --open 30s
out=$(client -n 12 --timeout 300 127.77.2.28 80)
expect syn_timeouts_trip_breaker \
	"timeouts=$(kv errno.ETIMEDOUT <<<"$out") circuit=$(be_field slow 127.0.0.1:18015 circuit)" \
	'[ "$(kv errno.ETIMEDOUT <<<"$out")" -eq 2 ] && [ "$(kv ok <<<"$out")" -eq 10 ] && [ "$(be_field slow 127.0.0.1:18015 circuit)" = open ]'

# --- error rate: no consecutive trigger; 50% over a volume of 10 outcomes --------------------
# D1 never answers: every connect to it fails; it trips on its 10th outcome, not before.
dp set --name rate --vip 127.77.2.21:80 --alg round_robin --backend $B1 --backend $D1 \
	--consecutive 0 --error-rate 0.5 --volume 10 --window 30s --open 30s
out=$(client -n 18 127.77.2.21 80)
expect error_rate_waits_for_volume "failed=$(kv failed <<<"$out") circuit=$(be_field rate $D1 circuit)" \
	'[ "$(kv failed <<<"$out")" -eq 9 ] && [ "$(be_field rate $D1 circuit)" = closed ]'
out=$(client -n 40 127.77.2.21 80)
expect error_rate_trips_at_volume "failed=$(kv failed <<<"$out") circuit=$(be_field rate $D1 circuit)" \
	'[ "$(kv failed <<<"$out")" -eq 1 ] && [ "$(be_field rate $D1 circuit)" = open ]'

# --- ejection cap: 2 of 4 dead; max_ejection 25% lets the breaker take out only one ---------
dp set --name cap --vip 127.77.2.22:80 --alg round_robin --backend $B1 --backend $B2 \
	--backend $D1 --backend $D2 --consecutive 2 --open 30s --max-ejection 25 --panic 0
before=$(counter over_ejection_cap)
out=$(client -n 100 127.77.2.22 80)
expect ejection_cap_keeps_second_dead_backend_in \
	"failed=$(kv failed <<<"$out") d2 selected=$(be_field cap $D2 selected) over_cap=+$(($(counter over_ejection_cap) - before))" \
	'[ "$(kv failed <<<"$out")" -ge 30 ] && [ "$(be_field cap $D1 selected)" -eq 2 ] && [ $(($(counter over_ejection_cap) - before)) -gt 0 ]'
dp set --name cap --vip 127.77.2.22:80 --alg round_robin --backend $B1 --backend $B2 \
	--backend $D1 --backend $D2 --consecutive 2 --open 30s --max-ejection 50 --panic 0
out=$(client -n 100 127.77.2.22 80)
expect ejection_at_50_percent_takes_both_out "failed=$(kv failed <<<"$out")" \
	'[ "$(kv failed <<<"$out")" -le 2 ] && [ "$(kv ok <<<"$out")" -ge 98 ]'

# --- panic threshold (health flags): below 50% healthy, balance across all -------------------
dp set --name pan --vip 127.77.2.23:80 --alg round_robin --backend $B1 --backend $B2 \
	--backend $B3 --panic 0.5
dp health --name pan --backend $B3 down
out=$(client -n 60 127.77.2.23 80)
expect unhealthy_backend_skipped "b3=$(kv backend.b3 <<<"$out")" \
	'[ "$(kv backend.b3 <<<"$out")" -eq 0 ] && [ "$(kv backend.b1 <<<"$out")" -eq 30 ]'
dp health --name pan --backend $B2 down
out=$(client -n 60 127.77.2.23 80)
expect panic_balances_across_all "b1=$(kv backend.b1 <<<"$out") b2=$(kv backend.b2 <<<"$out") b3=$(kv backend.b3 <<<"$out") panic=$(svc_field pan panic)" \
	'[ "$(kv backend.b2 <<<"$out")" -eq 20 ] && [ "$(kv backend.b3 <<<"$out")" -eq 20 ] && [ "$(svc_field pan panic)" -eq 60 ]'
dp set --name pan --vip 127.77.2.23:80 --alg round_robin --backend $B1 --backend $B2 \
	--backend $B3 --panic 0
out=$(client -n 60 127.77.2.23 80)
expect no_panic_when_threshold_zero "b1=$(kv backend.b1 <<<"$out") (health kept across set)" \
	'[ "$(kv backend.b1 <<<"$out")" -eq 60 ]'

# --- reject / passthrough when nothing is usable ---------------------------------------------
dp health --name pan --backend $B1 down
out=$(client -n 10 127.77.2.23 80)
expect reject_no_healthy_ehostunreach \
	"EHOSTUNREACH=$(kv errno.EHOSTUNREACH <<<"$out") counted=$(svc_field pan rejects_no_healthy)" \
	'[ "$(kv errno.EHOSTUNREACH <<<"$out")" -eq 10 ] && [ "$(svc_field pan rejects_no_healthy)" -eq 10 ]'
ev=$(dp events)
expect reject_event "events: $(tail -n1 <<<"$ev")" \
	'grep -q "event=reject service=pan reason=no_healthy" <<<"$ev"'
spawn vipself python3 "$ROOT/tests/e2e/servers/backend.py" --name vipself --port 18014 \
	--addr 127.77.2.24
wait_for 5 port_open 127.77.2.24 18014 || fail setup "vip listener did not start"
dp set --name pt --vip 127.77.2.24:18014 --alg round_robin --backend $D1 --consecutive 1 \
	--max-ejection 100 --panic 0 --policy passthrough
out=$(client -n 11 127.77.2.24 18014)
expect passthrough_leaves_destination \
	"vipself=$(kv backend.vipself <<<"$out") passthrough=$(svc_field pt passthrough)" \
	'[ "$(kv backend.vipself <<<"$out")" -eq 10 ] && [ "$(svc_field pt passthrough)" -eq 10 ]'
dp set --name rj --vip 127.77.2.25:80 --alg round_robin --backend $D1 --consecutive 1 \
	--max-ejection 100 --panic 0 --policy reject
out=$(client -n 11 127.77.2.25 80)
expect reject_circuit_open "EHOSTUNREACH=$(kv errno.EHOSTUNREACH <<<"$out") counted=$(svc_field rj rejects_circuit_open)" \
	'[ "$(kv errno.EHOSTUNREACH <<<"$out")" -eq 10 ] && [ "$(svc_field rj rejects_circuit_open)" -eq 10 ]'
dp set --name empty --vip 127.77.2.26:80 --alg random
out=$(client -n 5 127.77.2.26 80)
expect reject_no_backend "EHOSTUNREACH=$(kv errno.EHOSTUNREACH <<<"$out")" \
	'[ "$(kv errno.EHOSTUNREACH <<<"$out")" -eq 5 ] && [ "$(svc_field empty rejects_no_backend)" -eq 5 ]'

# --- max_connections: 5 held, the 6th is refused (ECONNREFUSED) and counted ------------------
dp set --name lim --vip 127.77.2.27:80 --alg round_robin --backend $B1 --backend $B2 --max-conn 5
client_bg "$TMP/hold.out" -n 5 --hold 20 127.77.2.27 80
HOLD=$BG_PID
wait_value 10 5 svc_field lim active || fail max_connections_setup "never reached 5 active"
out=$(client -n 3 127.77.2.27 80)
expect max_connections_refuses \
	"refused=$(kv errno.ECONNREFUSED <<<"$out") counted=$(svc_field lim rejects_max_connections)" \
	'[ "$(kv errno.ECONNREFUSED <<<"$out")" -eq 3 ] && [ "$(svc_field lim rejects_max_connections)" -eq 3 ]'
kill -9 $HOLD
wait $HOLD 2>/dev/null
wait_value 10 0 svc_field lim active
out=$(client -n 3 127.77.2.27 80)
expect max_connections_frees_slots "ok=$(kv ok <<<"$out")" '[ "$(kv ok <<<"$out")" -eq 3 ]'
exit $SUITE_FAILED
