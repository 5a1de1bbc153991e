#!/usr/bin/python3
"""A fake internet for the allowlist tests, run inside network namespaces
the test made: an authoritative DNS server that logs every query, web
servers (HTTP, HTTPS with a lab CA, a dumb git repository, a PyPI simple
index, an npm registry document), a TCP banner on port 22, an "evil"
origin and "host services" that count every connection they get.

    labnet.py net DIR      # in the lab's internet namespace
    labnet.py host DIR     # in the namespace agentctl runs in

Every log line is flushed at once: the test reads the logs while the lab
runs. Nothing here leaves the namespaces: the addresses are 11.0.0.0/24,
routed only between the two.
"""
import http.server
import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading

WEB = "11.0.0.10"
EVIL = "11.0.0.11"
DNS = "11.0.0.53"
HOST_SIDE = "11.0.0.1"

# Names the lab's DNS knows. The allowlists of the tests name some of them.
ZONE_A = {
    "api.anthropic.com": WEB,
    "registry.npmjs.org": WEB,
    "pypi.org": WEB,
    "files.pythonhosted.org": WEB,
    "raw.githubusercontent.com": WEB,
    "git.lab-allowed.org": WEB,
    "plain.lab-allowed.org": WEB,
    "ssh.lab-allowed.org": WEB,
    "dns.lab-allowed.org": WEB,
    "evil.example": EVIL,
    "lo.rebind.lab-allowed.org": "127.0.0.1",
    "ten.rebind.lab-allowed.org": "10.0.0.5",
    "meta.rebind.lab-allowed.org": "169.254.169.254",
    "host.rebind.lab-allowed.org": HOST_SIDE,
    "cgnat.rebind.lab-allowed.org": "100.64.0.1",
}
ZONE_AAAA = {
    # An IPv6 spelling of 127.0.0.1: must be judged as 127.0.0.1.
    "mapped.rebind.lab-allowed.org": "::ffff:127.0.0.1",
    "nat64.rebind.lab-allowed.org": "64:ff9b::a00:5",
}

LOCK = threading.Lock()


def log(dirname, name, line):
    with LOCK:
        with open(os.path.join(dirname, name), "a") as f:
            f.write(line + "\n")


def make_certs(d):
    names = [n for n in ZONE_A] + list(ZONE_AAAA)
    if os.path.exists(os.path.join(d, "server.pem")):
        return
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=agentctl lab CA", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=lab",
        "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr")
    with open(f"{d}/san.ext", "w") as f:
        f.write("subjectAltName=" + ",".join("DNS:" + n for n in names) + "\n")
        f.write("extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem",
        "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-out",
        f"{d}/server.pem", "-extfile", f"{d}/san.ext")


