#!/usr/bin/env bash
# Connect retries of the mTLS path and strict_inbound. One of two remote backends dead (its port
# closed on a live host, or its host's meshd unreachable): every client connect succeeds and the
# dead backend's breaker opens; bytes the client sent before the answer (early, with the CONNECT)
# are replayed to the live backend and arrive once. Every backend dead with the retry budget at
# zero: failures surface and are counted as budget refusals; with budget left, as exhausted
# attempts. Early bytes sent on a tunnel that then gives no answer (host b's meshd frozen) are
# not replayed: the client is reset, counted as not_replayed.
# strict_inbound on host b: a plaintext connect from host a to b's backend port is refused while
# the mesh path works.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root api
IP_C=198.18.$MTLS_NET.3 # an address of host b where no meshd listens
ip -n "$HB" addr add "$IP_C/24" dev "v$$b"
backend_b api 8080 || fail setup "backend did not start"

live="{ address: \"$IP_B\", port: 8080 }"
deadport="{ address: \"$IP_B\", port: 8090 }"
deadhost="{ address: \"$IP_C\", port: 8080 }"
# a_config BACKENDS [RETRY]: service api on host a over BACKENDS (round robin).
a_config() {
	host_config "$TMP/a.json" a "
		.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
			backends: $1, load_balancer: { algorithm: \"round_robin\" } }] |
		.load_balancer.retry += ${2:-{\}} |
		.circuit_breaker.consecutive_failures = ${3:-3} |
		.mtls.connect_timeout = \"500ms\" |
		.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
}
a_config "[$live, $deadport]"
host_config "$TMP/b.json" b "
	.mtls.inbound_listen = \"$IP_B:15008\" | .mtls.strict_inbound = true |
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080, 8090] }] |
	.authorization.default_action = \"allow\""
start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || {
	fail start "meshd did not start: $(tail -n 3 "$TMP/a.log" "$TMP/b.log")"
	exit 1
}
circuit() { ctl a -o json circuits | jq -r ".circuits[] | select(.address == \"$1\") | .circuit"; }

# --- one dead backend of two --------------------------------------------------------------------
# First, while the dead port's breaker is closed: round robin sends some first attempts there.
r=$(mc "$HA" "$CG_a/web" early "$VIP" 80 10)
retried=$(metric a 'meshd_mtls_retries_total\{result="retried"')
check early_bytes_replayed_once "$r; retried=$retried" \
	test "$(echo "$r" | jq .ok)" = 10 -a "$retried" -ge 1
r=$(mc "$HA" "$CG_a/web" many "$VIP" 80 20)
check dead_port_every_connect_succeeds "$r" test "$(echo "$r" | jq .ok)" = 20
check dead_port_breaker_opens "circuit of $IP_B:8090: $(circuit "$IP_B:8090")" \
	test "$(circuit "$IP_B:8090")" = open
retried=$(metric a 'meshd_mtls_retries_total\{result="retried"')
check retries_counted "retried=$retried" test "$retried" -ge 1

a_config "[$live, $deadhost]"
ctl a reload >/dev/null
r=$(mc "$HA" "$CG_a/web" many "$VIP" 80 20)
check dead_host_every_connect_succeeds "$r" test "$(echo "$r" | jq .ok)" = 20
check dead_host_breaker_opens "circuit of $IP_C:8080: $(circuit "$IP_C:8080")" \
	test "$(circuit "$IP_C:8080")" = open

# --- every backend dead ---------------------------------------------------------------------------
a_config "[$deadport, $deadhost]" '{ budget_percent: 0, min_retries_per_second: 0 }' 1000
ctl a reload >/dev/null
r=$(mc "$HA" "$CG_a/web" many "$VIP" 80 5)
budget=$(metric a 'meshd_mtls_retries_total\{result="budget"')
failed=$(metric a 'meshd_mtls_failed_total')
check budget_exhausted_failures_surface "$r; budget=$budget failed=$failed" \
	test "$(echo "$r" | jq .fail)" = 5 -a "$budget" -ge 5 -a "$failed" -ge 5
a_config "[$deadport, $deadhost]" '{ budget_percent: 100, min_retries_per_second: 10 }' 1000
ctl a reload >/dev/null
r=$(mc "$HA" "$CG_a/web" many "$VIP" 80 3)
exhausted=$(metric a 'meshd_mtls_retries_total\{result="exhausted"')
check attempts_exhausted_counted "$r; exhausted=$exhausted" \
	test "$(echo "$r" | jq .fail)" = 3 -a "$exhausted" -ge 3

# --- strict_inbound ------------------------------------------------------------------------------
a_config "[$live]"
ctl a reload >/dev/null
in_host "$HA" curl -s --max-time 5 "http://$IP_B:8080/" >/dev/null 2>&1
rc=$?
refused=$(metric b 'meshd_datapath_events_total\{event="strict_inbound_refused"')
check strict_refuses_plaintext_from_other_host "curl exit $rc (7 = refused), refused=$refused" \
	test "$rc" = 7 -a "$refused" -ge 1
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
check strict_mesh_path_works "got '$out'" test "$out" = api
out=$(in_host "$HB" curl -s --max-time 5 "http://$IP_B:8080/")
check strict_same_host_plaintext_works "got '$out'" test "$out" = api

# --- early bytes and no answer --------------------------------------------------------------------
# Both of a's workers hold a tunnel to b (early connections until each has one), then b's meshd
# stops answering: the CONNECT with its early bytes times out (2 x connect_timeout + 1 s) and,
# since b may have passed the bytes on, a resets the client instead of trying again.
warm() {
	mc "$HA" "$CG_a/web" early "$VIP" 80 4 >/dev/null
	[ "$(ctl a -o json pool | jq '[.pool[] | select(.state == "ready") | .worker] | unique |
		length')" -ge 2 ]
}
wait_for 10 warm
pb=$(pid_of_latest b)
kill -STOP "$pb"
r=$(mc "$HA" "$CG_a/web" read "$VIP" 80)
kill -CONT "$pb"
nr=$(metric a 'meshd_mtls_retries_total\{result="not_replayed"')
check early_bytes_not_replayed_without_answer "$r; not_replayed=$nr" \
	test "$(echo "$r" | jq -r .result)" = reset -a "$nr" -ge 1
[ -n "${MTLS_DEBUG:-}" ] && cp "$TMP"/*.log "$MTLS_DEBUG/" 2>/dev/null
exit 0
