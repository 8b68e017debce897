#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root and install noisyseg into it with the tested pins.
# Reuse: the install is skipped when pyproject.toml and constraints.txt are unchanged since the last one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
stamp=".venv/.noisyseg-install-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($py --version)" >&2
    "$py" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing noisyseg and its pinned dependencies into .venv (first time: several minutes)" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
else
    echo "[setup] reusing .venv" >&2
fi
