#!/usr/bin/env bash
# Self-tests of the Consul API emulator against the reference fixtures in ../shared/consul
# (shape, key order, headers, errors, blocking, ?passing, ACLs, checks), so the client tests run
# against something that behaves like Consul. Real process, real HTTP on 127.0.0.1.
. "$(dirname "$0")/lib.sh"

PORT=22510
# shared/consul sits beside the checkout, in its parent directory (CI clones the repository next
# to it). For a git worktree the checkout is the main repository it belongs to. Without the
# fixtures this suite fails: skipping would let the emulator drift from real Consul unseen.
FIXTURES=${CONSUL_FIXTURES:-}
common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)
for d in "$ROOT/../shared/consul" ${common:+"$(dirname "$common")/../shared/consul"}; do
	[ -z "$FIXTURES" ] && [ -f "$d/README.md" ] && FIXTURES=$(cd "$d" && pwd)
done
if [ -z "$FIXTURES" ] || [ ! -f "$FIXTURES/README.md" ]; then
	fail fixtures "Consul fixtures not found at ${FIXTURES:-$ROOT/../shared/consul} (beside the checkout; CONSUL_FIXTURES names another place)"
	exit 1
fi
EMU=$ROOT/tests/e2e/consul_emulator.py

spawn emulator python3 "$EMU" --port $PORT --acl-token root-token --reap-interval 0.5 \
	--ca-dir "$TMP/ca" --leaf-ttl 4
if ! wait_for 5 port_open 127.0.0.1 $PORT; then
	fail start "emulator did not listen on $PORT: $(tail -n 3 "$TMP/emulator.log")"
	exit 1
fi

# The checks run in Python (stdlib only) and print `ok NAME` or `bad NAME WHY` per case.
cat >"$TMP/check.py" <<'EOF'
import http.client, json, os, sys, time, threading

port, fixtures = int(sys.argv[1]), sys.argv[2]
TOK = {"X-Consul-Token": "root-token"}

def req(method, path, body=None, headers=None, token=True):
    h = dict(TOK if token else {})
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data

def fixture(name):
    with open(os.path.join(fixtures, name)) as f:
        return json.load(f)

def keys_tree(v):
    """Key order of every object, recursively (values and user Meta contents ignored)."""
    if isinstance(v, dict):
        return [(k, None if k.endswith("Meta") else keys_tree(x)) for k, x in v.items()]
    if isinstance(v, list):
        return [keys_tree(v[0])] if v else []
    return None

results = []
def case(name):
    def wrap(fn):
        try:
            why = fn()
        except Exception as e:  # a crash is a failure of the case, not of the suite
            why = f"{type(e).__name__}: {e}"
        print(f"ok {name}" if not why else f"bad {name} {why}", flush=True)
    return wrap

def register(sid, port_, check=None, name="web", address="127.0.0.1", token=True, **kw):
    body = {"ID": sid, "Name": name, "Address": address, "Port": port_, "Tags": ["v2"],
            "Meta": {"version": "v2"}, "Weights": {"Passing": 10, "Warning": 1}}
    if check is not None:
        body["Check"] = check
    body.update(kw)
    return req("PUT", "/v1/agent/service/register", body, token=token)

register("web-1", 8080, {"TTL": "30s", "Status": "passing"}, address="10.0.1.11")
register("web-2", 8080, {"TTL": "30s", "Status": "warning"}, address="10.0.1.12")
register("web-3", 8080, {"TTL": "30s"}, address="10.0.1.13")

@case("health_shape_matches_fixture")
def _():
    st, h, body = req("GET", "/v1/health/service/web")
    got, want = json.loads(body), fixture("health-service-web.json")
    if st != 200 or len(got) != 3:
        return f"status {st}, {len(got)} entries"
    if keys_tree(got[0]) != keys_tree(want[0]):
        return f"key order differs: {keys_tree(got[0])} vs {keys_tree(want[0])}"
    if [c["CheckID"] for c in got[0]["Checks"]] != ["serfHealth", "service:web-1"]:
        return "checks not node-first"

@case("health_headers_and_compact_json")
def _():
    st, h, body = req("GET", "/v1/health/service/web")
    for k in ("x-consul-index", "x-consul-knownleader", "x-consul-lastcontact",
              "x-consul-effective-consistency", "x-consul-query-backend",
              "x-consul-default-acl-policy"):
        if k not in h:
            return f"missing {k}"
    if h["content-type"] != "application/json" or b"\n" in body or b": " in body:
        return "not compact application/json"
    if int(h["x-consul-index"]) < 1 or h["x-consul-effective-consistency"] != "leader":
        return f"bad meta {h}"

@case("pretty_is_four_space_indent_with_newline")
def _():
    st, h, body = req("GET", "/v1/health/service/web?pretty")
    if not body.endswith(b"\n") or b'\n    {\n        "Node"' not in body:
        return "not pretty"

