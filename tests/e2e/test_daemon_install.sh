#!/usr/bin/env bash
# `make install` / `make uninstall` into a staging root (DESTDIR under $TMP, never the real
# system): files and modes, the unit rewritten for PREFIX and accepted by `systemd-analyze
# verify`, the installed default config valid, an edited config kept by a second install and by
# uninstall.
. "$(dirname "$0")/lib.sh"
need_built "$MESHD"

DEST=$TMP/root
UNIT=$DEST/etc/systemd/system/meshd.service
mk() { make -C "$ROOT" -s --no-print-directory BUILD="$BUILD_DIR" PREFIX=/usr DESTDIR="$DEST" "$@"; }

if mk install >"$TMP/install.log" 2>&1; then
	pass install_runs
else
	fail install_runs "$(tail -n 3 "$TMP/install.log")"
	exit 0
fi
mode() { stat -c %a "$1" 2>/dev/null; }
check install_modes \
	"meshd=$(mode "$DEST/usr/sbin/meshd") unit=$(mode "$UNIT") config=$(mode "$DEST/etc/meshd/meshd.json")" \
	test "$(mode "$DEST/usr/sbin/meshd") $(mode "$DEST/usr/bin/meshctl") $(mode "$UNIT") $(mode "$DEST/etc/meshd/meshd.json")" = "755 755 644 640"
check unit_paths_follow_prefix "$(grep -m1 '^ExecStart=' "$UNIT")" \
	grep -q '^ExecStart=/usr/sbin/meshd --config /etc/meshd/meshd.json$' "$UNIT"
check unit_is_notify_with_watchdog "$(grep -E '^(Type|WatchdogSec|ExecReload)=' "$UNIT" | tr '\n' ' ')" \
	test "$(grep -cE '^(Type=notify|WatchdogSec=[0-9]+s|ExecReload=/bin/kill -HUP \$MAINPID|Restart=on-failure)$' "$UNIT")" = 4

# systemd-analyze needs the binaries where the unit says: verify a copy pointing into $DEST.
if command -v systemd-analyze >/dev/null; then
	sed "s|/usr/sbin/meshd|$DEST/usr/sbin/meshd|g" "$UNIT" >"$TMP/meshd.service"
	systemd-analyze verify "$TMP/meshd.service" >"$TMP/verify.log" 2>&1
	status=$?
	check unit_verifies "exit $status: $(head -n 3 "$TMP/verify.log")" \
		test "$status" = 0 -a ! -s "$TMP/verify.log"
else
	skip unit_verifies "systemd-analyze not installed"
fi
# valid as a file, and on this host once `cgroup` names its cgroup2 mount (/sys/fs/cgroup on
# Debian 12; a hybrid host mounts it elsewhere)
out=$("$DEST/usr/sbin/meshd" validate --offline "$DEST/etc/meshd/meshd.json" 2>&1)
out="$out $(MESH_CGROUP="$CG2" "$DEST/usr/sbin/meshd" validate "$DEST/etc/meshd/meshd.json" 2>&1)"
check installed_config_valid "$out" test "$out" = "configuration is valid configuration is valid"

echo '{ "version": 1 }' >"$DEST/etc/meshd/meshd.json"
mk install >/dev/null 2>&1
check reinstall_keeps_config "config overwritten" grep -q '^{ "version": 1 }$' "$DEST/etc/meshd/meshd.json"

mk uninstall >"$TMP/uninstall.log" 2>&1
left=$(cd "$DEST" && find . -type f | sort | tr '\n' ' ')
check uninstall_removes_all_but_config "left: $left" test "$left" = "./etc/meshd/meshd.json "
exit 0
