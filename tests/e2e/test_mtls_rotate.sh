#!/usr/bin/env bash
# Certificate rotation under load, for each source. files: a new leaf for the caller and for the
# server while a connection streams (it survives; the next connections present the new
# certificates), then a root rotation with overlap (bundle root1+root2, leaves from root2, bundle
# root2 alone: root1 is retained, nothing fails). builtin_ca: leaves with a 20 s TTL renew at
# half life while a connection streams; new connections present the renewed certificate. A
# connect loop runs throughout and must see no failure.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

two_hosts root1 api
backend_b api 8080 || fail setup "backend did not start"
configs() { # SOURCE_FILTER for both hosts
	host_config "$TMP/a.json" a "
		.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
			backends: [{ address: \"$IP_B\", port: 8080 }] }] |
		.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }] | $1"
	host_config "$TMP/b.json" b "
		.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
		.authorization.rules = [{ source: \"web\", destination: \"api\", action: \"allow\" }] |
		$1"
}
start_both() {
	start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || {
		fail "start_$1" "meshd did not start: $(tail -n 3 "$TMP/a.log" "$TMP/b.log")"
		exit 1
	}
}
configs .
start_both files

bg_mc stream "$HA" "$CG_a/web" stream "$VIP" 80 "$TMP/stop"
bg_mc loop "$HA" "$CG_a/web" loop "$VIP" 80 "$TMP/stop"
wait_metric 5 b 'meshd_mtls_bytes_total\{direction="inbound",way="sent"' 100000

# --- files: new leaves ---------------------------------------------------------------------------
gen_leaf "$C" root1 "$TMP/a/certs" web
web2=$(cert_serial "$TMP/a/certs/web.crt")
wait_log 10 a 'identity certificate loaded.*service=web' 2
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
check files_new_client_cert_presented "got '$out'; b saw serials: $(grep -o 'peer_serial=[0-9a-f]*' "$TMP/b.log" | sort -u | tr '\n' ' ')" \
	wait_log 5 b "peer connected.*peer_serial=$web2" 1
gen_leaf "$C" root1 "$TMP/b/certs" api
api2=$(cert_serial "$TMP/b/certs/api.crt")
wait_log 10 b 'identity certificate loaded.*service=api' 2
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
check files_new_server_cert_presented "got '$out'" \
	wait_log 5 a "tunnel connected.*peer_serial=$api2" 1

# --- files: root rotation with overlap -----------------------------------------------------------
gen_ca "$C" root2
for h in a b; do cat "$C/root1.crt" "$C/root2.crt" >"$TMP/$h/certs/ca.pem.new" &&
	mv "$TMP/$h/certs/ca.pem.new" "$TMP/$h/certs/ca.pem"; done
wait_log 10 a 'trust bundle loaded.*certificates=2' 1 && wait_log 10 b 'trust bundle loaded.*certificates=2' 1
gen_leaf "$C" root2 "$TMP/a/certs" web && gen_leaf "$C" root2 "$TMP/b/certs" api
web3=$(cert_serial "$TMP/a/certs/web.crt")
wait_log 10 a 'identity certificate loaded.*service=web' 3 && wait_log 10 b 'identity certificate loaded.*service=api' 3
in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/" >/dev/null
check root2_leaf_accepted "b never saw serial $web3" wait_log 5 b "peer connected.*peer_serial=$web3" 1
for h in a b; do cp "$C/root2.crt" "$TMP/$h/certs/ca.pem.new" &&
	mv "$TMP/$h/certs/ca.pem.new" "$TMP/$h/certs/ca.pem"; done
wait_log 10 a 'trust bundle loaded.*certificates=1' 2 && wait_log 10 b 'trust bundle loaded.*certificates=1' 2
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/")
check root1_removed_still_works "got '$out'" test "$out" = api
retained=$(ctl b -o json identities | jq '[.roots[] | select(.retained_until != null)] | length')
check root1_retained "retained roots on b: $retained" test "$retained" = 1

touch "$TMP/stop"
wait "$BG_stream" "$BG_loop"
check files_stream_survives "$(cat "$TMP/stream.json") loop: $(cat "$TMP/loop.json")" \
	test "$(jq -r .end "$TMP/stream.json")" = stopped -a "$(jq .got "$TMP/stream.json")" -gt 1000000
check files_no_failed_connect "$(cat "$TMP/loop.json")" \
	test "$(jq .fail "$TMP/loop.json")" = 0 -a "$(jq .ok "$TMP/loop.json")" -ge 3

# --- builtin_ca ----------------------------------------------------------------------------------
kill -TERM "$PID_a" "$PID_b"
wait "$PID_a" "$PID_b" 2>/dev/null
"$MESHCTL" ca init --ca-cert "$TMP/ca.pem" --ca-key "$TMP/ca.key" >/dev/null || fail ca_init "meshctl ca init failed"
check ca_key_mode_0600 "mode $(stat -c %a "$TMP/ca.key")" test "$(stat -c %a "$TMP/ca.key")" = 600
for h in a b; do cp "$TMP/ca.pem" "$TMP/ca.key" "$TMP/$h/"; done
configs ".mtls.cert_source = \"builtin_ca\" | .mtls.ca_file = (.state_dir + \"/../ca.pem\") |
	.mtls.ca_key_file = (.state_dir + \"/../ca.key\") | .mtls.cert_ttl = \"20s\""
rm -f "$TMP/stop"
start_both builtin
bg_mc stream "$HA" "$CG_a/web" stream "$VIP" 80 "$TMP/stop"
bg_mc loop "$HA" "$CG_a/web" loop "$VIP" 80 "$TMP/stop"
issued=$(log_count a 'identity certificate issued.*service=web')
check builtin_renews_at_half_life "issued $(log_count a 'identity certificate issued.*service=web') times in 13 s" \
	wait_log 13 a 'identity certificate issued.*service=web' $((issued + 1))
serial=$(grep 'identity certificate issued.*service=web' "$TMP/a.log" | tail -n1 | sed 's/.*serial=\([0-9a-f]*\).*/\1/')
[ -n "$serial" ] || fail builtin_serial "no serial in the issue log line"
in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/" >/dev/null
check builtin_new_cert_presented "b never saw serial $serial" \
	wait_log 5 b "peer connected.*peer_serial=$serial" 1
touch "$TMP/stop"
wait "$BG_stream" "$BG_loop"
check builtin_stream_survives "$(cat "$TMP/stream.json")" \
	test "$(jq -r .end "$TMP/stream.json")" = stopped -a "$(jq .got "$TMP/stream.json")" -gt 1000000
check builtin_no_failed_connect "$(cat "$TMP/loop.json")" \
	test "$(jq .fail "$TMP/loop.json")" = 0 -a "$(jq .ok "$TMP/loop.json")" -ge 3
[ -n "${MTLS_DEBUG:-}" ] && cp "$TMP"/*.log "$MTLS_DEBUG/" 2>/dev/null
exit 0
