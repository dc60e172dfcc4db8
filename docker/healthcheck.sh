#!/bin/bash
# Container health probe for `cairn api` (and `cairn dev`), installed in the image as
# /usr/local/bin/cairn-healthcheck. The runtime image has no curl, so this speaks just
# enough HTTP/1.1 over bash's /dev/tcp to read the status line.
#
#   cairn-healthcheck [PORT] [PATH]
#
# PORT defaults to the port of CAIRN_LISTEN (the same variable `cairn api` reads),
# else 8080; PATH defaults to /healthz (liveness; /readyz also checks the database).
# Exits 0 on a 200 answer, 1 otherwise.
set -uo pipefail

listen="${CAIRN_LISTEN:-0.0.0.0:8080}"
port="${1:-${listen##*:}}"
path="${2:-/healthz}"

if ! { exec 3<>"/dev/tcp/127.0.0.1/${port}"; } 2>/dev/null; then
  echo "unhealthy: nothing listening on 127.0.0.1:${port}" >&2
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "${path}" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-
status="${status%$'\r'}"

case "${status}" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *)
    echo "unhealthy: GET ${path} on port ${port} answered '${status:-nothing}'" >&2
    exit 1
    ;;
esac
