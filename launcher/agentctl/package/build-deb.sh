#!/usr/bin/env bash
# Builds Debian packages of agentctl from this checkout, with Debian's own
# tools (dpkg-deb, dpkg-shlibdeps):
#
#   launcher/agentctl/package/build-deb.sh [--out DIR]
#
#   agentctl_<version>_<arch>.deb         the stripped binary, shell
#       completions (bash, zsh, fish), man pages, systemd units for
#       `agentctl serve` and `agentctl worker` (installed, not enabled) and
#       /etc/default/agentctl (their settings, mode 0600)
#   agentctl-dbgsym_<version>_<arch>.deb  the line tables, under
#       /usr/lib/debug/.build-id/, where backtraces find them
#
# Needs dpkg-dev and binutils (apt-get install dpkg-dev binutils). The
# version is the workspace's, plus the commit when built from git.
set -euo pipefail

prog=${0##*/}
die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=$root/target/debian
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out=$2; shift ;;
        --out=*) out=${1#*=} ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (apt-get install dpkg-dev)"
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
[[ -n $version ]] || die "no version in $root/Cargo.toml"
if commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null); then
    version=$version+git$(git -C "$root" show -s --format=%cd --date=format:%Y%m%d HEAD).$commit
fi
arch=$(dpkg-architecture -qDEB_HOST_ARCH)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/agentctl
dbg=$work/agentctl-dbgsym

"$here/install.sh" --prefix /usr --destdir "$pkg"

# The debug file goes to its own package, as Debian's -dbgsym packages do.
mkdir -p "$dbg/usr/lib"
mv "$pkg/usr/lib/debug" "$dbg/usr/lib/debug"
rmdir "$pkg/usr/lib" 2>/dev/null || true
build_id=$(cd "$dbg/usr/lib/debug/.build-id" && ls */*.debug | sed 's,/,,; s,\.debug$,,')

install -D -m 0644 "$here/agentctl-serve.service" "$pkg/lib/systemd/system/agentctl-serve.service"
install -D -m 0644 "$here/agentctl-worker.service" "$pkg/lib/systemd/system/agentctl-worker.service"
install -D -m 0600 "$here/agentctl.default" "$pkg/etc/default/agentctl"
install -D -m 0644 "$root/README.md" "$pkg/usr/share/doc/agentctl/README.md"
install -d "$dbg/usr/share/doc"
ln -s agentctl "$dbg/usr/share/doc/agentctl-dbgsym"
cat >"$pkg/usr/share/doc/agentctl/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: agentctl

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# The libraries the binary links, with the lowest versions their symbols
# need, as dpkg-shlibdeps reads them from the system's symbols files.
mkdir -p "$work/src/debian"
printf 'Source: agentctl\n\nPackage: agentctl\nArchitecture: any\n' >"$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O -e "$pkg/usr/bin/agentctl" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[[ -n $depends ]] || die "dpkg-shlibdeps found no dependencies of the binary"

size_kb() { du -sk --exclude=DEBIAN "$1" | cut -f1; }
mkdir -p "$pkg/DEBIAN" "$dbg/DEBIAN"
cat >"$pkg/DEBIAN/control" <<EOF
Package: agentctl
Version: $version
Architecture: $arch
Maintainer: agentctl developers <agentctl@localhost>
Installed-Size: $(size_kb "$pkg")
Depends: $depends
Recommends: slirp4netns, uidmap
Suggests: docker.io, qemu-system-x86, postgresql, agentctl-dbgsym
Section: utils
Priority: optional
Description: sandbox launcher for AI coding agents
 agentctl runs each agent session (Claude Code, Aider, Codex, any process)
 in its own sandbox: the workspace read-write, the rest of the system
 read-only, secrets masked, no network unless asked for, no capabilities,
 seccomp and resource limits; daemonless, on the Docker Engine or in a
 microVM; agentctl doctor says what this host can run.
EOF
echo /etc/default/agentctl >"$pkg/DEBIAN/conffiles"
cat >"$dbg/DEBIAN/control" <<EOF
Package: agentctl-dbgsym
Version: $version
Architecture: $arch
Maintainer: agentctl developers <agentctl@localhost>
Installed-Size: $(size_kb "$dbg")
Depends: agentctl (= $version)
Section: debug
Priority: optional
Build-Ids: $build_id
Description: debug symbols for agentctl
 The line tables and symbols of /usr/bin/agentctl, so that its backtraces
 name every frame's file and line.
EOF
for d in "$pkg" "$dbg"; do
    (cd "$d" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
done

mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$out/agentctl_${version}_$arch.deb" >/dev/null
dpkg-deb --root-owner-group -Zxz --build "$dbg" "$out/agentctl-dbgsym_${version}_$arch.deb" >/dev/null
printf '%s\n' "$out/agentctl_${version}_$arch.deb" "$out/agentctl-dbgsym_${version}_$arch.deb"
