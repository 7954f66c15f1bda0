#!/usr/bin/env bash
# Closing connections to backends that left, end to end with the real meshd: a reload removes a
# backend of a service with close_removed_after 1s; its held connections are closed after that
# time (not before), the others keep working, and it is logged and counted in /metrics; a service
# with close_on_open closes a backend's connections when its breaker opens (the backend stopped
# accepting but kept its established connections). Ports 21511-21519, VIPs 127.77.5.60-61,
# metrics 127.0.0.1:21994.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD"

METRICS=127.0.0.1:21994
CG=$(make_cgroup drain)
defer "kill_cgroup '$CG'; rmdir '$CG'"
LOG=$TMP/meshd.log
CONF=$TMP/meshd.json
backend b1 21511
backend b2 21512
# b3 stops accepting (closes its listener) when $TMP/stop-b3 exists, keeping what it holds.
cat >"$TMP/b3.py" <<'PY'
import os, selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 21513)); ls.listen(64); sel.register(ls, selectors.EVENT_READ)
while True:
    if ls and os.path.exists(sys.argv[1]):
        sel.unregister(ls); ls.close(); ls = None
    for key, _ in sel.select(0.1):
        if key.fileobj is ls:
            c, _ = ls.accept()
            sel.register(c, selectors.EVENT_READ)
            try:
                c.sendall(b"b3\n")
            except OSError:
                pass  # the reader sees the reset and closes it
            continue
        try:
            d = key.fileobj.recv(4096)
            if d:
                key.fileobj.sendall(d)
                continue
        except OSError:
            pass
        sel.unregister(key.fileobj); key.fileobj.close()
PY
spawn b3 python3 "$TMP/b3.py" "$TMP/stop-b3"
wait_for 5 port_open 127.0.0.1 21513 || fail setup "b3 did not start"

write_config() { # write_config WEB_BACKEND_PORTS...
	local ports=("$@") bes="" p
	for p in "${ports[@]}"; do bes="$bes${bes:+, }{ \"address\": \"127.0.0.1\", \"port\": $p }"; done
	cat >"$CONF" <<JSON
{
  "version": 1,
  "cgroup": "$CG",
  "bpf_pin_path": "$PIN",
  "state_dir": "$TMP/state",
  "admin": { "socket": "$TMP/admin.sock" },
  "telemetry": { "metrics_listen": "$METRICS" },
  "load_balancer": { "algorithm": "round_robin", "health_check": { "type": "none" } },
  "discovery": { "backend": "static" },
  "services": [
    { "name": "web", "vip": "127.77.5.60", "port": 80, "backends": [ $bes ],
      "load_balancer": { "close_removed_after": "1s" } },
    { "name": "flaky", "vip": "127.77.5.61", "port": 80,
      "backends": [ { "address": "127.0.0.1", "port": 21513 } ],
      "circuit_breaker": { "close_on_open": true, "consecutive_failures": 2 } }
  ]
}
JSON
}
write_config 21511 21512
"$MESHD" --config "$CONF" >"$LOG" 2>&1 &
MESHD_PID=$!
defer "kill -TERM $MESHD_PID; wait $MESHD_PID"
defer "'$MESHD' --cleanup --config '$CONF'"
dump() { "$ROOT/build/tests/tools/dptool" --pin "$PIN" stats 2>&1 | cut -c1-150; "$ROOT/build/tests/tools/dptool" --pin "$PIN" counters | tr '\n' ' '; }
reachable() {
	in_cgroup "$CG" python3 -c 'import socket
for vip in ("127.77.5.60", "127.77.5.61"):
    socket.create_connection((vip, 80), timeout=1).close()' 2>/dev/null
}
wait_until 10 reachable || { fail started "$(grep -v level=debug "$LOG" | tail -4) $(dump)"; exit 1; }

# Held connections: 6 to web (3 on b1, 3 on b2) and 2 to flaky (b3); on each $TMP/check-N
# the holder reports which are still alive.
in_cgroup "$CG" python3 - "$TMP" >"$TMP/hold.out" 2>&1 <<'PY' &
import collections, os, socket, sys, time
conns = []
for vip, n in (("127.77.5.60", 6), ("127.77.5.61", 2)):
    for i in range(n):
        try:
            s = socket.create_connection((vip, 80), timeout=5)
        except OSError as e:
            sys.exit("connect %d to %s: %s" % (i, vip, e))
        f = s.makefile()
        conns.append((s, f, f.readline().strip()))
print("held=%d" % len(conns), flush=True)
for check in range(1, 4):
    while not os.path.exists("%s/check-%d" % (sys.argv[1], check)):
        time.sleep(0.05)
    alive = collections.Counter()
    for s, f, name in conns:
        try:
            s.sendall(b"ping\n")
            if f.readline().strip() == "ping":
                alive[name] += 1
        except OSError:
            pass
    print("check%d b1=%d b2=%d b3=%d" % (check, alive["b1"], alive["b2"], alive["b3"]), flush=True)
PY
defer "kill -9 $!"
wait_for 10 grep -qs held=8 "$TMP/hold.out" || fail setup "holder: $(tail -1 "$TMP/hold.out") $(grep -v 'level=debug' "$LOG" | tail -5) $(dump)"

write_config 21511
kill -HUP $MESHD_PID
wait_until 5 grep -q 'msg="reload' "$LOG"
touch "$TMP/check-1"
wait_for 5 grep -qs check1 "$TMP/hold.out"
expect_line() { grep "^$1 " "$TMP/hold.out"; }
check removed_backend_kept_until_drain_time "$(expect_line check1)" \
	grep -q "^check1 b1=3 b2=3 b3=2" "$TMP/hold.out"
check drained_after_close_removed_after "$(grep 'drained removed backends' "$LOG" | tail -1)" \
	wait_until 5 grep -q 'msg="drained removed backends" backends=1 closed=3' "$LOG"
touch "$TMP/check-2"
wait_for 5 grep -qs check2 "$TMP/hold.out"
check only_its_connections_closed "$(expect_line check2)" grep -q "^check2 b1=3 b2=0 b3=2" "$TMP/hold.out"
drained=$(curl -s "http://$METRICS/metrics" | awk '/^meshd_drained_connections_total\{service="web"\}/ { print $2 }')
check drain_in_metrics "meshd_drained_connections_total{service=web} = $drained" test "${drained:-0}" = 3

# --- close_on_open: b3 stops accepting; two failed connects open its breaker -----------------
touch "$TMP/stop-b3"
wait_for 5 bash -c '! (exec 3<>/dev/tcp/127.0.0.1/21513) 2>/dev/null'
in_cgroup "$CG" python3 -c 'import socket
for _ in range(3):
    try:
        socket.create_connection(("127.77.5.61", 80), timeout=1).close()
    except OSError:
        pass'
check breaker_open_closes_connections "$(grep 'breaker opened' "$LOG" | tail -1)" \
	wait_until 5 grep -q 'msg="closed the connections of a backend whose breaker opened" service=flaky backend=127.0.0.1:21513 closed=2' "$LOG"
touch "$TMP/check-3"
wait_for 5 grep -qs check3 "$TMP/hold.out"
check b3_connections_gone "$(expect_line check3)" grep -q "^check3 b1=3 b2=0 b3=0" "$TMP/hold.out"
exit $SUITE_FAILED
