#!/usr/bin/env python3
"""bulwark e2e frame capture (run in the server namespace by the harness).

usage: sniff.py IFACE PREFIX LOG READY

Captures every frame on IFACE (an AF_PACKET socket, all protocols, both directions) and, for
each one that contains PREFIX, appends {"marker": <the PREFIX-token found>, "len": N} to LOG
(one JSON object per line, flushed). Creates READY once capturing. Runs until killed.
"""
import json
import re
import socket
import sys


def main():
    iface, prefix, log, ready = sys.argv[1:5]
    s = socket.socket(17, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    token = re.compile(re.escape(prefix.encode()) + rb"[A-Za-z0-9_-]*")
    with open(ready, "w"):
        pass
    with open(log, "a") as out:
        while True:
            data = s.recv(65535)
            for m in token.finditer(data):
                out.write(json.dumps({"marker": m.group(0).decode(), "len": len(data)}) + "\n")
                out.flush()


if __name__ == "__main__":
    sys.exit(main())