def make_www(d):
    """What the lab's mirrors serve: a dumb-HTTP git repository, a PyPI
    simple index with one wheel, and an npm registry document."""
    import hashlib
    import zipfile
    www = os.path.join(d, "www")
    if os.path.isdir(www):
        return
    os.makedirs(os.path.join(www, "simple", "labpkg"))
    os.makedirs(os.path.join(www, "packages"))
    wheel = os.path.join(www, "packages", "labpkg-1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("labpkg/__init__.py", "VERSION = '1.0'\n")
        z.writestr("labpkg-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: labpkg\nVersion: 1.0\n")
        z.writestr("labpkg-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: lab\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("labpkg-1.0.dist-info/RECORD", "")
    digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
    with open(os.path.join(www, "simple", "labpkg", "index.html"), "w") as f:
        f.write('<!DOCTYPE html><html><body><a href="https://files.pythonhosted.org/packages/'
                f'labpkg-1.0-py3-none-any.whl#sha256={digest}">labpkg-1.0-py3-none-any.whl</a>'
                '</body></html>\n')
    with open(os.path.join(www, "labpkg"), "w") as f:
        json.dump({"name": "labpkg", "dist-tags": {"latest": "1.2.3"},
                   "versions": {"1.2.3": {"name": "labpkg", "version": "1.2.3", "dist": {
                       "tarball": "https://registry.npmjs.org/labpkg/-/labpkg-1.2.3.tgz",
                       "shasum": "0" * 40}}}}, f)
    env = {**os.environ, "GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@lab",
           "GIT_COMMITTER_NAME": "lab", "GIT_COMMITTER_EMAIL": "lab@lab", "HOME": d}
    work = os.path.join(d, "repo-work")
    run = lambda *a, **k: subprocess.run(a, check=True, capture_output=True, env=env, **k)
    run("git", "init", "-q", "-b", "main", work)
    with open(os.path.join(work, "README"), "w") as f:
        f.write("lab repository\n")
    run("git", "-C", work, "add", "README")
    run("git", "-C", work, "commit", "-q", "-m", "lab")
    bare = os.path.join(www, "repo.git")
    run("git", "clone", "-q", "--bare", work, bare)
    run("git", "-C", bare, "update-server-info")


# --- DNS -------------------------------------------------------------------

def dns_name(msg, at):
    labels = []
    while True:
        n = msg[at]
        at += 1
        if n == 0:
            return ".".join(labels), at
        if n & 0xC0:
            raise ValueError("pointer in a question")
        labels.append(msg[at:at + n].decode("ascii", "replace"))
        at += n


def dns_server(d):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((DNS, 53))
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            name, at = dns_name(msg, 12)
            qtype = int.from_bytes(msg[at:at + 2], "big")
        except Exception:
            continue
        lname = name.lower().rstrip(".")
        log(d, "dns.log", f"{lname} {qtype}")
        answers = b""
        count = 0
        if qtype == 1 and lname in ZONE_A:
            rdata = socket.inet_aton(ZONE_A[lname])
            answers = b"\xc0\x0c" + (1).to_bytes(2, "big") + b"\x00\x01" + \
                (0).to_bytes(4, "big") + len(rdata).to_bytes(2, "big") + rdata
            count = 1
        elif qtype == 28 and lname in ZONE_AAAA:
            rdata = socket.inet_pton(socket.AF_INET6, ZONE_AAAA[lname])
            answers = b"\xc0\x0c" + (28).to_bytes(2, "big") + b"\x00\x01" + \
                (0).to_bytes(4, "big") + len(rdata).to_bytes(2, "big") + rdata
            count = 1
        known = lname in ZONE_A or lname in ZONE_AAAA
        rcode = 0 if known else 3
        flags = 0x8400 | rcode | (int.from_bytes(msg[2:4], "big") & 0x0100)
        reply = msg[:2] + flags.to_bytes(2, "big") + b"\x00\x01" + \
            count.to_bytes(2, "big") + b"\x00\x00\x00\x00" + msg[12:at + 4] + answers
        s.sendto(reply, peer)


# --- Web -------------------------------------------------------------------

def handler_for(d, scheme):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            host = self.headers.get("Host", "")
            log(d, "web.log", f"{scheme} {host} {self.path}")
            path = os.path.normpath(self.path.split("?")[0]).lstrip("/")
            files = os.path.join(d, "www")
            full = os.path.join(files, path)
            if path == "big":
                size = int(self.headers.get("X-Size", "1048576"))
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"x" * 65536
                left = size
                while left > 0:
                    n = min(left, len(chunk))
                    self.wfile.write(chunk[:n])
                    left -= n
                return
            if path and os.path.isfile(full) and full.startswith(files):
                body = open(full, "rb").read()
                ctype = "application/json" if host.startswith("registry.npmjs.org") \
                    else "text/html" if full.endswith(".html") or os.path.basename(full) == "index" \
                    else "application/octet-stream"
            elif path and os.path.isfile(os.path.join(full, "index.html")):
                body = open(os.path.join(full, "index.html"), "rb").read()
                ctype = "text/html"
            elif path in ("", "."):
                body = f"lab-ok {scheme} host={host}\n".encode()
                ctype = "text/plain"
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(n)
            log(d, "web.log", f"{scheme} POST {self.headers.get('Host', '')} {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

    return H


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def web(d, addr, port, tls):
    srv = Threaded((addr, port), handler_for(d, "https" if tls else "http"))
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{d}/server.pem", f"{d}/server.key")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def counter(d, family, addr, port, name, banner=b""):
    """Accepts and counts: a destination nothing in the sandbox may reach."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    while True:
        c, peer = s.accept()
        log(d, "counters.log", f"{name} {peer[0]}")
        try:
            if banner:
                c.sendall(banner)
                data = c.recv(100)
                c.sendall(b"echo:" + data)
        except OSError:
            pass
        c.close()


def udp_counter(d, addr, port, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        _, peer = s.recvfrom(2048)
        log(d, "counters.log", f"{name} {peer[0]}")


def main():
    role, d = sys.argv[1], sys.argv[2]
    threads = []
    go = lambda f, *a: threads.append(threading.Thread(target=f, args=a, daemon=True))
    if role == "net":
        make_certs(d)
        make_www(d)
        go(dns_server, d)
        go(web, d, WEB, 443, True)
        go(web, d, WEB, 80, False)
        go(counter, d, socket.AF_INET, WEB, 22, "ssh", b"SSH-2.0-lab\r\n")
        go(counter, d, socket.AF_INET, EVIL, 443, "evil")
        go(counter, d, socket.AF_INET, EVIL, 80, "evil")
        go(udp_counter, d, WEB, 443, "quic")
        go(udp_counter, d, DNS, 5353, "udp")
    else:
        # The "host": services on its loopback and its own address, which a
        # rebound name or a literal must never reach.
        go(counter, d, socket.AF_INET, "127.0.0.1", 5432, "host-loopback")
        go(counter, d, socket.AF_INET, HOST_SIDE, 5432, "host-address")
        go(counter, d, socket.AF_INET6, "::1", 5432, "host-loopback6")
        go(counter, d, socket.AF_INET, "169.254.169.254", 80, "metadata")
        go(counter, d, socket.AF_INET, "10.0.0.5", 443, "private")
    for t in threads:
        t.start()
    with open(os.path.join(d, f"{role}.ready"), "w") as f:
        f.write("ready\n")
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
