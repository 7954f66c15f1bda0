#!/usr/bin/env bash
# Traffic split (canary) through the real meshd and datapath: two subsets of two backends each
# (backend.py answering its name), a 90/10 split measured over 10,000 real connects through the
# VIP (subset v2's count within 5 binomial standard deviations of 1,000: 850..1,150), the
# per-subset metrics and `meshctl split` agreeing with what the clients saw, a live change to
# 50/50 by reload (4,000 connects: 1,842..2,158 to v2), the split kept by the pinned datapath
# while meshd is stopped and its counters across the restart, and the documented fallback: with every
# backend of v2 down (health checks), its share goes to v1 (no failed connect, fallbacks
# counted); with every v2 breaker open (no health checks) the same; with every backend down the
# service's own rule applies (panic off: EHOSTUNREACH).
# Also `meshd validate` on bad splits.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mesh_client"
MPORT=23590 P=23501
observe_cgroup split
SOCK=$TMP/run/admin.sock

# --- validation ---------------------------------------------------------------------------------
bad_split() { # NAME SPLIT_JSON ALGORITHM EXPECTED_TEXT
	observe_config "$TMP/bad.json" $MPORT '[{ "name": "c", "vip": "127.77.12.9", "port": 80,
		"backends": [ {"address":"127.0.0.1","port":1,"subset":"v1"},
			      {"address":"127.0.0.1","port":2,"subset":"v2"} ],
		"load_balancer": { "algorithm": "'"$3"'" }, "split": '"$2"' }]'
	"$MESHD" validate "$TMP/bad.json" >"$TMP/v.out" 2>&1
	check "validate_$1" "$(cat "$TMP/v.out")" grep -qF -- "$4" "$TMP/v.out"
}
bad_split sum '[{"subset":"v1","weight":90},{"subset":"v2","weight":5}]' random \
	'services[0].split: the weights do not sum to 100 (got 95.00, expected 100)'
bad_split decimals '[{"subset":"v1","weight":90.005},{"subset":"v2","weight":9.995}]' random \
	'services[0].split[0].weight: more than two decimals'
bad_split unknown '[{"subset":"v1","weight":90},{"subset":"v3","weight":10}]' random \
	'services[0].split[1].subset: no backend is in this subset (got "v3"'
bad_split duplicate '[{"subset":"v1","weight":50},{"subset":"v1","weight":50}]' random \
	'services[0].split[1].subset: duplicate subset'
bad_split maglev '[{"subset":"v1","weight":90},{"subset":"v2","weight":10}]' maglev \
	'services[0].split: maglev cannot balance within a subset'
bad_split label_without_split '[]' random \
	'services[0].backends[0].subset: a subset label on a service without a split (got "v1"'
bad_split steps '[{"subset":"v1","weight":99.99},{"subset":"v2","weight":0.01}]' random \
	'configuration is valid'
observe_config "$TMP/bad.json" $MPORT '[{ "name": "c", "vip": "127.77.12.9", "port": 80,
	"split": [ {"subset":"v1","weight":100} ] }]'
jq '.discovery = { "backend": "consul", "consul": { "services": ["c"] } }' "$TMP/bad.json" >"$TMP/bad2.json"
"$MESHD" validate "$TMP/bad2.json" >"$TMP/v.out" 2>&1
check validate_discovered "$(cat "$TMP/v.out")" \
	grep -qF "services[0].split: a Consul-discovered service takes its split from Consul's service-splitter and service-resolver entries" "$TMP/v.out"

# --- 90/10 over 10,000 connects ---------------------------------------------------------------------
backend v1a $P && backend v1b $((P + 1)) && backend v2a $((P + 2)) && backend v2b $((P + 3)) ||
	{ fail setup "backends did not start"; exit 1; }
