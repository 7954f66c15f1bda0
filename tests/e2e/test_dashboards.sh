#!/usr/bin/env bash
# The Grafana dashboard (config/grafana/meshd.json) and the alerting rules
# (config/prometheus/meshd-rules.yml) against the real thing:
#  - promtool check rules and promtool test rules (tests/prometheus/meshd-rules.test.yml);
#  - the dashboard is well formed (unique panel ids, every panel queries the datasource variable,
#    every metric it names is documented in docs/metrics.md);
#  - a real Prometheus (Debian's, started here on loopback with its own data dir, the rules
#    loaded) scrapes a real meshd carrying traffic (connects ok, failed, rejected, a breaker
#    opening, a reload, and mTLS connections: meshd's outbound side to its own inbound listener
#    on loopback, with a CA and two identities made by openssl, one connection held open), and
#    every panel's PromQL, with the dashboard variables set to match all, returns data; the
#    mTLS panels (handshakes, authorization, connections, certificate expiry) return a non-zero
#    value. A metric meshd does not export fails (a typo or a removed metric).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mtls_lib.sh" # certificates and the Python client ($TMP/mc.py)
. "$(dirname "$0")/lib_observe.sh" # after: its metric() is the one used here
need_built "$MESHD"
DASH=$ROOT/config/grafana/meshd.json
RULES=$ROOT/config/prometheus/meshd-rules.yml
MPORT=23290 PPORT=23291 OUT_PORT=23215 IN_PORT=23216
A1=23201 A2=23202 DEAD=23209
SECURE=127.77.8.3
# Panels whose every query must show mTLS traffic (a value other than 0), not just a series.
MTLS_PANELS='["mTLS handshakes", "Authorization decisions", "mTLS connections", "Certificate expiry"]'

check rules_check "$(promtool check rules "$RULES" 2>&1 | tail -n 2 | tr '\n' ' ')" \
	promtool check rules "$RULES"
promtool test rules "$ROOT/tests/prometheus/meshd-rules.test.yml" >"$TMP/ptest" 2>&1
check rules_unit_tests "$(tail -n 20 "$TMP/ptest")" grep -q SUCCESS "$TMP/ptest"

# --- the dashboard's shape -------------------------------------------------------------------
python3 - "$DASH" "$ROOT/docs/metrics.md" "$RULES" >"$TMP/shape" 2>&1 <<'PY'
import json, re, sys
dash = json.load(open(sys.argv[1]))
doc = open(sys.argv[2]).read()
rules = open(sys.argv[3]).read()
panels = [p for p in dash["panels"] if p.get("type") != "row"]
ids = [p["id"] for p in dash["panels"]]
problems = []
if len(ids) != len(set(ids)):
    problems.append("duplicate panel ids")
for p in panels:
    if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
        problems.append("panel %r has no query" % p["title"])
    if p.get("datasource", {}).get("uid") != "${datasource}":
        problems.append("panel %r does not use the datasource variable" % p["title"])
names = set(re.findall(r"\b(meshd_[a-z_]+|process_[a-z_]+)\b",
                       json.dumps(dash) + rules))
undocumented = sorted(n for n in names if "`%s`" % n not in doc)
if undocumented:
    problems.append("not in docs/metrics.md: " + ", ".join(undocumented))
print("; ".join(problems) if problems else "ok %d panels" % len(panels))
PY
check dashboard_shape "$(cat "$TMP/shape")" grep -q '^ok ' "$TMP/shape"