@case("passing_filter_matches_fixture")
def _():
    for q in ("passing", "passing=1", "passing=true"):
        st, h, body = req("GET", f"/v1/health/service/web?{q}")
        got = [e["Service"]["ID"] for e in json.loads(body)]
        want = [e["Service"]["ID"] for e in fixture("health-service-web-passing.json")]
        if got != want:
            return f"?{q}: {got} != {want}"
    st, h, body = req("GET", "/v1/health/service/web?passing=maybe")
    if st != 400 or body != b"Invalid value for ?passing":
        return f"bad ?passing accepted: {st} {body!r}"

@case("passing_filter_counts_node_checks")
def _():
    req("PUT", "/v1/agent/maintenance?enable=true&reason=test")
    st, h, body = req("GET", "/v1/health/service/web?passing=1")
    inmaint = json.loads(body)
    req("PUT", "/v1/agent/maintenance?enable=false")
    st, h, body = req("GET", "/v1/health/service/web?passing=1")
    if inmaint != [] or len(json.loads(body)) != 1:
        return f"maintenance: {len(inmaint)} passing, after: {len(json.loads(body))}"

@case("unknown_service_is_empty_list_with_index")
def _():
    st, h, body = req("GET", "/v1/health/service/does-not-exist")
    if st != 200 or body != b"[]" or int(h.get("x-consul-index", "0")) < 1:
        return f"{st} {body!r} {h.get('x-consul-index')}"

@case("errors_match_catalogue")
def _():
    cat = {e["request"]: e for e in fixture("errors.json")}
    for path, key in (("/v1/health/service/web?wait=abc", "GET /v1/health/service/web?wait=abc"),
                      ("/v1/health/service/web?index=abc", "GET /v1/health/service/web?index=abc"),
                      ("/v1/health/service/web?stale&consistent",
                       "GET /v1/health/service/web?stale&consistent"),
                      ("/v1/health/service/", "GET /v1/health/service/"),
                      ("/v1/not-an-endpoint", "GET /v1/not-an-endpoint")):
        st, h, body = req("GET", path)
        want = cat[key]
        if st != want["status"] or body.decode() != want["body"]:
            return f"{path}: {st} {body!r}, want {want['status']} {want['body']!r}"
        if not h.get("content-type", "").startswith("text/plain"):
            return f"{path}: content-type {h.get('content-type')}"
        if "x-consul-default-acl-policy" not in h:
            return f"{path}: no default-acl-policy header on an error"

@case("wrong_method_405_with_allow")
def _():
    st, h, body = req("GET", "/v1/agent/check/pass/x")
    if st != 405 or h.get("allow") != "OPTIONS,PUT" or body != b"method GET not allowed":
        return f"{st} {h.get('allow')} {body!r}"
    st, h, body = req("OPTIONS", "/v1/agent/service/register")
    if st != 200 or h.get("allow") != "OPTIONS,PUT":
        return f"OPTIONS: {st} {h.get('allow')}"

@case("register_validation_errors")
def _():
    cat = {e["request"]: e["body"] for e in fixture("errors.json")}
    cases = [({"Port": 1}, cat["PUT /v1/agent/service/register (no Name)"]),
             ({"Name": "x", "Address": "0.0.0.0"},
              cat["PUT /v1/agent/service/register (Address 0.0.0.0 or ::)"]),
             ({"Name": "x", "Weights": {"Passing": 0, "Warning": 1}},
              cat["PUT /v1/agent/service/register (Weights.Passing 0)"]),
             ({"Name": "web", "Meta": {"consul-x": "v"}},
              cat["PUT /v1/agent/service/register (Meta key 'consul-x')"]),
             ({"Name": "x", "Check": {"TTL": "10s", "Status": "up"}},
              cat["PUT /v1/agent/service/register (Check.Status 'up')"])]
    for body, want in cases:
        st, h, got = req("PUT", "/v1/agent/service/register", body)
        if st != 400 or got.decode() != want:
            return f"{body}: {st} {got!r} want {want!r}"

@case("register_request_fixtures_accepted_as_listed")
def _():
    """Each register-request fixture (tcp, http, ttl) is accepted and listed by the agent with its
    tags, meta (keys as sent) and check type; Connect native shows as Consul lists it."""
    for kind in ("tcp", "http", "ttl"):
        body = fixture(f"agent-service-register-request-{kind}.json")
        body = dict(body, ID=f"fx-{kind}", Meta=dict(body["Meta"], team_x="a"),
                    Connect={"Native": True})
        st, h, got = req("PUT", "/v1/agent/service/register", body)
        if st != 200 or got:
            return f"{kind}: {st} {got!r}"
        st, h, got = req("GET", "/v1/agent/services")
        svc = json.loads(got).get(f"fx-{kind}", {})
        if svc.get("Tags") != body["Tags"] or svc.get("Meta") != body["Meta"] or \
                svc.get("Connect") != {"Native": True}:
            return f"{kind}: listed as {svc}"
        st, h, got = req("GET", "/v1/agent/checks")
        chk = [c for c in json.loads(got).values() if c["ServiceID"] == f"fx-{kind}"]
        if [c["Type"] for c in chk] != [kind]:
            return f"{kind}: checks {chk}"
        req("PUT", f"/v1/agent/service/deregister/fx-{kind}")

