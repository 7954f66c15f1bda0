#!/usr/bin/env bash
# meshd's HTTP endpoints against a hostile local user (tests/e2e/servers/http_attack.py): 64+
# connections trickling one byte a second (slowloris), 2,000 idle connections, and /metrics
# scrapers that never read, on the metrics port and on the admin socket. Throughout each attack,
# /metrics, /healthz, /readyz and meshctl must still be answered (generous bounds: this asserts
# "answered", never a latency), and the refusals and evictions are logged rate-limited.
# Ports 20080-20081; VIPs 127.77.20.0/22.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$MESHCTL"

MPORT=20080
ATTACK=$ROOT/tests/e2e/servers/http_attack.py
observe_cgroup http
# 600 services of 10 backends: a ~5.5 MB exposition, more than a socket buffer takes (4 MB at
# most by default), so a client
# that does not read stalls its scrape mid-stream (nothing listens on the backends: health
# checks are off).
SERVICES=$(python3 -c '
import json
print(json.dumps([{"name": "s%d" % i, "vip": "127.77.%d.%d" % (20 + i // 250, i % 250 + 1),
                   "port": 80,
                   "backends": [{"address": "127.0.0.1", "port": 21000 + j} for j in range(10)]}
                  for i in range(600)]))')
observe_config "$TMP/meshd.json" $MPORT "$SERVICES"
sed -i 's/"level": "debug"/"level": "info"/' "$TMP/meshd.json"
start_meshd "$TMP/meshd.json" $MPORT || {
	fail setup "meshd not ready: $(tail -5 "$TMP/meshd.log")"
	exit 1
}
SOCK=$TMP/run/admin.sock

# attack NAME MODE TARGET N: starts the attacker in the background and waits (30 s at most)
# until all N connections are open and each has sent its first byte. Sets ATTACK_PID.
attack() {
	local name=$1 t0=$SECONDS
	rm -f "$TMP/$name.ready" "$TMP/$name.stop"
	python3 "$ATTACK" "$2" "$3" "$4" "$TMP/$name.ready" "$TMP/$name.stop" 90 \
		>"$TMP/$name.log" 2>&1 &
	ATTACK_PID=$!
	defer "touch '$TMP/$name.stop'; kill $ATTACK_PID 2>/dev/null"
	wait_for 30 test -s "$TMP/$name.ready"
	echo "# $name ready after $((SECONDS - t0))s: $(cat "$TMP/$name.ready")" >&2
}
stop_attack() {
	touch "$TMP/$1.stop"
	wait "$ATTACK_PID" 2>/dev/null
}

# answered URL...: each URL answers 200 within 8 s (curl's own bound), three rounds.
answered() {
	local round url
	for round in 1 2 3; do
		for url in "$@"; do
			curl -sSf -o /dev/null --max-time 8 "$url" 2>"$TMP/curl.err" ||
				{ echo "no answer: $url (round $round): $(cat "$TMP/curl.err")"; return 1; }
		done
	done
}
ENDPOINTS=("http://127.0.0.1:$MPORT/metrics" "http://127.0.0.1:$MPORT/healthz"
	"http://127.0.0.1:$MPORT/readyz")
# ctl_answers: meshctl status and services answer (three rounds, meshctl's 5 s timeout each).
ctl_answers() {
	local round cmd
	for round in 1 2 3; do
		for cmd in status services; do
			"$MESHCTL" --socket "$SOCK" "$cmd" -o json >/dev/null 2>"$TMP/ctl.err" ||
				{ echo "meshctl $cmd failed (round $round): $(cat "$TMP/ctl.err")"; return 1; }
		done
	done
}
# under_attack CASE MODE TARGET N CMD...: while the attacker holds TARGET, CMD (printing why it
# failed) must succeed.
under_attack() {
	local name=$1 out
	if attack "$name" "$2" "$3" "$4"; then
		shift 4
		out=$("$@")
		check "$name" "$out ($(cat "$TMP/$name.ready"))" test -z "$out"
		stop_attack "$name"
	else
		fail "$name" "attacker never established: $(cat "$TMP/$name.log")"
	fi
}
# warn_lines: http WARN lines in meshd's log so far.
warn_lines() { grep -c 'level=warn subsys=http' "$TMP/meshd.log"; }

check baseline "scrapes do not work before any attack: $(answered "${ENDPOINTS[@]}")" \
	answered "${ENDPOINTS[@]}"

# --- slowloris: every slot held by a request one byte a second ----------------------------------
# Each byte used to reset a 10 s deadline, so 64 such connections held all 64 slots for good.
under_attack slowloris_metrics_answered trickle "127.0.0.1:$MPORT" 80 answered "${ENDPOINTS[@]}"

# --- 2,000 idle connections -----------------------------------------------------------------------
under_attack idle_flood_metrics_answered idle "127.0.0.1:$MPORT" 2000 answered "${ENDPOINTS[@]}"

# --- scrapers that never read: each holds one of the 4 snapshots ----------------------------------
# blocked_scrapes: server-side sockets of the metrics port with unsent bytes queued.
blocked_scrapes() {
	test "$(ss -tnH state established "( sport = :$MPORT )" | awk '$2 > 0' | wc -l)" -ge "$1"
}
# scrape_within SECONDS: /metrics answers 200 within that (retrying a 503).
scrape_within() {
	local end=$((SECONDS + $1))
	until curl -sf -o /dev/null --max-time 8 "http://127.0.0.1:$MPORT/metrics"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}
if attack noread noread "127.0.0.1:$MPORT" 6 && wait_for 20 blocked_scrapes 4; then
	check stalled_scrapers_metrics_answered "/metrics refused while 4+ scrapers do not read" \
		scrape_within 8
	out=$(answered "${ENDPOINTS[@]}")
	check stalled_scrapers_all_answered "$out" test -z "$out"
	stop_attack noread
else
	fail stalled_scrapers_metrics_answered "scrapers never stalled: $(ss -tnH "( sport = :$MPORT )" | head -3)"
fi

# --- the admin socket: slowloris, then 200 idle connections --------------------------------------
under_attack slowloris_admin_answered trickle "unix:$SOCK" 80 ctl_answers
under_attack idle_admin_answered idle "unix:$SOCK" 200 ctl_answers

# Thousands of connections refused or evicted above, a few lines: at most 5 per 10 s window
# (the suite's own run time bounds the windows), each carrying the count held back before it.
w=$(warn_lines)
check refusals_logged_rate_limited "$w http warnings in ${SECONDS}s" \
	test "$w" -ge 1 -a "$w" -le $((5 * (SECONDS / 10 + 2)))
kill "$MESHD_PID"
wait "$MESHD_PID" 2>/dev/null
r=$?
check meshd_clean_exit "meshd exited $r: $(grep -m3 -E 'ERROR|Sanitizer' "$TMP/meshd.log")" test $r = 0
exit 0
