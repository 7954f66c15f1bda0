#!/usr/bin/env bash
# An mTLS change goes through meshd's all-or-nothing reload. Host b runs the test build with fault
# points (tests/meshd_faults). One reload denies web -> api, adds an identity, turns strict_inbound
# on and adds a plain service; it is failed right after the mtls component applied it
# (reload.mtls) and at the components after it (reload.metrics, reload.admin): each time a
# connection held through the tunnel stays up, new connections are allowed, b's services,
# identities and mTLS maps are exactly as before, the generation unchanged. An mTLS plan that
# fails (a CA file that does not exist) takes the service change back with it; a reload turning
# mTLS off that fails later leaves the proxy serving. Then the same reload applies whole: the
# held connection is closed, new ones are denied, the service is there.
# Hosts 198.18.x.0/24, VIP 127.77.9.10.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
FAULTY=$BUILD_DIR/tests/meshd_faults
need_built "$MESHD" "$MESHCTL" "$FAULTY"

two_hosts root api api2
backend_b api 8080 || fail setup "backend did not start"
FAULTS=$TMP/faults
: >"$FAULTS"

host_config "$TMP/a.json" a "
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8080 }] }] |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
host_config "$TMP/b-running.json" b "
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
	.authorization.rules = [{ source: \"web\", destination: \"*\", action: \"allow\" }]"
jq ".identities += [{ cgroup: \"${CG_b#"$CG2"}/api2\", service: \"api2\", ports: [8082] }]
	| .mtls.strict_inbound = true
	| .authorization.rules = [{ source: \"web\", destination: \"api\", action: \"deny\" },
		{ source: \"*\", destination: \"*\", action: \"allow\" }]
	| .services = [{ name: \"extra\", vip: \"127.77.9.20\", port: 80,
		backends: [{ address: \"127.0.0.1\", port: 8080 }] }]" \
	"$TMP/b-running.json" >"$TMP/b-next.json"
cp "$TMP/b-running.json" "$TMP/b.json"
start_host a "$TMP/a.json" || {
	fail start_a "meshd a did not start: $(tail -n 5 "$TMP/a.log")"
	exit 1
}
MESHD=$FAULTY start_host b "$TMP/b.json" MESHD_FAULTS_FILE="$FAULTS" || {
	fail start_b "meshd_faults b did not start: $(tail -n 5 "$TMP/b.log")"
	exit 1
}

# Everything of b's a reload could touch, in a comparable form.
snapshot() {
	{
		ctl b services -o json | jq -S .
		ctl b status -o json | jq -S '{config_generation}'
		ctl b identities -o json | jq -S '.identities | map({service, cgroups, serial})'
		for map in mesh_mtls_cfg mesh_idents mesh_strict mesh_services; do
			bpftool -j map dump pinned "$PIN-b/$map" | jq -S -c "{\"$map\": sort_by(.key | tostring)}"
		done
	} 2>&1
}
lines() { wc -l <"$TMP/b.log"; }
since() { tail -n +$(($1 + 1)) "$TMP/b.log" | grep -q "$2"; }
curl_api() { in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/$1"; }

# hold: one connection through the tunnel pinging until $TMP/hold.stop.
hold() {
	rm -f "$TMP/hold.stop" "$TMP/hold.stop.ready"
	bg_mc hold "$HA" "$CG_a/web" hold "$VIP" 80 "$TMP/hold.stop"
	wait_for 10 test -e "$TMP/hold.stop.ready" || fail hold_connected "$(cat "$TMP/hold.json")"
}
hold
out=$(curl_api first)
check path_up "got '$out'" test "$out" = api
snapshot >"$TMP/before"
check snapshot_has_identities "$(head -c 300 "$TMP/before")" grep -q '"api"' "$TMP/before"

# reload_fails NAME COMPONENT: SIGHUP b with $TMP/b.json as it is; the reload must fail naming
# COMPONENT and leave b as it was, the held connection up and new connections allowed.
reload_fails() {
	local name=$1 comp=$2 mark
	mark=$(lines)
	kill -HUP "$PID_b"
	if ! wait_for 15 since "$mark" 'msg="reload failed'; then
		fail "$name" "no failure logged: $(tail -n +$((mark + 1)) "$TMP/b.log" | tail -n 5)"
		return
	fi
	check "${name}_names_component" "$(tail -n +$((mark + 1)) "$TMP/b.log" | grep -m1 rejected)" \
		since "$mark" "msg=\"component rejected the new config\" component=$comp"
	snapshot >"$TMP/after"
	check "${name}_leaves_b_as_it_was" "$(diff "$TMP/before" "$TMP/after" | head -n 20 | tr '\n' ' ')" \
		cmp -s "$TMP/before" "$TMP/after"
	out=$(curl_api "$name")
	check "${name}_new_connections_allowed" "got '$out'" test "$out" = api
	# the client prints its JSON only once the connection ended
	check "${name}_held_connection_stays" "$(cat "$TMP/hold.json")" test ! -s "$TMP/hold.json"
	cp "$TMP/b-running.json" "$TMP/b.json"
}

# --- a fault at the mtls component and after it -----------------------------------------------
for point in reload.mtls reload.metrics reload.admin; do
	echo "$point" >"$FAULTS"
	cp "$TMP/b-next.json" "$TMP/b.json"
	reload_fails "fault_$point" "${point#reload.}"
done
: >"$FAULTS"

# --- the mTLS plan fails: the service change goes back with it -----------------------------------
jq ".mtls.ca_file = \"$TMP/b/certs/missing.pem\"" "$TMP/b-next.json" >"$TMP/b.json"
reload_fails plan_failure mtls

# --- mTLS turned off, a later component fails: the proxy keeps serving --------------------------
# (the whole mtls block, identities and rules go: set under mtls.enabled false they are refused)
echo reload.admin >"$FAULTS"
jq '.mtls = { enabled: false } | del(.identities, .authorization)' "$TMP/b-running.json" \
	>"$TMP/b.json"
reload_fails disable_undone admin
: >"$FAULTS"

# --- the same reload applies whole ----------------------------------------------------------------
cp "$TMP/b-next.json" "$TMP/b.json"
mark=$(lines)
kill -HUP "$PID_b"
if wait_for 15 since "$mark" 'msg="configuration reloaded"'; then
	wait_for 10 test -s "$TMP/hold.json"
	check applied_closes_held_connection "$(cat "$TMP/hold.json")" \
		test "$(jq -r .end "$TMP/hold.json" 2>/dev/null)" = reset
	# b refuses the stream and a's proxy resets web's connection (leg_close with RST), which
	# curl had connected. Its exit says only when it saw the reset: 56 reading the answer, 55
	# sending the request, 7 when the reset came before it checked its non-blocking connect
	# (SO_ERROR ECONNRESET; seen under load). Each means denied only with b's deny counted for
	# it; a served request (0) or a hang (28) fails.
	deny_pat='meshd_authz_decisions_total\{[^}]*destination="api",result="deny"'
	denied_by_b() { # RC DENIES_BEFORE
		case $1 in 7 | 55 | 56) ;; *) return 1 ;; esac
		wait_metric 5 b "$deny_pat" $(($2 + 1))
	}
	denies=$(metric b "$deny_pat")
	curl_api denied >/dev/null 2>&1
	rc=$?
	check applied_denies_new_connections \
		"curl exit $rc (7, 55, 56 = reset), b's denies $denies -> $(metric b "$deny_pat")" \
		denied_by_b "$rc" "$denies"
	check applied_adds_service "$(ctl b services -o json | jq -c '[.services[].name]')" \
		bash -c '"$0" --socket "$1" services -o json | jq -e "any(.services[]; .name == \"extra\")"' \
		"$MESHCTL" "$TMP/b/admin.sock"
	strict=$(bpftool -j map dump pinned "$PIN-b/mesh_strict" | jq length)
	check applied_writes_strict_ports "mesh_strict entries: $strict" test "$strict" -ge 2
else
	fail applied "$(tail -n +$((mark + 1)) "$TMP/b.log" | grep -m3 -e error -e failed)"
fi
touch "$TMP/hold.stop"
exit 0
