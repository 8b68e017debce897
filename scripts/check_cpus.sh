#!/usr/bin/env bash
# Before you stop: run the whole test suite as other CPUs would. Float rounding differs between CPU kernel
# sets, and a short training run amplifies it (FINDINGS.md §7), so a test that passes only on this machine's
# kernels fails on a user's. torch picks its kernels by ATEN_CPU_CAPABILITY; this runs the suite under
# `default`, `avx2` and the machine's own, with 2 torch threads, and once more with 1 thread.
#
#   bash scripts/check_cpus.sh              # all four runs (about 4 x 3-4 minutes on 2 cores)
#   bash scripts/check_cpus.sh default      # one setting; extra arguments go to pytest
#
# Prints one line per run and exits non-zero when any run fails. CI keeps running `bash scripts/test.sh`.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh" || exit 1
cd "$root"
runs=("default:2" "avx2:2" "native:2" "native:1")
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
    runs=("$1:2"); shift
fi
failed=0
for run in "${runs[@]}"; do
    cap="${run%%:*}"; threads="${run##*:}"
    log="$(mktemp)"
    start=$(date +%s)
    if [ "$cap" = native ]; then kernel_env=(env -u ATEN_CPU_CAPABILITY); else kernel_env=(env ATEN_CPU_CAPABILITY="$cap"); fi
    "${kernel_env[@]}" OMP_NUM_THREADS="$threads" .venv/bin/python -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1
    rc=$?
    kernels=$("${kernel_env[@]}" .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())" 2>/dev/null)
    echo "[check_cpus] ATEN_CPU_CAPABILITY=$cap ($kernels), $threads threads: $(tail -n 1 "$log") [$(( $(date +%s) - start )) s]"
    if [ $rc -ne 0 ]; then
        failed=1
        grep -E "^(FAILED|ERROR)" "$log" | sed 's/^/[check_cpus]   /'
    fi
    rm -f "$log"
done
exit $failed
