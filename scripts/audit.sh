#!/usr/bin/env bash
# Dependency vulnerability audit: every version pinned in constraints.txt (the full lock the
# install uses) is looked up in the PyPI vulnerability database by pip-audit. No resolution
# and no install (--no-deps --disable-pip): the lock already names every package, so the
# audit takes seconds. Exit 1 on a known vulnerability; when the database cannot be reached
# (no network) it says so and exits 0. Verdict logic: scripts/audit_report.py.
#
#   scripts/audit.sh            # AUDIT_TIMEOUT_S (socket timeout, default 10) bounds each lookup
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pip-audit ] || scripts/bootstrap.sh

timeout_s="${AUDIT_TIMEOUT_S:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The whole audit is bounded too (about 100 lookups), so CI never waits on a dead network.
status=0
timeout 180 .venv/bin/pip-audit -r constraints.txt --no-deps --disable-pip \
    --progress-spinner off --timeout "$timeout_s" --format json \
    >"$work/report.json" 2>"$work/stderr.txt" || status=$?
if [ "$status" -eq 124 ]; then
    echo "audit: vulnerability database did not answer within 180 s; skipped"
    exit 0
fi
.venv/bin/python scripts/audit_report.py "$work/report.json" "$work/stderr.txt"
