# Helpers for the mTLS suites (test_mtls*.sh), sourced after lib.sh: two hosts as network
# namespaces joined by a veth pair (198.18.<n>.1 = host a, .2 = host b; no route out), a CA and
# SPIFFE certificates made with openssl (never committed), one meshd per host with its own cgroup,
# pin path, state dir, admin socket and metrics port, and clients run inside a host's identity
# cgroup. Everything is undone on exit. VIPs 127.77.9.0/24; backend port 8080 on host b.
MTLS_NET=$((($$ % 200) + 20))
HA=mt$$a
HB=mt$$b
IP_A=198.18.$MTLS_NET.1
IP_B=198.18.$MTLS_NET.2
VIP=127.77.9.10
TD=mesh.local

# hosts_up: the two namespaces and the veth pair between them.
hosts_up() {
	ip netns add "$HA" && defer "ip netns del '$HA'"
	ip netns add "$HB" && defer "ip netns del '$HB'"
	ip link add "v$$a" netns "$HA" type veth peer name "v$$b" netns "$HB" || return 1
	ip -n "$HA" addr add "$IP_A/24" dev "v$$a"
	ip -n "$HB" addr add "$IP_B/24" dev "v$$b"
	for h in "$HA" "$HB"; do
		ip -n "$h" link set lo up
	done
	ip -n "$HA" link set "v$$a" up
	ip -n "$HB" link set "v$$b" up
	wait_for 5 link_up
}
link_up() { ip -n "$HA" -br link show "v$$a" | grep -q UP; }

# in_host HOST CMD...: runs CMD in HOST's network namespace (nsenter keeps /sys and bpffs).
in_host() {
	local h=$1
	shift
	nsenter --net="/run/netns/$h" "$@"
}
# in_host_cg HOST CGROUP CMD...: same, inside cgroup CGROUP.
in_host_cg() {
	local h=$1 cg=$2
	shift 2
	nsenter --net="/run/netns/$h" bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"
}

# two_hosts CA SERVICE...: the hosts, cgroups $CG_a/web (identity web) and $CG_b/SERVICE, a CA
# named CA in $C (= $TMP/certs) trusted by both hosts, a leaf for web on host a and one per
# SERVICE on host b. Exits the suite on failure.
two_hosts() {
	local ca=$1 svc
	shift
	hosts_up || {
		fail setup "cannot build the two hosts"
		exit 1
	}
	CG_a=$(make_cgroup a)
	CG_b=$(make_cgroup b)
	C=$TMP/certs
	mkdir -p "$CG_a/web" "$TMP/a/certs" "$TMP/b/certs"
	defer "rmdir '$CG_a/web'"
	gen_ca "$C" "$ca" && cp "$C/$ca.crt" "$TMP/a/certs/ca.pem" &&
		cp "$C/$ca.crt" "$TMP/b/certs/ca.pem" && gen_leaf "$C" "$ca" "$TMP/a/certs" web || {
		fail setup "openssl could not make the certificates"
		exit 1
	}
	for svc in "$@"; do
		mkdir -p "$CG_b/$svc"
		defer "rmdir '$CG_b/$svc'"
		gen_leaf "$C" "$ca" "$TMP/b/certs" "$svc" || {
			fail setup "openssl could not make the certificate of $svc"
			exit 1
		}
	done
}

# --- certificates (openssl, ECDSA P-256) -----------------------------------------------------

# gen_ca DIR NAME [TRUST_DOMAIN] [DAYS]: DIR/NAME.crt and DIR/NAME.key.
gen_ca() {
	local dir=$1 name=$2 td=${3:-$TD} days=${4:-30}
	mkdir -p "$dir"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
		-keyout "$dir/$name.key" -out "$dir/$name.crt" -subj "/CN=$name" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectAltName=URI:spiffe://$td" 2>/dev/null
}

