# Helpers shared by the metrics and meshctl suites (sourced after lib.sh): a per-test meshd config
# (own pin path, cgroup, state dir, admin socket, metrics port), starting meshd, reading metrics.

# observe_cgroup NAME: makes this test's child cgroup and sets CG (removed on exit by lib.sh).
observe_cgroup() { CG=$(make_cgroup "$1"); }

# observe_config FILE METRICS_PORT SERVICES_JSON [PIN_PATH]: writes a static-discovery config for
# this test (health checks off unless the services say otherwise). The cgroup is $CG, the admin
# socket $ADMIN_SOCK (default $TMP/run/admin.sock).
observe_config() {
	local file=$1 port=$2 services=$3 pin=${4:-$PIN} sock=${ADMIN_SOCK:-$TMP/run/admin.sock}
	cat >"$file" <<JSON
{
  "version": 1,
  "cgroup": "$CG",
  "bpf_pin_path": "$pin",
  "state_dir": "$TMP/state",
  "admin": { "socket": "$sock" },
  "telemetry": { "metrics_listen": "127.0.0.1:$port" },
  "log": { "level": "debug" },
  "load_balancer": { "algorithm": "round_robin", "health_check": { "type": "none" } },
  "services": $services
}
JSON
}

# start_meshd CONFIG METRICS_PORT: runs meshd in the background (killed and cleaned up on exit),
# waits until /readyz answers 200. Sets MESHD_PID.
start_meshd() {
	local cfg=$1 port=$2
	spawn meshd "$MESHD" --config "$cfg"
	MESHD_PID=$SPAWNED_PID
	defer "'$MESHD' --cleanup --config '$cfg'"
	wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"
}

# metric PORT SELECTOR: sum of the samples whose line starts with SELECTOR (name{labels...).
metric() {
	curl -s "http://127.0.0.1:$1/metrics" |
		awk -v sel="$2" 'index($0, sel) == 1 { s += $NF; n++ } END { if (n) print s; else print "none" }'
}

# metric_is PORT SELECTOR WANT: for wait_for (which gets its arguments already expanded).
metric_is() { test "$(metric "$1" "$2")" = "$3"; }

# connect_vip IP PORT N: N connects from the test cgroup; each sends a line and reads the
# backend's name. Prints how many were answered.
connect_vip() {
	in_cgroup "$CG" python3 - "$1" "$2" "$3" <<'PY'
import socket, sys
ok = 0
for _ in range(int(sys.argv[3])):
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
            s.sendall(b"hello\n")
            if s.makefile().readline():
                ok += 1
    except OSError:
        pass
print(ok)
PY
}
