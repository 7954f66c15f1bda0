#!/usr/bin/env bash
# Repository hygiene that CI enforces: formatting, no build outputs or keys tracked.
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

files=$(git ls-files '*.c' '*.h')
if [ -z "$files" ]; then
	fail clang_format "no C files tracked"
elif out=$(clang-format --dry-run -Werror $files 2>&1); then
	pass clang_format
else
	fail clang_format "run 'make fmt': $(echo "$out" | grep -m1 'error' )"
fi

bad=$(git ls-files | grep -E '(^|/)build/|\.o$|vmlinux\.h$|\.pem$|\.key$' | head -3)
check no_build_outputs_or_keys_tracked "tracked: $bad" test -z "$bad"

# The harness itself: a suite that exits 0 without printing a result line proves nothing and is
# counted as a failure; one that exits non-zero without a FAIL line too. Run on a scratch copy.
mkdir -p "$TMP/harness/tests/e2e"
cp tests/run.sh "$TMP/harness/tests/run.sh"
printf '#!/usr/bin/env bash\necho "PASS fine.case"\n' >"$TMP/harness/tests/e2e/test_fine.sh"
printf '#!/usr/bin/env bash\nexit 0\n' >"$TMP/harness/tests/e2e/test_quiet.sh"
printf '#!/usr/bin/env bash\necho "PASS crash.before"\nexit 3\n' >"$TMP/harness/tests/e2e/test_crash.sh"
MESH_BUILD=$TMP/harness/build "$TMP/harness/tests/run.sh" e2e >"$TMP/harness.out" 2>&1
rc=$?
check harness_counts_silent_suite "rc=$rc: $(tr '\n' ' ' <"$TMP/harness.out")" bash -c '
	[ "$0" = 1 ] && grep -qx "2 passed, 2 failed, 0 skipped" "$1" &&
	grep -q "^FAIL test_quiet: printed no PASS, FAIL or SKIP line" "$1" &&
	grep -q "^FAIL test_crash: exited with status 3" "$1"' "$rc" "$TMP/harness.out"
