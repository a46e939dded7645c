#!/usr/bin/env bash
# Installs what building Kiln needs beyond rustup's host toolchain: the
# wasm32-wasip2 target, clang-19 + llvm-19 + wasi-libc headers for the C part
# of the JavaScript runtime (QuickJS), a Python virtual environment
# (target/python-tools) with componentize-py and tzdata (PyPI) for the Python
# runtime and openapi-spec-validator, standardwebhooks,
# openapi-python-client and schemathesis for the tests, and
# the x86_64-unknown-linux-musl target and musl-tools for the static build,
# the web console's npm packages (console/, `npm ci`) and Debian's Chromium
# for its browser tests.
# Works on a stock Debian 12 too. Safe to run again.
set -euo pipefail

rustup target add wasm32-wasip2
# The static release build (scripts/static-check.sh, deploy/Dockerfile).
rustup target add x86_64-unknown-linux-musl

if ! command -v clang-19 >/dev/null || ! command -v llvm-ar-19 >/dev/null \
    || [ ! -f /usr/include/wasm32-wasi/stdio.h ] || ! command -v musl-gcc >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # musl-tools: musl-gcc, for the C of ring (TLS) in the static build.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        clang-19 llvm-19 wasi-libc musl-tools >/dev/null
fi

# PyPI tools go into a virtual environment of the repository's own,
# target/python-tools: a stock Debian's Python refuses `pip install`
# (externally managed), and nothing here changes the system's Python. The
# components build (components/artifacts/build.rs) and the tests look there.
tools="$(cd "$(dirname "$0")/.." && pwd)/target/python-tools"
if [ ! -x "$tools/bin/python3" ]; then
    # Debian ships venv's pip apart, in python3-venv.
    if ! python3 -m venv "$tools" >/dev/null 2>&1; then
        rm -rf "$tools"
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            python3-venv >/dev/null
        python3 -m venv "$tools"
    fi
fi
# componentize-py builds the Python runtime, tzdata is its time zones;
# openapi-spec-validator and standardwebhooks are what the end-to-end tests
# check /openapi.json and webhook signatures against; openapi-python-client
# generates the client from /openapi.json that one of them drives;
# schemathesis fuzzes the server against /openapi.json.
for pinned in componentize-py==0.25.1 tzdata==2026.6 openapi-spec-validator==0.9.0 \
    standardwebhooks==1.1.0 openapi-python-client==0.29.1 schemathesis==4.32.5; do
    name="${pinned%%==*}" version="${pinned##*==}"
    if [ "$("$tools/bin/python3" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" != "$version" ]; then
        "$tools/bin/python3" -m pip install --quiet --disable-pip-version-check "$pinned"
    fi
done


# The web console (console/): node builds it (esbuild, from host/build.rs)
# and its browser tests drive Debian's Chromium through playwright-core.
# The image of this kind of machine has Node 20; a stock Debian gets its
# own nodejs, enough for the build (the browser tests want Node 20 or newer).
need_apt=""
command -v node >/dev/null && command -v npm >/dev/null || need_apt="nodejs npm"
# KILN_SETUP_BROWSER=0 (deploy/Dockerfile) leaves the browser out: it is
# for the tests only.
if [ "${KILN_SETUP_BROWSER:-1}" != 0 ] && ! command -v chromium >/dev/null; then
    need_apt="$need_apt chromium fonts-dejavu-core"
fi
# PostgreSQL (Debian's): the tests start throwaway clusters of it
# (host/src/store/postgres/cluster.rs); KILN_SETUP_POSTGRES=0 leaves it out.
if [ "${KILN_SETUP_POSTGRES:-1}" != 0 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need_apt="$need_apt postgresql"
fi
if [ -n "$need_apt" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # The tests make their own clusters: no system cluster on 5432.
    case "$need_apt" in *postgresql*)
        $sudo mkdir -p /etc/postgresql-common
        [ -e /etc/postgresql-common/createcluster.conf ] ||
            echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
    esac
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $need_apt >/dev/null
fi
console="$(cd "$(dirname "$0")/.." && pwd)/console"
# npm ci again only when the lock file changed since the last install.
if ! cmp -s "$console/package-lock.json" "$console/node_modules/.kiln-installed-lock"; then
    (cd "$console" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$console/package-lock.json" "$console/node_modules/.kiln-installed-lock"
fi
