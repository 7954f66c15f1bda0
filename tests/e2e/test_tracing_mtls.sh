#!/usr/bin/env bash
# Connection traces of mTLS connections, end to end: two hosts (network namespaces joined by a
# veth, as the mTLS suites build them), one meshd each exporting to its own test OTLP receiver
# (tests/otlp/receiver.js: every export decoded with the OpenTelemetry protocol definitions).
#  - a connection from host a's `web` identity to `api` on host b gives a CLIENT span on a and a
#    SERVER span on b with one trace id, the server's parent being the client span (the W3C
#    traceparent carried on the CONNECT); service.name is the caller identity on a, the local
#    service on b, which names the caller by its verified SPIFFE ID;
#  - at sample_ratio 0 a good connection exports nothing, a failing one (backend refused on b)
#    still gives the client span (failed) and the server span of each attempt (backend_failed,
#    naming the calling meshd), all in one trace;
#  - a hand-driven CONNECT: a valid traceparent is joined (its trace id, its parent-id as the
#    parent); malformed ones are ignored and counted, the server span starting its own trace.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD"
RECEIVER=$ROOT/tests/otlp/receiver.js
if [ ! -d "$ROOT/tests/otlp/node_modules/@opentelemetry/otlp-transformer" ]; then
	fail setup "tests/otlp has no node_modules (scripts/install-deps.sh installs them)"
	exit 1
fi
if ! /usr/bin/python3 -c 'import h2' 2>/dev/null; then
	fail setup "python3-h2 missing (scripts/install-deps.sh installs it)"
	exit 1
fi
H2C="/usr/bin/python3 $ROOT/tests/e2e/servers/h2connect.py"
OPORT=4318

two_hosts root api gone
backend_b api 8080 || fail setup "backend did not start"
for h in a b; do
	ns=$(eval echo "\$H$(echo $h | tr a-z A-Z)")
	spawn "receiver-$h" nsenter --net="/run/netns/$ns" node "$RECEIVER" $OPORT "$TMP/spans-$h.jsonl"
	wait_for 10 in_host "$ns" bash -c "exec 3<>/dev/tcp/127.0.0.1/$OPORT" 2>/dev/null || {
		fail setup "receiver on host $h did not start: $(cat "$TMP/receiver-$h.log")"
		exit 1
	}
done

