#!/usr/bin/env bash
# meshctl against a real meshd: every command's -o json parses and matches the daemon's state
# (services and backends from the config, active connections from real traffic), human tables are
# aligned, reload reports success and every problem, usage errors exit 2, failures exit 1, and
# the admin socket is private.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root

MPORT=20020 B1=20021 B2=20022 B3=20023
observe_cgroup meshctl
backend b1 $B1 && backend b2 $B2 && backend b3 $B3 || { fail setup "backends did not start"; exit 1; }
SERVICES="[
  { \"name\": \"web\", \"vip\": \"127.77.4.20\", \"port\": 80,
    \"backends\": [ { \"address\": \"127.0.0.1\", \"port\": $B1 },
                    { \"address\": \"127.0.0.1\", \"port\": $B2, \"weight\": 3 } ] },
  { \"name\": \"api\", \"vip\": \"127.77.4.21\", \"port\": 8080,
    \"backends\": [ { \"address\": \"127.0.0.1\", \"port\": $B3 } ] } ]"
observe_config "$TMP/meshd.json" $MPORT "$SERVICES"
start_meshd "$TMP/meshd.json" $MPORT || {
	fail setup "meshd not ready: $(tail -5 "$TMP/meshd.log")"
	exit 1
}
SOCK=$TMP/run/admin.sock
ctl() { "$MESHCTL" --socket "$SOCK" "$@"; }
# jqt FILTER CMD...: runs CMD (meshctl -o json ...) and evaluates FILTER with jq -e.
jqt() {
	local f=$1
	shift
	"$@" >"$TMP/out.json" && jq -e "$f" "$TMP/out.json" >/dev/null
}
# aligned: every line of stdin has its columns starting where the header's do.
aligned() {
	python3 -c '
import re, sys
lines = sys.stdin.read().splitlines()
starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
ok = len(lines) > 1
for l in lines[1:]:
    cells = [m.start() for m in re.finditer(r"\S+", l)]
    ends = [m.end() for m in re.finditer(r"\S+", l)]
    hdr_ends = [m.end() for m in re.finditer(r"\S+", lines[0])]
    # each cell is left-aligned with its header or right-aligned with it
    ok &= len(cells) == len(starts) and all(c == s or e == he for c, s, e, he in
                                            zip(cells, starts, ends, hdr_ends))
sys.exit(0 if ok else 1)'
}

check socket_private "socket mode $(stat -c %a "$SOCK"), dir $(stat -c %a "$TMP/run")" \
	test "$(stat -c %a "$SOCK")" = 600 -a "$(stat -c %a "$TMP/run")" = 700

check status_json "status -o json: $(cat "$TMP/out.json" 2>/dev/null)" jqt \
	".ready == true and .pid == $MESHD_PID and .config_generation == 1 and .services == 2 and
	 .backends == 3 and .datapath_attached == true" ctl status -o json
check status_human "status lacks the generation line" grep -q '^config generation  *1$' \
	<<<"$(ctl status)"
check services_json "services -o json does not match the config" jqt \
	'[.services[] | {name, vip, backends}] | sort_by(.name) ==
	 [{"name":"api","vip":"127.77.4.21:8080","backends":1},
	  {"name":"web","vip":"127.77.4.20:80","backends":2}]' ctl services -o json
check services_aligned "services table not aligned: $(ctl services)" aligned < <(ctl services)
check backends_json "backends web -o json" jqt \
	"[.backends[].address] | sort == [\"127.0.0.1:$B1\", \"127.0.0.1:$B2\"]" ctl backends web -o json
check backends_weight "weight 3 not shown" jqt \
	".backends[] | select(.address == \"127.0.0.1:$B2\") | .weight == 3" ctl -o json backends web
check backends_query_endpoint "/v1/backends?service=api" \
	test "$(curl -s --unix-socket "$SOCK" 'http://x/v1/backends?service=api' | jq -r '.backends[0].address')" = "127.0.0.1:$B3"
check backends_aligned "backends table not aligned: $(ctl backends web)" aligned < <(ctl backends web)
check circuits_json "circuits -o json" jqt \
	'(.circuits | length) == 3 and all(.circuits[]; .circuit == "closed")' ctl circuits -o json
check circuits_aligned "circuits table not aligned" aligned < <(ctl circuits)
check config_show_json "config show -o json lacks the services" jqt \
	'(.services | length) == 2 and .telemetry.metrics_listen == "127.0.0.1:'$MPORT'"' \
	ctl config show -o json
check config_show_human "config show is not JSON" jqt '.admin.socket != null' ctl config show

# meshctl finds meshd as meshd finds its config: -c FILE or MESH_CONFIG name it, and its
# admin.socket is where meshd listens (it used to look only at --socket and the default).
byconf() { "$MESHCTL" -c "$TMP/meshd.json" "$@"; }
byenv() { env MESH_CONFIG="$TMP/meshd.json" "$MESHCTL" "$@"; }
check socket_from_config_option "meshctl -c FILE status did not reach meshd" \
	jqt ".pid == $MESHD_PID" byconf status -o json
check socket_from_mesh_config "MESH_CONFIG=FILE meshctl status did not reach meshd" \
	jqt ".pid == $MESHD_PID" byenv status -o json
bad=""
for cmd in services "backends web" circuits "config show"; do
	# shellcheck disable=SC2086
	byconf $cmd -o json >/dev/null 2>&1 || bad="$bad -c:$cmd"
	# shellcheck disable=SC2086
	byenv $cmd -o json >/dev/null 2>&1 || bad="$bad env:$cmd"
done
check socket_from_config_every_command "failed:$bad" test -z "$bad"
byenv check >"$TMP/check.out" 2>&1
r=$?
check check_reads_mesh_config "meshctl check with MESH_CONFIG (rc $r): $(grep FAIL "$TMP/check.out")" \
	bash -c '[ "$0" = 0 ] && grep -q "^\[ok\] *config valid: $1" "$2" &&
		grep -q "^\[ok\] *daemon reachable: meshd .*, pid $3," "$2"' \
	"$r" "$TMP/meshd.json" "$TMP/check.out" "$MESHD_PID"
echo '{ "version": 1, "admin": { "socket": "relative" } }' >"$TMP/badsock.json"
"$MESHCTL" -c "$TMP/badsock.json" status >/dev/null 2>"$TMP/err"
r=$?
check socket_from_invalid_config "rc $r: $(cat "$TMP/err")" bash -c '[ "$0" = 1 ] &&
	grep -q "admin.socket: not an absolute path" "$1" &&
	grep -q "cannot tell where meshd listens: the config .*badsock.json is invalid" "$1"' \
	"$r" "$TMP/err"

# Active connections from real traffic appear in backends, services and status.
in_cgroup "$CG" python3 -c '
import os, socket, sys, time
c = [socket.create_connection(("127.77.4.20", 80)) for _ in range(4)]
for _ in range(300):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)' "$TMP/release" >/dev/null 2>&1 &
hold=$!
active_is() { jqt "[.backends[].active_connections] | add == $1" ctl backends web -o json; }
check backends_active "backends web active connections never summed to 4" \
	wait_for 10 active_is 4
check services_active "services web active" jqt \
	'.services[] | select(.name == "web") | .active_connections == 4' ctl services -o json
check status_active "status active" jqt '.active_connections == 4' ctl status -o json
touch "$TMP/release"
wait $hold

# Prefix matching, usage errors (2) and failures (1).
check prefix_match "'meshctl serv' did not run services" jqt '.services | length == 2' ctl serv -o json
ctl c >/dev/null 2>"$TMP/err"
check ambiguous_prefix "'c' not reported ambiguous" grep -q ambiguous "$TMP/err"
rc() { "$@" >/dev/null 2>&1; echo $?; }
check unknown_command_2 "unknown command" test "$(rc ctl frobnicate)" = 2
check missing_arg_2 "backends without SERVICE" test "$(rc ctl backends)" = 2
check extra_arg_2 "status with an argument" test "$(rc ctl status extra)" = 2
check bad_output_2 "-o yaml" test "$(rc ctl -o yaml status)" = 2
check unknown_service_1 "backends nosuch" test "$(rc ctl backends nosuch)" = 1
check no_daemon_1 "missing socket" test "$(rc "$MESHCTL" --socket "$TMP/none.sock" status)" = 1
"$MESHCTL" --socket "$TMP/none.sock" status 2>"$TMP/err"
check no_daemon_message "no hint on stderr: $(cat "$TMP/err")" grep -q "cannot reach meshd" "$TMP/err"
check env_socket "MESH_ADMIN__SOCKET not honoured" \
	env MESH_ADMIN__SOCKET="$SOCK" "$MESHCTL" status -o json >/dev/null

# Reload: an added service goes live; an invalid file is refused with its problems, exit 1.
cp "$TMP/meshd.json" "$TMP/good.json"
observe_config "$TMP/meshd.json" $MPORT "$(jq -c '. + [{"name":"db","vip":"127.77.4.22",
	"port":5432,"backends":[{"address":"127.0.0.1","port":'$B3'}]}]' <<<"$SERVICES")"
