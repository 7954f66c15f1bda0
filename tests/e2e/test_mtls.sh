#!/usr/bin/env bash
# mTLS between two hosts (network namespaces joined by a veth): curl and a Python client in host
# a's identity cgroup reach a service on host b through its VIP, carried as HTTP/2 CONNECT streams
# over one pooled mutual-TLS 1.3 connection; the wire shows only TLS; host b names the caller's
# SPIFFE ID in its metrics and log; getpeername shows the VIP; half-close and resets cross the
# tunnel; a child cgroup inherits the identity; a caller without identity gets the configured
# rule; authorization denies, allows after a live change, and closes an established connection
# a change denies. Hosts 198.18.x.0/24, VIP 127.77.9.10.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL"

hosts_up || {
	fail setup "cannot build the two hosts"
	exit 1
}
CG_a=$(make_cgroup a)
CG_b=$(make_cgroup b)
mkdir -p "$CG_a/web/child" "$CG_a/anon" "$CG_b/api"
defer "rmdir '$CG_a/web/child' '$CG_a/web' '$CG_a/anon' '$CG_b/api'"
gen_ca "$TMP/ca" root && mkdir -p "$TMP/a/certs" "$TMP/b/certs" &&
	cp "$TMP/ca/root.crt" "$TMP/a/certs/ca.pem" && cp "$TMP/ca/root.crt" "$TMP/b/certs/ca.pem" &&
	gen_leaf "$TMP/ca" root "$TMP/a/certs" web && gen_leaf "$TMP/ca" root "$TMP/b/certs" api || {
	fail setup "openssl could not make the certificates"
	exit 1
}
backend_b api 8080 || fail setup "backend did not start"

host_config "$TMP/a.json" a "
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8080 }] }] |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
host_config "$TMP/b.json" b "
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
	.authorization.rules = [{ source: \"web\", destination: \"api\", action: \"allow\" }]"
start_host a "$TMP/a.json" || {
	fail start_a "meshd a did not start: $(tail -n 5 "$TMP/a.log")"
	exit 1
}
start_host b "$TMP/b.json" || {
	fail start_b "meshd b did not start: $(tail -n 5 "$TMP/b.log")"
	exit 1
}

out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/hello")
check curl_through_vip "got '$out'" test "$out" = api