# gen_leaf CADIR CA OUTDIR SERVICE [SPIFFE_ID] [DAYS|-expired]: OUTDIR/SERVICE.crt/.key signed by
# CADIR/CA; SPIFFE_ID defaults to the service's ID in $TD, dc1.
gen_leaf() {
	local cadir=$1 ca=$2 out=$3 svc=$4
	local id=${5:-spiffe://$TD/ns/default/dc/dc1/svc/$svc} days=${6:-30}
	local ext=$out/.$svc.ext csr=$out/.$svc.csr
	mkdir -p "$out"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/$svc.key.new" \
		-out "$csr" -subj "/CN=$svc" 2>/dev/null || return 1
	printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n%s\n' \
		"extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=URI:$id" >"$ext"
	# -days -1: not after one day ago (expired)
	[ "$days" = -expired ] && days=-1
	openssl x509 -req -in "$csr" -CA "$cadir/$ca.crt" -CAkey "$cadir/$ca.key" \
		-CAcreateserial -days "$days" -extfile "$ext" -out "$out/$svc.crt.new" \
		2>/dev/null || return 1
	chmod 600 "$out/$svc.key.new"
	mv "$out/$svc.key.new" "$out/$svc.key"
	mv "$out/$svc.crt.new" "$out/$svc.crt"
	rm -f "$csr" "$ext"
}

# cert_serial FILE: the serial of a certificate, lowercase hex without leading zeros.
cert_serial() {
	openssl x509 -in "$1" -noout -serial | sed 's/serial=//; s/^0*//' | tr 'A-F' 'a-f'
}

# --- meshd per host -------------------------------------------------------------------------

# host_config FILE HOST JQ_FILTER: a base config for HOST (a or b) edited by JQ_FILTER. The
# datapath attaches to $CG_<HOST>; admin, state and certs live in $TMP/<host>/.
host_config() {
	local file=$1 h=$2 filter=${3:-.} cg
	cg=$(eval echo "\$CG_$h")
	mkdir -p "$TMP/$h/state"
	jq -n --arg cg "$cg" --arg pin "$PIN-$h" --arg dir "$TMP/$h" --arg td "$TD" '{
		version: 1,
		node: { name: "node-\($dir | split("/") | last)", datacenter: "dc1" },
		cgroup: $cg,
		bpf_pin_path: $pin,
		state_dir: ($dir + "/state"),
		log: { level: "info", format: "logfmt" },
		admin: { socket: ($dir + "/admin.sock") },
		telemetry: { metrics_listen: "127.0.0.1:9464" },
		discovery: { backend: "static" },
		services: [],
		load_balancer: { health_check: { type: "none" } },
		mtls: { enabled: true, trust_domain: $td, cert_source: "files",
			ca_file: ($dir + "/certs/ca.pem"), cert_dir: ($dir + "/certs"),
			workers: 2, outbound_listen: "127.0.0.1:15001",
			inbound_listen: "0.0.0.0:15008" },
		identities: [],
		authorization: { default_action: "deny", rules: [] }
	}' | jq "$filter" >"$file.tmp" && mv "$file.tmp" "$file"
}

# start_host HOST CONFIG [ENV=VALUE...]: starts meshd in HOST's namespace (log $TMP/HOST.log,
# appended across restarts); sets PID_<HOST>. Returns 1 when it did not come up.
start_host() {
	local h=$1 config=$2 ns
	shift 2
	ns=$(eval echo "\$H$(echo "$h" | tr a-z A-Z)")
	touch "$TMP/$h.log"
	READY_SEEN=$(grep -c 'msg="meshd running"' "$TMP/$h.log")
	nsenter --net="/run/netns/$ns" env "$@" "$MESHD" --config "$config" >>"$TMP/$h.log" 2>&1 &
	eval "PID_$h=$!"
	defer "kill -9 $! 2>/dev/null; wait $! 2>/dev/null"
	defer "nsenter --net=/run/netns/$ns '$MESHD' --cleanup --config '$config'"
	wait_for 60 host_ready "$h" "$!"
}
# start_hosts: meshd on host a from $TMP/a.json, then on host b from $TMP/b.json; exits the suite
# (with the log's tail) when one does not come up.
start_hosts() {
	local h
	for h in a b; do
		start_host $h "$TMP/$h.json" || {
			fail "start_$h" "meshd $h did not start: $(tail -n 5 "$TMP/$h.log")"
			exit 1
		}
	done
}
host_ready() {
	[ "$(grep -c 'msg="meshd running"' "$TMP/$1.log")" -gt "${READY_SEEN:-0}" ] && return 0
	kill -0 "$2" 2>/dev/null || return 2
	return 1
}

