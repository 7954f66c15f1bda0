#!/usr/bin/env bash
# Installs every Debian package the build, the tests, the demo and the benchmarks need, and the
# npm packages of the test OTLP receiver (tests/otlp, from its package-lock.json).
# Idempotent. With --if-missing it returns at once when everything is already there.
set -euo pipefail

PKGS=(
	make gcc clang llvm pkg-config bpftool libbpf-dev libelf-dev zlib1g-dev libssl-dev
	libcjson-dev libcurl4-openssl-dev libnghttp2-dev libc-ares-dev libclang-rt-14-dev clang-format
	python3 curl iproute2 iptables openssl procps psmisc
	prometheus dnsmasq haproxy stunnel4 wrk iperf3 jq systemd util-linux tcpdump tshark
	bind9-dnsutils dnsperf mptcpize python3-h2
	gnuplot-nox nodejs
	vagrant # test_provision: `vagrant validate` of vagrant/Vagrantfile (no VM is started)
)
# npm comes with nodejs from some sources (whose nodejs conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || PKGS+=(npm)
OTLP_DIR=$(cd "$(dirname "$0")/../tests/otlp" && pwd)

# The receiver's packages, pinned by tests/otlp/package-lock.json (never committed: node_modules).
npm_deps() {
	[ -d "$OTLP_DIR/node_modules/@opentelemetry/otlp-transformer" ] && return 0
	echo "install-deps: npm packages for tests/otlp"
	npm ci --prefix "$OTLP_DIR" --no-audit --no-fund --loglevel=error >/dev/null
}

missing() {
	local p
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
	done
}

if [ "${1:-}" = "--if-missing" ] && [ -z "$(missing)" ]; then
	npm_deps
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: $(missing | tr '\n' ' ')" >&2
	echo "install-deps: run as root (sudo make ...) to install them" >&2
	exit 1
fi
echo "install-deps: installing $(missing | tr '\n' ' ')"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# prometheus and dnsmasq ship services we start ourselves in tests; keep apt from starting them.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
npm_deps
echo "install-deps: done"
