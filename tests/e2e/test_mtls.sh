#!/usr/bin/env bash
# mTLS between two hosts (network namespaces joined by a veth): curl and a Python client in host
# a's identity cgroup reach a service on host b through its VIP, carried as HTTP/2 CONNECT streams
# over one pooled mutual-TLS 1.3 connection; the wire shows only TLS; host b names the caller's
# SPIFFE ID in its metrics and log; getpeername shows the VIP; half-close and resets cross the
# tunnel; bytes and EOF sent before the answer (early, with the CONNECT) arrive once; a child cgroup inherits the identity; a caller without identity gets the configured
# rule; authorization denies, allows after a live change, and closes an established connection
# a change denies. Hosts 198.18.x.0/24, VIP 127.77.9.10.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh"
need_root
need_built "$MESHD" "$MESHCTL" "$TOOLS/mtlsbench"

two_hosts root api rst bulk
mkdir -p "$CG_a/web/child" "$CG_a/anon"
defer "rmdir '$CG_a/web/child' '$CG_a/anon'"
backend_b api 8080 || fail setup "backend did not start"
rst_server_b 8081 "$TMP/rstseen" || fail setup "reset server did not start"
spawn sink nsenter --net="/run/netns/$HB" "$TOOLS/mtlsbench" server "$IP_B:9000"

