#!/usr/bin/env bash
# Traffic split driven from Consul (docs/split.md, With Consul), with the real meshd, the real
# datapath, the Consul emulator and real connects from the test cgroup: four instances of `api`
# registered with tags and meta (v1a, v1b: Meta.version v1; v2a, v2b: tag v2); with no entry
# the plain algorithm serves all four; a service-resolver (v1 by Meta, v2 by tag) and a
# service-splitter 90/10 put into Consul -> 2,500 connects, v2's count within 5 binomial standard
# deviations of 250 (175..325), `meshctl split` and the metrics showing it; a live change to
# 50/50 through Consul (2,000 connects: 888..1,112); an entry meshd cannot use (a split to another
# service, a subset the resolver does not define) is logged with the reason and counted, the last
# split stays (1,000 connects: 421..579);
# a resolver change leaving v2 without instances -> v2's share falls back to v1 (400 connects,
# none failed, fallbacks counted);
# Consul down keeps it too, and it is persisted: a meshd restarted (datapath removed) while Consul
# is down serves it, and keeps serving it when Consul returns answering the instances before the
# entries; the splitter deleted (404) -> back to the plain algorithm, no split;
# `meshd validate` refuses a config-file split on a Consul-discovered service.
# Ports 23521-23524 (backends), 23531 (emulator), 23592 (metrics); VIP 127.77.12.21.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mesh_client"
MPORT=23592 P=23521 CPORT=23531
CURL=http://127.0.0.1:$CPORT
VIP=127.77.12.21
observe_cgroup split-consul
SOCK=$TMP/run/admin.sock

consul() { # METHOD PATH [BODY]
	curl -sf -X "$1" "$CURL$2" ${3:+-d "$3"} >/dev/null
}
register() { # NAME PORT TAGS_JSON VERSION
	consul PUT /v1/agent/service/register "{\"ID\":\"$1\",\"Name\":\"api\",
		\"Address\":\"127.0.0.1\",\"Port\":$2,\"Tags\":$3,\"Meta\":{\"version\":\"$4\"},
		\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}
splitter() { # V1_WEIGHT V2_WEIGHT
	consul PUT /v1/config "{\"Kind\":\"service-splitter\",\"Name\":\"api\",\"Splits\":[
		{\"Weight\":$1,\"ServiceSubset\":\"v1\"},{\"Weight\":$2,\"ServiceSubset\":\"v2\"}]}"
}
weight() { metric $MPORT "meshd_split_weight_ratio{service=\"api\",subset=\"$1\"}"; }
entry_errors() { metric $MPORT 'meshd_discovery_config_entry_errors_total{backend="consul"}'; }
# run N: N connects through the VIP (4 threads); sets V1, V2 (answers per subset), OK.
run() {
	in_cgroup "$CG" "$TOOLS/mesh_client" -n "$1" -t 4 --timeout 3000 $VIP 80 >"$TMP/c.out"
	V1=$(awk -F= '/^backend.v1[ab]=/ { s += $2 } END { print s + 0 }' "$TMP/c.out")
	V2=$(awk -F= '/^backend.v2[ab]=/ { s += $2 } END { print s + 0 }' "$TMP/c.out")
	OK=$(awk -F= '/^ok=/ { print $2 }' "$TMP/c.out")
}
out() { tr '\n' ' ' <"$TMP/c.out"; }

# --- validate: a config-file split on a Consul-discovered service -----------------------------------
observe_config "$TMP/bad.json" $MPORT '[{ "name": "api", "vip": "'$VIP'", "port": 80,
	"split": [ {"subset":"v1","weight":100} ] }]'
jq '.discovery = { "backend": "consul", "consul": { "services": ["api"] } }' "$TMP/bad.json" >"$TMP/bad2.json"
"$MESHD" validate "$TMP/bad2.json" >"$TMP/v.out" 2>&1
check validate_config_split_on_consul_service "$(cat "$TMP/v.out")" \
	grep -qF "services[0].split: a Consul-discovered service takes its split from Consul's service-splitter and service-resolver entries" "$TMP/v.out"

