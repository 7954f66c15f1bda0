#!/usr/bin/env bash
# Connection traces over OTLP, end to end: the real meshd and datapath, real backends, and a test
# receiver (tests/otlp/receiver.js) that decodes every export with the OpenTelemetry protocol
# definitions (@opentelemetry/otlp-transformer's protobufjs code), protobuf and OTLP/JSON alike.
#  - a plain connect, a refused connect (which opens the breaker) and a breaker-rejected connect
#    each produce their span, with the semantic-convention and mesh attributes;
#  - sample_ratio 0.1 over 2,000 connects exports 200 +- 5 standard deviations (133..267) plain
#    spans (binomial, sd 13.4: a false failure about once in 1.7 million runs); at ratio 0 none,
#    while failed and rejected connects still are, and so is a successful half-open probe that
#    closes a breaker (the sample draw is made at establishment: it must not leave that out);
#  - telemetry.tracing.protocol http/json exports OTLP/JSON that decodes strictly;
#  - receiver down: connects keep working, spans are dropped and counted (export failed, queue
#    full), and exports resume once the receiver is back.
# mTLS connections' client and server spans: test_tracing_mtls.sh (two hosts).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$TOOLS/mesh_client"
RECEIVER=$ROOT/tests/otlp/receiver.js
if [ ! -d "$ROOT/tests/otlp/node_modules/@opentelemetry/otlp-transformer" ]; then
	fail setup "tests/otlp has no node_modules (scripts/install-deps.sh installs them)"
	exit 1
fi
MPORT=23390 OPORT=23391 A1=23301 A2=23302 FLAP=23303 DEAD=23309
SPANS=$TMP/spans.jsonl
observe_cgroup tracing

start_receiver() {
	spawn receiver node "$RECEIVER" $OPORT "$SPANS"
	RECEIVER_PID=$SPAWNED_PID
	wait_for 10 port_open 127.0.0.1 $OPORT
}
stop_receiver() {
	kill -9 "$RECEIVER_PID" 2>/dev/null
	wait "$RECEIVER_PID" 2>/dev/null
}
start_receiver || {
	fail setup "receiver did not start: $(cat "$TMP/receiver.log")"
	exit 1
}
backend a1 $A1 && backend a2 $A2 || fail setup "backends did not start"

