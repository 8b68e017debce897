#!/usr/bin/env bash
# Set up .venv (reused when present) and run the demo: CE vs the task-specific loss under 40% noise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
exec .venv/bin/noisyseg demo "$@"
