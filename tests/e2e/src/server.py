#!/usr/bin/env python3
"""bulwark e2e test server (run inside the server network namespace by the harness).

Serves HTTP and HTTPS on the *same* ports: it peeks at the first byte of each connection and
wraps the socket in TLS when it is a TLS handshake record (0x16), so a test can show that
plaintext to a port is blocked while TLS to that very port works. Every connection, every first
payload and every request is appended to a JSON-lines log, so "the server received nothing" is
checked, not assumed.

GET /bytes/N answers with N bytes of body; any other GET answers "ok <path>". HTTP/1.1
keep-alive, so clients can send several requests on one connection.
"""
import argparse
import itertools
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()
CONN_IDS = itertools.count(1)
LOCAL = threading.local()


def log(args, record):
    record["time"] = time.time()
    line = json.dumps(record) + "\n"
    with LOG_LOCK:
        with open(args.log, "a") as f:
            f.write(line)


def plain(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def _record(self, method, body_len=0):
        log(self.server.args, {
            "event": "request", "conn": LOCAL.conn, "tls": LOCAL.tls, "method": method,
            "path": self.path, "port": self.server.server_address[1], "body_len": body_len,
        })

    def do_GET(self):
        self._record("GET")
        if self.path.startswith("/bytes/"):
            try:
                n = int(self.path[len("/bytes/"):])
            except ValueError:
                n = 0
            body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
        else:
            body = ("ok %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self._record("POST", len(data))
        body = ("ok %d\n" % len(data)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Accept TCP Fast Open (when net.ipv4.tcp_fastopen allows it in this namespace), so
        # a test can show clients cannot use it to get data past the egress verdict.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
        super().server_bind()

    def finish_request(self, request, client_address):
        cid = next(CONN_IDS)
        local = request.getsockname()
        log(self.args, {"event": "accept", "conn": cid, "port": local[1],
                        "local": plain(local[0]), "peer": plain(client_address[0])})
        request.settimeout(30)
        try:
            first = request.recv(64, socket.MSG_PEEK)
        except OSError as e:
            log(self.args, {"event": "close", "conn": cid, "data": False, "error": str(e)})
            return
        if not first:
            log(self.args, {"event": "close", "conn": cid, "data": False})
            return
        tls = first[0] == 0x16
        log(self.args, {"event": "data", "conn": cid, "tls": tls, "first_bytes": first.hex()})
        if tls:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log(self.args, {"event": "tls_error", "conn": cid, "error": str(e)})
                return
        LOCAL.conn = cid
        LOCAL.tls = tls
        self.RequestHandlerClass(request, client_address, self)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ports", required=True, help="comma-separated TCP ports")
    p.add_argument("--log", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ready", required=True, help="file created once every port listens")
    args = p.parse_args()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    for port in [int(x) for x in args.ports.split(",")]:
        srv = Server(("::", port), Handler)
        srv.args = args
        srv.tls = tls
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    with open(args.ready, "w") as f:
        f.write("ready\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