host_config "$TMP/a.json" a "
	.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8080 }] },
		{ name: \"rst\", vip: \"127.77.9.11\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 8081 }] },
		{ name: \"bulk\", vip: \"127.77.9.12\", port: 80, mtls: true,
		backends: [{ address: \"$IP_B\", port: 9000 }] }] |
	.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
host_config "$TMP/b.json" b "
	.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] },
		{ cgroup: \"${CG_b#"$CG2"}/rst\", service: \"rst\", ports: [8081] },
		{ cgroup: \"${CG_b#"$CG2"}/bulk\", service: \"bulk\", ports: [9000] }] |
	.authorization.rules = [{ source: \"web\", destination: \"*\", action: \"allow\" }]"
start_hosts

# --- the mesh path -----------------------------------------------------------------------------
MARK="mesh-secret-$$"
in_host "$HB" tcpdump -i "v$$b" -U -s 0 -w "$TMP/cap.pcap" tcp port 15008 >"$TMP/tcpdump.log" 2>&1 &
TCPDUMP=$!
defer "kill -9 $TCPDUMP 2>/dev/null"
wait_for 5 grep -q listening "$TMP/tcpdump.log" 2>/dev/null
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/$MARK")
check curl_through_vip "got '$out'" test "$out" = api
many=$(mc "$HA" "$CG_a/web" many "$VIP" 80 40)
check python_client_through_vip "$many" test "$(echo "$many" | jq .ok)" = 40
kill -TERM "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null
check capture_never_shows_the_request "request string found in clear on the veth" \
	test "$(grep -ac "$MARK" "$TMP/cap.pcap")" = 0
tsh() { tshark -r "$TMP/cap.pcap" -d tcp.port==15008,tls "$@" 2>/dev/null; }
plain=$(tsh -Y 'tcp.len > 0 && !tls && !tcp.reassembled_in && !tcp.analysis.retransmission' | wc -l)
version=$(tsh -Y 'tls.handshake.type == 2' -T fields -e tls.handshake.extensions.supported_version | sort -u)
appdata=$(tsh -Y 'tls.record.opaque_type == 23 || tls.record.content_type == 23' | wc -l)
check capture_only_tls13_records "non-TLS segments=$plain server version=$version app records=$appdata" \
	test "$plain" = 0 -a "$version" = 0x0304 -a "$appdata" -gt 10

hs=$(metric a 'meshd_mtls_handshakes_total\{direction="outbound",result="ok"')
conns=$(metric a 'meshd_mtls_connections_total\{direction="outbound"')
check connections_share_pooled_tunnels "handshakes=$hs for connections=$conns (2 workers)" \
	test "$hs" -ge 1 -a "$hs" -le 2 -a "$conns" -ge 41
src="spiffe://$TD/ns/default/dc/dc1/svc/web"
allowed=$(metric b "meshd_authz_decisions_total\\{source=\"$src\",destination=\"api\",result=\"allow\"")
check b_metrics_name_caller "allow decisions for $src: $allowed" test "$allowed" -ge 41
check b_log_names_caller "no 'peer connected' line with $src in b's log" \
	grep -q "peer connected.*peer_id=$src" "$TMP/b.log"
peer=$(mc "$HA" "$CG_a/web" peer "$VIP" 80)
check getpeername_shows_vip "$peer" test "$(echo "$peer" | jq -c .peer)" = "[\"$VIP\",80]"

# --- half-close and resets ------------------------------------------------------------------------
half=$(mc "$HA" "$CG_a/web" halfclose "$VIP" 80)
check half_close_crosses_the_tunnel "$half" test "$(echo "$half" | jq -r .data)" = "half-closed"
# A line and EOF at once: they travel with the CONNECT and wait on host b for the backend connect.
r=$(mc "$HA" "$CG_a/web" early "$VIP" 80 5)
check early_bytes_and_eof_before_answer "$r" test "$(echo "$r" | jq .ok)" = 5

r=$(mc "$HA" "$CG_a/web" read 127.77.9.11 80)
check backend_reset_reaches_app "$r" test "$(echo "$r" | jq -r .result)" = reset
r=$(mc "$HA" "$CG_a/web" abort 127.77.9.11 80)
wait_for 5 test -s "$TMP/rstseen"
check app_reset_reaches_backend "client: $r, backend saw: $(cat "$TMP/rstseen" 2>/dev/null)" \
	test "$(cat "$TMP/rstseen" 2>/dev/null)" = reset

# A bulk one-way stream far beyond the flow-control windows, then a half-close: the sink must see
# every byte and the end (credit returned as the backend drains; a stall would time out).
bulk=$(in_host_cg "$HA" "$CG_a/web" timeout 30 "$TOOLS/mtlsbench" stream 127.77.9.12:80 2)
check bulk_stream_flow_control_and_eof "exit $?: $bulk" test -n "$(echo "$bulk" | grep stream_bytes)"
# Host b holds the 200 briefly for the backend's first bytes (to send both in one record); a
# backend that says nothing until EOF gets the answer when the hold ends, so an upload beyond
# the early bytes (which wait for the 200 on host a) goes through.
r=$(mc "$HA" "$CG_a/web" upload 127.77.9.12 80 262144)
check held_answer_released_for_a_silent_backend "$r" test "$(echo "$r" | jq .counted)" = 262144

# --- backend connections reuse their ports ------------------------------------------------------
# meshd b connects to a local backend from the loopback address, so the kernel reuses the port of
# a TIME_WAIT connection older than a second (tcp_tw_reuse = 2, the default, covers loopback
# only). With four ephemeral ports, eight new connections half a second apart (the caller closes
# first, so meshd b keeps each TIME_WAIT) all go through; from the target's own address as the
# source, the fifth failed (no free port for 60 s).
range=$(in_host "$HB" sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ')
in_host "$HB" sysctl -qw net.ipv4.ip_local_port_range="40000 40003" net.ipv4.tcp_tw_reuse=2
ok=0
for i in 1 2 3 4 5 6 7 8; do
	in_host_cg "$HA" "$CG_a/web" "$TOOLS/mtlsbench" crr 127.77.9.12:80 1 | grep -q "crr_failed=0" &&
		ok=$((ok + 1))
	sleep 0.5 # pacing, not synchronisation: a TIME_WAIT port is reused once a second old
done
tw=$(in_host "$HB" ss -tanH state time-wait dst "$IP_B:9000" | awk '{ print $3 }' | sort -u | tr '\n' ' ')
in_host "$HB" sysctl -qw net.ipv4.ip_local_port_range="$range"
check backend_connection_ports_reused "$ok of 8 connections; TIME_WAIT sources: $tw" \
	test "$ok" = 8

# --- identities -----------------------------------------------------------------------------------
out=$(in_host_cg "$HA" "$CG_a/web/child" curl -s --max-time 5 "http://$VIP/child")
check child_cgroup_inherits_identity "got '$out'" test "$out" = api
in_host_cg "$HA" "$CG_a/anon" curl -s --max-time 5 "http://$VIP/anon" >/dev/null 2>&1
rc=$?
refused=$(metric a 'meshd_datapath_events_total\{event="mtls_no_identity_refused"')
check no_identity_refused "curl exit $rc, no_identity rejects $refused" test "$rc" = 7 -a "$refused" -ge 1

# no_identity passthrough: the same caller goes plaintext to the backend, counted.
host_config "$TMP/a.json" a "$(jq -c . "$TMP/a.json") | .mtls.no_identity = \"passthrough\""
reloaded=$(ctl a reload 2>&1)
out=$(in_host_cg "$HA" "$CG_a/anon" curl -s --max-time 5 "http://$VIP/anon")
plain=$(metric a 'meshd_datapath_events_total\{event="mtls_no_identity_plaintext"')
check no_identity_passthrough "reload: $reloaded; got '$out', plaintext connects $plain" \
	test "$out" = api -a "$plain" -ge 1

# --- authorization ---------------------------------------------------------------------------------
b_rules() {
	jq ".authorization.rules = $1" "$TMP/b.json" >"$TMP/b.json.new" && mv "$TMP/b.json.new" "$TMP/b.json"
	ctl b reload >/dev/null 2>&1
}
in_host_cg "$HA" "$CG_a/web" python3 "$TMP/mc.py" hold "$VIP" 80 "$TMP/hold.stop" >"$TMP/hold.json" &
HOLD=$!
defer "kill -9 $HOLD 2>/dev/null"
# The first ping's echo, not B's inbound count (up before the backend's first line is back).
wait_for 10 test -e "$TMP/hold.stop.ready" || fail hold_connected "$(cat "$TMP/hold.json")"
b_rules '[{ source: "web", destination: "api", action: "deny" }, { source: "*", destination: "*", action: "allow" }]'
in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/denied" >/dev/null 2>&1
rc=$?
denied=$(metric b "meshd_authz_decisions_total\\{source=\"$src\",destination=\"api\",result=\"deny\"")
# The app's socket is reset once B answers 403: curl says 56 (reset while receiving), or 7 when
# the reset came before it polled its connect's completion (a fast answer on a busy machine).
check deny_refuses "curl exit $rc (56 or 7 = reset), deny decisions $denied" \
	test "(" "$rc" = 56 -o "$rc" = 7 ")" -a "$denied" -ge 1
dst="spiffe://$TD/ns/default/dc/dc1/svc/api"
check deny_logged_with_both_ids "no deny line naming $src and $dst" \
	grep -q "connection denied.*source=$src.*destination_id=$dst" "$TMP/b.log"
wait "$HOLD"
closed=$(metric b 'meshd_authz_closed_total')
check policy_change_closes_established "held connection: $(cat "$TMP/hold.json"); closed=$closed" \
	test "$(jq -r .end "$TMP/hold.json")" = reset -a "$closed" -ge 1
b_rules '[{ source: "web", destination: "*", action: "allow" }]'
out=$(in_host_cg "$HA" "$CG_a/web" curl -s --max-time 5 "http://$VIP/again")
check allowed_after_live_change "got '$out'" test "$out" = api

# --- busy polling ------------------------------------------------------------------------------------
# mtls.busy_poll keeps host a's proxy threads polling between the messages of a busy connection:
# they stop sleeping (voluntary context switches) while round trips keep coming.
sleeps() { # voluntary context switches of meshd a's proxy threads
	local pid f n=0
	pid=$(pid_of_latest a)
	for f in /proc/"$pid"/task/*/status; do
		grep -q '^Name:.*mtls-' "$f" && n=$((n + $(awk '/^voluntary_ctxt_switches/ { print $2 }' "$f")))
	done
	echo "$n"
}
rr_sleeps() {
	local s0
	s0=$(sleeps)
	in_host_cg "$HA" "$CG_a/web" "$TOOLS/mtlsbench" rr 127.77.9.12:80 64 2000 >/dev/null
	echo $(($(sleeps) - s0))
}
idle=$(rr_sleeps)
host_config "$TMP/a.json" a "$(jq -c . "$TMP/a.json") | .mtls.busy_poll = \"10ms\""
reloaded=$(ctl a reload 2>&1)
busy=$(rr_sleeps)
check busy_poll_keeps_workers_awake "reload: $reloaded; sleeps over 2,200 round trips: $idle without, $busy with" \
	test "$idle" -gt 1000 -a "$busy" -lt 200
bad=$(jq -c '.mtls.busy_poll = "1s"' "$TMP/a.json" >"$TMP/bad.json" && "$MESHD" validate --offline "$TMP/bad.json" 2>&1)
check busy_poll_out_of_range_refused "$bad" grep -q "mtls.busy_poll" <<<"$bad"

[ -n "${MTLS_DEBUG:-}" ] && cp "$TMP"/*.log "$TMP"/*.pcap "$MTLS_DEBUG/" 2>/dev/null
exit 0
