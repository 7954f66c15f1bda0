# Shared helpers for benchmark scenarios (bench/bench_*.sh), sourced after tests/e2e/lib.sh (for
# defer, spawn, make_cgroup, wait_for, $TMP, $PIN, $TOOLS). A scenario prints result lines on
# stdout and bench/run.sh collects them into build/bench/raw.txt; bench/report.py turns them
# into build/bench/results.csv, the charts and docs/benchmarks.md. The line protocol (any other
# output is kept in the scenario's log only):
#   @meta   metric=M title="..." unit=U better=lower|higher [subject=V] [baselines=B1,B2] [xlabel=..]
#   @result metric=M variant=V x=X run=R value=N unit=U     one figure of one repeated run
#   @skip   metric=M variant=V x=X reason=free text to the end of the line
#   @note   metric=M text=free text (shown beside the metric, and beside a MISS)
#   @about  text=free text (the scenario's paragraph in docs/benchmarks.md)
# x is "-" for figures that are not part of a curve (the scale curve uses service counts).
# Repeats: REPEATS (default 5, 3 with QUICK=1); scenarios scale their sample counts with QUICK.
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then REPEATS=${REPEATS:-3}; else REPEATS=${REPEATS:-5}; fi
LOADGEN=$TOOLS/loadgen
DPBENCH=$TOOLS/dpbench

bench_about() { echo "@about text=$*"; }
# bench_meta KEY=VALUE...: each value quoted, so titles may hold spaces.
bench_meta() {
	local a out="@meta"
	for a in "$@"; do out+=" ${a%%=*}=\"${a#*=}\""; done
	echo "$out"
}
# bench_result METRIC VARIANT X RUN VALUE UNIT
bench_result() { echo "@result metric=$1 variant=$2 x=$3 run=$4 value=$5 unit=$6"; }
# bench_skip METRIC VARIANT X REASON...
bench_skip() {
	local m=$1 v=$2 x=$3
	shift 3
	echo "@skip metric=$m variant=$v x=$x reason=$*"
}
bench_note() {
	local m=$1
	shift
	echo "@note metric=$m text=$*"
}
# bench_fail WHY: the scenario could not run; run.sh records it and goes on with the next one.
bench_fail() {
	echo "@error text=$*"
	exit 1
}

# kv FILE KEY: the value of KEY=value in FILE (loadgen/dpbench output), empty when absent.
kv() { sed -n "s/^$2=//p" "$1" | head -n 1; }

# bench_quick QUICK_VALUE FULL_VALUE: the sample count for this mode.
bench_quick() { if [ "$QUICK" = 1 ]; then echo "$1"; else echo "$2"; fi; }

# bench_sizes VARIANTS METRIC SIZE...: sets BENCH_SIZES to the service counts this mode measures.
# QUICK=1 stops at QUICK_MAX_SIZE (10,000: populating 100,000 services, and iptables-restore of
# as many rules, take minutes); each larger size is reported skipped for every variant in the
# comma-separated VARIANTS, with why.
QUICK_MAX_SIZE=10000
bench_sizes() {
	local variants=$1 metric=$2 n v
	shift 2
	BENCH_SIZES=()
	for n in "$@"; do
		if [ "$QUICK" = 1 ] && ((n > QUICK_MAX_SIZE)); then
			for v in ${variants//,/ }; do
				bench_skip "$metric" "$v" "$n" "QUICK=1 stops at $QUICK_MAX_SIZE services" \
					"(the full run measures $n)"
			done
		else
			BENCH_SIZES+=("$n")
		fi
	done
}

# bench_need_root: every scenario attaches BPF or changes iptables.
bench_need_root() {
	[ "$(id -u)" -eq 0 ] || bench_fail "needs root"
}

# --- the haproxy TLS pair of the mTLS scenarios (bench_mtls.sh, ab_mtls.sh) -------------------------
tls13="ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256"
# haproxy_cfgs SUFFIX PORT_A PORT_B [GLOBAL_LINE]: the pair's configs $TMP/ha$SUFFIX.cfg (plain in on
# 127.0.0.1:PORT_A) and $TMP/hb$SUFFIX.cfg (TLS in on $IP_B:PORT_B).
haproxy_cfgs() {
local sfx=$1 pa=$2 pb=$3 extra=${4:-} head
head=$(printf 'global\n\tmaxconn 4000\n\t%s\ndefaults\n\tmode tcp\n\ttimeout connect 5s\n\ttimeout client 60s\n\ttimeout server 60s' "$extra")
cat >"$TMP/hb$sfx.cfg" <<CFG
$head
frontend tls
	bind $IP_B:$pb ssl crt $TMP/b/api.pem ca-file $C/root.crt verify required $tls13 curves X25519
	default_backend app
backend app
	server app $IP_B:9000
CFG
cat >"$TMP/ha$sfx.cfg" <<CFG
$head
frontend plain
	bind 127.0.0.1:$pa
	default_backend tls
backend tls
	server b $IP_B:$pb ssl crt $TMP/a/web.pem ca-file $C/root.crt verify required sni str(api) $tls13
CFG
}

# stunnel_cfgs PORT_A PORT_B: the stunnel4 pair's configs $TMP/sa.conf (plain in on
# 127.0.0.1:PORT_A) and $TMP/sb.conf (TLS in on $IP_B:PORT_B), same certificates and cipher.
stunnel_cfgs() {
local st_common="foreground = yes
pid =
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
curves = X25519
CAfile = $C/root.crt
verifyChain = yes
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1"
printf '%s\ncert = %s\nkey = %s\n[b]\naccept = %s:%s\nconnect = %s:9000\n' "$st_common" \
	"$TMP/b/certs/api.crt" "$TMP/b/certs/api.key" "$IP_B" "$2" "$IP_B" >"$TMP/sb.conf"
printf '%s\ncert = %s\nkey = %s\n[a]\nclient = yes\naccept = 127.0.0.1:%s\nconnect = %s:%s\n' \
	"$st_common" "$TMP/a/certs/web.crt" "$TMP/a/certs/web.key" "$1" "$IP_B" "$2" >"$TMP/sa.conf"
}
