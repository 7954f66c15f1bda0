#!/usr/bin/env bash
# mtls.cert_source consul: two hosts take their trust bundle and leaves from the Consul emulator's
# Connect CA (openssl-made at run time) by blocking queries. The SPIFFE IDs and trust domain are
# Consul's; a leaf renewal arrives by blocking query and is presented; a root rotation (new
# active root, old still listed, later pruned) while a stream and a connect loop run fails
# nothing (no failed connect, no failed handshake) even though one host learns of the new root
# 2 s after the other; a leaf for another service is refused and the
# running certificate stays; Consul down keeps everything working.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root api
backend_b api 8080 || fail setup "backend did not start"
# Host b's agent learns of a root change 2 s late: a leaf of the new root presented at once
# would fail b's handshakes.
consul_up --leaf-ttl 12 --prune-roots-after 12 --slow-roots "$IP_B=2" || {
	fail setup "consul emulator did not start: $(tail -n 3 "$TMP/consul.log")"
	exit 1
}
consul_configs '{ default_action: "deny", rules: [{ source: "web", destination: "api", action: "allow" }] }'
start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || {
	fail start "meshd did not start: $(tail -n 3 "$TMP/a.log" "$TMP/b.log")"
	exit 1
}

# --- served by the Connect CA ------------------------------------------------------------------
td=$(consul_api GET /v1/agent/connect/ca/roots | jq -r .TrustDomain)
id=$(ctl a -o json identities | jq -r '.identities[] | select(.service == "web") | .spiffe_id')
check spiffe_id_from_consul "web's ID: $id, trust domain $td" \
	test "$id" = "spiffe://$td/ns/default/dc/dc1/svc/web"
src=$(ctl b -o json identities | jq -r '.identities[] | select(.service == "api") | .source')
check source_is_consul "api's source: $src" test "$src" = consul
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
check connect_through_consul_certs "got '$out'; $(tail -n 3 "$TMP/a.log")" test "$out" = api
check peer_named_by_consul_id "b's log has no peer_id in $td" \
	wait_log 5 b "peer connected.*spiffe://$td/ns/default/dc/dc1/svc/web" 1

# --- renewal by blocking query (leaf TTL 12 s: renewed 7..11 s after issue) --------------------
loaded=$(log_count a 'identity certificate loaded.*service=web')
check leaf_renewed_by_blocking_query "web loaded $(log_count a 'identity certificate loaded.*service=web') times" \
	wait_log 15 a 'identity certificate loaded.*service=web' $((loaded + 1))
serial=$(grep 'identity certificate loaded.*service=web' "$TMP/a.log" | tail -n1 | sed 's/.*serial=\([0-9a-f]*\).*/\1/')
in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/" >/dev/null
check renewed_leaf_presented "b never saw serial $serial" \
	wait_log 5 b "peer connected.*peer_serial=$serial" 1

# --- root rotation while connections run -------------------------------------------------------
bg_mc stream "$HA" "$CG_a/web" stream "$VIP" 80 "$TMP/stop"
bg_mc loop "$HA" "$CG_a/web" loop "$VIP" 80 "$TMP/stop"
wait_metric 5 b 'meshd_mtls_bytes_total\{direction="inbound",way="sent"' 100000
hs_bad() { metric "$1" 'meshd_mtls_handshakes_total\{[^}]*result="(failed|error)' ; }
bad_a=$(hs_bad a) bad_b=$(hs_bad b)
consul_api PUT /v1/connect/ca/configuration '{"Provider":"consul","Config":{}}' >/dev/null
check both_roots_trusted "a: $(grep 'Consul CA roots loaded' "$TMP/a.log" | tail -n1)" \
	wait_log 10 a 'Consul CA roots loaded.*roots=2' 1
wait_log 10 b 'Consul CA roots loaded.*roots=2' 1
check new_leaf_held_for_grace "a: $(grep -c 'held until peers trust' "$TMP/a.log") hold lines" \
	wait_log 10 a 'new leaf signed by a new root; held' 1
root2=$(consul_api GET /v1/agent/connect/ca/roots | jq -r '.Roots[] | select(.Active) | .RootCert')
leaf_from_root2() { # the serial web presents now chains to root 2
	local s
	s=$(grep 'identity certificate loaded.*service=web' "$TMP/a.log" | tail -n1 |
		sed 's/.*serial=\([0-9a-f]*\).*/\1/')
	consul_api GET /v1/agent/connect/ca/leaf/web | jq -r .CertPEM >"$TMP/leaf.pem"
	[ "$(cert_serial "$TMP/leaf.pem")" = "$s" ] &&
		openssl verify -CAfile <(echo "$root2") "$TMP/leaf.pem" >/dev/null 2>&1
}
check leaf_from_new_root_installed "web's leaf: $(tail -n 2 "$TMP/a.log")" wait_for 20 leaf_from_root2
in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/" >/dev/null
check old_root_pruned "b: $(grep 'Consul CA roots loaded' "$TMP/b.log" | tail -n1)" \
	wait_log 25 b 'Consul CA roots loaded.*roots=1' 2
sleep 1 # a few more connects of the loop after the prune
touch "$TMP/stop"
wait "$BG_stream" "$BG_loop"
check rotation_stream_survives "$(cat "$TMP/stream.json")" \
	test "$(jq -r .end "$TMP/stream.json")" = stopped
check rotation_no_failed_connect "$(cat "$TMP/loop.json")" \
	test "$(jq .fail "$TMP/loop.json")" = 0 -a "$(jq .ok "$TMP/loop.json")" -ge 10
check rotation_no_failed_handshake "a: $bad_a -> $(hs_bad a), b: $bad_b -> $(hs_bad b)" \
	test "$(hs_bad a)" = "$bad_a" -a "$(hs_bad b)" = "$bad_b"

# --- a leaf for the wrong service ------------------------------------------------------------------
consul_api PUT "/emulator/leaf/web?as=api" >/dev/null
check wrong_service_leaf_refused "$(grep 'Consul leaf' "$TMP/a.log" | tail -n1)" \
	wait_log 15 a 'refused a Consul leaf.*service=web.*expected web' 1
err=$(ctl a -o json identities | jq -r '.identities[] | select(.service == "web") | .error')
check wrong_leaf_error_shown "meshctl identities error: $err" grep -q 'expected web' <<<"$err"
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
check running_cert_stays "got '$out'" test "$out" = api
consul_api PUT "/emulator/leaf/web?as=" >/dev/null

# --- Consul down -----------------------------------------------------------------------------------
consul_down
sleep 1
many=$(mc "$HA" "$CG_a/web" many "$VIP" 80 10)
check consul_down_keeps_certs "$many" test "$(echo "$many" | jq .ok)" = 10
exit 0
