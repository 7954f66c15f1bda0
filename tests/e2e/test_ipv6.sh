#!/usr/bin/env bash
# IPv6 for real: VIPs and backends with ordinary IPv6 addresses (2001:db8::/32, inside a network
# namespace this suite makes, with no route out). The datapath alone (dptool): round_robin
# exactly even and getpeername showing the VIP, least_request, a UDP service answered by dnsmasq
# from the VIP; then the real meshd in that namespace: TCP health checks of IPv6 backends eject a
# killed one. Ports 18101-18109 and 21521-21529 (meshd's metrics), VIPs 2001:db8::100-102.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

dp_setup v6
need_built "$MESHD" "$(command -v dnsmasq)" "$(command -v dig)"
NS=$TEST_ID-v6
ip netns add "$NS" || { fail setup "cannot make namespace $NS"; exit 1; }
defer "ip netns del '$NS'"
inns() { nsenter --net="/run/netns/$NS" "$@"; }
inns ip link set lo up
for a in a1 a2 a3 53; do inns ip addr add "2001:db8::$a/128" dev lo nodad; done
for i in 1 2 3; do
	spawn "v6b$i" nsenter --net="/run/netns/$NS" python3 "$ROOT/tests/e2e/servers/backend.py" \
		--name "v6b$i" --port "1810$i" --addr "2001:db8::a$i"
	eval "V6B${i}_PID=$SPAWNED_PID"
done
spawn v6dns nsenter --net="/run/netns/$NS" dnsmasq --keep-in-foreground --conf-file=/dev/null \
	--port=18153 --listen-address=2001:db8::53 --bind-interfaces --no-resolv --no-hosts \
	--pid-file= --address=/svc.test/2001:db8::beef
port6_open() { inns bash -c "(exec 3<>/dev/tcp/$1/$2) 2>/dev/null"; }
for i in 1 2 3; do wait_for 5 port6_open "2001:db8::a$i" "1810$i" || fail setup "backend $i"; done
# v6client ARGS...: mesh_client in the test cgroup and the namespace.
v6client() {
	nsenter --net="/run/netns/$NS" bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" \
		"$CLIENT" "$@"
}

dp set --name v6rr --vip '[2001:db8::100]:80' --alg round_robin \
	--backend '[2001:db8::a1]:18101' --backend '[2001:db8::a2]:18102' --backend '[2001:db8::a3]:18103'
out=$(v6client -n 300 2001:db8::100 80)
expect ipv6_round_robin_exactly_even "ok=$(kv ok <<<"$out") $(grep backend <<<"$out" | tr '\n' ' ') mismatch=$(kv peer_mismatch <<<"$out")" \
	'[ "$(kv ok <<<"$out")" -eq 300 ] && [ "$(kv backend.v6b1 <<<"$out")" -eq 100 ] && [ "$(kv backend.v6b3 <<<"$out")" -eq 100 ] && [ "$(kv peer_mismatch <<<"$out")" -eq 0 ]'
expect ipv6_no_scan "scan=$(counter scan)" '[ "$(counter scan)" -eq 0 ]'

dp set --name v6lr --vip '[2001:db8::101]:80' --alg least_request \
	--backend '[2001:db8::a1]:18101' --backend '[2001:db8::a2]:18102'
out=$(v6client -n 200 -t 2 2001:db8::101 80)
expect ipv6_least_request "ok=$(kv ok <<<"$out") b1=$(kv backend.v6b1 <<<"$out") b2=$(kv backend.v6b2 <<<"$out")" \
	'[ "$(kv ok <<<"$out")" -eq 200 ] && [ "$(kv backend.v6b1 <<<"$out")" -gt 50 ] && [ "$(kv backend.v6b2 <<<"$out")" -gt 50 ]'

dp set --name v6dns --vip '[2001:db8::102]:53' --proto udp --alg round_robin \
	--backend '[2001:db8::53]:18153'
out=$(nsenter --net="/run/netns/$NS" bash -c 'echo $$ > "$0/cgroup.procs" && exec dig @2001:db8::102 svc.test AAAA +short +tries=1 +time=2' "$CG" 2>&1)
expect ipv6_udp_answered_from_vip "dig: $out" '[ "$out" = 2001:db8::beef ]'

expect outside_cgroup_untouched "$(inns "$CLIENT" -n 3 --timeout 500 2001:db8::100 80 | tr '\n' ' ')" \
	'[ "$(inns "$CLIENT" -n 3 --timeout 500 2001:db8::100 80 | kv ok)" -eq 0 ]'

# --- meshd in the namespace: IPv6 VIP, IPv6 backends, TCP health checks ----------------------
"$DPTOOL" --pin "$PIN" cleanup
cat >"$TMP/meshd.json" <<JSON
{
  "version": 1,
  "cgroup": "$CG",
  "bpf_pin_path": "$PIN",
  "state_dir": "$TMP/state",
  "admin": { "socket": "$TMP/admin.sock" },
  "telemetry": { "metrics_listen": "[::1]:21521" },
  "load_balancer": { "algorithm": "round_robin", "panic_threshold": 0,
    "health_check": { "type": "tcp", "interval": "200ms", "timeout": "150ms",
                      "unhealthy_threshold": 2, "healthy_threshold": 2 } },
  "discovery": { "backend": "static" },
  "services": [ { "name": "web6", "vip": "2001:db8::100", "port": 80, "backends": [
      { "address": "2001:db8::a1", "port": 18101 }, { "address": "2001:db8::a2", "port": 18102 },
      { "address": "2001:db8::a3", "port": 18103 } ] } ]
}
JSON
nsenter --net="/run/netns/$NS" "$MESHD" --config "$TMP/meshd.json" >"$TMP/meshd.log" 2>&1 &
MESHD_PID=$!
defer "kill -TERM $MESHD_PID; wait $MESHD_PID"
defer "'$MESHD' --cleanup --config '$TMP/meshd.json'"
served() { [ "$(v6client -n 3 --timeout 500 2001:db8::100 80 | kv ok)" -eq 3 ]; }
wait_until 10 served || fail meshd_started "$(tail -3 "$TMP/meshd.log")"
kill "$V6B2_PID"
health_down() { grep 'msg="backend health changed"' "$TMP/meshd.log" | grep -q 'backend=\[2001:db8::a2\]:18102 healthy=false'; }
check meshd_ipv6_health_check_ejects "$(grep 'health changed' "$TMP/meshd.log" | tail -1)" wait_until 5 health_down
out=$(v6client -n 40 2001:db8::100 80)
expect meshd_ipv6_balances_over_the_rest "ok=$(kv ok <<<"$out") b1=$(kv backend.v6b1 <<<"$out") b3=$(kv backend.v6b3 <<<"$out") mismatch=$(kv peer_mismatch <<<"$out")" \
	'[ "$(kv ok <<<"$out")" -eq 40 ] && [ "$(kv backend.v6b1 <<<"$out")" -eq 20 ] && [ "$(kv peer_mismatch <<<"$out")" -eq 0 ]'
metrics=$(inns curl -s 'http://[::1]:21521/metrics' | grep -c 'backend="\[2001:db8::a1\]:18101"')
check meshd_ipv6_metrics_labels "series with the IPv6 backend label: $metrics" test "$metrics" -gt 0
exit $SUITE_FAILED
