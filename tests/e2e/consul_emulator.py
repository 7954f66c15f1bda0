#!/usr/bin/env python3
"""Consul HTTP API emulator for the end-to-end tests (no Consul binary is installable here).

It models one Consul CE agent that is also the server of its datacenter, after the reference
fixtures in shared/consul/ (beside the checkout) (README.md, *.json, errors.json): a catalog with one node (the
agent) holding service instances and checks, a Raft-like index bumped on every write, blocking
queries (?index=&wait=, jitter, X-Consul-Index never 0), ?passing computed over ALL checks of an
instance including node checks (serfHealth, node maintenance), the setMeta headers, plain-text
errors, 405 with Allow, ACLs (--acl-token: that token may do everything; anonymous reads are
filtered to empty results, anonymous writes get 403 Permission denied, unknown tokens 403 ACL not
found), HTTP and TCP checks run by the agent (loopback and in-namespace test ranges only), TTL checks, and the
DeregisterCriticalServiceAfter reaper. Standard library only.

Endpoints: GET /v1/health/service/:name, /v1/catalog/services, /v1/catalog/service/:name,
/v1/agent/services, /v1/agent/checks, /v1/agent/self, /v1/status/leader, /v1/status/peers;
PUT /v1/agent/service/register, /v1/agent/service/deregister/:id, /v1/agent/check/pass|warn|fail/:id,
/v1/agent/check/update/:id, /v1/agent/maintenance, /v1/agent/service/maintenance/:id;
config entries (service-splitter, service-resolver, service-defaults): PUT /v1/config (?cas=),
GET /v1/config/:kind/:name and /v1/config/:kind (blocking), DELETE /v1/config/:kind/:name, with
Consul's normalisation (split weights to 0.01) and validation, resolver Filter expressions
checked by a go-bexpr subset (==, !=, contains, not contains, in, not in, matches, is empty,
is not empty, and, or, not, parentheses).
GET/PUT/DELETE /v1/kv/:key (agent/kvs_endpoint.go, not in the fixtures: a single key, not
?recurse/?keys; GET answers `[DirEntry]` with Value base64 (null when empty) or, with ?raw, the
bytes; a missing key is 404 with an empty body and the setMeta headers, X-Consul-Index being the
KV table's index (creates, updates, deletes); a present key's index is its ModifyIndex; PUT takes
the raw body (?flags=, ?cas= with 0 = only when absent) and answers `true`/`false`, 413 over
kv_max_value_size 512 KiB; DELETE answers `true`; anonymous reads under deny get the 403 of
errors.json).

Connect: GET /v1/agent/connect/ca/roots (blocking on the roots' index), GET
/v1/agent/connect/ca/leaf/:service (blocking until the leaf is renewed: its X-Consul-Index is the
leaf's ModifyIndex; renewed at a random point between 60 % and 90 % of --leaf-ttl, at once past
90 %, and when the active root changes), GET|PUT /v1/connect/ca/configuration (a PUT rotates
the root: a new active root, the old one still listed until --prune-roots-after), GET
/v1/connect/intentions, GET|PUT|DELETE /v1/connect/intentions/exact?source=&destination=, GET
/v1/connect/intentions/match?by=source|destination&name= (blocking on the intentions' index,
precedence order). The CA's keys and certificates are made with the openssl command at run
time, in a private directory (--ca-dir, default a new temporary one); the trust domain is
<cluster-id>.consul with a cluster id derived from --node-name.
Test control (not Consul API): PUT /emulator/leaf/:service?as=:other makes the next leaf of
:service another service's (a misbehaving CA); ?as= empty restores it. --slow-roots IP=S
answers a blocking roots query of client IP S seconds after the change (a lagging agent).
--hold-config-entries makes every GET /v1/config/:kind/:name fail (500, as Consul without a
leader) until PUT /emulator/hold-config-entries?hold=0 (hold=1 holds again): the answers a
client gets after a restart then come in a known order, instances before entries.

Test control: kill the process to make Consul unavailable; --data-file keeps the catalog (and
the index) across a restart, like a server's data dir; --log-file records one line per request
(method, path without query secrets, status, whether a token was sent and accepted).
"""
import argparse
import atexit
import datetime
import base64
import gzip
import hashlib
import shutil
import subprocess
import tempfile
import ipaddress
import os
import json
import random
import re
import socket
import threading
import time
import urllib.parse
import uuid
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_QUERY_TIME = 300.0  # default_query_time
MAX_QUERY_TIME = 600.0  # max_query_time
JITTER_FRACTION = 16
GZIP_MIN_SIZE = 1400
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
CHECK_STATUSES = ("passing", "warning", "critical")
REAP_INTERVAL = 30.0
MIN_DEREGISTER_AFTER = 60.0
NOT_FOUND_BODY = "Invalid URL path: not a recognized HTTP API endpoint\n"

_DUR_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class Forward(Exception):
    """A read for another datacenter: the server forwards it over the WAN (--wan)."""

    def __init__(self, target):
        self.target = target


class ApiError(Exception):
    """An error Consul writes as plain text after WriteHeader (agent/http.go handleErr)."""

    def __init__(self, status, body, headers=None):
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}