@case("unknown_ids_404_and_non_ttl_500")
def _():
    cat = {e["request"]: e for e in fixture("errors.json")}
    st, h, body = req("PUT", "/v1/agent/service/deregister/nope")
    want = cat["PUT /v1/agent/service/deregister/nope"]
    if st != 404 or body.decode() != want["body"]:
        return f"deregister: {st} {body!r}"
    st, h, body = req("PUT", "/v1/agent/check/pass/nope")
    if st != 404 or body.decode() != cat["PUT /v1/agent/check/pass/nope"]["body"]:
        return f"pass: {st} {body!r}"
    register("tcp-1", 1, {"TCP": "127.0.0.1:1", "Interval": "10s"}, name="tcpsvc")
    st, h, body = req("PUT", "/v1/agent/check/pass/service:tcp-1")
    if st != 500 or body != b'CheckID "service:tcp-1" does not have associated TTL':
        return f"non-TTL pass: {st} {body!r}"
    req("PUT", "/v1/agent/service/deregister/tcp-1")

@case("new_checks_start_critical_and_ttl_pass_flips")
def _():
    register("web-9", 9, {"TTL": "30s"}, name="nine")
    st, h, body = req("GET", "/v1/health/service/nine")
    checks = json.loads(body)[0]["Checks"]
    if checks[-1]["Status"] != "critical" or checks[-1]["CheckID"] != "service:web-9":
        return f"initial {checks[-1]['Status']} {checks[-1]['CheckID']}"
    if checks[-1]["Name"] != "Service 'nine' check":
        return f"name {checks[-1]['Name']}"
    req("PUT", "/v1/agent/check/pass/service:web-9?note=fine")
    st, h, body = req("GET", "/v1/health/service/nine?passing")
    e = json.loads(body)
    req("PUT", "/v1/agent/service/deregister/web-9")
    if len(e) != 1 or e[0]["Checks"][-1]["Output"] != "fine":
        return "pass with note did not apply"

@case("ttl_expires_to_critical")
def _():
    register("ttl-1", 7, {"TTL": "500ms", "Status": "passing"}, name="ttl")
    time.sleep(1.2)
    st, h, body = req("GET", "/v1/health/service/ttl")
    c = json.loads(body)[0]["Checks"][-1]
    req("PUT", "/v1/agent/service/deregister/ttl-1")
    if c["Status"] != "critical" or c["Output"] != "TTL expired":
        return f"{c['Status']} {c['Output']}"

@case("blocking_query_wakes_on_change")
def _():
    st, h, body = req("GET", "/v1/health/service/web")
    idx = int(h["x-consul-index"])
    out = {}
    def poll():
        t0 = time.time()
        out["r"] = req("GET", f"/v1/health/service/web?index={idx}&wait=20s")
        out["t"] = time.time() - t0
    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    req("PUT", "/v1/agent/check/pass/service:web-3")
    t.join(25)
    st, h2, body = out["r"]
    if not (0.4 < out["t"] < 3) or int(h2["x-consul-index"]) <= idx:
        return f"returned after {out['t']:.2f}s with index {h2['x-consul-index']} (was {idx})"
    if len(json.loads(req("GET", "/v1/health/service/web?passing")[2])) != 2:
        return "web-3 not passing after pass"

@case("blocking_query_times_out_with_same_index_and_jitter_bound")
def _():
    st, h, body = req("GET", "/v1/health/service/web")
    idx = h["x-consul-index"]
    t0 = time.time()
    st, h2, body = req("GET", f"/v1/health/service/web?index={idx}&wait=1s")
    dt = time.time() - t0
    if st != 200 or h2["x-consul-index"] != idx or not (1.0 <= dt < 1.0 + 1 / 16 + 0.5):
        return f"{st} index {h2['x-consul-index']} vs {idx} after {dt:.2f}s"

@case("acl_unknown_token_403_anonymous_filtered_and_denied")
def _():
    st, h, body = req("GET", "/v1/health/service/web", headers={"X-Consul-Token": "nope"},
                      token=False)
    if st != 403 or body != b"ACL not found":
        return f"unknown token: {st} {body!r}"
    st, h, body = req("GET", "/v1/health/service/web", token=False)
    if st != 200 or body != b"[]" or h["x-consul-default-acl-policy"] != "deny":
        return f"anonymous read: {st} {body!r}"
    st, h, body = register("web-x", 1, token=False)
    if st != 403 or not body.startswith(b"Permission denied: token with AccessorID "):
        return f"anonymous write: {st} {body!r}"
    for path in ("/v1/health/service/web?token=root-token",):
        st, h, body = req("GET", path, token=False)
        if st != 200 or len(json.loads(body)) != 3:
            return f"?token=: {st}"
    st, h, body = req("GET", "/v1/health/service/web", token=False,
                      headers={"Authorization": "Bearer root-token"})
    if st != 200 or len(json.loads(body)) != 3:
        return f"bearer: {st}"

