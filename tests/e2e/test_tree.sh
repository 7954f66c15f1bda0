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