def parse_go_duration(s):
    """time.ParseDuration: seconds as float, ValueError when Go would reject it."""
    if s in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if not s:
        raise ValueError(s)
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DUR_RE.match(s, pos)
        if not m:
            raise ValueError(s)
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def norm_keys(obj):
    """Consul decodes register bodies with CamelCase or snake_case keys: index by a normal form.
    The keys of a Meta map are data, kept as sent."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            nk = k.replace("_", "").lower()
            out[nk] = dict(v) if nk == "meta" and isinstance(v, dict) else norm_keys(v)
        return out
    if isinstance(obj, list):
        return [norm_keys(v) for v in obj]
    return obj


# What the agent's checks may probe: loopback, and the test ranges that only exist inside
# network namespaces a test made with no route out (198.18.0.0/15, 2001:db8::/32).
TEST_NETS = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]


def is_test_target(host):
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    return ip.is_loopback or any(ip in n for n in TEST_NETS if n.version == ip.version)


# ---- config entries (agent/structs/config_entry*.go) ------------------------------------------
_SUBSET_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_BEXPR_TOKEN = re.compile(r'\s*(?:(\(|\))|("(?:[^"\\]|\\.)*"|`[^`]*`)|([A-Za-z0-9_.:/\-\[\]]+)|(==|!=))')


class BexprError(ValueError):
    pass


def bexpr_parse(text):
    """Checks a go-bexpr filter: selector OP value, value in/not in selector, selector is
    (not) empty, selector (not) contains/matches value, joined by and/or/not and parentheses."""
    toks, pos = [], 0
    while pos < len(text):
        m = _BEXPR_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise BexprError(f"1:{pos + 1}: unexpected input {text[pos:pos + 10]!r}")
        toks.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    i = 0

    def peek(k=0):
        return toks[i + k] if i + k < len(toks) else None

    def take(*words):
        nonlocal i
        for k, w in enumerate(words):
            if peek(k) != w:
                return False
        i += len(words)
        return True

    def operand():
        nonlocal i
        t = peek()
        if t is None or t in ("(", ")", "==", "!="):
            raise BexprError(f"expected a selector or value, got {t!r}")
        i += 1
        return t

    def match():
        left = operand()
        if take("==") or take("!=") or take("contains") or take("matches") or \
                take("not", "contains") or take("not", "matches"):
            operand()
        elif take("in") or take("not", "in"):
            operand()
        elif take("is", "empty") or take("is", "not", "empty"):
            pass
        else:
            raise BexprError(f"no operator after {left!r}")

    def primary():
        if take("("):
            disj()
            if not take(")"):
                raise BexprError("missing )")
        elif take("not"):
            primary()
        else:
            match()

    def conj():
        primary()
        while take("and"):
            primary()

    def disj():
        conj()
        while take("or"):
            conj()

    if not toks:
        raise BexprError("empty expression")
    disj()
    if i != len(toks):
        raise BexprError(f"unexpected {toks[i]!r}")


def scale_weight(w):
    return int(round(float(w) * 100.0))


def config_splitter(b, name, raw):
    splits = b.get("splits") or []
    if not name:
        raise ApiError(500, "Name is required")
    if not splits:
        raise ApiError(500, "no splits configured")
    out, seen = [], set()
    for sp in splits:
        s = {"Weight": scale_weight(sp.get("weight", 0)) / 100.0}
        for k, canon in (("service", "Service"), ("servicesubset", "ServiceSubset"),
                         ("namespace", "Namespace"), ("partition", "Partition")):
            if sp.get(k):
                s[canon] = sp[k]
        key = (s.get("Service") or name, s.get("ServiceSubset", ""), s.get("Namespace", ""),
               s.get("Partition", ""))
        if key in seen:
            raise ApiError(500, "split destination occurs more than once: service=%s, subset=%s, "
                                "namespace=%s, partition=%s" % tuple(json.dumps(x) for x in key))
        seen.add(key)
        out.append(s)
    total = sum(scale_weight(sp["Weight"]) for sp in out)
    if total != 10000:
        raise ApiError(500, "the sum of all split weights must be 100, not %f" % (total / 100.0))
    return {"Splits": out}


def raw_field(raw, name):
    """A top-level field of a raw body under either spelling (CamelCase, snake_case), keeping the
    keys below it as sent: subset names and Meta keys are user data, never normalised."""
    for k, v in raw.items():
        if k.replace("_", "").lower() == name:
            return v
    return None


def config_resolver(b, name, raw):
    if not name:
        raise ApiError(500, "Name is required")
    out, subsets = {}, {}
    for sub, d in (raw_field(raw, "subsets") or {}).items():
        d = norm_keys(d or {})
        if sub == "":
            raise ApiError(500, "Subset defined with empty name")
        if not _SUBSET_RE.match(sub) or len(sub) > 63:
            raise ApiError(500, f'Subset "{sub}" is invalid: Subset name must be a valid DNS '
                                f"subdomain element")
        entry = {}
        if d.get("filter"):
            try:
                bexpr_parse(d["filter"])
            except BexprError as e:
                raise ApiError(500, f'Filter for subset "{sub}" is not a valid expression: {e}')
            entry["Filter"] = d["filter"]
        if d.get("onlypassing"):
            entry["OnlyPassing"] = True
        subsets[sub] = entry
    default = b.get("defaultsubset") or ""
    if default and default not in subsets:
        raise ApiError(500, f'DefaultSubset "{default}" is not a valid subset')
    if default:
        out["DefaultSubset"] = default
    if subsets:
        out["Subsets"] = subsets
    if b.get("connecttimeout"):
        try:
            parse_go_duration(b["connecttimeout"])
        except ValueError:
            raise ApiError(400, f'Request decoding failed: time: invalid duration "{b["connecttimeout"]}"')
        out["ConnectTimeout"] = b["connecttimeout"]
    return out


def config_defaults(b, name, raw):
    if not name:
        raise ApiError(500, "Name is required")
    return {"Protocol": b["protocol"]} if b.get("protocol") else {}


class Catalog:
    """The agent's node, its services and checks, and the index; every access under `cond`."""

    def __init__(self, args):
        self.args = args
        self.hold_entries = args.hold_config_entries  # GET of a config entry fails (test control)
        self.cond = threading.Condition()
        self.index = 10
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, args.node_name))
        self.node_create = self.node_modify = self.bump()
        self.services = {}  # id -> service dict (agent form, internal keys prefixed with _)
        self.checks = {}  # id -> check dict
        self.service_index = {}  # service name -> index of the last write touching it
        self.kv = {}  # key -> DirEntry dict (Value kept as bytes under "_raw")
        self.kv_index = 0  # index of the last KV write (the kvs + tombstones tables)
        self._ix = None  # (instances by name, checks by service ID, node checks); see lookup()
        self.config = {}  # "kind/name" -> config entry (canonical form, with Raft indexes)
        self.config_index = {}  # "kind/name" and "kind" -> index of the last write
        self.connect = ConnectCA(self, args)
        self.load()
        with self.cond:
            self.seed()

    def seed(self):
        if "serfHealth" not in self.checks:
            self.checks["serfHealth"] = self.new_check(
                "serfHealth", "Serf Health Status", "", "", "passing", "Agent alive and reachable")
        if "consul" not in self.services:
            self.add_service({"id": "consul", "name": "consul", "port": 8300}, [])

    # ---- index and persistence -------------------------------------------------------------
    def bump(self):
        self.index += 1
        return self.index

    def touch(self, names):
        """Records a write: new index for every service named, wakes blocking queries."""
        idx = self.bump()
        for n in names:
            self.service_index[n] = idx
        self._ix = None
        self.save()
        self.cond.notify_all()
        return idx

    def touch_config(self, kind, name):
        """Records a config entry write: new index for the entry and its kind."""
        idx = self.bump()
        self.config_index[f"{kind}/{name}"] = self.config_index[kind] = idx
        self.save()
        self.cond.notify_all()
        return idx

    def save(self):
        if not self.args.data_file:
            return
        kv = {k: dict(e, _raw=e["_raw"].hex()) for k, e in self.kv.items()}
        state = {"index": self.index, "services": self.services, "checks": self.checks,
                 "kv": kv, "kv_index": self.kv_index,
                 "service_index": self.service_index, "node": [self.node_create, self.node_modify],
                 "config": self.config, "config_index": self.config_index,
                 "connect": self.connect.dump()}
        tmp = self.args.data_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.args.data_file)

    def load(self):
        if not self.args.data_file:
            return
        try:
            with open(self.args.data_file) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return
        self.index = state["index"]
        self.services, self.checks = state["services"], state["checks"]
        self.service_index = state["service_index"]
        self.node_create, self.node_modify = state["node"]
        self.config = state.get("config", {})
        self.config_index = state.get("config_index", {})
        self.connect.restore(state.get("connect", {}))
        self.kv = {k: dict(e, _raw=bytes.fromhex(e["_raw"])) for k, e in state.get("kv", {}).items()}
        self.kv_index = state.get("kv_index", 0)
        now = time.time()
        for c in self.checks.values():  # timers restart with the agent
            c["_next_run"] = now
            if c.get("_ttl"):
                c["_ttl_deadline"] = now + c["_ttl"]

    # ---- building blocks -------------------------------------------------------------------
    def new_check(self, cid, name, service_id, service_name, status, output="", ctype="",
                  interval="", timeout="", notes=""):
        idx = self.index
        return {"Node": self.args.node_name, "CheckID": cid, "Name": name, "Status": status,
                "Notes": notes, "Output": output, "ServiceID": service_id,
                "ServiceName": service_name, "ServiceTags": [], "Type": ctype,
                "Interval": interval, "Timeout": timeout, "ExposedPort": 0, "Definition": {},
                "CreateIndex": idx, "ModifyIndex": idx}

    def node_json(self):
        a = self.args.node_address
        return {"ID": self.node_id, "Node": self.args.node_name, "Address": a,
                "Datacenter": self.args.datacenter,
                "TaggedAddresses": {"lan": a, "lan_ipv4": a, "wan": a, "wan_ipv4": a},
                "Meta": {"consul-network-segment": "", "consul-version": "1.17.0"},
                "CreateIndex": self.node_create, "ModifyIndex": self.node_modify}

    def lookup(self):
        """Instances by service name and checks by service ID, sorted as memdb returns them,
        built once per write (every write goes through touch(), which drops them): with 1,000
        services of 64 instances a query must not scan the whole catalog."""
        if self._ix is None:
            by_name, by_sid, node = {}, {}, []
            for s in self.services.values():
                by_name.setdefault(s["Service"], []).append(s)
            for c in self.checks.values():
                (by_sid.setdefault(c["ServiceID"], []) if c["ServiceID"] else node).append(c)
            for lst in by_name.values():
                lst.sort(key=lambda s: s["ID"])
            for lst in list(by_sid.values()) + [node]:
                lst.sort(key=lambda c: c["CheckID"])
            self._ix = (by_name, by_sid, node)
        return self._ix

    def service_checks(self, sid):
        """Node checks first, then the instance's own, each by CheckID (memdb order)."""
        _, by_sid, node = self.lookup()
        return node + by_sid.get(sid, [])

    @staticmethod
    def public(d):
        return {k: v for k, v in d.items() if not k.startswith("_")}

    def instances(self, name):
        return list(self.lookup()[0].get(name, []))

    def result_index(self, name):
        idx = self.service_index.get(name)
        if idx is None:  # unknown service: the services table's index
            idx = max(self.service_index.values(), default=self.index)
        return max(idx, 1)

    # ---- registration ----------------------------------------------------------------------
    def add_service(self, body, check_defs, replace_checks=False):
        """Registers (or replaces) an instance and its checks. `body` has normalised keys."""
        sid = body.get("id") or body["name"]
        prev = self.services.get(sid)
        idx = self.index + 1
        addr = body.get("address") or ""
        port = int(body.get("port") or 0)
        weights = body.get("weights") or {}
        svc = {"ID": sid, "Service": body["name"], "Tags": list(body.get("tags") or []),
               "Address": addr}
        tagged = self.tagged_addresses(addr, port)
        if tagged:  # omitempty, right after Address (structs.NodeService order)
            svc["TaggedAddresses"] = tagged
        svc.update({"Meta": body.get("meta") or None, "Port": port,
                    "Weights": {"Passing": int(weights.get("passing", 1)),
                                "Warning": int(weights.get("warning", 1))},
                    "EnableTagOverride": bool(body.get("enabletagoverride", False)),
                    "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                    "Connect": ({"Native": True} if (body.get("connect") or {}).get("native")
                                else {}),
                    "PeerName": "", "CreateIndex": prev["CreateIndex"] if prev else idx,
                    "ModifyIndex": idx})
        self.services[sid] = svc
        names = {body["name"]} | ({prev["Service"]} if prev else set())
        if replace_checks:
            for cid in [c for c, v in self.checks.items() if v["ServiceID"] == sid]:
                del self.checks[cid]
        for n, cdef in enumerate(check_defs, start=1):
            self.add_check(svc, cdef, f"service:{sid}" if len(check_defs) == 1 else
                           f"service:{sid}:{n}")
        return self.touch(names)

    @staticmethod
    def tagged_addresses(addr, port):
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None
        suffix = "ipv4" if ip.version == 4 else "ipv6"
        return {f"lan_{suffix}": {"Address": addr, "Port": port},
                f"wan_{suffix}": {"Address": addr, "Port": port}}

    def add_check(self, svc, cdef, default_id):
        cid = cdef.get("checkid") or cdef.get("id") or default_id
        ctype, interval = self.check_type(cdef), cdef.get("interval", "")
        prev = self.checks.get(cid)
        status = cdef.get("status") or (prev["Status"] if prev else "critical")
        c = self.new_check(cid, cdef.get("name") or f"Service '{svc['Service']}' check",
                           svc["ID"], svc["Service"], status, prev["Output"] if prev else "",
                           ctype, interval, cdef.get("timeout", ""), cdef.get("notes", ""))
        c["ServiceTags"] = list(svc["Tags"])
        c["Definition"] = {}
        c["CreateIndex"] = self.index + 1
        c["ModifyIndex"] = self.index + 1
        c["_http"], c["_tcp"] = cdef.get("http"), cdef.get("tcp")
        c["_method"] = cdef.get("method") or "GET"
        c["_interval"] = parse_go_duration(interval) if interval else 0.0
        c["_timeout"] = parse_go_duration(cdef["timeout"]) if cdef.get("timeout") else 10.0
        c["_next_run"] = time.time()
        ttl = cdef.get("ttl")
        c["_ttl"] = parse_go_duration(ttl) if ttl else 0.0
        c["_ttl_deadline"] = time.time() + c["_ttl"] if ttl else 0.0
        dca = cdef.get("deregistercriticalserviceafter")
        c["_dereg_after"] = max(parse_go_duration(dca), MIN_DEREGISTER_AFTER) if dca else 0.0
        c["_critical_since"] = time.time() if status == "critical" else 0.0
        self.checks[cid] = c

    @staticmethod
    def check_type(cdef):
        for key, t in (("ttl", "ttl"), ("http", "http"), ("tcp", "tcp"), ("args", "script"),
                       ("grpc", "grpc"), ("h2ping", "h2ping"), ("udp", "udp")):
            if cdef.get(key):
                return t
        return ""

    def remove_service(self, sid):
        svc = self.services.pop(sid)
        for cid in [c for c, v in self.checks.items() if v["ServiceID"] == sid]:
            del self.checks[cid]
        return self.touch({svc["Service"]})

    def set_check(self, cid, status, output):
        """Agent-side status change: a Raft write only when the status changes (output-only
        updates wait for check_update_interval, 5 min, in Consul)."""
        c = self.checks[cid]
        c["Output"] = output
        if c["Status"] == status:
            return
        c["Status"] = status
        c["_critical_since"] = time.time() if status == "critical" else 0.0
        idx = self.index + 1
        c["ModifyIndex"] = idx
        if c["ServiceID"]:
            self.touch({c["ServiceName"]})
        else:  # a node check changes every instance on the node
            self.touch({s["Service"] for s in self.services.values()})

    def node_maintenance(self, enable, reason):
        cid = "_node_maintenance"
        if enable and cid not in self.checks:
            self.bump()
            self.checks[cid] = self.new_check(
                cid, "Node Maintenance Mode", "", "", "critical",
                "", "maintenance", notes=reason or "Maintenance mode is enabled for this node, "
                "but no reason was provided. This is a default message.")
        elif not enable and cid in self.checks:
            del self.checks[cid]
        else:
            return
        self.touch({s["Service"] for s in self.services.values()})

    def service_maintenance(self, sid, enable, reason):
        cid = f"_service_maintenance:{sid}"
        svc = self.services[sid]
        if enable and cid not in self.checks:
            self.bump()
            self.checks[cid] = self.new_check(
                cid, "Service Maintenance Mode", sid, svc["Service"], "critical", "",
                "maintenance", notes=reason or "Maintenance mode is enabled for this service, "
                "but no reason was provided. This is a default message.")
        elif not enable and cid in self.checks:
            del self.checks[cid]
        else:
            return
        self.touch({svc["Service"]})


