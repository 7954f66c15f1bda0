#!/usr/bin/env bash
# The mTLS path against its baselines, side by side in one run, on two hosts (network
# namespaces joined by a veth): the plain VIP path (datapath only), the mTLS path (meshd on each
# host), an haproxy TLS pair and a stunnel4 pair, all with the same ECDSA P-256 certificates,
# TLS 1.3, TLS_AES_128_GCM_SHA256 and X25519. The same client and echo server (mtlsbench) for
# every contender. Figures (issue 9's targets):
#   added latency on a held connection, 1 KB request/response, mTLS vs plain VIP:
#     p50 <= +40 us, p99 <= +150 us
#   new connections (connect + 1 B request/response + close), warm pool: p50 <= 0.1 x
#     haproxy pair and stunnel pair
#   single-connection throughput >= 1.0 x haproxy pair and stunnel pair
#   new tunnel handshakes per second >= 0.9 x haproxy
#   memory per proxied connection on each side: active <= 48 KB, idle <= 16 KB
# The latency figures are measured twice: with the defaults (mtls.busy_poll off, haproxy without
# busy-polling), then with mtls.busy_poll = $BUSY_POLL on both meshds against an haproxy pair
# with `busy-polling` (started only for its own measurement, since it spins all the time); the
# *_busy keys and their verdicts say which is which. The new-connection ratio with busy polling
# is against the faster of haproxy's two figures (its busy-polling never yields the CPU and on 2
# vCPUs made its new connections ten times slower), and the one against the busy pair is printed.
# Prints key=value lines. Root only (namespaces, cgroups, BPF).
SUITE=bench_mtls
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/mtls_lib.sh"
. "$(dirname "$0")/lib.sh"
if [ "$(id -u)" -ne 0 ]; then
	echo "bench_mtls=skipped reason=needs_root"
	exit 0
fi
B=$TOOLS/mtlsbench
if [ "${QUICK:-0}" = 1 ]; then # make bench QUICK=1: fewer samples, shorter streams
	RR=${RR:-5000} CRR=${CRR:-500} CRR_TLS=${CRR_TLS:-200} SECS=${SECS:-2}
fi
RR=${RR:-20000} CRR=${CRR:-2000} CRR_TLS=${CRR_TLS:-400} SECS=${SECS:-5} CONNS=${CONNS:-1000}
BUSY_POLL=${BUSY_POLL:-300us}
need_built "$B" "$MESHD" "$MESHCTL"
for t in haproxy stunnel4; do
	command -v "$t" >/dev/null || { echo "bench_mtls=skipped reason=no_$t"; exit 0; }
done

two_hosts root api
cat "$TMP/a/certs/web.crt" "$TMP/a/certs/web.key" >"$TMP/a/web.pem"
cat "$TMP/b/certs/api.crt" "$TMP/b/certs/api.key" >"$TMP/b/api.pem"

spawn server nsenter --net="/run/netns/$HB" "$B" server "$IP_B:9000"
wait_for 5 grep -q listening "$TMP/server.log"

