#!/usr/bin/env bash
# Writes the mesh's shared meshd config to Consul KV (the document every meshd provisioned by
# meshd-node.sh layers over its file): one service per "name=vip" in $SERVICES (port 80, its
# backends from Consul's health of that name), all watched through Consul discovery. Run once
# per cluster, from any machine that reaches a Consul agent (the Vagrant server; the e2e test
# against the emulator). A PUT with ?cas keeps concurrent writers from overwriting each other:
# the document is only replaced when it is the one read here (set FORCE=1 to overwrite).
#   CONSUL_HTTP_ADDR  agent (default http://127.0.0.1:8500)
#   CONSUL_HTTP_TOKEN ACL token with key:write on the key (optional)
#   KV_KEY            default meshd/config
#   SERVICES          "name=vip ..." (required), e.g. "web=127.77.100.1 api=127.77.100.2"
#   ALGORITHM         load_balancer.algorithm for the mesh (default round_robin)
set -euo pipefail

CONSUL_HTTP_ADDR=${CONSUL_HTTP_ADDR:-http://127.0.0.1:8500}
KV_KEY=${KV_KEY:-meshd/config}
: "${SERVICES:?SERVICES: \"name=vip ...\"}"
ALGORITHM=${ALGORITHM:-round_robin}
auth=()
[ -n "${CONSUL_HTTP_TOKEN:-}" ] && auth=(-H "X-Consul-Token: $CONSUL_HTTP_TOKEN")

doc=$(for s in $SERVICES; do
	jq -n --arg n "${s%%=*}" --arg vip "${s#*=}" '{name: $n, vip: $vip, port: 80, backends: []}'
done | jq -s --arg alg "$ALGORITHM" '{
	version: 1,
	load_balancer: { algorithm: $alg },
	discovery: { consul: { services: map(.name) } },
	services: .
}')

# The current ModifyIndex (0 when the key is missing) makes the write a check-and-set.
query=
if [ "${FORCE:-0}" != 1 ]; then
	cas=$(curl -s "${auth[@]}" "$CONSUL_HTTP_ADDR/v1/kv/$KV_KEY" | jq -r '.[0].ModifyIndex' 2>/dev/null || true)
	query="?cas=${cas:-0}"
fi
ok=$(curl -sf -X PUT "${auth[@]}" --data-binary "$doc" "$CONSUL_HTTP_ADDR/v1/kv/$KV_KEY$query")
if [ "$ok" != true ]; then
	echo "$KV_KEY changed while it was written (check-and-set failed); run again" >&2
	exit 1
fi
echo "wrote $KV_KEY: $(jq -c '.services | map(.name + "=" + .vip)' <<<"$doc")"
