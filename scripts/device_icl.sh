#!/usr/bin/env bash
# Issue 22's task-diversity sweep (experiments.task_diversity) on the GPU machine (the `device` tool),
# in calls of at most 10 minutes that resume each other: every finished (pool size, seed) cell and
# the running cell's checkpoint come back as one tar, and the next call continues from it.
#
# Here, once: mkdir -p .device-icl && echo /.device-icl/ >> .git/info/exclude
# On the device:  run(command="bash scripts/device_icl.sh", carry=[".device-icl"], timeout_s=590)
# Back here:      tar -xf FILES_AT/task_diversity_state.tar -C .device-icl/
#                 cp FILES_AT/task_diversity.json benchmarks/results/task_diversity_gpu.json   (when finished)
# Smoke test on a CPU:
#   OUT=/tmp/icl STATE=/tmp/icl-state BUDGET=60 \
#     FLAGS="--pools 2,64 --seeds 0 --steps 50 --trials 100 --width 16 --depth 1" bash scripts/device_icl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
STATE="${STATE:-.device-icl}"  # the cells and checkpoint that came back earlier
BUDGET="${BUDGET:-520}"  # seconds of training in this call; the rest packs the state
FLAGS="${FLAGS:---pools 2,8,32,128,512,2048,8192,16384 --seeds 0,1 --steps 20000 --batch 256 --width 128 --depth 4 --heads 4 --lr 1e-3}"
mkdir -p "$OUT" "$STATE"
python3 -c "import jax; print('jax', jax.__version__, 'devices', jax.devices())"
# shellcheck disable=SC2086
timeout "$BUDGET" python3 -m experiments.task_diversity $FLAGS --out "$STATE" 2>&1 \
  | tr '\r' '\n' | grep -v '^pretrain:' | tee "$OUT/task_diversity.log" || true
if [ -f "$STATE/task_diversity.json" ]; then
  cp "$STATE/task_diversity.json" "$STATE/task_diversity.png" "$STATE/task_diversity.md" "$OUT/"
else
  echo "the sweep did not finish in ${BUDGET} s: $(ls "$STATE/cells" 2>/dev/null | grep -c npz) cells done, state comes back"
fi
tar -C "$STATE" -cf "$OUT/task_diversity_state.tar" cells
ls -l "$OUT"
