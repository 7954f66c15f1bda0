#!/usr/bin/env bash
# The HTTP server behind /metrics and the admin API (common/http.c), driven through
# tests/tools/http_serve on the real event loop: keep-alive, pipelining, limits, timeouts,
# connection cap, large responses, and the unix socket's permissions and stale-socket handling.
. "$(dirname "$0")/lib.sh"

SERVE=$TOOLS/http_serve
PORT=20900
[ -x "$SERVE" ] || { fail setup "missing $SERVE (make unit-bins)"; exit 1; }

# serve NAME ARGS...: starts http_serve and waits for its "listening" line.
serve() {
	local name=$1
	shift
	spawn "$name" "$SERVE" "$@"
	SERVE_PID=$SPAWNED_PID
	wait_for 5 grep -qs listening "$TMP/$name.log"
}

# raw PORT BYTES: sends BYTES (printf format) on a fresh TCP connection, prints what comes back
# until the server closes or 3 s pass.
raw() {
	python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
out = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
except socket.timeout:
    pass
sys.stdout.write(out.decode("latin-1"))
PY
}

serve tcp --tcp 127.0.0.1:$PORT --timeout-ms 700 --max-conns 4 ||
	{ fail setup "http_serve did not start: $(cat "$TMP/tcp.log")"; exit 1; }
URL=http://127.0.0.1:$PORT

check get "GET /hello did not answer hello" test "$(curl -s $URL/hello)" = hello
out=$(curl -sv $URL/hello $URL/hello 2>&1)
check keep_alive "second request did not reuse the connection" grep -q "Re-using existing" <<<"$out"
check post_echo "POST body not echoed" test "$(curl -s --data-binary 'a=1&b=2' $URL/echo)" = 'a=1&b=2'
check not_found "want 404" test "$(curl -s -o /dev/null -w '%{http_code}' $URL/nope)" = 404
check method_not_allowed "DELETE: want 405" \
	test "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE $URL/hello)" = 405
check head_has_no_body "HEAD returned a body" test -z "$(curl -s -I $URL/hello | sed '1,/^\r$/d')"
check bad_request "garbage: want 400" grep -q '^HTTP/1.1 400' <<<"$(raw $PORT 'BAD\r\n\r\n')"
check http2_rejected "HTTP/2.0: want 501" grep -q '^HTTP/1.1 501' \
	<<<"$(raw $PORT 'GET / HTTP/2.0\r\n\r\n')"
big=$(printf 'X-Big: %09000d\r\n' 0)
check header_too_large "9 KB header: want 413" grep -q '^HTTP/1.1 413' \
	<<<"$(raw $PORT "GET /hello HTTP/1.1\r\n$big\r\n")"
check body_too_large "Content-Length 70000: want 413" grep -q '^HTTP/1.1 413' \
	<<<"$(raw $PORT 'POST /echo HTTP/1.1\r\nContent-Length: 70000\r\n\r\n')"
check chunked_rejected "chunked body: want 501" grep -q '^HTTP/1.1 501' \
	<<<"$(raw $PORT 'POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')"
out=$(raw $PORT 'GET /hello HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc')
check pipelined "two pipelined requests: want hello then abc" \
	test "$(grep -c '^HTTP/1.1 200' <<<"$out")" = 2 -a "${out: -3}" = abc

n=$(curl -s "$URL/big?bytes=8000000" | wc -c)
check large_response "8 MB body arrived as $n bytes" test "$n" = 8000000

out=$(curl -s "$URL/stream?chunks=30")
check streamed_chunked "streamed body: $(grep -c '^piece' <<<"$out") pieces, ${#out} bytes" \
	test "$(grep -c '^piece' <<<"$out")" = 30 -a "${#out}" = 2999999 -a \
	"$(grep '^piece' <<<"$out" | tail -1 | cut -c1-8)" = "piece 29"
check streamed_header "no chunked Transfer-Encoding" \
	grep -qi '^transfer-encoding: chunked' <<<"$(curl -s -D - -o /dev/null "$URL/stream?chunks=2")"
# HEAD of a stream, then a request on the same connection: a body sent for the HEAD would show
# up as pieces before the second response.
out=$(raw $PORT 'HEAD /stream?chunks=3 HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n')
check streamed_head "HEAD of a stream: $(grep -c '^HTTP/1.1 200' <<<"$out") responses, $(grep -c piece <<<"$out") pieces" \
	test "$(grep -c '^HTTP/1.1 200' <<<"$out")" = 2 -a "$(grep -c piece <<<"$out")" = 0 -a \
	"${out: -5}" = hello
out=$(raw $PORT 'GET /stream?chunks=1 HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\nConnection: close\r\n\r\n')
check streamed_keep_alive "request after a stream on the same connection: $(grep -c '^HTTP/1.1 200' <<<"$out") responses" \
	test "$(grep -c '^HTTP/1.1 200' <<<"$out")" = 2 -a "${out: -5}" = hello

