# Helpers for the daemon suites (test_daemon.sh, test_reload.sh, test_restart.sh), sourced after
# lib.sh: a config writer, starting and stopping the real meshd, a client that runs inside the
# test cgroup, and bpftool checks. Every meshd started here is registered for kill + --cleanup.

# The client: connects to VIP:PORT in a loop (until DURATION seconds pass or STOPFILE exists),
# sending a line and reading the backend's name and the echo on each connection, while HOLD
# long-lived connections echo a ping every 200 ms. Writes a JSON summary to OUT, and the running
# counts to OUT.progress every 200 ms (tests wait on those instead of sleeping).
cat >"$TMP/client.py" <<'EOF'
import collections, json, os, socket, sys, time

vip, port, duration, hold, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
stopfile = sys.argv[6] if len(sys.argv) > 6 else ""
res = {"ok": 0, "fail": 0, "errors": [], "backends": collections.Counter(),
       "held": hold, "held_alive": 0, "held_errors": []}

def connect():
    s = socket.create_connection((vip, port), timeout=2)
    f = s.makefile("rb")
    s.sendall(b"hello\n")  # echoed back after the name
    name = f.readline().decode().strip()
    if not name or f.readline() != b"hello\n":
        s.close()
        raise OSError("connected but no greeting or echo")
    return s, f, name

def ping(conns):
    alive = 0
    for s, f, _ in conns:
        try:
            s.sendall(b"ping\n")
            if f.readline() == b"ping\n":
                alive += 1
            else:
                res["held_errors"].append("bad echo")
        except OSError as e:
            res["held_errors"].append(str(e))
    return alive

held = []
for _ in range(hold):
    held.append(connect())
end = time.time() + duration
last = 0.0
while time.time() < end and not (stopfile and os.path.exists(stopfile)):
    try:
        s, f, name = connect()
        f.close()
        s.close()
        res["ok"] += 1
        res["backends"][name] += 1
    except OSError as e:
        res["fail"] += 1
        if len(res["errors"]) < 10:
            res["errors"].append(str(e))
    if time.time() - last > 0.2:
        ping(held)
        last = time.time()
        with open(out + ".progress.tmp", "w") as f:
            json.dump({"ok": res["ok"], "fail": res["fail"], "backends": res["backends"]}, f)
        os.rename(out + ".progress.tmp", out + ".progress")
    time.sleep(0.004)
res["held_alive"] = ping(held)
with open(out, "w") as f:
    json.dump(res, f)
EOF

# daemon_config FILE "PORT..." [JQ_FILTER]: writes a static config for service `api` on
# $VIP:80 with round_robin over 127.0.0.1:PORT..., attached to $CG, pinned under $PIN, admin
# socket and state under $TMP, metrics on 127.0.0.1:$MPORT; JQ_FILTER edits the result.
daemon_config() {
	local file=$1 ports=$2 filter=${3:-.}
	jq -n --arg cg "$CG" --arg pin "$PIN" --arg tmp "$TMP" --arg ports "$ports" \
		--arg vip "$VIP" --arg mport "$MPORT" '{
		version: 1,
		cgroup: $cg,
		bpf_pin_path: $pin,
		state_dir: ($tmp + "/state"),
		log: { level: "info", format: "logfmt" },
		admin: { socket: ($tmp + "/admin.sock") },
		telemetry: { metrics_listen: ("127.0.0.1:" + $mport) },
		discovery: { backend: "static" },
		services: [ { name: "api", vip: $vip, port: 80,
			backends: ($ports | split(" ") | map({ address: "127.0.0.1",
				port: tonumber, weight: 1 })),
			load_balancer: { algorithm: "round_robin" } } ]
	}' | jq "$filter" >"$file.tmp" && mv "$file.tmp" "$file"
}

# start_meshd NAME CONFIG [ENV=VALUE...]: starts meshd in the background (log $TMP/NAME.log),
# waits until it says it runs. Sets MESHD_PID. Returns 1 if it exited or never became ready.
start_meshd() {
	local name=$1 config=$2
	shift 2
	env "$@" "$MESHD" --config "$config" >"$TMP/$name.log" 2>&1 &
	MESHD_PID=$!
	defer "kill -9 $MESHD_PID 2>/dev/null; wait $MESHD_PID 2>/dev/null"
	defer "'$MESHD' --cleanup --config '$config'"
	wait_for 10 meshd_ready "$name" "$MESHD_PID"
}
meshd_ready() {
	grep -q 'msg="meshd running"' "$TMP/$1.log" && return 0
	kill -0 "$2" 2>/dev/null || return 2
	return 1
}

# stop_meshd PID: SIGTERM and wait (at most 10 s, then SIGKILL); sets STOP_STATUS to the exit
# status. Call it in the shell that started meshd (not in $(...)), so `wait` can reap it.
stop_meshd() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	STOP_STATUS=$?
}

