#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need
# (scripts/bootstrap.sh --test), then runs pytest over tests/ with any
# arguments passed through. The exit status is pytest's own, so a run that
# collected no test fails (pytest's 5) instead of passing silently.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh --test
# Tests start their own nginx, haproxy and iptables from sbin.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
exec .venv/bin/python -m pytest "$@"
