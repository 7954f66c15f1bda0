#!/usr/bin/env bash
# peak_ewma steering new connects away from a slowed backend (real meshd, real datapath). The
# client and two backends live in network namespaces this test makes, joined by veths
# (198.18.1.0/30 and 198.18.2.0/30, no route out); the client runs in the mesh cgroup too. This kernel has no netem, so the first one is slowed the way a busy link is:
# a tbf qdisc (8 Mbit/s, 20 ms of queue) on its namespace's side of the veth and a bulk flow
# from it keeping that queue full, so its SYN-ACKs wait behind the flow: its handshake RTT goes
# from ~0.1 ms to 5-40 ms (measured here, not assumed). Then 400 serial connects through the
# VIP: with peak_ewma the slowed backend gets under 10% of them (after 20 warm-up connects;
# expected near 0: at active 0 both cost their ewma), with `random` as the control 30-70%
# (binomial, 5 standard deviations). least_request's share is printed, not judged: a slowed
# backend's connections linger in their close (the FIN waits in the same queue), so its active
# count alone already steers serial connects away in part.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$TOOLS/mesh_client"
command -v tc >/dev/null || { fail setup "tc (iproute2) missing"; exit 1; }
MPORT=23490 BPORT=23401 SINK=23409
NSC=meshtest-pec-$$ NS1=meshtest-pe1-$$ NS2=meshtest-pe2-$$
V1=mpe1$$ V2=mpe2$$
observe_cgroup peak

ip netns add "$NSC" && ip netns add "$NS1" && ip netns add "$NS2" ||
	{ fail setup "cannot make namespaces"; exit 1; }
defer "ip netns del '$NSC'; ip netns del '$NS1'; ip netns del '$NS2'"
ip -n "$NSC" link set lo up
# in_client CMD...: CMD in the client namespace (nsenter: bpffs and cgroupfs stay visible).
in_client() { nsenter --net=/run/netns/"$NSC" "$@"; }
for i in 1 2; do
	ns=NS$i v=V$i
	ip link add "${!v}h" netns "$NSC" type veth peer name "${!v}b" netns "${!ns}" ||
		{ fail setup "veth"; exit 1; }
	ip -n "$NSC" addr add "198.18.$i.1/30" dev "${!v}h"
	ip -n "$NSC" link set "${!v}h" up
	ip -n "${!ns}" addr add "198.18.$i.2/30" dev "${!v}b"
	ip -n "${!ns}" link set "${!v}b" up
	ip -n "${!ns}" link set lo up
done
# backend NS NAME: answers its name to each connection (after the client's first line).
serve_in() {
	spawn "srv-$2" ip netns exec "$1" python3 -c '
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(512)
def one(c):
    try:
        c.recv(64); c.sendall(sys.argv[3].encode() + b"\n")
    finally:
        c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=one, args=(c,), daemon=True).start()
' "$3" $BPORT "$2"
}
serve_in "$NS1" slow 198.18.1.2
serve_in "$NS2" fast 198.18.2.2
open_from_client() { in_client bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
wait_for 10 open_from_client 198.18.1.2 $BPORT && wait_for 10 open_from_client 198.18.2.2 $BPORT ||
	{ fail setup "backends did not start"; exit 1; }

# Slow the first backend: shaped egress, kept full by a bulk flow into a sink on this side.
spawn sink nsenter --net=/run/netns/"$NSC" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.1.1", int(sys.argv[1]))); s.listen(4)
while True:
    c, _ = s.accept()
    while c.recv(65536): pass
' $SINK
wait_for 10 open_from_client 198.18.1.1 $SINK || { fail setup "sink did not start"; exit 1; }
ip netns exec "$NS1" tc qdisc add dev "${V1}b" root tbf rate 8mbit burst 16kb latency 20ms ||
	{ fail setup "tbf"; exit 1; }
spawn bulk ip netns exec "$NS1" bash -c "exec 3<>/dev/tcp/198.18.1.1/$SINK; exec cat /dev/zero >&3"
handshake_ms() { # ADDR: median connect time of 20 connects, in ms
	in_client python3 - "$1" $BPORT <<'PY'
import socket, sys, time
ts = []
for _ in range(20):
    s = socket.socket(); t = time.perf_counter(); s.connect((sys.argv[1], int(sys.argv[2])))
    ts.append((time.perf_counter() - t) * 1000); s.close(); time.sleep(0.01)
print("%.2f" % sorted(ts)[10])
PY
}
sleep 1
slow_ms=$(handshake_ms 198.18.1.2) fast_ms=$(handshake_ms 198.18.2.2)
check backend_slowed "handshake ${slow_ms} ms slowed vs ${fast_ms} ms" \
	awk -v s="$slow_ms" -v f="$fast_ms" 'BEGIN { exit !(s >= 2 && s >= 10 * f) }'

observe_config "$TMP/meshd.json" $MPORT '[{ "name": "lat", "vip": "127.77.10.1", "port": 80,
	"backends": [ {"address":"198.18.1.2","port":'$BPORT'}, {"address":"198.18.2.2","port":'$BPORT'} ],
	"load_balancer": { "algorithm": "peak_ewma", "peak_ewma_decay": "10s" } }]'
start_meshd "$TMP/meshd.json" $MPORT || { fail start "meshd: $(tail -n 3 "$TMP/meshd.log")"; exit 1; }
# share N: the slowed backend's share of N serial connects through the VIP, in percent.
share() {
	in_cgroup "$CG" nsenter --net=/run/netns/"$NSC" "$TOOLS/mesh_client" -n "$1" \
		--timeout 3000 127.77.10.1 80 >"$TMP/c.out"
	awk -F= '/^backend.slow=/ {s = $2} /^ok=/ {n = $2} END { printf "%d", n ? 100 * s / n : -1 }' "$TMP/c.out"
}
share 20 >/dev/null # warm-up: each backend gets its first samples
got=$(share 400)
echo "peak_ewma: slowed backend got ${got}% of 400" >&2
check peak_ewma_avoids_slowed "slowed backend got ${got}% of 400 (bound < 10%): $(tr '\n' ' ' <"$TMP/c.out")" \
	test "$got" -ge 0 -a "$got" -lt 10
switch_to() {
	local gen
	jq --arg a "$1" '.services[0].load_balancer.algorithm = $a' "$TMP/meshd.json" >"$TMP/m" &&
		mv "$TMP/m" "$TMP/meshd.json"
	gen=$(metric $MPORT meshd_config_generation)
	kill -HUP "$MESHD_PID"
	wait_for 5 metric_is $MPORT meshd_config_generation $((gen + 1)) || fail control "reload to $1"
}
switch_to least_request
echo "least_request: slowed backend got $(share 400)% of 400" >&2
switch_to random
got=$(share 400)
check random_control_does_not "slowed backend got ${got}% of 400 (bound 30..70%): $(tr "\n" " " <"$TMP/c.out") $("$MESHCTL" --socket "$TMP/run/admin.sock" circuits | tail -n 2 | tr "\n" " ")" \
	test "$got" -ge 30 -a "$got" -le 70
exit 0
