#!/usr/bin/env python3
"""bulwark e2e probe of the socket types the connect/egress hooks never see (run in a pod).

usage: sockets.py KIND DEST MARKER [PORT]

Asks for one socket of KIND and, when it gets one, sends MARKER through it towards DEST (an IP
address of the server namespace; packet sockets send a broadcast Ethernet frame on eth0). The
server namespace's capture (sniff.py) looks for MARKER on the wire. Prints one JSON object,
flushed before anything is sent: {"kind": KIND, "socket": "ok" | "<ERRNO NAME>"}, then, when
the socket exists, a second one: {"sent": "ok" | "<ERRNO NAME>", "reply": true | false}.
Exit status 0 when the socket was made and the marker sent, 3 when the socket was refused.

KIND:
  raw-tcp        socket(AF_INET, SOCK_RAW, IPPROTO_TCP), a TCP segment carrying MARKER
  raw-icmp       socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), an echo request; waits for the reply
  raw6-icmp      socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6), an echo request
  ping           socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) (what ping(8) uses unprivileged;
                 needs net.ipv4.ping_group_range), an echo request; waits for the reply
  mptcp          socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP), connect to DEST:PORT, send
  packet         socket(AF_PACKET, SOCK_RAW, ETH_P_ALL), a frame on eth0
  sock-packet    socket(AF_INET, SOCK_PACKET, ETH_P_ALL): the old packet interface
  xdp            socket(AF_XDP, SOCK_RAW, 0): frames through XDP (nothing is sent: the socket
                 existing is the point)
  packet-int80   the AF_PACKET socket made by the 32-bit socket syscall (int 0x80)
  socketcall     the AF_PACKET socket made by the 32-bit socketcall(SYS_SOCKET) (int 0x80)
  packet-uring   the AF_PACKET socket made by io_uring (IORING_OP_SOCKET)
"""
import ctypes
import errno
import json
import mmap
import os
import socket
import struct
import sys

AF_PACKET = 17
AF_XDP = 44
SOCK_PACKET = 10
ETH_P_ALL = 0x0003
IPPROTO_MPTCP = 262


def name(e):
    return errno.errorcode.get(e, str(e)) if isinstance(e, int) else (
        errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__)


def say(obj):
    print(json.dumps(obj), flush=True)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(marker, icmp_type=8):
    ident, seq = os.getpid() & 0xFFFF, 1
    head = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq)
    payload = marker.encode()
    csum = checksum(head + payload) if icmp_type == 8 else 0
    return struct.pack("!BBHHH", icmp_type, 0, csum, ident, seq) + payload


def frame(marker):
    # Broadcast, a locally administered source, the IEEE "local experimental" EtherType.
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + marker.encode()


def int80(nr, a0, a1, a2, scratch=None):
    """A 32-bit syscall from this 64-bit process: int 0x80 with eax/ebx/ecx/edx."""
    code = (b"\x53"                                   # push rbx
            + b"\xb8" + struct.pack("<I", nr)         # mov eax, nr
            + b"\xbb" + struct.pack("<I", a0 & 0xFFFFFFFF)  # mov ebx, a0
            + b"\xb9" + struct.pack("<I", a1 & 0xFFFFFFFF)  # mov ecx, a1
            + b"\xba" + struct.pack("<I", a2 & 0xFFFFFFFF)  # mov edx, a2
            + b"\xcd\x80"                             # int 0x80
            + b"\x5b\xc3")                            # pop rbx; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    r = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
    return r


