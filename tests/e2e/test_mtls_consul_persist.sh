#!/usr/bin/env bash
# mtls.cert_source consul keeps its last roots and leaves under <state_dir>/connect: a meshd
# started while the Consul agent is down serves mTLS with the persisted leaf (the key file is
# mode 0600, the key never logged) and takes the agent's new leaf when it answers again. A
# persisted leaf of another service, or an expired one, is ignored with a log line saying why.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root api
backend_b api 8080 || fail setup "backend did not start"
consul_up || {
	fail setup "consul emulator did not start: $(tail -n 3 "$TMP/consul.log")"
	exit 1
}
consul_configs '{ default_action: "deny", rules: [{ source: "web", destination: "api", action: "allow" }] }'
start_hosts
served() { # HOST CGROUP N: N connections through the mesh, all answered
	local many
	many=$(mc "$1" "$2" many "$VIP" 80 "$3")
	echo "$many" >"$TMP/many.json"
	test "$(jq .ok <<<"$many")" = "$3"
}
check served_from_consul "$(cat "$TMP/many.json" 2>/dev/null)" served "$HA" "$CG_a/web" 3
serial_of() { # HOST: the serial web/api was last loaded with
	grep 'identity certificate loaded.*source=consul' "$TMP/$1.log" | tail -n1 |
		sed 's/.*serial=\([0-9a-f]*\).*/\1/'
}
s1=$(serial_of a)
leaf=$TMP/a/state/connect/leaf-web.json
has_files() { [ -f "$leaf" ] && [ -f "$TMP/a/state/connect/roots.json" ]; }
check leaf_persisted "$(ls -l "$TMP/a/state/connect" 2>&1)" wait_for 5 has_files
check key_file_mode_0600 "$(stat -c %a "$leaf" 2>&1)" test "$(stat -c %a "$leaf")" = 600
check persisted_leaf_is_the_served_one "file serial vs $s1" \
	test "$(jq -r .CertPEM "$leaf" | cert_serial /dev/stdin)" = "$s1"

# --- restart both hosts while Consul is down ----------------------------------------------------
restart() { # HOST...: SIGTERM, wait, start again
	local h p
	for h in "$@"; do
		p=$(eval echo "\$PID_$h")
		kill "$p" && wait "$p" 2>/dev/null
		start_host "$h" "$TMP/$h.json" || fail "restart_$h" "$(tail -n 5 "$TMP/$h.log")"
	done
}
consul_down
restart a b
check persisted_leaf_loaded "$(grep -i persisted "$TMP/a.log" | tail -n 3)" \
	log_has a "persisted Consul leaf loaded.*service=web.*serial=$s1" 1
check served_during_outage "$(cat "$TMP/many.json")" served "$HA" "$CG_a/web" 5
check key_never_logged "$(grep -c 'PRIVATE KEY' "$TMP/a.log" "$TMP/b.log")" \
	test "$(cat "$TMP/a.log" "$TMP/b.log" | grep -c 'PRIVATE KEY')" = 0

# --- Consul back: its leaf replaces the persisted one ------------------------------------------
consul_up || fail consul_up "the emulator did not come back"
new_leaf() { s=$(serial_of a) && [ -n "$s" ] && [ "$s" != "$s1" ]; }
check new_leaf_taken "last: $(grep 'certificate loaded' "$TMP/a.log" | tail -n1)" \
	wait_for 15 new_leaf
persisted_new() { [ "$(jq -r .CertPEM "$leaf" | cert_serial /dev/stdin)" = "$(serial_of a)" ]; }
check new_leaf_persisted "file has $(jq -r .CertPEM "$leaf" | cert_serial /dev/stdin)" \
	wait_for 5 persisted_new
check served_with_new_leaf "$(cat "$TMP/many.json")" served "$HA" "$CG_a/web" 3

# --- persisted material that does not fit is ignored, with why ---------------------------------
td=$(consul_api GET /v1/agent/connect/ca/roots | jq -r .TrustDomain)
mkdir -p "$TMP/emu"
consul_api GET /v1/agent/connect/ca/roots | jq -r '.Roots[] | select(.Active) | .RootCert' \
	>"$TMP/emu/r.crt"
cp "$(ls "$TMP"/consul-ca/root*.key | head -n1)" "$TMP/emu/r.key"
gen_leaf "$TMP/emu" r "$TMP/emu" web "spiffe://$td/ns/default/dc/dc1/svc/web" -expired ||
	fail setup "openssl could not make the expired leaf"
expired_json=$(jq -n --rawfile c "$TMP/emu/web.crt" --rawfile k "$TMP/emu/web.key" \
	--arg id "spiffe://$td/ns/default/dc/dc1/svc/web" \
	'{ Service: "web", ServiceURI: $id, CertPEM: $c, PrivateKeyPEM: $k, ModifyIndex: 1 }')
consul_down
kill "$PID_a" && wait "$PID_a" 2>/dev/null
cp "$TMP/b/state/connect/leaf-api.json" "$leaf" # another service's leaf
start_host a "$TMP/a.json" || fail restart_a "$(tail -n 5 "$TMP/a.log")"
check other_service_leaf_ignored "$(grep 'ignoring a persisted' "$TMP/a.log" | tail -n1)" \
	log_has a 'ignoring a persisted Consul leaf.*service=web.*expected web' 1
has_cert=$(ctl a -o json identities | jq -r '.identities[] | select(.service == "web") | .has_certificate')
check ignored_leaf_not_served "web has a certificate: $has_cert" test "$has_cert" = false
kill "$PID_a" && wait "$PID_a" 2>/dev/null
echo "$expired_json" >"$leaf"
start_host a "$TMP/a.json" || fail restart_a "$(tail -n 5 "$TMP/a.log")"
check expired_leaf_ignored "$(grep 'ignoring a persisted' "$TMP/a.log" | tail -n1)" \
	log_has a 'ignoring a persisted Consul leaf.*service=web.*expired' 1
exit 0
