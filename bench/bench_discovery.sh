#!/usr/bin/env bash
# Discovery propagation: meshd watches services in the Consul emulator (tests/e2e/
# consul_emulator.py, blocking queries); `dpbench propagate` registers one more instance of a
# service (an HTTP PUT to the agent API) and times until that backend is in the BPF maps: the
# blocking query's answer, meshd's parse, registry diff and map write. One change per service
# (meshd's per-query rate limit lets the first changes through at once, then spaces reads out as
# Consul advises), so each run changes SAMPLES services of its own.
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/lib_observe.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
need_built "$MESHD" "$DPBENCH"
SAMPLES=$(bench_quick 10 20)
N=$((REPEATS * SAMPLES))
CPORT=20530 MPORT=20531
URL=http://127.0.0.1:$CPORT

bench_about "Consul discovery: from a registration written to Consul (the emulator) to the new" \
	"backend in the BPF maps, through meshd's blocking query, $N services watched, one change" \
	"per service, $SAMPLES changes a run."
bench_meta metric=propagate_p50 title="Consul registration -> maps, median" unit=ms better=lower
bench_meta metric=propagate_max title="Consul registration -> maps, slowest" unit=ms better=lower
observe_cgroup bench-disc

spawn consul python3 "$ROOT/tests/e2e/consul_emulator.py" --port $CPORT
wait_for 5 port_open 127.0.0.1 $CPORT || bench_fail "Consul emulator did not start"
register() { # SERVICE ID PORT
	curl -sf -X PUT "$URL/v1/agent/service/register" -d "{\"ID\":\"$2\",\"Name\":\"$1\",
		\"Address\":\"127.0.0.1\",\"Port\":$3,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}
names=()
for ((i = 0; i < N; i++)); do
	names+=("\"d-$i\"")
	register "d-$i" "d-$i-a" 20200 && register "d-$i" "d-$i-b" 20201 ||
		bench_fail "registration in the emulator failed"
done
services=$(for ((i = 0; i < N; i++)); do
	printf '%s{"name":"d-%d","vip":"127.77.5.%d","port":80,"backends":[]}' \
		"$([ "$i" -gt 0 ] && echo ,)" "$i" $((i + 1))
done)
observe_config "$TMP/meshd.json" $MPORT "[$services]"
jq --arg url "$URL" --argjson names "[$(IFS=,; echo "${names[*]}")]" \
	'.discovery = { backend: "consul", consul: { address: $url, services: $names, wait: "5m" } } |
	 .log.level = "info"' "$TMP/meshd.json" >"$TMP/m.json" && mv "$TMP/m.json" "$TMP/meshd.json"
start_meshd "$TMP/meshd.json" $MPORT || bench_fail "meshd did not start: $(tail -n 3 "$TMP/meshd.log")"
synced() { [ "$(grep -c 'backends=0->2' "$TMP/meshd.log")" -ge "$N" ]; }
wait_for 30 synced || bench_fail "meshd did not sync the $N services"

for ((run = 1; run <= REPEATS; run++)); do
	: >"$TMP/samples"
	for ((k = 0; k < SAMPLES; k++)); do
		i=$(((run - 1) * SAMPLES + k))
		"$DPBENCH" propagate "$PIN" "127.77.5.$((i + 1)):80" 127.0.0.1:20202 "$URL/v1/agent/service/register" \
			"{\"ID\":\"d-$i-c\",\"Name\":\"d-$i\",\"Address\":\"127.0.0.1\",\"Port\":20202,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}" \
			>"$TMP/p" || bench_fail "service d-$i: the change never reached the maps: $(grep -m3 "d-$i\b" "$TMP/meshd.log" | tail -n 2)"
		kv "$TMP/p" propagate_ms >>"$TMP/samples"
	done
	sort -n "$TMP/samples" >"$TMP/sorted"
	bench_result propagate_p50 meshd - "$run" "$(awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}' "$TMP/sorted")" ms
	bench_result propagate_max meshd - "$run" "$(tail -n 1 "$TMP/sorted")" ms
done
