#!/usr/bin/env bash
# Installs what building Kiln needs beyond rustup's host toolchain: the
# wasm32-wasip2 target, clang-19 + llvm-19 + wasi-libc headers for the C part
# of the JavaScript runtime (QuickJS), componentize-py (PyPI) for the Python
# runtime (and tzdata for its zoneinfo), the x86_64-unknown-linux-musl target and musl-tools for the static
# build, and openapi-spec-validator and standardwebhooks (PyPI) for the
# tests. Safe to run again.
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

if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore componentize-py==0.25.1
    # pyenv installs console scripts behind shims that need a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# The Python runtime embeds this IANA time zone database for zoneinfo
# (components/artifacts/build.rs).
if [ "$(python3 -c 'import tzdata; print(tzdata.__version__)' 2>/dev/null)" != "2026.6" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore tzdata==2026.6
fi

# The end-to-end tests validate /openapi.json with the reference validator.
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore openapi-spec-validator==0.9.0
fi

# The webhook tests check Kiln's signatures with the stock Standard Webhooks verifier.
if ! python3 -c 'import standardwebhooks' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore standardwebhooks==1.1.0
fi