# ---- Connect CA (openssl) and intentions -------------------------------------------------------
def _openssl(*args, stdin=None):
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    if r.returncode:
        raise RuntimeError("openssl %s: %s" % (args[0], r.stderr.decode(errors="replace")[-300:]))
    return r.stdout


def _rfc3339(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _asn1(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")


def _colon_hex(b):
    return ":".join("%02x" % x for x in b)


class ConnectCA:
    """Consul's built-in CA: roots (one active), leaves per service, intentions. Under cat.cond."""

    def __init__(self, cat, args):
        self.cat, self.args = cat, args
        self._dir = args.ca_dir
        self.cluster_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "cluster/" + args.node_name))
        self.trust_domain = self.cluster_id + ".consul"
        self.roots, self.leaves, self.overrides = [], {}, {}
        self.intentions = {}  # (source, destination) -> intention dict
        self.roots_index = self.ixn_index = 0
        self.serial = 1

    def dump(self):
        return {"roots": self.roots, "intentions": list(self.intentions.values()),
                "roots_index": self.roots_index, "ixn_index": self.ixn_index, "serial": self.serial}

    def restore(self, d):
        self.roots, self.roots_index = d.get("roots", []), d.get("roots_index", 0)
        self.ixn_index, self.serial = d.get("ixn_index", 0), d.get("serial", 1)
        self.intentions = {(i["SourceName"], i["DestinationName"]): i for i in d.get("intentions", [])}

    @property
    def dir(self):
        """The keys' directory, made on first use (a temporary one unless --ca-dir)."""
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="consul-emu-ca-")
            atexit.register(shutil.rmtree, self._dir, True)
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        return self._dir

    def ensure_root(self):
        """The CA is made on first use: emulators that never serve Connect run no openssl."""
        if not any(r["Active"] for r in self.roots):
            self.rotate()

    # -- roots
    def rotate(self):
        n = len(self.roots) + 1
        key = os.path.join(self.dir, "root%d.key" % n)
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        pem = _openssl("req", "-x509", "-new", "-key", key, "-days", "3650", "-subj",
                       "/CN=Consul CA %d" % n, "-set_serial", str(n),
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                       "-addext", "subjectAltName=URI:spiffe://" + self.trust_domain).decode()
        der = _openssl("x509", "-outform", "DER", stdin=pem.encode())
        now, idx = time.time(), self.cat.bump()
        for r in self.roots:
            if r["Active"]:
                r["Active"], r["_inactive_since"], r["ModifyIndex"] = False, now, idx
        self.roots.append({"ID": _colon_hex(hashlib.sha1(der).digest()), "Name": "Consul CA Root Cert",
                           "SerialNumber": n, "SigningKeyID": _colon_hex(hashlib.sha256(der).digest()),
                           "ExternalTrustDomain": self.cluster_id, "NotBefore": _rfc3339(now),
                           "NotAfter": _rfc3339(now + 3650 * 86400), "RootCert": pem,
                           "IntermediateCerts": None, "Active": True, "PrivateKeyType": "ec",
                           "PrivateKeyBits": 256, "CreateIndex": idx, "ModifyIndex": idx,
                           "_key": key})
        self.roots_index = idx
        self.cat.save()
        self.cat.cond.notify_all()

    def prune(self, now):
        after = self.args.prune_roots_after
        keep = [r for r in self.roots
                if r["Active"] or not after or now - r.get("_inactive_since", now) < after]
        if len(keep) != len(self.roots):
            self.roots = keep
            self.roots_index = self.cat.bump()
            self.cat.save()
            self.cat.cond.notify_all()

    def active(self):
        return next(r for r in self.roots if r["Active"])

    def roots_json(self):
        a = self.active()
        return {"ActiveRootID": a["ID"], "TrustDomain": self.trust_domain,
                "Roots": [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.roots]}

    # -- leaves
    def issue(self, service):
        """Signs a leaf for `service` (or the service an override names) with the active root."""
        as_ = self.overrides.get(service) or service
        root, d = self.active(), os.path.join(self.dir, "leaf")
        os.makedirs(d, exist_ok=True)
        key, csr, crt = (os.path.join(d, service + x) for x in (".key", ".csr", ".crt"))
        ext, conf = os.path.join(d, service + ".ext"), os.path.join(self.dir, "ca.conf")
        self.serial += 1
        uri = "spiffe://%s/ns/default/dc/%s/svc/%s" % (self.trust_domain, self.args.datacenter, as_)
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement\n"
                    "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:%s\n" % uri)
        with open(conf, "w") as f:
            f.write("[ca]\ndefault_ca=emu\n[emu]\ndatabase=%s/index.txt\nnew_certs_dir=%s\n"
                    "serial=%s/serial\ndefault_md=sha256\npolicy=pol\nunique_subject=no\n"
                    "[pol]\ncommonName=supplied\n" % (self.dir, d, self.dir))
        open(os.path.join(self.dir, "index.txt"), "a").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("%04X\n" % self.serial)
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        _openssl("req", "-new", "-key", key, "-subj", "/CN=" + as_, "-out", csr)
        now = time.time()
        start, end = now - 60, now + self.args.leaf_ttl
        with open(os.path.join(self.dir, "root.crt"), "w") as f:
            f.write(root["RootCert"])
        _openssl("ca", "-batch", "-notext", "-config", conf, "-cert", os.path.join(self.dir, "root.crt"),
                 "-keyfile", root["_key"], "-in", csr, "-out", crt, "-extfile", ext,
                 "-startdate", _asn1(start), "-enddate", _asn1(end))
        idx = self.cat.bump()
        life = end - now  # the minute of backdating is not lifetime (matters for short TTLs)
        self.leaves[service] = {
            "SerialNumber": "%02x" % self.serial, "CertPEM": open(crt).read(),
            "PrivateKeyPEM": open(key).read(), "Service": as_, "ServiceURI": uri,
            "ValidAfter": _rfc3339(start), "ValidBefore": _rfc3339(end),
            "CreateIndex": idx, "ModifyIndex": idx,
            "_root": root["ID"], "_start": start, "_end": end,
            "_soft": now + life * random.uniform(0.6, 0.9), "_as": as_}
        for x in (key, csr):
            os.unlink(x)
        self.cat.cond.notify_all()
        return self.leaves[service]

    def leaf_stale(self, leaf, service, now):
        return (leaf["_root"] != self.active()["ID"] or now >= leaf["_soft"]
                or leaf["_as"] != (self.overrides.get(service) or service))

    def leaf(self, service):
        now, leaf = time.time(), self.leaves.get(service)
        if leaf is None or self.leaf_stale(leaf, service, now):
            leaf = self.issue(service)
        return leaf

    def leaf_wait_s(self, service):
        leaf = self.leaves.get(service)
        return max(leaf["_soft"] - time.time(), 0.01) if leaf else 0.01

    # -- intentions
    def set_intention(self, src, dst, action, description=""):
        key, idx = (src, dst), self.cat.bump()
        old = self.intentions.get(key)
        self.intentions[key] = {"Description": description, "SourceNS": "default", "SourceName": src,
                                "DestinationNS": "default", "DestinationName": dst,
                                "SourceType": "consul", "Action": action, "Meta": {},
                                "Precedence": precedence(src, dst),
                                "CreateIndex": old["CreateIndex"] if old else idx, "ModifyIndex": idx}
        self.ixn_index = idx
        self.cat.save()
        self.cat.cond.notify_all()

    def delete_intention(self, src, dst):
        if self.intentions.pop((src, dst), None) is not None:
            self.ixn_index = self.cat.bump()
            self.cat.save()
            self.cat.cond.notify_all()

    def match(self, by, name):
        field = "DestinationName" if by == "destination" else "SourceName"
        out = [i for i in self.intentions.values() if i[field] in (name, "*")]
        out.sort(key=lambda i: (-i["Precedence"], i["SourceName"], i["DestinationName"]))
        return [{k: v for k, v in i.items() if k != "Precedence"} for i in out]


