#!/usr/bin/env bash
# Installs what building Kiln needs beyond rustup's host toolchain: the
# wasm32-wasip2 target, and clang-19 + llvm-19 + wasi-libc headers for the
# C part of the JavaScript runtime (QuickJS). Safe to run again.
set -euo pipefail

rustup target add wasm32-wasip2

if ! command -v clang-19 >/dev/null || ! command -v llvm-ar-19 >/dev/null \
    || [ ! -f /usr/include/wasm32-wasi/stdio.h ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        clang-19 llvm-19 wasi-libc >/dev/null
fi
