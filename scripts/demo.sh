#!/usr/bin/env bash
# Live demo of Datapunk Mesh (`sudo make demo`): three local backends behind one service address,
# a client in a cgroup that only knows the service address, and meshd balancing its connections
# in the kernel; then one backend dies (its circuit breaker opens and traffic moves to the others)
# and comes back (a half-open probe closes the breaker). Everything it starts is removed on exit.
#
# Uses config/demo.json. Each run has names of its own, so runs in two network namespaces (two
# worktrees' test suites) do not collide: the cgroup and pin path of the config with `-<pid>`
# appended, state and admin socket in a fresh /tmp/meshd-demo.XXXXXX (kept when the demo fails).
# Overrides: MESH_BUILD (build dir), MESH_CGROUP (cgroup to attach to; default
# <cgroup2 mount>/meshd-demo-<pid>), MESH_BPF_PIN_PATH, MESH_STATE_DIR, MESH_ADMIN__SOCKET,
# MESH_TELEMETRY__METRICS_LISTEN (or any MESH_* override), DEMO_CONFIG (another config file),
# DEMO_PAUSE (seconds between steps, default 1), DEMO_LOCK_WAIT (seconds to wait for another
# demo run in this network namespace). Needs root.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${MESH_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
MESHD=$BUILD/meshd
MESHCTL=$BUILD/meshctl
CONFIG=${DEMO_CONFIG:-$ROOT/config/demo.json}
BACKEND_PY=$ROOT/tests/e2e/servers/backend.py
PIDS=()
CREATED_CG=""
RUN_DIR=""

# --- narration ------------------------------------------------------------------------------
if [ -t 1 ]; then B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B= D= G= R= N=; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
say() { printf '    %s\n' "$*"; }
ok() { printf '    %s✔ %s%s\n' "$G" "$*" "$N"; }
die() {
	printf '%sdemo failed: %s%s\n' "$R" "$*" "$N" >&2
	if [ -n "${MESHD_PID:-}" ]; then
		echo "--- last meshd log lines ($LOG):" >&2
		tail -n 15 "$LOG" >&2
	fi
	exit 1
}

