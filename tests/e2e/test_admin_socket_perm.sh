#!/usr/bin/env bash
# The admin socket where another user could replace it: a socket in a directory others may write
# to (e.g. /tmp itself) could be removed and re-created by that user, whose server would then
# feed root's meshctl forged answers. meshd refuses such a directory (validate, and at start),
# meshctl check says so, and meshctl refuses to believe a socket served by another user.
# Metrics port 20110.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_root
need_built "$MESHD" "$MESHCTL"
command -v setpriv >/dev/null || {
	fail setpriv "setpriv (util-linux) is needed to act as another user"
	exit 1
}

MPORT=20110
observe_cgroup sockperm
SERVICES='[{"name":"api","vip":"127.77.25.1","port":80,"backends":[{"address":"127.0.0.1","port":20111}]}]'
# A directory like /tmp: world-writable and sticky; and one everyone may write to, not sticky.
SHARED=$(mktemp -d /tmp/meshtest-shared.XXXXXX)
defer "rm -rf '$SHARED'"
chmod 1777 "$SHARED"
mkdir -m 0777 "$TMP/open"
chmod 0755 "$TMP" # others may reach $TMP/open (as they would /tmp/open)

# --- validate and start refuse a socket directly in a directory others may write to -------------
for case in sticky:"$SHARED" open:"$TMP/open"; do
	dir=${case#*:}
	ADMIN_SOCK=$dir/admin.sock observe_config "$TMP/bad.json" $MPORT "$SERVICES"
	out=$("$MESHD" validate "$TMP/bad.json" 2>&1)
	case "$out" in
	"admin.socket: in a directory others can change: $dir: writable by others (mode "*)
		pass "validate_refuses_${case%%:*}_dir" ;;
	*) fail "validate_refuses_${case%%:*}_dir" "$out" ;;
	esac
done
ADMIN_SOCK=$TMP/open/admin.sock observe_config "$TMP/bad.json" $MPORT "$SERVICES"
timeout 10 "$MESHD" --config "$TMP/bad.json" >"$TMP/bad.log" 2>&1
rc=$?
"$MESHD" --cleanup --config "$TMP/bad.json" >/dev/null 2>&1
check start_refuses_open_dir "rc=$rc: $(tail -n 2 "$TMP/bad.log")" bash -c '[ "$0" -ne 0 ] &&
	grep -q "^admin.socket: in a directory others can change: $1: writable by others" "$2" &&
	[ ! -e "$1/admin.sock" ]' "$rc" "$TMP/open" "$TMP/bad.log"
# A missing directory below a sticky one is fine: meshd creates it 0700, its own.
ADMIN_SOCK=$SHARED/meshd/admin.sock observe_config "$TMP/good.json" $MPORT "$SERVICES"
if start_meshd "$TMP/good.json" $MPORT; then
	check creates_private_dir "mode $(stat -c '%a %U' "$SHARED/meshd")" \
		test "$(stat -c '%a %U' "$SHARED/meshd")" = "700 root"
	check meshctl_talks_to_root_socket "meshctl status failed" \
		"$MESHCTL" --socket "$SHARED/meshd/admin.sock" status -o json
	"$MESHCTL" -c "$TMP/good.json" check --pre >"$TMP/check.out"
	check check_admin_dir_ok "$(grep 'admin socket' "$TMP/check.out")" \
		grep -q '^\[ok\] *admin socket directory private: ' "$TMP/check.out"
	"$MESHCTL" -c "$TMP/bad.json" check --pre >"$TMP/check.out"
	check check_admin_dir_fails "$(grep 'admin socket' "$TMP/check.out")" \
		grep -q "^\[FAIL\] admin socket directory private: $TMP/open/admin.sock: $TMP/open: writable by others" "$TMP/check.out"
else
	fail creates_private_dir "meshd did not start: $(tail -n 3 "$TMP/meshd.log")"
fi

# --- another user's socket: root's meshctl does not believe it -----------------------------------
# nobody serves a forged status on a socket of its own in the shared directory.
FORGED=$SHARED/forged.sock
PY3=/usr/bin/python3 # the system one: another user may not reach a per-user install
[ -x "$PY3" ] || PY3=python3
setpriv --reuid=65534 --regid=65534 --clear-groups "$PY3" - "$FORGED" >"$TMP/forger.log" 2>&1 <<'PY' &
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
body = json.dumps({"version": "forged", "pid": 1, "ready": True, "config_generation": 666}).encode()
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n%s" % (len(body), body))
    c.close()
PY
forger=$!
defer "kill $forger 2>/dev/null"
wait_for 5 test -S "$FORGED" || fail forger "the other user's server did not start: $(cat "$TMP/forger.log")"
"$MESHCTL" --socket "$FORGED" status -o json >"$TMP/forged.out" 2>"$TMP/forged.err"
rc=$?
check forged_socket_refused "rc=$rc out=$(cat "$TMP/forged.out") err=$(cat "$TMP/forged.err")" \
	bash -c '[ "$0" = 1 ] && [ ! -s "$1" ] &&
		grep -q "runs neither as root nor as you" "$2"' "$rc" "$TMP/forged.out" "$TMP/forged.err"
exit 0
