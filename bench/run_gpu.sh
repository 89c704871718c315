#!/usr/bin/env bash
# Every GPU benchmark in one go, for a session lent a GPU for a few minutes: each bench/*_gpu.py in turn,
# all figures printed, the whole run held under a time budget (default 450 s, GPU_BENCH_BUDGET_S) so that
# it can be run again inside the same loan. A bench that would start with too little time left is named
# and skipped. Without a CUDA GPU every script says so and exits.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
budget=${GPU_BENCH_BUDGET_S:-450}
start=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
for script in bench/*_gpu.py; do
    left=$((budget - (SECONDS - start)))
    if [ "$left" -le 30 ]; then
        echo "== $script skipped: ${left} s of the budget left"
        continue
    fi
    echo "== $script (${left} s left)"
    timeout "$left" "$python" "$script" || echo "== $script exited with status $?"
done
echo "== all GPU benches: $((SECONDS - start)) s"
