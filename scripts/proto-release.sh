#!/usr/bin/env bash
# Freeze the contract as released: rebuild the `buf breaking` baseline from protos/ as it is
# now and record its version. Run it when an API version is released, after its proto
# changes are merged:
#
#     scripts/proto-release.sh 1.1.0
#
# `make test` then holds every later change to the protos to that release
# (tests/project/test_contracts.py runs `buf breaking` against the baseline). The release
# itself must not break the previous one: a breaking change needs a new package (wallet.v2),
# not a new baseline for wallet.v1. Needs no network (buf.yaml has no remote dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-}"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "usage: scripts/proto-release.sh <version>, e.g. 1.1.0" >&2
    exit 2
fi
buf=scripts/buf.sh
baseline=protos/baseline/wallet-v1.binpb
"$buf" lint
"$buf" breaking --against "$baseline"
# Without source info: comments and line numbers are not part of the contract, and the
# image stays small.
"$buf" build --exclude-source-info -o "$baseline"
cat > protos/baseline/README.md <<NOTE
\`wallet-v1.binpb\` is the wallet.v1 contract as released in API version ${version}.

It is the \`buf breaking\` baseline (\`tests/project/test_contracts.py\`): a buf image of
\`protos/\` made by \`scripts/proto-release.sh ${version}\`, which runs
\`buf build --exclude-source-info -o protos/baseline/wallet-v1.binpb\`. On the next release,
run \`scripts/proto-release.sh <version>\` and commit both files.
NOTE
echo "proto-release: $baseline is now API version $version" >&2