# --- meshd on both hosts ---------------------------------------------------------------------------
host_config "$TMP/a.json" a "
	.log.level = \"info\" |
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 9000 }] },
		{ name: \"plain\", vip: \"127.77.9.20\", port: 80, mtls: false,
		backends: [{ address: \"$IP_B\", port: 9000 }] }] |
	.mtls.workers = 0 |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
host_config "$TMP/b.json" b "
	.log.level = \"info\" | .mtls.workers = 0 |
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [9000] }] |
	.authorization.rules = [{ source: \"web\", destination: \"api\", action: \"allow\" }]"
start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || { echo "bench_mtls=failed reason=meshd: $(tail -n 3 "$TMP/a.log" "$TMP/b.log" | tr "\n" " ")"; exit 1; }

# --- haproxy pair ---------------------------------------------------------------------------------
haproxy_cfgs "" 7001 7443
haproxy_cfgs _busy 7011 7453 "busy-polling
	nbthread 1"
spawn haproxy_b nsenter --net="/run/netns/$HB" haproxy -db -f "$TMP/hb.cfg"
spawn haproxy_a nsenter --net="/run/netns/$HA" haproxy -db -f "$TMP/ha.cfg"

# --- stunnel pair ---------------------------------------------------------------------------------
stunnel_cfgs 7002 7444
spawn stunnel_b nsenter --net="/run/netns/$HB" stunnel4 "$TMP/sb.conf"
spawn stunnel_a nsenter --net="/run/netns/$HA" stunnel4 "$TMP/sa.conf"
up() { in_host "$HA" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for 10 up 7001 && wait_for 10 up 7002 || { echo "bench_mtls=failed reason=haproxy_or_stunnel: $(cat "$TMP"/haproxy_*.log | tail -n 12 | tr "\n" " ")"; exit 1; }

# --- measurements ----------------------------------------------------------------------------------
MTLS=$VIP:80 PLAIN=127.77.9.20:80 HAP=127.0.0.1:7001 STN=127.0.0.1:7002
bench() { in_host_cg "$HA" "$CG_a/web" "$B" "$@"; }
val() { sed -n "s/.*$1=\\([0-9.]*\\).*/\\1/p" <<<"$2" | head -n1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN { ok = op == "<=" ? x <= t : x >= t;
	print ok ? "met" : "missed" }'; }

bench rr "$MTLS" 1024 2000 >/dev/null # warm the pool
for c in plain mtls haproxy stunnel; do
	ep=$(eval echo "\$$(echo $c | tr a-z A-Z | sed 's/HAPROXY/HAP/; s/STUNNEL/STN/')")
	out=$(bench rr "$ep" 1024 "$RR")
	eval "rr50_$c=$(val rr_p50_us "$out") rr99_$c=$(val rr_p99_us "$out")"
	echo "rr_1k_${c}_p50_us=$(val rr_p50_us "$out") rr_1k_${c}_p99_us=$(val rr_p99_us "$out") failed=$(val rr_failed "$out")"
done
add50=$(awk -v a="$rr50_mtls" -v b="$rr50_plain" 'BEGIN { printf "%.1f", a - b }')
add99=$(awk -v a="$rr99_mtls" -v b="$rr99_plain" 'BEGIN { printf "%.1f", a - b }')
echo "added_latency_p50_us=$add50 target=40 $(verdict "$add50" '<=' 40)"
echo "added_latency_p99_us=$add99 target=150 $(verdict "$add99" '<=' 150)"

# plain is the reference: what the mTLS path adds to a new connection. dial (connect returned) and
# exchange (1 B there and back) split the p50 where the time goes.
for c in plain mtls haproxy stunnel; do
	ep=$(eval echo "\$$(echo $c | tr a-z A-Z | sed 's/HAPROXY/HAP/; s/STUNNEL/STN/')")
	n=$CRR
	[ "$c" = mtls ] || [ "$c" = plain ] || n=$CRR_TLS
	out=$(bench crr "$ep" "$n")
	eval "crr50_$c=$(val crr_p50_us "$out")"
	echo "crr_${c}_p50_us=$(val crr_p50_us "$out") crr_${c}_p99_us=$(val crr_p99_us "$out") failed=$(val crr_failed "$out") crr_${c}_dial_p50_us=$(val crr_dial_p50_us "$out") crr_${c}_exchange_p50_us=$(val crr_exchange_p50_us "$out")"
done
r=$(ratio "$crr50_mtls" "$crr50_haproxy")
echo "new_conn_p50_vs_haproxy=$r target=0.1 $(verdict "$r" '<=' 0.1)"
r=$(ratio "$crr50_mtls" "$crr50_stunnel")
echo "new_conn_p50_vs_stunnel=$r target=0.1 $(verdict "$r" '<=' 0.1)"

# --- the same latency figures with busy polling on both sides -------------------------------------
busy_poll() { # busy_poll HOST VALUE: sets mtls.busy_poll and reloads
	jq ".mtls.busy_poll = \"$2\"" "$TMP/$1.json" >"$TMP/$1.json.new" && mv "$TMP/$1.json.new" "$TMP/$1.json"
	ctl "$1" reload >/dev/null
}
busy_poll a "$BUSY_POLL" && busy_poll b "$BUSY_POLL" || { echo "bench_mtls=failed reason=busy_poll_reload"; exit 1; }
echo "mtls_busy_poll=$BUSY_POLL haproxy_busy_polling=on"
# busy_figures NAME ENDPOINT CRR_COUNT: the rr and crr figures of one contender, busy polling.
busy_figures() {
	local out
	out=$(bench rr "$2" 1024 "$RR")
	eval "rr50b_$1=$(val rr_p50_us "$out") rr99b_$1=$(val rr_p99_us "$out")"
	echo "rr_1k_$1_busy_p50_us=$(val rr_p50_us "$out") rr_1k_$1_busy_p99_us=$(val rr_p99_us "$out") failed=$(val rr_failed "$out")"
	out=$(bench crr "$2" "$3")
	eval "crr50b_$1=$(val crr_p50_us "$out")"
	echo "crr_$1_busy_p50_us=$(val crr_p50_us "$out") crr_$1_busy_p99_us=$(val crr_p99_us "$out") failed=$(val crr_failed "$out") crr_$1_busy_dial_p50_us=$(val crr_dial_p50_us "$out") crr_$1_busy_exchange_p50_us=$(val crr_exchange_p50_us "$out")"
}
busy_figures mtls "$MTLS" "$CRR"
# haproxy's busy-polling spins without ever yielding: one thread per instance, and only while
# its own figures are taken (it would starve everything else on 2 vCPUs).
spawn haproxy_busy_b nsenter --net="/run/netns/$HB" haproxy -db -f "$TMP/hb_busy.cfg"
HB_BUSY=$SPAWNED_PID
spawn haproxy_busy_a nsenter --net="/run/netns/$HA" haproxy -db -f "$TMP/ha_busy.cfg"
HA_BUSY=$SPAWNED_PID
wait_for 10 up 7011 || { echo "bench_mtls=failed reason=haproxy_busy: $(tail -n 5 "$TMP"/haproxy_busy_*.log | tr "\n" " ")"; exit 1; }
busy_figures haproxy 127.0.0.1:7011 "$CRR_TLS"
kill_wait "$HA_BUSY" && kill_wait "$HB_BUSY"
add50=$(awk -v a="$rr50b_mtls" -v b="$rr50_plain" 'BEGIN { printf "%.1f", a - b }')
add99=$(awk -v a="$rr99b_mtls" -v b="$rr99_plain" 'BEGIN { printf "%.1f", a - b }')
echo "added_latency_busy_p50_us=$add50 target=40 $(verdict "$add50" '<=' 40)"
echo "added_latency_busy_p99_us=$add99 target=150 $(verdict "$add99" '<=' 150)"
# haproxy's better new-connection figure of the two: its never-yielding busy-polling can be far
# slower on a small shared box (the client and the backend wait for the spinning threads).
best=$(awk -v a="$crr50_haproxy" -v b="$crr50b_haproxy" 'BEGIN { print (b > 0 && b < a) ? b : a }')
echo "new_conn_busy_p50_vs_haproxy_busy=$(ratio "$crr50b_mtls" "$crr50b_haproxy")"
r=$(ratio "$crr50b_mtls" "$best")
echo "new_conn_busy_p50_vs_haproxy_best=$r target=0.1 $(verdict "$r" '<=' 0.1)"
busy_poll a 0 && busy_poll b 0 || { echo "bench_mtls=failed reason=busy_poll_reload"; exit 1; }

for c in mtls haproxy stunnel; do
	ep=$(eval echo "\$$(echo $c | tr a-z A-Z | sed 's/HAPROXY/HAP/; s/STUNNEL/STN/')")
	out=$(bench stream "$ep" "$SECS")
	eval "tp_$c=$(val stream_MBps "$out")"
	echo "throughput_${c}_MBps=$(val stream_MBps "$out")"
done
r=$(ratio "$tp_mtls" "$tp_haproxy")
echo "throughput_vs_haproxy=$r target=1.0 $(verdict "$r" '>=' 1.0)"
r=$(ratio "$tp_mtls" "$tp_stunnel")
echo "throughput_vs_stunnel=$r target=1.0 $(verdict "$r" '>=' 1.0)"

hs() { in_host "$HA" "$B" hs "$1" "$SECS" 2 "$C/root.crt" "$TMP/a/certs/web.crt" "$TMP/a/certs/web.key" api; }
out=$(hs "$IP_B:15008")
hs_mtls=$(val handshakes_per_s "$out")
out2=$(hs "$IP_B:7443")
hs_hap=$(val handshakes_per_s "$out2")
r=$(ratio "$hs_mtls" "$hs_hap")
echo "handshakes_per_s_mtls=$hs_mtls handshakes_per_s_haproxy=$hs_hap failed=$(val handshakes_failed "$out")/$(val handshakes_failed "$out2")"
echo "handshakes_vs_haproxy=$r target=0.9 $(verdict "$r" '>=' 0.9)"

# --- memory per proxied connection -------------------------------------------------------------------
rss() { awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$1/status"; }
pa=$(pid_of_latest a) pb=$(pid_of_latest b)
malloc_settle() { sleep 1; }
malloc_settle
a0=$(rss "$pa") b0=$(rss "$pb")
: >"$TMP/hold.out"
bench hold "$MTLS" "$CONNS" "$TMP/hold.stop" >"$TMP/hold.out" &
HOLD=$!
defer "touch '$TMP/hold.stop'; kill -9 $HOLD 2>/dev/null"
wait_for 60 grep -q held "$TMP/hold.out"
malloc_settle
a1=$(rss "$pa") b1=$(rss "$pb")
touch "$TMP/hold.stop"
wait "$HOLD"
per() { awk -v x="$1" -v y="$2" -v n="$CONNS" 'BEGIN { printf "%.0f", (x - y) / n }'; }
# Active is measured against the same fresh baseline (freed memory stays in the heap, so a new
# baseline would hide what the idle connections left): an upper bound.
echo "idle_bytes_per_conn_a=$(per "$a1" "$a0") idle_bytes_per_conn_b=$(per "$b1" "$b0") target=16384 $(verdict "$(per "$a1" "$a0")" '<=' 16384)/$(verdict "$(per "$b1" "$b0")" '<=' 16384) $(cat "$TMP/hold.out")"
malloc_settle
bench busy "$MTLS" "$CONNS" "$SECS" >"$TMP/busy.out" &
BUSY=$!
amax=0 bmax=0
while kill -0 "$BUSY" 2>/dev/null; do
	a=$(rss "$pa") b=$(rss "$pb")
	[ "$a" -gt "$amax" ] && amax=$a
	[ "$b" -gt "$bmax" ] && bmax=$b
	sleep 0.2
done
echo "active_bytes_per_conn_a=$(per "$amax" "$a0") active_bytes_per_conn_b=$(per "$bmax" "$b0") target=49152 $(verdict "$(per "$amax" "$a0")" '<=' 49152)/$(verdict "$(per "$bmax" "$b0")" '<=' 49152) $(cat "$TMP/busy.out")"
echo "note=shared 2-vCPU machine; figures are indicative, rerun on a quiet host"
exit 0