# metric HOST PATTERN: sum of the samples matching PATTERN (grep -E) on HOST's /metrics.
metric() {
	local ns
	ns=$(eval echo "\$H$(echo "$1" | tr a-z A-Z)")
	in_host "$ns" curl -s --max-time 5 http://127.0.0.1:9464/metrics |
		grep -E "^$2" | awk '{ s += $NF } END { printf "%d\n", s }'
}
# wait_metric SECONDS HOST PATTERN N: until the sum of PATTERN on HOST reaches N.
wait_metric() { wait_for "$1" metric_ge "$2" "$3" "$4"; }
metric_ge() { [ "$(metric "$1" "$2")" -ge "$3" ]; }
# ctl HOST ARGS...: meshctl against HOST's admin socket.
ctl() {
	local h=$1
	shift
	"$MESHCTL" --socket "$TMP/$h/admin.sock" "$@"
}

# backend_b NAME PORT: the test backend on host b ($IP_B:PORT) speaking HTTP and echo.
backend_b() {
	local name=$1 port=$2
	spawn "backend-$name" nsenter --net="/run/netns/$HB" python3 \
		"$ROOT/tests/e2e/servers/backend.py" --name "$name" --port "$port" --addr "$IP_B" \
		--health-file /dev/null
	wait_for 5 in_host "$HB" bash -c "exec 3<>/dev/tcp/$IP_B/$port" 2>/dev/null
}

# The Python client (run inside a host's cgroup): one mode per check, JSON on stdout.
#   many VIP PORT N            N connections in a row: name line, echo; counts ok/fail
#   peer VIP PORT              getpeername() of a connection
#   halfclose VIP PORT         send, shutdown(SHUT_WR), read to EOF: the echo and a clean EOF
#   early VIP PORT N           N connections sending a line and EOF at once (before any answer:
#                              early bytes), then reading to EOF: the name and the line once
#   read VIP PORT              send a line, read: "reset" when the peer resets, else the data
#   hold VIP PORT STOPFILE     one connection pinging every 100 ms until STOPFILE; how it ended
#                              (STOPFILE.ready appears once the first ping came back)
#   stream VIP PORT STOPFILE   streams data both ways until STOPFILE; bytes and how it ended
#   loop VIP PORT STOPFILE     new connections in a loop until STOPFILE; counts ok/fail
#   upload VIP PORT N          to a sink (mtlsbench server): "S" alone, a pause, N bytes, EOF;
#                              the byte count the sink reports
cat >"$TMP/mc.py" <<'PY'
import json, os, socket, sys, time

mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

def conn():
    s = socket.create_connection((vip, port), timeout=5)
    f = s.makefile("rb")
    name = f.readline().decode().strip()
    return s, f, name

def ended(e):
    return "reset" if isinstance(e, ConnectionResetError) else type(e).__name__ + ":" + str(e)

if mode == "many":
    ok, fail, errs = 0, 0, []
    for i in range(int(sys.argv[4])):
        try:
            s, f, name = conn()
            s.sendall(b"x%d\n" % i)
            if f.readline() == b"x%d\n" % i and name:
                ok += 1
            else:
                fail += 1
            s.close()
        except OSError as e:
            fail += 1
            errs.append(ended(e))
    print(json.dumps({"ok": ok, "fail": fail, "errors": errs[:5]}))
elif mode == "early":
    ok, fail, errs = 0, 0, []
    for i in range(int(sys.argv[4])):
        try:
            s = socket.create_connection((vip, port), timeout=5)
            s.sendall(b"early%d\n" % i)
            s.shutdown(socket.SHUT_WR)
            f = s.makefile("rb")
            name, rest = f.readline().strip(), f.read()
            if name and rest == b"early%d\n" % i:
                ok += 1
            else:
                fail += 1
                errs.append(repr(name + b"|" + rest))
            s.close()
        except OSError as e:
            fail += 1
            errs.append(ended(e))
    print(json.dumps({"ok": ok, "fail": fail, "errors": errs[:5]}))
