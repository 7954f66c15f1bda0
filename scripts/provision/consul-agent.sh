#!/usr/bin/env bash
# Installs and starts a Consul agent on a Vagrant VM (Debian 12): HashiCorp's apt repository,
# /etc/consul.d/consul.hcl, the packaged systemd unit. ROLE=server runs the single server of the
# datacenter (UI on, bootstrap_expect 1); ROLE=client joins RETRY_JOIN. Connect is on, so the
# cluster has a Connect CA and intentions. Not run by CI (no Consul binary can be installed on
# the test machines): the emulator under tests/ stands in for it there.
#   ROLE        server or client (required)
#   BIND_ADDR   the VM's private address (required)
#   RETRY_JOIN  the address of the server (client)
#   DATACENTER  default dc1
set -euo pipefail

: "${ROLE:?ROLE: server or client}"
: "${BIND_ADDR:?BIND_ADDR: the private address of this VM}"
DATACENTER=${DATACENTER:-dc1}

if ! command -v consul >/dev/null; then
	apt-get update -q
	apt-get install -y -q curl gnupg lsb-release
	curl -fsSL https://apt.releases.hashicorp.com/gpg |
		gpg --dearmor --yes -o /usr/share/keyrings/hashicorp.gpg
	echo "deb [signed-by=/usr/share/keyrings/hashicorp.gpg] https://apt.releases.hashicorp.com $(lsb_release -cs) main" \
		>/etc/apt/sources.list.d/hashicorp.list
	apt-get update -q
	apt-get install -y -q consul
fi

{
	echo "datacenter = \"$DATACENTER\""
	echo 'data_dir = "/opt/consul"'
	echo "bind_addr = \"$BIND_ADDR\""
	echo 'connect { enabled = true }'
	echo 'ports { grpc = 8502 }'
	if [ "$ROLE" = server ]; then
		echo 'server = true'
		echo 'bootstrap_expect = 1'
		echo 'ui_config { enabled = true }'
		echo 'client_addr = "0.0.0.0"'
	else
		echo 'client_addr = "127.0.0.1"'
		: "${RETRY_JOIN:?RETRY_JOIN: the address of the server}"
		echo "retry_join = [\"$RETRY_JOIN\"]"
	fi
} >/etc/consul.d/consul.hcl
consul validate /etc/consul.d/
systemctl enable consul
systemctl restart consul
# Ready once the agent has a leader.
for _ in $(seq 60); do
	[ -n "$(curl -sf http://127.0.0.1:8500/v1/status/leader | tr -d '"')" ] && exit 0
	sleep 1
done
echo "consul: no leader after 60 s" >&2
exit 1
