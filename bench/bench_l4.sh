#!/usr/bin/env bash
# Side by side on one host, in one run (root, inside bench/run.sh's private network namespace):
# the same two backends (loadgen servers on 127.0.0.1) reached directly, through the mesh's VIP,
# through a kube-proxy style iptables DNAT service (statistic rules) and through haproxy in TCP
# mode, for connect + 1 B request/response + close, 1-byte round trips on held connections and
# single-stream throughput. loadgen interleaves the contenders sample by sample; the mesh's
# connects come from a child process inside the mesh cgroup, the baselines' from one outside
# it (no BPF on their path), plus `direct_cg`: direct from inside the cgroup, the baseline
# issue 3's targets were set against (it pays connect4's lookup for a non-service address).
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/lib.sh"
bench_need_root
[ "${BENCH_NETNS:-}" = 1 ] || bench_fail "run through bench/run.sh (iptables rules go in its private network namespace)"
need_built "$LOADGEN" "$TOOLS/dptool"
DPTOOL=$TOOLS/dptool

bench_about "The mesh against the usual ways of reaching a service on one host: directly" \
	"(\`direct\`, no BPF; \`direct_cg\`, from inside the mesh's cgroup, a non-service connect)," \
	"the mesh VIP (2 backends, least_request), iptables DNAT as kube-proxy writes it" \
	"(KUBE-SERVICES -> KUBE-SVC with \`statistic --mode random\` -> KUBE-SEP DNAT, 2 endpoints)" \
	"and haproxy $(haproxy -v 2>/dev/null | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p')" \
	"in TCP mode (2 servers, roundrobin). Same backends, one client, samples interleaved."

CG=$(make_cgroup bench-l4)
defer "'$DPTOOL' --pin '$PIN' cleanup"
"$DPTOOL" --pin "$PIN" --cgroup "$CG" open >/dev/null || bench_fail "datapath did not load"
spawn backends "$LOADGEN" serve 18900 2
wait_for 5 port_open 127.0.0.1 18901 || bench_fail "backends did not start"
"$DPTOOL" --pin "$PIN" set --name l4 --vip 127.77.2.99:18000 --alg least_request \
	--backend 127.0.0.1:18900 --backend 127.0.0.1:18901 >/dev/null || bench_fail "service set"

# kube-proxy's nat rules for one service of two endpoints (its shape since 1.2x, iptables mode).
iptables-restore <<'EOF' || bench_fail "iptables-restore"
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-L4 - [0:0]
:KUBE-SEP-L4A - [0:0]
:KUBE-SEP-L4B - [0:0]
-A OUTPUT -d 127.0.0.1/32 -m comment --comment "bench: direct and mesh skip the chain" -j RETURN
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 127.78.0.1/32 -p tcp -m comment --comment "bench/l4 cluster IP" -m tcp --dport 80 -j KUBE-SVC-L4
-A KUBE-SVC-L4 -m comment --comment "bench/l4 -> 127.0.0.1:18900" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-L4A
-A KUBE-SVC-L4 -m comment --comment "bench/l4 -> 127.0.0.1:18901" -j KUBE-SEP-L4B
-A KUBE-SEP-L4A -p tcp -m tcp -j DNAT --to-destination 127.0.0.1:18900
-A KUBE-SEP-L4B -p tcp -m tcp -j DNAT --to-destination 127.0.0.1:18901
COMMIT
EOF
defer "iptables -t nat -F; iptables -t nat -X"

cat >"$TMP/haproxy.cfg" <<'EOF'
global
	maxconn 4000
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend l4
	bind 127.0.0.1:18100
	default_backend l4
backend l4
	balance roundrobin
	server a 127.0.0.1:18900
	server b 127.0.0.1:18901
EOF
spawn haproxy haproxy -db -f "$TMP/haproxy.cfg"
wait_for 5 port_open 127.0.0.1 18100 || bench_fail "haproxy did not start"

TARGETS=(direct=127.0.0.1:18900 direct_cg=127.0.0.1:18900@cg mesh=127.77.2.99:18000@cg
	iptables=127.78.0.1:80 haproxy=127.0.0.1:18100)
VARIANTS=(direct direct_cg mesh iptables haproxy)
BASES=baselines=direct,direct_cg,iptables,haproxy
RR_N=$(bench_quick 2000 10000)
HELD_N=$(bench_quick 5000 20000)
STREAM_BYTES=$(bench_quick $((256 << 20)) $((1024 << 20)))
bench_meta metric=connect_close_p50 title="connect + 1 B request/response + close, median" \
	unit=us better=lower subject=mesh $BASES
bench_meta metric=connect_close_p99 title="connect + 1 B request/response + close, p99" \
	unit=us better=lower subject=mesh $BASES
bench_meta metric=held_rr_p50 title="1 B round trip on a held connection, median" \
	unit=us better=lower subject=mesh $BASES
bench_meta metric=held_rr_p99 title="1 B round trip on a held connection, p99" \
	unit=us better=lower subject=mesh $BASES
bench_meta metric=stream title="single-stream throughput ($((STREAM_BYTES >> 20)) MiB), median of 3" \
	unit=Gbit/s better=higher subject=mesh $BASES
bench_note held_rr_p50 "after connect() the mesh is not on the data path (no per-packet program)," \
	"so mesh, direct and iptables should match; haproxy copies every byte in userspace"

# emit RUN FILE METRIC KEY: one result per variant from loadgen's output.
emit() {
	local v val
	for v in "${VARIANTS[@]}"; do
		val=$(kv "$2" "$v.$4")
		[ -n "$val" ] && bench_result "$3" "$v" - "$1" "$val" "$5"
	done
}
for ((run = 1; run <= REPEATS; run++)); do
	"$LOADGEN" --cgroup "$CG" -n "$RR_N" rr "${TARGETS[@]}" >"$TMP/rr" ||
		bench_fail "loadgen rr failed"
	emit "$run" "$TMP/rr" connect_close_p50 p50_us us
	emit "$run" "$TMP/rr" connect_close_p99 p99_us us
	"$LOADGEN" --cgroup "$CG" -n "$HELD_N" held "${TARGETS[@]}" >"$TMP/held" ||
		bench_fail "loadgen held failed"
	emit "$run" "$TMP/held" held_rr_p50 p50_us us
	emit "$run" "$TMP/held" held_rr_p99 p99_us us
	"$LOADGEN" --cgroup "$CG" -n 3 --bytes "$STREAM_BYTES" stream "${TARGETS[@]}" >"$TMP/stream" ||
		bench_fail "loadgen stream failed"
	emit "$run" "$TMP/stream" stream gbit_s Gbit/s
	for f in rr held stream; do
		grep '\.errors=[1-9]' "$TMP/$f" | sed 's/^/errors in '"$f"': /' >&2
	done
done
