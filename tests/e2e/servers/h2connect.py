#!/usr/bin/python3
"""A hand-driven caller of a meshd's mTLS inbound listener, for the refusal tests: mutual TLS
with the given certificate (or plaintext bytes with --plain), ALPN h2, SNI, then one HTTP/2
CONNECT to --authority (with any --header NAME=VALUE). Prints one JSON line: how the handshake
went, the answer's :status and mesh-reason, or the error. Needs python3-h2 (Debian's), so run it
with /usr/bin/python3."""
import argparse
import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=15008)
    ap.add_argument("--sni", default="api")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--authority", default="")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--header", action="append", default=[], help="NAME=VALUE, repeatable")
    a = ap.parse_args()
    out = {}
    raw = socket.create_connection((a.host, a.port), timeout=5)
    if a.plain:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            out["reply"] = raw.recv(100).decode(errors="replace")
        except OSError as e:
            out["reply"] = str(e)
        print(json.dumps(out))
        return 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["h2"])
    try:
        s = ctx.wrap_socket(raw, server_hostname=a.sni)
        out["tls"] = "ok"
        out["alpn"] = s.selected_alpn_protocol()
    except (ssl.SSLError, OSError) as e:
        out["tls"] = "error: " + str(e)
        print(json.dumps(out))
        return 0
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    extra = [tuple(h.split("=", 1)) for h in a.header]
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", a.authority)] + extra)
    try:
        s.sendall(conn.data_to_send())
        while "status" not in out:
            data = s.recv(65536)
            if not data:
                out["error"] = "closed"
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    h = {k.decode(): v.decode() for k, v in ev.headers}
                    out["status"] = int(h.get(":status", 0))
                    out["reason"] = h.get("mesh-reason", "")
                elif isinstance(ev, h2.events.StreamReset):
                    out["error"] = "reset %d" % ev.error_code
                    out["status"] = 0
            s.sendall(conn.data_to_send())
    except (ssl.SSLError, OSError) as e:
        out["error"] = str(e)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
