#!/usr/bin/env bash
# Issue 18's experiment on the GPU machine (the `device` tool), in calls of at most 10 minutes that
# resume each other: pretrain the MiniBERTa scales (or take those that came back earlier), run
# experiments.pretraining_scale over them, and send back the results JSON, the figure and the
# comparisons' resumable state (a tar in parts of at most 15 MiB), so the next call continues.
#
# Here, once: the corpus and the data travel in a git-ignored folder named in `carry`:
#   mkdir -p .device-data && cp -r ../shared/data/corpus/imdb-train-unsup.txt.xz ../shared/data/SST-2 \
#     ../shared/data/cr ../shared/data/mpqa ../shared/data/subj .device-data/
#   echo /.device-data/ >> .git/info/exclude
# Checkpoints and state that came back go into .device-data/runs (tar -x the parts there).
# On the device:  run(command="bash scripts/device_scale.sh", carry=[".device-data"], timeout_s=590)
# Back here:      cat FILES_AT/scale.tar.part-* | tar -x -C .device-data/    (checkpoints and state)
#                 cp FILES_AT/pretraining_scale.json benchmarks/results/pretraining_scale_gpu.json
# Smoke test on a CPU:
#   OUT=/tmp/scale DATA=/tmp/data CONFIG=tiny TOKENS=2e4,2e5 SEED2= TASKS=sst2 KS=16 SEEDS=13 \
#     EXTRA="--steps 4 --eval_every 2 --test_cap 16 --lr_sgd 1e-2 --lr_adam 1e-3" bash scripts/device_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
DATA="${DATA:-.device-data}"  # the corpus file, the task folders, and runs/ that came back
CONFIG="${CONFIG:-medium}"  # one architecture for every scale
TOKENS="${TOKENS:-1e6,1e7,1e8}"  # the scales: 100x or more apart end to end
SEED2="${SEED2-1e7}"  # the scale pretrained again with another seed (set empty: none)
TASKS="${TASKS:-sst2,cr,mpqa,subj}"
KS="${KS:-16}"
SEEDS="${SEEDS:-13,21,42,87,100}"
EXTRA="${EXTRA:-}"  # more experiment flags
PRETRAIN_BUDGET="${PRETRAIN_BUDGET:-300}"  # seconds of pretraining in this call, all scales together
CORPUS="$DATA/imdb-train-unsup.txt.xz"
RUNS="$DATA/runs"
mkdir -p "$OUT" "$RUNS"
export NTK_LAB_CACHE="$RUNS/cache"  # kernels computed earlier come back with the state
python3 -c "import jax; print('jax', jax.__version__, 'devices', jax.devices())"

pretrain() {  # tokens, seed: a MiniBERTa of CONFIG in $RUNS/CONFIG-tokens[-sSEED] (skipped when done), within
  # what is left of PRETRAIN_BUDGET; succeeds only when the model is complete
  local name="$CONFIG-$1${2:+-s$2}" left=$((PRETRAIN_BUDGET - SECONDS))
  [ -f "$RUNS/$name/model/model.safetensors" ] && return 0
  if [ "$left" -gt 30 ]; then
    python3 -m ntk_lab.pretrain --corpus "$CORPUS" --config "$CONFIG" --tokens "$1" --vocab-size 8192 \
      ${2:+--seed "$2"} --save-dtype float16 --log-every 100 --eval-every 500 --checkpoint-every 500 \
      --max-seconds "$left" --out "$RUNS/$name" 2>&1 | grep -v '^step' || true
  fi
  [ -f "$RUNS/$name/model/model.safetensors" ] || { echo "$name: not finished in the pretraining budget, left out"; return 1; }
}
checkpoints="random"
for tokens in ${TOKENS//,/ }; do
  pretrain "$tokens" "" && checkpoints="$checkpoints,$CONFIG-$tokens=$RUNS/$CONFIG-$tokens/model@$tokens"
done
if [ -n "$SEED2" ]; then
  pretrain "$SEED2" 1 && checkpoints="$checkpoints,$CONFIG-$SEED2-s1=$RUNS/$CONFIG-$SEED2-s1/model@$SEED2"
fi

# the comparisons resume from $RUNS/scale (their records) and $NTK_LAB_CACHE (kernel tiles)
# shellcheck disable=SC2086
python3 -m experiments.pretraining_scale --checkpoints "$checkpoints" --tasks "$TASKS" --ks "$KS" --seeds "$SEEDS" \
  --data_dir "$DATA" --ft_together 1 --out "$RUNS/scale" $EXTRA 2>&1 | tee "$OUT/pretraining_scale.log" | grep -E -v '^(step|  )' || true
cp "$RUNS/scale/pretraining_scale.json" "$RUNS/scale/pretraining_scale.png" "$OUT/" 2>/dev/null || echo "the experiment did not finish: its state comes back"
tar -C "$DATA" --exclude 'runs/cache/xla' --exclude '*.msgpack' --exclude 'rows.npy' -cf - runs | split -b 15m -d - "$OUT/scale.tar.part-"
ls -l "$OUT"