@case("catalog_endpoints_shape")
def _():
    st, h, body = req("GET", "/v1/catalog/services")
    got = json.loads(body)
    if got.get("web") != ["v2"] or got.get("consul") != [] or "x-consul-index" not in h:
        return f"services {got}"
    st, h, body = req("GET", "/v1/catalog/service/web")
    got, want = json.loads(body), fixture("catalog-service-web.json")
    if keys_tree(got[0]) != keys_tree(want[0]):
        return f"catalog key order differs: {[k for k, _ in keys_tree(got[0])]}"

@case("status_leader_is_json_string_without_index")
def _():
    st, h, body = req("GET", "/v1/status/leader")
    if st != 200 or not isinstance(json.loads(body), str) or "x-consul-index" in h:
        return f"{st} {body!r}"

@case("deregister_critical_after_reaps")
def _():
    register("reap-1", 5, {"TTL": "30s", "DeregisterCriticalServiceAfter": "1m"}, name="reap")
    st, h, body = req("GET", "/v1/health/service/reap")
    if len(json.loads(body)) != 1:
        return "not registered"
    # The minimum is one minute (agent/check.mdx): not reaped within a few reaper runs.
    time.sleep(1.5)
    st, h, body = req("GET", "/v1/health/service/reap")
    req("PUT", "/v1/agent/service/deregister/reap-1")
    if len(json.loads(body)) != 1:
        return "reaped before the one-minute minimum"

# ---- config entries (service-splitter, service-resolver) -----------------------------------
SPLITTER = {"Kind": "service-splitter", "Name": "web",
            "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}
RESOLVER = {"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
            "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                        "v2": {"Filter": "\"v2\" in Service.Tags and Service.Meta.version != v1"}}}

@case("config_entry_absent_is_404_with_index")
def _():
    st, h, body = req("GET", "/v1/config/service-splitter/nosuch")
    if st != 404 or body != b'Config entry not found for "service-splitter" / "nosuch"':
        return f"{st} {body!r}"
    if "x-consul-index" not in h:
        return "no X-Consul-Index"

@case("config_entry_apply_and_read")
def _():
    st, h, body = req("PUT", "/v1/config", SPLITTER)
    if st != 200 or json.loads(body) is not True:
        return f"apply: {st} {body!r}"
    st, h, body = req("GET", "/v1/config/service-splitter/web")
    got = json.loads(body)
    want_keys = ["Kind", "Name", "Splits", "CreateIndex", "ModifyIndex"]
    if st != 200 or list(got) != want_keys or got["Splits"] != SPLITTER["Splits"]:
        return f"{st} {got}"
    if int(h["x-consul-index"]) != got["ModifyIndex"]:
        return f"index header {h['x-consul-index']} != ModifyIndex {got['ModifyIndex']}"

@case("config_entry_snake_case_and_weight_normalised")
def _():
    body = {"kind": "service-splitter", "name": "snake",
            "splits": [{"weight": 33.333, "service_subset": "a"}, {"weight": 66.667, "service_subset": "b"}]}
    st, h, b = req("PUT", "/v1/config", body)
    st2, h2, b2 = req("GET", "/v1/config/service-splitter/snake")
    got = json.loads(b2)["Splits"] if st2 == 200 else None
    if st != 200 or got != [{"Weight": 33.33, "ServiceSubset": "a"}, {"Weight": 66.67, "ServiceSubset": "b"}]:
        return f"{st} {b!r} / {got}"

@case("config_entry_splitter_validation")
def _():
    bad = [({"Kind": "service-splitter", "Name": "w", "Splits": [{"Weight": 90}]},
            "the sum of all split weights must be 100, not 90.000000"),
           ({"Kind": "service-splitter", "Name": "w", "Splits": []}, "no splits configured"),
           ({"Kind": "service-splitter", "Name": "w", "Splits": [{"Weight": 50, "ServiceSubset": "a"},
                                                                  {"Weight": 50, "ServiceSubset": "a"}]},
            'split destination occurs more than once: service="w", subset="a", namespace="", partition=""')]
    for entry, msg in bad:
        st, h, body = req("PUT", "/v1/config", entry)
        if st != 500 or body.decode() != msg:
            return f"{entry}: {st} {body!r}"

@case("config_entry_resolver_validation")
def _():
    st, h, body = req("PUT", "/v1/config", RESOLVER)
    if st != 200:
        return f"valid resolver refused: {st} {body!r}"
    bad = [({"Kind": "service-resolver", "Name": "r", "DefaultSubset": "v9", "Subsets": {"v1": {}}},
            'DefaultSubset "v9" is not a valid subset'),
           ({"Kind": "service-resolver", "Name": "r", "Subsets": {"V_1": {}}},
            'Subset "V_1" is invalid'),
           ({"Kind": "service-resolver", "Name": "r", "Subsets": {"v1": {"Filter": "Service.Meta.version =="}}},
            'Filter for subset "v1" is not a valid expression')]
    for entry, msg in bad:
        st, h, body = req("PUT", "/v1/config", entry)
        if st != 500 or not body.decode().startswith(msg):
            return f"{entry}: {st} {body!r}"
    st, h, body = req("GET", "/v1/config/service-resolver/web")
    if json.loads(body)["Subsets"] != RESOLVER["Subsets"]:
        return f"read back {body!r}"

