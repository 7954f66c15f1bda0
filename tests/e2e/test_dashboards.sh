#!/usr/bin/env bash
# The Grafana dashboard (config/grafana/meshd.json) and the alerting rules
# (config/prometheus/meshd-rules.yml) against the real thing:
#  - promtool check rules and promtool test rules (tests/prometheus/meshd-rules.test.yml);
#  - the dashboard is well formed (unique panel ids, every panel queries the datasource variable,
#    every metric it names is documented in docs/metrics.md, or pending);
#  - a real Prometheus (Debian's, started here on loopback with its own data dir, the rules
#    loaded) scrapes a real meshd carrying traffic (connects ok, failed, rejected, a breaker
#    opening, a reload), and every panel's PromQL, with the dashboard variables set to match
#    all, returns data. A panel naming a metric meshd does not export yet is listed with the
#    feature it waits on (PENDING below) and skipped; once the metric exists, an empty panel
#    fails. A metric neither exported nor pending fails (a typo or a removed metric).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_observe.sh"
need_built "$MESHD"
DASH=$ROOT/config/grafana/meshd.json
RULES=$ROOT/config/prometheus/meshd-rules.yml
MPORT=23290 PPORT=23291
A1=23201 A2=23202 DEAD=23209

# Metrics the dashboard or rules use that come with features not on this branch yet.
PENDING='{
  "meshd_authz_decisions_total": "mTLS authorization (issue 9, engineer mtls)",
  "meshd_mtls_connections_active": "the mTLS proxy (issue 9, engineer mtls)",
  "meshd_mtls_cert_expiry_timestamp_seconds": "mTLS identities (issue 9, engineer mtls)"
}'

check rules_check "$(promtool check rules "$RULES" 2>&1 | tail -n 2 | tr '\n' ' ')" \
	promtool check rules "$RULES"
promtool test rules "$ROOT/tests/prometheus/meshd-rules.test.yml" >"$TMP/ptest" 2>&1
check rules_unit_tests "$(tail -n 20 "$TMP/ptest")" grep -q SUCCESS "$TMP/ptest"

# --- the dashboard's shape -------------------------------------------------------------------
python3 - "$DASH" "$ROOT/docs/metrics.md" "$RULES" "$PENDING" >"$TMP/shape" 2>&1 <<'PY'
import json, re, sys
dash = json.load(open(sys.argv[1]))
doc = open(sys.argv[2]).read()
rules = open(sys.argv[3]).read()
pending = json.loads(sys.argv[4])
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
undocumented = sorted(n for n in names if "`%s`" % n not in doc and n not in pending)
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
backend a1 $A1 || fail setup "backend a1 did not start"
backend a2 $A2 || fail setup "backend a2 did not start"
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
start_meshd "$TMP/meshd.json" $MPORT || {
	fail start "meshd did not start: $(tail -n 5 "$TMP/meshd.log")"
	exit 1
}
traffic() {
	in_cgroup "$CG" "$TOOLS/mesh_client" -n 30 127.77.8.1 80 >/dev/null 2>&1
	in_cgroup "$CG" "$TOOLS/mesh_client" -n 5 127.77.8.2 80 >/dev/null 2>&1
}
traffic
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
python3 - "$DASH" "$PROM" "$TMP/metrics.txt" "$PENDING" <<'PY'
import json, re, sys, urllib.parse, urllib.request
dash, prom, exported, pending = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
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
        if missing and all(n in pending for n in missing):
            print("SKIP dashboards.%s.%s: waits on %s" % (case, t["refId"], "; ".join(
                "%s (%s)" % (n, pending[n]) for n in missing)))
            continue
        if missing:
            print("FAIL dashboards.%s.%s: meshd exports no %s" % (case, t["refId"], ", ".join(missing)))
            continue
        url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            res = json.load(urllib.request.urlopen(url, timeout=10))
        except Exception as e:  # an HTTP 400 is a PromQL error
            print("FAIL dashboards.%s.%s: %s: %s" % (case, t["refId"], expr, e))
            continue
        n = len(res.get("data", {}).get("result", []))
        if res.get("status") == "success" and n:
            print("PASS dashboards.%s.%s" % (case, t["refId"]))
        else:
            print("FAIL dashboards.%s.%s: no data for %s (%s)" % (case, t["refId"], expr, res.get("error", "empty")))
PY
exit 0
