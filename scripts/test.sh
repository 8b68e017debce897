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
# The output is also kept in a file: when the run fails, a digest of what failed (the summary's FAILED and
# ERROR lines and each exception line, an INTERNALERROR's included) is printed last, where a log that keeps
# only its tail still shows it.
log="$(mktemp "${TMPDIR:-/tmp}/noisyseg-tests.XXXXXX")"
trap 'rm -f "$log"' EXIT
set +e
.venv/bin/python -m pytest -n 2 --dist loadfile "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "---- the run failed (pytest exit code $status); what failed, in order (the full output is above) ----"
    grep -E '^(FAILED|ERROR) |^(INTERNALERROR> )?E +[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Exit|Interrupt)\b' "$log" \
        | awk '!seen[$0]++' | tail -n 40
fi
exit "$status"
