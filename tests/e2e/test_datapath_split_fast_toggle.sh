#!/usr/bin/env bash
# mesh_split_fast's two entries per split service (include/mesh_abi.h, user/datapath/split.c),
# read back from the pinned maps after each change. One `dptool batch` process keeps the
# datapath open throughout (its memory of which entries are in use kept, as in meshd): a 90/10
# split changed to 80/20, 70/30, 60/40 and back to 90/10 moves the service value's split_slot to
# the other entry of its pair every time; the entry named holds the new weights, the other one
# still the previous ones. In a datapath sized for 2 services (so 2 pairs), two split services
# take both pairs; removing the first frees its pair, which a new split service then takes. A
# change by a separate `dptool set` (which adopts the pins) toggles the same way.
# VIPs 127.77.2.110-112; no connects (backends 127.0.0.1:18001-18002 never dialled).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

need_root
DP_OPEN_ARGS="--max-services 2 --max-backends 16"
dp_setup split-toggle

coproc DPB { "$DPTOOL" --pin "$PIN" batch 2>"$TMP/batch.err"; }
defer "kill $DPB_PID 2>/dev/null"

# batch CMD...: runs CMD in the batch process; its exit code (1 when it did not answer in 10 s).
batch() {
	local line
	echo "$*" >&"${DPB[1]}"
	while read -r -t 10 line <&"${DPB[0]}"; do
		[[ "$line" == "done "* ]] && return "${line#done }"
	done
	return 1
}
# split NAME VIP A B [RUN]: service NAME with subsets a (backend :18001) and b (:18002) at A/B
# percent, set by RUN (batch, or dp for a process of its own).
split() {
	${5:-batch} set --name "$1" --vip "$2:80" --alg random --backend 127.0.0.1:18001/a \
		--backend 127.0.0.1:18002/b --split "a=$3" --split "b=$4"
}
# slot NAME: the service value's split_slot (mesh_split_fast entry + 1, 0 for none).
slot() {
	local id
	id=$(svc_field "$1" id)
	bpftool -j map dump pinned "$PIN/mesh_services" | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    v = e["formatted"]["value"]
    if v["service_id"] == '"${id:-999999}"':
        print(v["split_slot"])
        break'
}
# weights E: the first two weights of mesh_split_fast entry E, "A/B" in hundredths of a percent.
weights() {
	# shellcheck disable=SC2046 # the key's bytes, one word each
	bpftool -j map lookup pinned "$PIN/mesh_split_fast" key $(printf '%d %d 0 0' $(($1 & 255)) $(($1 >> 8))) |
		python3 -c 'import json, sys; w = json.load(sys.stdin)["formatted"]["value"]["weight"]; print(f"{w[0]}/{w[1]}")'
}
# change CASE NAME VIP A B [RUN]: sets NAME's split to A/B and checks the toggle from entry
# $s (holding $prev) to the other entry of pair $pair; then s and prev follow.
change() {
	local t want=$(($4 * 100))/$(($5 * 100))
	split "$2" "$3" "$4" "$5" "${6:-batch}" || fail "$1" "dptool set failed ($(tail -n 3 "$TMP/batch.err"))"
	t=$(slot "$2")
	expect "${1}_switches_entry" "split_slot $s -> $t (pair $pair)" \
		'[ -n "$t" ] && [ "$t" -ge 1 ] && [ $(((t - 1) ^ 1)) = $((s - 1)) ] && [ $(((t - 1) / 2)) = $pair ]'
	expect "${1}_entry_in_use_holds_it" "entry $((t - 1)): $(weights $((t - 1)))" \
		'[ "$(weights $((t - 1)))" = "$want" ]'
	expect "${1}_other_entry_keeps_previous" "entry $((s - 1)): $(weights $((s - 1)))" \
		'[ "$(weights $((s - 1)))" = "$prev" ]'
	prev=$want s=$t
}

split one 127.77.2.110 90 10 || { fail setup "dptool set with a split failed: $(cat "$TMP/batch.err")"; exit 1; }
s=$(slot one)
expect first_write_takes_an_entry "split_slot=$s" '[ -n "$s" ] && [ "$s" -ge 1 ]'
[ -n "$s" ] && [ "$s" -ge 1 ] || exit 1
prev=9000/1000 pair=$(((s - 1) / 2))
expect first_entry_holds_90_10 "entry $((s - 1)): $(weights $((s - 1)))" \
	'[ "$(weights $((s - 1)))" = "$prev" ]'
change to_80_20 one 127.77.2.110 80 20
change to_70_30 one 127.77.2.110 70 30
change to_60_40 one 127.77.2.110 60 40
change back_to_90_10 one 127.77.2.110 90 10

# both pairs taken; removing `one` frees its pair for the next split service
split two 127.77.2.111 50 50 || fail setup "dptool set two failed"
t2=$(slot two)
expect second_service_takes_the_other_pair "two=$t2, one's pair $pair" \
	'[ -n "$t2" ] && [ "$t2" -ge 1 ] && [ $(((t2 - 1) / 2)) != $pair ]'
batch del --name one || fail setup "dptool del one failed"
split three 127.77.2.112 30 70 || fail setup "dptool set three failed"
t3=$(slot three)
expect removed_service_frees_its_pair "three=$t3, one's pair was $pair" \
	'[ -n "$t3" ] && [ "$t3" -ge 1 ] && [ $(((t3 - 1) / 2)) = $pair ] && [ "$(weights $((t3 - 1)))" = 3000/7000 ]'
expect nothing_logged "$(cat "$TMP/batch.err")" '[ ! -s "$TMP/batch.err" ]'

# a process of its own adopts the pins and goes on toggling three's pair
s=$t3 prev=3000/7000
change adopted_to_40_60 three 127.77.2.112 40 60 dp
