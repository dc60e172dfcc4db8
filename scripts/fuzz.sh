#!/usr/bin/env bash
# Fuzzes the HTTP API with a third-party tool, as CI does: `cairn dev` on a fresh
# database, its /api/openapi.json validated as OpenAPI 3.1 (openapi-spec-validator), then
# schemathesis with every check it has against every operation but the two it cannot
# drive (see EXCLUDED below), for a bounded time. Exits non-zero on any failure.
#
#   scripts/fuzz.sh --cairn PATH [--seconds N]
#
# Needs python3 (with venv) and PostgreSQL at $DATABASE_URL as a superuser; the tools
# are installed from PyPI into a venv under ~/.cache/cairn/fuzz-venv, pinned in
# scripts/fuzz/requirements.txt. Reports (JUnit, the failures to replay) go to
# fuzz-report/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cairn=""
seconds=150
while [ $# -gt 0 ]; do
  case "$1" in
    --cairn) cairn=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
[ -x "$cairn" ] || { echo "fuzz: no cairn binary (--cairn PATH)" >&2; exit 2; }
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

venv="${CAIRN_FUZZ_VENV:-$HOME/.cache/cairn/fuzz-venv}"
if ! "$venv/bin/python" -c 'import schemathesis, openapi_spec_validator' 2>/dev/null ||
  ! cmp -s scripts/fuzz/requirements.txt "$venv/requirements.txt"; then
  echo "fuzz: installing the tools into $venv"
  if ! python3 -m venv --clear "$venv"; then
    echo "fuzz: installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    python3 -m venv --clear "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/fuzz/requirements.txt
  cp scripts/fuzz/requirements.txt "$venv/requirements.txt"
fi

# A database of its own, dropped at the end.
db="cairn_fuzz_$$"
base="${DATABASE_URL%/*}"
admin_url="$base/postgres"
url="$base/$db"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  psql "$admin_url" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$admin_url" -qc "create database $db" >/dev/null
DATABASE_URL=$url "$cairn" migrate >/dev/null 2>&1
# The fuzzer deletes tokens by made-up ids, 1 among them: its own token gets an id it
# will not guess, so it keeps working for the whole run.
psql "$url" -qc "select setval('api_tokens_id_seq', 7340033)" >/dev/null
token=$(DATABASE_URL=$url "$cairn" admin create-token --role admin --name fuzz 2>/dev/null)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# High sign-in limits: the fuzzer signs in thousands of times from one address, and
# the limits have tests of their own (tests/credentials.rs).
DATABASE_URL=$url CAIRN_LISTEN=127.0.0.1:$port CAIRN_LOGIN_RATE=100000 \
  CAIRN_WEBHOOK_SECRET=fuzz-only CAIRN_STATIC_DIR="$work/no-dashboard" RUST_LOG=warn \
  "$cairn" dev >"$work/cairn.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/cairn.log"; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/api/openapi.json" -o "$work/openapi.json"

echo "fuzz: validating the OpenAPI document"
"$venv/bin/python" - "$work/openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import OpenAPIV31SpecValidator
spec = json.load(open(sys.argv[1]))
errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
for e in errors[:20]:
    print("  ", "/".join(map(str, e.path)), e.message[:300])
ops = [op for item in spec["paths"].values() for m, op in item.items() if isinstance(op, dict)]
print(f"fuzz: OpenAPI {spec['openapi']}: {len(spec['paths'])} paths, {len(ops)} operations, {len(errors)} problems")
sys.exit(1 if errors else 0)
PY

# EXCLUDED, each for what the tool cannot know:
# * GET /api/events is a Server-Sent Events stream that stays open for minutes; the
#   fuzzer reads a response to its end. Its parameters are tested in tests/operate.rs
#   and tests/edge.rs.
# * POST /api/webhooks/agent-result takes only deliveries signed with an HMAC the fuzzer
#   cannot compute; unsigned ones are all 401 by design (tests/agents.rs signs them).
# NUL characters: Postgres stores none, so the API refuses them with 400 wherever they
# appear (tests/contract.rs); the fuzzer is told not to count them as valid strings.
# 422 for schema-valid data: the rules a JSON schema cannot state — a workflow's own
# `[input]`, a cron expression's meaning, a cursor the server did not issue, a workflow
# name that is not loaded — are answered 422 with the problem named.
mkdir -p "$root/fuzz-report"
cat >"$work/schemathesis.toml" <<TOML
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
TOML
echo "fuzz: schemathesis for at most ${seconds}s"
set +e
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run \
  "http://127.0.0.1:$port/api/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks all \
  --phases examples,coverage,fuzzing \
  --exclude-path /api/events --exclude-path /api/webhooks/agent-result \
  --generation-allow-x00 false \
  --max-examples 25 --max-time "$seconds" --seed 7 \
  --request-timeout 20 \
  --report junit --report-dir "$root/fuzz-report" \
  --warnings off \
  2>&1 | tee "$work/schemathesis.log"
status=${PIPESTATUS[0]}
set -e
if ! kill -0 "$pid" 2>/dev/null; then
  echo "fuzz: cairn dev exited during the run"; tail -n 50 "$work/cairn.log"; exit 1
fi
if grep -qE 'panicked|internal error' "$work/cairn.log"; then
  echo "fuzz: the server logged errors:"; grep -E 'panicked|internal error' "$work/cairn.log" | head -n 20
fi
summary=$(grep -E '^=+ .* in [0-9.]+s =+$' "$work/schemathesis.log" | tail -n1 || true)
echo "fuzz: ${summary:-no summary} (exit $status)"
exit "$status"
