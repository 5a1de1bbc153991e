#!/bin/sh
# Runs inside the sandbox and reports what it can see and do, one fact per
# line. The harness (conformance.rs) decides what is right; this script only
# observes, so the same probe serves every backend.
#
# usage: probe.sh WORKSPACE HOME RO_MOUNT
WS=$1
H=$2
RO=$3

say() { printf '%s\n' "$*"; }

# Every file the harness planted as a secret or an alias of one. A secret's
# content starts with the word SECRET and a dash; the harness fails on any in the output.
for f in \
    "$WS/.env" "$WS/.env.local" "$WS/sub/deeper/.env.production" "$WS/.envrc" \
    "$WS/id_rsa" "$WS/keys/id_ed25519" "$WS/server.key" "$WS/cert.pem" \
    "$WS/.npmrc" "$WS/.netrc" "$WS/.pypirc" "$WS/.git-credentials" \
    "$WS/gcp/credentials.json" "$WS/prod.tfvars" "$WS/custom.secret" \
    "$WS/private-dir/inside.txt" \
    "$WS/hardlink-to-env" "$WS/hardlink-to-ssh-key" "$WS/hardlink-to-aws" \
    "$WS/symlink-to-env" "$WS/symlink-to-ssh-key" "$WS/symlink-to-aws" \
    "$WS/symlink-to-shadow" "$WS/ignored/.env" \
    "$H/.ssh/id_rsa" "$H/.aws/credentials" "$H/.gnupg/private-keys-v1.d/key" \
    "$H/.kube/config" "$H/.docker/config.json" "$H/.config/gcloud/creds.json" \
    "$H/.netrc" "$H/.pgpass" "$H/.bash_history" "$H/.password-store/x.gpg" \
    "/etc/shadow" "/etc/gshadow"
do
    say "read $f [$(head -c 100 "$f" 2>/dev/null | tr -d '\n')]"
done

# Nothing anywhere in the readable trees may contain a secret.
say "grep [$(grep -rIl 'SECRET''-' "$WS" "$H" /tmp /etc 2>/dev/null | tr '\n' ' ')]"

# What must stay readable.
say "public-example [$(cat "$WS/.env.example" 2>&1)]"
say "public-key [$(cat "$WS/id_rsa.pub" 2>&1)]"
say "gitconfig [$(cat "$H/.gitconfig" 2>&1)]"
say "readme [$(cat "$WS/README.md" 2>&1)]"

# Secrets cannot be changed or removed from inside.
echo pwned > "$WS/.env" 2>/dev/null
rm -f "$WS/.env" 2>/dev/null; say "rm-env $?"
mv "$WS/id_rsa" "$WS/id_rsa.moved" 2>/dev/null; say "mv-key $?"

# The workspace is writable; the harness checks the owner on the host.
echo created > "$WS/created-inside.txt"; say "ws-write $?"
mkdir -p "$WS/made/dir" && echo x > "$WS/made/dir/f"; say "ws-mkdir $?"

# The root filesystem and read-only mounts are not.
for p in /usr/agentctl-probe /etc/agentctl-probe /agentctl-probe /bin/agentctl-probe "$RO/agentctl-probe" "$H/.gitconfig"; do
    if ( : > "$p" ) 2>/dev/null; then say "writable $p"; else say "readonly $p"; fi
done
if ( : > /tmp/probe ) 2>/dev/null; then say "tmp-writable"; fi

# Identity and hardening.
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t' | sed 's/^/status /'
say "uid $(id -u) gid $(id -g)"
if unshare -U true 2>/dev/null; then say "unshare-user allowed"; else say "unshare-user refused"; fi
if unshare -r true 2>/dev/null; then say "unshare-root allowed"; else say "unshare-root refused"; fi
mkdir -p /tmp/mnt
if mount -t tmpfs none /tmp/mnt 2>/dev/null; then say "mount allowed"; else say "mount refused"; fi

# Network: interfaces other than lo, and whether anything outside answers.
say "interfaces [$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')]"
if command -v python3 >/dev/null; then
    say "connect [$(python3 -c '
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("1.1.1.1", 53)); print("connected")
except OSError as e:
    print("refused", e.errno)
' 2>&1)]"
    say "loopback [$(python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
c = socket.create_connection(s.getsockname(), timeout=2); print("ok")
' 2>&1)]"
fi

# The filter's rules on 32-bit arguments hold whatever the high 32 bits of
# the register say (seccomp32.py, written next to this script).
if command -v python3 >/dev/null; then
    say "seccomp32 [$(python3 "$WS/seccomp32.py" 2>&1)]"
fi

# A program started in the sandbox inherits stdin, stdout and stderr only
# (the shell's own descriptors are close-on-exec).
if command -v python3 >/dev/null; then
    say "fds [$(python3 -c '
import os
fds = sorted(os.listdir("/proc/self/fd"), key=int)
print(" ".join(f for f in fds if os.path.exists("/proc/self/fd/" + f)))
' 2>&1)]"
fi
say "keys [$(cat /proc/keys 2>/dev/null | wc -l)]"
if command -v python3 >/dev/null; then
    say "keyctl [$(python3 -c '
import ctypes, platform
KEYCTL = 219 if platform.machine() == "aarch64" else 250
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
r = libc.syscall(KEYCTL, 0, ctypes.c_long(-3), 0)
print("ok" if r >= 0 else "errno%d" % ctypes.get_errno())
' 2>&1)]"
fi

# git works on the workspace's repository.
if command -v git >/dev/null && [ -d "$WS/.git" ]; then
    say "git [$(git -C "$WS" log --format=%s -1 2>&1)]"
fi
say "probe-done"
