#!/usr/bin/env bash
# Provisions meshd on one node of a Consul cluster: writes its config (Consul discovery of the
# mesh's services, registration of the services this node runs, the shared Consul KV config at
# $KV_KEY layered over the file) and starts it. Used by vagrant/Vagrantfile on each node (systemd)
# and by tests/e2e/test_provision.sh on network namespaces against the Consul emulator
# (background), so CI runs the same script the VMs do. Settings come from the environment:
#   NODE_NAME         this node's name (default: the host name)
#   NODE_ADDR         the address other nodes reach this node's services on (required)
#   CONSUL_HTTP_ADDR  the local Consul agent (default http://127.0.0.1:8500)
#   DATACENTER        Consul datacenter (default dc1)
#   REGISTER          services this node runs, "name:port ..." (registered in Consul at NODE_ADDR)
#   KV_KEY            the Consul KV key holding the mesh's shared config (default meshd/config)
#   MESHD_ROOT        prefix of every path meshd uses (default "": /etc/meshd, /var/lib/meshd)
#   MESHD_BIN         the meshd binary (default: meshd from PATH)
#   MESHD_CGROUP      cgroup v2 directory the datapath attaches to (default /sys/fs/cgroup)
#   MESHD_PIN         bpffs directory (default /sys/fs/bpf/meshd)
#   METRICS_LISTEN    Prometheus listener (default 127.0.0.1:9464)
#   MTLS              1 (default): mTLS between nodes with certificates from Consul's Connect CA
#                     (mtls.cert_source consul), Consul intentions as the authorization
#                     (authorization.intentions, default_action deny), one identity per
#                     REGISTER service (serving its port, calling as it); 0: plaintext
#   IDENTITY_CGROUP   printf template of a REGISTER service's cgroup, relative to the cgroup2
#                     mount (default /system.slice/%s.service: its systemd unit)
#   MESHD_START       systemd (default: enable and restart meshd.service) or background
#                     (start $MESHD_BIN, its PID in $MESHD_ROOT/run/meshd/meshd.pid, its log in
#                     $MESHD_ROOT/var/log/meshd.log)
set -euo pipefail

NODE_NAME=${NODE_NAME:-$(hostname)}
: "${NODE_ADDR:?NODE_ADDR: the address other nodes reach this node on}"
CONSUL_HTTP_ADDR=${CONSUL_HTTP_ADDR:-http://127.0.0.1:8500}
DATACENTER=${DATACENTER:-dc1}
REGISTER=${REGISTER:-}
KV_KEY=${KV_KEY:-meshd/config}
MESHD_ROOT=${MESHD_ROOT:-}
MESHD_BIN=${MESHD_BIN:-meshd}
MESHD_CGROUP=${MESHD_CGROUP:-/sys/fs/cgroup}
MESHD_PIN=${MESHD_PIN:-/sys/fs/bpf/meshd}
METRICS_LISTEN=${METRICS_LISTEN:-127.0.0.1:9464}
MESHD_START=${MESHD_START:-systemd}
MTLS=${MTLS:-1}
IDENTITY_CGROUP=${IDENTITY_CGROUP:-/system.slice/%s.service}

CONF=$MESHD_ROOT/etc/meshd/meshd.json
RUN=$MESHD_ROOT/run/meshd
mkdir -p "$(dirname "$CONF")" "$RUN" "$MESHD_ROOT/var/lib/meshd" "$MESHD_ROOT/var/log"

# register: [{name, id, address}] from "name:port ...".
register=$(for r in $REGISTER; do
	jq -n --arg n "${r%%:*}" --arg id "${r%%:*}-$NODE_NAME" --arg a "$NODE_ADDR:${r##*:}" \
		'{name: $n, id: $id, address: $a}'
done | jq -s .)

# With MTLS=1: the Connect CA, intentions, and identities [{cgroup, service, ports}].
mtls='{}'
if [ "$MTLS" = 1 ]; then
	identities=$(for r in $REGISTER; do
		# shellcheck disable=SC2059 # the template is the point
		jq -n --arg cg "$(printf "$IDENTITY_CGROUP" "${r%%:*}")" --arg n "${r%%:*}" \
			--argjson port "${r##*:}" '{cgroup: $cg, service: $n, ports: [$port]}'
	done | jq -s .)
	mtls=$(jq -n --argjson ids "$identities" '{
		mtls: { enabled: true, cert_source: "consul" },
		identities: $ids,
		authorization: { default_action: "deny", intentions: true }
	}')
fi

jq -n --arg node "$NODE_NAME" --arg dc "$DATACENTER" --arg consul "$CONSUL_HTTP_ADDR" \
	--arg key "$KV_KEY" --arg root "$MESHD_ROOT" --arg cg "$MESHD_CGROUP" --arg pin "$MESHD_PIN" \
	--arg metrics "$METRICS_LISTEN" --argjson register "$register" --argjson mtls "$mtls" '{
	version: 1,
	node: { name: $node, datacenter: $dc },
	cgroup: $cg,
	bpf_pin_path: $pin,
	state_dir: ($root + "/var/lib/meshd"),
	admin: { socket: ($root + "/run/meshd/admin.sock") },
	telemetry: { metrics_listen: $metrics },
	config_source: { consul_kv: $key },
	discovery: { backend: "consul",
		consul: { address: $consul, register: $register } },
	services: []
} + $mtls' >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
"$MESHD_BIN" validate "$CONF"

case $MESHD_START in
systemd)
	systemctl daemon-reload
	systemctl enable meshd
	systemctl restart meshd
	;;
background)
	"$MESHD_BIN" --config "$CONF" >>"$MESHD_ROOT/var/log/meshd.log" 2>&1 &
	echo $! >"$RUN/meshd.pid"
	;;
*)
	echo "MESHD_START: $MESHD_START (expected systemd or background)" >&2
	exit 2
	;;
esac
echo "meshd on $NODE_NAME: config $CONF, Consul $CONSUL_HTTP_ADDR, KV config $KV_KEY, mTLS $MTLS"
