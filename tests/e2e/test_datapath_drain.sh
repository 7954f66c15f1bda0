#!/usr/bin/env bash
# Drains, attached for real: `dptool drain` closes the established connections of one backend
# through the socket iterator (bpf_sock_destroy): exactly those, counted per service, the others
# keep working, and the active counts follow. Ports 18081-18089, VIPs 127.77.2.80-89.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

dp_setup drain
for i in 1 2; do backend "d$i" "1808$i" || fail setup "backend d$i did not start"; done
D1=127.0.0.1:18081 D2=127.0.0.1:18082
dp set --name dr --vip 127.77.2.80:80 --alg round_robin --backend $D1 --backend $D2

# 10 connections held (5 on each backend); after $TMP/go, each sends a line and reads its echo.
in_cgroup "$CG" python3 - "$TMP/go" >"$TMP/hold.out" 2>&1 <<'PY' &
import collections, os, socket, sys, time
conns = []
for _ in range(10):
    s = socket.create_connection(("127.77.2.80", 80), timeout=5)
    f = s.makefile()
    conns.append((s, f, f.readline().strip()))
print("held=%d" % len(conns), flush=True)
for _ in range(600):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
alive = collections.Counter()
for s, f, name in conns:
    try:
        s.sendall(b"ping\n")
        if f.readline().strip() == "ping":
            alive[name] += 1
    except OSError:
        pass
print("alive_d1=%d alive_d2=%d" % (alive["d1"], alive["d2"]), flush=True)
PY
HOLDER=$!
defer "kill -9 $HOLDER"
wait_for 10 grep -qs held=10 "$TMP/hold.out" || fail setup "holder: $(cat "$TMP/hold.out")"
expect held_counted "active d1=$(be_field dr $D1 active) d2=$(be_field dr $D2 active)" \
	'[ "$(be_field dr $D1 active)" -eq 5 ] && [ "$(be_field dr $D2 active)" -eq 5 ]'

out=$(dp --cgroup "$CG" drain --name dr --backend $D2)
expect drain_closes_that_backends_connections "$out; active d1=$(be_field dr $D1 active) d2=$(be_field dr $D2 active)" \
	'[ "$out" = closed=5 ] && wait_value 5 0 be_field dr $D2 active && [ "$(be_field dr $D1 active)" -eq 5 ] && [ "$(svc_field dr active)" -eq 5 ]'
expect drain_counted "service drained=$(svc_field dr drained) backend drained=$(be_field dr $D2 drained) counter=$(counter drained)" \
	'[ "$(svc_field dr drained)" -eq 5 ] && [ "$(be_field dr $D2 drained)" -eq 5 ] && [ "$(counter drained)" -eq 5 ]'
touch "$TMP/go"
wait "$HOLDER"
expect others_untouched "$(cat "$TMP/hold.out" | tr '\n' ' ')" 'grep -q "alive_d1=5 alive_d2=0" "$TMP/hold.out"'
expect counts_back_to_zero "service active=$(svc_field dr active)" 'wait_value 10 0 svc_field dr active'
out=$(client -n 10 127.77.2.80 80)
expect balancing_unchanged "d2=$(kv backend.d2 <<<"$out") ok=$(kv ok <<<"$out")" \
	'[ "$(kv ok <<<"$out")" -eq 10 ] && [ "$(kv backend.d2 <<<"$out")" -eq 5 ]'
exit $SUITE_FAILED
