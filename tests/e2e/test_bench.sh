#!/usr/bin/env bash
# The `make bench` pipeline without timing anything: bench/report.py on a made-up run (medians,
# per-run ratios, PASS / MISS with its figure and reason / NOT RUN with the skip reason, a failed
# scenario, results.csv, a PNG chart per scenario); loadgen's servers and its rr, held and
# stream modes moving real bytes; bench/run.sh end to end on the config scenario into its own
# output directory (the report goes there, docs/ untouched).
. "$(dirname "$0")/lib.sh"
need_built "$TOOLS/loadgen" "$BUILD_DIR/bench/bench_config"
LOADGEN=$TOOLS/loadgen

# --- report.py on a made-up run -------------------------------------------------------------
cat >"$TMP/raw.txt" <<'EOF'
@env date=2030-01-01 00:00 UTC
@env kernel=test-kernel
@meta scenario=s1 metric=lat title="made-up latency" unit=us better=lower subject="mesh" baselines="direct"
@result scenario=s1 metric=lat variant=direct x=- run=1 value=100 unit=us
@result scenario=s1 metric=lat variant=mesh x=- run=1 value=110 unit=us
@result scenario=s1 metric=lat variant=direct x=- run=2 value=200 unit=us
@result scenario=s1 metric=lat variant=mesh x=- run=2 value=240 unit=us
@result scenario=s1 metric=lat variant=direct x=- run=3 value=100 unit=us
@result scenario=s1 metric=lat variant=mesh x=- run=3 value=130 unit=us
@note scenario=s1 metric=lat text=made-up host was busy
@meta scenario=s1 metric=curve title="a curve" unit=ns xlabel=services
@result scenario=s1 metric=curve variant=mesh x=10 run=1 value=200 unit=ns
@result scenario=s1 metric=curve variant=mesh x=1000 run=1 value=250 unit=ns
@skip scenario=s1 metric=curve variant=mesh x=100000 reason=the datapath holds 16384 services
@meta scenario=s1 metric=added title="an added latency below zero" unit=us
@result scenario=s1 metric=added variant=- x=- run=1 value=-5.4 unit=us
@about scenario=s2 text=a scenario that failed
@error scenario=s2 text=backends did not start
EOF
cat >"$TMP/targets.csv" <<'EOF'
# comment
scenario,metric,x,variant,baseline,op,limit,source,note
s1,lat,-,mesh,direct,<=,1.25,test,
s1,lat,-,mesh,direct,<=,1.15,test,expected to miss
s1,curve,*,mesh,,<=,220,test,
s2,lat,-,mesh,,<=,1,test,
s3,lat,-,mesh,,<=,1,test,pending elsewhere
EOF
python3 "$ROOT/bench/report.py" --raw "$TMP/raw.txt" --targets "$TMP/targets.csv" \
	--csv "$TMP/results.csv" --doc "$TMP/doc.md" --charts "$TMP/charts" >"$TMP/report.out" 2>&1
check report_runs "report.py failed: $(tail -n 3 "$TMP/report.out")" test -s "$TMP/doc.md"
# Per-run ratios 1.10, 1.20, 1.30: median 1.20, where the ratio of the medians (130 / 100) would
# say 1.30: this tells the two apart.
doc_has() { grep -qF -- "$1" "$TMP/doc.md"; }
check ratio_is_median_of_per_run_ratios "$(grep '^| \*\*mesh' "$TMP/doc.md")" \
	doc_has "1.200 (1.100-1.300)"
check median_and_spread "$(grep '^| \*\*mesh' "$TMP/doc.md")" doc_has "| **mesh** | 130.0 | 110.0-240.0 | 3 |"
check pass_verdict "$(grep 'lat: mesh / direct | <= 1.25' "$TMP/doc.md")" \
	doc_has "| s1 | lat: mesh / direct | <= 1.25 | 1.200 (1.100-1.300) | **PASS** |"
check miss_keeps_figure_and_reason "$(grep '<= 1.15' "$TMP/doc.md")" \
	doc_has "| <= 1.15 | 1.200 (1.100-1.300) | **MISS** | test | expected to miss; made-up host was busy |"
check curve_points_judged_each "$(grep 'curve @' "$TMP/doc.md" | tr '\n' ' ')" \
	test "$(grep -c '| s1 | curve @ 10: mesh | <= 220 | 200.0 (200.0-200.0) | \*\*PASS\*\*' "$TMP/doc.md")$(grep -c 'curve @ 1000: mesh | <= 220 | 250.0 (250.0-250.0) | \*\*MISS\*\*' "$TMP/doc.md")" = 11
check skipped_point_says_why "$(grep 'curve @100000' "$TMP/doc.md")" \
	doc_has "| s1 | curve @ 100000: mesh | <= 220 | - | **NOT RUN** | test | the datapath holds 16384 services |"
