#!/usr/bin/env bash
# All-or-nothing reload with the real meshd (the test build with fault points, tests/meshd_faults):
# a reload that swaps the VIPs of two services, adds a third, changes backends, the log level,
# the metrics listener and the admin socket, and the traffic split of a fourth (new subset names,
# new weights) is failed at each component in turn, and before the first and in the middle of the
# datapath writes. Each time the running config and the datapath must be exactly as before
# (meshctl services -o json, meshctl split, bpftool dumps of mesh_services,
# mesh_svc_names, mesh_split and mesh_split_cnt with the counters of connects made before,
# dptool stats with backend ids), the generation unchanged, the log naming the
# component, the error counted. Then the same reload applies whole (the issue's reproduction:
# swap + add), and a VIP swap back runs under two clients with no failed connect.
# Ports 19031-19033 (backends), 19097/19098 (metrics); VIPs 127.77.9.1-4.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_root
FAULTY=$BUILD_DIR/tests/meshd_faults
need_built "$FAULTY" "$MESHCTL" "$TOOLS/dptool"

CG=$(make_cgroup reloadtxn)
CONF=$TMP/meshd.json
FAULTS=$TMP/faults
SOCK=$TMP/admin.sock
: >"$FAULTS"
for s in a b c; do backend "${s}1" "1903$(($(printf '%d' "'$s") - 96))" || fail setup "backend $s"; done

# config FILE SWAPPED: the running config (a on .1, b on .2, s on .4 split v1 90 / v2 10) or the
# next one (VIPs swapped, c added, b on two backends, s split v1 40 / canary 60, debug logs,
# metrics and admin socket moved).
config() {
	jq -n --arg cg "$CG" --arg pin "$PIN" --arg tmp "$TMP" --argjson next "$2" '{
		version: 1, cgroup: $cg, bpf_pin_path: $pin, state_dir: ($tmp + "/state"),
		log: { level: (if $next then "debug" else "info" end) },
		admin: { socket: ($tmp + (if $next then "/admin2.sock" else "/admin.sock" end)) },
		telemetry: { metrics_listen: (if $next then "127.0.0.1:19098" else "127.0.0.1:19097" end) },
		load_balancer: { algorithm: "round_robin" },
		services: ([
			{ name: "a", vip: (if $next then "127.77.9.2" else "127.77.9.1" end), port: 80,
			  backends: [ { address: "127.0.0.1", port: 19031 } ] },
			{ name: "b", vip: (if $next then "127.77.9.1" else "127.77.9.2" end), port: 80,
			  backends: ([ { address: "127.0.0.1", port: 19032 } ] +
				(if $next then [ { address: "127.0.0.1", port: 19033 } ] else [] end)) }
		] + (if $next then [ { name: "c", vip: "127.77.9.3", port: 80,
			  backends: [ { address: "127.0.0.1", port: 19033 } ] } ] else [] end) + [
			{ name: "s", vip: "127.77.9.4", port: 80,
			  backends: [ { address: "127.0.0.1", port: 19031, subset: "v1" },
				{ address: "127.0.0.1", port: 19033,
				  subset: (if $next then "canary" else "v2" end) } ],
			  split: (if $next then [ { subset: "v1", weight: 40 }, { subset: "canary", weight: 60 } ]
				else [ { subset: "v1", weight: 90 }, { subset: "v2", weight: 10 } ] end) } ])
	}' >"$1.tmp" && mv "$1.tmp" "$1"
}
config "$CONF" false
config "$TMP/next.json" true
config "$TMP/running.json" false

