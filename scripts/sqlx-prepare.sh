#!/usr/bin/env bash
# Prepares the query data of sqlx's compile-time-checked statements (`query!`,
# `query_as!`, `query_scalar!`) in `crates/cairn-core/.sqlx/` (beside the `sqlx.toml`
# that configures them: every checked statement is in cairn-core's store), which every
# build reads, so no build needs a database. With --check, changes nothing and fails
# when `.sqlx/` is stale: a
# statement added, changed or removed without running this, or a migration that
# changes what a statement returns.
#
# How: a scratch database gets Cairn's migrations and apalis' (applied with psql, so
# nothing needs building first), then `cargo check` runs with the macros pointed at it
# (CAIRN_SQLX_DATABASE_URL, see sqlx.toml), writing what each statement takes and
# returns to a fresh folder that is compared with, or replaces, `.sqlx/`.
#
# Needs PostgreSQL at $DATABASE_URL as a superuser (the tests' server) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[ "${1:-}" = "--check" ] && check=true

base="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="cairn_sqlx_prepare_$$"
scratch_url="${base%/*}/$db"
out=$(mktemp -d)
cleanup() {
  psql "$base" -q -v ON_ERROR_STOP=1 -c "drop database if exists $db" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT

psql "$base" -q -v ON_ERROR_STOP=1 -c "create database $db" >/dev/null
apply() { PGOPTIONS=--client-min-messages=warning psql "$scratch_url" -q -v ON_ERROR_STOP=1 -f "$1" >/dev/null; }
for f in crates/cairn-core/migrations/*.sql; do apply "$f"; done
# apalis' tables, from the apalis-postgres the lock file names (its own migrations).
apalis_dir=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    if p["name"] == "apalis-postgres":
        print(os.path.dirname(p["manifest_path"]))
        break
')
[ -d "$apalis_dir/migrations" ] || { echo "apalis-postgres' migrations not found" >&2; exit 1; }
psql "$scratch_url" -q -v ON_ERROR_STOP=1 -c "create schema if not exists apalis" >/dev/null
for f in "$apalis_dir"/migrations/*.sql; do apply "$f"; done

# Every file with a checked statement is compiled again, so each macro writes its data.
prepared=crates/cairn-core/.sqlx
touch crates/cairn-core/src/lib.rs
# DATABASE_URL is left out: apalis-postgres' own checked queries read it, and without
# it they build from the offline data they ship (a dependency rebuilt here, after an
# upgrade, would otherwise be checked against a database without apalis' schema).
env -u DATABASE_URL CAIRN_SQLX_DATABASE_URL="$scratch_url" SQLX_OFFLINE=false \
  SQLX_OFFLINE_DIR="$out" cargo check --locked --workspace --all-targets --quiet

if $check; then
  if ! diff -r "$prepared" "$out" >/dev/null 2>&1; then
    echo "$prepared/ is stale: run scripts/sqlx-prepare.sh and commit it" >&2
    diff -r --brief "$prepared" "$out" >&2 || true
    exit 1
  fi
  echo "$prepared/ is up to date ($(ls "$out" | wc -l) statements)"
else
  rm -rf "$prepared"
  mkdir -p "$prepared"
  cp "$out"/*.json "$prepared"/ 2>/dev/null || true
  echo "$prepared/ prepared ($(ls "$prepared" | wc -l) statements)"
fi
