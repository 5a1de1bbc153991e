#!/bin/sh
# Follows the logs of every running container the Docker API at $DOCKER_HOST
# (tcp://HOST:PORT; the logs-reader proxy) lists, into $OUT/<name>.log.
set -eu
api="http://${DOCKER_HOST#tcp://}"
out=${OUT:-/collected}
mkdir -p "$out/.following"
echo "collect: reading $api into $out"
while :; do
    curl -fsS --max-time 10 "$api/containers/json" \
        | jq -r '.[] | "\(.Id) \(.Names[0] | ltrimstr("/"))"' \
        | while read -r id name; do
            mark="$out/.following/$id"
            [ -e "$mark" ] && continue
            : >"$mark"
            # One follower per container; its mark goes when the stream
            # ends, so a restarted container is followed again.
            ( curl -fsSN "$api/containers/$id/logs?follow=1&stdout=1&stderr=1&timestamps=1&tail=100" \
                  >>"$out/$name.log" 2>/dev/null || true; rm -f "$mark" ) &
        done || echo "collect: cannot list containers through $api" >&2
    sleep "${INTERVAL:-5}"
done