V2A_PID=$(pgrep -f -- "--name v2a --port $((P + 2))" | head -n 1)
V2B_PID=$(pgrep -f -- "--name v2b --port $((P + 3))" | head -n 1)
services() { # V1_WEIGHT V2_WEIGHT
	echo '[{ "name": "breakers", "vip": "127.77.12.2", "port": 80,
	"backends": [ {"address":"127.0.0.1","port":'$P',"subset":"v1"},
		      {"address":"127.0.0.1","port":'$((P + 10))',"subset":"v2"},
		      {"address":"127.0.0.1","port":'$((P + 11))',"subset":"v2"} ],
	"load_balancer": { "algorithm": "random", "panic_threshold": 0 },
	"circuit_breaker": { "consecutive_failures": 1, "max_ejection_percent": 100,
			     "open_duration": "5m" },
	"split": [ {"subset":"v1","weight":50}, {"subset":"v2","weight":50} ] },
	{ "name": "canary", "vip": "127.77.12.1", "port": 80,
	"backends": [ {"address":"127.0.0.1","port":'$P',"subset":"v1"},
		      {"address":"127.0.0.1","port":'$((P + 1))',"subset":"v1"},
		      {"address":"127.0.0.1","port":'$((P + 2))',"subset":"v2"},
		      {"address":"127.0.0.1","port":'$((P + 3))',"subset":"v2"} ],
	"load_balancer": { "algorithm": "least_request", "panic_threshold": 0,
		"health_check": { "type": "tcp", "interval": "200ms", "timeout": "100ms",
				  "unhealthy_threshold": 1, "healthy_threshold": 1 } },
	"split": [ {"subset":"v1","weight":'$1'}, {"subset":"v2","weight":'$2'} ] }]'
}
observe_config "$TMP/meshd.json" $MPORT "$(services 90 10)"
start_meshd "$TMP/meshd.json" $MPORT || { fail start "meshd: $(grep -m3 "level=err" "$TMP/meshd.log")"; exit 1; }

# run N: N connects through the VIP (4 threads); sets V1, V2 (answers per subset), OK, ERR.
run() {
	in_cgroup "$CG" "$TOOLS/mesh_client" -n "$1" -t 4 --timeout 3000 127.77.12.1 80 >"$TMP/c.out"
	V1=$(awk -F= '/^backend.v1[ab]=/ { s += $2 } END { print s + 0 }' "$TMP/c.out")
	V2=$(awk -F= '/^backend.v2[ab]=/ { s += $2 } END { print s + 0 }' "$TMP/c.out")
	OK=$(awk -F= '/^ok=/ { print $2 }' "$TMP/c.out")
	ERR=$(awk -F= '/^failed=/ { print $2 }' "$TMP/c.out")
}
subset_metric() { metric $MPORT "meshd_split_connections_total{service=\"canary\",subset=\"$1\"}"; }
run 10000
echo "90/10: v1=$V1 v2=$V2 ok=$OK failed=$ERR" >&2
check split_90_10 "v2 got $V2 of 10000 (bound 850..1150), v1 $V1: $(tr '\n' ' ' <"$TMP/c.out")" \
	test "$OK" = 10000 -a "$V2" -ge 850 -a "$V2" -le 1150 -a "$((V1 + V2))" = 10000
check split_within_subset "each backend of each subset used: $(tr '\n' ' ' <"$TMP/c.out")" \
	bash -c "grep -q '^backend.v1a=' '$TMP/c.out' && grep -q '^backend.v1b=' '$TMP/c.out' &&
		grep -q '^backend.v2a=' '$TMP/c.out' && grep -q '^backend.v2b=' '$TMP/c.out'"
check split_metrics_match "metrics v1=$(subset_metric v1) v2=$(subset_metric v2), clients $V1/$V2" \
	test "$(subset_metric v1)" = "$V1" -a "$(subset_metric v2)" = "$V2"
check split_weight_metric "$(metric $MPORT 'meshd_split_weight_ratio{service="canary",subset="v2"}')" \
	test "$(metric $MPORT 'meshd_split_weight_ratio{service="canary",subset="v2"}')" = 0.1
"$MESHCTL" --socket "$SOCK" split canary >"$TMP/ctl.out" 2>&1
share=$(awk -v n="$V2" 'BEGIN { printf "%.2f%%", 100 * n / 10000 }')
check meshctl_split "$(cat "$TMP/ctl.out")" \
	bash -c "grep -Eq '^v1 +90.00% ' '$TMP/ctl.out' && grep -Eq '^v2 +10.00% +$share +$V2 +0 +2 +2$' '$TMP/ctl.out'"

# --- live change to 50/50 ---------------------------------------------------------------------------
reload_to() {
	local gen
	observe_config "$TMP/meshd.json" $MPORT "$(services "$1" "$2")"
	gen=$(metric $MPORT meshd_config_generation)
	kill -HUP "$MESHD_PID"
	wait_for 5 metric_is $MPORT meshd_config_generation $((gen + 1))
}
before=$(subset_metric v2)
reload_to 50 50 || fail reload "generation did not move: $(tail -n 3 "$TMP/meshd.log")"
run 4000
echo "50/50: v1=$V1 v2=$V2 ok=$OK failed=$ERR" >&2
check split_reload_50_50 "v2 got $V2 of 4000 (bound 1842..2158): $(tr '\n' ' ' <"$TMP/c.out")" \
	test "$OK" = 4000 -a "$V2" -ge 1842 -a "$V2" -le 2158
