#!/usr/bin/env bash
# Create .venv and install the project with pinned versions (constraints.txt).
# Re-installs only when pyproject.toml, constraints.txt, the build hook or a .proto changed,
# because the install is also what regenerates the gRPC code from protos/.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "bootstrap: Python 3.11+ is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    python="$(pick_python)"
    echo "bootstrap: creating .venv with $python" >&2
    "$python" -m venv .venv
fi

stamp=.venv/.installed
inputs=(pyproject.toml constraints.txt hatch_build.py $(find protos -name '*.proto' | sort))
if [ ! -f "$stamp" ] || [ -n "$(find "${inputs[@]}" -newer "$stamp" 2>/dev/null)" ] || [ ! -d gen/wallet ]; then
    echo "bootstrap: installing the project and its pinned dependencies" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' >&2
    touch "$stamp"
fi
