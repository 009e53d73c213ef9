#!/usr/bin/env bash
# Run the buf CLI (protobuf lint and breaking-change checks) from the project's venv, where
# the pinned buf-bin package installs it (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
buf=.venv/bin/buf
[ -x "$buf" ] || scripts/bootstrap.sh >&2
exec "$buf" "$@"
