#!/usr/bin/env bash
# The health probe (user/health/health_probe.c) against real servers on loopback, through
# build/tests/tools/health_probe: http 2xx/5xx, a port that is open but whose /health fails, a
# refused port, a server that accepts and never answers (timeout), a non-HTTP answer.
. "$(dirname "$0")/lib.sh"

PROBE=$TOOLS/health_probe
need_built "$PROBE"
P_OK=21101 P_CLOSED=21102 P_SILENT=21103 P_GARBAGE=21104 P_V6=21105

echo ok >"$TMP/health"
backend ok $P_OK --health-file "$TMP/health"
spawn silent python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); time.sleep(120)' $P_SILENT
spawn garbage python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"SSH-2.0-nope\r\n"); c.close()' $P_GARBAGE
echo ok >"$TMP/health-v6"
spawn v6 python3 "$ROOT/tests/e2e/servers/backend.py" --name v6 --port $P_V6 --addr ::1 \
	--health-file "$TMP/health-v6"
wait_for 5 port_open ::1 $P_V6
wait_for 5 port_open 127.0.0.1 $P_SILENT
wait_for 5 port_open 127.0.0.1 $P_GARBAGE

# expect CASE WANT_RC WANT_TEXT PROBE_ARGS...: runs the probe, checks exit code and output.
expect() {
	local name=$1 want_rc=$2 want=$3 out rc
	shift 3
	out=$(timeout 10 "$PROBE" "$@" 2>&1)
	rc=$?
	if [ "$rc" -eq "$want_rc" ] && [[ "$out" == *"$want"* ]]; then
		pass "$name"
	else
		fail "$name" "rc=$rc out='$out' (want rc=$want_rc and '$want')"
	fi
}

expect http_2xx_is_healthy 0 "ok http status 200" http 127.0.0.1:$P_OK /health
echo fail >"$TMP/health"
expect http_503_is_unhealthy 1 "fail http status 503" http 127.0.0.1:$P_OK /health
expect tcp_open_port_is_healthy_even_when_http_fails 0 "ok connected" tcp 127.0.0.1:$P_OK
expect http_path_is_sent 0 "ok http status 200" http 127.0.0.1:$P_OK /other
expect ipv6_http_is_healthy 0 "ok http status 200" http "[::1]:$P_V6" /health
expect tcp_refused_is_unhealthy 1 "fail connect: Connection refused" tcp 127.0.0.1:$P_CLOSED
expect http_refused_is_unhealthy 1 "fail connect: Connection refused" http 127.0.0.1:$P_CLOSED
expect non_http_answer_is_unhealthy 1 "fail not an HTTP/1.x status line" \
	http 127.0.0.1:$P_GARBAGE /health

start=$(date +%s%N)
expect silent_server_times_out 1 "fail timeout after 300ms reading response" \
	http 127.0.0.1:$P_SILENT /health 300
ms=$((($(date +%s%N) - start) / 1000000))
check timeout_is_bounded "took ${ms}ms for a 300ms timeout" test "$ms" -lt 2000
exit $SUITE_FAILED
