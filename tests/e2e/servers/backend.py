#!/usr/bin/env python3
"""Test backend: on every TCP connection it writes its name and a newline, then echoes what the
client sends until EOF. With --health-file it also speaks HTTP/1.1: a connection whose first bytes
(within 50 ms of accept) are "GET " gets an HTTP answer instead: `/health` returns 200 unless the
file contains "fail" (then 503); any other path returns the name. Without --health-file the name is
written at once. Threaded so clients can hold many long-lived connections."""
import argparse
import select
import socket
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        srv = self.server
        sock = self.request
        sock.settimeout(30)
        try:
            if srv.health_file and select.select([sock], [], [], 0.05)[0]:
                if sock.recv(4096, socket.MSG_PEEK).startswith(b"GET "):
                    self.http(sock)
                    return
            name = sock.getsockname()[0] if srv.name == "@local" else srv.name
            sock.sendall(name.encode() + b"\n")
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)
        except OSError:
            return

    def http(self, sock):
        req = b""
        while b"\r\n\r\n" not in req and len(req) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            req += chunk
        path = req.split(b" ", 2)[1].decode(errors="replace")
        status, body = "200 OK", self.server.name + "\n"
        if path == "/health":
            healthy = True
            if self.server.health_file:
                try:
                    with open(self.server.health_file) as f:
                        healthy = "fail" not in f.read()
                except OSError:
                    pass
            status, body = ("200 OK", "ok\n") if healthy else ("503 Service Unavailable", "fail\n")
        out = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n{body}")
        sock.sendall(out.encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--health-file", default="")
    a = ap.parse_args()
    family = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    Server.address_family = family
    srv = Server((a.addr, a.port), Handler)
    srv.name = a.name
    srv.health_file = a.health_file
    print(f"backend {a.name} listening on {a.addr}:{a.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
