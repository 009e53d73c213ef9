#!/usr/bin/env bash
# The wallet benchmark: one Markdown table of throughput and latency ratios to ceilings and to
# a textbook baseline wallet (loadtests/baseline_wallet.py), all measured in one run here. Assumes .venv exists (scripts/bootstrap.sh made it);
# takes Postgres and Redis from scripts/services.sh ensure, as scripts/test.sh does.
#
#   scripts/bench.sh                       # 3 rounds of 3 s rows, about 3.5 minutes
#   scripts/bench.sh --quick               # 1 round, 2,000 players, about 75 s
#   scripts/bench.sh --markdown-out docs/bench.md
#   scripts/bench.sh --soak 600            # memory: steady Bet load, RSS every 10 s
#   scripts/bench.sh --help                # every option
#
# It creates (drops first) the database wallet_bench and flushes Redis db 14; it starts and
# stops its own wallet servers and load processes.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || { echo "bench: .venv missing; run scripts/bootstrap.sh" >&2; exit 1; }
eval "$(scripts/services.sh ensure)"
export DATABASE_URL REDIS_URL
export BENCH_COMMAND="scripts/bench.sh${*:+ $*}"
exec .venv/bin/python -m loadtests.bench "$@"
