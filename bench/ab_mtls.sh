#!/usr/bin/env bash
# A/B of the mTLS path's new-connection and held-connection latency between meshd builds (or
# settings of one build), side by side in one session: the two hosts, the backend and an haproxy
# TLS pair are set up once; each round restarts the meshd pair from each variant in turn (with
# `meshd --cleanup` between, so no listener or datapath outlives its variant) and runs `mtlsbench
# crr` and `rr` through it, then the haproxy pair's crr, so load from other tenants falls on all
# alike. Not a scenario of `make bench` (it needs a second build); for example main's build
# against a branch's:
#   git archive main | tar -x -C /tmp/base && make -C /tmp/base all unit-bins
#   bench/ab_mtls.sh 5 base:/tmp/base/build:0 new:build:0 new_busy:build:300us
# A variant is LABEL:BUILD_DIR:BUSY_POLL[:VAR=VALUE,...] (the variables go to both meshds' env).
# Prints one line per round and variant, then per variant the median and range of the rounds'
# figures: the crr and rr p50s, crr's ratio to the same round's haproxy crr, and each meshd's CPU
# time (user + system, all threads, from /proc) per new connection during the crr run.
# RR_SIZE=N sets rr's message size (1024 bytes by default). SECS=N (N > 0) also streams one
# connection for N seconds through each variant and, once a round, through the haproxy pair and
# a stunnel4 pair (issue 9's throughput figure): MB/s and the ratios to the same round's pairs,
# and the CPU time per MB of the proxies, client and server together (cpu_all: what the stream
# costs the machine). CRR=0 skips the new-connection figures. Root.
SUITE=ab_mtls
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/mtls_lib.sh"
. "$(dirname "$0")/lib.sh"
if [ $# -lt 2 ] || [ "$(id -u)" -ne 0 ]; then
	echo "usage (root): $0 ROUNDS LABEL:BUILD_DIR:BUSY_POLL[:VAR=VALUE,...]..." >&2
	exit 2
fi
ROUNDS=$1
shift
CRR=${CRR:-1000} RR=${RR:-5000} RR_SIZE=${RR_SIZE:-1024} CRR_TLS=${CRR_TLS:-200} SECS=${SECS:-0}
B=$TOOLS/mtlsbench
need_built "$B"
two_hosts root api
cat "$TMP/a/certs/web.crt" "$TMP/a/certs/web.key" >"$TMP/a/web.pem"
cat "$TMP/b/certs/api.crt" "$TMP/b/certs/api.key" >"$TMP/b/api.pem"
spawn server nsenter --net="/run/netns/$HB" "$B" server "$IP_B:9000"
SERVER=$SPAWNED_PID
wait_for 5 grep -q listening "$TMP/server.log"
haproxy_cfgs "" 7001 7443
spawn haproxy_b nsenter --net="/run/netns/$HB" haproxy -db -f "$TMP/hb.cfg"
PROXIES_HAP=$SPAWNED_PID
spawn haproxy_a nsenter --net="/run/netns/$HA" haproxy -db -f "$TMP/ha.cfg"
PROXIES_HAP+=" $SPAWNED_PID"
up() { in_host "$HA" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for 10 up 7001 || { echo "ab_mtls: haproxy did not start" >&2; exit 1; }
PROXIES_STN=
if [ "$SECS" != 0 ]; then
	stunnel_cfgs 7002 7444
	spawn stunnel_b nsenter --net="/run/netns/$HB" stunnel4 "$TMP/sb.conf"
	PROXIES_STN=$SPAWNED_PID
	spawn stunnel_a nsenter --net="/run/netns/$HA" stunnel4 "$TMP/sa.conf"
	PROXIES_STN+=" $SPAWNED_PID"
	wait_for 10 up 7002 || { echo "ab_mtls: stunnel did not start" >&2; exit 1; }
fi

# CLIENT_CPU=N runs the client on CPU N only (taskset), else where the scheduler puts it.
bench() { in_host_cg "$HA" "$CG_a/web" ${CLIENT_CPU:+taskset -c "$CLIENT_CPU"} "$B" "$@"; }
val() { sed -n "s/.*$1=\\([0-9.]*\\).*/\\1/p" <<<"$2" | head -n1; }
# configs BUSY: $TMP/a.json and $TMP/b.json with mtls.busy_poll = BUSY.
configs() {
	host_config "$TMP/a.json" a "
		.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
			backends: [{ address: \"$IP_B\", port: 9000 }] }] | .mtls.workers = 0 |
		.mtls.busy_poll = \"$1\" |
		.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
	host_config "$TMP/b.json" b "
		.mtls.workers = 0 | .mtls.busy_poll = \"$1\" |
		.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [9000] }] |
		.authorization.rules = [{ source: \"web\", destination: \"api\", action: \"allow\" }]"
}
# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (all threads).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# per TICKS N: CPU time in µs per unit (N units), 0 without units.
per() { awk -v t="$1" -v u="$TICK_US" -v n="$2" 'BEGIN { printf "%.0f", (n > 0 ? t * u / n : 0) }'; }
# ticks PID...: the processes' CPU ticks so far, summed.
ticks() { local p n=0; for p; do n=$((n + $(cpu_ticks "$p"))); done; echo $n; }
# waited_ticks: CPU ticks of this shell's waited-for children (the client runs).
waited_ticks() { awk '{ print $16 + $17 }' "/proc/$BASHPID/stat"; }
# stream EP PID...: one connection's MB/s for SECS seconds, the bytes, and the CPU time per MB
# of the client, the server and PIDs (the proxies) together ("0 0 0" when SECS is 0).
stream() {
	local ep=$1 out t0 t1 mb
	shift
	[ "$SECS" != 0 ] || { echo "0 0 0"; return; }
	t0=$(($(ticks "$SERVER" "$@") + $(waited_ticks)))
	out=$(bench stream "$ep" "$SECS")
	t1=$(($(ticks "$SERVER" "$@") + $(waited_ticks)))
	mb=$(awk -v b="$(val stream_bytes "$out")" 'BEGIN { print b / 1e6 }')
	echo "$(val stream_MBps "$out") $(val stream_bytes "$out") $(per $((t1 - t0)) "$mb")"
}
# run_variant SPEC: one round of one variant; prints "crr_p50 rr_p50 cpu_a_us cpu_b_us MBps
# cpu_a_mb cpu_b_mb cpu_all_mb": the meshds' CPU time per new connection during the crr run and
# per MB during the stream, and that of the meshds, client and server together per MB.

run_variant() {
	local label dir busy envs h out1 out2 a0 a1 b0 b1 a2 a3 b2 b3 tput bytes total mb c
	IFS=: read -r label dir busy envs <<<"$1"
	MESHD=$(cd "$dir" && pwd)/meshd
	configs "$busy"
	# shellcheck disable=SC2086
	for h in a b; do
		start_host $h "$TMP/$h.json" ${envs//,/ } || { echo "ab_mtls: meshd $h ($label) did not start" >&2; exit 1; }
	done
	bench rr "$VIP:80" 1024 500 >/dev/null # warm the pool
	a0=$(cpu_ticks "$PID_a") b0=$(cpu_ticks "$PID_b")
	out1=
	[ "$CRR" = 0 ] || out1=$(bench crr "$VIP:80" "$CRR")
	a1=$(cpu_ticks "$PID_a") b1=$(cpu_ticks "$PID_b")
	out2=$(bench rr "$VIP:80" "$RR_SIZE" "$RR")
	a2=$(cpu_ticks "$PID_a") b2=$(cpu_ticks "$PID_b")
	read -r tput bytes total <<<"$(stream "$VIP:80" "$PID_a" "$PID_b")"
	a3=$(cpu_ticks "$PID_a") b3=$(cpu_ticks "$PID_b")
	mb=$(awk -v b="$bytes" 'BEGIN { print b / 1e6 }')
	for h in a b; do
		kill_wait "$(eval echo "\$PID_$h")"
		in_host "$(eval echo "\$H$(echo $h | tr a-z A-Z)")" "$MESHD" --cleanup --config "$TMP/$h.json" >/dev/null 2>&1
	done
	c=$(val crr_p50_us "$out1")
	echo "${c:-0} $(val rr_p50_us "$out2") $(per $((a1 - a0)) "$CRR") $(per $((b1 - b0)) "$CRR") $tput $(per $((a3 - a2)) "$mb") $(per $((b3 - b2)) "$mb") $total"
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
declare -A CRRS RATIOS RRS CPUA CPUB TPS TPH TPS_ST CMA CMB CALL
HAPS="" STNS="" ALL_HAPS="" ALL_STNS=""
for ((r = 1; r <= ROUNDS; r++)); do
	hap=0
	[ "$CRR" = 0 ] || hap=$(val crr_p50_us "$(bench crr 127.0.0.1:7001 "$CRR_TLS")")
	read -r tp_hap _ all_hap <<<"$(stream 127.0.0.1:7001 $PROXIES_HAP)"
	read -r tp_stn _ all_stn <<<"$(stream 127.0.0.1:7002 $PROXIES_STN)"
	HAPS+="$tp_hap " STNS+="$tp_stn " ALL_HAPS+="$all_hap " ALL_STNS+="$all_stn "
	for v in "$@"; do
		read -r c rr ca cb tp ma mb all <<<"$(run_variant "$v")"
		l=${v%%:*}
		ratio=$(div "$c" "$hap")
		echo "round=$r variant=$l crr_p50_us=$c haproxy_crr_p50_us=$hap ratio=$ratio rr_p50_us=$rr cpu_per_conn_us_a=$ca cpu_per_conn_us_b=$cb stream_MBps=$tp cpu_per_mb_us_a=$ma cpu_per_mb_us_b=$mb cpu_all_per_mb_us=$all haproxy_MBps=$tp_hap haproxy_cpu_all_per_mb_us=$all_hap stunnel_MBps=$tp_stn stunnel_cpu_all_per_mb_us=$all_stn load=$(cut -d' ' -f1 /proc/loadavg)"
		CRRS[$l]+="$c " RATIOS[$l]+="$ratio " RRS[$l]+="$rr " CPUA[$l]+="$ca " CPUB[$l]+="$cb "
		TPS[$l]+="$tp " CMA[$l]+="$ma " CMB[$l]+="$mb " CALL[$l]+="$all " TPH[$l]+="$(div "$tp" "$tp_hap") " TPS_ST[$l]+="$(div "$tp" "$tp_stn") "
	done
done
stat() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%s [%s..%s]", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
for v in "$@"; do
	l=${v%%:*}
	echo "variant=$l rounds=$ROUNDS crr_p50_us=$(stat "${CRRS[$l]}") ratio=$(stat "${RATIOS[$l]}") rr_p50_us=$(stat "${RRS[$l]}") cpu_per_conn_us_a=$(stat "${CPUA[$l]}") cpu_per_conn_us_b=$(stat "${CPUB[$l]}")"
	[ "$SECS" = 0 ] || echo "variant=$l stream_MBps=$(stat "${TPS[$l]}") vs_haproxy=$(stat "${TPH[$l]}") vs_stunnel=$(stat "${TPS_ST[$l]}") cpu_per_mb_us_a=$(stat "${CMA[$l]}") cpu_per_mb_us_b=$(stat "${CMB[$l]}") cpu_all_per_mb_us=$(stat "${CALL[$l]}")"
done
[ "$SECS" = 0 ] || echo "haproxy_MBps=$(stat "$HAPS") haproxy_cpu_all_per_mb_us=$(stat "$ALL_HAPS") stunnel_MBps=$(stat "$STNS") stunnel_cpu_all_per_mb_us=$(stat "$ALL_STNS")"
