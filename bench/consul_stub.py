#!/usr/bin/env python3
"""A lean Consul stub for benchmarks: answers /v1/health/service/<name> with precomputed bodies
and real blocking-query semantics (X-Consul-Index; a query with the current index waits for a
change or `wait`), so what is measured is meshd, not an emulator building JSON. asyncio, one
thread, HTTP/1.1 keep-alive.

  consul_stub.py --port P --services N --instances K --log FILE
  PUT /control/change/<name>   moves instance 0 of <name> to the next port, bumps its index,
                               answers every waiting query at once
Each answer is logged as `<unix time> <name> <index>` once its bytes are written.
"""
import argparse
import asyncio
import json
import time
import urllib.parse


class Stub:
    def __init__(self, n, k, log):
        self.k, self.index, self.log = k, 100, open(log, "a", buffering=1)
        self.port0 = {}
        self.body, self.idx, self.waiters = {}, {}, {}
        for s in range(n):
            self.build("s%d" % s)

    def build(self, name):
        s = int(name[1:])
        p0 = self.port0.get(name, 8000)
        entries = []
        for i in range(self.k):
            entries.append({"Node": {"Node": "n1", "Address": "10.9.0.1"},
                            "Service": {"ID": "%s-%d" % (name, i), "Service": name,
                                        "Address": "127.%d.%d.%d" % (100 + s // 250, s % 250, 1 + i),
                                        "Port": p0 if i == 0 else 8000 + i,
                                        "Weights": {"Passing": 1, "Warning": 1}},
                            "Checks": []})
        self.index += 1
        self.body[name] = json.dumps(entries, separators=(",", ":")).encode()
        self.idx[name] = self.index

    def change(self, name):
        self.port0[name] = self.port0.get(name, 8000) + 1
        self.build(name)
        for fut in self.waiters.pop(name, []):
            if not fut.done():
                fut.set_result(True)

    async def health(self, name, q, writer):
        idx = int(q.get("index", ["0"])[0] or 0)
        wait = q.get("wait", ["300s"])[0]
        secs = float(wait[:-1]) if wait.endswith("s") and not wait.endswith("ms") else 300.0
        if name in self.idx and idx and idx == self.idx[name]:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.setdefault(name, []).append(fut)
            try:
                await asyncio.wait_for(fut, secs)
            except asyncio.TimeoutError:
                pass
        body = self.body.get(name, b"[]")
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: %d\r\n"
                "Content-Length: %d\r\n\r\n" % (self.idx.get(name, self.index), len(body)))
        writer.write(head.encode() + body)
        await writer.drain()
        self.log.write("%.6f %s %d\n" % (time.time(), name, self.idx.get(name, 0)))

    async def serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                method, target, _ = line.split(" ", 2)
                u = urllib.parse.urlsplit(target)
                q = urllib.parse.parse_qs(u.query)
                if method == "PUT" and u.path.startswith("/control/change/"):
                    self.change(u.path.rsplit("/", 1)[1])
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                elif u.path.startswith("/v1/health/service/"):
                    await self.health(u.path.rsplit("/", 1)[1], q, writer)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=64)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    stub = Stub(a.services, a.instances, a.log)
    srv = await asyncio.start_server(stub.serve, "127.0.0.1", a.port, backlog=4096)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
