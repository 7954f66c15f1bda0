#!/usr/bin/env bash
# Writes Consul intentions (source -> destination: allow|deny) through the HTTP API
# (PUT /v1/connect/intentions/exact), which every meshd provisioned with MTLS=1 obeys for the
# services it serves (authorization.intentions). Run on the Vagrant server after the agent is
# up, by tests/e2e/test_provision.sh against the emulator, and by hand to change one:
#   INTENTIONS="api->web=deny" /mesh/scripts/provision/consul-intentions.sh
# Settings from the environment:
#   CONSUL_HTTP_ADDR  agent (default http://127.0.0.1:8500)
#   CONSUL_HTTP_TOKEN ACL token with intentions:write on the destinations (optional)
#   INTENTIONS        "source->destination=allow|deny ..." (required; `*` allowed as a name)
set -euo pipefail

CONSUL_HTTP_ADDR=${CONSUL_HTTP_ADDR:-http://127.0.0.1:8500}
: "${INTENTIONS:?INTENTIONS: \"source->destination=allow|deny ...\"}"
auth=()
[ -n "${CONSUL_HTTP_TOKEN:-}" ] && auth=(-H "X-Consul-Token: $CONSUL_HTTP_TOKEN")

for i in $INTENTIONS; do
	pair=${i%%=*} action=${i#*=}
	src=${pair%%->*} dst=${pair#*->}
	if [ "$pair" = "$i" ] || [ "$src" = "$pair" ] || [ -z "$src" ] || [ -z "$dst" ] ||
		{ [ "$action" != allow ] && [ "$action" != deny ]; }; then
		echo "INTENTIONS: '$i' is not source->destination=allow|deny" >&2
		exit 2
	fi
	ok=$(curl -sf -X PUT "${auth[@]}" -d "{\"SourceType\":\"consul\",\"Action\":\"$action\"}" \
		"$CONSUL_HTTP_ADDR/v1/connect/intentions/exact?source=$src&destination=$dst")
	if [ "$ok" != true ]; then
		echo "Consul did not take $src -> $dst $action (answer: $ok)" >&2
		exit 1
	fi
	echo "intention $src -> $dst: $action"
done