# A client that sends half a request is cut off after the 700 ms deadline.
start=$(date +%s%N)
out=$(raw $PORT 'GET /hello HTTP/1.1\r\nHost: x')
ms=$((($(date +%s%N) - start) / 1000000))
check slow_client_timeout "half request held ${ms} ms (want closed after ~700)" \
	test -z "$out" -a "$ms" -ge 600 -a "$ms" -lt 2900

# Each byte used to restart the deadline: one byte every 200 ms held a half request forever.
# The whole request must now arrive within the 700 ms deadline, however it trickles.
python3 - "$PORT" >"$TMP/trickle.out" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
start = time.time()
try:
    for c in b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
        s.send(bytes([c]))
        s.settimeout(0.2)
        try:
            if s.recv(100) == b"":
                break
        except socket.timeout:
            pass
except OSError:
    pass
print("closed after %.1f s" % (time.time() - start))
PY
secs=$(awk '{print $3}' "$TMP/trickle.out")
check trickle_does_not_extend_deadline "$(cat "$TMP/trickle.out") (want ~0.7, trickling for 20 s)" \
	awk -v s="$secs" 'BEGIN { exit !(s >= 0.5 && s < 5) }'

# Connection cap: 4 connections fill it. A 5th evicts the one idle longest (it is served, the
# oldest idle one is closed); with 4 half requests, the oldest of those goes the same way.
# cap_test MODE: opens 4 connections (MODE idle: silent; partial: half a request each), then a
# 5th that asks for /hello; prints which of the 4 were closed and what the 5th got.
cap_test() {
	python3 - "$PORT" "$1" <<'PY'
import select, socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
held = []
for _ in range(4):
    h = socket.create_connection(("127.0.0.1", port))
    if mode == "partial":
        h.sendall(b"GET /hello HTTP/1.1\r\n")
    held.append(h)
    time.sleep(0.05)  # distinct ages: the first is the oldest
s = socket.create_connection(("127.0.0.1", port), timeout=2)
s.sendall(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
try:
    got = b"".join(iter(lambda: s.recv(100), b""))
    fifth = "served" if got.endswith(b"hello\n") else "closed"
except (ConnectionResetError, socket.timeout):
    fifth = "closed"
# which were closed, well before the 700 ms deadline of the youngest
closed = []
readable = select.select(held, [], [], 0.1)[0]
for i, h in enumerate(held):
    try:
        if h in readable and h.recv(100) == b"":
            closed.append(str(i))
    except ConnectionResetError:
        closed.append(str(i))
print("fifth=%s closed=%s" % (fifth, ",".join(closed) or "none"))
PY
}
out=$(cap_test idle)
check max_conns_evicts_oldest_idle "$out" test "$out" = "fifth=served closed=0"
out=$(cap_test partial)
check max_conns_evicts_oldest_partial "$out" test "$out" = "fifth=served closed=0"
hello_ok() { test "$(curl -s $URL/hello)" = hello; }
check serves_after_cap "not serving after the capped connections" wait_for 3 hello_ok

# A client that leaves in the middle of a 20 MB stream: no SIGPIPE, the stream state is released
# (a leak fails the exit status under ASan), and the server keeps serving.
python3 - $PORT <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /stream?chunks=200 HTTP/1.1\r\nHost: x\r\n\r\n")
s.recv(1000)
s.close()
PY
check abandoned_stream_survives "server gone after a client left mid-stream" wait_for 3 hello_ok
kill "$SERVE_PID"
wait "$SERVE_PID"
r=$?
check clean_exit "http_serve exited $r on SIGTERM: $(grep -m2 -E 'ERROR|Sanitizer' "$TMP/tcp.log")" \
	test $r = 0

# Unix socket: parent directories created 0700, socket 0600, served by curl --unix-socket.
SOCK=$TMP/run/nested/admin.sock
serve unix --unix "$SOCK" || { fail unix_start "$(cat "$TMP/unix.log")"; exit 1; }
check unix_get "curl over the unix socket" \
	test "$(curl -s --unix-socket "$SOCK" http://x/hello)" = hello
check unix_socket_mode "socket mode $(stat -c %a "$SOCK")" test "$(stat -c %a "$SOCK")" = 600
check unix_dir_mode "dir mode $(stat -c %a "$TMP/run/nested")" \
	test "$(stat -c %a "$TMP/run/nested")" = 700
spawn unix2 "$SERVE" --unix "$SOCK"
wait $SPAWNED_PID
rc=$?
check unix_live_socket_kept "second server on a live socket: rc=$rc $(cat "$TMP/unix2.log")" \
	grep -q "Address already in use" "$TMP/unix2.log"
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null
check unix_removed_on_stop "socket still there after SIGTERM" test ! -e "$SOCK"

# A stale socket (its owner died without unlinking) is replaced; a regular file is not.
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$SOCK"
serve stale --unix "$SOCK"
check unix_stale_replaced "stale socket blocked the server" \
	test "$(curl -s --unix-socket "$SOCK" http://x/hello)" = hello
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null
echo keep >"$SOCK"
spawn file "$SERVE" --unix "$SOCK"
wait $SPAWNED_PID
check unix_regular_file_kept "a regular file at the socket path was replaced" \
	test "$(cat "$SOCK")" = keep
exit 0
