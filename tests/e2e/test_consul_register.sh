#!/usr/bin/env bash
# Consul registration with the real meshd and the Consul emulator: discovery.consul.register
# entries land in the agent with their tags, meta, Connect-native flag and a tcp/http/ttl check
# (the agent runs the tcp and http ones); one the agent refuses (400) does not hold the others
# back and is reported in `meshctl status` and the metrics; the TTL check follows meshd's own
# health check of the registered address; an agent that lost its services (restart without
# state) gets them registered again; a stop leaves them by default and removes them with
# deregister_on_stop.
# Ports 22601-22602 (backends), 22630 (emulator), 22697 (metrics); VIP 127.77.6.70.
. "$(dirname "$0")/lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"
. "$(dirname "$0")/daemon_lib.sh"

CG=$(make_cgroup consulreg)
VIP=127.77.6.70
MPORT=22697
CPORT=22630
CURL=http://127.0.0.1:$CPORT
CONF=$TMP/meshd.json
SOCK=$TMP/admin.sock

start_consul() { consul_emulator $CPORT --log-file "$TMP/consul-requests.log"; }
services() { curl -s "$CURL/v1/agent/services"; }
checks() { curl -s "$CURL/v1/agent/checks"; }
svc() { services | jq -c "$1"; }
check_status() { checks | jq -r --arg c "$1" '.[$c].Status // "absent"'; }
has_services() { # ID...: all listed by the agent
	local id
	for id in "$@"; do services | jq -e --arg i "$id" 'has($i)' >/dev/null || return 1; done
}
metric() { # NAME LABELS: the value of one sample
	curl -s --max-time 2 "http://127.0.0.1:$MPORT/metrics" |
		awk -v m="$1{$2}" '$1 == m {print $2}'
}
ctl() { "$MESHCTL" --socket "$SOCK" "$@"; }
health_file() { echo "$2" >"$TMP/health-$1"; }
# Conditions re-evaluated on each try of wait_for:
status_is() { test "$(check_status "$1")" = "$2"; }
metric_is() { test "$(metric "$1" "$2")" "$3" "$4"; }

health_file a ok
health_file b ok
backend a 22601 --health-file "$TMP/health-a" || fail setup "backend a did not start"
backend b 22602 --health-file "$TMP/health-b" || fail setup "backend b did not start"
start_consul || {
	fail setup "Consul emulator did not start"
	exit 1
}

# `api` is served from the config (its health checks are meshd's, http /health every 200 ms);
# Consul only takes the registrations. bad-1 has an address the agent refuses.
registrations='[
	{ name: "api", id: "api-1", address: "127.0.0.1:22601", tags: ["mesh", "v1"],
	  meta: ["version=v1", "team_x=blue"], check: { type: "ttl", interval: "3s" } },
	{ name: "web", id: "web-1", address: "127.0.0.1:22602",
	  check: { type: "http", interval: "1s", timeout: "500ms", http_path: "/health" } },
	{ name: "bad", id: "bad-1", address: "0.0.0.0:22603" },
	{ name: "tcp", id: "tcp-1", address: "127.0.0.1:22602" } ]'
write_config() { # DEREGISTER_ON_STOP
	daemon_config "$CONF" "22601" ".discovery = { backend: \"consul\", consul: {
		address: \"$CURL\", services: [], wait: \"30s\", resync: \"1s\",
		deregister_on_stop: $1, register: $registrations } } |
	.load_balancer.health_check = { type: \"http\", interval: \"200ms\", timeout: \"150ms\",
		unhealthy_threshold: 1, healthy_threshold: 1, http_path: \"/health\" }"
}
write_config false
start_meshd meshd1 "$CONF" || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd1.log")"
	exit 1
}

# 1. The good ones are registered, as Consul stores them.
check good_registrations_made "agent has $(svc keys)" wait_for 10 has_services api-1 web-1 tcp-1
check tags_and_meta_registered "$(svc '."api-1" | {Tags, Meta}')" \
	test "$(svc '."api-1" | [.Tags, .Meta]')" = \
	'[["mesh","v1"],{"version":"v1","team_x":"blue","managed-by":"meshd"}]'
check connect_native "$(svc '."web-1".Connect')" test "$(svc '."web-1".Connect.Native')" = true
check check_types "$(checks | jq -c 'map_values({Type, Interval})')" test \
	"$(checks | jq -c '[."service:api-1".Type, ."service:web-1".Type, ."service:web-1".Interval, ."service:tcp-1".Type]')" = \
	'["ttl","http","1s","tcp"]'
check agent_http_check_passes "web-1: $(check_status service:web-1)" \
	wait_for 10 status_is service:web-1 passing

# 2. The refused one is reported, and retried on its own.
check refused_registration_absent "agent has $(svc keys)" \
	test "$(svc 'has("bad-1")')" = false