export MESHD_FAULTS_FILE=$FAULTS
MESHD=$FAULTY start_meshd meshd "$CONF" || {
	fail start "meshd_faults did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
PID=$MESHD_PID

# Everything a reload could have touched, in a comparable form.
snapshot() {
	{
		"$MESHCTL" --socket "$SOCK" services -o json | jq -S .
		"$MESHCTL" --socket "$SOCK" split s
		bpftool -j map dump pinned "$PIN/mesh_split" | jq -S 'sort_by(.key | tostring)'
		bpftool -j map dump pinned "$PIN/mesh_split_cnt" | jq -S 'sort_by(.key | tostring)'
		"$MESHCTL" --socket "$SOCK" status -o json | jq -S '{config_generation, discovery}'
		bpftool -j map dump pinned "$PIN/mesh_services" | jq -S 'sort_by(.key | tostring)'
		bpftool -j map dump pinned "$PIN/mesh_svc_names" | jq -S 'sort_by(.key | tostring)'
		"$TOOLS/dptool" --pin "$PIN" stats -o json | jq -S 'sort_by(.kind, .name // .service, .addr)'
		curl -s --max-time 2 "http://127.0.0.1:19097/metrics" | grep -c '^meshd_' | sed 's/^/families:/'
	} 2>&1
}
new_lines() { tail -n +$(($1 + 1)) "$TMP/meshd.log"; }
since() { new_lines "$1" | grep -q "$2"; }
errors_counted() {
	curl -s --max-time 2 "http://127.0.0.1:19097/metrics" |
		awk '/^meshd_config_reloads_total\{result="error"\}/ {print $NF}'
}

# Connects through s first, so its split counters hold something an undo could lose.
VIP=127.77.9.4 client split 30 0 "$TMP/split.stop"
wait_for 10 connects_at_least split 20 || fail split_traffic "no connects: $(cat "$TMP/split.log")"
touch "$TMP/split.stop"
wait "$CLIENT_PID"
snapshot >"$TMP/before"
check snapshot_has_the_services "$(head -c 300 "$TMP/before")" \
	grep -q '"name": "a"' "$TMP/before"
picked=$(bpftool -j map dump pinned "$PIN/mesh_split_cnt" | jq '[.[] | .formatted.value.picked[]?] | add // 0')
check snapshot_has_split_counts "mesh_split_cnt picked total: $picked" test "${picked:-0}" -ge 20

# --- a failure anywhere leaves everything as it was ---------------------------------------------
n=0
for point in reload.config reload.log reload.datapath reload.discovery reload.health \
	reload.mtls reload.metrics reload.admin datapath.apply datapath.apply@2 datapath.apply@3; do
	n=$((n + 1))
	echo "$point" >"$FAULTS"
	cp "$TMP/next.json" "$CONF"
	mark=$(wc -l <"$TMP/meshd.log")
	kill -HUP "$PID"
	if ! wait_for 10 since "$mark" 'msg="reload failed'; then
		fail "fault_$point" "no failure logged: $(new_lines "$mark" | tail -n 5)"
		continue
	fi
	want=${point#reload.}
	case $point in datapath.*) want=discovery ;; esac
	check "fault_${point}_names_component" "$(new_lines "$mark" | grep -m1 'rejected the new config')" \
		since "$mark" "msg=\"component rejected the new config\" component=$want"
	snapshot >"$TMP/after"
	check "fault_${point}_leaves_everything_as_it_was" \
		"$(diff "$TMP/before" "$TMP/after" | head -n 20 | tr '\n' ' ')" \
		cmp -s "$TMP/before" "$TMP/after"
	check "fault_${point}_counted" "errors=$(errors_counted), want $n" test "$(errors_counted)" = "$n"
	check "fault_${point}_new_socket_gone" "admin2.sock exists" test ! -e "$TMP/admin2.sock"
	# The next round starts from the running config on disk, as an operator would.
	cp "$TMP/running.json" "$CONF"
done
: >"$FAULTS"

# --- the same reload applies whole: swap + add (the issue's reproduction) -----------------------
cp "$TMP/next.json" "$CONF"
mark=$(wc -l <"$TMP/meshd.log")
kill -HUP "$PID"
if wait_for 10 since "$mark" 'msg="configuration reloaded"'; then
	SOCK=$TMP/admin2.sock
	svcs=$("$MESHCTL" --socket "$SOCK" services -o json)
	vips=$(echo "$svcs" | jq -r '[.services[] | "\(.name)=\(.vip)"] | sort | join(",")')
	check swap_and_add_applied "services: $vips" \
		test "$vips" = "a=127.77.9.2:80,b=127.77.9.1:80,c=127.77.9.3:80,s=127.77.9.4:80"
	keys=$(bpftool -j map dump pinned "$PIN/mesh_services" | jq 'length')
	check datapath_has_four_vips "mesh_services entries: $keys" test "$keys" = 4
	subsets=$(echo "$svcs" | jq -r '[.services[] | select(.name == "s") | .split[] | "\(.subset)=\(.weight_percent)"] | join(",")')
	check split_change_applied "subsets: $subsets" test "$subsets" = "v1=40,canary=60"
else
	fail swap_and_add_applied "$(new_lines "$mark" | grep -m3 -e error -e failed)"
fi

# --- a VIP swap under load: no connect fails, each VIP moves to the other service ---------------
VIP=127.77.9.1 client one 30 0 "$TMP/load.stop"
ONE=$CLIENT_PID
VIP=127.77.9.2 client two 30 0 "$TMP/load.stop"
TWO=$CLIENT_PID
wait_for 10 connects_at_least one 30 b1 && wait_for 10 connects_at_least two 30 a1 ||
	fail swap_under_load "clients did not start: $(cat "$TMP/one.log" "$TMP/two.log")"
config "$CONF" false
mark=$(wc -l <"$TMP/meshd.log")
kill -HUP "$PID"
wait_for 10 since "$mark" 'msg="configuration reloaded"' || fail swap_under_load "no reload"
SOCK=$TMP/admin.sock
wait_for 10 connects_at_least one 30 a1 && wait_for 10 connects_at_least two 30 b1 ||
	fail swap_under_load "VIPs did not move: $(progress one .backends) $(progress two .backends)"
touch "$TMP/load.stop"
wait "$ONE" "$TWO"
check swap_under_load_no_failed_connect \
	"one: fail=$(result one .fail) $(result one .backends) two: fail=$(result two .fail) $(result two .backends) $(result one '.errors | join(";")')" \
	test "$(result one .fail)" = 0 -a "$(result two .fail)" = 0
check swap_moves_traffic "one: $(result one .backends) two: $(result two .backends)" \
	test "$(result one '.backends.a1 // 0')" -gt 0 -a "$(result two '.backends.b1 // 0')" -gt 0
check c_removed_with_its_vip "mesh_services entries: $(bpftool -j map dump pinned "$PIN/mesh_services" | jq length)" \
	test "$(bpftool -j map dump pinned "$PIN/mesh_services" | jq length)" = 3

# --- a rename under load: the VIP never goes without an owner ---------------------------------------
VIP=127.77.9.1 client ren 30 0 "$TMP/ren.stop"
REN=$CLIENT_PID
wait_for 10 connects_at_least ren 30 || fail rename_under_load "client did not start"
jq '.services[0].name = "a2"' "$TMP/running.json" >"$CONF"
mark=$(wc -l <"$TMP/meshd.log")
kill -HUP "$PID"
wait_for 10 since "$mark" 'msg="configuration reloaded"' || fail rename_under_load "no reload"
connects_grow ren 30
touch "$TMP/ren.stop"
wait "$REN"
check rename_under_load_no_failed_connect "fail=$(result ren .fail) $(result ren '.errors | join(";")')" \
	test "$(result ren .fail)" = 0 -a "$(result ren '.backends.a1 // 0')" -gt 0
names=$("$TOOLS/dptool" --pin "$PIN" stats -o json | jq -r '[.[] | select(.kind == "service") | "\(.name)=\(.vip)"] | sort | join(",")')
check rename_in_datapath "services: $names" test "$names" = "a2=127.77.9.1:80,b=127.77.9.2:80,s=127.77.9.4:80"
check rename_audited "$(new_lines "$mark" | grep -m2 'msg="service')" \
	bash -c "tail -n +$((mark + 1)) '$TMP/meshd.log' | grep -q 'msg=\"service added\" service=a2' &&
		tail -n +$((mark + 1)) '$TMP/meshd.log' | grep -q 'msg=\"service removed\" service=a'"

stop_meshd "$PID"
check stops_cleanly "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
exit 0
