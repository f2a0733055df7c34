#!/usr/bin/env bash
# Builds wsgate and starts the echo server on 0.0.0.0:8080 (ws://localhost:8080/).
# Extra arguments go to echo-server (see `echo-server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target echo-server
exec build/release/echo-server --address 0.0.0.0 --port 8080 "$@"
