#!/usr/bin/env bash
# Command (2) of the README and what CI runs: lint the contract and the code, type-check,
# run the whole test suite against real Postgres, Redis and gRPC on loopback, then prove the
# ledger the suite left behind is sound with `wallet-core check`. Arguments go to pytest:
# `scripts/test.sh -m unit`, `scripts/test.sh tests/bridge`, `scripts/test.sh --randomly-seed=N`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
eval "$(scripts/services.sh ensure)"
export DATABASE_URL REDIS_URL
export WALLET_TEST_DB="${WALLET_TEST_DB:-wallet_test}"

echo "== buf lint (protos)"
scripts/buf.sh lint
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy wallet_core gateway_bridge psp_simulator service_kit wallet_client
echo "== pip-audit (pinned dependencies; skipped when its database is unreachable)"
scripts/audit.sh
echo "== pytest (random order: the seed is printed first; --randomly-seed=N repeats an order,"
echo "   -p no:randomly keeps file order; the 15 slowest tests are listed at the end)"
.venv/bin/pytest --durations=15 "$@"
echo "== wallet-core check (the ledger the test suite left behind)"
DATABASE_URL="$(.venv/bin/python -c "
import os, urllib.parse as u
p = u.urlsplit(os.environ['DATABASE_URL'])
print(u.urlunsplit(p._replace(path='/' + os.environ['WALLET_TEST_DB'])))")" .venv/bin/wallet-core check
