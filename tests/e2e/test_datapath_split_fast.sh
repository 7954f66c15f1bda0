#!/usr/bin/env bash
# Where a split connect finds its subsets (include/mesh_abi.h, mesh_split_fast): 1,030 services
# of 10 backends with a 90/10 split (dpbench populate; subset b is backend 9, 127.0.0.1:18909),
# in a datapath sized for 1,100 services. The first 1,024 split services get mesh_split_fast
# entries (the capacity: MESH_SPLIT_SLOTS / 2), the rest are logged once and keep to mesh_split.
# Real connects to service 0 and service 1,029 split 90/10 (subset b's count within 5 binomial
# standard deviations of 10%: 2,000 connects, 133..267); then each one's mesh_split entry is
# deleted by hand: service 0 keeps splitting (its connects read the array entry alone), service
# 1,029 balances as a whole (no subset counted, no connect failed), which shows which lookup
# each one makes. Ports 18900-18909, VIPs 127.77.2.100-101.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/datapath_lib.sh"

need_root
DP_OPEN_ARGS="--max-services 1100 --max-backends 12000"
dp_setup split-fast
BENCH=$TOOLS/dpbench
need_built "$BENCH"
spawn bench-servers "$BENCH" serve 18900 10
wait_for 5 port_open 127.0.0.1 18909 || fail setup "bench servers did not start"

# picked SID I: connects mesh_split_cnt counted for subset I of service SID.
# shellcheck disable=SC2046 # the key's bytes, one word each
picked() {
	bpftool -j map lookup pinned "$PIN/mesh_split_cnt" key $(printf '%d %d 0 0' $(($1 & 255)) $(($1 >> 8))) |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["formatted"]["value"]["picked"]['"$2"'])'
}
# split_round SID VIP PORT: "failed picked_a picked_b" over 2,000 connects through the VIP.
split_round() {
	local a0 b0 failed
	a0=$(picked "$1" 0) b0=$(picked "$1" 1)
	failed=$(in_cgroup "$CG" "$BENCH" connects "$2" "$3" 2000 | kv connect_failed)
	echo "$failed $(($(picked "$1" 0) - a0)) $(($(picked "$1" 1) - b0))"
}
# shellcheck disable=SC2046
drop_split() { bpftool map delete pinned "$PIN/mesh_split" key $(printf '%d %d 0 0' $(($1 & 255)) $(($1 >> 8))); }

out=$("$BENCH" populate "$PIN" 1030 18900 0 10 split 2>&1)
expect populated_1030_split_services "$out" '[[ "$out" == *services=1030* ]]'
expect beyond_capacity_logged_once "$out" \
	'[ "$(grep -c "beyond mesh_split_fast" <<<"$out")" = 1 ] && [[ "$out" == *capacity=1024* ]]'

# expect_round CASE SID VIP PORT SPLIT(yes|no): 2,000 connects, none failed, and split 90/10
# (yes) or not counted in any subset (no).
expect_round() {
	local failed a b
	read -r failed a b < <(split_round "$2" "$3" "$4")
	if [ "$5" = yes ]; then
		expect "$1" "failed=$failed a=$a b=$b" \
			'[ "$failed" = 0 ] && [ $((a + b)) = 2000 ] && within "$b" 133 267'
	else
		expect "$1" "failed=$failed a=$a b=$b" '[ "$failed" = 0 ] && [ $((a + b)) = 0 ]'
	fi
}
expect_round fast_service_splits_90_10 0 127.77.2.100 18000 yes
expect_round beyond_capacity_service_splits_90_10 1029 127.77.2.101 18029 yes
# without their mesh_split entries
drop_split 0
drop_split 1029
expect_round fast_service_reads_the_array 0 127.77.2.100 18000 yes
expect_round beyond_capacity_service_reads_the_hash 1029 127.77.2.101 18029 no
