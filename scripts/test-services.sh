#!/usr/bin/env bash
# What the whole test suite needs besides .venv, made ready on this machine (by `make test` and
# .ci/run): PostgreSQL at 127.0.0.1:5432 (or TEST_DATABASE_URL), started when it is down;
# Redis at 127.0.0.1:6379 (or TEST_REDIS_URL), started when it is down; Debian's Chromium for
# the page tests, installed when it is missing; the npm packages of the MCP and AI SDK tests
# (npm ci); the useChat example the page tests open, built when missing or older than its sources.
# Starting and installing need root, as in CI; without it, or when something cannot be done
# here, this says exactly what to do and fails, so that `make test` never passes by skipping
# tests.
set -euo pipefail

ADMIN_URL="${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
missing=()

is_root() { [ "$(id -u)" -eq 0 ]; }

# The machine's PostgreSQL cluster (Debian's layout), e.g. "15 main"; empty without one.
cluster() {
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$version" ] && command -v pg_ctlcluster >/dev/null; then echo "$version main"; fi
}

postgres_up() { pg_isready -d "$ADMIN_URL" -q 2>/dev/null; }

start_postgres() {
    local found
    found="$(cluster)"
    if [ -z "$found" ]; then
        missing+=("PostgreSQL: apt-get install postgresql, allowing user postgres from 127.0.0.1
    without a password (trust in pg_hba.conf); or set TEST_DATABASE_URL to a role that may
    create databases")
    elif ! is_root; then
        missing+=("PostgreSQL is down: start it as root: pg_ctlcluster $found start")
    else
        # shellcheck disable=SC2086  # "15 main" is two arguments
        pg_ctlcluster --skip-systemctl-redirect $found start
        for _ in $(seq 1 30); do postgres_up && return; sleep 1; done
        missing+=("PostgreSQL did not start: see pg_lsclusters and its log")
    fi
}

check_postgres() {
    command -v pg_isready >/dev/null || { missing+=("pg_isready: apt-get install postgresql-client"); return; }
    postgres_up || start_postgres
    if postgres_up && command -v psql >/dev/null \
        && ! PGCONNECT_TIMEOUT=5 psql "$ADMIN_URL" -Atqc 'select 1' >/dev/null 2>&1; then
        missing+=("PostgreSQL refuses $ADMIN_URL: allow it without a password (trust in
    pg_hba.conf for 127.0.0.1), or set TEST_DATABASE_URL to a role that may create databases")
    fi
    # The outage tests run a PostgreSQL server of their own (tests/support/private_postgres.py):
    # Debian's server binaries, started as the postgres user, which needs root.
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! is_root; then
        missing+=("the PostgreSQL outage tests start a server of their own with Debian's initdb
    and pg_ctl as the postgres user: run make test as root with the postgresql package installed")
    fi
}

REDIS_URL_FOR_TESTS="${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

redis_up() { redis-cli -u "$REDIS_URL_FOR_TESTS" ping 2>/dev/null | grep -q PONG; }

check_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        if is_root && command -v apt-get >/dev/null; then
            echo "Installing Debian's redis-server for the message bus tests."
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        else
            missing+=("Redis, for the message bus tests: apt-get install redis-server (the
    outage tests start private redis-server processes of their own)")
            return
        fi
    fi
    if ! redis_up && [ -z "${TEST_REDIS_URL:-}" ]; then
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
        for _ in $(seq 1 30); do redis_up && return; sleep 0.2; done
    fi
    redis_up || missing+=("Redis does not answer at $REDIS_URL_FOR_TESTS: start it, or set TEST_REDIS_URL")
}

check_chromium() {
    if [ -n "${CHROMIUM_PATH:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
        return
    fi
    if is_root && command -v apt-get >/dev/null; then
        echo "Installing Debian's chromium for the page tests."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        missing+=("Chromium, for the page tests: apt-get install chromium (as root), or set
    CHROMIUM_PATH to a Chromium binary")
    fi
}

# What the tests run from npm, each directory at the versions of its package-lock.json: the
# reference MCP servers that tests/services/mcp/ talk to (the PyPI one comes with
# requirements-dev.txt), and the `ai` package that tests/ai_sdk/ drive the server with.
NPM_DIRS=("tests/mcp/servers" "tests/ai_sdk/client")
install_npm_packages() {
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        missing+=("Node.js and npm, for the reference MCP servers of the MCP tests and the ai
    package of the AI SDK tests: apt-get install nodejs npm")
        return
    fi
    local dir
    for dir in "${NPM_DIRS[@]}"; do install_npm_dir "$dir"; done
}

install_npm_dir() {
    local dir="$1"
    # npm ci starts from a clean node_modules; skip it when the lockfile has not changed since.
    local stamp="$dir/node_modules/.installed-lock"
    if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then return; fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) \
        || { missing+=("npm ci in $dir failed (see above)"); return; }
    cp "$dir/package-lock.json" "$stamp"
}

# The useChat example of examples/ai-sdk-react (tests/page/test_ai_sdk_example.py opens it).
AI_SDK_EXAMPLE_DIR="examples/ai-sdk-react"
ai_sdk_example_stale() {
    local built="$AI_SDK_EXAMPLE_DIR/dist/index.html"
    [ ! -f "$built" ] && return 0
    [ -n "$(find "$AI_SDK_EXAMPLE_DIR/src" "$AI_SDK_EXAMPLE_DIR/index.html" \
        "$AI_SDK_EXAMPLE_DIR/vite.config.js" "$AI_SDK_EXAMPLE_DIR/package.json" \
        "$AI_SDK_EXAMPLE_DIR/package-lock.json" -newer "$built" -print -quit)" ]
}

build_ai_sdk_example() {
    ai_sdk_example_stale || return 0
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        missing+=("Node.js and npm, to build the useChat example of the page tests: apt-get
    install nodejs npm")
        return
    fi
    echo "Building the useChat example ($AI_SDK_EXAMPLE_DIR)."
    make --no-print-directory ai-sdk-example \
        || missing+=("make ai-sdk-example failed (see above)")
}

check_postgres
check_redis
check_chromium
install_npm_packages
build_ai_sdk_example
if [ "${#missing[@]}" -gt 0 ]; then
    echo "make test runs the whole suite, and this machine is missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "(.venv/bin/python -m pytest runs what it can here, skipping the rest.)" >&2
    exit 1
fi
