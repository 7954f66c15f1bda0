#!/usr/bin/env bash
# Consul as the mTLS control plane (issue 11's targets), on two hosts (network namespaces joined
# by a veth) taking their certificates from the Consul emulator's Connect CA, host b obeying
# intentions:
#   intention change -> enforced, measured from the moment Consul has the change (the write
#     returned) to the first new connection it decides / the held connection it closes:
#     p99 <= 100 ms, for new connections (deny and allow) and live ones (deny)
#   leaf rotation under load (two root rotations, each renewing every leaf by blocking query;
#     leaves live 60 s so the running one outlives a new root's grace): failed connections and
#     handshake failures beyond a baseline of the same load without rotation in the same run:
#     target zero
# Prints key=value lines (bench/run.sh turns them into results; targets in bench/targets.csv).
# QUICK=1: 20 changes, 10 s of load. Root only (namespaces, cgroups, BPF).
SUITE=bench_mtls_consul
. "$(dirname "$0")/../tests/e2e/lib.sh"
. "$(dirname "$0")/../tests/e2e/mtls_lib.sh"
if [ "$(id -u)" -ne 0 ]; then
	echo "bench_mtls_consul=skipped reason=needs_root"
	exit 0
fi
if [ "${QUICK:-0}" = 1 ]; then CHANGES=${CHANGES:-20} LOAD_SECS=${LOAD_SECS:-10}; fi
CHANGES=${CHANGES:-60} LOAD_SECS=${LOAD_SECS:-20} LOAD_CONNS=${LOAD_CONNS:-4}
need_built "$MESHD"

two_hosts root api
backend_b api 8080 || { echo "bench_mtls_consul=failed reason=backend"; exit 1; }
consul_up --leaf-ttl 60 || { echo "bench_mtls_consul=failed reason=consul"; exit 1; }
consul_configs '{ default_action: "deny", intentions: true, rules: [] }'
intention web api allow
start_host a "$TMP/a.json" && start_host b "$TMP/b.json" || {
	echo "bench_mtls_consul=failed reason=meshd: $(tail -n 3 "$TMP/a.log" "$TMP/b.log" | tr "\n" " ")"
	exit 1
}

cat >"$TMP/drive.py" <<'PY'
import http.client, json, socket, sys, threading, time

mode, vip, consul = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = consul.split(":")

def intention(action):
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("PUT", "/v1/connect/intentions/exact?source=web&destination=api",
              json.dumps({"SourceType": "consul", "Action": action}))
    c.getresponse().read()
    c.close()

def attempt(echo=True):
    """True when a new connection reaches the backend: its name line (the remote meshd decided
    and connected), then the echo of a line unless `echo` is False."""
    try:
        s = socket.create_connection((vip, 80), timeout=2)
        s.sendall(b"x\n")  # first: the test backend then names itself at once (no GET wait)
        f = s.makefile("rb")
        ok = bool(f.readline())
        if ok and echo:
            ok = f.readline() == b"x\n"
        s.close()
        return ok
    except OSError:
        return False

def held(out, ready, stop):
    """One connection pinging every 2 ms; out['t'] = when it was closed."""
    try:
        s = socket.create_connection((vip, 80), timeout=2)
        f = s.makefile("rb")
        f.readline()
        while not stop.is_set():
            s.sendall(b"p\n")
            if f.readline() != b"p\n":
                break
            ready.set()
            time.sleep(0.002)
    except OSError:
        pass
    out["t"] = time.monotonic()
    ready.set()

def until(want, t0, limit=3.0):
    while time.monotonic() - t0 < limit:
        if attempt(echo=False) == want:
            return (time.monotonic() - t0) * 1000
    return limit * 1000

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]

