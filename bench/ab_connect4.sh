#!/usr/bin/env bash
# A/B of the datapath's programs between two builds, side by side in one session: each build's
# datapath is loaded into a cgroup of its own (own pin path) and the cost runs alternate between
# them, so load from other tenants falls on both alike. Not a scenario of `make bench` (it needs
# a second build); for changes to bpf/, e.g. main's build against a branch's:
#   git archive main | tar -x -C /tmp/base && make -C /tmp/base all unit-bins
#   bench/ab_connect4.sh /tmp/base/build build 9 svc1000 be2 be1024 pe1000
# Scenarios: svcN (N services of 10 backends, least_request), beN (one service of N backends),
# peN (N services, peak_ewma), spN (N services, least_request with a 90/10 split). Per round and
# build, `dpbench cost` makes N_CONN connects (default 2,500) to service 0 in chunks of 250; a
# round's figures are connect4's 10th percentile and lowest chunk and all our programs' time per
# connect at the 10th percentile (connect4, sockops, sock_release), as bench_connect4.sh reads
# them. Prints one line per round and a summary per scenario (median and lowest of the rounds).
# Root; restores kernel.bpf_stats_enabled.
. "$(dirname "$0")/../tests/e2e/lib.sh"
if [ $# -lt 4 ]; then
	echo "usage: $0 BUILD_A BUILD_B ROUNDS SCENARIO..." >&2
	exit 2
fi
BUILD_A=$1 BUILD_B=$2
A=$(cd "$1" && pwd)/tests/tools
B=$(cd "$2" && pwd)/tests/tools
ROUNDS=$3
shift 3
N_CONN=${N_CONN:-2500}
for t in "$A" "$B"; do
	if [ ! -x "$t/dpbench" ] || [ ! -x "$t/dptool" ]; then
		echo "no $t/dpbench or dptool (make all unit-bins)" >&2
		exit 2
	fi
done
CGA=$(make_cgroup ab-a)
CGB=$(make_cgroup ab-b)
PA=$PIN-a PB=$PIN-b
defer "'$A/dptool' --pin '$PA' cleanup"
defer "'$B/dptool' --pin '$PB' cleanup"
old_stats=$(sysctl -n kernel.bpf_stats_enabled)
defer "sysctl -q kernel.bpf_stats_enabled=$old_stats"
for x in "A $PA $CGA" "B $PB $CGB"; do
	read -r b pin cg <<<"$x"
	t=$A && [ "$b" = B ] && t=$B
	"$t/dptool" --pin "$pin" --cgroup "$cg" --max-services 100000 --max-backends 1100000 \
		open >/dev/null || {
		echo "build $b: the datapath did not load" >&2
		exit 1
	}
done
spawn backends "$B/loadgen" serve 18900 10
spawn many "$B/dpbench" serve-many 18900 1024
wait_for 5 port_open 127.0.0.1 18909 || {
	echo "backends did not start" >&2
	exit 1
}
link_prog() { bpftool -j link show pinned "$1/$2" | sed -n 's/.*"prog_id":\([0-9]*\).*/\1/p'; }
progs() { echo "$(link_prog "$1" link_connect4) $(link_prog "$1" link_sockops) $(link_prog "$1" link_sock_release)"; }
PRA=$(progs "$PA")
PRB=$(progs "$PB")
sysctl -q kernel.bpf_stats_enabled=1

# populate TOOLS PIN SCENARIO
populate() {
	case $3 in
	svc*) "$1/dpbench" populate "$2" "${3#svc}" 18900 ;;
	be*) "$1/dpbench" populate "$2" 1 18900 0 "${3#be}" ;;
	pe*) "$1/dpbench" populate "$2" "${3#pe}" 18900 0 10 peak_ewma ;;
	sp*) "$1/dpbench" populate "$2" "${3#sp}" 18900 0 10 split ;;
	*) return 2 ;;
	esac >/dev/null
}
# cost TOOLS CG PROGS: "p10 lowest all-at-p10" over one run's chunks
cost() {
	# shellcheck disable=SC2086 # program ids, one word each
	in_cgroup "$2" "$1/dpbench" cost 127.77.2.100 18000 "$N_CONN" 250 $3 |
		sed -n 's/^chunk=//p' | sort -n |
		awk '{ c[NR] = $1; a[NR] = $2 } END { i = int(NR / 10) + 1; printf "%d %d %d\n", c[i], c[1], a[i] }'
}
# stats VALUES...: "median lowest"
stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "%d %d", v[int((NR + 1) / 2)], v[1] }'; }
echo "build_a=$BUILD_A build_b=$BUILD_B rounds=$ROUNDS connects=$N_CONN load=$(cut -d' ' -f1-3 /proc/loadavg)"
for s in "$@"; do
	if ! populate "$A" "$PA" "$s" || ! populate "$B" "$PB" "$s"; then
		echo "populate $s failed" >&2
		exit 1
	fi
	ca=() cb=() fa=() fb=()
	for ((r = 1; r <= ROUNDS; r++)); do
		read -r pa la aa < <(cost "$A" "$CGA" "$PRA")
		read -r pb lb ab < <(cost "$B" "$CGB" "$PRB")
		if [ -z "$pa" ] || [ -z "$pb" ]; then
			echo "cost run failed ($s)" >&2
			exit 1
		fi
		ca+=("$pa") cb+=("$pb") fa+=("$aa") fb+=("$ab")
		echo "round $s $r a=$pa/$la/$aa b=$pb/$lb/$ab load=$(cut -d' ' -f1 /proc/loadavg)"
	done
	read -r ma na < <(stats "${ca[@]}")
	read -r mb nb < <(stats "${cb[@]}")
	read -r pa _ < <(stats "${fa[@]}")
	read -r pb _ < <(stats "${fb[@]}")
	echo "$s connect4_a=$ma connect4_b=$mb lowest_a=$na lowest_b=$nb all_a=$pa all_b=$pb" \
		"ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%.3f", b / a }')"
done
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
