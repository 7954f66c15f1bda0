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
# time (user + system, all threads, from /proc) per new connection during the crr run. Root.
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
CRR=${CRR:-1000} RR=${RR:-5000} CRR_TLS=${CRR_TLS:-200}
B=$TOOLS/mtlsbench
need_built "$B"
two_hosts root api
cat "$TMP/a/certs/web.crt" "$TMP/a/certs/web.key" >"$TMP/a/web.pem"
cat "$TMP/b/certs/api.crt" "$TMP/b/certs/api.key" >"$TMP/b/api.pem"
spawn server nsenter --net="/run/netns/$HB" "$B" server "$IP_B:9000"
wait_for 5 grep -q listening "$TMP/server.log"
haproxy_cfgs "" 7001 7443
spawn haproxy_b nsenter --net="/run/netns/$HB" haproxy -db -f "$TMP/hb.cfg"
spawn haproxy_a nsenter --net="/run/netns/$HA" haproxy -db -f "$TMP/ha.cfg"
up() { in_host "$HA" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for 10 up 7001 || { echo "ab_mtls: haproxy did not start" >&2; exit 1; }

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
per_conn() { awk -v t="$1" -v u="$TICK_US" -v n="$CRR" 'BEGIN { printf "%.0f", t * u / n }'; }
# run_variant SPEC: one round of one variant; prints "crr_p50 rr_p50 cpu_a_us cpu_b_us" (the
# meshds' CPU time per new connection during the crr run).

run_variant() {
	local label dir busy envs h out1 out2 a0 a1 b0 b1
	IFS=: read -r label dir busy envs <<<"$1"
	MESHD=$(cd "$dir" && pwd)/meshd
	configs "$busy"
	# shellcheck disable=SC2086
	for h in a b; do
		start_host $h "$TMP/$h.json" ${envs//,/ } || { echo "ab_mtls: meshd $h ($label) did not start" >&2; exit 1; }
	done
	bench rr "$VIP:80" 1024 500 >/dev/null # warm the pool
	a0=$(cpu_ticks "$PID_a") b0=$(cpu_ticks "$PID_b")
	out1=$(bench crr "$VIP:80" "$CRR")
	a1=$(cpu_ticks "$PID_a") b1=$(cpu_ticks "$PID_b")
	out2=$(bench rr "$VIP:80" 1024 "$RR")
	for h in a b; do
		kill_wait "$(eval echo "\$PID_$h")"
		in_host "$(eval echo "\$H$(echo $h | tr a-z A-Z)")" "$MESHD" --cleanup --config "$TMP/$h.json" >/dev/null 2>&1
	done
	echo "$(val crr_p50_us "$out1") $(val rr_p50_us "$out2") $(per_conn $((a1 - a0))) $(per_conn $((b1 - b0)))"
}
declare -A CRRS RATIOS RRS CPUA CPUB
for ((r = 1; r <= ROUNDS; r++)); do
	hap=$(val crr_p50_us "$(bench crr 127.0.0.1:7001 "$CRR_TLS")")
	for v in "$@"; do
		read -r c rr ca cb <<<"$(run_variant "$v")"
		l=${v%%:*}
		ratio=$(awk -v a="$c" -v b="$hap" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
		echo "round=$r variant=$l crr_p50_us=$c haproxy_crr_p50_us=$hap ratio=$ratio rr_p50_us=$rr cpu_per_conn_us_a=$ca cpu_per_conn_us_b=$cb load=$(cut -d' ' -f1 /proc/loadavg)"
		CRRS[$l]+="$c " RATIOS[$l]+="$ratio " RRS[$l]+="$rr " CPUA[$l]+="$ca " CPUB[$l]+="$cb "
	done
done
stat() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%s [%s..%s]", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
for v in "$@"; do
	l=${v%%:*}
	echo "variant=$l rounds=$ROUNDS crr_p50_us=$(stat "${CRRS[$l]}") ratio=$(stat "${RATIOS[$l]}") rr_p50_us=$(stat "${RRS[$l]}") cpu_per_conn_us_a=$(stat "${CPUA[$l]}") cpu_per_conn_us_b=$(stat "${CPUB[$l]}")"
done
