#!/usr/bin/env bash
# Consul intentions (authorization.intentions) on host b, written through the Consul emulator's
# API while callers `web` and `other` on host a connect: default deny with none; an exact allow;
# a wildcard source; exact source over wildcard source; exact destination over wildcard
# destination (Consul's precedence); authorization.rules come first and the intentions survive a
# reload; a live change closes an established connection it now denies; Consul down keeps the last intentions; a restart during the outage uses the persisted
# ones; with nothing known (no answer, nothing persisted) a service is closed even under
# default_action allow.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root api
mkdir -p "$CG_a/other"
defer "rmdir '$CG_a/other'"
backend_b api 8080 || fail setup "backend did not start"
consul_up || {
	fail setup "consul emulator did not start: $(tail -n 3 "$TMP/consul.log")"
	exit 1
}
"$MESHCTL" ca init --ca-cert "$TMP/ca.pem" --ca-key "$TMP/ca.key" >/dev/null || fail setup "ca init"
BUILTIN=".mtls.cert_source = \"builtin_ca\" | .mtls.ca_file = \"$TMP/ca.pem\" |
	.mtls.ca_key_file = \"$TMP/ca.key\""
host_config "$TMP/a.json" a "$BUILTIN |
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8080 }] }] |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" },
		{ cgroup: \"${CG_a#"$CG2"}/other\", service: \"other\" }]"
b_config() { # DEFAULT_ACTION
	host_config "$TMP/b.json" b "$BUILTIN |
		.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
		.discovery.consul = { address: \"$CONSUL_URL\", wait: \"30s\" } |
		.authorization = { default_action: \"$1\", intentions: true, rules: [] }"
}
b_config deny
start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || {
	fail start "meshd did not start: $(tail -n 3 "$TMP/a.log" "$TMP/b.log")"
	exit 1
}

# as CALLER: "api" when CALLER reaches the backend, else what curl printed (nothing on a reset).
as() { in_host_cg "$HA" "$CG_a/$1" curl -s --max-time 5 "http://$VIP/"; }
updates=$(log_count b 'intentions updated.*service=api')
# set_intention SOURCE DESTINATION ACTION: writes it and waits until b applied it.
set_intention() {
	updates=$((updates + 1))
	intention "$@"
	wait_log 5 b 'intentions updated.*service=api' "$updates" ||
		fail "apply_$1_$2_$3" "b did not apply the change: $(tail -n 2 "$TMP/b.log")"
}
expect() { # CASE CALLER api|denied
	local got
	got=$(as "$2")
	[ "$got" = api ] || got=denied
	check "$1" "$2 got '$got', expected $3" test "$got" = "$3"
}

expect no_intentions_default_deny web denied
set_intention web api allow
expect exact_allow web api
expect exact_allow_only_that_source other denied
set_intention '*' api allow
expect wildcard_source_allows other api
set_intention other api deny
expect exact_source_beats_wildcard other denied
expect wildcard_leaves_others web api
set_intention web '*' deny
expect exact_destination_beats_wildcard_destination web api
set_intention web api delete
expect wildcard_destination_below_exact_destination_wildcard_source web api

# --- reloads: authorization.rules come before intentions; the intentions stay across a reload ---
b_rules() { # RULES_JSON: b's authorization.rules, applied by a reload
	jq --argjson r "$1" '.authorization.rules = $r' "$TMP/b.json" >"$TMP/b.json.new" &&
		mv "$TMP/b.json.new" "$TMP/b.json" && ctl b reload >/dev/null
}
b_rules '[{ "source": "other", "destination": "api", "action": "allow" }]'
expect config_rule_before_intentions other api
expect intentions_kept_across_reload web api
b_rules '[]'
expect intention_deny_again_after_rule_removed other denied

# --- a live change closes an established connection it now denies --------------------------------
closed=$(metric b meshd_authz_closed_total)
bg_mc hold "$HA" "$CG_a/web" hold "$VIP" 80 "$TMP/stop"
wait_for 5 test -e "$TMP/stop.ready" || fail hold_ready "the held connection never echoed"
set_intention web api deny
wait "$BG_hold"
check live_change_closes_denied "held connection: $(cat "$TMP/hold.json")" \
	test "$(jq -r .end "$TMP/hold.json")" = reset
check closed_counted "meshd_authz_closed_total $closed -> $(metric b meshd_authz_closed_total)" \
	test "$(metric b meshd_authz_closed_total)" -gt "$closed"
set_intention web api allow

# --- Consul down ------------------------------------------------------------------------------------
consul_down
wait_log 10 b 'consul.*query failed' 1
expect consul_down_keeps_allow web api
expect consul_down_keeps_deny other denied

kill -TERM "$PID_b"
wait "$PID_b" 2>/dev/null
start_host b "$TMP/b.json" || fail restart "meshd b did not restart: $(tail -n 3 "$TMP/b.log")"
check restart_restores_persisted "$(grep -c 'persisted intentions restored' "$TMP/b.log") restore lines" \
	wait_log 5 b 'persisted intentions restored.*service=api' 1
expect restart_during_outage_allow web api
expect restart_during_outage_deny other denied

# Nothing known: never open, whatever the default.
kill -TERM "$PID_b"
wait "$PID_b" 2>/dev/null
rm -rf "$TMP/b/state/intentions"
b_config allow
start_host b "$TMP/b.json" || fail restart2 "meshd b did not restart: $(tail -n 3 "$TMP/b.log")"
expect unknown_intentions_closed_under_default_allow web denied

# Consul back: its intentions apply again.
consul_up
web_allowed() { [ "$(as web)" = api ]; }
check consul_back_applies "$(tail -n 2 "$TMP/b.log")" wait_for 15 web_allowed
exit 0
