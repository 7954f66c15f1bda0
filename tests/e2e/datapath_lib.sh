# Helpers shared by the test_datapath*.sh suites (source after lib.sh): a child cgroup with the
# datapath attached through dptool, clients run inside it, and readers of dptool's key=value
# output. Ports 18000-18999 and VIPs 127.77.2.0/24 belong to these suites.
DPTOOL=$TOOLS/dptool
CLIENT=$TOOLS/mesh_client

dp() { "$DPTOOL" --pin "$PIN" "$@"; }

# dp_setup NAME: makes the cgroup $CG and attaches the datapath to it (undone on exit).
dp_setup() {
	need_root
	if [ ! -x "$DPTOOL" ] || [ ! -x "$CLIENT" ]; then
		fail setup "build the tools first (make unit-bins)"
		exit 1
	fi
	CG=$(make_cgroup "$1")
	defer "'$DPTOOL' --pin '$PIN' cleanup"
	# shellcheck disable=SC2086 # DP_OPEN_ARGS: capacities, one word each
	if ! dp --cgroup "$CG" ${DP_OPEN_ARGS:-} open >/dev/null; then
		fail setup "datapath did not load"
		exit 1
	fi
}

# client ARGS...: mesh_client inside the cgroup; output to stdout.
client() { in_cgroup "$CG" "$CLIENT" "$@"; }

# kv KEY: value of KEY=... in stdin (0 when absent).
kv() { awk -F= -v k="$1" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }'; }

# be_field SERVICE ADDR FIELD: one field of one backend from `dptool stats`.
be_field() {
	dp stats | awk -v s="service=$1" -v a="addr=$2" -v f="$3" '
		$1 == "backend" && $2 == s && $3 == a {
			for (i = 4; i <= NF; i++) { split($i, p, "="); if (p[1] == f) print p[2] }
		}'
}

# svc_field SERVICE FIELD: one field of one service from `dptool stats`.
svc_field() {
	dp stats | awk -v s="name=$1" -v f="$2" '
		$1 == "service" && $2 == s {
			for (i = 3; i <= NF; i++) { split($i, p, "="); if (p[1] == f) print p[2] }
		}'
}

counter() { dp counters | kv "$1"; }

# wait_field SECONDS VALUE CMD...: waits until CMD prints VALUE.
wait_value() {
	local limit=$1 want=$2 i
	shift 2
	for ((i = 0; i < limit * 10; i++)); do
		[ "$("$@")" = "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

# within X LO HI: LO <= X <= HI.
within() { [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

# expect CASE WHY 'CONDITION': PASS when the shell CONDITION (evaluated now, may use && and
# functions) holds, else FAIL with WHY.
expect() {
	if eval "$3"; then pass "$1"; else fail "$1" "$2"; fi
}

# client_bg OUTFILE ARGS...: mesh_client inside the cgroup in the background; BG_PID is the
# client's own PID (bash execs into it), killed on exit.
client_bg() {
	local out=$1
	shift
	bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$CLIENT" "$@" >"$out" 2>&1 &
	BG_PID=$!
	defer "kill -9 $BG_PID"
}
