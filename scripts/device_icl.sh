#!/usr/bin/env bash
# Issue 22's ICL runs on the GPU machine (the `device` tool), in calls of at most 10 minutes that
# resume each other: what a run has saved (finished cells, checkpoints) comes back as a tar in parts
# of at most 15 MiB, and the next call continues from it. WHAT picks the run:
#   diversity  experiments.task_diversity: the task-diversity threshold M* (item 2)
#   scaling    experiments.icl_scaling: depth at matched compute, prompts x length at fixed budgets (item 3)
#   bma        icl_bayes.pretrain at d = 20, T = 40 with Garg et al.'s curriculum: the relative excess
#              over BMA's Bayes risk at every T (item 1)
#
# Here, once: mkdir -p .device-icl && echo /.device-icl/ >> .git/info/exclude
# On the device:  run(command="WHAT=diversity bash scripts/device_icl.sh", carry=[".device-icl"], timeout_s=590)
# Back here:      cat FILES_AT/icl_state.tar.part-* | tar -x -C .device-icl/
#                 cp FILES_AT/task_diversity.json benchmarks/results/task_diversity_gpu.json   (when finished;
#                 icl_scaling.json -> icl_scaling_gpu.json, curves.json -> icl_bma_gpu.json)
# Smoke test on a CPU:
#   OUT=/tmp/icl STATE=/tmp/icl-state BUDGET=60 WHAT=diversity \
#     FLAGS="--pools 2,64 --seeds 0 --steps 50 --trials 100 --width 16 --depth 1" bash scripts/device_icl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
STATE="${STATE:-.device-icl}"  # what came back earlier
BUDGET="${BUDGET:-520}"  # seconds of work in this call; the rest packs the state
WHAT="${WHAT:-diversity}"
case "$WHAT" in
  diversity) module="experiments.task_diversity"; result="task_diversity.json task_diversity.png task_diversity.md"
    FLAGS="${FLAGS:---pools 2,8,32,128,512,2048,8192,16384 --seeds 0,1 --steps 20000 --batch 256 --width 128 --depth 4 --heads 4 --lr 1e-3}" ;;
  scaling) module="experiments.icl_scaling"; result="icl_scaling.json icl_scaling.png icl_scaling.md"
    FLAGS="${FLAGS:---d 8 --T 32 --width 128 --heads 4 --batch 256 --depths 1,2,4,8 --layer_steps 40000 --budgets 4096,16384,65536 --lengths 8,16,32,64 --data_depth 4 --data_steps 20000}" ;;
  bma) module="icl_bayes.pretrain"; result="curves.json mse.png excess.png"
    FLAGS="${FLAGS:---d 20 --T 40 --curriculum 5,11,2000 --steps 40000 --batch-size 128 --layers 6 --width 128 --heads 4 --lr 2e-4 --trials 4000 --checkpoint-every 1000}" ;;
  *) echo "WHAT must be diversity, scaling or bma, got '$WHAT'" >&2; exit 2 ;;
esac
mkdir -p "$OUT" "$STATE/$WHAT"
python3 -c "import jax; print('jax', jax.__version__, 'devices', jax.devices())"
# shellcheck disable=SC2086
timeout "$BUDGET" python3 -m "$module" $FLAGS --out "$STATE/$WHAT" 2>&1 \
  | tr '\r' '\n' | grep -v '^pretrain:' | tee "$OUT/$WHAT.log" || true
for name in $result; do
  if [ -f "$STATE/$WHAT/$name" ]; then cp "$STATE/$WHAT/$name" "$OUT/"; fi
done
ls "$STATE/$WHAT"
tar -C "$STATE" -cf - "$WHAT" | split -b 15m -d - "$OUT/icl_state.tar.part-"
ls -l "$OUT"