elif mode == "peer":
    s, f, name = conn()
    print(json.dumps({"peer": list(s.getpeername()), "name": name}))
elif mode == "halfclose":
    s, f, name = conn()
    s.sendall(b"half-closed\n")
    s.shutdown(socket.SHUT_WR)
    data = f.read()
    print(json.dumps({"name": name, "data": data.decode(), "eof": True}))
elif mode == "read":
    try:
        s = socket.create_connection((vip, port), timeout=5)
        s.sendall(b"hello\n")
        data = s.recv(100)
        r = "eof" if not data else "data"
        s.recv(100)
    except OSError as e:
        r = ended(e)
    print(json.dumps({"result": r}))
elif mode == "loop":
    stop, ok, fail, refused, errs, slowest = sys.argv[4], 0, 0, 0, [], 0.0
    while not os.path.exists(stop):
        t0 = time.time()
        try:
            s, f, name = conn()
            s.sendall(b"loop\n")
            if f.readline() == b"loop\n" and name:
                ok += 1
            else:
                fail += 1
                errs.append("bad echo")
            s.close()
        except ConnectionRefusedError as e:
            refused += 1
            errs.append(ended(e))
        except OSError as e:
            fail += 1
            errs.append(ended(e))
        slowest = max(slowest, time.time() - t0)
        time.sleep(0.02)
    print(json.dumps({"ok": ok, "fail": fail, "refused": refused, "errors": errs[:5],
                      "slowest": round(slowest, 3)}))
elif mode == "upload":
    s = socket.create_connection((vip, port), timeout=10)
    s.sendall(b"S")
    time.sleep(0.2)  # "S" travels alone with the CONNECT; the sink answers only at EOF
    try:
        s.sendall(b"u" * int(sys.argv[4]))
        s.shutdown(socket.SHUT_WR)
        back = b""
        while len(back) < 8:
            more = s.recv(8 - len(back))
            if not more:
                break
            back += more
        r = {"counted": int.from_bytes(back, "little") if len(back) == 8 else -1}
    except OSError as e:
        r = {"counted": -1, "error": ended(e)}
    print(json.dumps(r))
