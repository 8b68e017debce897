#!/usr/bin/env bash
# Set up .venv (reused when present) and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
# Two worker processes, one per core of the 2-core machines the suite is sized for, each with one torch
# thread (two threads per worker would oversubscribe the cores); whole files go to one worker, so a file's
# module fixtures are built once. Pass -n 0 to run in this process (e.g. under a debugger).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