if mode == "intentions":
    new_deny, new_allow, live = [], [], []
    for i in range(int(sys.argv[4]) // 2):
        out, ready, stop = {}, threading.Event(), threading.Event()
        th = threading.Thread(target=held, args=(out, ready, stop), daemon=True)
        th.start()
        ready.wait(3)
        time.sleep(0.25)  # changes a few a second: latency, not the client's rate limit
        intention("deny")
        t0 = time.monotonic()
        new_deny.append(until(False, t0))
        th.join(3)
        live.append(((out.get("t") or time.monotonic()) - t0) * 1000)
        time.sleep(0.25)
        intention("allow")
        t0 = time.monotonic()
        new_allow.append(until(True, t0))
    print(json.dumps({k: {"p50": round(pct(v, 0.5), 1), "p99": round(pct(v, 0.99), 1),
                          "max": round(max(v), 1), "n": len(v)}
                      for k, v in (("new_deny", new_deny), ("new_allow", new_allow), ("live", live))}))
else:  # load SECS CONNS: CONNS loops of new connections for SECS seconds
    secs, n = float(sys.argv[4]), int(sys.argv[5])
    res, end = [], time.monotonic() + secs

    def loop():
        ok = fail = 0
        while time.monotonic() < end:
            if attempt():
                ok += 1
            else:
                fail += 1
            # ~50 connects/s per loop: a faster loop exhausts the ephemeral ports (TIME_WAIT)
            # within seconds and measures that instead
            time.sleep(0.02)
        res.append((ok, fail))

    ths = [threading.Thread(target=loop) for _ in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    print(json.dumps({"ok": sum(r[0] for r in res), "fail": sum(r[1] for r in res)}))
PY
drive() { in_host_cg "$HA" "$CG_a/web" python3 "$TMP/drive.py" "$1" "$VIP" "$IP_A:8500" "${@:2}"; }
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN { ok = op == "<=" ? x <= t : x >= t;
	print ok ? "met" : "missed" }'; }
hs_fail() { echo $(($(metric a 'meshd_mtls_handshakes_total\{[^}]*result="error"') + \
	$(metric b 'meshd_mtls_handshakes_total\{[^}]*result="error"'))); }

# --- intention change -> enforced -------------------------------------------------------------
drive load 1 1 >/dev/null # warm the pool
out=$(drive intentions "$CHANGES")
for k in new_deny new_allow live; do
	p99=$(echo "$out" | jq ".$k.p99")
	echo "intention_${k}_p50_ms=$(echo "$out" | jq ".$k.p50") intention_${k}_p99_ms=$p99" \
		"max_ms=$(echo "$out" | jq ".$k.max") n=$(echo "$out" | jq ".$k.n") target=100" \
		"$(verdict "$p99" '<=' 100)"
done

# --- leaf rotation under load ------------------------------------------------------------------
hs0=$(hs_fail)
base=$(drive load "$LOAD_SECS" "$LOAD_CONNS")
hs1=$(hs_fail)
loaded=$(log_count a 'identity certificate loaded')
( # during the load: two root rotations, each renewing every leaf
	sleep $((LOAD_SECS / 4))
	consul_api PUT /v1/connect/ca/configuration '{"Provider":"consul","Config":{}}' >/dev/null
	sleep $((LOAD_SECS / 2))
	consul_api PUT /v1/connect/ca/configuration '{"Provider":"consul","Config":{}}' >/dev/null
) &
rotator=$!
rot=$(drive load "$LOAD_SECS" "$LOAD_CONNS")
wait "$rotator"
hs2=$(hs_fail)
renewals=$(($(log_count a 'identity certificate loaded') - loaded))
echo "rotation_baseline_connects=$(echo "$base" | jq .ok) baseline_failed=$(echo "$base" | jq .fail)" \
	"baseline_handshake_failures=$((hs1 - hs0))"
echo "rotation_connects=$(echo "$rot" | jq .ok) leaf_renewals_host_a=$renewals root_rotations=2"
extra_fail=$(($(echo "$rot" | jq .fail) - $(echo "$base" | jq .fail)))
extra_hs=$(((hs2 - hs1) - (hs1 - hs0)))
echo "rotation_failed_connects=$(echo "$rot" | jq .fail)"
echo "rotation_extra_failed_connects=$extra_fail target=0 $(verdict "$extra_fail" '<=' 0)"
echo "rotation_extra_handshake_failures=$extra_hs target=0 $(verdict "$extra_hs" '<=' 0)"
grep -h 'handshake failed' "$TMP/a.log" "$TMP/b.log" | sed 's/.* reason=/  handshake failure: reason=/' |
	sort | uniq -c | head -5
exit 0