# --- cleanup: everything this script started or made, on any exit ---------------------------
# remove_cgroup DIR: kills what is left in it (the demo's clients) and removes it, for up to 5 s.
remove_cgroup() {
	local i pid
	for ((i = 0; i < 50; i++)); do
		[ -d "$1" ] || return 0
		for pid in $(cat "$1/cgroup.procs" 2>/dev/null); do kill -9 "$pid"; done
		rmdir "$1" 2>/dev/null || sleep 0.1
	done
	[ ! -d "$1" ]
}
# Says "cleaned up" only after checking it: every process gone, nothing pinned, the cgroup
# removed; else names what is left (and the exit status says so).
cleanup() {
	local rc=$? pid left=""
	set +e
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
		kill -0 "$pid" 2>/dev/null && left="$left process $pid;"
	done
	if [ -n "${PIN:-}" ] && [ -x "$MESHD" ] && [ -f "$CONFIG" ]; then
		"$MESHD" --cleanup --config "$CONFIG" >/dev/null 2>&1 ||
			left="$left datapath (meshd --cleanup failed);"
		[ -n "${PIN:-}" ] && [ -e "$PIN" ] && left="$left pinned datapath $PIN;"
	fi
	if [ -n "$CREATED_CG" ]; then
		remove_cgroup "$CREATED_CG" || left="$left cgroup $CREATED_CG;"
	fi
	[ -z "$left" ] || [ "$rc" -ne 0 ] || rc=1
	if [ -n "$RUN_DIR" ] && [ "$rc" -ne 0 ] && [ -n "${MESHD_PID:-}" ]; then
		printf '    meshd log and state kept in %s\n' "$RUN_DIR" >&2
	elif [ -n "$RUN_DIR" ]; then
		rm -rf "$RUN_DIR"
	fi
	if [ -z "$left" ]; then
		printf '%s    cleaned up: processes stopped, datapath detached, cgroup removed%s\n' "$D" "$N"
	else
		printf '%sdemo cleanup incomplete, left behind:%s%s\n' "$R" "$left" "$N" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- preflight ------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (sudo make demo): attaching BPF programs needs it"
[ -x "$MESHD" ] || die "$MESHD not built (run make)"
[ -f "$CONFIG" ] || die "$CONFIG not found"
command -v jq >/dev/null || die "jq is missing (scripts/install-deps.sh installs it)"
# One demo at a time per network namespace: its ports are the config's (its cgroup, pin path,
# state and socket are the run's own). DEMO_LOCK_WAIT seconds to wait for another run to finish
# (default 0: say so and stop).
LOCK=/tmp/meshd-demo.net$(stat -L -c %i /proc/self/ns/net).lock
exec 9>"$LOCK"
flock -w "${DEMO_LOCK_WAIT:-0}" 9 || die "another demo is running in this network namespace (lock $LOCK)"
DEMO_START=$SECONDS
CG2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
[ -n "$CG2" ] || die "no cgroup2 mount in /proc/mounts"

# The config names the cgroup and pin path, which get this run's PID appended; on a host whose
# cgroup2 mount is elsewhere, <mount>/meshd-demo. MESH_CGROUP and MESH_BPF_PIN_PATH (the standard
# env overrides of those keys) name them instead, and tell meshd and `meshd --cleanup`.
CG_BASE=$(jq -r '.cgroup' "$CONFIG")
[ "${CG_BASE#"$CG2"/}" != "$CG_BASE" ] || CG_BASE=$CG2/meshd-demo
PIN_BASE=$(jq -r '.bpf_pin_path' "$CONFIG")
CG=${MESH_CGROUP:-$CG_BASE-$$}
PIN=${MESH_BPF_PIN_PATH:-$PIN_BASE-$$}
export MESH_CGROUP=$CG MESH_BPF_PIN_PATH=$PIN
[ "$CG" != "$CG2" ] || die "refusing to attach to the cgroup2 root $CG2"
RUN_DIR=$(mktemp -d /tmp/meshd-demo.XXXXXX) || die "cannot create a directory in /tmp"
export MESH_STATE_DIR=${MESH_STATE_DIR:-$RUN_DIR/state}
export MESH_ADMIN__SOCKET=${MESH_ADMIN__SOCKET:-$RUN_DIR/admin.sock}
SVC=$(jq -r '.services[0].name' "$CONFIG")
VIP=$(jq -r '.services[0].vip' "$CONFIG")
VPORT=$(jq -r '.services[0].port' "$CONFIG")
PORTS=($(jq -r '.services[0].backends[].port' "$CONFIG"))
STATE=$MESH_STATE_DIR
SOCK=$MESH_ADMIN__SOCKET
[ ${#PORTS[@]} -ge 3 ] || die "$CONFIG: the demo wants 3 backends in .services[0]"
LOG=$STATE/meshd.log
for p in "${PORTS[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		die "port $p is already in use; the demo's backends need 127.0.0.1:${PORTS[*]}"
	fi
done
METRICS=${MESH_TELEMETRY__METRICS_LISTEN:-$(jq -r '.telemetry.metrics_listen' "$CONFIG")}
if (exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS##*:}") 2>/dev/null; then
	die "$METRICS (metrics) is already in use; pick another with MESH_TELEMETRY__METRICS_LISTEN=127.0.0.1:PORT"
fi
OPEN_FOR=$(jq -r '.services[0].circuit_breaker.open_duration // .circuit_breaker.open_duration // "30s"' "$CONFIG")
HC_TYPE=$(jq -r '.services[0].load_balancer.health_check.type // .load_balancer.health_check.type // "none"' "$CONFIG")

# client N: N connections from inside the demo cgroup to the service address; prints one backend
# name (the first line the backend sends) or ERR per connection.
client() {
	bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" python3 - "$VIP" "$VPORT" "$1" <<'EOF'
import socket, sys
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    try:
        s = socket.create_connection((vip, port), timeout=2)
        s.sendall(b"hi\n")  # the backend speaks once spoken to
        print(s.makefile().readline().strip() or "ERR")
        s.close()
    except OSError as e:
        print("ERR")
EOF
}
# distribution N: runs the client and prints a bar per backend; leaves the names in $LAST.
distribution() {
	LAST=$(client "$1")
	echo "$LAST" | sort | uniq -c | sort -k2 | while read -r n name; do
		printf '    %-10s %3d  %s\n' "$name" "$n" "$(printf '%*s' "$n" '' | tr ' ' '#')"
	done
}
circuits() {
	if [ -x "$MESHCTL" ] && "$MESHCTL" --socket "$SOCK" circuits >"$STATE/circuits" 2>&1; then
		sed 's/^/    | /' "$STATE/circuits"
	else
		say "(meshctl circuits unavailable; meshd's own log says:)"
		grep -iE 'circuit|health changed' "$LOG" | tail -n 4 | sed 's/^/    | /'
	fi
}
start_backend() {
	python3 "$BACKEND_PY" --name "backend-$1" --port "${PORTS[$(($1 - 1))]}" \
		>"$STATE/backend-$1.log" 2>&1 &
	PIDS+=($!)
	BACKEND_PID[$1]=$!
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_until SECONDS CMD...: polls CMD every 0.2 s.
wait_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.2
	done
}
seen() { client 6 | grep -x "$1" >/dev/null; }
avoids_backend_2() { ! client 9 | grep -x -e backend-2 -e ERR >/dev/null; }
# log_since LINE: meshd's log lines about health and breakers after line LINE, shortened.
log_since() {
	tail -n +"$(($1 + 1))" "$LOG" | grep -E 'health changed|circuit|breaker' |
		sed -E 's/^ts=[^ ]+ //; s/^/    meshd| /' | head -n 6
}
log_lines() { wc -l <"$LOG"; }
pause() { sleep "${DEMO_PAUSE:-1}"; }
declare -a BACKEND_PID

# Leftovers of runs killed before their cleanup (kill -9): names ending in the PID of a process
# that is gone. A live run's names are left alone.
sweep_stale() {
	local d pid
	for d in "$PIN_BASE"-[0-9]* "$CG_BASE"-[0-9]*; do
		pid=${d##*-}
		[[ -e "$d" && "$pid" =~ ^[0-9]+$ ]] || continue
		if kill -0 "$pid" 2>/dev/null; then
			continue
		elif [ "$d" = "$PIN_BASE-$pid" ]; then
			MESH_BPF_PIN_PATH=$d MESH_CGROUP=$CG_BASE-$pid \
				"$MESHD" --cleanup --config "$CONFIG" >/dev/null 2>&1
		else
			remove_cgroup "$d"
		fi
	done
}

# --- 1. setup -------------------------------------------------------------------------------
step "1. Setting up: a cgroup for the client app, three backends, meshd"
sweep_stale
mkdir -p "$STATE"
# Removed on exit if this run made it (a MESH_CGROUP that exists is someone else's).
if [ ! -d "$CG" ]; then
	mkdir -p "$CG" || die "cannot create cgroup $CG"
	CREATED_CG=$CG
fi
say "cgroup    $CG   (only processes in it go through the mesh)"
for i in 1 2 3; do
	start_backend $i
	wait_until 5 port_open "${PORTS[$((i - 1))]}" || die "backend-$i did not start"
	say "backend-$i listening on 127.0.0.1:${PORTS[$((i - 1))]}"
done
"$MESHD" --config "$CONFIG" >"$LOG" 2>&1 &
MESHD_PID=$!
PIDS+=($MESHD_PID)
say "meshd     pid $MESHD_PID, config $CONFIG, log $LOG"
wait_until 10 seen backend-1 || die "no connection to $VIP:$VPORT reached a backend"
ok "service '$SVC' answers on $VIP:$VPORT: nothing listens there; connect() is rewritten in the kernel"
pause

# --- 2. balancing ---------------------------------------------------------------------------
step "2. A client in the cgroup opens 30 connections to $VIP:$VPORT"
distribution 30
[ "$(echo "$LAST" | grep -c '^backend-')" -eq 30 ] || die "some connections failed"
[ "$(echo "$LAST" | sort -u | wc -l)" -eq 3 ] || die "traffic did not reach all three backends"
ok "spread over all three backends; the app never knew their addresses"
pause

# --- 3. failure -----------------------------------------------------------------------------
step "3. backend-2 crashes (kill -9): its connects now fail"
{ kill -9 "${BACKEND_PID[2]}" && wait "${BACKEND_PID[2]}"; } 2>/dev/null
say "the datapath sees each refused connect (sockops) and feeds backend-2's circuit breaker;"
say "after a few consecutive failures the breaker opens and connect() skips backend-2"
mark=$(log_lines)
distribution 30
n_err=$(echo "$LAST" | grep -cx ERR)
say "$n_err connection(s) failed (refused) before the breaker reacted: apps see real errors"
say "only until consecutive_failures is reached"
wait_until 15 avoids_backend_2 || die "traffic still reaches backend-2"
say "next 30 connections:"
distribution 30
echo "$LAST" | grep -qx -e backend-2 -e ERR && die "backend-2 still chosen after the breaker opened"
ok "backend-2 is out: every connection lands on backend-1 or backend-3"
say "meshctl circuits:"
circuits
if [ "$HC_TYPE" != none ]; then
	say "meanwhile meshd's own $HC_TYPE health check also notices, after its threshold:"
	wait_until 10 grep -q "backend=127.0.0.1:${PORTS[1]} healthy=false" "$LOG" ||
		die "the health check never marked backend-2 unhealthy"
	log_since "$mark"
fi
pause

# --- 4. recovery ----------------------------------------------------------------------------
step "4. backend-2 comes back"
mark=$(log_lines)
start_backend 2
wait_until 5 port_open "${PORTS[1]}" || die "backend-2 did not restart"
say "after open_duration ($OPEN_FOR) the breaker turns half-open and lets a probe connection"
say "through; the probe succeeds, so the breaker closes. The health check, which had marked"
say "backend-2 down too, lets it back after its healthy_threshold of passed checks."
wait_until 40 seen backend-2 || die "backend-2 never received traffic again"
ok "backend-2 receives connections again"
say "next 30 connections:"
distribution 30
[ "$(echo "$LAST" | sort -u | grep -c '^backend-')" -eq 3 ] || die "not balanced over three again"
say "meshctl circuits:"
circuits
say "what meshd logged:"
log_since "$mark"

step "Demo complete: balancing, a circuit opening and closing, all in the kernel"
say "try it yourself: sudo $MESHD --config $CONFIG, then look at $MESHCTL services / circuits"
echo "demo took $((SECONDS - DEMO_START))s"
