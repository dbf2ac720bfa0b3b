#!/usr/bin/env bash
# Pretrain MiniBERTas at several scales in one call of the GPU machine (the `device` tool), and send
# each model back through $OUT as a tar split into parts of at most 15 MiB (the tool returns 8 files
# of 16 MiB at most: plan CONFIG x TOKENS to fit). The runs share BUDGET seconds (`--max-seconds`):
# a run that cannot finish in what is left stops, and its weights so far come back as
# NAME/model-stepN (pretrain.json says how many tokens they saw), so a call never ends with nothing.
#
# Here, once: the corpus travels in a git-ignored folder named in `carry`:
#   mkdir -p .device-data && cp ../shared/data/corpus/imdb-train-unsup.txt.xz .device-data/
#   echo /.device-data/ >> .git/info/exclude
# On the device:  run(command="CONFIG=medium TOKENS=1e6,1e7 bash scripts/device_pretrain.sh", carry=[".device-data"])
# Back here:      cat FILES_AT/medium-1e7.tar.part-* | tar -x -C runs/   (gives runs/medium-1e7/model, pretrain.json)
# Smoke test on a CPU: OUT=/tmp/out CONFIG=tiny TOKENS=2e4 CORPUS=FILE bash scripts/device_pretrain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
CONFIG="${CONFIG:-medium}"
TOKENS="${TOKENS:-1e6,1e7}"
CORPUS="${CORPUS:-.device-data/imdb-train-unsup.txt.xz}"
EXTRA="${EXTRA:-}"  # more pretrain flags, e.g. "--vocab-size 8192 --batch-size 128"
BUDGET="${BUDGET:-500}"  # seconds of training for all runs; the rest of the 10 minutes exports and packs
mkdir -p "$OUT"
python - <<'EOF'
import jax
print("jax", jax.__version__, "devices", jax.devices())
EOF
for tokens in ${TOKENS//,/ }; do
  name="$CONFIG-$tokens"
  left=$((BUDGET - SECONDS))
  [ "$left" -gt 30 ] || { echo "$name: skipped (${left} s of the budget left)"; continue; }
  # shellcheck disable=SC2086
  python -m ntk_lab.pretrain --corpus "$CORPUS" --config "$CONFIG" --tokens "$tokens" --save-dtype float16 \
    --log-every 50 --eval-every 250 --checkpoint-every 1000 --max-seconds "$left" --out "runs/$name" $EXTRA 2>&1 \
    | tee "runs/$name.log" | grep -v '^step' || true
  tail -n 3 "runs/$name.log"
  model="model"
  [ -f "runs/$name/$model/model.safetensors" ] || model=$(cd "runs/$name" && ls -d model-step* 2>/dev/null | sort -V | tail -n 1)
  [ -n "$model" ] && [ -f "runs/$name/$model/model.safetensors" ] || { echo "$name: no model"; continue; }
  tar -C runs -cf - "$name/$model" "$name/pretrain.json" | split -b 15m -d - "$OUT/$name.tar.part-"
done
ls -l "$OUT"
