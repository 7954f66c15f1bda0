#!/usr/bin/env python3
"""A small authoritative DNS responder for the DNS discovery tests, for what dnsmasq cannot do:
TTL 0 answers, truncation of UDP answers with more than N records (as Consul's DNS interface
does), SERVFAIL, REFUSED, NXDOMAIN, empty answers and timeouts (no reply) on demand.

Zone data comes from a JSON file, read again whenever it changes:
  {"udp_max_answers": 3,
   "srv":   {"_api._tcp.mesh.test": {"mode": "ok", "ttl": 1,
                                     "records": [[priority, weight, port, "target"], ...]}},
   "hosts": {"t1.mesh.test": {"mode": "ok", "ttl": 1, "a": ["127.0.0.1"], "aaaa": ["::1"]}}}
mode: ok, empty (NOERROR, no records), nxdomain, servfail, refused, timeout (never answers).
Names not listed are NXDOMAIN. UDP answers with more records than udp_max_answers carry the
first ones and the TC bit; TCP answers carry all. Each query is logged as one line
`<unix time> <udp|tcp> <name> <type> <mode> <records>` to --log. Standard library only.
"""
import argparse
import ipaddress
import json
import os
import socket
import struct
import threading
import time

TYPES = {1: "A", 28: "AAAA", 33: "SRV"}
RCODES = {"ok": 0, "empty": 0, "nxdomain": 3, "servfail": 2, "refused": 5}


class Zone:
    def __init__(self, path):
        self.path, self.mtime, self.data = path, None, {}
        self.lock = threading.Lock()

    def get(self):
        with self.lock:
            try:
                m = os.stat(self.path).st_mtime_ns
                if m != self.mtime:
                    with open(self.path) as f:
                        self.data = json.load(f)
                    self.mtime = m
            except (OSError, ValueError):
                pass  # a file being rewritten: keep the last good data
            return self.data


def read_name(buf, pos):
    labels = []
    while True:
        n = buf[pos]
        pos += 1
        if n == 0:
            return ".".join(labels).lower(), pos
        labels.append(buf[pos:pos + n].decode("ascii", "replace"))
        pos += n


def enc_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def rr(name, rtype, ttl, rdata):
    return enc_name(name) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def answer(zone, qname, qtype):
    """(mode, [rr bytes])"""
    if qtype == 33:
        e = zone.get("srv", {}).get(qname)
        if e is None:
            return "nxdomain", []
        mode = e.get("mode", "ok")
        if mode != "ok":
            return mode, []
        out = []
        for prio, weight, port, target in e.get("records", []):
            out.append(rr(qname, 33, e.get("ttl", 0),
                          struct.pack("!HHH", prio, weight, port) + enc_name(target)))
        return ("ok" if out else "empty"), out
    e = zone.get("hosts", {}).get(qname)
    if e is None:
        return ("empty" if qname in zone.get("srv", {}) else "nxdomain"), []
    mode = e.get("mode", "ok")
    if mode != "ok":
        return mode, []
    key, fam = ("a", socket.AF_INET) if qtype == 1 else ("aaaa", socket.AF_INET6)
    out = [rr(qname, qtype, e.get("ttl", 0), socket.inet_pton(fam, a)) for a in e.get(key, [])]
    return ("ok" if out else "empty"), out


def respond(zone, query, udp):
    qid, flags, qd = struct.unpack("!HHH", query[:6])
    qname, pos = read_name(query, 12)
    qtype = struct.unpack("!H", query[pos:pos + 2])[0]
    question = query[12:pos + 4]
    mode, rrs = answer(zone, qname, qtype)
    if mode == "timeout":
        return None, qname, qtype, mode, 0
    tc = 0
    limit = zone.get("udp_max_answers", 1000)
    if udp and len(rrs) > limit:
        rrs, tc = rrs[:limit], 0x0200
    hflags = 0x8000 | 0x0400 | tc | (flags & 0x0100) | 0x0080 | RCODES.get(mode, 2)
    head = struct.pack("!HHHHHH", qid, hflags, 1, len(rrs), 0, 0)
    return head + question + b"".join(rrs), qname, qtype, mode, len(rrs)


class Server:
    def __init__(self, args):
        self.zone = Zone(args.zone)
        self.log = open(args.log, "a", buffering=1) if args.log else None
        self.loglock = threading.Lock()
        fam = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
        self.udp = socket.socket(fam, socket.SOCK_DGRAM)
        self.udp.bind((args.addr, args.port))
        self.tcp = socket.socket(fam, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((args.addr, args.port))
        self.tcp.listen(64)

    def note(self, proto, qname, qtype, mode, n):
        if self.log:
            with self.loglock:
                self.log.write("%.6f %s %s %s %s %d\n" %
                               (time.time(), proto, qname, TYPES.get(qtype, qtype), mode, n))

    def serve_udp(self):
        while True:
            data, peer = self.udp.recvfrom(4096)
            try:
                out, qname, qtype, mode, n = respond(self.zone.get(), data, True)
            except (IndexError, struct.error, UnicodeError):
                continue
            self.note("udp", qname, qtype, mode, n)
            if out is not None:
                self.udp.sendto(out, peer)

    def serve_tcp_conn(self, c):
        with c:
            while True:
                head = c.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                data = c.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                try:
                    out, qname, qtype, mode, n = respond(self.zone.get(), data, False)
                except (IndexError, struct.error, UnicodeError):
                    return
                self.note("tcp", qname, qtype, mode, n)
                if out is None:
                    time.sleep(60)  # a timeout: hold the connection, never answer
                    return
                c.sendall(struct.pack("!H", len(out)) + out)

    def serve_tcp(self):
        while True:
            c, _ = self.tcp.accept()
            threading.Thread(target=self.serve_tcp_conn, args=(c,), daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5353)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--log")
    args = ap.parse_args()
    ipaddress.ip_address(args.addr)
    s = Server(args)
    threading.Thread(target=s.serve_tcp, daemon=True).start()
    s.serve_udp()


if __name__ == "__main__":
    main()