def precedence(src, dst):
    """agent/structs/intention.go UpdatePrecedence with namespaces exact (CE)."""
    return (9 if src != "*" else 8) if dst != "*" else (6 if src != "*" else 5)


class Checker(threading.Thread):
    """Runs HTTP/TCP checks at their interval, expires TTLs, reaps long-critical services."""

    def __init__(self, cat):
        super().__init__(daemon=True)
        self.cat = cat
        self.next_reap = time.time() + cat.args.reap_interval

    def run(self):
        while True:
            time.sleep(0.05)
            now = time.time()
            with self.cat.cond:
                for c in list(self.cat.checks.values()):
                    self.tick(c, now)
                if now >= self.next_reap:
                    self.next_reap = now + self.cat.args.reap_interval
                    self.reap(now)
                self.cat.connect.prune(now)

    def tick(self, c, now):
        if c.get("_ttl") and now >= c["_ttl_deadline"] and c["Status"] != "critical":
            self.cat.set_check(c["CheckID"], "critical", "TTL expired")
        if (c.get("_http") or c.get("_tcp")) and c["_interval"] and now >= c["_next_run"] \
                and not c.get("_running"):
            c["_running"] = True
            c["_next_run"] = now + c["_interval"]
            threading.Thread(target=self.probe, args=(dict(c),), daemon=True).start()

    def probe(self, c):
        status, output = (self.http(c) if c.get("_http") else self.tcp(c))
        with self.cat.cond:
            live = self.cat.checks.get(c["CheckID"])
            if live is not None:
                live["_running"] = False
                self.cat.set_check(c["CheckID"], status, output)

    @staticmethod
    def http(c):
        url = urllib.parse.urlsplit(c["_http"])
        if not url.hostname or not is_test_target(url.hostname):
            return "critical", "emulator: refusing to probe a target outside loopback and the test ranges"
        try:
            conn = HTTPConnection(url.hostname, url.port or 80, timeout=c["_timeout"])
            conn.request(c["_method"], url.path or "/")
            resp = conn.getresponse()
            body = resp.read(4096).decode(errors="replace")
            conn.close()
        except OSError as e:
            return "critical", f"{c['_method']} {c['_http']}: {e}"
        text = f"HTTP {c['_method']} {c['_http']}: {resp.status} {resp.reason} Output: {body}"
        if 200 <= resp.status < 300:
            return "passing", text
        return ("warning" if resp.status == 429 else "critical"), text

    @staticmethod
    def tcp(c):
        host, _, port = c["_tcp"].rpartition(":")
        if not is_test_target(host):
            return "critical", "emulator: refusing to probe a target outside loopback and the test ranges"
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=c["_timeout"]).close()
        except (OSError, ValueError) as e:
            return "critical", f"dial tcp {c['_tcp']}: {e}"
        return "passing", f"TCP connect {c['_tcp']}: Success"

    def reap(self, now):
        for c in list(self.cat.checks.values()):
            after, since = c.get("_dereg_after"), c.get("_critical_since")
            if after and since and c["Status"] == "critical" and now - since >= after and \
                    c["ServiceID"] in self.cat.services:
                self.cat.remove_service(c["ServiceID"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Consul-Emulator"
    # Go's net/http sets TCP_NODELAY on every connection; without it the headers and the body,
    # written apart, wait for the client's delayed ACK (~40 ms on each blocking-query answer).
    disable_nagle_algorithm = True

    # ---- plumbing --------------------------------------------------------------------------
    def setup(self):
        super().setup()
        # Go's net/http sets TCP_NODELAY: without it the body segment waits for the client's
        # delayed ACK of the header segment (40 ms) on every answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *a):
        pass

    def send_response(self, code, message=None):
        """Go's net/http sends Date but no Server header."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def record(self, status):
        log = self.server.log_file
        if log:
            line = f"{self.command} {self.url.path} status={status} token={self.token_state}\n"
            with self.server.log_lock:
                log.write(line)
                log.flush()

    def send(self, status, body=b"", headers=None, ctype=None):
        hdrs = {"X-Consul-Default-Acl-Policy": self.server.cat.args.default_policy,
                "Vary": "Accept-Encoding"}
        hdrs.update(headers or {})
        if body and ctype:
            hdrs["Content-Type"] = ctype
        if len(body) >= GZIP_MIN_SIZE and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            hdrs["Content-Encoding"] = "gzip"
        self.send_response(status)
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.record(status)

    def send_json(self, obj, headers=None):
        if "pretty" in self.query:
            text = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
        else:
            text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        # Go's encoding/json escapes HTML characters.
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        self.send(200, text.encode(), headers, "application/json")

    def send_error_text(self, e):
        self.send(e.status, e.body.encode(), e.headers, "text/plain; charset=utf-8")

    def body_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"null")
        except ValueError as e:
            raise ApiError(400, f"Request decode failed: {e}")

    def q1(self, key, default=None):
        v = self.query.get(key)
        return v[0] if v else default

    # ---- ACL -------------------------------------------------------------------------------
    def token(self):
        tok = self.q1("token")
        if tok is None:
            tok = self.headers.get("X-Consul-Token")
        if tok is None:
            auth = self.headers.get("Authorization", "")
            tok = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return tok

    def resolve_acl(self):
        """Sets self.privileged. Unknown tokens are an error on every endpoint."""
        args, tok = self.server.cat.args, self.token()
        self.token_state = "none" if not tok else "sent"
        if not args.acl_token:
            self.privileged = True
            return
        if tok and tok != args.acl_token:
            self.token_state = "bad"
            raise ApiError(403, "ACL not found")
        self.token_state = "ok" if tok else "anonymous"
        self.privileged = bool(tok) or args.default_policy == "allow"

    def need_write(self, perm, name):
        if not self.privileged:
            raise ApiError(403, f"Permission denied: token with AccessorID '{ANONYMOUS_ACCESSOR}' "
                                f"lacks permission '{perm}' on \"{name}\"")

    # ---- query options (agent/http.go parseWait, parseConsistency, parseDC) -----------------
    def blocking_opts(self):
        wait, index = self.q1("wait", ""), self.q1("index", "")
        try:
            wait_s = parse_go_duration(wait) if wait else 0.0
        except ValueError:
            raise ApiError(400, "Invalid wait time")
        if index and not index.isdigit() or (index and int(index) >= 2 ** 64):
            raise ApiError(400, "Invalid index")
        stale, consistent = "stale" in self.query, "consistent" in self.query
        if stale and consistent:
            raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        if "cached" in self.query and consistent:
            raise ApiError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
        ms = self.q1("max_stale")
        if ms is not None:
            try:
                parse_go_duration(ms)
            except ValueError:
                raise ApiError(400, f'Invalid max_stale value "{ms}"')
            stale = True
        dc = self.q1("dc", "")
        if dc and dc != self.server.cat.args.datacenter:
            if dc in self.server.wan:
                raise Forward(self.server.wan[dc])
            raise ApiError(500, "No path to datacenter")
        self.consistency = "stale" if stale else "consistent" if consistent else "leader"
        return (int(index) if index else 0), wait_s

    def blocking_read(self, index, wait_s, key, build):
        """Runs build() once the result index for `key` passes `index` or the wait ends."""
        cat = self.server.cat
        with cat.cond:
            if index > 0:
                timeout = wait_s
                if timeout > MAX_QUERY_TIME:
                    timeout = MAX_QUERY_TIME
                elif timeout == 0:
                    timeout = DEFAULT_QUERY_TIME
                if timeout > 0:
                    timeout += random.uniform(0, timeout / JITTER_FRACTION)
                deadline = time.time() + timeout
                while key() <= index:
                    left = deadline - time.time()
                    if left <= 0:
                        break
                    cat.cond.wait(left)
            return build(), key()

    def meta_headers(self, idx):
        return {"X-Consul-Index": str(max(idx, 1)), "X-Consul-Knownleader": "true",
                "X-Consul-Lastcontact": "0",
                "X-Consul-Effective-Consistency": self.consistency,
                "X-Consul-Query-Backend": "blocking-query"}

    # ---- reads -----------------------------------------------------------------------------
    def health_service(self, name):
        index, wait_s = self.blocking_opts()
        if not name:
            raise ApiError(400, "Missing service name")
        passing = False
        if "passing" in self.query:
            v = self.q1("passing", "")
            if v not in ("",) + _GO_TRUE + _GO_FALSE:
                raise ApiError(400, "Invalid value for ?passing")
            passing = v == "" or v in _GO_TRUE
        tags = self.query.get("tag", [])
        cat = self.server.cat

        def build():
            out = []
            if not self.privileged:  # ACL filtering: anonymous sees nothing under deny
                return out
            for s in cat.instances(name):
                checks = [cat.public(c) for c in cat.service_checks(s["ID"])]
                if passing and any(c["Status"] != "passing" for c in checks):
                    continue
                if any(t not in s["Tags"] for t in tags):
                    continue
                out.append({"Node": cat.node_json(), "Service": cat.public(s), "Checks": checks})
            return out

        body, idx = self.blocking_read(index, wait_s, lambda: cat.result_index(name), build)
        self.send_json(body, self.meta_headers(idx))

    def catalog_service(self, name):
        index, wait_s = self.blocking_opts()
        if not name:
            raise ApiError(400, "Missing service name")
        cat = self.server.cat
        tags = self.query.get("tag", [])  # every tag given must be on the instance

        def build():
            if not self.privileged:
                return []
            node = cat.node_json()
            return [{"ID": node["ID"], "Node": node["Node"], "Address": node["Address"],
                     "Datacenter": node["Datacenter"], "TaggedAddresses": node["TaggedAddresses"],
                     "NodeMeta": node["Meta"], "ServiceKind": "", "ServiceID": s["ID"],
                     "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                     "ServiceAddress": s["Address"],
                     **({"ServiceTaggedAddresses": s["TaggedAddresses"]}
                        if "TaggedAddresses" in s else {}),
                     "ServiceWeights": s["Weights"], "ServiceMeta": s["Meta"] or {},
                     "ServicePort": s["Port"], "ServiceSocketPath": "",
                     "ServiceEnableTagOverride": s["EnableTagOverride"],
                     "ServiceProxy": s["Proxy"], "ServiceConnect": s["Connect"],
                     "ServiceLocality": None, "CreateIndex": s["CreateIndex"],
                     "ModifyIndex": s["ModifyIndex"]} for s in cat.instances(name)
                    if all(t in s["Tags"] for t in tags)]

        body, idx = self.blocking_read(index, wait_s, lambda: cat.result_index(name), build)
        self.send_json(body, self.meta_headers(idx))

    def catalog_services(self):
        index, wait_s = self.blocking_opts()
        cat = self.server.cat

        def build():
            out = {}
            for s in (cat.services.values() if self.privileged else []):
                out.setdefault(s["Service"], set()).update(s["Tags"])
            return {k: sorted(v) for k, v in sorted(out.items())}

        def key():
            return max(max(cat.service_index.values(), default=1), 1)

        body, idx = self.blocking_read(index, wait_s, key, build)
        self.send_json(body, self.meta_headers(idx))

    def agent_services(self):
        cat = self.server.cat
        with cat.cond:
            out = {}
            for sid, s in sorted(cat.services.items()) if self.privileged else []:
                if sid == "consul":
                    continue
                out[sid] = {"ID": s["ID"], "Service": s["Service"], "Tags": s["Tags"],
                            "Meta": s["Meta"] or {}, "Port": s["Port"], "Address": s["Address"],
                            **({"TaggedAddresses": s["TaggedAddresses"]}
                               if "TaggedAddresses" in s else {}),
                            "Weights": s["Weights"], "EnableTagOverride": s["EnableTagOverride"],
                            **({"Connect": s["Connect"]} if s["Connect"] else {}),
                            "Datacenter": cat.args.datacenter}
        self.send_json(out)

    def agent_checks(self):
        cat = self.server.cat
        with cat.cond:
            out = {cid: cat.public(c) for cid, c in sorted(cat.checks.items())
                   if c["ServiceID"] and self.privileged}
        self.send_json(out)

    def agent_self(self):
        cat = self.server.cat
        self.need_write("agent:read", cat.args.node_name)
        a = cat.args
        self.send_json({"Config": {"Datacenter": a.datacenter, "PrimaryDatacenter": a.datacenter,
                                   "NodeName": a.node_name, "NodeID": cat.node_id,
                                   "Revision": "emulator", "Server": True, "Version": "1.17.0"},
                        "DebugConfig": {"ACLDefaultPolicy": a.default_policy,
                                        "ACLsEnabled": bool(a.acl_token)},
                        "Member": {"Name": a.node_name, "Addr": a.node_address, "Port": 8301,
                                   "Status": 1},
                        "Meta": {"consul-network-segment": "", "consul-version": "1.17.0"}})

    def status_leader(self):
        self.send_json("" if self.server.cat.args.no_leader else f"{self.server.cat.args.node_address}:8300")

    def status_peers(self):
        self.send_json([] if self.server.cat.args.no_leader else [f"{self.server.cat.args.node_address}:8300"])

    # ---- writes ----------------------------------------------------------------------------
    def validate_registration(self, body):
        if not isinstance(body, dict):
            raise ApiError(400, "Request decode failed: json: cannot unmarshal into "
                                "Go value of type structs.ServiceDefinition")
        b = norm_keys(body)
        if not b.get("name"):
            raise ApiError(400, "Missing service name")
        if (b.get("address") or "") in ("0.0.0.0", "::", "[::]"):
            raise ApiError(400, "Invalid service address")
        w = b.get("weights")
        if w is not None:
            if int(w.get("passing", 0)) < 1:
                raise ApiError(400, "Invalid Weights: Passing must be greater than 0")
            if int(w.get("warning", 0)) < 0:
                raise ApiError(400, "Invalid Weights: Warning must be greater or equal than 0")
        for k, v in (body.get("Meta") or body.get("meta") or {}).items():
            if k.startswith("consul-"):
                raise ApiError(400, f"Invalid Service Meta: Couldn't load metadata pair ('{k}', "
                                    f"'{v}'): Key prefix 'consul-' is reserved for internal use")
        checks = ([b["check"]] if b.get("check") else []) + list(b.get("checks") or [])
        for c in checks:
            self.validate_check(c)
        return b, checks

    @staticmethod
    def validate_check(c):
        if c.get("status") and c["status"] not in CHECK_STATUSES:
            raise ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")
        try:
            interval = parse_go_duration(c["interval"]) if c.get("interval") else 0.0
            ttl = parse_go_duration(c["ttl"]) if c.get("ttl") else 0.0
            for k in ("timeout", "deregistercriticalserviceafter"):
                if c.get(k):
                    parse_go_duration(c[k])
        except ValueError as e:
            raise ApiError(400, f'Request decode failed: time: invalid duration "{e}"')
        interval_check = any(c.get(k) for k in ("args", "http", "tcp", "udp", "grpc", "h2ping"))
        if interval > 0 and ttl > 0:
            raise ApiError(400, "Invalid check: Interval and TTL cannot both be specified")
        if interval_check and interval <= 0:
            raise ApiError(400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, "
                                "TCP or UDP checks")
        if not interval_check and not c.get("aliasservice") and ttl <= 0:
            raise ApiError(400, "Invalid check: TTL must be > 0 for TTL checks")

    def register(self):
        b, checks = self.validate_registration(self.body_json())
        self.need_write("service:write", b["name"])
        with self.server.cat.cond:
            self.server.cat.add_service(b, checks, "replace-existing-checks" in self.query)
        self.send(200)

    def deregister(self, sid):
        cat = self.server.cat
        with cat.cond:
            svc = cat.services.get(sid)
            if svc is None or sid == "consul":
                raise ApiError(404, f'Unknown service ID "{sid}". Ensure that the service ID is '
                                    f'passed, not the service name.')
            self.need_write("service:write", svc["Service"])
            cat.remove_service(sid)
        self.send(200)

    def ttl_check(self, cid, status, output):
        cat = self.server.cat
        with cat.cond:
            c = cat.checks.get(cid)
            if c is None:
                raise ApiError(404, f'Unknown check ID "{cid}". Ensure that the check ID is '
                                    f'passed, not the check name.')
            self.need_write("service:write" if c["ServiceID"] else "node:write",
                            c["ServiceName"] or cat.args.node_name)
            if not c.get("_ttl"):
                raise ApiError(500, f'CheckID "{cid}" does not have associated TTL')
            c["_ttl_deadline"] = time.time() + c["_ttl"]
            cat.set_check(cid, status, output)
        self.send(200)

    def check_pass(self, verb, cid):
        status = {"pass": "passing", "warn": "warning", "fail": "critical"}[verb]
        self.ttl_check(cid, status, self.q1("note", ""))

    def check_update(self, cid):
        body = norm_keys(self.body_json() or {})
        status = body.get("status") or ""
        if status not in CHECK_STATUSES:
            raise ApiError(400, f"Invalid check status: '{status}'")
        self.ttl_check(cid, status, body.get("output") or "")

    def enable_flag(self):
        v = self.q1("enable")
        if v is None:
            raise ApiError(400, "Missing value for enable")
        if v not in _GO_TRUE + _GO_FALSE:
            raise ApiError(400, f'Invalid value for enable: "{v}"')
        return v in _GO_TRUE

    def node_maintenance(self):
        enable = self.enable_flag()
        cat = self.server.cat
        self.need_write("node:write", cat.args.node_name)
        with cat.cond:
            cat.node_maintenance(enable, self.q1("reason", ""))
        self.send(200)

    def service_maintenance(self, sid):
        enable = self.enable_flag()
        cat = self.server.cat
        with cat.cond:
            if sid not in cat.services:
                raise ApiError(404, f'Unknown service ID "{sid}". Ensure that the service ID is '
                                    f'passed, not the service name.')
            self.need_write("service:write", cat.services[sid]["Service"])
            cat.service_maintenance(sid, enable, self.q1("reason", ""))
        self.send(200)

    # ---- config entries ----------------------------------------------------------------------
    CONFIG_BUILDERS = {"service-splitter": config_splitter, "service-resolver": config_resolver,
                       "service-defaults": config_defaults}

    def config_apply(self):
        raw = self.body_json()
        if not isinstance(raw, dict):
            raise ApiError(400, "Request decoding failed: config entry is not an object")
        b = norm_keys(raw)
        kind, name = b.get("kind") or "", b.get("name") or ""
        if kind not in self.CONFIG_BUILDERS:
            raise ApiError(400, f"Request decoding failed: invalid config entry kind: {kind}")
        self.need_write("service:write", name)
        body = self.CONFIG_BUILDERS[kind](b, name, raw)
        meta = raw_field(raw, "meta")
        cat = self.server.cat
        cas = self.q1("cas")
        with cat.cond:
            key = f"{kind}/{name}"
            old = cat.config.get(key)
            if cas is not None:
                if not cas.isdigit():
                    raise ApiError(400, "Request decoding failed: invalid cas index")
                want = int(cas)
                if (want == 0 and old) or (want and (not old or old["ModifyIndex"] != want)):
                    return self.send_json(False)
            idx = cat.touch_config(kind, name)
            entry = {"Kind": kind, "Name": name, **body}
            if meta:
                entry["Meta"] = meta
            entry["CreateIndex"] = old["CreateIndex"] if old else idx
            entry["ModifyIndex"] = idx
            cat.config[key] = entry
            cat.save()
        self.send_json(True)

    def config_entry(self, kind, name):
        cat = self.server.cat
        if kind not in self.CONFIG_BUILDERS:
            raise ApiError(400, f"invalid config entry kind: {kind}")
        key = f"{kind}/{name}"
        if self.command == "GET" and cat.hold_entries:
            raise ApiError(500, "rpc error making call: No cluster leader")
        if self.command == "DELETE":
            self.need_write("service:write", name)
            with cat.cond:
                if cat.config.pop(key, None) is not None:
                    cat.touch_config(kind, name)
            return self.send_json(True)
        index, wait_s = self.blocking_opts()

        def build():
            return cat.config.get(key) if self.privileged else None

        entry, idx = self.blocking_read(index, wait_s, lambda: cat.config_index.get(key, 0), build)
        if entry is None:
            raise ApiError(404, f'Config entry not found for "{kind}" / "{name}"',
                           self.meta_headers(idx))
        self.send_json(entry, self.meta_headers(idx))

    def config_list(self, kind):
        cat = self.server.cat
        if kind not in self.CONFIG_BUILDERS:
            raise ApiError(400, f"invalid config entry kind: {kind}")
        index, wait_s = self.blocking_opts()

        def build():
            if not self.privileged:
                return []
            return [e for k, e in sorted(cat.config.items()) if k.startswith(kind + "/")]

        body, idx = self.blocking_read(index, wait_s, lambda: cat.config_index.get(kind, 0), build)
        self.send_json(body, self.meta_headers(idx))
    # ---- KV store (agent/kvs_endpoint.go, agent/consul/kvs_endpoint.go) -----------------------
    KV_MAX_VALUE = 512 * 1024  # kv_max_value_size

    def kv_result_index(self, key):
        cat = self.server.cat
        e = cat.kv.get(key)
        return e["ModifyIndex"] if e else max(cat.kv_index, 1)

    def kv_get(self, key):
        index, wait_s = self.blocking_opts()
        cat = self.server.cat
        if not self.privileged:
            raise ApiError(403, "rpc error making call: Permission denied: token with AccessorID "
                                f"'{ANONYMOUS_ACCESSOR}' lacks permission 'key:read' on \"{key}\"")

        def build():
            e = cat.kv.get(key)
            return dict(e) if e else None

        ent, idx = self.blocking_read(index, wait_s, lambda: self.kv_result_index(key), build)
        headers = self.meta_headers(idx)
        if ent is None:
            return self.send(404, b"", headers)
        if "raw" in self.query:
            headers["X-Content-Type-Options"] = "nosniff"
            return self.send(200, ent["_raw"], headers, "text/plain")
        # structs.DirEntry order: LockIndex, Key, Flags, Value, Session (omitempty), RaftIndex.
        raw = ent["_raw"]
        out = {k: ent[k] for k in ("LockIndex", "Key", "Flags")}
        out["Value"] = base64.b64encode(raw).decode() if raw else None
        out.update({k: ent[k] for k in ("CreateIndex", "ModifyIndex")})
        self.send_json([out], headers)

    def kv_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > self.KV_MAX_VALUE:
            raise ApiError(413, f"Request body({n} bytes) too large, max size: "
                                f"{self.KV_MAX_VALUE} bytes. See https://developer.hashicorp.com/"
                                "consul/docs/agent/config/config-files#kv_max_value_size.")
        return self.rfile.read(n) if n else b""

    def kv_cas(self):
        cas = self.q1("cas")
        if cas is not None and not cas.isdigit():
            raise ApiError(400, "Invalid cas index")
        return int(cas) if cas is not None else None

    def kv_write(self, key, cas, change):
        """One write of `key` under the lock: refused (`false`) when ?cas=N does not match the
        key's ModifyIndex (0: absent), else change(entry or None) returns whether it wrote."""
        self.need_write("key:write", key)
        cat = self.server.cat
        with cat.cond:
            e = cat.kv.get(key)
            if cas is not None and (e["ModifyIndex"] if e else 0) != cas:
                return self.send_json(False)
            if change(e):
                cat.save()
                cat.cond.notify_all()
        self.send_json(True)

    def kv_put(self, key):
        if not key:
            raise ApiError(400, "Missing key name")
        flags = self.q1("flags", "0")
        if not flags.isdigit():
            raise ApiError(400, "Invalid flags")
        cas, raw = self.kv_cas(), self.kv_body()
        cat = self.server.cat

        def put(e):
            idx = cat.bump()
            cat.kv[key] = {"LockIndex": 0, "Key": key, "Flags": int(flags),
                           "CreateIndex": e["CreateIndex"] if e else idx, "ModifyIndex": idx,
                           "_raw": raw}
            cat.kv_index = idx
            return True

        self.kv_write(key, cas, put)

    def kv_delete(self, key):
        if not key:
            raise ApiError(400, "Missing key name")
        cat = self.server.cat

        def delete(e):
            if not e:  # deleting a missing key changes nothing (kvsDeleteTxn)
                return False
            del cat.kv[key]
            cat.kv_index = cat.bump()  # the tombstone moves the table index
            return True

        self.kv_write(key, self.kv_cas(), delete)

    # ---- Connect ---------------------------------------------------------------------------
    def ca_roots(self):
        index, wait_s = self.blocking_opts()
        ca = self.server.cat.connect
        with self.server.cat.cond:
            ca.ensure_root()
        body, idx = self.blocking_read(index, wait_s, lambda: ca.roots_index, ca.roots_json)
        lag = self.server.cat.args.slow_roots.get(self.client_address[0], 0.0)
        if index > 0 and idx > index and lag:
            time.sleep(lag)  # a slow agent: this client learns of the change late
        self.send_json(body, {**self.meta_headers(idx), "X-Cache": "MISS"})

    def ca_leaf(self, service):
        """Blocks until the leaf changes (renewal, rotation): index = the leaf's ModifyIndex."""
        index, wait_s = self.blocking_opts()
        if not service:
            raise ApiError(400, "Missing service name")
        cat = self.server.cat
        ca = cat.connect
        with cat.cond:
            self.need_write("service:write", service)
            ca.ensure_root()
            leaf = ca.leaf(service)
            if index > 0:
                timeout = min(wait_s or DEFAULT_QUERY_TIME, MAX_QUERY_TIME)
                deadline = time.time() + timeout + random.uniform(0, timeout / JITTER_FRACTION)
                while leaf["ModifyIndex"] <= index and time.time() < deadline:
                    cat.cond.wait(min(deadline - time.time(), ca.leaf_wait_s(service)))
                    leaf = ca.leaf(service)
            body = {k: v for k, v in leaf.items() if not k.startswith("_")}
        self.send_json(body, {"X-Consul-Index": str(leaf["ModifyIndex"]), "X-Cache": "MISS"})

    def ca_configuration(self):
        cat = self.server.cat
        if self.command == "GET":
            with cat.cond:
                cat.connect.ensure_root()
                a = cat.connect.active()
                return self.send_json({"Provider": "consul", "Config": {
                    "LeafCertTTL": "%ds" % int(cat.args.leaf_ttl), "RotationPeriod": "2160h",
                    "IntermediateCertTTL": "8760h"}, "State": None,
                    "ForceWithoutCrossSigning": False, "CreateIndex": a["CreateIndex"],
                    "ModifyIndex": a["ModifyIndex"]})
        body = self.body_json()
        if not isinstance(body, dict) or body.get("Provider", "consul") != "consul":
            raise ApiError(400, "emulator: only the consul provider")
        with cat.cond:
            self.need_write("operator:write", "")
            cat.connect.ensure_root()
            cat.connect.rotate()
        self.send(200)

    def intention_args(self):
        src, dst = self.q1("source", ""), self.q1("destination", "")
        if not src:
            raise ApiError(400, "required query parameter 'source' not set")
        if not dst:
            raise ApiError(400, "required query parameter 'destination' not set")
        return src, dst

    def intention_exact(self):
        src, dst = self.intention_args()
        cat = self.server.cat
        with cat.cond:
            if self.command == "GET":
                i = cat.connect.intentions.get((src, dst))
                if i is None:
                    raise ApiError(404, "Intention not found")
                return self.send_json(i, self.meta_headers(cat.connect.ixn_index))
            self.need_write("intentions:write", dst)
            if self.command == "DELETE":
                cat.connect.delete_intention(src, dst)
                return self.send_json(True)
            body = self.body_json()
            action = body.get("Action") if isinstance(body, dict) else None
            if action not in ("allow", "deny"):
                raise ApiError(400, "Intention action must be set to 'allow' or 'deny'")
            cat.connect.set_intention(src, dst, action, body.get("Description", ""))
        self.send_json(True)

    def intentions_list(self):
        index, wait_s = self.blocking_opts()
        ca = self.server.cat.connect

        def build():
            if not self.privileged:
                return []
            return sorted(ca.intentions.values(),
                          key=lambda i: (-i["Precedence"], i["SourceName"], i["DestinationName"]))

        body, idx = self.blocking_read(index, wait_s, lambda: ca.ixn_index, build)
        self.send_json(body, self.meta_headers(idx))

    def intentions_match(self):
        index, wait_s = self.blocking_opts()
        by, names = self.query.get("by"), self.query.get("name") or []
        if not by or len(by) != 1:
            raise ApiError(400, "required query parameter 'by' not set")
        if by[0] not in ("source", "destination"):
            raise ApiError(400, "'by' parameter must be one of 'source' or 'destination'")
        if not names:
            raise ApiError(400, "required query parameter 'name' not set")
        ca = self.server.cat.connect

        def build():
            return {n: ca.match(by[0], n) if self.privileged else [] for n in names}

        body, idx = self.blocking_read(index, wait_s, lambda: ca.ixn_index, build)
        self.send_json(body, self.meta_headers(idx))

    def emulator_hold(self):
        cat = self.server.cat
        with cat.cond:
            cat.hold_entries = self.q1("hold", "1") != "0"
            cat.cond.notify_all()
        self.send(200)

    def emulator_leaf(self, service):
        cat = self.server.cat
        with cat.cond:
            other = self.q1("as", "")
            if other:
                cat.connect.overrides[service] = other
            else:
                cat.connect.overrides.pop(service, None)
            cat.cond.notify_all()
        self.send(200)

    # ---- routing ---------------------------------------------------------------------------
    ROUTES = [
        (re.compile(r"/v1/health/service/(.*)"), ("GET",), "health_service"),
        (re.compile(r"/v1/catalog/services"), ("GET",), "catalog_services"),
        (re.compile(r"/v1/catalog/service/(.*)"), ("GET",), "catalog_service"),
        (re.compile(r"/v1/agent/services"), ("GET",), "agent_services"),
        (re.compile(r"/v1/agent/checks"), ("GET",), "agent_checks"),
        (re.compile(r"/v1/agent/self"), ("GET",), "agent_self"),
        (re.compile(r"/v1/status/leader"), ("GET",), "status_leader"),
        (re.compile(r"/v1/status/peers"), ("GET",), "status_peers"),
        (re.compile(r"/v1/agent/service/register"), ("PUT",), "register"),
        (re.compile(r"/v1/agent/service/deregister/(.+)"), ("PUT",), "deregister"),
        (re.compile(r"/v1/agent/service/maintenance/(.+)"), ("PUT",), "service_maintenance"),
        (re.compile(r"/v1/agent/check/(pass|warn|fail)/(.+)"), ("PUT",), "check_pass"),
        (re.compile(r"/v1/agent/check/update/(.+)"), ("PUT",), "check_update"),
        (re.compile(r"/v1/agent/maintenance"), ("PUT",), "node_maintenance"),
        (re.compile(r"/v1/config"), ("PUT",), "config_apply"),
        (re.compile(r"/v1/config/([^/]+)/(.+)"), ("GET", "DELETE"), "config_entry"),
        (re.compile(r"/v1/config/([^/]+)"), ("GET",), "config_list"),
        (re.compile(r"/v1/agent/connect/ca/roots"), ("GET",), "ca_roots"),
        (re.compile(r"/v1/agent/connect/ca/leaf/(.*)"), ("GET",), "ca_leaf"),
        (re.compile(r"/v1/connect/ca/configuration"), ("GET", "PUT"), "ca_configuration"),
        (re.compile(r"/v1/connect/intentions/exact"), ("GET", "PUT", "DELETE"), "intention_exact"),
        (re.compile(r"/v1/connect/intentions/match"), ("GET",), "intentions_match"),
        (re.compile(r"/v1/connect/intentions"), ("GET",), "intentions_list"),
        (re.compile(r"/emulator/leaf/(.+)"), ("PUT",), "emulator_leaf"),
        (re.compile(r"/emulator/hold-config-entries"), ("PUT",), "emulator_hold"),
        (re.compile(r"/v1/kv/(.*)"), ("GET", "PUT", "DELETE"), "kv"),
    ]

    def kv(self, key):
        return {"GET": self.kv_get, "PUT": self.kv_put, "DELETE": self.kv_delete}[self.command](key)

    def dispatch(self):
        self.url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(self.url.query, keep_blank_values=True)
        self.token_state = "none"
        self.consistency = "leader"
        try:
            for rx, methods, name in self.ROUTES:
                m = rx.fullmatch(self.url.path)
                if not m:
                    continue
                allow = "OPTIONS," + ",".join(methods)
                if self.command == "OPTIONS":
                    return self.send(200, headers={"Allow": allow})
                if self.command not in methods:
                    raise ApiError(405, f"method {self.command} not allowed", {"Allow": allow})
                self.resolve_acl()
                args = [urllib.parse.unquote(g) for g in m.groups()]
                return getattr(self, name)(*args)
            raise ApiError(404, NOT_FOUND_BODY)
        except ApiError as e:
            self.send_error_text(e)
        except Forward as f:
            self.forward(f.target)

    def forward(self, target):
        """Relays the request to the server of the other datacenter and its answer back, as a
        Consul server forwards an RPC across the WAN (headers such as X-Consul-Index are that
        datacenter's)."""
        host, port = target.rsplit(":", 1)
        conn = HTTPConnection(host, int(port), timeout=MAX_QUERY_TIME + 60)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("x-consul-token", "authorization", "accept")}
        try:
            conn.request(self.command, self.path, headers=headers)
            r = conn.getresponse()
            body = r.read()
        except OSError:
            raise ApiError(500, "rpc error making call: EOF")
        finally:
            conn.close()
        keep = {k: v for k, v in r.getheaders() if k.lower().startswith("x-consul-")}
        self.send(r.status, body, keep, r.getheader("Content-Type"))

    do_GET = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_HEAD = do_PATCH = dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096  # 1,000 watchers connect at once in the scale test


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8500)
    ap.add_argument("--datacenter", default="dc1")
    ap.add_argument("--node-name", default="host-a")
    ap.add_argument("--node-address", default="127.0.0.1")
    ap.add_argument("--acl-token", default="", help="enables ACLs; this token may do anything")
    ap.add_argument("--default-policy", choices=("allow", "deny"), default=None)
    ap.add_argument("--no-leader", action="store_true", help="/v1/status/leader returns \"\"")
    ap.add_argument("--wan", action="append", default=[], metavar="DC=HOST:PORT",
                    help="another datacenter's server: reads with ?dc=DC are forwarded to it")
    ap.add_argument("--data-file", default="", help="keep the catalog here across restarts")
    ap.add_argument("--reap-interval", type=float, default=REAP_INTERVAL)
    ap.add_argument("--ca-dir", default="", help="the Connect CA's keys (keep with --data-file)")
    ap.add_argument("--leaf-ttl", type=float, default=72 * 3600.0, help="leaf lifetime (s)")
    ap.add_argument("--slow-roots", action="append", default=[], metavar="IP=SECONDS",
                    help="answer a roots change to client IP this much later (repeatable)")
    ap.add_argument("--prune-roots-after", type=float, default=0.0,
                    help="drop a root this long after it stopped being active (0 = never)")
    ap.add_argument("--log-file", default="")
    ap.add_argument("--hold-config-entries", action="store_true",
                    help="config entry reads fail until PUT /emulator/hold-config-entries?hold=0")
    ap.add_argument("--register", action="append", default=[],
                    help="JSON registration body applied at start (repeatable)")
    ap.add_argument("--register-file", default="",
                    help="a JSON array of registration bodies applied at start (scale tests)")
    a = ap.parse_args()
    a.slow_roots = {k: float(v) for k, v in (x.split("=", 1) for x in a.slow_roots)}
    if a.default_policy is None:
        a.default_policy = "deny" if a.acl_token else "allow"
    cat = Catalog(a)
    bodies = [json.loads(b) for b in a.register]
    if a.register_file:
        with open(a.register_file) as f:
            bodies += json.load(f)
    with cat.cond:
        for body in bodies:
            b = norm_keys(body)
            checks = ([b["check"]] if b.get("check") else []) + list(b.get("checks") or [])
            cat.add_service(b, checks)
    Checker(cat).start()
    srv = Server((a.addr, a.port), Handler)
    srv.cat = cat
    srv.wan = dict(w.split("=", 1) for w in a.wan)
    srv.log_lock = threading.Lock()
    srv.log_file = open(a.log_file, "a") if a.log_file else None
    print(f"consul emulator listening on {a.addr}:{a.port} dc={a.datacenter}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
