#!/usr/bin/env bash
# Issue 21's first goal on the GPU machine (the `device` tool): the paper's SST-2 experiment at paper
# size, end to end and timed, compilation included. The model is a random RoBERTa of roberta-base's
# shape (no pretrained weights can be downloaded there). The run is k = 16, seeds 13, 21, 42, 87
# and 100, the SGD and A-SignGD kernels against SGD and Adam fine-tuning, three learning rates of
# 1000 steps each, and the 872 GLUE dev examples as test. The faster paths are on: the learning
# rates trained together, the layers scanned, and bfloat16 steps with float32 weights (FLAGS).
# A call that runs out of BUDGET seconds sends back the comparison's state (records and kernel
# tiles; a tar in parts of at most 15 MiB), and the next call resumes from it; results.json's
# `timing` adds up every invocation.
#
# Here, once (the data travel in a git-ignored folder named in `carry`, as for device_scale.sh):
#   mkdir -p .device-data && cp -r ../shared/data/SST-2 .device-data/ && echo /.device-data/ >> .git/info/exclude
# On the device:  run(command="bash scripts/device_paper.sh", carry=[".device-data"], timeout_s=590)
# Back here:      cat FILES_AT/paper.tar.part-* | tar -x -C .device-data/
#                 cp FILES_AT/results.json benchmarks/results/paper_sst2_gpu.json
# Smoke test on a CPU:
#   OUT=/tmp/paper DATA=/tmp/paper-data TASK_DATA=sample MODEL=tiny SEEDS=13 \
#     EXTRA="--steps 4 --eval-every 2 --test-cap 16" bash scripts/device_paper.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
DATA="${DATA:-.device-data}"  # runs/paper (the state that came back) lives here
TASK_DATA="${TASK_DATA:-$DATA}"  # the folder holding SST-2/
MODEL="${MODEL:-}"  # empty: a random roberta-base-shape model, written once into the run folder
SEEDS="${SEEDS:-13,21,42,87,100}"
FLAGS="${FLAGS:---ft-together --scan-layers --ft-precision bfloat16}"
EXTRA="${EXTRA:-}"
BUDGET="${BUDGET:-520}"  # seconds for the comparison; the rest of the 10 minutes packs the state
RUN="$DATA/runs/paper"
mkdir -p "$OUT" "$RUN"
export NTK_LAB_CACHE="$RUN/cache"
python3 -c "import jax; print('jax', jax.__version__, 'devices', jax.devices())" | tee "$OUT/machine.txt"
if [ -z "$MODEL" ]; then
  MODEL="$RUN/roberta-base-size"
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; \
from compare import write_roberta_base_size; write_roberta_base_size(Path('$MODEL'))"
fi
start=$SECONDS
# shellcheck disable=SC2086
timeout "$BUDGET" python3 -m ntk_lab.compare --task sst2 --model "$MODEL" --data-dir "$TASK_DATA" --seeds "$SEEDS" \
  $FLAGS $EXTRA --out "$RUN/out" >"$OUT/compare.log" 2>&1
rc=$?
echo "compare: exit $rc (124: stopped at $BUDGET s) after $((SECONDS - start)) s; $SEEDS, $FLAGS $EXTRA" | tee -a "$OUT/machine.txt"
grep -v -E '(step|batch|tile),' "$OUT/compare.log" | tail -n 40
cp "$RUN/out/results.json" "$RUN/out/accuracy.png" "$OUT/" 2>/dev/null || echo "not finished: its state comes back"
tar -C "$DATA" --exclude 'runs/paper/cache/xla' --exclude 'runs/paper/roberta-base-size' -cf - runs/paper \
  | split -b 15m -d - "$OUT/paper.tar.part-"
ls -l "$OUT"