check failed_scenario_says_why "$(grep '^| s2' "$TMP/doc.md")" \
	doc_has "| s2 | lat: mesh | <= 1 | - | **NOT RUN** | test | backends did not start |"
check failed_scenario_section "$(grep -A3 '^## s2' "$TMP/doc.md" | tr '\n' ' ')" \
	doc_has "**The scenario failed:** backends did not start"
check absent_scenario_listed "$(grep '^| s3' "$TMP/doc.md")" \
	doc_has "scenario \`s3\` did not run: pending elsewhere"
check env_in_header "$(sed -n '/| run |/,/^$/p' "$TMP/doc.md" | tr '\n' ' ')" doc_has "| kernel | test-kernel |"
check csv_value_row "$(grep '^s1,lat,mesh,,' "$TMP/results.csv")" \
	grep -q '^s1,lat,mesh,,-,us,3,130.0,110.0,240.0,$' "$TMP/results.csv"
check csv_ratio_row "$(grep '^s1,lat,mesh,direct' "$TMP/results.csv")" \
	grep -q '^s1,lat,mesh,direct,-,ratio,3,1.200,1.100,1.300,PASS <= 1.25 MISS <= 1.15$' "$TMP/results.csv"
check csv_skip_row "$(grep skipped "$TMP/results.csv")" \
	grep -q '^s1,curve,mesh,,100000,skipped,0,,,,the datapath holds 16384 services$' "$TMP/results.csv"
png() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '211PNG' ]; }
check chart_per_scenario "$(ls "$TMP/charts" 2>&1 | tr '\n' ' ')" png "$TMP/charts/s1.png"
# gnuplot draws nothing for a point outside the y range: bars of negative figures go below 0.
check chart_draws_negative_figure "$(grep -i 'undefined' "$TMP/report.out")" \
	eval '! grep -qi "undefined" "$TMP/report.out"'

# --- loadgen: real bytes through its servers -------------------------------------------------
spawn loadgen "$LOADGEN" serve 21800 2
wait_for 5 port_open 127.0.0.1 21801 || fail loadgen "servers did not start"
kv_of() { sed -n "s/^$2=//p" "$1"; }
"$LOADGEN" -n 300 --warmup 10 rr a=127.0.0.1:21800 b=127.0.0.1:21801 >"$TMP/rr" 2>&1
check loadgen_rr "$(tr '\n' ' ' <"$TMP/rr")" \
	test "$(kv_of "$TMP/rr" a.samples) $(kv_of "$TMP/rr" b.samples) $(kv_of "$TMP/rr" a.errors)" = "300 300 0"
"$LOADGEN" -n 1000 held a=127.0.0.1:21800 >"$TMP/held" 2>&1
check loadgen_held "$(tr '\n' ' ' <"$TMP/held")" \
	test "$(kv_of "$TMP/held" a.samples) $(kv_of "$TMP/held" a.errors)" = "1000 0"
"$LOADGEN" -n 2 --bytes 10000000 stream a=127.0.0.1:21801 >"$TMP/stream" 2>&1
check loadgen_stream "$(tr '\n' ' ' <"$TMP/stream")" \
	awk -v g="$(kv_of "$TMP/stream" a.gbit_s)" -v e="$(kv_of "$TMP/stream" a.errors)" 'BEGIN { exit !(g > 0 && e == 0) }'
"$LOADGEN" -n 5 rr a=127.0.0.1:21899 >"$TMP/refused" 2>&1
check loadgen_counts_errors "$(tr '\n' ' ' <"$TMP/refused")" \
	test "$(kv_of "$TMP/refused" a.errors) $(kv_of "$TMP/refused" a.samples)" = "5 0"
"$LOADGEN" -n 5 rr a=127.0.0.1:21800@cg >/dev/null 2>&1
check loadgen_cg_needs_cgroup "exit status $?" test $? -eq 2

# --- run.sh end to end, on the quickest scenario --------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
	BENCH_OUT=$TMP/out BENCH_ONLY='^config$' REPEATS=2 MESH_BUILD=$MESH_BUILD \
		bash "$ROOT/bench/run.sh" >"$TMP/run.out" 2>&1
	check run_sh "$(tail -n 3 "$TMP/run.out" | tr '\n' ' ')" \
		grep -q '^config,config_load,meshd,cjson_parse,-,ratio,2,' "$TMP/out/results.csv"
	check run_sh_report_in_out_dir "$(ls "$TMP/out" | tr '\n' ' ')" \
		test -s "$TMP/out/benchmarks.md" -a -s "$TMP/out/benchmarks/config.png"
else
	skip run_sh "needs root (private network namespace)"
fi
exit 0
