#!/usr/bin/env python3
"""bulwark e2e socket probe (run inside the pod by the harness).

usage: client.py HOST PORT [--udp] [--send TEXT] [--tls-record] [--wait-for FILE]
       client.py HOST PORT --sendto TEXT      (unconnected UDP: sendto(), no connect())
       client.py HOST PORT --repeat-for SECS  (TCP connects in a loop; counts the outcomes)
       client.py HOST PORT --attempt-until FILE  (a TCP connect every millisecond until FILE
                                                   exists; see attempt_until)
--hold SECS keeps the socket open that long after the last step (its JSON line is printed
and flushed first), so a test can look at kernel state while the connection exists.

Connects a socket (TCP unless --udp) to HOST:PORT, optionally sends TEXT (or a fake TLS
ClientHello record header with --tls-record) and reads the reply; with --wait-for it first
waits (up to 60 s) until FILE exists, so a test can start it before the daemon, and prints one JSON object:
{"connect": "ok" | "<ERRNO NAME>", "send": ..., "recv_bytes": N}. Exit status 0 when every
step worked, 3 when connect failed, 4 when send failed, 5 when the reply could not be read.
"""
import errno
import json
import socket
import os
import sys
import time


def name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def attempt_until(fam, host, port, stop_file):
    """A TCP connect every millisecond until stop_file exists. Prints {"started": true} after
    the first attempt, then one JSON line: attempts, outcomes by name, the CLOCK_MONOTONIC
    time of every attempt (microseconds, as the test's own clock reads it) and of each one that
    connected, and the longest time between two attempts."""
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
        if len(times_us) == 1:
            print(json.dumps({"started": True}), flush=True)
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
    udp = "--udp" in rest
    payload = None
    if "--send" in rest:
        payload = rest[rest.index("--send") + 1].encode()
    if "--tls-record" in rest:
        payload = bytes([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
    if "--wait-for" in rest:
        trigger = rest[rest.index("--wait-for") + 1]
        deadline = time.time() + 60
        while not os.path.exists(trigger) and time.time() < deadline:
            time.sleep(0.02)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if "--sendto" in rest:
        data = rest[rest.index("--sendto") + 1].encode()
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.sendto(data, (host, port))
            print(json.dumps({"sendto": "ok"}))
            return 0
        except OSError as e:
            print(json.dumps({"sendto": name(e)}))
            return 4
    if "--attempt-until" in rest:
        return attempt_until(fam, host, port, rest[rest.index("--attempt-until") + 1])
    if "--repeat-for" in rest:
        end = time.time() + float(rest[rest.index("--repeat-for") + 1])
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
        print(json.dumps(counts))
        return 0
    s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    s.settimeout(5)
    out = {}
    try:
        s.connect((host, port))
        out["connect"] = "ok"
    except OSError as e:
        out["connect"] = name(e)
        print(json.dumps(out))
        return 3
    if payload is not None:
        try:
            s.sendall(payload)
            out["send"] = "ok"
        except OSError as e:
            out["send"] = name(e)
            print(json.dumps(out))
            return 4
        if not udp:
            try:
                data = s.recv(65536)
                out["recv_bytes"] = len(data)
            except OSError as e:
                out["recv"] = name(e)
                print(json.dumps(out))
                return 5
    print(json.dumps(out), flush=True)
    if "--hold" in rest:
        time.sleep(float(rest[rest.index("--hold") + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
