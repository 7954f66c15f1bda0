#!/usr/bin/env bash
# mTLS refusals, each with a clear reason and no crash: a caller with a certificate from another
# CA, an expired certificate, a non-service SPIFFE ID, another trust domain, a plaintext client on
# the inbound port, an unknown service name (SNI), a CONNECT to a port of no local service, to an
# address of another host (no open relay), a malformed authority; and on the calling side a
# server whose certificate names another service. The inbound side is host b's meshd; the
# callers run in host a with a hand-driven TLS + HTTP/2 client.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"
if ! /usr/bin/python3 -c 'import h2' 2>/dev/null; then
	fail all "python3-h2 missing (scripts/install-deps.sh installs it)"
	exit 1
fi
H2C="/usr/bin/python3 $ROOT/tests/e2e/servers/h2connect.py"

two_hosts root api
IP_C=198.18.$MTLS_NET.3
ip -n "$HB" addr add "$IP_C/24" dev "v$$b"
gen_ca "$C" other && gen_leaf "$C" other "$C/wrongca" web &&
	gen_leaf "$C" root "$C/expired" web "" -expired &&
	gen_leaf "$C" root "$C/badid" web "spiffe://$TD/workload/web" &&
	gen_leaf "$C" root "$C/otherdomain" web "spiffe://other.local/ns/default/dc/dc1/svc/web" &&
	gen_leaf "$C" root "$C/imposter" api "spiffe://$TD/ns/default/dc/dc1/svc/billing" || {
	fail setup "openssl could not make the certificates"
	exit 1
}
backend_b api 8080 || fail setup "backend did not start"

host_config "$TMP/a.json" a "
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_C\", port: 8080 }] }] |
	.load_balancer.retry.connect_attempts = 1 |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
host_config "$TMP/b.json" b "
	.mtls.inbound_listen = \"$IP_B:15008\" |
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
	.authorization.rules = [{ source: \"web\", destination: \"api\", action: \"allow\" }]"
start_hosts

# call DIR [H2CONNECT ARGS]: a caller presenting DIR/web.crt from host a; prints its JSON.
call() {
	local dir=$1
	shift
	in_host "$HA" $H2C --host "$IP_B" --ca "$C/root.crt" --cert "$dir/web.crt" \
		--key "$dir/web.key" "$@"
}
refused() { # CASE REASON: b counted an inbound handshake failure for REASON and logged it
	local n
	n=$(metric b "meshd_mtls_handshakes_total\\{direction=\"inbound\",result=\"error\",reason=\"$2\"")
	check "$1" "inbound $2 failures: $n; log: $(grep -c "reason=$2" "$TMP/b.log")" \
		test "$n" -ge 1 -a "$(grep -c "mTLS handshake failed.*reason=$2" "$TMP/b.log")" -ge 1
}

call "$C/wrongca" --authority "$IP_B:8080" >/dev/null
refused wrong_ca_refused unknown_ca
call "$C/expired" --authority "$IP_B:8080" >/dev/null
refused expired_cert_refused expired
call "$C/badid" --authority "$IP_B:8080" >/dev/null
refused non_service_spiffe_id_refused spiffe_id
call "$C/otherdomain" --authority "$IP_B:8080" >/dev/null
refused other_trust_domain_refused trust_domain
in_host "$HA" $H2C --host "$IP_B" --plain >/dev/null
refused plaintext_client_refused not_tls
call "$TMP/a/certs" --sni nosuch --authority "$IP_B:8080" >/dev/null
refused unknown_service_refused unknown_service

r=$(call "$TMP/a/certs" --authority "$IP_B:9999")
check connect_to_non_service_port_refused "$r" \
	test "$(echo "$r" | jq -r '"\(.status) \(.reason)"')" = "421 not_served"
r=$(call "$TMP/a/certs" --authority "$IP_A:8080")
check connect_to_another_host_refused "$r" \
	test "$(echo "$r" | jq -r '"\(.status) \(.reason)"')" = "421 not_served"
r=$(call "$TMP/a/certs" --authority "example.com:8080")
check malformed_authority_refused "$r" \
	test "$(echo "$r" | jq -r '"\(.status) \(.reason)"')" = "400 bad_request"
r=$(call "$TMP/a/certs" --authority "$IP_B:8080")
check valid_caller_still_served "$r" test "$(echo "$r" | jq -r .status)" = 200
check no_crash "meshd b exited" kill -0 "$PID_b"

# The calling side: a server at $IP_C:15008 presenting a certificate for another service.
cat >"$TMP/imposter.py" <<'PY'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2] + "/api.crt", sys.argv[2] + "/api.key")
ctx.set_alpn_protocols(["h2"])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 15008))
srv.listen(16)
while True:
    c, _ = srv.accept()
    try:
        s = ctx.wrap_socket(c, server_side=True)
        s.recv(100)
    except (ssl.SSLError, OSError):
        pass
PY
spawn imposter nsenter --net="/run/netns/$HB" python3 "$TMP/imposter.py" "$IP_C" "$C/imposter"
wait_for 5 in_host "$HA" bash -c "exec 3<>/dev/tcp/$IP_C/15008" 2>/dev/null
in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/" >/dev/null 2>&1
rc=$?
n=$(metric a 'meshd_mtls_handshakes_total\{direction="outbound",result="error",reason="spiffe_id"')
check server_with_wrong_spiffe_id_refused "curl exit $rc, outbound spiffe_id failures $n" \
	test "$rc" != 0 -a "$n" -ge 1
check no_crash_a "meshd a exited" kill -0 "$PID_a"
# --- meshctl check reads the same material ---------------------------------------------------------
mcheck() { # CERT_DIR: meshctl check of host a's config with another cert_dir
	jq ".mtls.cert_dir = \"$1\"" "$TMP/a.json" >"$TMP/check.json"
	"$MESHCTL" check --pre --config "$TMP/check.json" 2>&1 | grep mTLS
}
out=$(mcheck "$TMP/a/certs")
check meshctl_check_material_ok "$out" \
	test "$(echo "$out" | grep -c '^\[ok\]')" = 2 -a "$(echo "$out" | grep -c FAIL)" = 0
out=$(mcheck "$C/expired")
check meshctl_check_expired "$out" grep -q 'FAIL.*certificate of web.*expired' <<<"$out"
out=$(mcheck "$C/wrongca")
check meshctl_check_wrong_ca "$out" grep -q 'FAIL.*certificate of web.*not signed by the trust bundle' <<<"$out"
out=$(mcheck "$C/badid")
check meshctl_check_wrong_id "$out" grep -q "FAIL.*certificate of web.*SPIFFE ID" <<<"$out"
[ -n "${MTLS_DEBUG:-}" ] && cp "$TMP"/*.log "$MTLS_DEBUG/" 2>/dev/null
exit 0
