#!/usr/bin/env bash
# Run the buf CLI (protobuf linter), installed once from the npm registry into .run/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=1.75.0
buf=.run/tools/node_modules/.bin/buf
if [ ! -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
    command -v npm >/dev/null || { echo "buf.sh: npm is required to install buf" >&2; exit 1; }
    mkdir -p .run/tools
    npm install --silent --no-audit --no-fund --prefix .run/tools "@bufbuild/buf@$BUF_VERSION" >&2
fi
exec "$buf" "$@"
