#!/usr/bin/env bash
# `meshproxy demo` on a fresh Debian machine: installs what it needs
# (scripts/bootstrap.sh), then runs the demo with any arguments passed through.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh
exec .venv/bin/meshproxy demo "$@"