# configs RATIO: both hosts' configs, exporting to their receiver at RATIO.
configs() {
	local tracing="{ endpoint: \"http://127.0.0.1:$OPORT/v1/traces\", sample_ratio: $1 }"
	host_config "$TMP/a.json" a "
	.telemetry.tracing = $tracing |
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8080 }] },
		{ name: \"gone\", vip: \"127.77.9.11\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8089 }],
		circuit_breaker: { consecutive_failures: 100 } }] |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
	host_config "$TMP/b.json" b "
	.telemetry.tracing = $tracing |
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] },
		{ cgroup: \"${CG_b#"$CG2"}/gone\", service: \"gone\", ports: [8089] }] |
	.authorization.rules = [{ source: \"web\", destination: \"*\", action: \"allow\" }]"
}
configs 1
start_hosts

# spans HOST FROM FILTER: span lines of HOST's receiver from line FROM on matching FILTER.
spans() { tail -n +"$2" "$TMP/spans-$1.jsonl" 2>/dev/null | jq -c "select(.type == \"span\") | select($3)"; }
lines() { cat "$TMP/spans-$1.jsonl" 2>/dev/null | wc -l; }
n_spans() { [ "$(spans "$1" "$2" "$3" | wc -l)" -ge "$4" ]; }
# wait_spans HOST FROM FILTER [N]: up to 10 s for N (1) matching spans; prints them.
wait_spans() {
	wait_for 10 n_spans "$1" "$2" "$3" "${4:-1}"
	spans "$1" "$2" "$3"
}
MTLS='.attributes["mesh.mtls"] == true'

# --- 1. one connection, two spans, one trace --------------------------------------------------
fa=$(lines a) fb=$(lines b)
r=$(mc "$HA" "$CG_a/web" many "$VIP" 80 1)
check connection_through_the_tunnel "$r" test "$(echo "$r" | jq .ok)" = 1
c=$(wait_spans a "$fa" "$MTLS and .kind == 3" | tail -n 1)
s=$(wait_spans b "$fb" "$MTLS and .kind == 2" | tail -n 1)
check client_span_on_a "$(tail -n 2 "$TMP/spans-a.jsonl")" test -n "$c"
check server_span_on_b "$(tail -n 2 "$TMP/spans-b.jsonl")" test -n "$s"
ca() { jq -r "$1" <<<"$c"; }
sa() { jq -r "$1" <<<"$s"; }
check one_trace_id "client $(ca .traceId) server $(sa .traceId)" \
	test -n "$(ca .traceId)" -a "$(ca .traceId)" = "$(sa .traceId)"
check server_parent_is_client_span "client span $(ca .spanId) server parent $(sa .parentSpanId)" \
	test "$(sa .parentSpanId)" = "$(ca .spanId)" -a -z "$(ca .parentSpanId)"
check client_service_name_is_caller_identity "$(ca .resource)" \
	test "$(ca '.resource["service.name"]')" = web
check server_service_name_is_local_service "$(sa .resource)" \
	test "$(sa '.resource["service.name"]')" = api
check client_attributes "$(ca .attributes)" test "$(ca '.attributes |
	[.["server.address"], .["server.port"], .["network.peer.address"], .["network.peer.port"],
	 .["mesh.service"], .["mesh.identity"], .["mesh.result"], .["mesh.attempts"],
	 .["network.transport"], .["mesh.bytes_sent"] > 0, .["mesh.bytes_received"] > 0,
	 .["mesh.connect_latency_ns"] > 0] | @csv')" = \
	"\"$VIP\",80,\"$IP_B\",15008,\"api\",\"web\",\"ok\",1,\"tcp\",true,true,true"
check server_attributes "$(sa .attributes)" test "$(sa '.attributes |
	[.["server.address"], .["server.port"], .["network.peer.address"], .["mesh.service"],
	 .["mesh.source"], .["mesh.source.spiffe_id"], .["mesh.result"],
	 .["mesh.bytes_received"] > 0] | @csv')" = \
	"\"$IP_B\",8080,\"$IP_A\",\"api\",\"web\",\"spiffe://$TD/ns/default/dc/dc1/svc/web\",\"ok\",true"
check spans_nest_in_time "client $(ca .start)..$(ca .end) server $(sa .start)..$(sa .end)" \
	test "$(jq -rn --argjson c "$c" --argjson s "$s" \
		'($c.start|tonumber) <= ($s.start|tonumber) and ($s.start|tonumber) <= ($s.end|tonumber) and ($c.start|tonumber) <= ($c.end|tonumber)')" = true

# --- 2. ratio 0: only failures, both sides, one trace -------------------------------------------
for h in a b; do
	configs 0
	gen=$(grep -c 'msg="configuration reloaded"' "$TMP/$h.log")
	kill -HUP "$(eval echo "\$PID_$h")"
	wait_log 10 "$h" 'msg="configuration reloaded"' $((gen + 1)) ||
		fail "reload_$h" "no reload line: $(tail -n 3 "$TMP/$h.log")"
done
fa=$(lines a) fb=$(lines b)
r=$(mc "$HA" "$CG_a/web" many "$VIP" 80 5)
check ok_connections_at_ratio_0 "$r" test "$(echo "$r" | jq .ok)" = 5
r=$(mc "$HA" "$CG_a/web" many 127.77.9.11 80 1)
check failing_connection_fails "$r" test "$(echo "$r" | jq .fail)" = 1
c=$(wait_spans a "$fa" "$MTLS and .attributes[\"mesh.result\"] == \"failed\"" | tail -n 1)
check failed_client_span_exported "$(tail -n 2 "$TMP/spans-a.jsonl")" test -n "$c"
attempts=$(ca '.attributes["mesh.attempts"]')
s=$(wait_spans b "$fb" "$MTLS and .traceId == \"$(ca .traceId)\"" "${attempts:-1}")
check server_span_per_failed_attempt "attempts $attempts, server spans: $s" \
	test "$(echo "$s" | grep -c .)" = "$attempts" -a \
	"$(echo "$s" | jq -r '[.attributes["mesh.result"], .status.code, .parentSpanId,
		.attributes["network.peer.address"]] | @csv' | sort -u)" = \
	"\"backend_failed\",2,\"$(ca .spanId)\",\"$IP_A\""
check failed_client_status "$(ca .status)" test "$(ca '.status.code')" = 2
check no_ok_span_at_ratio_0 "$(spans a "$fa" "$MTLS and .attributes[\"mesh.result\"] == \"ok\"")" \
	test -z "$(spans a "$fa" "$MTLS and .attributes[\"mesh.result\"] == \"ok\"")$(spans b "$fb" ".attributes[\"mesh.result\"] == \"ok\"")"

# --- 3. a hand-driven CONNECT's traceparent: joined when valid, ignored when not ----------------
configs 1
gen=$(grep -c 'msg="configuration reloaded"' "$TMP/b.log")
kill -HUP "$PID_b"
wait_log 10 b 'msg="configuration reloaded"' $((gen + 1)) || fail reload_b "no reload line"
call() {
	in_host "$HA" $H2C --host "$IP_B" --ca "$C/root.crt" --cert "$TMP/a/certs/web.crt" \
		--key "$TMP/a/certs/web.key" --authority "$IP_B:8080" "$@"
}
TID=4bf92f3577b34da6a3ce929d0e0e4736 PID=00f067aa0ba902b7
fb=$(lines b)
r=$(call --header "traceparent=00-$TID-$PID-01")
check valid_traceparent_connects "$r" test "$(echo "$r" | jq .status)" = 200
s=$(wait_spans b "$fb" "$MTLS and .traceId == \"$TID\"" | tail -n 1)
check valid_traceparent_joined "$s" test -n "$s" -a "$(sa .parentSpanId)" = "$PID"
invalid() { metric b 'meshd_mtls_traceparent_invalid_total'; }
before=$(invalid)
bad=0
for tp in "00-$TID-$PID-1" "00-${TID^^}-$PID-01" "00-00000000000000000000000000000000-$PID-01" \
	"ff-$TID-$PID-01" "00-$TID-0000000000000000-01" "00-$TID-$PID-01-extra" "garbage"; do
	fb=$(lines b)
	r=$(call --header "traceparent=$tp")
	s=$(wait_spans b "$fb" "$MTLS and .kind == 2" | tail -n 1)
	if [ "$(echo "$r" | jq .status)" != 200 ] || [ -z "$s" ] ||
		[ "$(sa .traceId)" = "$TID" ] || [ -n "$(sa .parentSpanId)" ]; then
		fail "malformed_traceparent_ignored" "'$tp': answer $r, span $s"
		bad=1
	fi
done
[ $bad = 0 ] && pass malformed_traceparents_ignored_own_trace
fb=$(lines b)
r=$(call --header "traceparent=00-$TID-$PID-01" --header "traceparent=00-$TID-$PID-01")
s=$(wait_spans b "$fb" "$MTLS and .kind == 2" | tail -n 1)
check repeated_traceparent_ignored "$r / $s" test "$(sa .traceId)" != "$TID" -a -z "$(sa .parentSpanId)"
check malformed_traceparents_counted "before $before after $(invalid)" test "$(invalid)" -eq $((before + 8))
check every_export_decoded "$(cat "$TMP"/spans-*.jsonl | grep '"type":"error"' | head -n 2)" \
	sh -c "! grep -q '\"type\":\"error\"' '$TMP/spans-a.jsonl' '$TMP/spans-b.jsonl'"
exit 0