@case("config_entry_unknown_kind")
def _():
    st, h, body = req("PUT", "/v1/config", {"Kind": "no-such-kind", "Name": "x"})
    if st != 400:
        return f"{st} {body!r}"

@case("config_entry_cas")
def _():
    st, h, body = req("GET", "/v1/config/service-splitter/web")
    idx = json.loads(body)["ModifyIndex"]
    st, h, body = req("PUT", f"/v1/config?cas={idx - 1}", SPLITTER)
    if json.loads(body) is not False:
        return f"stale cas accepted: {body!r}"
    st, h, body = req("PUT", f"/v1/config?cas={idx}", SPLITTER)
    if json.loads(body) is not True:
        return f"current cas refused: {body!r}"
    st, h, body = req("PUT", "/v1/config?cas=0", SPLITTER)
    if json.loads(body) is not False:
        return "cas=0 replaced an existing entry"

@case("config_entry_blocking_query_wakes_on_change")
def _():
    st, h, body = req("GET", "/v1/config/service-splitter/web")
    idx = int(h["x-consul-index"])
    got = {}
    def block():
        got["r"] = req("GET", f"/v1/config/service-splitter/web?index={idx}&wait=10s")
    t = threading.Thread(target=block)
    t0 = time.time()
    t.start()
    time.sleep(0.5)
    if not t.is_alive():
        return "blocking query returned before any change"
    changed = {**SPLITTER, "Splits": [{"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "ServiceSubset": "v2"}]}
    req("PUT", "/v1/config", changed)
    t.join(5)
    st, h, body = got.get("r", (0, {}, b""))
    if st != 200 or json.loads(body)["Splits"][0]["Weight"] != 50 or time.time() - t0 > 5:
        return f"{st} {body!r}"
    if int(h["x-consul-index"]) <= idx:
        return "index did not move"

@case("config_entry_list_and_delete")
def _():
    st, h, body = req("GET", "/v1/config/service-splitter")
    names = [e["Name"] for e in json.loads(body)]
    if st != 200 or "web" not in names or "snake" not in names:
        return f"list {st} {names}"
    st, h, body = req("DELETE", "/v1/config/service-splitter/snake")
    st2, h2, b2 = req("GET", "/v1/config/service-splitter/snake")
    if st != 200 or st2 != 404:
        return f"delete {st}, then read {st2}"

@case("config_entry_blocking_query_wakes_on_delete_and_create")
def _():
    req("PUT", "/v1/config", {**SPLITTER, "Name": "gone"})
    st, h, body = req("GET", "/v1/config/service-splitter/gone")
    idx = int(h["x-consul-index"])
    got = {}
    def block(key, i):
        got[key] = req("GET", f"/v1/config/service-splitter/gone?index={i}&wait=10s")
    t = threading.Thread(target=block, args=("del", idx))
    t.start()
    time.sleep(0.3)
    if not t.is_alive():
        return "blocking query returned before the delete"
    req("DELETE", "/v1/config/service-splitter/gone")
    t.join(5)
    st, h, body = got.get("del", (0, {}, b""))
    if st != 404 or "x-consul-index" not in h or int(h["x-consul-index"]) <= idx:
        return f"after delete: {st} {h.get('x-consul-index')} (was {idx}) {body!r}"
    idx2 = int(h["x-consul-index"])
    t = threading.Thread(target=block, args=("new", idx2))
    t.start()
    time.sleep(0.3)
    if not t.is_alive():
        return "blocking query on a missing entry returned before it was written"
    req("PUT", "/v1/config", {**SPLITTER, "Name": "gone"})
    t.join(5)
    st, h, body = got.get("new", (0, {}, b""))
    if st != 200 or int(h["x-consul-index"]) <= idx2 or json.loads(body)["Name"] != "gone":
        return f"after create: {st} {body!r}"

@case("config_entry_acl")
def _():
    st, h, body = req("PUT", "/v1/config", SPLITTER, token=False)
    if st != 403:
        return f"anonymous write: {st}"
    st, h, body = req("GET", "/v1/config/service-splitter/web", token=False)
    if st != 404:
        return f"anonymous read under deny: {st} {body!r}"
# ---- Connect: CA roots, leaves, intentions ------------------------------------------------------
import hashlib, ssl, subprocess, tempfile

def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True)

def timed(method, path, body=None):
    t = time.time()
    r = req(method, path, body)
    return r, time.time() - t

@case("connect_roots_shape_and_root_id")
def _():
    st, h, body = req("GET", "/v1/agent/connect/ca/roots")
    got, want = json.loads(body), fixture("agent-connect-ca-roots.json")
    if st != 200 or keys_tree(got) != keys_tree(want):
        return f"{st} key order differs: {keys_tree(got)}"
    r = got["Roots"][0]
    der = ssl.PEM_cert_to_DER_cert(r["RootCert"])
    if r["ID"] != ":".join("%02x" % b for b in hashlib.sha1(der).digest()):
        return "root ID is not the colon-hex SHA-1 of its DER"
    if got["ActiveRootID"] != r["ID"] or not got["TrustDomain"].endswith(".consul"):
        return f"active/trust domain {got['ActiveRootID']} {got['TrustDomain']}"
    for k in ("x-consul-index", "x-consul-knownleader", "x-cache"):
        if k not in h:
            return f"missing {k}"

@case("connect_leaf_shape_chain_and_index")
def _():
    st, h, body = req("GET", "/v1/agent/connect/ca/leaf/web")
    got, want = json.loads(body), fixture("agent-connect-ca-leaf.json")
    roots = json.loads(req("GET", "/v1/agent/connect/ca/roots")[2])
    if st != 200 or keys_tree(got) != keys_tree(want):
        return f"{st} key order differs: {keys_tree(got)}"
    if h.get("x-consul-index") != str(got["ModifyIndex"]):
        return f"index {h.get('x-consul-index')} != ModifyIndex {got['ModifyIndex']}"
    if got["ServiceURI"] != f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web":
        return f"URI {got['ServiceURI']}"
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        ca.write(roots["Roots"][0]["RootCert"])
        ca.flush()
        v = openssl("verify", "-CAfile", ca.name, data=got["CertPEM"].encode())
    if v.returncode:
        return f"chain does not verify: {v.stdout!r} {v.stderr!r}"
    a = openssl("x509", "-noout", "-pubkey", data=got["CertPEM"].encode()).stdout
    b = openssl("pkey", "-pubout", data=got["PrivateKeyPEM"].encode()).stdout
    if not a or a != b:
        return "key does not match the certificate"
    st, h, body = req("GET", "/v1/agent/connect/ca/leaf/web", token=False)
    if st != 403:
        return f"anonymous leaf: {st}"

@case("connect_leaf_blocks_until_renewal")
def _():
    st, h, body = req("GET", "/v1/agent/connect/ca/leaf/web")
    first = json.loads(body)
    idx = first["ModifyIndex"]
    (st, h, body), dt = timed("GET", f"/v1/agent/connect/ca/leaf/web?index={idx}&wait=300ms")
    if json.loads(body)["ModifyIndex"] != idx or h.get("x-consul-index") != str(idx) or dt < 0.25:
        return f"timeout: index {h.get('x-consul-index')} after {dt:.2f}s"
    (st, h, body), dt = timed("GET", f"/v1/agent/connect/ca/leaf/web?index={idx}&wait=30s")
    got = json.loads(body)
    # --leaf-ttl 4: renewed between 60 % and 90 % of the lifetime after issue
    if got["ModifyIndex"] <= idx or got["SerialNumber"] == first["SerialNumber"] or dt > 4:
        return f"renewal: index {idx} -> {got['ModifyIndex']} after {dt:.2f}s"

@case("connect_roots_block_until_rotation")
def _():
    st, h, body = req("GET", "/v1/agent/connect/ca/roots")
    before, idx = json.loads(body), int(h["x-consul-index"])
    out = {}
    t = threading.Thread(target=lambda: out.update(r=req(
        "GET", f"/v1/agent/connect/ca/roots?index={idx}&wait=30s")))
    t.start()
    time.sleep(0.3)
    if not t.is_alive():
        return "roots did not block"
    st, _, _ = req("PUT", "/v1/connect/ca/configuration", {"Provider": "consul", "Config": {}})
    t.join(10)
    got = json.loads(out["r"][2])
    if st != 200 or int(out["r"][1]["x-consul-index"]) <= idx or len(got["Roots"]) != len(before["Roots"]) + 1:
        return f"rotation: {st}, {len(got['Roots'])} roots"
    active = [r for r in got["Roots"] if r["Active"]]
    if len(active) != 1 or active[0]["ID"] == before["ActiveRootID"] or active[0]["ID"] != got["ActiveRootID"]:
        return "not exactly one new active root"
    st, h, body = req("GET", "/v1/agent/connect/ca/leaf/web")
    leaf = json.loads(body)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        ca.write(active[0]["RootCert"])
        ca.flush()
        if openssl("verify", "-CAfile", ca.name, data=leaf["CertPEM"].encode()).returncode:
            return "the leaf after rotation is not signed by the new root"

@case("intentions_write_read_shapes")
def _():
    st, h, body = req("PUT", "/v1/connect/intentions/exact?source=web&destination=db",
                      fixture("connect-intentions-exact-put-request.json"))
    if st != 200 or body != b"true":
        return f"put: {st} {body!r}"
    st, h, body = req("GET", "/v1/connect/intentions/exact?source=web&destination=db")
    got = json.loads(body)
    if keys_tree(got) != keys_tree(fixture("connect-intentions-exact.json")) or got["Precedence"] != 9:
        return f"exact key order/precedence: {keys_tree(got)}"
    st, h, body = req("GET", "/v1/connect/intentions")
    if keys_tree(json.loads(body)) != keys_tree(fixture("connect-intentions-list.json")):
        return "list key order differs"
    req("PUT", "/v1/connect/intentions/exact?source=web&destination=*", {"Action": "allow"})
    req("PUT", "/v1/connect/intentions/exact?source=*&destination=db", {"Action": "deny"})
    st, h, body = req("GET", "/v1/connect/intentions/match?by=source&name=web")
    got, want = json.loads(body), fixture("connect-intentions-match.json")
    pairs = [(i["SourceName"], i["DestinationName"]) for i in got["web"]]
    if keys_tree(got) != keys_tree(want) or pairs != [("web", "db"), ("*", "db"), ("web", "*")]:
        return f"match by source: {got}"
    st, h, body = req("GET", "/v1/connect/intentions/match?by=destination&name=db")
    pairs = [(i["SourceName"], i["DestinationName"]) for i in json.loads(body)["db"]]
    if pairs != [("web", "db"), ("*", "db"), ("web", "*")] or "x-consul-index" not in h:
        return f"match by destination not in precedence order: {body!r}"
    st, h, body = req("PUT", "/v1/connect/intentions/exact?source=a&destination=db",
                      {"Action": "allow"}, token=False)
    if st != 403:
        return f"anonymous write: {st}"
    st, h, body = req("DELETE", "/v1/connect/intentions/exact?source=*&destination=db")
    if st != 200 or body != b"true":
        return f"delete: {st} {body!r}"

@case("intentions_match_blocks_until_a_write")
def _():
    st, h, body = req("GET", "/v1/connect/intentions/match?by=destination&name=db")
    idx, out = int(h["x-consul-index"]), {}
    t = threading.Thread(target=lambda: out.update(r=req(
        "GET", f"/v1/connect/intentions/match?by=destination&name=db&index={idx}&wait=30s")))
    t.start()
    time.sleep(0.3)
    if not t.is_alive():
        return "match did not block"
    req("PUT", "/v1/connect/intentions/exact?source=api&destination=db", {"Action": "deny"})
    t.join(10)
    got = json.loads(out["r"][2])["db"]
    if int(out["r"][1]["x-consul-index"]) <= idx or "api" not in [i["SourceName"] for i in got]:
        return f"woke with {got}"

@case("connect_errors")
def _():
    for path, want in (("/v1/connect/intentions/match?name=db", "required query parameter 'by' not set"),
                       ("/v1/connect/intentions/match?by=destination", "required query parameter 'name' not set"),
                       ("/v1/connect/intentions/match?by=x&name=db", "'by' parameter must be one of 'source' or 'destination'"),
                       ("/v1/agent/connect/ca/roots?wait=abc", "Invalid wait time")):
        st, h, body = req("GET", path)
        if st != 400 or body.decode() != want:
            return f"{path}: {st} {body!r}"
    st, h, body = req("POST", "/v1/agent/connect/ca/roots")
    if st != 405 or h.get("allow") != "OPTIONS,GET":
        return f"POST roots: {st} {h.get('allow')}"
# ---- KV store (agent/kvs_endpoint.go; the errors.json capture for ACLs) ----------------------
def kv(method, key, raw=None, query="", token=True):
    h = dict(TOK if token else {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, f"/v1/kv/{key}{query}", body=raw, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data

@case("kv_missing_key_is_404_with_index")
def _():
    st, h, body = kv("GET", "cfg/none")
    if st != 404 or body != b"" or int(h.get("x-consul-index", "0")) < 1:
        return f"{st} {body!r} {h.get('x-consul-index')}"
    if "x-consul-knownleader" not in h:
        return "404 without the setMeta headers"

@case("kv_put_get_shape_raw_and_index")
def _():
    st, h, body = kv("PUT", "cfg/a", b"hello")
    if st != 200 or body != b"true":
        return f"put {st} {body!r}"
    st, h, body = kv("GET", "cfg/a")
    ent = json.loads(body)
    keys = list(ent[0].keys())
    if keys != ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]:
        return f"keys {keys}"
    if ent[0]["Value"] != "aGVsbG8=" or ent[0]["Key"] != "cfg/a":
        return f"entry {ent}"
    if int(h["x-consul-index"]) != ent[0]["ModifyIndex"]:
        return "index is not the key's ModifyIndex"
    st, h, body = kv("GET", "cfg/a", query="?raw")
    if st != 200 or body != b"hello" or int(h["x-consul-index"]) != ent[0]["ModifyIndex"]:
        return f"raw {st} {body!r}"
    kv("PUT", "cfg/empty", b"")
    st, h, body = kv("GET", "cfg/empty")
    if json.loads(body)[0]["Value"] is not None:
        return "empty value is not null"

@case("kv_cas_and_delete")
def _():
    st, h, body = kv("PUT", "cfg/c", b"1", query="?cas=0")
    if body != b"true":
        return "cas=0 on a missing key refused"
    st, h, body = kv("PUT", "cfg/c", b"2", query="?cas=0")
    if body != b"false":
        return "cas=0 on an existing key accepted"
    mi = json.loads(kv("GET", "cfg/c")[2])[0]["ModifyIndex"]
    if kv("PUT", "cfg/c", b"3", query=f"?cas={mi}")[2] != b"true":
        return "cas with the ModifyIndex refused"
    st, h, body = kv("DELETE", "cfg/c")
    if body != b"true" or kv("GET", "cfg/c")[0] != 404:
        return f"delete {st} {body!r}"

@case("kv_blocking_wakes_on_change_and_on_create")
def _():
    st, h, _b = kv("GET", "cfg/b")
    idx = int(h["x-consul-index"])
    threading.Timer(0.3, lambda: kv("PUT", "cfg/b", b"v1")).start()
    t0 = time.time()
    st, h, body = kv("GET", "cfg/b", query=f"?raw&index={idx}&wait=10s")
    if st != 200 or body != b"v1" or time.time() - t0 > 5 or int(h["x-consul-index"]) <= idx:
        return f"missing key: {st} {body!r} after {time.time() - t0:.1f}s"
    idx = int(h["x-consul-index"])
    t0 = time.time()
    st, h, body = kv("GET", "cfg/b", query=f"?raw&index={idx}&wait=300ms")
    if int(h["x-consul-index"]) != idx or time.time() - t0 < 0.3 or body != b"v1":
        return "timeout changed the index or did not wait"
    threading.Timer(0.3, lambda: kv("PUT", "cfg/b", b"v2")).start()
    st, h, body = kv("GET", "cfg/b", query=f"?raw&index={idx}&wait=10s")
    if body != b"v2":
        return f"update: {body!r}"

@case("kv_errors_acl_and_size")
def _():
    want = {e["request"]: e for e in fixture("errors.json")}[
        "GET /v1/kv/key3 (anonymous, default_policy=deny) - real capture"]
    st, h, body = kv("GET", "key3", token=False)
    if st != want["status"] or body.decode() != want["body"]:
        return f"anonymous read: {st} {body!r}"
    st, h, body = kv("PUT", "cfg/big", b"x" * (512 * 1024 + 1))
    if st != 413 or not body.startswith(b"Request body(524289 bytes) too large"):
        return f"oversize: {st} {body[:60]!r}"
    if kv("PUT", "", b"x")[0] != 400:
        return "PUT without a key accepted"

@case("catalog_services_blocks_until_a_tag_appears")
def _():
    st, h, body = req("GET", "/v1/catalog/services")
    idx = int(h["x-consul-index"])
    if "cat" in json.loads(body):
        return "cat listed before it registered"
    out = {}
    t = threading.Thread(target=lambda: out.update(r=req(
        "GET", f"/v1/catalog/services?index={idx}&wait=10s")))
    t0 = time.time()
    t.start()
    time.sleep(0.3)
    if not t.is_alive():
        return "blocking query returned before any change"
    register("cat-1", 9001, name="cat", Tags=["mesh", "b"], Meta={"mesh-vip": "127.1.2.3:80"})
    t.join(5)
    st, h, body = out.get("r", (0, {}, b""))
    got = json.loads(body or b"{}")
    if st != 200 or got.get("cat") != ["b", "mesh"] or time.time() - t0 > 5:
        return f"woke with {st} {got}"
    if int(h["x-consul-index"]) <= idx:
        return "index did not move"
    idx = int(h["x-consul-index"])
    t0 = time.time()
    st, h, body = req("GET", f"/v1/catalog/services?index={idx}&wait=300ms")
    if int(h["x-consul-index"]) != idx or time.time() - t0 < 0.3:
        return "timeout changed the index or did not wait"
    register("cat-2", 9002, name="cat", Tags=["other"])
    st, h, body = req("GET", "/v1/catalog/service/cat?tag=mesh")
    got = json.loads(body)
    if [i["ServiceID"] for i in got] != ["cat-1"] or got[0]["ServiceMeta"] != {"mesh-vip": "127.1.2.3:80"}:
        return f"?tag= filter: {[i['ServiceID'] for i in got]}"
    if len(json.loads(req("GET", "/v1/catalog/service/cat")[2])) != 2:
        return "unfiltered read does not list both"
    idx = int(h["x-consul-index"])
    threading.Timer(0.3, lambda: req("PUT", "/v1/agent/service/deregister/cat-1")).start()
    st, h, body = req("GET", f"/v1/catalog/services?index={idx}&wait=10s")
    if json.loads(body).get("cat") != ["other"]:
        return f"after deregistration: {json.loads(body).get('cat')}"
    req("PUT", "/v1/agent/service/deregister/cat-2")
    if "cat" in json.loads(req("GET", "/v1/catalog/services")[2]):
        return "cat still listed with no instance"
EOF

while read -r verdict name why; do
	case $verdict in
	ok) pass "$name" ;;
	bad) fail "$name" "$why" ;;
	esac
done < <(timeout 120 python3 "$TMP/check.py" $PORT "$FIXTURES")
exit $SUITE_FAILED
