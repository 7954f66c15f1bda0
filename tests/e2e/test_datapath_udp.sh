#!/usr/bin/env bash
# UDP services in the datapath, attached for real: `dig @VIP` against two dnsmasq backends is
# balanced (round_robin, one flow per dig) and answered from the VIP (dig refuses a reply from
# another address); a statsd-style unconnected sender keeps its flow on one backend, a second
# socket gets the other, and a backend going down moves the flow; a connected UDP socket's
# getpeername shows the VIP; datagrams and bytes are counted per service; a process outside the
# cgroup is untouched. Ports 18071-18079, VIPs 127.77.2.70-79.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

dp_setup udp
need_built "$(command -v dnsmasq)" "$(command -v dig)"
for i in 1 2; do
	spawn "dnsmasq$i" dnsmasq --keep-in-foreground --conf-file=/dev/null --port="1807$i" \
		--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --pid-file= \
		--address="/svc.test/198.18.0.$i"
	eval "DNS${i}_PID=$SPAWNED_PID"
done
# UDP echo backends answering "NAME payload" (statsd-style traffic, but answered).
for i in 1 2; do
	spawn "echo$i" python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[2])))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(sys.argv[1].encode() + b" " + d, a)' "e$i" "1807$((i + 2))"
done
wait_for 5 bash -c 'dig @127.0.0.1 -p 18071 svc.test +short +tries=1 +time=1 | grep -q 198.18.0.1 &&
	dig @127.0.0.1 -p 18072 svc.test +short +tries=1 +time=1 | grep -q 198.18.0.2' ||
	fail setup "dnsmasq backends did not answer"

# --- dig through the VIP: balanced, answered from the VIP --------------------------------------
dp --cgroup "$CG" set --name dns --vip 127.77.2.70:53 --proto udp --alg round_robin --backend 127.0.0.1:18071 \
	--backend 127.0.0.1:18072
for _ in $(seq 1 20); do
	in_cgroup "$CG" dig @127.77.2.70 svc.test +short +tries=1 +time=2 2>&1
done >"$TMP/dig.out"
a1=$(grep -c '^198.18.0.1$' "$TMP/dig.out") a2=$(grep -c '^198.18.0.2$' "$TMP/dig.out")
expect dig_balanced_and_answered_from_vip "answers: $a1 from dnsmasq1, $a2 from dnsmasq2; other lines: $(grep -v '^198' "$TMP/dig.out" | sort | uniq -c | head -3 | tr '\n' ' ')" \
	'[ "$a1" -eq 10 ] && [ "$a2" -eq 10 ]'
expect udp_counted "$(svc_field dns datagrams_sent) sent, $(svc_field dns datagrams_received) received, $(svc_field dns bytes_received) bytes received" \
	'[ "$(svc_field dns datagrams_sent)" -ge 20 ] && [ "$(svc_field dns datagrams_received)" -ge 20 ] && [ "$(svc_field dns bytes_received)" -gt 0 ] && [ "$(svc_field dns protocol)" = udp ]'

# --- outside the cgroup: untouched (nothing listens on the VIP) -------------------------------
out=$(dig @127.77.2.70 svc.test +short +tries=1 +time=1 2>&1)
expect outside_cgroup_untouched "dig outside: $(head -c 120 <<<"$out")" '! grep -q "^198.18" <<<"$out"'

# --- unconnected sender: sticky per socket and destination; moves when its backend goes down --
dp --cgroup "$CG" set --name stats --vip 127.77.2.71:8125 --proto udp --alg round_robin \
	--backend 127.0.0.1:18073 --backend 127.0.0.1:18074
sender() {
	in_cgroup "$CG" python3 - "$@" <<'PY'
import collections, socket, sys
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(int(sys.argv[1]))]
for i, s in enumerate(socks):
    s.settimeout(2)
    names, sources = collections.Counter(), set()
    for n in range(int(sys.argv[2])):
        s.sendto(b"metric:%d|c" % n, ("127.77.2.71", 8125))
        d, a = s.recvfrom(2048)
        names[d.split()[0].decode()] += 1
        sources.add("%s:%d" % a)
    print("socket%d %s sources=%s" % (i, ",".join("%s=%d" % kv for kv in sorted(names.items())),
                                      "/".join(sorted(sources))))
PY
}
out=$(sender 2 50)
expect unconnected_flow_sticky "$(tr '\n' ' ' <<<"$out")" \
	'grep -q "^socket0 e[12]=50 sources=127.77.2.71:8125$" <<<"$out" && grep -q "^socket1 e[12]=50 sources=127.77.2.71:8125$" <<<"$out" && [ "$(cut -d" " -f2 <<<"$out" | sort -u | wc -l)" -eq 2 ]'
dp health --name stats --backend 127.0.0.1:18073 down
out=$(sender 1 30)
expect flow_leaves_unusable_backend "$out" 'grep -q "^socket0 e2=30 " <<<"$out"'
dp health --name stats --backend 127.0.0.1:18073 up

# --- connected UDP: balanced at connect, getpeername shows the VIP ----------------------------
out=$(in_cgroup "$CG" python3 -c 'import socket
for _ in range(4):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.77.2.71", 8125))
    s.send(b"x")
    print(s.recv(100).split()[0].decode(), "%s:%d" % s.getpeername())')
expect connected_udp_shows_vip "$(tr '\n' ' ' <<<"$out")" \
	'[ "$(grep -c " 127.77.2.71:8125$" <<<"$out")" -eq 4 ] && grep -q "^e1 " <<<"$out" && grep -q "^e2 " <<<"$out"'

# --- a TCP service on the same VIP:port is another service ------------------------------------
dp set --name dns-tcp --vip 127.77.2.70:53 --alg round_robin --backend 127.0.0.1:18071
expect tcp_and_udp_share_vip "services: $(dp stats | awk '$1 == "service" { print $2 }' | tr '\n' ' ')" \
	'[ "$(svc_field dns protocol)" = udp ] && [ "$(svc_field dns-tcp protocol)" = tcp ]'
exit $SUITE_FAILED