def low_memory(data):
    """A page below 4 GiB holding `data`, and its address (32-bit syscalls take 32-bit
    pointers)."""
    MAP_32BIT = 0x40
    page = mmap.mmap(-1, mmap.PAGESIZE,
                     flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(data)
    return page, ctypes.addressof(ctypes.c_char.from_buffer(page))


def uring_socket(domain, sock_type, protocol):
    """IORING_OP_SOCKET through a one-entry ring; returns the CQE result (fd or -errno)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 4, params)  # io_uring_setup
    if fd < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
    p = struct.unpack_from("<10I", params.raw, 0)
    sq_entries, cq_entries = p[0], p[1]
    # io_sqring_offsets / io_cqring_offsets: where in the rings each field lives.
    _, sq_tail, sq_mask_at, _, _, _, sq_array = struct.unpack_from("<7I", params.raw, 40)
    cq_head, _, cq_mask_at, _, _, cqes = struct.unpack_from("<6I", params.raw, 80)
    sq = mmap.mmap(fd, sq_array + sq_entries * 4, offset=0)
    cq = mmap.mmap(fd, cqes + cq_entries * 16, offset=0x8000000)
    sqes = mmap.mmap(fd, sq_entries * 64, offset=0x10000000)
    sq_mask = struct.unpack_from("<I", sq, sq_mask_at)[0]
    cq_mask = struct.unpack_from("<I", cq, cq_mask_at)[0]
    sqe = bytearray(64)
    # opcode, flags, ioprio, fd=domain, off=type, addr=0, len=protocol, rw_flags, user_data
    struct.pack_into("<BBHiQQII Q", sqe, 0, 45, 0, 0, domain, sock_type, 0, protocol, 0, 7)
    sqes[0:64] = bytes(sqe)
    tail = struct.unpack_from("<I", sq, sq_tail)[0]
    struct.pack_into("<I", sq, sq_array + (tail & sq_mask) * 4, 0)
    struct.pack_into("<I", sq, sq_tail, tail + 1)
    n = libc.syscall(426, fd, 1, 1, 1, None, 0)  # io_uring_enter(.., GETEVENTS)
    if n < 0:
        raise OSError(ctypes.get_errno(), "io_uring_enter")
    head = struct.unpack_from("<I", cq, cq_head)[0]
    _, res, _ = struct.unpack_from("<QiI", cq, cqes + (head & cq_mask) * 16)
    return res


def make(kind):
    if kind == "raw-tcp":
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    if kind == "raw-icmp":
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if kind == "raw6-icmp":
        return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    if kind == "ping":
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    if kind == "mptcp":
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    if kind == "packet":
        return socket.socket(AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if kind == "sock-packet":
        return socket.socket(socket.AF_INET, SOCK_PACKET, socket.htons(ETH_P_ALL))
    if kind == "xdp":
        return socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    if kind == "packet-int80":
        fd = int80(359, AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    elif kind == "socketcall":
        args, addr = low_memory(struct.pack("<3I", AF_PACKET, socket.SOCK_RAW,
                                            socket.htons(ETH_P_ALL)))
        fd = int80(102, 1, addr, 0)
        del args
    elif kind == "packet-uring":
        fd = uring_socket(AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    else:
        raise SystemExit("unknown kind " + kind)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return socket.socket(fileno=fd)


def send(kind, s, dest, marker, port):
    """Sends the marker; returns whether a reply came (echo kinds)."""
    if kind in ("packet", "packet-int80", "socketcall", "packet-uring"):
        s.bind(("eth0", 0))
        s.send(frame(marker))
        return False
    if kind in ("sock-packet", "xdp"):
        # Neither is something Python can address (sockaddr_pkt, an XDP umem and ring setup):
        # the socket existing is the point.
        return False
    if kind == "raw-tcp":
        # Source port, destination port, seq, ack, offset 5 words, flags SYN, window.
        tcp = struct.pack("!HHIIBBHHH", 40000, port, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
        s.sendto(tcp + marker.encode(), (dest, 0))
        return False
    if kind == "mptcp":
        s.settimeout(5)
        s.connect((dest, port))
        s.sendall(("GET /" + marker + " HTTP/1.0\r\n\r\n").encode())
        return len(s.recv(100)) > 0
    if kind == "raw6-icmp":
        s.sendto(echo_request(marker, icmp_type=128), (dest, 0))
        return False
    s.sendto(echo_request(marker), (dest, 0))
    s.settimeout(5)
    try:
        while True:
            data = s.recv(2048)
            # Raw sockets get the IP header too; the ping socket only the ICMP message.
            icmp = data[(data[0] & 0x0F) * 4:] if kind == "raw-icmp" else data
            if icmp[0] == 0 and marker.encode() in icmp:
                return True
    except socket.timeout:
        return False


def main():
    kind, dest, marker = sys.argv[1], sys.argv[2], sys.argv[3]
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 8080
    try:
        s = make(kind)
    except OSError as e:
        say({"kind": kind, "socket": name(e)})
        return 3
    say({"kind": kind, "socket": "ok"})
    try:
        reply = send(kind, s, dest, marker, port)
    except OSError as e:
        say({"sent": name(e), "reply": False})
        return 4
    say({"sent": "ok", "reply": reply})
    return 0


if __name__ == "__main__":
    sys.exit(main())