elif mode == "abort":
    s = socket.create_connection((vip, port), timeout=5)
    s.sendall(b"watch\n")
    ack = s.recv(100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    print(json.dumps({"ack": ack.decode()}))
elif mode in ("hold", "stream"):
    stop = sys.argv[4]
    s, f, name = conn()
    s.settimeout(5)
    sent = got = 0
    end = "stopped"
    chunk = b"y" * 16384 + b"\n"
    try:
        while not os.path.exists(stop):
            msg = chunk if mode == "stream" else b"ping\n"
            s.sendall(msg)
            back = f.readline()
            if back != msg:
                end = "bad echo" if back else "eof"
                break
            sent += len(msg)
            got += len(back)
            if sent == len(msg):  # the first echo came back: the path is up end to end
                open(stop + ".ready", "w").close()
            if mode == "hold":
                time.sleep(0.1)
    except OSError as e:
        end = ended(e)
    print(json.dumps({"name": name, "end": end, "sent": sent, "got": got}))
PY

# mc HOST CGROUP MODE ARGS...: the Python client in HOST, cgroup CGROUP.
mc() {
	local h=$1 cg=$2
	shift 2
	in_host_cg "$h" "$cg" python3 "$TMP/mc.py" "$@"
}

# rst_server_b PORT OUT: on host b, a server that answers "reset-me" with a TCP reset, and for
# "watch" acknowledges then writes to OUT how the client's side ended (reset or eof).
rst_server_b() {
	cat >"$TMP/rst.py" <<'PY'
import socket, struct, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
def handle(c):
    line = c.recv(100)
    if line.startswith(b"watch"):
        c.sendall(b"ok\n")
        try:
            r = "eof" if not c.recv(100) else "data"
        except ConnectionResetError:
            r = "reset"
        open(sys.argv[3], "w").write(r)
        c.close()
        return
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
PY
	spawn rst nsenter --net="/run/netns/$HB" python3 "$TMP/rst.py" "$IP_B" "$1" "$2"
	wait_for 5 in_host "$HB" bash -c "exec 3<>/dev/tcp/$IP_B/$1" 2>/dev/null
}

# bg_mc NAME HOST CGROUP MODE ARGS...: the client in the background, JSON to $TMP/NAME.json.
bg_mc() {
	local name=$1 h=$2 cg=$3
	shift 3
	in_host_cg "$h" "$cg" python3 "$TMP/mc.py" "$@" >"$TMP/$name.json" 2>&1 &
	eval "BG_$name=$!"
	defer "kill -9 $! 2>/dev/null"
}
# log_count HOST PATTERN: lines of HOST's log matching PATTERN.
log_count() { grep -c -- "$2" "$TMP/$1.log"; }
# wait_log SECONDS HOST PATTERN N: until HOST's log has N lines matching PATTERN.
wait_log() { wait_for "$1" log_has "$2" "$3" "$4"; }
log_has() { [ "$(log_count "$1" "$2")" -ge "$3" ]; }

# pid_of_latest HOST: the pid the last "meshd running" line of HOST's log names.
pid_of_latest() { grep 'msg="meshd running"' "$TMP/$1.log" | tail -n1 | sed 's/.* pid=\([0-9]*\).*/\1/'; }

# --- Consul (the emulator, in host a, reachable from both hosts) ------------------------------
CONSUL_URL=http://$IP_A:8500

# consul_up [ARGS...]: the Consul emulator on $IP_A:8500 in host a, its CA and data under $TMP
# (kept across consul_down/consul_up, like a server's data dir); sets PID_consul.
consul_up() {
	nsenter --net="/run/netns/$HA" python3 "$ROOT/tests/e2e/consul_emulator.py" --addr "$IP_A" \
		--port 8500 --ca-dir "$TMP/consul-ca" --data-file "$TMP/consul.json" "$@" \
		>>"$TMP/consul.log" 2>&1 &
	PID_consul=$!
	defer "kill -9 $PID_consul 2>/dev/null; wait $PID_consul 2>/dev/null"
	wait_for 10 in_host "$HA" bash -c "exec 3<>/dev/tcp/$IP_A/8500" 2>/dev/null
}
# consul_down: Consul unavailable (the process is killed).
consul_down() {
	kill -9 "$PID_consul" 2>/dev/null
	wait "$PID_consul" 2>/dev/null
}
# consul_api METHOD PATH [JSON]: a request to the emulator; prints the body.
consul_api() {
	in_host "$HA" curl -s --max-time 10 -X "$1" "$CONSUL_URL$2" ${3:+-d "$3"}
}
# intention SOURCE DESTINATION allow|deny|delete
intention() {
	if [ "$3" = delete ]; then
		consul_api DELETE "/v1/connect/intentions/exact?source=$1&destination=$2" >/dev/null
	else
		consul_api PUT "/v1/connect/intentions/exact?source=$1&destination=$2" \
			"{\"SourceType\":\"consul\",\"Action\":\"$3\"}" >/dev/null
	fi
}
# consul_configs B_AUTHORIZATION: $TMP/a.json (caller web, service api at $VIP on host b's
# port 8080) and $TMP/b.json (identity api serving 8080, authorization B_AUTHORIZATION, a jq
# object), both on the emulator's Connect CA.
consul_configs() {
	host_config "$TMP/a.json" a "$CONSUL_CA_FILTER |
		.services = [{ name: \"api\", vip: \"$VIP\", port: 80, mtls: true,
			backends: [{ address: \"$IP_B\", port: 8080 }] }] |
		.identities = [{ cgroup: \"${CG_a#"$CG2"}/web\", service: \"web\" }]"
	host_config "$TMP/b.json" b "$CONSUL_CA_FILTER |
		.identities = [{ cgroup: \"${CG_b#"$CG2"}/api\", service: \"api\", ports: [8080] }] |
		.authorization = $1"
}
# The jq filter that makes a host_config use the Connect CA of the emulator.
CONSUL_CA_FILTER="del(.mtls.trust_domain, .mtls.ca_file, .mtls.cert_dir) |
	.mtls.cert_source = \"consul\" | .discovery.consul = { address: \"$CONSUL_URL\", wait: \"30s\" }"
