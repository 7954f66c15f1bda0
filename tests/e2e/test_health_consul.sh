#!/usr/bin/env bash
# Health checks follow Consul discovery: a real meshd with Consul discovery (the emulator) checks
# the backends Consul reports (none are in the config file), starts checking a newly registered
# backend within a couple of seconds and keeps it out while its /health fails, and stops checking
# a deregistered one. Ports 21301-21303 (backends), 21530 (emulator), 21597 (metrics); VIP
# 127.77.5.20.
. "$(dirname "$0")/lib.sh"
need_root
EMU=$ROOT/tests/e2e/consul_emulator.py
need_built "$MESHD" "$EMU"

VIP=127.77.5.20 CPORT=21530
CG=$(make_cgroup hconsul)
defer "kill_cgroup '$CG'; rmdir '$CG'" # make_cgroup ran in a subshell: its defer was lost
LOG=$TMP/meshd.log
CONF=$TMP/meshd.json

cat >"$CONF" <<EOF
{
  "version": 1,
  "cgroup": "$CG",
  "bpf_pin_path": "$PIN",
  "state_dir": "$TMP/state",
  "log": { "level": "debug" },
  "admin": { "socket": "$TMP/admin.sock" },
  "telemetry": { "metrics_listen": "127.0.0.1:21597" },
  "load_balancer": {
    "algorithm": "round_robin",
    "panic_threshold": 0.2,
    "health_check": { "type": "http", "interval": "200ms", "timeout": "150ms",
                      "unhealthy_threshold": 2, "healthy_threshold": 2, "http_path": "/health" }
  },
  "discovery": { "backend": "consul",
                 "consul": { "address": "http://127.0.0.1:$CPORT", "services": ["api"], "wait": "30s" } },
  "services": [ { "name": "api", "vip": "$VIP", "port": 80, "backends": [] } ]
}
EOF

seen() { through_vip "$VIP" 9 | grep -x "$1" >/dev/null; }
logged() { grep 'msg="backend health changed"' "$LOG" | grep "backend=127.0.0.1:$1 " | grep -q "healthy=$2"; }
register() { # ID PORT
	curl -sf -X PUT "http://127.0.0.1:$CPORT/v1/agent/service/register" -d "{\"ID\":\"$1\",
		\"Name\":\"api\",\"Address\":\"127.0.0.1\",\"Port\":$2}" >/dev/null
}
deregister() { curl -sf -X PUT "http://127.0.0.1:$CPORT/v1/agent/service/deregister/$1" >/dev/null; }

for p in 21301 21302 21303; do
	echo ok >"$TMP/health-$p"
	backend "h$p" $p --health-file "$TMP/health-$p"
done
echo fail >"$TMP/health-21303"
consul_emulator $CPORT || {
	fail setup "Consul emulator did not start"
	exit 1
}
register h1 21301
register h2 21302

bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$MESHD" --config "$CONF" >"$LOG" 2>&1 &
MESHD_PID=$!
defer "kill -TERM $MESHD_PID; wait $MESHD_PID; '$MESHD' --cleanup --config '$CONF'"
# Loading the datapath takes seconds on a busy host: wait for meshd to say it runs, then for
# traffic, rather than giving both one short bound.
running() { grep -q 'msg="meshd running"' "$LOG"; }
if ! wait_until 60 running || ! wait_until 10 seen h21302; then
	fail started "no connect through $VIP reached h21302: $(tail -n 5 "$LOG")"
	exit 1
fi

echo fail >"$TMP/health-21302"
check discovered_backend_is_checked "no transition for h21302: $(grep -c 'health check' "$LOG")" \
	wait_until 5 logged 21302 false
out=$(through_vip "$VIP" 8)
check unhealthy_discovered_backend_gets_no_connects "got: $(echo $out)" \
	bash -c "[ \"\$(echo '$out' | sort -u)\" = h21301 ]"

register h3 21303
check new_registration_gets_checks "no transition for h21303" wait_until 5 logged 21303 false
out=$(through_vip "$VIP" 8)
check failing_new_backend_kept_out "got: $(echo $out)" \
	bash -c "[ \"\$(echo '$out' | sort -u)\" = h21301 ]"

deregister h2
sleep 1.5 # one resync with discovery
n1=$(grep -c "health check.*backend=127.0.0.1:21302 " "$LOG")
sleep 1
n2=$(grep -c "health check.*backend=127.0.0.1:21302 " "$LOG")
check deregistered_backend_not_checked "still checked: $n1 -> $n2 check lines" \
	test "$n1" -gt 0 -a "$n1" -eq "$n2"

echo ok >"$TMP/health-21303"
check registered_backend_recovers "h21303 never chosen after /health passed" wait_until 5 seen h21303
check meshd_still_running "meshd exited: $(tail -n 3 "$LOG")" kill -0 $MESHD_PID
exit $SUITE_FAILED