out=$(ctl reload)
check reload_ok "reload said: $out" grep -q "reloaded: config generation 2" <<<"$out"
check reload_applied "db not listed after reload" jqt '[.services[].name] | index("db") != null' \
	ctl services -o json
sed -i 's/"round_robin"/"bogus"/' "$TMP/meshd.json"
ctl reload >"$TMP/out" 2>"$TMP/err"
r=$?
check reload_invalid_1 "invalid reload exited $r" test $r = 1
check reload_invalid_errors "problem not shown: $(cat "$TMP/err")" \
	grep -q 'load_balancer.algorithm' "$TMP/err"
check reload_invalid_json "reload -o json" jqt \
	'.result == "error" and (.errors | length) >= 1 and .config_generation == 2' \
	sh -c "'$MESHCTL' --socket '$SOCK' reload -o json 2>/dev/null; true"
check reload_kept_old "generation changed after an invalid reload" jqt \
	'.config_generation == 2 and .reloads.error == 2' ctl status -o json

# check: all green on this setup; clear failures for a non-bpffs pin path and a bad config.
cp "$TMP/good.json" "$TMP/meshd.json"
ctl check --config "$TMP/meshd.json" >"$TMP/check.out"
r=$?
check check_ok "check failed (rc $r): $(grep FAIL "$TMP/check.out")" test $r = 0
check check_lines "check lines" test "$(grep -c '^\[ok\]' "$TMP/check.out")" -ge 10
mkdir -p "$TMP/notbpf"
observe_config "$TMP/nobpffs.json" $MPORT "$SERVICES" "$TMP/notbpf/pins"
ctl check --pre --config "$TMP/nobpffs.json" >"$TMP/check.out"
r=$?
check check_bpffs_fails "rc $r: $(cat "$TMP/check.out")" \
	grep -q '^\[FAIL\] bpffs mounted: pin path '"$TMP"'/notbpf/pins: not on a bpf' "$TMP/check.out"