check split_counters_kept "v2 counter $before -> $(subset_metric v2) (+$V2): weights alone changed" \
	test "$(subset_metric v2)" = "$((before + V2))"
before_stop=$(subset_metric v2)

# --- the split outlives meshd: connects while it is stopped, counters kept across adoption -----------
kill -TERM "$MESHD_PID"
wait_for 10 bash -c "! kill -0 $MESHD_PID 2>/dev/null" || fail restart "meshd did not stop"
run 2000
echo "meshd stopped: v1=$V1 v2=$V2 ok=$OK failed=$ERR" >&2
check split_without_meshd "v2 got $V2 of 2000 with meshd stopped (bound 888..1112): $(tr '\n' ' ' <"$TMP/c.out")" \
	test "$OK" = 2000 -a "$V2" -ge 888 -a "$V2" -le 1112
v2_down=$V2
start_meshd "$TMP/meshd.json" $MPORT || { fail restart "meshd: $(grep -m3 "level=err" "$TMP/meshd.log")"; exit 1; }
check split_counters_adopted "v2 counter $(subset_metric v2), expected $((before_stop + v2_down)) (kept across the restart)" \
	test "$(subset_metric v2)" = "$((before_stop + v2_down))"

# --- fallback: every backend of v2 down -----------------------------------------------------------------
kill "$V2A_PID" "$V2B_PID"
wait_for 10 metric_is $MPORT 'meshd_split_backends_healthy{service="canary",subset="v2"}' 0 ||
	fail fallback_setup "v2 still healthy: $(metric $MPORT 'meshd_split_backends_healthy{service="canary",subset="v2"}')"
fb0=$(metric $MPORT 'meshd_split_fallbacks_total{service="canary",subset="v2"}')
run 1000
fb=$(($(metric $MPORT 'meshd_split_fallbacks_total{service="canary",subset="v2"}') - fb0))
echo "v2 down: v1=$V1 v2=$V2 ok=$OK failed=$ERR fallbacks=$fb" >&2
check split_fallback_to_v1 "v2 down: v1 $V1 of 1000, failed $ERR: $(tr '\n' ' ' <"$TMP/c.out")" \
	test "$OK" = 1000 -a "$V1" = 1000
check split_fallback_counted "fallbacks from v2: $fb of 1000 (bound 421..579 at 50%)" \
	test "$fb" -ge 421 -a "$fb" -le 579
"$MESHCTL" --socket "$SOCK" split canary >"$TMP/ctl.out" 2>&1
check meshctl_split_down "$(cat "$TMP/ctl.out")" grep -Eq '^v2 +50.00% .* 2 +0$' "$TMP/ctl.out"

# --- fallback by breakers: v2's backends refuse, their breakers open, v2's share goes to v1 ----
in_cgroup "$CG" "$TOOLS/mesh_client" -n 40 --timeout 3000 127.77.12.2 80 >"$TMP/warm.out"
wait_for 5 metric_is $MPORT 'meshd_backend_circuit_state{service="breakers",backend="127.0.0.1:'$((P + 10))'"}' 1 &&
	wait_for 5 metric_is $MPORT 'meshd_backend_circuit_state{service="breakers",backend="127.0.0.1:'$((P + 11))'"}' 1 ||
	fail breakers_setup "v2 breakers not open: $(tr '\n' ' ' <"$TMP/warm.out")"
fb0=$(metric $MPORT 'meshd_split_fallbacks_total{service="breakers",subset="v2"}')
in_cgroup "$CG" "$TOOLS/mesh_client" -n 400 -t 4 --timeout 3000 127.77.12.2 80 >"$TMP/c.out"
fb=$(($(metric $MPORT 'meshd_split_fallbacks_total{service="breakers",subset="v2"}') - fb0))
check split_fallback_breakers_open "v2 breakers open: $(tr '\n' ' ' <"$TMP/c.out") fallbacks $fb (bound 150..250)" \
	bash -c "grep -q '^ok=400$' '$TMP/c.out' && grep -q '^backend.v1a=400$' '$TMP/c.out' && [ $fb -ge 150 ] && [ $fb -le 250 ]"

# --- every backend down: the service's own rule (panic off, reject) ------------------------------
for b in v1a v1b; do
	kill "$(pgrep -f -- "--name $b --port" | head -n 1)"
done
wait_for 10 metric_is $MPORT 'meshd_split_backends_healthy{service="canary",subset="v1"}' 0 ||
	fail all_down_setup "v1 still healthy"
run 20
check split_all_down_rejects "$(tr '\n' ' ' <"$TMP/c.out")" grep -q '^errno.EHOSTUNREACH=20$' "$TMP/c.out"
exit 0
