# Everyday commands. `just --list` shows them all.

set dotenv-load := true

db := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# API and a worker in one process
[group('run')]
dev:
    DATABASE_URL={{db}} cargo run --bin cairn -- dev

# Apply migrations
[group('run')]
migrate:
    DATABASE_URL={{db}} cargo run --bin cairn -- migrate

# Every test (each test gets its own database)
[group('check')]
test *args:
    DATABASE_URL={{db}} scripts/test.sh {{args}}

# rustfmt check and clippy with warnings as errors
[group('check')]
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Check the workflow definitions without a database
[group('check')]
validate:
    cargo run --quiet --bin ctl -- workflow validate

# What CI runs
[group('check')]
ci:
    .ci/run
