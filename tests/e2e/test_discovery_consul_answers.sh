#!/usr/bin/env bash
# Consul answers that used to hurt (issue 8, item 11 d/e), with the real meshd and datapath:
#  1. A 200 answer whose instances are all unusable (port 0, port as a string, a host name that
#     does not resolve) keeps the last good set and warns (not at debug); the VIP keeps serving.
#  2. Consul fixed: the good instance is served at once (the unusable answers did not spend the
#     rate limiter's tokens, which used to delay it up to 15 s).
#  3. A host name as Service.Address is resolved (the system resolver: localhost; then the
#     servers of discovery.dns: a name only the test's DNS responder knows) instead of dropped.
#  4. An answer of 100,000 instances (from a stub Consul) is parsed with bounded memory: meshd's
#     peak RSS stays far below the answer's size, and the set is capped to what the datapath
#     holds per service.
#  5. A state file with more backends for one service than the datapath holds and a FIFO at the
#     state path do not stop meshd from starting (item 11 c).
# Each part watches its own service (Consul's rate limiter is per service).
# Ports 22501-22506 (backends), 22530 (emulator), 22531 (stub), 22554 (DNS), 22596 (metrics);
# VIPs 127.77.6.60-62.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$TOOLS/mesh_client" "$TOOLS/dptool"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup consulans)
VIP=127.77.6.60
MPORT=22596
CPORT=22530
CURL=http://127.0.0.1:$CPORT
CONF=$TMP/meshd.json
for i in 1 4 5 6; do backend "g$i" "2250$i" || fail setup "backend g$i did not start"; done

