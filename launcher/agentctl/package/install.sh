#!/usr/bin/env bash
# Builds agentctl from this checkout and installs it with its shell
# completions and man pages.
#
#   launcher/agentctl/package/install.sh [--prefix DIR] [--destdir DIR]
#
# The binary is installed stripped (about 25 MB instead of 104). Its line
# tables go to a separate debug file that Rust's backtraces (and gdb) find
# on their own: under /usr/lib/debug/.build-id/ for --prefix /usr (where a
# .deb puts it), otherwise beside the binary as bin/.debug/agentctl.debug
# (the binary's .gnu_debuglink names it). Without that file a backtrace has
# no frames; with it, every frame has its file and line.
#
# --prefix DIR   where to install (default /usr/local; ~/.local works
#                without root)
# --destdir DIR  stage under DIR instead (packaging; nothing outside DIR is
#                touched)
#
# cargo runs as the user who runs this; only the copying asks for sudo,
# when the prefix is not writable.
set -euo pipefail

prog=${0##*/}
die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }

prefix=/usr/local
destdir=
while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; prefix=$2; shift ;;
        --prefix=*) prefix=${1#*=} ;;
        --destdir) [[ $# -ge 2 ]] || die "--destdir needs a directory"; destdir=$2; shift ;;
        --destdir=*) destdir=${1#*=} ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ $prefix == /* ]] || die "--prefix must be an absolute path, not $prefix"
[[ -z $destdir || $destdir == /* ]] || destdir=$(pwd)/$destdir

for tool in cargo objcopy readelf; do
    command -v "$tool" >/dev/null 2>&1 || case $tool in
        cargo) die "cargo is not installed (https://rustup.rs)" ;;
        *) die "$tool is not installed (Debian: apt-get install binutils)" ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"

printf '%s: building (cargo build --locked --release -p agentctl)\n' "$prog" >&2
cargo build --locked --release -p agentctl
target=${CARGO_TARGET_DIR:-$root/target}
built=$target/release/agentctl
[[ -x $built ]] || die "cargo built no $built"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# Split: the debug file keeps the line tables and symbols (compressed), the
# binary keeps neither and names the debug file.
build_id=$(readelf -n "$built" | awk '/Build ID/ {print $3}')
[[ -n $build_id ]] || die "$built has no build ID (the linker was not asked for one)"
objcopy --only-keep-debug --compress-debug-sections=zlib "$built" "$stage/agentctl.debug"
objcopy --strip-all --add-gnu-debuglink="$stage/agentctl.debug" "$built" "$stage/agentctl"

"$stage/agentctl" completions bash >"$stage/agentctl.bash"
"$stage/agentctl" completions zsh >"$stage/_agentctl"
"$stage/agentctl" completions fish >"$stage/agentctl.fish"
out=$("$stage/agentctl" man --dir "$stage/man" 2>&1) || die "the man pages: $out"

if [[ $prefix == /usr ]]; then
    debug_file=/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug
    zsh_dir=/usr/share/zsh/vendor-completions
else
    debug_file=$prefix/bin/.debug/agentctl.debug
    zsh_dir=$prefix/share/zsh/site-functions
fi

dest=$destdir$prefix
sudo=()
if [[ -z $destdir ]]; then
    probe=$prefix
    while [[ ! -e $probe ]]; do probe=$(dirname "$probe"); done
    if [[ ! -w $probe || ( -e $prefix/bin && ! -w $prefix/bin ) ]]; then
        command -v sudo >/dev/null 2>&1 || die "$prefix is not writable; run as root, or pass --prefix \$HOME/.local"
        sudo=(sudo)
    fi
fi

"${sudo[@]}" install -D -m 0755 "$stage/agentctl" "$dest/bin/agentctl"
"${sudo[@]}" install -D -m 0644 "$stage/agentctl.debug" "$destdir$debug_file"
"${sudo[@]}" install -D -m 0644 "$stage/agentctl.bash" "$dest/share/bash-completion/completions/agentctl"
"${sudo[@]}" install -D -m 0644 "$stage/_agentctl" "$destdir$zsh_dir/_agentctl"
"${sudo[@]}" install -D -m 0644 "$stage/agentctl.fish" "$dest/share/fish/vendor_completions.d/agentctl.fish"
"${sudo[@]}" install -d "$dest/share/man/man1"
for page in "$stage"/man/*.1; do
    gzip -9n -c "$page" >"$page.gz"
    "${sudo[@]}" install -m 0644 "$page.gz" "$dest/share/man/man1/"
done

size=$(stat -c %s "$stage/agentctl")
printf '%s: installed %s (%d MB), its debug file %s, completions and %d man pages%s\n' \
    "$prog" "$prefix/bin/agentctl" $((size / 1000000)) "$debug_file" "$(ls "$stage"/man/*.1 | wc -l)" "${destdir:+ (staged under $destdir)}" >&2
