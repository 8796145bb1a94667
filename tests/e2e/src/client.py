#!/usr/bin/env python3
"""bulwark e2e socket probe (run inside the pod by the harness).

usage: client.py HOST PORT [options]
  --udp                 UDP instead of TCP
  --send TEXT           send TEXT after connecting (and read the reply)
  --send-hex HEX        send these bytes instead
  --tls-record          send a well-formed TLS client start: a ClientHello, then a
                        change_cipher_spec and an application data record (a TLS verdict)
  --hello-then TEXT     send a well-formed ClientHello, then TEXT in a second send
  --tfo-sendto          TCP Fast Open: sendto(MSG_FASTOPEN) instead of connect + send
  --tfo-connect         TCP Fast Open: TCP_FASTOPEN_CONNECT before connect
  --mptcp               an IPPROTO_MPTCP socket
  --race-send           non-blocking connect, then a blocking send while the handshake is in
                        progress (prints {"connecting": true} first)
  --idle N              first open N more connections to the same place and keep them idle
  --pause-file FILE     after connect (and the first send), print the JSON so far and wait
                        until FILE exists, then
  --send-after TEXT     send TEXT
  --pass-fd PATH        after connect (and the first send), hand the socket to the process
                        listening on unix socket PATH (SCM_RIGHTS) and wait for its answer
  --recv-fd PATH        do not connect: receive a socket on unix socket PATH, use it for --send
                        (with --sendto TEXT: sendto() on it; with --connect-received: connect
                        it, then --send)
  --pass-unconnected PATH  create the socket (--udp or TCP) without connecting it and hand it
                        to the process listening on unix socket PATH (SCM_RIGHTS)
  --exec-with-fd ARGV.. after connect (and the first send), exec ARGV (the rest of the
                        command line) with the socket as fd 3
  --wait-for FILE       before anything, wait (up to 60 s) until FILE exists
  --hold SECS           keep the socket open that long after the last step
client.py HOST PORT --sendto TEXT      (unconnected UDP: sendto(), no connect())
client.py HOST PORT --repeat-for SECS  (TCP connects in a loop; counts the outcomes)
client.py HOST PORT --attempt-until FILE  (a TCP connect every millisecond until FILE exists;
                                             see attempt_until)

Prints one JSON object: {"connect": "ok" | "<ERRNO NAME>", "send": ..., "recv_bytes": N, ...}.
Exit status 0 when every step worked, 3 when connect failed, 4 when a send failed, 5 when the
reply could not be read.
"""
import array
import errno
import json
import os
import socket
import struct
import sys
import time

TCP_FASTOPEN_CONNECT = 30
IPPROTO_MPTCP = 262


def name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def client_hello():
    """A well-formed TLS 1.2 ClientHello record (one cipher suite, SNI and ALPN extensions)."""
    def ext(kind, data):
        return struct.pack(">HH", kind, len(data)) + data
    host = b"bulwark-e2e"
    sni = struct.pack(">HBH", len(host) + 3, 0, len(host)) + host
    alpn = struct.pack(">HB", 9, 8) + b"http/1.1"
    exts = ext(0, sni) + ext(16, alpn) + ext(13, struct.pack(">HH", 2, 0x0403))
    body = (b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack(">H", 2) + b"\xc0\x2b"
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def after_hello():
    """What a TLS client sends next: change_cipher_spec and an application data record."""
    return b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x10" + bytes(16)


def opt(rest, flag):
    return rest[rest.index(flag) + 1] if flag in rest else None


def wait_file(path, limit=60):
    deadline = time.time() + limit
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.02)


def emit(out):
    print(json.dumps(out), flush=True)


def send(s, data, out, key):
    try:
        s.sendall(data)
        out[key] = "ok"
        return True
    except OSError as e:
        out[key] = name(e)
        return False


def receive_fd(path):
    """Listens on unix socket PATH, receives one descriptor, answers once it is used."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    conn, _ = srv.accept()
    fds = array.array("i")
    _, anc, _, _ = conn.recvmsg(1, socket.CMSG_LEN(fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: fds.itemsize])
    return conn, socket.socket(fileno=fds[0])


def pass_fd(s, path):
    """Hands socket s to the process listening on unix socket PATH; waits for its answer."""
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.time() + 30
    while True:
        try:
            u.connect(path)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)
    u.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                        array.array("i", [s.fileno()]))])
    u.recv(16)


def use_received(host, port, rest, payload):
    """--recv-fd with --sendto or --connect-received: the received socket's first use."""
    conn, s = receive_fd(opt(rest, "--recv-fd"))
    out, code, step = {"received": "ok"}, 0, "sendto" if "--sendto" in rest else "connect"
    try:
        if step == "sendto":
            s.sendto(opt(rest, "--sendto").encode(), (host, port))
        else:
            s.connect((host, port))
        out[step] = "ok"
        if step == "connect" and payload is not None and not send(s, payload, out, "send"):
            code = 4
    except OSError as e:
        out[step] = name(e)
        code = 4 if step == "sendto" else 3
    emit(out)
    conn.sendall(b"done")
    return code
