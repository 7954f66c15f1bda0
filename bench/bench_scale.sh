#!/usr/bin/env bash
# The scale curve: connect + 1 B request/response + close to one service while the host holds N
# services (SCALE_SIZES, default 10 1,000 10,000 100,000; QUICK=1 stops at 10,000), through the mesh (N services of 10
# backends in the BPF maps) and through kube-proxy style iptables rules (N services in
# KUBE-SERVICES, matched in order for every new connection), with direct connects interleaved
# as the reference. The measured iptables service sits in the middle of KUBE-SERVICES (kube-proxy
# writes services in no particular order, so a connection walks half the chain on average) and
# has 10 endpoints picked by `statistic` rules; the others have one endpoint each (their chains
# are never walked by the measured connects). Connects to 127.0.0.1 (direct, and the mesh's,
# rewritten in connect4 before the packet exists) skip KUBE-SERVICES by a first rule: each
# contender pays for its own mechanism only. Sizes the mesh cannot hold are skipped with why.
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
[ "${BENCH_NETNS:-}" = 1 ] || bench_fail "run through bench/run.sh (iptables rules go in its private network namespace)"
need_built "$DPBENCH" "$LOADGEN" "$TOOLS/dptool"
DPTOOL=$TOOLS/dptool
read -r -a SIZES <<<"${SCALE_SIZES:-10 1000 10000 100000}"
RR_N=$(bench_quick 1000 5000)

bench_about "Connect + 1 B request/response + close to one service while the host holds N" \
	"services: the mesh (services of 10 backends in the BPF maps) against kube-proxy style" \
	"iptables rules (N services in KUBE-SERVICES, the measured one in the middle, 10 endpoints" \
	"behind \`statistic\` rules), with direct connects interleaved as the reference. Connection" \
	"tracking is on for every contender (the nat table is loaded), as on a kube-proxy host;" \
	"connects to the backends' own address (direct, and the mesh's after connect4 rewrote" \
	"them) skip KUBE-SERVICES by a first rule, so each pays for its own mechanism only."
bench_meta metric=scale_connect_close_p50 title="connect + 1 B req/resp + close at N services, median" \
	unit=us better=lower subject=mesh baselines=iptables,direct xlabel=services
bench_meta metric=iptables_restore_s title="iptables-restore of the N services" unit=s \
	better=lower xlabel=services
bench_sizes mesh,iptables,direct scale_connect_close_p50 "${SIZES[@]}"
SIZES=("${BENCH_SIZES[@]}")

CG=$(make_cgroup bench-scale)
defer "'$DPTOOL' --pin '$PIN' cleanup"
"$DPTOOL" --pin "$PIN" --cgroup "$CG" --max-services "${SIZES[-1]}" \
	--max-backends $((${SIZES[-1]} * 11)) open >/dev/null || bench_fail "datapath did not load"
spawn backends "$LOADGEN" serve 18900 10
wait_for 5 port_open 127.0.0.1 18909 || bench_fail "backends did not start"
defer "iptables -t nat -F; iptables -t nat -X"

# kube_proxy_rules N: the nat table for N services; prints the measured service's address.
kube_proxy_rules() {
	awk -v n="$1" 'function vip(i) {
			return sprintf("127.%d.%d.%d", 80 + int(i / 62500), int(i / 250) % 250, i % 250 + 1) }
		BEGIN {
		mid = int(n / 2)
		print "*nat"; print ":KUBE-SERVICES - [0:0]"
		for (i = 0; i < n; i++) print ":KUBE-SVC-" i " - [0:0]"
		for (i = 0; i < n; i++) if (i != mid) print ":KUBE-SEP-" i " - [0:0]"
		for (e = 0; e < 10; e++) print ":KUBE-SEP-" mid "-" e " - [0:0]"
		print "-A OUTPUT -d 127.0.0.1/32 -m comment --comment \"bench: direct and mesh skip the chain\" -j RETURN"
		print "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
		for (i = 0; i < n; i++)
			printf "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"bench/svc-%d cluster IP\" -m tcp --dport 80 -j KUBE-SVC-%d\n", vip(i), i, i
		for (i = 0; i < n; i++) {
			if (i == mid) continue
			printf "-A KUBE-SVC-%d -j KUBE-SEP-%d\n", i, i
			printf "-A KUBE-SEP-%d -p tcp -m tcp -j DNAT --to-destination 127.0.0.1:%d\n", i, 18900 + i % 10
		}
		for (e = 0; e < 10; e++) {
			if (e < 9) printf "-A KUBE-SVC-%d -m statistic --mode random --probability %.11f -j KUBE-SEP-%d-%d\n", mid, 1 / (10 - e), mid, e
			else printf "-A KUBE-SVC-%d -j KUBE-SEP-%d-%d\n", mid, mid, e
			printf "-A KUBE-SEP-%d-%d -p tcp -m tcp -j DNAT --to-destination 127.0.0.1:%d\n", mid, e, 18900 + e
		}
		print "COMMIT"
		print vip(mid) > "/dev/stderr"
	}'
}

size=0
for n in "${SIZES[@]}"; do
	kube_proxy_rules "$n" >"$TMP/rules" 2>"$TMP/vip"
	t0=$(date +%s%N)
	iptables-restore <"$TMP/rules" || bench_fail "iptables-restore of $n services"
	ipt_s=$(awk -v t="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.2f", t / 1e9 }')
	targets=(direct=127.0.0.1:18900 "iptables=$(cat "$TMP/vip"):80")
	"$DPBENCH" populate "$PIN" "$n" 18900 "$size" >"$TMP/pop" 2>&1
	if [ -n "$(kv "$TMP/pop" held)" ]; then
		bench_skip scale_connect_close_p50 mesh "$n" "the datapath holds $(kv "$TMP/pop" held)" \
			"services (populate failed: $(kv "$TMP/pop" error))"
		size=$(kv "$TMP/pop" held)
	else
		targets+=(mesh=127.77.2.100:18000@cg)
		size=$n
	fi
	for ((run = 1; run <= REPEATS; run++)); do
		((run == 1)) && bench_result iptables_restore_s iptables "$n" 1 "$ipt_s" s
		"$LOADGEN" --cgroup "$CG" -n "$RR_N" rr "${targets[@]}" >"$TMP/rr" ||
			bench_fail "loadgen failed at $n services"
		for t in "${targets[@]}"; do
			v=${t%%=*}
			val=$(kv "$TMP/rr" "$v.p50_us")
			[ -n "$val" ] && bench_result scale_connect_close_p50 "$v" "$n" "$run" "$val" us
		done
	done
	iptables -t nat -F
	iptables -t nat -X
done
