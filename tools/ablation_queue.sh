#!/usr/bin/env bash
# One core's share of an ablation: train and score the given rows one after another, pinned to one CPU
# core with one TensorFlow thread, so two queues on a 2-core machine run side by side at equal compute.
#   tools/ablation_queue.sh CORE MINUTES ROOT SEEDS ROW [ROW...]     e.g. tools/ablation_queue.sh 0 12 models/ablation-1core "0" paper +EMA
# Each cell: `ablation run` (skips finished cells), then `ablation evaluate` on domain features (500 samples) and
# on Inception features ($INCEPTION_N samples, default 112 like the validation set: ~0.35 CPU-s per image).
set -euo pipefail
core=$1 minutes=$2 root=$3 seeds=$4
shift 4
PY=${PY:-.venv/bin/python}
INCEPTION_N=${INCEPTION_N:-112}
pin() { TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c "$core" "$@"; }
for row in "$@"; do
    pin "$PY" -m covgan_utils ablation run --rows "$row" --seeds $seeds --minutes "$minutes" --arch lean --root "$root"
    pin "$PY" -m covgan_utils ablation evaluate --root "$root" --rows "$row" --seeds $seeds
    pin "$PY" -m covgan_utils ablation evaluate --root "$root" --rows "$row" --seeds $seeds --features inception --n "$INCEPTION_N"
done
