#!/usr/bin/env bash
# Mounts bpffs at /sys/fs/bpf when it is not mounted (pinned maps and programs live there).
set -euo pipefail
if ! awk '$2=="/sys/fs/bpf" && $3=="bpf" {found=1} END {exit !found}' /proc/mounts; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bpffs is not mounted at /sys/fs/bpf; run as root" >&2
		exit 1
	fi
	mkdir -p /sys/fs/bpf
	mount -t bpf bpf /sys/fs/bpf
fi