ctl status >"$TMP/status.txt" 2>&1
check refused_registration_in_status "$(grep registration "$TMP/status.txt")" \
	grep -q 'registration bad-1 .*failing.*400: Invalid service address' "$TMP/status.txt"
check good_registration_in_status "$(grep registration "$TMP/status.txt")" \
	grep -q 'registration api-1 .*registered' "$TMP/status.txt"
check refused_registration_metric "up=$(metric meshd_consul_registration_up 'id="bad-1",service="bad"')" \
	test "$(metric meshd_consul_registration_up 'id="bad-1",service="bad"')" = 0
retries() { grep -c 'PUT /v1/agent/service/register status=400' "$TMP/consul-requests.log"; }
retried() { test "$(retries)" -ge 2; }
check refused_registration_retried "400s: $(retries)" wait_for 10 retried

# 3. The TTL check follows meshd's health check of 127.0.0.1:22601 in service api.
check ttl_passes "api-1: $(check_status service:api-1)" \
	wait_for 10 status_is service:api-1 passing
health_file a fail
check ttl_fails_with_meshd_health "api-1: $(check_status service:api-1)" \
	wait_for 10 status_is service:api-1 critical
check ttl_metric_critical "$(metric meshd_consul_ttl_check_passing 'id="api-1",service="api"')" \
	wait_for 5 metric_is meshd_consul_ttl_check_passing 'id="api-1",service="api"' = 0
health_file a ok
check ttl_passes_again "api-1: $(check_status service:api-1)" \
	wait_for 10 status_is service:api-1 passing
# Kept passing: reports come every third of the TTL; after 4 more (over a TTL's time) it has
# not expired.
passes() { grep -c 'PUT /v1/agent/check/pass/service:api-1 status=200' "$TMP/consul-requests.log"; }
more_passes() { test "$(passes)" -ge $((P0 + 4)); }
P0=$(passes)
check ttl_reported_periodically "passes: $P0 -> $(passes)" wait_for 10 more_passes
check ttl_kept_alive "api-1: $(check_status service:api-1)" \
	test "$(check_status service:api-1)" = passing

# 4. The agent restarts without its state: everything is registered again.
kill_wait "$CONSUL_PID"
start_consul || fail agent_restart "emulator did not restart"
check reregistered_after_agent_restart "agent has $(svc keys)" \
	wait_for 10 has_services api-1 web-1 tcp-1
check reregistered_ttl_passes "api-1: $(check_status service:api-1)" \
	wait_for 10 status_is service:api-1 passing
check lost_counted "lost=$(metric meshd_consul_registration_lost_total 'id="web-1",service="web"')" \
	wait_for 5 metric_is meshd_consul_registration_lost_total 'id="web-1",service="web"' -ge 1
check bad_still_failing "$(ctl status | grep bad-1)" \
	bash -c "'$MESHCTL' --socket '$SOCK' status | grep -q 'registration bad-1 .*failing'"

# 5. A stop leaves the registrations by default (a restart finds them) ...
stop_meshd "$MESHD_PID"
check clean_exit "exit status $STOP_STATUS" test "$STOP_STATUS" = 0
check stop_keeps_registrations "agent has $(svc keys)" has_services api-1 web-1 tcp-1
# ... and removes them with deregister_on_stop.
write_config true
start_meshd meshd2 "$CONF" || fail start2 "meshd did not start: $(tail -n 5 "$TMP/meshd2.log")"
wait_for 10 grep -q 'op=register id="\?tcp-1' "$TMP/meshd2.log"
stop_meshd "$MESHD_PID"
check deregister_on_stop "agent has $(svc keys)" test "$(svc 'keys')" = '[]'

# 6. With mTLS on, meta mesh-port carries this host's inbound mTLS port (other meshd dial it).
"$MESHCTL" ca init --ca-cert "$TMP/ca.pem" --ca-key "$TMP/ca.key" >/dev/null ||
	fail ca_init "meshctl ca init failed"
jq --arg tmp "$TMP" '.mtls = { enabled: true, cert_source: "builtin_ca",
	ca_file: ($tmp + "/ca.pem"), ca_key_file: ($tmp + "/ca.key"),
	inbound_listen: "127.0.0.1:22699" } | .services[0].mtls = false' "$CONF" >"$CONF.new" &&
	mv "$CONF.new" "$CONF"
if start_meshd meshd3 "$CONF"; then
	check mesh_port_meta "$(svc '."api-1".Meta')" \
		wait_for 10 bash -c "curl -s '$CURL/v1/agent/services' | jq -e '.\"api-1\".Meta.\"mesh-port\" == \"22699\"' >/dev/null"
	stop_meshd "$MESHD_PID"
else
	fail mesh_port_meta "meshd with mTLS did not start: $(grep -m2 -e error -e refused "$TMP/meshd3.log")"
fi
exit 0