# client NAME DURATION HOLD [STOPFILE]: runs the client in $CG in the background; its summary
# goes to $TMP/NAME.json. Sets CLIENT_PID.
client() {
	local name=$1 duration=$2 hold=$3 stop=${4:-}
	in_cgroup "$CG" python3 "$TMP/client.py" "$VIP" 80 "$duration" "$hold" \
		"$TMP/$name.json" $stop >"$TMP/$name.log" 2>&1 &
	CLIENT_PID=$!
	defer "kill -9 $CLIENT_PID 2>/dev/null"
}
# result NAME JQ: evaluates JQ on a client's summary.
result() { jq -r "$2" "$TMP/$1.json" 2>/dev/null; }
# progress NAME JQ: evaluates JQ on a running client's counts ({ok, fail, backends}).
progress() { jq -r "$2" "$TMP/$1.json.progress" 2>/dev/null; }
# connects_at_least NAME N [BACKEND]: the running client NAME made N connects (to BACKEND).
connects_at_least() {
	local n q=.ok
	[ -n "${3:-}" ] && q=".backends[\"$3\"] // 0"
	n=$(progress "$1" "$q")
	[ "${n:-0}" -ge "$2" ]
}
# connects_grow NAME BY: waits (10 s at most) until client NAME made BY more connects than now.
connects_grow() {
	local base
	base=$(progress "$1" .ok)
	wait_for 10 connects_at_least "$1" $((${base:-0} + $2))
}

# attach_counts CG: "attach_type count" lines for the programs attached to CG.
attach_counts() {
	bpftool -j cgroup tree "$1" 2>/dev/null |
		jq -r '[.[] | .programs[]? | .attach_type] | group_by(.) | .[] | "\(.[0]) \(length)"'
}
# attached_once CG: at least one program attached, and no attach type twice.
attached_once() {
	local counts
	counts=$(attach_counts "$1")
	[ -n "$counts" ] && ! echo "$counts" | awk '$2 != 1 {bad = 1} END {exit !bad}'
}
nothing_attached() { [ -z "$(attach_counts "$1")" ]; }

# --- traffic through the VIP ------------------------------------------------------------------
# traffic NAME N [VIP]: N connects to VIP:80 ($VIP by default) from $CG; the client's report goes
# to $TMP/NAME.out. served_by NAME: the backends that answered, sorted, comma-separated.
# failed NAME: how many connects failed. serves NAME BACKENDS [N]: N (10) connects all answered,
# by exactly BACKENDS.
traffic() { in_cgroup "$CG" "$TOOLS/mesh_client" -n "$2" "${3:-$VIP}" 80 >"$TMP/$1.out" 2>&1; }
served_by() { sed -n 's/^backend\.\(.*\)=.*/\1/p' "$TMP/$1.out" | sort | paste -sd, -; }
failed() { sed -n 's/^failed=//p' "$TMP/$1.out"; }
serves() { traffic "$1" "${3:-10}" && test "$(served_by "$1")" = "$2" -a "$(failed "$1")" = 0; }


# --- failover across two Consul datacenters (test_consul_failover*.sh) ------------------------
# consul_two_dcs PORT1 PORT2: Consul emulators for dc1 on PORT1 (its server forwards ?dc=dc2
# reads to dc2's, as over the WAN) and dc2 on PORT2 (node host-b); sets DC1 and DC2 to their
# URLs. Returns 1 when either did not start.
consul_two_dcs() {
	local emu=$ROOT/tests/e2e/consul_emulator.py
	DC1=http://127.0.0.1:$1
	DC2=http://127.0.0.1:$2
	spawn consul2 python3 "$emu" --port "$2" --datacenter dc2 --node-name host-b
	spawn consul1 python3 "$emu" --port "$1" --datacenter dc1 --wan "dc2=127.0.0.1:$2"
	wait_for 5 port_open 127.0.0.1 "$1" && wait_for 5 port_open 127.0.0.1 "$2"
}
# dc_put URL [BODY]: a PUT to an emulator (e.g. $DC1/v1/agent/check/fail/service:ID).
dc_put() { curl -sf -X PUT "$1" ${2:+-d "$2"} >/dev/null; }
# dc_register URL ID ADDRESS PORT: an instance ID of `api` at ADDRESS:PORT (an IP address or a
# host name), its TTL check passing.
dc_register() {
	dc_put "$1/v1/agent/service/register" "{\"ID\":\"$2\",\"Name\":\"api\",\"Address\":\"$3\",
		\"Port\":$4,\"Check\":{\"TTL\":\"10m\",\"Status\":\"passing\"}}"
}
# failover_config FILE [JQ_FILTER]: daemon_config for `api` discovered from Consul in dc1 ($DC1,
# wait 30s) and failing over to dc2, no static backends; JQ_FILTER edits the result.
failover_config() {
	daemon_config "$1" "1" "
	.discovery = { backend: \"consul\", consul: { address: \"$DC1\", datacenter: \"dc1\",
		services: [\"api\"], wait: \"30s\",
		failover: [{ service: \"api\", datacenters: [\"dc2\"] }] } } |
	.services[0].backends = [] | ${2:-.}"
}
