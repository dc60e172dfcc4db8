# syntax=docker/dockerfile:1
#
# Cairn: one image with both binaries, `cairn` (migrate | api | worker | scheduler |
# admin | dev) and `ctl`, and the built dashboard, which `cairn api` serves at `/`.
#
#   docker build -t cairn .
#   docker run --rm -e DATABASE_URL=postgres://... cairn migrate
#   docker run --rm -e DATABASE_URL=postgres://... -e CAIRN_NO_MIGRATE=true -p 8080:8080 cairn api
#   docker run --rm -e DATABASE_URL=postgres://... -e CAIRN_NO_MIGRATE=true cairn worker
#   docker run --rm -e DATABASE_URL=postgres://... -e CAIRN_NO_MIGRATE=true cairn scheduler
#
# A second image, the `dashboard` target, serves the same dashboard with nginx on port
# 3000 and proxies /api to the api service (docker-compose.yml's `frontend`):
#
#   docker build --target dashboard -t cairn-dashboard .
#
# The builder and runtime stages use the same Debian release so the binaries link
# against the glibc they were built with. The runtime stage is last, so it is what a
# plain `docker build .` produces.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG NODE_VERSION=20
ARG NGINX_TAG=alpine

# ---------------------------------------------------------------------------------
# The dashboard: `npm ci` (a layer reused until package*.json change), then the build.
FROM node:${NODE_VERSION}-slim AS frontend

WORKDIR /frontend
ENV npm_config_audit=false \
    npm_config_fund=false \
    npm_config_update_notifier=false
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci
COPY frontend/ ./
RUN npm run build

# ---------------------------------------------------------------------------------
# `docker build --target dashboard`: the dashboard on nginx, port 3000, with /api (and
# the health endpoints) proxied to the `api` host on 8080. docker/nginx.conf says how.
FROM nginx:${NGINX_TAG} AS dashboard

COPY docker/nginx.conf /etc/nginx/conf.d/default.conf
COPY --from=frontend /frontend/dist /usr/share/nginx/html
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/"]

# ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder

WORKDIR /build

# `.cargo/config.toml` sets SQLX_OFFLINE=true (apalis-postgres' bundled queries are
# checked against their shipped offline data, not a live database); it is copied
# below, and set here as well so no build step ever tries to reach a database.
ENV SQLX_OFFLINE=true \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never

# 1) Dependencies only. Dummy crates with the real manifests, lockfile and cargo
#    config compile every dependency into a layer that is reused until a manifest or
#    Cargo.lock change. Every member of the workspace must be there, the bench's too,
#    though the image does not build it. (No OpenSSL: TLS is rustls; aws-lc-sys
#    builds with the C compiler that the rust image ships.)
COPY Cargo.toml Cargo.lock ./
COPY crates/cairn-workflow/Cargo.toml crates/cairn-workflow/Cargo.toml
COPY crates/cairn-core/Cargo.toml crates/cairn-core/Cargo.toml
COPY crates/cairn-ctl/Cargo.toml crates/cairn-ctl/Cargo.toml
COPY crates/cairn-bench/Cargo.toml crates/cairn-bench/Cargo.toml
COPY .cargo/config.toml .cargo/config.toml
RUN mkdir -p src bin crates/cairn-workflow/src crates/cairn-core/src crates/cairn-ctl/src \
        crates/cairn-bench/src \
    && printf '// dependency-cache placeholder\n' > src/lib.rs \
    && printf 'fn main() {}\n' > bin/cairn.rs \
    && printf '// dependency-cache placeholder\n' > crates/cairn-workflow/src/lib.rs \
    && printf '// dependency-cache placeholder\n' > crates/cairn-core/src/lib.rs \
    && printf '// dependency-cache placeholder\n' > crates/cairn-ctl/src/lib.rs \
    && printf 'fn main() {}\n' > crates/cairn-ctl/src/main.rs \
    && printf '// dependency-cache placeholder\n' > crates/cairn-bench/src/lib.rs \
    && printf 'fn main() {}\n' > crates/cairn-bench/src/main.rs \
    && cargo build --release --locked --package cairn --package cairn-ctl --bins \
    && rm -rf src bin crates/cairn-workflow/src crates/cairn-core/src crates/cairn-ctl/src \
        crates/cairn-bench/src \
        target/release/cairn target/release/ctl \
        target/release/.fingerprint/cairn-* \
        target/release/deps/cairn-* \
        target/release/deps/libcairn-* \
        target/release/deps/cairn_* \
        target/release/deps/libcairn_* \
        target/release/deps/ctl-*

# 2) The crates themselves. cairn-core's `sqlx::migrate!("./migrations")` embeds its
#    migrations at compile time, and its checked queries read their prepared data from
#    its `.sqlx/` (its sqlx.toml maps the state columns to their enums), so all of
#    these, under crates/cairn-core/, are part of the build context here. The
#    placeholders' artifacts were removed above and the sources touched, so cargo
#    rebuilds the crates even when COPY keeps file times older than the placeholder
#    build.
COPY build.rs ./
COPY src/ src/
COPY bin/ bin/
COPY crates/ crates/
RUN touch src/lib.rs bin/cairn.rs crates/cairn-workflow/src/lib.rs crates/cairn-core/src/lib.rs \
        crates/cairn-ctl/src/lib.rs crates/cairn-ctl/src/main.rs \
    && cargo build --release --locked --package cairn --package cairn-ctl --bins \
    && mkdir -p /out \
    && cp target/release/cairn target/release/ctl /out/ \
    && /out/cairn --version \
    && /out/ctl --version

# ---------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: rustls verifies `http`/`llm` step targets and TLS database
# connections against the system roots. Nothing else is needed at run time: the
# health probe below is plain bash.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cairn \
    && useradd --system --uid 10001 --gid cairn --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin cairn

COPY --from=builder /out/cairn /out/ctl /usr/local/bin/
COPY docker/healthcheck.sh /usr/local/bin/cairn-healthcheck
# Workflow definitions and the dashboard stay owned by root: the service only reads them.
COPY workflows/ /app/workflows/
COPY --from=frontend /frontend/dist /app/frontend/dist/

WORKDIR /app

# Read by `cairn api`/`cairn dev` (see `cairn api --help`; the scheduler reads
# CAIRN_WORKFLOWS_DIR too, and `ctl workflow validate` defaults to it). Listening on all
# interfaces is what a container needs; the binary's own default is 127.0.0.1:8080.
ENV CAIRN_WORKFLOWS_DIR=/app/workflows \
    CAIRN_STATIC_DIR=/app/frontend/dist \
    CAIRN_LISTEN=0.0.0.0:8080

USER 10001:10001
EXPOSE 8080

# GET /healthz on the CAIRN_LISTEN port. Only `api` and `dev` serve HTTP: give
# `worker`/`migrate` containers `healthcheck: disable: true` (docker-compose.yml does).
# ECS ignores image health checks; the task definitions in terraform/ set their own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/cairn-healthcheck"]

ENTRYPOINT ["cairn"]
CMD ["api"]