check check_bpffs_rc "exit $r" test $r = 1
check check_bpffs_hint "no fix hint" grep -q '^ *fix: mount bpffs' "$TMP/check.out"
echo '{ "version": 1, "telemetry": { "metrics_listen": "nowhere" } }' >"$TMP/bad.json"
ctl check --pre --config "$TMP/bad.json" >"$TMP/check.out"
r=$?
check check_config_fails "rc $r: $(cat "$TMP/check.out")" \
	grep -q '^\[FAIL\] config valid' "$TMP/check.out"
check check_config_detail "the problem is not named" grep -q 'telemetry.metrics_listen' \
	"$TMP/check.out"
check check_config_rc "exit $r" test $r = 1
check check_json "check -o json" jqt \
	'.ok == false and any(.checks[]; .name == "config valid" and .ok == false and .hint != null)' \
	sh -c "'$MESHCTL' check --pre -o json --config '$TMP/bad.json'; true"
# Moving admin.socket by a reload sent over the old socket: the answer still arrives, the new
# socket serves, the old path goes away.
cp "$TMP/good.json" "$TMP/meshd.json"
sed -i "s|$TMP/run/admin.sock|$TMP/run3/admin.sock|" "$TMP/meshd.json"
out=$(ctl reload 2>&1)
check socket_move_answered "reload over the old socket said: $out" grep -q "reloaded" <<<"$out"
SOCK=$TMP/run3/admin.sock
check socket_move_serves "new socket" jqt '.ready == true' ctl status -o json
check socket_move_old_removed_at_once "old socket still there" test ! -e "$TMP/run/admin.sock"