def attempt_until(fam, host, port, stop_file):
    """A TCP connect every millisecond until stop_file exists. Prints {"attempt_us": T} after
    each attempt, T being the CLOCK_MONOTONIC time it began (microseconds, as the test's own
    clock reads it), so a test can wait until an attempt has begun after a moment of its own;
    at the end one JSON line: attempts, outcomes by name, the time of every attempt and of each
    one that connected, and the longest time between two attempts."""
    counts, times_us, ok_us = {}, [], []
    while True:
        t = time.monotonic_ns() // 1000
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.settimeout(2)
        try:
            c.connect((host, port))
            key = "ok"
            ok_us.append(t)
        except OSError as e:
            key = name(e)
        c.close()
        counts[key] = counts.get(key, 0) + 1
        times_us.append(t)
        print(json.dumps({"attempt_us": t}), flush=True)
        if os.path.exists(stop_file):
            break
        time.sleep(0.001)
    gaps = [b - a for a, b in zip(times_us, times_us[1:])]
    print(json.dumps({"attempts": len(times_us), "outcomes": counts, "times_us": times_us,
                      "ok_us": ok_us, "max_interval_us": max(gaps, default=0)}), flush=True)
    return 0


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    rest = sys.argv[3:]
    tail = []
    if "--exec-with-fd" in rest:
        i = rest.index("--exec-with-fd")
        rest, tail = rest[:i], rest[i + 1:]
    udp = "--udp" in rest
    payload = None
    if "--send" in rest:
        payload = opt(rest, "--send").encode()
    if "--send-hex" in rest:
        payload = bytes.fromhex(opt(rest, "--send-hex"))
    if "--tls-record" in rest:
        payload = client_hello() + after_hello()
    if "--wait-for" in rest:
        wait_file(opt(rest, "--wait-for"))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if "--recv-fd" in rest and ("--sendto" in rest or "--connect-received" in rest):
        return use_received(host, port, rest, payload)
    if "--pass-unconnected" in rest:
        s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        pass_fd(s, opt(rest, "--pass-unconnected"))
        emit({"passed": "ok"})
        return 0
    if "--sendto" in rest:
        data = opt(rest, "--sendto").encode()
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.sendto(data, (host, port))
            emit({"sendto": "ok"})
            return 0
        except OSError as e:
            emit({"sendto": name(e)})
            return 4
    if "--attempt-until" in rest:
        return attempt_until(fam, host, port, rest[rest.index("--attempt-until") + 1])
    if "--repeat-for" in rest:
        end = time.time() + float(opt(rest, "--repeat-for"))
        counts = {}
        while time.time() < end:
            c = socket.socket(fam, socket.SOCK_STREAM)
            c.settimeout(2)
            try:
                c.connect((host, port))
                key = "ok"
            except OSError as e:
                key = name(e)
            c.close()
            counts[key] = counts.get(key, 0) + 1
            time.sleep(0.002)
        emit(counts)
        return 0
    out = {}
    idle = []
    for _ in range(int(opt(rest, "--idle") or 0)):
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.connect((host, port))
        idle.append(c)
    if idle:
        out["idle"] = len(idle)
    if "--recv-fd" in rest:
        conn, s = receive_fd(opt(rest, "--recv-fd"))
        out["received"] = "ok"
        code = 0
        if payload is not None and not send(s, payload, out, "send"):
            code = 4
        emit(out)
        conn.sendall(b"done")
        return code
    proto = IPPROTO_MPTCP if "--mptcp" in rest else 0
    s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM, proto)
    s.settimeout(5)
    try:
        if "--tfo-sendto" in rest:
            # Blocking: without a cookie yet, the kernel completes the handshake first.
            s.settimeout(None)
            s.sendto(payload or b"", socket.MSG_FASTOPEN, (host, port))
            s.settimeout(5)
            out["connect"] = "ok"
            out["send"] = "ok"
            payload = None
        elif "--race-send" in rest:
            s.setblocking(False)
            r = s.connect_ex((host, port))
            out["connect"] = "ok" if r in (0, errno.EINPROGRESS) else errno.errorcode.get(r)
            # Truly blocking again (a timeout would make python poll for the handshake before
            # it sends): the send below enters the kernel and waits for the handshake there.
            s.setblocking(True)
            emit({"connecting": True})
        else:
            if "--tfo-connect" in rest:
                s.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
            s.connect((host, port))
            out["connect"] = "ok"
    except OSError as e:
        out["connect"] = name(e)
        emit(out)
        return 3
    if "--hello-then" in rest:
        if not send(s, client_hello(), out, "hello"):
            emit(out)
            return 4
        payload = opt(rest, "--hello-then").encode()
    if payload is not None:
        if not send(s, payload, out, "send"):
            emit(out)
            return 4
        if not udp and not (tail or "--pause-file" in rest or "--pass-fd" in rest):
            try:
                data = s.recv(65536)
                out["recv_bytes"] = len(data)
            except OSError as e:
                out["recv"] = name(e)
                emit(out)
                return 5
    if tail:
        if s.fileno() != 3:
            os.dup2(s.fileno(), 3)
        os.set_inheritable(3, True)
        emit(out)
        os.execv(tail[0], tail)
    if "--pass-fd" in rest:
        pass_fd(s, opt(rest, "--pass-fd"))
        out["passed"] = "ok"
    if "--pause-file" in rest:
        emit(out)
        wait_file(opt(rest, "--pause-file"))
        out = {}
        after = opt(rest, "--send-after")
        if after is not None and not send(s, after.encode(), out, "send_after"):
            emit(out)
            return 4
    emit(out)
    if "--hold" in rest:
        time.sleep(float(opt(rest, "--hold")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
