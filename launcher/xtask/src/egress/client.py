#!/usr/bin/python3
"""The egress benchmark's client, the same code direct and through the
allowlist proxy (`cargo xtask bench-egress`). Prints one JSON object.

    client.py direct|proxy WORKDIR
"""
import json
import os
import socket
import struct
import sys
import time

SERVER = ("11.0.0.10", 8080)
NAME = "bench.lab-allowed.org"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2000"))
SIZE = int(os.environ.get("BENCH_BYTES", str(1 << 30)))
mode, work = sys.argv[1], sys.argv[2]


def open_tunnel():
    if mode == "direct":
        return socket.create_connection(SERVER)
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(f"CONNECT {NAME}:8080 HTTP/1.1\r\nHost: {NAME}:8080\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(4096)
        if not c:
            raise SystemExit(f"proxy closed: {head!r}")
        head += c
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"proxy refused: {head!r}")
    return s


def latency():
    out = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        s = open_tunnel()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E")
        assert s.recv(1) == b"E"
        out.append((time.perf_counter() - t) * 1000)
        s.close()
    return out


def throughput():
    s = open_tunnel()
    t = time.perf_counter()
    s.sendall(b"B" + SIZE.to_bytes(8, "big"))
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    while got < SIZE:
        n = s.recv_into(view)
        if n == 0:
            break
        got += n
    secs = time.perf_counter() - t
    s.close()
    assert got == SIZE, (got, SIZE)
    return SIZE / secs / (1 << 20)


def dns():
    out = []
    q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    for label in NAME.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for _ in range(ROUNDS):
        t = time.perf_counter()
        s.sendto(q, ("127.0.0.1", 53))
        s.recv(512)
        out.append((time.perf_counter() - t) * 1000)
    return out


def wait_for(name):
    while not os.path.exists(os.path.join(work, name)):
        time.sleep(0.02)


def hold(n):
    """Opens n tunnels and holds them while the bench reads the proxy's
    memory, before and after."""
    open(os.path.join(work, "held-0"), "w").close()
    wait_for("go-0")
    held = [open_tunnel() for _ in range(n)]
    for s in held:
        s.sendall(b"E")
        assert s.recv(1) == b"E"
    open(os.path.join(work, f"held-{n}"), "w").close()
    wait_for(f"go-{n}")
    for s in held:
        s.close()


result = {"latency_ms": latency(), "mib_per_s": [throughput() for _ in range(3)]}
if mode == "proxy":
    result["dns_ms"] = dns()
    hold(100)
print(json.dumps(result))
