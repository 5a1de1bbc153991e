#!/usr/bin/env bash
# Build and check the agent images without a container registry.
#
#   images/test.sh [--all] [--no-cache] [--ca-cert FILE]...
#
# 1. makes the local Debian base with make-base.sh if it is missing;
# 2. builds agent-base on it and checks that a container runs `git --version`
#    as the unprivileged agent user (uid 1000), from /workspace, with no apt
#    lists or caches left behind;
# 3. with --all, builds every image that builds on another one (claude-code,
#    codex, aider: see images.json) and runs each one's check command, both
#    as the image's own user and the way agentctl's Docker backend runs it
#    (another uid, read-only root filesystem).
#
# Images are tagged with the names in images.json (agentctl/agent-base:latest,
# ...). Exits non-zero on the first failure; prints build times and sizes.
#
# --ca-cert FILE (or AGENTCTL_BASE_CA_CERTS) is passed to make-base.sh when the
# base is built: needed behind a TLS-intercepting proxy for npm and pip to
# reach their registries during --all. The agent images need npm and PyPI;
# agent-base needs only a Debian mirror.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog=${0##*/}
all=0
build_opts=()
base_opts=()

die() { printf '%s: FAIL: %s\n' "$prog" "$*" >&2; exit 1; }
log() { printf '\n== %s\n' "$*"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --all) all=1 ;;
        --no-cache) build_opts+=(--no-cache) ;;
        --ca-cert) [[ $# -ge 2 ]] || die "--ca-cert needs a file"; base_opts+=(--ca-cert "$2"); shift ;;
        --ca-cert=*) base_opts+=("$1") ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read images.json"

# images.json, in build order, as lines: name dir image from check...
# Also checks that each Dockerfile's `ARG BASE=` default is the json's base,
# and that `from` names an image of the list.
manifest=$(python3 - "$here/images.json" <<'EOF'
import json, re, sys, pathlib
path = pathlib.Path(sys.argv[1])
doc = json.loads(path.read_text())
images = {i["name"]: i for i in doc["images"]}
errors = []
for i in doc["images"]:
    df = path.parent / i["dir"] / "Dockerfile"
    if not df.is_file():
        errors.append(f"{i['name']}: {df} is missing")
        continue
    m = re.search(r"^ARG BASE=(\S+)", df.read_text(), re.M)
    if not m or m.group(1) != i["base"]:
        errors.append(f"{i['name']}: {df} has ARG BASE={m and m.group(1)}, images.json says {i['base']}")
    if i["from"] is not None:
        if i["from"] not in images:
            errors.append(f"{i['name']}: from {i['from']!r} is not in images.json")
        elif images[i["from"]]["image"] != i["base"]:
            errors.append(f"{i['name']}: base {i['base']} is not the image of {i['from']!r}")
if errors:
    sys.exit("images.json: " + "; ".join(errors))
done, order = set(), []
def visit(name, path=()):
    if name in path:
        sys.exit(f"images.json: dependency cycle through {name}")
    if name in done:
        return
    parent = images[name]["from"]
    if parent is not None:
        visit(parent, path + (name,))
    done.add(name)
    order.append(images[name])
for name in images:
    visit(name)
print(doc["local_base"])
for i in order:
    print("\t".join([i["name"], i["dir"], i["image"], i["from"] or "-"] + i["check"]))
EOF
) || die "images.json is inconsistent (see above)"

local_base=${AGENTCTL_BASE_TAG:-$(head -n1 <<<"$manifest")}

declare -A built_image
summary=()
sizes() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%d MB", $1 / 1000000}'; }

log "base image $local_base"
start=$(date +%s)
base_note=
docker image inspect "$local_base" >/dev/null 2>&1 && base_note=" (already there)"
"$here/make-base.sh" --tag "$local_base" "${base_opts[@]}" || die "make-base.sh failed"
summary+=("$(printf '%-14s %-32s %5ss  %s%s' base "$local_base" $(( $(date +%s) - start )) "$(sizes "$local_base")" "$base_note")")

while IFS=$'\t' read -r -a row; do
    name=${row[0]} dir=${row[1]} image=${row[2]} from=${row[3]}
    check=("${row[@]:4}")
    if [[ $from == - ]]; then
        base=$local_base
    else
        [[ $all -eq 1 ]] || continue
        base=${built_image[$from]:-}
        [[ -n $base ]] || die "$name builds on $from, which was not built"
    fi

    log "build $name ($image, BASE=$base)"
    start=$(date +%s)
    docker build "${build_opts[@]}" --build-arg "BASE=$base" -t "$image" "$here/$dir" \
        || die "docker build of $name failed"
    elapsed=$(( $(date +%s) - start ))
    built_image[$name]=$image

    log "check $name: ${check[*]}"
    # As the image's own user: must be the unprivileged agent, in /workspace.
    out=$(docker run --rm "$image" sh -c 'echo "$(id -u) $(id -un) $(pwd) $HOME"; exec "$@"' check "${check[@]}" 2>&1) \
        || die "$name: \`${check[*]}\` failed: $out"
    printf '%s\n' "$out"
    read -r uid user cwd home <<<"$(head -n1 <<<"$out")"
    [[ $uid == 1000 && $user == agent ]] || die "$name: runs as $user (uid $uid), not agent (1000)"
    [[ $cwd == /workspace && $home == /home/agent ]] \
        || die "$name: working directory $cwd, HOME $home (want /workspace, /home/agent)"

    # As agentctl's Docker backend runs it: its own entrypoint replaced, the
    # host user's uid, a read-only root and a minimal environment.
    out=$(docker run --rm --read-only --tmpfs /tmp --user 4242:4242 --entrypoint "" \
        -e HOME=/tmp -w /tmp "$image" "${check[@]}" 2>&1) \
        || die "$name: \`${check[*]}\` failed as uid 4242 on a read-only root: $out"

    # No package lists, downloaded packages or npm/pip caches left behind.
    leftovers=$(docker run --rm --user 0 --entrypoint "" "$image" sh -c \
        'find /var/lib/apt/lists /var/cache/apt/archives /root/.npm /root/.cache -type f ! -name lock 2>/dev/null; true') \
        || die "$name: cannot look for leftover caches"
    [[ -z $leftovers ]] || die "$name: caches left in the image: $(head -n5 <<<"$leftovers")"

    summary+=("$(printf '%-14s %-32s %5ss  %s' "$name" "$image" "$elapsed" "$(sizes "$image")")")
done < <(tail -n +2 <<<"$manifest")

log "summary (build time, image size)"
printf '%s\n' "${summary[@]}"
[[ $all -eq 1 ]] || echo "(agent images skipped; run with --all to build them)"
echo "$prog: OK"