# write_config RATIO PROTOCOL
write_config() {
	observe_config "$TMP/meshd.json" $MPORT "[
  { \"name\": \"api\", \"vip\": \"127.77.9.1\", \"port\": 80,
    \"backends\": [ {\"address\":\"127.0.0.1\",\"port\":$A1}, {\"address\":\"127.0.0.1\",\"port\":$A2} ] },
  { \"name\": \"gone\", \"vip\": \"127.77.9.2\", \"port\": 80,
    \"backends\": [ {\"address\":\"127.0.0.1\",\"port\":$DEAD} ],
    \"load_balancer\": { \"panic_threshold\": 0 },
    \"circuit_breaker\": { \"consecutive_failures\": 1, \"open_duration\": \"300s\",
                           \"max_ejection_percent\": 100 } },
  { \"name\": \"flap\", \"vip\": \"127.77.9.3\", \"port\": 80,
    \"backends\": [ {\"address\":\"127.0.0.1\",\"port\":$FLAP} ],
    \"load_balancer\": { \"panic_threshold\": 0 },
    \"circuit_breaker\": { \"consecutive_failures\": 1, \"open_duration\": \"1s\",
                           \"max_ejection_percent\": 100 } }
]"
	jq --argjson r "$1" --arg p "$2" --arg e "http://127.0.0.1:$OPORT/v1/traces" \
		'.telemetry.tracing = { endpoint: $e, protocol: $p, sample_ratio: $r } | .log.level = "info"' \
		"$TMP/meshd.json" >"$TMP/m.json" && mv "$TMP/m.json" "$TMP/meshd.json"
}
reload_to() { # RATIO PROTOCOL
	local gen
	gen=$(metric $MPORT meshd_config_generation)
	write_config "$1" "$2"
	kill -HUP "$MESHD_PID"
	wait_for 5 metric_is $MPORT meshd_config_generation $((gen + 1))
}
write_config 1 http/protobuf
start_meshd "$TMP/meshd.json" $MPORT || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}

# jq over the span lines from line $1 on.
spans_from() { tail -n +"$1" "$SPANS" | jq -c 'select(.type == "span")'; }
lines() { wc -l <"$SPANS"; }
# (jq -e cannot tell: with no input at all it exits 0)
has_span() { [ "$(spans_from "$1" | jq -c "select($2)" | wc -l)" -gt 0 ]; }
# wait_span FROM FILTER: waits up to 10 s for a span matching FILTER; prints it.
wait_span() {
	wait_for 10 has_span "$1" "$2" && spans_from "$1" | jq -c "select($2)" | tail -n 1
}

# 1. A plain connect.
from=$(lines)
connect_vip 127.77.9.1 80 1 >/dev/null
s=$(wait_span "$from" '.attributes["mesh.service"] == "api"')
if [ -z "$s" ]; then
	fail plain_span "no span: $(tail -n 3 "$SPANS")"
else
	pass plain_span
	a() { jq -r "$1" <<<"$s"; }
	check plain.name_kind "$(a '.name, .kind')" test "$(a '.name + " " + (.kind|tostring)')" = "connect api 3"
	check plain.server "$(a '.attributes | [.["server.address"], .["server.port"]] | @csv')" \
		test "$(a '.attributes | "\(.["server.address"]):\(.["server.port"])"')" = "127.77.9.1:80"
	check plain.peer "$(a '.attributes | [.["network.peer.address"], .["network.peer.port"]] | @csv')" \
		test "$(a '.attributes | "\(.["network.peer.address"]):\(.["network.peer.port"])"')" = "127.0.0.1:$A1" -o \
		"$(a '.attributes | "\(.["network.peer.address"]):\(.["network.peer.port"])"')" = "127.0.0.1:$A2"
	check plain.local "$(a '.attributes["network.local.address"]')" \
		test "$(a '.attributes["network.local.address"]')" = 127.0.0.1 -a "$(a '.attributes["network.local.port"] > 1024')" = true
	check plain.transport "$(a '.attributes["network.transport"]')" test "$(a '.attributes["network.transport"]')" = tcp
	check plain.mesh "$(a '.attributes | tostring')" \
		test "$(a '.attributes | [.["mesh.result"], .["mesh.backend"] != null, .["mesh.breaker.state"], .["mesh.sampled"]] | @csv')" = '"ok",true,"closed",true'
	# "hello\n" is 6 bytes; the kernel's bytes_acked also counts the SYN and the FIN.
	check plain.bytes "sent $(a '.attributes["mesh.bytes_sent"]') received $(a '.attributes["mesh.bytes_received"]')" \
		test "$(a '.attributes["mesh.bytes_sent"] >= 6 and .attributes["mesh.bytes_sent"] <= 8 and .attributes["mesh.bytes_received"] > 0')" = true
	check plain.latency "$(a '.attributes["mesh.connect_latency_ns"]')" \
		test "$(a '.attributes["mesh.connect_latency_ns"] > 0 and .attributes["mesh.connect_latency_ns"] < 1000000000')" = true
	now=$(date +%s%N)
	check plain.times "start $(a .start) end $(a .end) now $now" \
		test "$(a "(.start|tonumber) <= (.end|tonumber) and ((.end|tonumber) - $now | fabs) < 60e9")" = true
	check plain.ids "$(a '.traceId + " " + .spanId')" \
		sh -c "echo '$(a '.traceId + " " + .spanId')' | grep -Eq '^[0-9a-f]{32} [0-9a-f]{16}$' && ! echo '$(a .traceId)' | grep -q '^0*$'"
	check plain.status_unset "$(a .status)" test "$(a '.status.code // 0')" = 0
	check plain.resource "$(a '.resource | tostring')" \
		test "$(a '.resource | [.["service.name"] != null, .["host.name"] != "", .["meshd.version"] != ""] | @csv')" = "true,true,true"
	check plain.protobuf "$(a .encoding)" test "$(a .encoding)" = protobuf
fi

# 2. A refused connect: always exported, and it opens the breaker (consecutive_failures 1).
from=$(lines)
connect_vip 127.77.9.2 80 1 >/dev/null
s=$(wait_span "$from" '.attributes["mesh.result"] == "failed"')
check refused_span "$(tail -n 2 "$SPANS")" test -n "$s"
check refused.attrs "$s" test "$(jq -r '[.status.code, .attributes["network.peer.port"], .attributes["mesh.breaker.moved"], .attributes["mesh.service"]] | @csv' <<<"$s")" = "2,$DEAD,true,\"gone\""

# 3. A breaker-rejected connect.
from=$(lines)
connect_vip 127.77.9.2 80 1 >/dev/null
s=$(wait_span "$from" '.attributes["mesh.result"] == "rejected"')
check rejected_span "$(tail -n 2 "$SPANS")" test -n "$s"
check rejected.attrs "$s" test "$(jq -r '[.status.code, .attributes["mesh.reject_reason"], .attributes["server.address"], .attributes["server.port"], .name] | @csv' <<<"$s")" = '2,"circuit_open","127.77.9.2",80,"connect gone"'

# 4. Sampling. A rejected connect after the batch marks its end (spans leave in order).
# sampled_after N: plain spans of the N connects made after line FROM, once the marker arrived.
sampled_run() {
	local n=$1 from marker
	from=$(lines)
	in_cgroup "$CG" "$TOOLS/mesh_client" -n "$n" 127.77.9.1 80 >"$TMP/client.out"
	connect_vip 127.77.9.2 80 1 >/dev/null
	marker=$(wait_span "$from" '.attributes["mesh.result"] == "rejected"')
	[ -n "$marker" ] || { echo "no marker"; return; }
	spans_from "$from" | jq -c 'select(.attributes["mesh.service"] == "api")' | wc -l
}
reload_to 0.1 http/protobuf || fail sampling "reload to ratio 0.1 not applied"
got=$(sampled_run 2000)
check sampling_0_1_within_bound "got $got of 2000 (bound 133..267), client: $(tr '\n' ' ' <"$TMP/client.out")" \
	test "$got" -ge 133 -a "$got" -le 267 2>/dev/null
reload_to 0 http/protobuf || fail sampling "reload to ratio 0 not applied"
got=$(sampled_run 300)
check sampling_0_exports_no_plain_span "got $got" test "$got" = 0
from=$(lines)
connect_vip 127.77.9.2 80 1 >/dev/null
check ratio_0_still_exports_rejects "$(tail -n 1 "$SPANS")" wait_for 10 has_span "$from" '.attributes["mesh.result"] == "rejected"'
# ... and a connect that moved the breaker although it succeeded: the half-open probe that
# closes it again (the sample draw at establishment must not leave it out).
from=$(lines)
connect_vip 127.77.9.3 80 1 >/dev/null
check ratio_0_flap_failure_exported "$(tail -n 1 "$SPANS")" \
	wait_for 10 has_span "$from" '.attributes["mesh.service"] == "flap" and .attributes["mesh.result"] == "failed"'
backend flap $FLAP || fail ratio_0_flap "backend flap did not start"
from=$(lines)
flap_ok() { [ "$(connect_vip 127.77.9.3 80 1)" = 1 ]; }
wait_for 10 flap_ok # the breaker lets a probe through after 1 s
s=$(wait_span "$from" '.attributes["mesh.service"] == "flap" and .attributes["mesh.result"] == "ok"')
check ratio_0_exports_breaker_closing_probe "$s" \
	test "$(jq -r '.attributes | [.["mesh.breaker.moved"], .["mesh.sampled"]] | @csv' <<<"$s")" = "true,false"

# 5. OTLP/JSON.
reload_to 1 http/json || fail json "reload to http/json not applied"
from=$(lines)
connect_vip 127.77.9.1 80 3 >/dev/null
s=$(wait_span "$from" '.attributes["mesh.service"] == "api" and .encoding == "json"')
check json_span_decodes_strictly "$(tail -n 2 "$SPANS")" test -n "$s"
check json.attrs "$s" test "$(jq -r '[.kind, .attributes["mesh.result"], .attributes["server.port"], (.attributes["mesh.bytes_sent"]|type)] | @csv' <<<"$s")" = '3,"ok",80,"number"'
reload_to 1 http/protobuf || fail json "reload back to protobuf not applied"

# 6. Receiver down: meshd keeps serving, drops are counted, exports resume.
stop_receiver
in_cgroup "$CG" "$TOOLS/mesh_client" -n 3000 127.77.9.1 80 >"$TMP/down.out"
check serves_with_receiver_down "$(tr '\n' ' ' <"$TMP/down.out")" grep -qx 'ok=3000' "$TMP/down.out"
dropped() { metric $MPORT "meshd_trace_spans_dropped_total{reason=\"$1\"}"; }
positive() { [ "$("$@")" != none ] && [ "$("$@")" -gt 0 ]; }
check drops_counted_queue_full "queue_full $(dropped queue_full)" wait_for 10 positive dropped queue_full
check drops_counted_export_failed "export_failed $(dropped export_failed)" wait_for 20 positive dropped export_failed
check export_errors_counted "$(metric $MPORT 'meshd_trace_exports_total{result="error"}')" \
	positive metric $MPORT 'meshd_trace_exports_total{result="error"}'
start_receiver || fail recovers "receiver did not restart"
from=$(lines)
recovered() {
	connect_vip 127.77.9.1 80 1 >/dev/null
	has_span "$from" '.attributes["mesh.service"] == "api"'
}
check recovers_after_receiver_returns "$(tail -n 2 "$SPANS")" wait_until 30 recovered
check exported_counted "$(metric $MPORT meshd_trace_spans_exported_total)" positive metric $MPORT meshd_trace_spans_exported_total
check every_export_decoded "$(grep '"type":"error"' "$SPANS" | head -n 2)" sh -c "! grep -q '\"type\":\"error\"' '$SPANS'"
exit 0