# --- Consul with four tagged instances, meshd following it -----------------------------------------
consul_emulator $CPORT --data-file "$TMP/catalog.json" || { fail setup "emulator did not start"; exit 1; }
backend v1a $P && backend v1b $((P + 1)) && backend v2a $((P + 2)) && backend v2b $((P + 3)) ||
	{ fail setup "backends did not start"; exit 1; }
register v1a $P '["web"]' v1 && register v1b $((P + 1)) '[]' v1 &&
	register v2a $((P + 2)) '["v2","canary"]' v2 && register v2b $((P + 3)) '["v2"]' v2 ||
	{ fail setup "registration refused"; exit 1; }
# wait 30s: the resolver put below applies within the checks' 10 s only because meshd reads the
# instances again at once for their selector documents (none are kept without a resolver).
observe_config "$TMP/meshd.json" $MPORT '[{ "name": "api", "vip": "'$VIP'", "port": 80,
	"load_balancer": { "algorithm": "random" } }]'
jq --arg a "$CURL" '.discovery = { "backend": "consul", "consul": { "address": $a,
	"services": ["api"], "wait": "30s" } }' "$TMP/meshd.json" >"$TMP/m.json" && mv "$TMP/m.json" "$TMP/meshd.json"
start_meshd "$TMP/meshd.json" $MPORT || { fail start "meshd: $(grep -m3 "level=err" "$TMP/meshd.log")"; exit 1; }
wait_for 10 grep -q 'backends changed.*service=api.*backends=0->4' "$TMP/meshd.log" ||
	{ fail setup "instances not delivered: $(grep -m3 'service=api' "$TMP/meshd.log")"; exit 1; }

# No entry in Consul: no split, the plain algorithm over the four (random: v2 about half).
run 1000
check no_entry_plain_algorithm "v2 $V2 of 1000 (bound 421..579), split weight $(weight v2): $(out)" \
	test "$OK" = 1000 -a "$V2" -ge 421 -a "$V2" -le 579 -a "$(weight v2)" = none

# --- resolver + splitter 90/10 put into Consul -------------------------------------------------------
consul PUT /v1/config '{"Kind":"service-resolver","Name":"api","Subsets":{
	"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"\"v2\" in Service.Tags"}}}'
splitter 90 10
check consul_split_applied "v2 weight $(weight v2): $(grep -m2 'split' "$TMP/meshd.log" | tail -n 1)" \
	wait_output 10 0.1 weight v2
run 2500
echo "90/10: v1=$V1 v2=$V2 ok=$OK" >&2
check consul_split_90_10 "v2 got $V2 of 2500 (bound 175..325): $(out)" \
	test "$OK" = 2500 -a "$V2" -ge 175 -a "$V2" -le 325 -a "$((V1 + V2))" = 2500
check consul_split_each_instance "every instance of each subset used: $(out)" \
	bash -c "grep -q '^backend.v1a=' '$TMP/c.out' && grep -q '^backend.v1b=' '$TMP/c.out' &&
		grep -q '^backend.v2a=' '$TMP/c.out' && grep -q '^backend.v2b=' '$TMP/c.out'"
"$MESHCTL" --socket "$SOCK" split api >"$TMP/ctl.out" 2>&1
share=$(awk -v n="$V2" 'BEGIN { printf "%.2f%%", 100 * n / 2500 }')
check meshctl_consul_split "$(cat "$TMP/ctl.out")" \
	bash -c "grep -Eq '^v1 +90.00% ' '$TMP/ctl.out' && grep -Eq '^v2 +10.00% +$share +$V2 +0 +2 +2$' '$TMP/ctl.out'"

