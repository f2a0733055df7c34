#!/usr/bin/env bash
# Installs what wsgate needs to build, test and benchmark, from Debian 12's
# packages. Installs only what is missing; safe to run again.
#   scripts/install-deps.sh          build and test dependencies
#   scripts/install-deps.sh --bench    also Qt's WebSockets, for bench/'s reference server
#   scripts/install-deps.sh --browser  also Chromium and chromedriver, for tests/browser/
#   scripts/install-deps.sh --bench-refs  also Boost.Beast and node ws, bench/'s
#                                         optional references (bench/run --servers)
# The flags may be given together.
set -euo pipefail

packages=(
    build-essential cmake ninja-build pkg-config git
    libuv1-dev liburing-dev libmbedtls-dev node-llhttp zlib1g-dev doctest-dev
    clang libclang-rt-14-dev clang-format
    python3 openssl
)
for flag in "$@"; do
    case "$flag" in
    --bench) packages+=(qt6-websockets-dev qt6-base-dev) ;;
    --browser) packages+=(chromium chromium-driver) ;;
    --bench-refs) packages+=(libboost1.81-dev nodejs node-ws) ;;
    *)
        echo "install-deps: unknown option $flag" >&2
        exit 2
        ;;
    esac
done

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
