#!/usr/bin/env bash
# UDP services end to end: a real meshd (static config, `"protocol": "udp"`), two dnsmasq
# backends behind a VIP, `dig @VIP` from the test cgroup balanced over both and answered from the
# VIP; the `dns` health check ejects a killed dnsmasq (logged; every dig then reaches the other)
# and takes it back when it returns; a `udp` check with its payload against an echo backend;
# datagrams and bytes per service in /metrics; a tcp check on a udp service refused by validate.
# Ports 21501-21509, VIP 127.77.5.50-51, metrics 127.0.0.1:21995.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$(command -v dnsmasq)" "$(command -v dig)"

VIP=127.77.5.50 VIP_ECHO=127.77.5.51 METRICS=127.0.0.1:21995
CG=$(make_cgroup udp)
defer "kill_cgroup '$CG'; rmdir '$CG'"
LOG=$TMP/meshd.log
CONF=$TMP/meshd.json

dnsmasq_on() { # dnsmasq_on N: dnsmasq N on 127.0.0.1:2150N answering svc.test with 198.18.0.N
	spawn "dnsmasq$1" dnsmasq --keep-in-foreground --conf-file=/dev/null --port="2150$1" \
		--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --pid-file= \
		--address="/svc.test/198.18.0.$1"
	eval "DNS$1=$SPAWNED_PID"
}
dnsmasq_on 1
dnsmasq_on 2
spawn echo python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 21503))
while True:
    d, a = s.recvfrom(2048)
    if d == b"are-you-there":
        s.sendto(b"yes", a)'

cat >"$CONF" <<JSON
{
  "version": 1,
  "cgroup": "$CG",
  "bpf_pin_path": "$PIN",
  "state_dir": "$TMP/state",
  "log": { "level": "info" },
  "admin": { "socket": "$TMP/admin.sock" },
  "telemetry": { "metrics_listen": "$METRICS" },
  "load_balancer": { "algorithm": "round_robin", "panic_threshold": 0 },
  "discovery": { "backend": "static" },
  "services": [
    { "name": "dns", "vip": "$VIP", "port": 53, "protocol": "udp",
      "load_balancer": { "health_check": { "type": "dns", "dns_name": "svc.test",
        "interval": "200ms", "timeout": "150ms", "unhealthy_threshold": 2, "healthy_threshold": 2 } },
      "backends": [ { "address": "127.0.0.1", "port": 21501 }, { "address": "127.0.0.1", "port": 21502 } ] },
    { "name": "echo", "vip": "$VIP_ECHO", "port": 9, "protocol": "udp",
      "load_balancer": { "health_check": { "type": "udp", "udp_payload": "are-you-there",
        "interval": "200ms", "timeout": "150ms", "unhealthy_threshold": 2, "healthy_threshold": 2 } },
      "backends": [ { "address": "127.0.0.1", "port": 21503 }, { "address": "127.0.0.1", "port": 21504 } ] }
  ]
}
JSON
out=$("$MESHD" validate "$CONF" 2>&1)
check config_valid "$out" test "$out" = "configuration is valid"
jq '.services[0].load_balancer.health_check.type = "tcp"' "$CONF" >"$TMP/bad.json"
out=$("$MESHD" validate "$TMP/bad.json" 2>&1)
check tcp_check_on_udp_service_refused "$out" \
	grep -q 'services\[0\].load_balancer.health_check.type: a udp service cannot be checked with tcp' <<<"$out"

"$MESHD" --config "$CONF" >"$LOG" 2>&1 &
MESHD_PID=$!
defer "kill -TERM $MESHD_PID; wait $MESHD_PID"
defer "'$MESHD' --cleanup --config '$CONF'"
digs() { # digs N: N digs of svc.test through the VIP from the cgroup, one answer per line
	local i
	for ((i = 0; i < $1; i++)); do
		in_cgroup "$CG" dig @$VIP svc.test +short +tries=1 +time=2 2>&1 | head -1
	done
}
answered_by() { digs 4 | grep -qx "198.18.0.$1"; }
if ! wait_until 10 answered_by 1; then
	fail started "no dig through $VIP answered: $(tail -n 5 "$LOG")"
	exit 1
fi
out=$(digs 20)
check dig_balanced "answers: $(sort <<<"$out" | uniq -c | tr '\n' ' ')" \
	bash -c "[ \$(grep -cx 198.18.0.1 <<<'$out') -eq 10 ] && [ \$(grep -cx 198.18.0.2 <<<'$out') -eq 10 ]"

health_logged() {
	grep 'msg="backend health changed"' "$LOG" | grep "service=$1 " |
		grep "backend=127.0.0.1:$2 " | grep -q "healthy=$3"
}
check udp_check_without_reply_marks_unhealthy "echo's 21504 never answers: $(grep 21504 "$LOG" | tail -1)" \
	wait_until 5 health_logged echo 21504 false
check udp_check_with_reply_stays_healthy "$(grep 'service=echo' "$LOG" | grep 21503 | tail -1)" \
	bash -c "! grep 'service=echo ' '$LOG' | grep -q 'backend=127.0.0.1:21503 .*healthy=false'"

# --- a killed dnsmasq is ejected by the dns check, and comes back ----------------------------
kill "$DNS2"
check dns_check_ejects_killed_backend "$(grep 21502 "$LOG" | tail -2)" \
	wait_until 5 health_logged dns 21502 false
out=$(digs 10)
check all_digs_to_the_survivor "answers: $(sort <<<"$out" | uniq -c | tr '\n' ' ')" \
	bash -c "[ \$(grep -cx 198.18.0.1 <<<'$out') -eq 10 ]"
dnsmasq_on 2
check dns_check_takes_it_back "$(grep 21502 "$LOG" | tail -1)" \
	wait_until 5 health_logged dns 21502 true
out=$(digs 20)
check balanced_again "answers: $(sort <<<"$out" | uniq -c | tr '\n' ' ')" \
	bash -c "[ \$(grep -cx 198.18.0.2 <<<'$out') -eq 10 ]"

# --- metrics: datagrams and bytes of the udp service -------------------------------------------
metrics=$(curl -s "http://$METRICS/metrics")
sent=$(awk '/^meshd_udp_datagrams_total\{service="dns",direction="sent"\}/ { print $2 }' <<<"$metrics")
recv=$(awk '/^meshd_udp_datagrams_total\{service="dns",direction="received"\}/ { print $2 }' <<<"$metrics")
bytes=$(awk '/^meshd_bytes_total\{service="dns",direction="received"\}/ { print $2 }' <<<"$metrics")
check udp_metrics "sent=$sent received=$recv bytes_received=$bytes" \
	bash -c "[ '${sent:-0}' -ge 50 ] && [ '${recv:-0}' -ge 50 ] && [ '${bytes:-0}' -gt 0 ]"
exit $SUITE_FAILED
