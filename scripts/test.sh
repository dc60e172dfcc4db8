#!/usr/bin/env bash
# Runs every test. Needs PostgreSQL reachable at $DATABASE_URL as a superuser (each
# test creates its own database); defaults to the local server with trust auth.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --profile "${NEXTEST_PROFILE:-default}" "$@"
else
  exec cargo test --workspace --locked "$@"
fi
