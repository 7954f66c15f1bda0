#!/usr/bin/env bash
# The real Consul client (user/consul, run by tests/tools/consul_watch) against the emulator:
# first read, blocking-query wake-up on a registration, ?passing, ACL token from a file, errors
# kept visible and recovery after Consul comes back. No BPF, no root needed.
. "$(dirname "$0")/lib.sh"

PORT=22520
EMU=$ROOT/tests/e2e/consul_emulator.py
WATCH=$TOOLS/consul_watch
URL=http://127.0.0.1:$PORT
TOKEN=root-token-$$

need_built "$WATCH"

start_emulator() {
	spawn emulator python3 "$EMU" --port $PORT --acl-token "$TOKEN" --data-file "$TMP/catalog.json" \
		--log-file "$TMP/requests.log" "$@"
	EMU_PID=$SPAWNED_PID
	wait_for 5 port_open 127.0.0.1 $PORT
}
consul_put() { curl -sf -X PUT -H "X-Consul-Token: $TOKEN" "$URL$1" ${2:+-d "$2"} >/dev/null; }
register() { # ID PORT [STATUS]
	consul_put /v1/agent/service/register \
		"{\"ID\":\"$1\",\"Name\":\"web\",\"Address\":\"127.0.0.1\",\"Port\":$2,\"Check\":{\"TTL\":\"60s\",\"Status\":\"${3:-passing}\"}}"
}
# last_backends FILE: the backends= field of the last successful update line.
last_backends() { grep ' err=0 ' "$1" | tail -n 1 | sed 's/.*backends=//'; }
# backends_are WANT: the watcher's latest backend set is WANT (re-read on every call).
backends_are() { test "$(last_backends "$WATCH_OUT")" = "$1"; }
# count_lines FILE PATTERN
not() { ! "$@"; }
count_lines() { grep -c -- "$2" "$1" 2>/dev/null || true; }

printf '%s\n' "$TOKEN" >"$TMP/token"
chmod 600 "$TMP/token"
if ! start_emulator; then
	fail start "emulator did not start"
	exit 1
fi
register web-1 22101

# --rate 1s: the functional cases below change Consul faster than the default 15 s refill.
spawn watch "$WATCH" --address "$URL" --token-file "$TMP/token" --wait 30s --seconds 60 --rate 1s web
WATCH_OUT=$TMP/watch.log

# 1. The first (non-blocking) read delivers the current backends.
check first_read_delivers_backends "got '$(last_backends "$WATCH_OUT")'" \
	wait_for 5 backends_are "127.0.0.1:22101/1"

# 2. A registration wakes the blocking query (wait is 30 s: only a wake-up can be this fast).
sleep 0.5
t0=$(date +%s%N)
register web-2 22102
if wait_for 3 backends_are "127.0.0.1:22101/1,127.0.0.1:22102/1"; then
	pass blocking_query_wakes_on_registration
else
	fail blocking_query_wakes_on_registration "got '$(last_backends "$WATCH_OUT")'"
fi
ms=$((($(date +%s%N) - t0) / 1000000))
check change_seen_within_two_seconds "took ${ms} ms" test "$ms" -lt 2000

# 3. A failing check removes the instance (?passing); deregistration too.
sleep 1.1 # let the rate limiter's bucket refill
consul_put /v1/agent/check/fail/service:web-2
check failing_check_drops_backend "got '$(last_backends "$WATCH_OUT")'" \
	wait_for 3 backends_are "127.0.0.1:22101/1"

# 4. The token from the file is sent: every request the emulator saw carried the right one.
check token_file_sent_as_header "$(grep -v 'token=ok' "$TMP/requests.log" | head -n 2)" \
	test "$(count_lines "$TMP/requests.log" 'token=ok')" -gt 0 -a \
	"$(grep -vc 'token=ok' "$TMP/requests.log")" -eq 0
if grep -rq "$TOKEN" "$TMP/watch.log"; then
	fail token_never_logged "token found in the client's output"
else
	pass token_never_logged
fi

# 5. Consul down: errors are reported, retries back off (not a busy loop).
kill_wait "$EMU_PID"
errs_before=$(count_lines "$WATCH_OUT" ' err=-')
sleep 4
errs=$(($(count_lines "$WATCH_OUT" ' err=-') - errs_before))
check outage_reports_errors "no error updates" test "$errs" -ge 1
check outage_retries_back_off "$errs errors in 4 s" test "$errs" -le 6