# --- a live change to 50/50 through Consul ------------------------------------------------------------
splitter 50 50
check consul_split_change_applied "v2 weight $(weight v2)" wait_output 10 0.5 weight v2
run 2000
echo "50/50: v1=$V1 v2=$V2 ok=$OK" >&2
check consul_split_50_50 "v2 got $V2 of 2000 (bound 888..1112): $(out)" \
	test "$OK" = 2000 -a "$V2" -ge 888 -a "$V2" -le 1112

# --- entries meshd cannot use: each logged with its reason, counted, the last split kept ---------
errors0=$(entry_errors)
refused_splitter() { # NAME SECOND_SPLIT_JSON EXPECTED_WHY (a grep -F of the log)
	errors0=$((errors0 + 1))
	consul PUT /v1/config '{"Kind":"service-splitter","Name":"api","Splits":[
		{"Weight":90,"ServiceSubset":"v1"},'"$2"']}'
	check "${1}_counted" "errors $(entry_errors), expected $errors0" \
		wait_output 10 $errors0 entry_errors
	check "${1}_logged" "$(grep 'not usable' "$TMP/meshd.log" | tail -n 1)" \
		bash -c "grep 'not usable; keeping the last good split' '$TMP/meshd.log' | tail -n 1 |
			grep 'service=api entry=service-splitter' | grep -qF '$3'"
}
refused_splitter malformed_entry '{"Weight":10,"Service":"other"}' \
	'why="a split to another service is not supported (got \"other\")"'
# A splitter naming a subset the resolver does not define (Consul itself takes it): refused too.
refused_splitter undefined_subset '{"Weight":10,"ServiceSubset":"v3"}' \
	'why="Splits[1] names subset \"v3\", which the service-resolver does not define"'
run 1000
check malformed_entry_keeps_split "weight $(weight v2), v2 $V2 of 1000 (bound 421..579): $(out)" \
	test "$(weight v2)" = 0.5 -a "$OK" = 1000 -a "$V2" -ge 421 -a "$V2" -le 579

# --- a resolver whose v2 matches no instance: v2 is empty, its share falls back to v1 -------------
healthy() { metric $MPORT "meshd_split_backends_healthy{service=\"api\",subset=\"$1\"}"; }
resolver() { # V2_FILTER
	consul PUT /v1/config '{"Kind":"service-resolver","Name":"api","Subsets":{
		"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"'"$1"'"}}}'
}
resolver 'Service.Meta.version == v9'
wait_output 10 0 healthy v2 || fail empty_subset_setup "v2 still has $(healthy v2) backends"
fb0=$(metric $MPORT 'meshd_split_fallbacks_total{service="api",subset="v2"}')
run 400
fb=$(($(metric $MPORT 'meshd_split_fallbacks_total{service="api",subset="v2"}') - fb0))
check empty_subset_falls_back "$(out) fallbacks $fb (bound 150..250)" \
	test "$OK" = 400 -a "$V1" = 400 -a "$fb" -ge 150 -a "$fb" -le 250
resolver '\"v2\" in Service.Tags'
wait_output 10 2 healthy v2 || fail empty_subset_setup "v2 back to $(healthy v2) backends"

# --- Consul down: the last split stays --------------------------------------------------------------
# This part and the restart below set up what they need themselves: both entries (90/10, v2 by
# tag), served and persisted, whatever the checks above left.
resolver '\"v2\" in Service.Tags'
splitter 90 10
wait_output 10 0.1 weight v2 || fail consul_down_setup "90/10 not served: $(weight v2)"
wait_output 10 2 healthy v2 || fail consul_down_setup "v2 has $(healthy v2) backends, not 2"
kill_wait "$CONSUL_PID"
errs=$(metric $MPORT 'meshd_discovery_sync_total{backend="consul",result="error"}')
wait_until 15 bash -c "[ \"\$(curl -s http://127.0.0.1:$MPORT/metrics | awk '/^meshd_discovery_sync_total\{backend=\"consul\",result=\"error\"\}/ { print \$NF }')\" -gt ${errs:-0} ]" ||
	fail consul_down_setup "no failed query seen"