# --- a meshd carrying traffic ---------------------------------------------------------------
need_root
need_built "$TOOLS/mesh_client"
command -v prometheus >/dev/null || {
	fail prometheus "prometheus is not installed (scripts/install-deps.sh)"
	exit 1
}
observe_cgroup dashboards
CG_SECURE=$(make_cgroup dashboards-secure)
backend a1 $A1 || fail setup "backend a1 did not start"
backend a2 $A2 || fail setup "backend a2 did not start"
C=$TMP/certs
gen_ca "$C" ca && gen_leaf "$C" ca "$C" web && gen_leaf "$C" ca "$C" secure || {
	fail setup "openssl could not make the certificates"
	exit 1
}
observe_config "$TMP/meshd.json" $MPORT "[
  { \"name\": \"api\", \"vip\": \"127.77.8.1\", \"port\": 80,
    \"backends\": [ {\"address\":\"127.0.0.1\",\"port\":$A1}, {\"address\":\"127.0.0.1\",\"port\":$A2},
                    {\"address\":\"127.0.0.1\",\"port\":$DEAD} ],
    \"circuit_breaker\": { \"consecutive_failures\": 2, \"open_duration\": \"60s\" } },
  { \"name\": \"gone\", \"vip\": \"127.77.8.2\", \"port\": 80,
    \"backends\": [ {\"address\":\"127.0.0.1\",\"port\":$DEAD} ],
    \"load_balancer\": { \"panic_threshold\": 0 },
    \"circuit_breaker\": { \"consecutive_failures\": 1, \"open_duration\": \"60s\",
                           \"max_ejection_percent\": 100 } }
]"
# mTLS: callers in $CG act as `web`; `secure` (served on this host at the port of backend a1) is
# reached through the outbound listener, a TLS tunnel to the inbound listener, then a1.
jq --arg cg "${CG#"$CG2"}" --arg scg "${CG_SECURE#"$CG2"}" --arg c "$C" --argjson a1 $A1 '
	.services += [{ name: "secure", vip: "'$SECURE'", port: 80, mtls: true,
		backends: [{ address: "127.0.0.1", port: $a1 }] }] |
	.mtls = { enabled: true, trust_domain: "'$TD'", cert_source: "files",
		ca_file: ($c + "/ca.crt"), cert_dir: $c, workers: 1,
		outbound_listen: "127.0.0.1:'$OUT_PORT'", inbound_listen: "127.0.0.1:'$IN_PORT'" } |
	.identities = [{ cgroup: $cg, service: "web" },
		{ cgroup: $scg, service: "secure", ports: [$a1] }] |
	.authorization = { default_action: "deny",
		rules: [{ source: "web", destination: "secure", action: "allow" }] }' \
	"$TMP/meshd.json" >"$TMP/m.json" && mv "$TMP/m.json" "$TMP/meshd.json"
start_meshd "$TMP/meshd.json" $MPORT || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
traffic() {
	in_cgroup "$CG" "$TOOLS/mesh_client" -n 30 127.77.8.1 80 >/dev/null 2>&1
	in_cgroup "$CG" "$TOOLS/mesh_client" -n 5 127.77.8.2 80 >/dev/null 2>&1
	in_cgroup "$CG" python3 "$TMP/mc.py" many $SECURE 80 10 >"$TMP/mtls.json" 2>&1
}
traffic
check mtls_traffic "$(cat "$TMP/mtls.json")" test "$(jq .ok "$TMP/mtls.json")" = 10
in_cgroup "$CG" python3 "$TMP/mc.py" hold $SECURE 80 "$TMP/hold.stop" >"$TMP/hold.json" 2>&1 &
defer "touch '$TMP/hold.stop'; kill -9 $! 2>/dev/null"
check mtls_connection_held "$(cat "$TMP/hold.json")" wait_for 10 test -e "$TMP/hold.stop.ready"
kill -HUP "$MESHD_PID"
rejected() { [ "$(metric $MPORT 'meshd_rejects_total{service="gone",reason="circuit_open"}')" -ge 1 ]; }
check traffic_rejected "rejected $(metric $MPORT 'meshd_rejects_total{service="gone",reason="circuit_open"}')" \
	wait_for 5 rejected

cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $RULES
scrape_configs:
  - job_name: meshd
    static_configs:
      - targets: ["127.0.0.1:$MPORT"]
EOF
spawn prometheus prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prom-data" \
	--web.listen-address=127.0.0.1:$PPORT
PROM=http://127.0.0.1:$PPORT
query() { curl -s --get "$PROM/api/v1/query" --data-urlencode "query=$1"; }
scraped() { query 'count_over_time(meshd_up[1m])' | grep -Eq '"value":\[[0-9.]+,"([5-9]|[1-9][0-9]+)"\]'; }
if ! wait_for 60 scraped; then
	fail prometheus_scrapes "no 5 scrapes within 60 s: $(tail -n 5 "$TMP/prometheus.log")"
	exit 1
fi
pass prometheus_scrapes
traffic # counters move between scrapes: rates and increases are not all zero
sleep 2
check rules_loaded_in_prometheus "$(curl -s "$PROM/api/v1/rules" | head -c 300)" \
	sh -c "curl -s '$PROM/api/v1/rules' | grep -q MeshServiceDown"

curl -s "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics.txt"
python3 - "$DASH" "$PROM" "$TMP/metrics.txt" "$MTLS_PANELS" <<'PY'
import json, re, sys, urllib.parse, urllib.request
dash, prom, exported, nonzero = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
have = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", open(exported).read(), re.M))
subst = {"$__rate_interval": "30s", "$instance": ".*", "$service": ".*"}
for p in json.load(open(dash))["panels"]:
    if p.get("type") == "row":
        continue
    case = "panel." + re.sub(r"[^a-z0-9]+", "_", p["title"].lower()).strip("_")
    for t in p["targets"]:
        expr = t["expr"]
        for k, v in subst.items():
            expr = expr.replace(k, v)
        names = set(re.findall(r"\b(meshd_[a-z_]+|process_[a-z_]+)\b", expr))
        missing = sorted(names - have)
        if missing:
            print("FAIL dashboards.%s.%s: meshd exports no %s" % (case, t["refId"], ", ".join(missing)))
            continue
        url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            res = json.load(urllib.request.urlopen(url, timeout=10))
        except Exception as e:  # an HTTP 400 is a PromQL error
            print("FAIL dashboards.%s.%s: %s: %s" % (case, t["refId"], expr, e))
            continue
        result = res.get("data", {}).get("result", [])
        values = [float(r["value"][1]) for r in result]
        if p["title"] in nonzero and not any(v != 0 for v in values):
            print("FAIL dashboards.%s.%s: no mTLS traffic in %s: %s" % (case, t["refId"], expr, values))
        elif res.get("status") == "success" and result:
            print("PASS dashboards.%s.%s" % (case, t["refId"]))
        else:
            print("FAIL dashboards.%s.%s: no data for %s (%s)" % (case, t["refId"], expr, res.get("error", "empty")))
PY
exit 0
