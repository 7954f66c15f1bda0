#!/usr/bin/env bash
# Service health aggregation end to end (real meshd, datapath, TCP health checks every 200 ms,
# real backends killed and restored):
#  - api (3 backends, panic_threshold 0.5): one killed -> degraded, two -> panic, restored ->
#    healthy; web (1 backend, panic off): killed -> down, restored -> healthy; brk (2 backends,
#    no health checks, consecutive_failures 1): a backend refusing connects opens its breaker,
#    which alone makes the service degraded.
#  - each state shows in meshd_service_state / meshd_service_backends_usable, in `meshctl status`
#    (services not healthy) and `meshctl services`, and /readyz?service=NAME answers 200 for
#    healthy and degraded, 503 for panic and down, 404 for an unknown service.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$MESHCTL"
MPORT=23190
A1=23101 A2=23102 A3=23103 W1=23111 B1=23121 B2=23122
observe_cgroup svchealth

declare -A PIDS
up() { # NAME PORT
	backend "$1" "$2" || fail setup "backend $1 did not start"
	PIDS[$1]=$SPAWNED_PID
}
down() {
	kill -9 "${PIDS[$1]}" 2>/dev/null
	wait "${PIDS[$1]}" 2>/dev/null
}
for b in "a1 $A1" "a2 $A2" "a3 $A3" "w1 $W1" "b1 $B1" "b2 $B2"; do up $b; done

hc='{ "type": "tcp", "interval": "200ms", "timeout": "150ms", "unhealthy_threshold": 1, "healthy_threshold": 1 }'
be() { local p out=; for p in "$@"; do out+="${out:+,}{\"address\":\"127.0.0.1\",\"port\":$p}"; done; echo "[$out]"; }
observe_config "$TMP/meshd.json" $MPORT "[
  { \"name\": \"api\", \"vip\": \"127.77.7.1\", \"port\": 80, \"backends\": $(be $A1 $A2 $A3),
    \"load_balancer\": { \"panic_threshold\": 0.5, \"health_check\": $hc } },
  { \"name\": \"web\", \"vip\": \"127.77.7.2\", \"port\": 80, \"backends\": $(be $W1),
    \"load_balancer\": { \"panic_threshold\": 0, \"health_check\": $hc } },
  { \"name\": \"brk\", \"vip\": \"127.77.7.3\", \"port\": 80, \"backends\": $(be $B1 $B2),
    \"load_balancer\": { \"panic_threshold\": 0 },
    \"circuit_breaker\": { \"consecutive_failures\": 1, \"open_duration\": \"60s\" } }
]"
start_meshd "$TMP/meshd.json" $MPORT || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
ctl() { "$MESHCTL" --socket "$TMP/run/admin.sock" "$@"; }
state_is() { metric_is $MPORT "meshd_service_state{service=\"$1\",state=\"$2\"}" 1; }
usable() { metric $MPORT "meshd_service_backends_usable{service=\"$1\"}"; }
readyz() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/readyz?service=$1"; }
# expect CASE SERVICE STATE USABLE CODE: every view agrees on SERVICE's state.
expect() {
	local c=$1 svc=$2 st=$3 n=$4 code=$5
	if ! wait_for 5 state_is "$svc" "$st"; then
		fail "$c" "meshd_service_state: $(curl -s "http://127.0.0.1:$MPORT/metrics" |
			grep "meshd_service_state{service=\"$svc\"" | grep ' 1$')"
		return
	fi
	pass "$c"
	check "$c.usable" "usable $(usable "$svc"), want $n" test "$(usable "$svc")" = "$n"
	check "$c.readyz" "readyz $(readyz "$svc"), want $code" test "$(readyz "$svc")" = "$code"
	check "$c.services_json" "$(ctl -o json services | jq -c ".services[] | select(.name == \"$svc\")")" \
		test "$(ctl -o json services | jq -r ".services[] | select(.name == \"$svc\") | .state")" = "$st"
	local listed
	listed=$(ctl -o json status | jq -r ".unhealthy_services[] | select(.name == \"$svc\") | .state")
	if [ "$st" = healthy ]; then
		check "$c.status_omits" "status lists $svc as '$listed'" test -z "$listed"
	else
		check "$c.status_lists" "status lists '$listed'" test "$listed" = "$st"
	fi
}

expect all_healthy api healthy 3 200
expect all_healthy_web web healthy 1 200
check status_says_none "$(ctl status | grep 'not healthy')" sh -c "'$MESHCTL' --socket '$TMP/run/admin.sock' status | grep -q 'services not healthy *none'"
check readyz_unknown_service "got $(readyz nosuch)" test "$(readyz nosuch)" = 404
check readyz_bad_name "got $(readyz 'a%zz')" test "$(readyz 'a%zz')" = 400
check readyz_plain_unchanged "got $(curl -s "http://127.0.0.1:$MPORT/readyz")" \
	test "$(curl -s "http://127.0.0.1:$MPORT/readyz")" = ready

down a1
expect one_of_three_down api degraded 2 200
check readyz_body "$(curl -s "http://127.0.0.1:$MPORT/readyz?service=api")" \
	test "$(curl -s "http://127.0.0.1:$MPORT/readyz?service=api")" = "degraded (2/3 backends usable, 2 healthy)"
down a2
expect two_of_three_down_panic api panic 1 503
check status_table_line "$(ctl status | grep -A2 'not healthy')" \
	sh -c "'$MESHCTL' --socket '$TMP/run/admin.sock' status | grep -q 'services not healthy *api panic (1/3 usable, 1 healthy)'"
check services_table_state "$(ctl services | grep '^api')" \
	sh -c "'$MESHCTL' --socket '$TMP/run/admin.sock' services | grep -Eq '^api +127.77.7.1:80 +round_robin +off +panic +3 +1 +1 '"
down w1
expect single_backend_down_no_panic web down 0 503
up a1 "$A1"
up a2 "$A2"
up w1 "$W1"
expect restored api healthy 3 200
expect restored_web web healthy 1 200

# The breaker alone: b2 refuses connects; with consecutive_failures 1 its breaker opens on the
# first failed connect, leaving brk one usable backend of two.
expect brk_healthy brk healthy 2 200
down b2
connect_vip 127.77.7.3 80 6 >/dev/null
check breaker_opened "circuit state $(metric $MPORT "meshd_backend_circuit_state{service=\"brk\",backend=\"127.0.0.1:$B2\"}")" \
	wait_for 5 metric_is $MPORT "meshd_backend_circuit_state{service=\"brk\",backend=\"127.0.0.1:$B2\"}" 1
expect breaker_open_degrades brk degraded 1 200
check breaker_backend_still_healthy "healthy flag $(metric $MPORT "meshd_backend_healthy{service=\"brk\",backend=\"127.0.0.1:$B2\"}")" \
	test "$(metric $MPORT "meshd_backend_healthy{service=\"brk\",backend=\"127.0.0.1:$B2\"}")" = 1
exit 0
