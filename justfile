# Everyday commands. `just --list` shows them all. (`just` is not needed by CI: the `ci`
# recipe runs .ci/run, which CI runs directly.)

set dotenv-load

# The PostgreSQL that tests and `migrate` use: a superuser, trust auth by default.
db := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
target := env_var_or_default("CARGO_TARGET_DIR", "target")

# Install `cairn` (with the dashboard built into it when npm is there) and `ctl` into ~/.cargo/bin
[group('run')]
install:
    if command -v npm >/dev/null 2>&1; then cd frontend && npm ci --prefer-offline && npm run build; else echo "npm not found: cairn is installed without the dashboard (it serves a page saying how to add it)"; fi
    cargo install --locked --path . --bins
    cargo install --locked --path crates/cairn-ctl

# Cairn in one process with the dashboard (no DATABASE_URL: a private PostgreSQL in --data-dir)
[group('run')]
dev *args:
    cargo run --bin cairn -- dev {{ args }}

# The dashboard's dev server (http://localhost:5173; /api goes to $CAIRN_API_URL)
[group('run')]
dev-frontend:
    cd frontend && npm run dev

# Apply migrations to DATABASE_URL
[group('run')]
migrate:
    DATABASE_URL={{ db }} cargo run --bin cairn -- migrate

# Benchmarks against a raw-SQL floor (docs/BENCHMARKS.md); creates and drops its own database
[group('run')]
bench *args:
    cargo build --release --locked --bins
    DATABASE_URL={{ db }} {{ target }}/release/cairn-bench {{ args }}

# Every test: Rust (each test gets its own database) and the dashboard's unit tests
[group('check')]
test: test-rust test-frontend

# Rust tests; arguments go to nextest / cargo test (e.g. `just test-rust scheduler`)
[group('check')]
test-rust *args:
    DATABASE_URL={{ db }} scripts/test.sh {{ args }}

# The dashboard's unit and component tests (vitest)
[group('check')]
test-frontend:
    cd frontend && npm test

# rustfmt check, clippy with warnings as errors, the dashboard's typecheck and eslint
[group('check')]
lint:
    cargo fmt --all -- --check
    cargo clippy --locked --workspace --all-targets -- -D warnings
    cd frontend && npm run lint

# Browser tests against a real `cairn dev` with a private PostgreSQL (needs /usr/bin/chromium)
[group('check')]
e2e *args:
    scripts/e2e.sh {{ args }}

# Fuzz the API with schemathesis against `cairn dev` (builds the binary first).
fuzz *args:
    cargo build --bin cairn
    scripts/fuzz.sh --cairn "${CARGO_TARGET_DIR:-target}/debug/cairn" {{ args }}

# Rebuild .sqlx/ (the prepared data of the SQL checked when compiling) after changing a
# statement or a migration; `--check` only says whether it is stale
[group('check')]
sqlx-prepare *args:
    DATABASE_URL={{ db }} scripts/sqlx-prepare.sh {{ args }}

# Check the workflow definitions without a database
[group('check')]
validate:
    cargo run --quiet --bin ctl -- workflow validate

# Check docker-compose.yml against the real `cairn` binary
[group('check')]
check-compose:
    cargo build --locked --bin cairn
    python3 scripts/check-compose.py --cairn {{ target }}/debug/cairn

# Format the Terraform files (CI checks them with `terraform fmt -check`)
[group('deploy')]
tf-fmt:
    terraform fmt -recursive terraform

# Build the image and start postgres, migrate, api, worker, scheduler and frontend
[group('deploy')]
up:
    docker compose up --build -d

# Stop the compose services (the database volume stays; `docker compose down -v` drops it)
[group('deploy')]
down:
    docker compose down

# What CI runs: .ci/run (format, lints, frontend, terraform fmt, compose check, tests, fuzzing, e2e)
[group('check')]
ci:
    .ci/run
