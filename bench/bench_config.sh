#!/usr/bin/env bash
# Config load at 10,000 services (build/bench/bench_config, bench/bench_config.c): the loader
# (parse, env, validate) against cJSON alone parsing and freeing the same text, the floor for any
# loader. Each run is one bench_config process (the median of its own 7 loads).
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/lib.sh"
BIN=$BUILD_DIR/bench/bench_config
need_built "$BIN"
bench_about "Loading and validating a 10,000-service config (10 backends each, 4.6 MB of JSON)" \
	"against cJSON alone parsing it (the floor for any loader)."
bench_meta metric=config_load title="load + validate 10,000 services" unit=ms better=lower \
	subject=meshd baselines=cjson_parse
for ((run = 1; run <= REPEATS; run++)); do
	"$BIN" >"$TMP/out" || bench_fail "bench_config failed"
	bench_result config_load meshd - "$run" "$(kv "$TMP/out" config_load_10000_services_ms)" ms
	bench_result config_load cjson_parse - "$run" "$(kv "$TMP/out" cjson_parse_10000_services_ms)" ms
done