# Two moves within 2 s, the second asked for over the first socket: on one keep-alive connection
# to run3, a reload moves the socket to run4, then a second reload on that same (now retired)
# connection moves it to run5. The second used to free the run3 listener, this connection with
# it, inside its own handler (use-after-free, meshd died under ASan).
sed "s|$TMP/run3/admin.sock|$TMP/run4/admin.sock|" "$TMP/meshd.json" >"$TMP/move4.json"
sed "s|$TMP/run3/admin.sock|$TMP/run5/admin.sock|" "$TMP/meshd.json" >"$TMP/move5.json"
python3 - "$SOCK" "$TMP/meshd.json" "$TMP/move4.json" "$TMP/move5.json" >"$TMP/moves.out" <<'PY'
import json, shutil, socket, sys
sock, cfg, first, second = sys.argv[1:]
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sock)
f = s.makefile("rb")
def reload():
    s.sendall(b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    status = f.readline().split()[1].decode()
    length = 0
    while True:
        line = f.readline().strip()
        if not line:
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, json.loads(f.read(length))["result"]
shutil.copy(first, cfg)
print("first", *reload())
shutil.copy(second, cfg)
print("second", *reload())
PY
check socket_moves_twice_on_one_connection "answers: $(tr '\n' ' ' <"$TMP/moves.out")" \
	grep -qx "second 200 ok" "$TMP/moves.out"
check socket_moves_twice_meshd_alive "meshd died: $(grep -m3 -E 'ERROR|Sanitizer|SEGV' "$TMP/meshd.log")" \
	kill -0 "$MESHD_PID"
SOCK=$TMP/run5/admin.sock
check socket_moves_twice_serves "the last socket does not serve" jqt '.ready == true' \
	ctl status -o json
check socket_moves_twice_paths "left: $(ls "$TMP"/run4 2>&1)" test ! -e "$TMP/run4/admin.sock"

# Scrapes, one abandoned mid-stream, before the leak-checked exit below.
python3 - $MPORT <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
s.recv(100)
s.close()
PY
check scrape_after_abandoned_stream "meshd stopped answering after a client left mid-scrape" \
	curl -sf -o /dev/null "http://127.0.0.1:$MPORT/metrics"
if command -v setpriv >/dev/null; then
	setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
		"$MESHCTL" check --pre >"$TMP/check.out" 2>&1
	r=$?
	check check_unprivileged "rc $r: $(grep FAIL "$TMP/check.out")" \
		grep -q '^\[FAIL\] capabilities: missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN' \
		"$TMP/check.out"
	check check_unprivileged_probes "a probe blamed the kernel for missing privileges" \
		grep -q '^\[FAIL\] BPF program types: cannot probe without CAP_BPF' "$TMP/check.out"
	check check_unprivileged_rc "exit $r" test $r = 1
else
	skip check_unprivileged "no setpriv"
fi
kill $MESHD_PID
wait $MESHD_PID 2>/dev/null
r=$?
# Under ASan this also catches leaks in the admin and metrics paths exercised above.
check meshd_clean_exit "meshd exited $r on SIGTERM: $(grep -m3 -E 'ERROR|Sanitizer' "$TMP/meshd.log")" \
	test $r = 0
ctl check --config "$TMP/good.json" >"$TMP/check.out"
r=$?
check check_daemon_down "rc $r: $(grep daemon "$TMP/check.out")" \
	grep -q '^\[FAIL\] daemon reachable' "$TMP/check.out"
check admin_socket_removed "socket left behind after meshd stopped" test ! -e "$SOCK"
exit 0
