# Shared helpers for end-to-end suites. Source it first thing:   . "$(dirname "$0")/lib.sh"
# Every suite prints one `PASS suite.case` / `FAIL suite.case: why` / `SKIP suite.case: why` line
# per case. Everything a suite makes is registered with `defer` and undone on exit, on failure
# too. Service addresses come from 127.77.0.0/16; backends listen on 127.0.0.1.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MESH_BUILD=${MESH_BUILD:-build}
case "$MESH_BUILD" in /*) BUILD_DIR=$MESH_BUILD ;; *) BUILD_DIR=$ROOT/$MESH_BUILD ;; esac
MESHD=$BUILD_DIR/meshd
MESHCTL=$BUILD_DIR/meshctl
TOOLS=$BUILD_DIR/tests/tools
SUITE=${SUITE:-$(basename "$0" .sh)}
SUITE=${SUITE#test_}
CG2=$(awk '$3=="cgroup2" {print $2; exit}' /proc/mounts)
TEST_ID=meshtest-$$
TMP=$(mktemp -d "/tmp/$TEST_ID.XXXXXX")
PIN=/sys/fs/bpf/$TEST_ID
SUITE_FAILED=0
_DEFERRED=()

# defer CMD: run CMD (a string, eval'd) at exit, last registered first.
defer() { _DEFERRED+=("$1"); }
_run_deferred() {
	# KEEP_TMP=DIR keeps a copy of the suite's files (logs, configs) for debugging.
	[ -n "${KEEP_TMP:-}" ] && cp -r "$TMP" "$KEEP_TMP"
	local i cg
	for ((i = ${#_DEFERRED[@]} - 1; i >= 0; i--)); do
		eval "${_DEFERRED[$i]}" >/dev/null 2>&1 || true
	done
	# make_cgroup usually runs in $(...), where its defer is lost: sweep by this test's prefix.
	for cg in "$CG2/$TEST_ID"-*; do
		[ -d "$cg" ] && remove_cgroup "$cg"
	done
	rm -rf "$TMP"
}
trap _run_deferred EXIT
trap 'exit 130' INT TERM

pass() { echo "PASS $SUITE.$1"; }
fail() {
	echo "FAIL $SUITE.$1: $2"
	SUITE_FAILED=1
}
skip() { echo "SKIP $SUITE.$1: $2"; }
# check CASE WHY CMD...: PASS if CMD succeeds, else FAIL with WHY.
check() {
	local name=$1 why=$2
	shift 2
	if "$@"; then pass "$name"; else fail "$name" "$why"; fi
}

# need_built PATH...: the suite's binaries and files; `make test` builds them all, so one missing
# is a failure (never a skip that would hide a broken build).
need_built() {
	local p
	for p in "$@"; do
		if [ ! -e "$p" ]; then
			fail all "missing $p (make all unit-bins)"
			exit 1
		fi
	done
}

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		skip "${1:-all}" "needs root"
		exit 0
	fi
}

# make_cgroup NAME: creates a child cgroup of the cgroup2 mount for this test, prints its path.
# On exit, processes still in it (ours by construction) are killed and it is removed (also when
# called in a subshell, as in CG=$(make_cgroup x): the exit handler sweeps every
# $CG2/$TEST_ID-* cgroup).
make_cgroup() {
	local cg=$CG2/$TEST_ID-$1
	mkdir -p "$cg"
	defer "remove_cgroup '$cg'"
	echo "$cg"
}
kill_cgroup() {
	local cg=$1 pid i
	[ -f "$cg/cgroup.procs" ] || return 0
	for i in 1 2 3 4 5; do
		for pid in $(cat "$cg/cgroup.procs"); do kill -9 "$pid" 2>/dev/null; done
		[ -z "$(cat "$cg/cgroup.procs")" ] && return 0
		sleep 0.1
	done
}
# remove_cgroup DIR: kills what is left in it (ours by construction) and removes it, retrying
# for up to 10 s while exiting tasks keep it busy.
remove_cgroup() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ -d "$1" ] || return 0
		kill_cgroup "$1"
		rmdir "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "could not remove cgroup $1" >&2
	return 1
}
# in_cgroup CG CMD...: runs CMD inside cgroup CG (foreground).
in_cgroup() {
	local cg=$1
	shift
	bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"
}

# spawn NAME CMD...: starts CMD in the background, logs to $TMP/NAME.log, kills it on exit.
# Sets SPAWNED_PID.
spawn() {
	local name=$1
	shift
	"$@" >"$TMP/$name.log" 2>&1 &
	SPAWNED_PID=$!
	defer "kill -9 $SPAWNED_PID; wait $SPAWNED_PID"
}

# kill_wait PID: SIGKILL and reap, without bash's "Killed" job notice on stderr.
kill_wait() {
	exec 3>&2 2>/dev/null
	kill -9 "$1"
	wait "$1"
	exec 2>&3 3>&-
}

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds or time runs out.
wait_for() {
	local limit=$1 i
	shift
	for ((i = 0; i < limit * 10; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# consul_emulator PORT [ARGS...]: starts tests/e2e/consul_emulator.py on PORT with ARGS (its
# --data-file, --log-file, --acl-token...), sets CONSUL_PID, and returns once it listens (1 when
# it did not within 5 s).
consul_emulator() {
	local port=$1
	shift
	spawn consul python3 "$ROOT/tests/e2e/consul_emulator.py" --port "$port" "$@"
	CONSUL_PID=$SPAWNED_PID
	wait_for 5 port_open 127.0.0.1 "$port"
}
# wait_until SECONDS CMD...: like wait_for, but bounded by wall time (for slow commands).
wait_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}
# wait_output SECONDS WANT CMD...: polls until CMD prints exactly WANT. Use it rather than
# `wait_for N test "$(cmd)" = WANT`, whose $(cmd) the shell expands once, before any polling.
wait_output() {
	local end=$((SECONDS + $1)) want=$2
	shift 2
	until [ "$("$@")" = "$want" ]; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}

# through_vip VIP N: N connects to VIP:80 from inside the test cgroup $CG; prints each backend's
# name (the first line it sends) or ERR, one per line.
through_vip() {
	in_cgroup "$CG" python3 - "$1" "$2" <<'PY'
import socket, sys
for _ in range(int(sys.argv[2])):
    try:
        s = socket.create_connection((sys.argv[1], 80), timeout=1)
        s.sendall(b"hi\n")  # a --health-file backend waits briefly for an HTTP request
        print(s.makefile().readline().strip() or "ERR")
        s.close()
    except OSError:
        print("ERR")
PY
}

# backend NAME PORT [ARGS]: starts the test backend server on 127.0.0.1:PORT answering NAME.
backend() {
	local name=$1 port=$2
	shift 2
	spawn "backend-$name" python3 "$ROOT/tests/e2e/servers/backend.py" --name "$name" \
		--port "$port" "$@"
	wait_for 5 port_open 127.0.0.1 "$port"
}

cleanup_pin() { [ -d "$PIN" ] && rm -rf "$PIN"; }
defer cleanup_pin