backends() {
	"$TOOLS/dptool" --pin "$PIN" stats -o json 2>/dev/null |
		jq -r --arg s "${1:-api}" '[.[] | select(.kind == "backend" and .service == $s) |
			.addr] | sort | join(",")'
}
backends_are() { [ "$(backends "${2:-api}")" = "$1" ]; }
has_backend() { backends "$1" | tr ',' '\n' | grep -qx "$2"; } # SERVICE ADDR:PORT
consul_put() { curl -sf -X PUT "$CURL$1" ${2:+-d "$2"} >/dev/null; }
register() { # ID ADDRESS PORT [SERVICE]
	consul_put /v1/agent/service/register "{\"ID\":\"$1\",\"Name\":\"${4:-api}\",
		\"Address\":\"$2\",\"Port\":$3,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}

consul_emulator $CPORT || {
	fail setup "Consul emulator did not start"
	exit 1
}
register g1 127.0.0.1 22501
# Unusable instances beside g1 from the start (one answer, one rate-limiter token).
register bad-port0 127.0.0.1 0
register bad-address "not an address" 22503
register bad-host no-such-host.invalid 22502
register h5 localhost 22505 hostsvc
register h6 web6.mesh.test 22506 dnssvc
consul_conf=".discovery = { backend: \"consul\", consul: { address: \"$CURL\",
	services: [\"api\", \"hostsvc\", \"dnssvc\"], wait: \"30s\" } } |
	.services[0].backends = [] |
	.services += [{ name: \"hostsvc\", vip: \"127.77.6.61\", port: 80 },
		{ name: \"dnssvc\", vip: \"127.77.6.62\", port: 80 }]"
daemon_config "$CONF" "22501" "$consul_conf"
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}
check first_answer_served "backends: $(backends)" wait_for 10 backends_are "127.0.0.1:22501"

# --- 1. nothing usable: keep the last good set, warn ---------------------------------------------
check usable_beside_unusable_warned "$(grep -m1 'instances skipped' "$TMP/meshd1.log")" \
	grep -q 'level=warn.*msg="consul instances skipped" service=api skipped=3 usable=1' "$TMP/meshd1.log"
consul_put /v1/agent/service/deregister/g1
check unusable_answer_warned "$(grep -m1 'none is usable' "$TMP/meshd1.log")" \
	wait_for 10 grep -q 'level=warn.*msg="consul lists instances but none is usable; keeping the last backends" service=api listed=3' "$TMP/meshd1.log"
check unusable_answer_keeps_last_set "backends: $(backends)" backends_are "127.0.0.1:22501"
traffic t1 30
check unusable_answer_vip_still_serves "served by '$(served_by t1)' fail=$(failed t1)" \
	test "$(served_by t1)" = "g1" -a "$(failed t1)" = 0

# --- 2. fixed: applied at once -------------------------------------------------------------------
t0=$(date +%s%N)
register g4 127.0.0.1 22504
if wait_for 10 backends_are "127.0.0.1:22504"; then
	ms=$((($(date +%s%N) - t0) / 1000000))
	check recovery_is_prompt "took ${ms} ms (the rate limiter used to hold it up to 15 s)" \
		test "$ms" -lt 3000
else
	fail recovery_is_prompt "backends: $(backends)"
fi
check recovery_logged "no recovery line" grep -q 'msg="consul answer usable again" service=api' \
	"$TMP/meshd1.log"

# --- 3. host names are resolved --------------------------------------------------------------------
check hostname_resolved_by_system_resolver "backends: $(backends hostsvc)" \
	wait_for 10 has_backend hostsvc 127.0.0.1:22505
traffic t2 20 127.77.6.61
check hostname_backend_serves "served by '$(served_by t2)' fail=$(failed t2)" \
	test "$(served_by t2)" = "g5" -a "$(failed t2)" = 0
# A name only the test's DNS responder knows: unusable with the system resolver, served once a
# reload names that server in discovery.dns.servers.
check hostname_unknown_to_system "backends: $(backends dnssvc)" \
	wait_for 10 grep -q 'none is usable.*service=dnssvc' "$TMP/meshd1.log"
jq -n '{ udp_max_answers: 100, srv: {},
	hosts: { "web6.mesh.test": { mode: "ok", ttl: 5, a: ["127.0.0.1"] } } }' >"$TMP/zone.json"
spawn responder python3 "$ROOT/tests/e2e/dns_responder.py" --addr 127.0.0.1 --port 22554 \
	--zone "$TMP/zone.json" --log "$TMP/queries.log"
wait_for 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/22554' 2>/dev/null || fail setup "responder"
daemon_config "$CONF" "22501" "$consul_conf | .discovery.dns = { servers: [\"127.0.0.1:22554\"] }"
kill -HUP "$MESHD_PID"
check hostname_resolved_by_configured_servers "backends: $(backends dnssvc)" \
	wait_for 10 backends_are "127.0.0.1:22506" dnssvc
check hostname_asked_the_configured_server "no query: $(tail -n 2 "$TMP/queries.log")" \
	grep -q 'web6.mesh.test A ok 1' "$TMP/queries.log"

# --- switching away from consul: registrations go, discovered sets give way -----------------------
listed() { curl -s "$CURL/v1/agent/services" | jq -e 'has("local-1")' >/dev/null; }
daemon_config "$CONF" "22501" "$consul_conf | .discovery.dns = { servers: [\"127.0.0.1:22554\"] } |
	.discovery.consul.register = [{ name: \"local\", id: \"local-1\", address: \"127.0.0.1:22501\" }]"
kill -HUP "$MESHD_PID"
check registration_made "$(curl -s "$CURL/v1/agent/services" | jq -c keys)" wait_for 10 listed
daemon_config "$CONF" "22501" '.discovery = { backend: "static" } |
	.services += [{ name: "hostsvc", vip: "127.77.6.61", port: 80 },
		{ name: "dnssvc", vip: "127.77.6.62", port: 80 }] |
	.services[].backends = [{ address: "127.0.0.1", port: 22501 }]'
kill -HUP "$MESHD_PID"
check switch_to_static_deregisters "$(curl -s "$CURL/v1/agent/services" | jq -c keys)" \
	wait_for 10 bash -c "! curl -s '$CURL/v1/agent/services' | jq -e 'has(\"local-1\")' >/dev/null"
check switch_to_static_leaves_no_discovered_backends "hostsvc: $(backends hostsvc) dnssvc: $(backends dnssvc)" \
	test "$(backends hostsvc)" = "127.0.0.1:22501" -a "$(backends dnssvc)" = "127.0.0.1:22501"
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0

# --- 4. 100,000 instances, bounded memory ----------------------------------------------------------
cat >"$TMP/stub.py" <<'EOF'
# A stub Consul: /v1/health/service/<name> answers 100,000 passing instances (compact entries),
# each request after the first blocks for a while, as a blocking query with nothing new would.
import http.server, sys, time
N, port = 100000, int(sys.argv[1])
ENTRY = ('{"Node":{"Node":"n%d","Address":"10.9.0.1","Datacenter":"dc1"},"Service":{"ID":"big-%d",'
         '"Service":"big","Tags":["v1","primary"],"Address":"10.%d.%d.%d","Port":%d,'
         '"Weights":{"Passing":1,"Warning":1},"Meta":{"version":"1"}},"Checks":[]}')
BODY = ("[" + ",".join(ENTRY % (i, i, 10 + i // 65536, (i // 256) % 256, i % 256,
                               1 + i % 60000) for i in range(N)) + "]").encode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if "index=" in self.path:
            time.sleep(30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Consul-Index", "42")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
spawn stub python3 "$TMP/stub.py" 22531
wait_for 20 port_open 127.0.0.1 22531 || fail setup "stub Consul did not start"
body_mb=$(curl -s "http://127.0.0.1:22531/v1/health/service/big" | wc -c | awk '{printf "%d", $1 / 1048576}')
daemon_config "$CONF" "22501" ".discovery = { backend: \"consul\", consul: {
	address: \"http://127.0.0.1:22531\", services: [\"api\"], wait: \"30s\" } } |
	.services[0].backends = []"
start_meshd meshd2 "$CONF" || fail start2 "meshd did not start: $(tail -n 5 "$TMP/meshd2.log")"
check large_answer_capped "$(grep -m1 'more backends than' "$TMP/meshd2.log")" \
	wait_for 30 grep -q "msg=\"more backends than the datapath holds, using the first ones\" service=api source=consul backends=100000" "$TMP/meshd2.log"
check large_answer_served "backends: $(backends | tr ',' '\n' | wc -l)" \
	wait_for 10 eval 'test "$(backends | tr , "\n" | wc -l)" -ge 64'
hwm_mb=$(awk '/^VmHWM/ {printf "%d", $2 / 1024}' "/proc/$MESHD_PID/status")
if [ -n "${ASAN_OPTIONS:-}" ]; then
	skip large_answer_bounded_memory "peak RSS is not meaningful under ASan (${hwm_mb} MB)"
else
	check large_answer_bounded_memory "peak RSS ${hwm_mb} MB for a ${body_mb} MB answer (was 228 MB)" \
		test "$hwm_mb" -lt 64 -a "$body_mb" -ge 20
fi
stop_meshd "$MESHD_PID"

# --- 5. state files that used to stop a start ------------------------------------------------------
"$MESHD" --cleanup --config "$CONF" >/dev/null 2>&1
CAP=$(awk '/#define MESH_MAX_BACKENDS_PER_SVC/ {print $3}' "$ROOT/include/mesh_abi.h")
{
	echo "meshd-discovery-state 1"
	echo "service api 7 $((CAP + 36))"
	for i in $(seq 1 $((CAP + 36))); do echo "backend 127.0.0.2 $((20000 + i)) 1"; done
	echo "end 1"
} >"$TMP/state/discovery.state"
daemon_config "$CONF" "22501" ".discovery = { backend: \"consul\", consul: {
	address: \"http://127.0.0.1:1\", services: [\"api\"] } } | .services[0].backends = []"
if start_meshd meshd3 "$CONF"; then
	check state_over_the_cap_starts "backends: $(backends | tr ',' '\n' | wc -l) (cap $CAP)" \
		test "$(backends | tr ',' '\n' | wc -l)" = "$CAP"
	stop_meshd "$MESHD_PID"
else
	fail state_over_the_cap_starts "$(grep -m2 -e error -e failed "$TMP/meshd3.log")"
fi
"$MESHD" --cleanup --config "$CONF" >/dev/null 2>&1
rm -f "$TMP/state/discovery.state"
mkfifo "$TMP/state/discovery.state"
if start_meshd meshd4 "$CONF"; then
	check fifo_at_state_path_does_not_hang "$(grep -m1 'state file' "$TMP/meshd4.log")" \
		grep -q 'msg="ignoring discovery state file".*not a regular file' "$TMP/meshd4.log"
	stop_meshd "$MESHD_PID"
else
	fail fifo_at_state_path_does_not_hang "meshd did not start in 10 s: $(tail -n 3 "$TMP/meshd4.log")"
fi
exit 0