# 6. Consul back (same data, like a restarted server): the client recovers by itself.
start_emulator
register web-3 22103
check recovers_after_outage "got '$(last_backends "$WATCH_OUT")'" \
	wait_for 12 backends_are "127.0.0.1:22101/1,127.0.0.1:22103/1"

# 7. A wrong token: 403 ACL not found is an error update, never an empty backend set.
printf 'wrong-token\n' >"$TMP/bad-token"
"$WATCH" --address "$URL" --token-file "$TMP/bad-token" --seconds 2 web >"$TMP/bad.log" 2>&1
check wrong_token_is_an_error "$(head -n 2 "$TMP/bad.log")" \
	grep -q 'err=-71 status=403' "$TMP/bad.log"
check wrong_token_error_body_logged "$(grep -m1 level=warn "$TMP/bad.log")" \
	grep -q 'error="ACL not found"' "$TMP/bad.log"
check wrong_token_never_yields_backends "$(grep ' err=0 ' "$TMP/bad.log" | head -n 1)" \
	test "$(count_lines "$TMP/bad.log" ' err=0 ')" -eq 0

# 8. Another datacenter: the emulator has no path there (500), reported as an error.
"$WATCH" --address "$URL" --token-file "$TMP/token" --dc dc9 --seconds 1 web >"$TMP/dc.log" 2>&1
check unknown_datacenter_is_an_error "$(head -n 2 "$TMP/dc.log")" \
	grep -q 'status=500' "$TMP/dc.log"
# 9. Registration: meshd-style agent write with a TCP check on the backend; Consul's check
#    passes, so the instance shows up in ?passing for watchers. Then deregistration.
backend r1 22104
"$WATCH" --address "$URL" --token-file "$TMP/token" --seconds 3 \
	--register web-r1:web:127.0.0.1:22104 >"$TMP/reg.log" 2>&1
check registration_written "$(grep -m1 'agent write' "$TMP/reg.log")" \
	grep -q 'msg="agent write done" op=register id=web-r1' "$TMP/reg.log"
passing_has_r1() {
	curl -sf -H "X-Consul-Token: $TOKEN" "$URL/v1/health/service/web?passing" |
		grep -q '"ID":"web-r1"'
}
check registered_instance_passes_tcp_check "not in ?passing" wait_for 5 passing_has_r1
tcp_check_registered() {
	curl -sf -H "X-Consul-Token: $TOKEN" "$URL/v1/agent/checks" |
		jq -e '."service:web-r1" | .Type == "tcp" and .ServiceID == "web-r1"' >/dev/null
}
check registration_adds_tcp_check "$(curl -s -H "X-Consul-Token: $TOKEN" "$URL/v1/agent/checks")" \
	tcp_check_registered
"$WATCH" --address "$URL" --token-file "$TMP/token" --seconds 1 --deregister web-r1 \
	--deregister never-registered >"$TMP/dereg.log" 2>&1
check deregistration_written "$(grep -m2 'agent write' "$TMP/dereg.log")" \
	test "$(grep -c 'msg="agent write done" op=deregister' "$TMP/dereg.log")" = 2
check deregistered_instance_gone "still listed" not passing_has_r1
# 10. Rate limit with the default bucket (burst 2, one token per 15 s): churn is delivered at
#     once for two queries, then paced; the last change still arrives, within the refill time.
spawn churn "$WATCH" --address "$URL" --token-file "$TMP/token" --wait 30s --seconds 40 web
CHURN=$TMP/churn.log
wait_for 5 grep -q ' err=0 ' "$CHURN"
for i in 5 6 7; do
	register "web-$i" "2210$i"
	sleep 0.3
done
sleep 2
n=$(count_lines "$CHURN" ' err=0 ')
check rate_limit_burst_of_two "$n successful queries within 3 s of churn (want 3)" test "$n" = 3
check rate_limit_paces_not_drops "last change not seen within 16 s: $(tail -n 1 "$CHURN")" \
	wait_for 16 grep -q '127.0.0.1:22107/1' "$CHURN"
exit $SUITE_FAILED
