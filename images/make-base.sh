#!/usr/bin/env bash
# Build a local Debian base image from Debian's own packages, so the agent
# images can be built without pulling anything from a container registry
# (offline machines, CI, tests).
#
#   images/make-base.sh [--force] [--tag TAG] [--suite SUITE] [--mirror URL]
#                       [--security-mirror URL] [--ca-cert FILE]...
#
# mmdebstrap makes a minbase root filesystem (plus ca-certificates) with the
# suite's updates and security archives enabled, and `docker import` turns
# it into an image. If the tag already exists nothing is done unless
# --force is given.
#
# Environment (flags win): AGENTCTL_BASE_TAG (default agentctl/debian:bookworm),
# AGENTCTL_BASE_SUITE (default bookworm), AGENTCTL_DEBIAN_MIRROR (default
# http://deb.debian.org/debian), AGENTCTL_DEBIAN_SECURITY_MIRROR (default
# http://deb.debian.org/debian-security), SOURCE_DATE_EPOCH (passed on to
# mmdebstrap for a reproducible tarball), AGENTCTL_BASE_CA_CERTS (a
# colon-separated list of --ca-cert files).
#
# --ca-cert is for builds behind a TLS-intercepting proxy (a company's, or a
# CI sandbox's): the certificate is added to the base image's trust store, so
# that npm and pip in the agent images' builds reach their registries. It
# stays in every image built on this base; images built on the public
# debian:bookworm-slim are not affected.
set -euo pipefail

prog=${0##*/}
tag=${AGENTCTL_BASE_TAG:-agentctl/debian:bookworm}
suite=${AGENTCTL_BASE_SUITE:-bookworm}
mirror=${AGENTCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${AGENTCTL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
force=0
ca_certs=()
if [[ -n ${AGENTCTL_BASE_CA_CERTS:-} ]]; then
    IFS=: read -r -a ca_certs <<<"$AGENTCTL_BASE_CA_CERTS"
fi

die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$prog" "$*" >&2; }

usage() {
    cat <<EOF
Usage: $prog [--force] [--tag TAG] [--suite SUITE] [--mirror URL]
       [--security-mirror URL] [--ca-cert FILE]...

Build a Debian base image with mmdebstrap and import it into Docker.

  --tag TAG       image to create (default: $tag)
  --suite SUITE   Debian suite (default: $suite)
  --mirror URL    Debian mirror (default: $mirror)
  --security-mirror URL
                  Debian security mirror (default: $security_mirror)
  --ca-cert FILE  also trust this PEM CA certificate (TLS-intercepting
                  proxies); may be repeated
  --force         rebuild even if TAG already exists
  -h, --help      this help
EOF
}

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --force) force=1 ;;
        --tag) need_arg "$@"; tag=$2; shift ;;
        --tag=*) tag=${1#*=} ;;
        --suite) need_arg "$@"; suite=$2; shift ;;
        --suite=*) suite=${1#*=} ;;
        --mirror) need_arg "$@"; mirror=$2; shift ;;
        --mirror=*) mirror=${1#*=} ;;
        --security-mirror) need_arg "$@"; security_mirror=$2; shift ;;
        --security-mirror=*) security_mirror=${1#*=} ;;
        --ca-cert) need_arg "$@"; ca_certs+=("$2"); shift ;;
        --ca-cert=*) ca_certs+=("${1#*=}") ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

for cert in "${ca_certs[@]}"; do
    [[ -r $cert ]] || die "--ca-cert $cert: no such readable file"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$cert" \
        || die "--ca-cert $cert: not a PEM certificate"
done

command -v docker >/dev/null 2>&1 \
    || die "docker is not installed (Debian: apt-get install -y docker.io)"
docker_err=$(docker info 2>&1 >/dev/null) \
    || die "cannot reach the Docker daemon (is dockerd running, and may you use its socket?): ${docker_err##*$'\n'}"

if [[ $force -eq 0 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag already exists; nothing to do (use --force to rebuild)"
    if [[ ${#ca_certs[@]} -gt 0 ]]; then
        log "note: --ca-cert is applied only when the image is (re)built"
    fi
    exit 0
fi

command -v mmdebstrap >/dev/null 2>&1 \
    || die "mmdebstrap is not installed (Debian/Ubuntu: apt-get install -y mmdebstrap)"

start=$(date +%s)
workdir=$(mktemp -d "${TMPDIR:-/var/tmp}/agentctl-base.XXXXXX")
trap 'rm -rf "$workdir"' EXIT
rootfs=$workdir/rootfs.tar

# Extra CA certificates go to /usr/local/share/ca-certificates (each file
# must end in .crt there), then the trust store is regenerated.
ca_hooks=()
ca_label=
import_changes=()
if [[ ${#ca_certs[@]} -gt 0 ]]; then
    mkdir "$workdir/ca"
    n=0
    for cert in "${ca_certs[@]}"; do
        n=$((n + 1))
        cp -- "$cert" "$workdir/ca/agentctl-extra-$n.crt"
        ca_label+="${ca_label:+ }$(basename -- "$cert")"
    done
    # shellcheck disable=SC2016 # $1 is the hook's argument, expanded by mmdebstrap's shell
    ca_hooks=(
        --customize-hook="cp $(printf %q "$workdir/ca")/*.crt \"\$1/usr/local/share/ca-certificates/\""
        --customize-hook='chroot "$1" update-ca-certificates'
    )
    import_changes=(--change "LABEL io.agentctl.extra-ca-certs=\"$ca_label\"")
    log "adding ${#ca_certs[@]} extra CA certificate(s) to the trust store: $ca_label"
fi

# Sources: the release, its point-release updates and its security archive.
# (Suites older than bullseye name the security suite differently; they are
# not supported here.)
sources=(
    "deb $mirror $suite main"
    "deb $mirror $suite-updates main"
    "deb $security_mirror $suite-security main"
)

log "building $suite rootfs with mmdebstrap (variant minbase, + ca-certificates)"
# Image-friendly defaults, similar in spirit to the official slim images:
# no documentation, manual pages or translations (copyright files stay), no
# downloaded .deb files kept, no package description translations. (Keeping
# no .deb files is set only at the end: mmdebstrap itself needs them.)
# shellcheck disable=SC2016 # $1 is the hook's argument, expanded by mmdebstrap's shell
mmdebstrap \
    --variant=minbase \
    --include=ca-certificates \
    --format=tar \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='Acquire::Languages "none"' \
    "${ca_hooks[@]}" \
    --customize-hook='echo "APT::Keep-Downloaded-Packages \"false\";" >"$1/etc/apt/apt.conf.d/50agentctl-no-debs"' \
    "$suite" "$rootfs" "${sources[@]}"

log "importing as $tag"
docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.opencontainers.image.title=agentctl-debian-$suite" \
    --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase, built locally with mmdebstrap by agentctl's images/make-base.sh\"" \
    "${import_changes[@]}" \
    --message "mmdebstrap --variant=minbase $suite" \
    "$rootfs" "$tag" >/dev/null

elapsed=$(( $(date +%s) - start ))
size=$(docker image inspect --format '{{.Size}}' "$tag")
log "built $tag in ${elapsed}s ($(( size / 1000000 )) MB)"
