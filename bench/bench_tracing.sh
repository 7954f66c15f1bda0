#!/usr/bin/env bash
# Tracing overhead: connect + 1 B request/response + close through the VIP with meshd's
# connection tracing off, at 1% and at 100% sampling (telemetry.tracing.sample_ratio), exporting
# to a local OTLP/HTTP sink; the three alternate in blocks within each run (a reload switches
# the ratio), and the ratio to tracing off is taken within the run.
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
need_built "$MESHD" "$LOADGEN"
bench_meta metric=connect_close_p50 title="connect + 1 B request/response + close through the VIP, median" \
	unit=us better=lower subject=trace_1pct baselines=trace_off
if ! "$MESHD" config env | grep -q MESH_TELEMETRY__TRACING__SAMPLE_RATIO; then
	for v in trace_off trace_1pct trace_100pct; do
		bench_skip connect_close_p50 "$v" - "meshd has no connection tracing yet" \
			"(telemetry.tracing.*, issue 12 item 1)"
	done
	exit 0
fi
bench_fail "tracing overhead scenario not written yet"