run 1000
check consul_down_split_kept "weight $(weight v2), v2 $V2 of 1000 (bound 53..147): $(out)" \
	test "$(weight v2)" = 0.1 -a "$OK" = 1000 -a "$V2" -ge 53 -a "$V2" -le 147
check split_persisted "$(cat "$TMP/state/discovery.state" 2>&1)" \
	wait_for 5 grep -q '^split v2 1000$' "$TMP/state/discovery.state"
# A meshd restarted while Consul is down, its datapath removed: the persisted split serves.
kill -TERM "$MESHD_PID"
wait_for 10 bash -c "! kill -0 $MESHD_PID 2>/dev/null" || fail restart "meshd did not stop"
"$MESHD" --cleanup --config "$TMP/meshd.json" >/dev/null 2>&1
start_meshd "$TMP/meshd.json" $MPORT || { fail restart "meshd: $(grep -m3 "level=err" "$TMP/meshd.log")"; exit 1; }
run 1000
check restart_consul_down_persisted_split "weight $(weight v2), v2 $V2 of 1000 (bound 53..147): $(out)" \
	test "$(weight v2)" = 0.1 -a "$OK" = 1000 -a "$V2" -ge 53 -a "$V2" -le 147

# --- Consul back (its data kept), its entries unreadable at first -----------------------------------
# The instances are answered before the entries, always (the emulator holds the entries): the
# persisted split must be served until both entries were read, never dropped for the instances
# alone. (Left to chance, the entries often answer first and this could not fail.)
consul_emulator $CPORT --data-file "$TMP/catalog.json" --hold-config-entries ||
	{ fail setup "emulator did not restart"; exit 1; }
synced() { metric $MPORT 'meshd_discovery_sync_total{backend="consul",result="ok"}'; }
wait_until 20 bash -c "[ \"\$(curl -s http://127.0.0.1:$MPORT/metrics | awk '/^meshd_discovery_sync_total\{backend=\"consul\",result=\"ok\"\}/ { print \$NF }')\" -gt 0 ]" ||
	fail consul_back_setup "no instances answer seen: synced $(synced)"
run 1000
check split_kept_instances_before_entries "weight $(weight v2), v2 $V2 of 1000 (bound 53..147), $(grep -m1 'split=2->0' "$TMP/meshd.log"): $(out)" \
	test "$(weight v2)" = 0.1 -a "$OK" = 1000 -a "$V2" -ge 53 -a "$V2" -le 147
curl -sf -X PUT "$CURL/emulator/hold-config-entries?hold=0" >/dev/null ||
	fail consul_back_setup "emulator did not release the entries"
check split_kept_when_consul_back "$(grep -m1 'split=2->0' "$TMP/meshd.log")" \
	wait_for 20 grep -q 'msg="traffic split from consul config entries" service=api subsets=2' "$TMP/meshd.log"
check split_never_dropped_on_restart "$(grep -m1 'split=2->0' "$TMP/meshd.log")" \
	bash -c "! grep -q 'split=2->0' '$TMP/meshd.log'"

# --- the splitter deleted -> no split, the plain algorithm -------------------------------------------
consul DELETE /v1/config/service-splitter/api
check splitter_delete_no_split "v2 weight $(weight v2): $(grep 'config entry deleted' "$TMP/meshd.log" | tail -n 1)" \
	wait_output 20 none weight v2
"$MESHCTL" --socket "$SOCK" split api >"$TMP/ctl.out" 2>&1
check meshctl_no_split_after_delete "$(cat "$TMP/ctl.out")" grep -q 'has no traffic split' "$TMP/ctl.out"
run 1000
check splitter_delete_plain_algorithm "v2 $V2 of 1000 (bound 421..579): $(out)" \
	test "$OK" = 1000 -a "$V2" -ge 421 -a "$V2" -le 579
exit 0
