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
#                 (TOKENS=auto: one run sized to the budget from the step rate measured first, so it ends annealed)
# Back here:      cat FILES_AT/medium-1e7.tar.part-* | tar -x -C runs/   (gives runs/medium-1e7/model, pretrain.json)
# Smoke test on a CPU: OUT=/tmp/out CONFIG=tiny TOKENS=2e4 CORPUS=FILE [SHORT_FIRST=16] bash scripts/device_pretrain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
CONFIG="${CONFIG:-medium}"
TOKENS="${TOKENS:-1e6,1e7}"  # or auto: one run, as many tokens as the measured step rate fits in the budget
CORPUS="${CORPUS:-.device-data/imdb-train-unsup.txt.xz}"
EXTRA="${EXTRA:-}"  # more pretrain flags, e.g. "--vocab-size 8192 --batch-size 128"
BUDGET="${BUDGET:-500}"  # seconds of training for all runs; the rest of the 10 minutes exports and packs
SHORT_FIRST="${SHORT_FIRST:-}"  # e.g. 32: SHORT_SHARE of each run's tokens on rows this long first (NAME-short),
SHORT_SHARE="${SHORT_SHARE:-0.7}"  # then the rest at --seq-len 128 from it (--init-from): how miniberta-small-short-rows left the plateau
mkdir -p "$OUT" runs  # runs/ is git-ignored: a fresh machine has none
python - <<'EOF'
import jax
print("jax", jax.__version__, "devices", jax.devices())
EOF
pretrain() {  # NAME TOKENS SECONDS [FLAGS...]: one run, its log in runs/NAME.log
  local name=$1 tokens=$2 seconds=$3
  shift 3
  # shellcheck disable=SC2086
  python -m ntk_lab.pretrain --corpus "$CORPUS" --config "$CONFIG" --tokens "$tokens" --save-dtype float16 \
    --log-every 50 --eval-every 250 --checkpoint-every 1000 --max-seconds "$seconds" --out "runs/$name" "$@" $EXTRA 2>&1 \
    | tee "runs/$name.log" | grep -v '^step' || true
  tail -n 3 "runs/$name.log" || true
}
latest() {  # NAME: the model folder a run left (model, or its last model-stepN), or nothing
  [ -f "runs/$1/model/model.safetensors" ] && { echo model; return; }
  (cd "runs/$1" 2>/dev/null && ls -d model-step* 2>/dev/null | sort -V | tail -n 1)
}
calc() { python -c "print(f'{$1:.6g}')"; }  # EXPRESSION of numbers
rate() {  # SEQ_LEN: tokens/s of the run's step on rows that long (the last line scripts/pretrain_rate.py prints)
  # shellcheck disable=SC2086
  python scripts/pretrain_rate.py --corpus "$CORPUS" --config "$CONFIG" --out runs/rate $EXTRA --seq-len "$1" | tail -n 1
}
time_share="$SHORT_SHARE"  # of the budget, for the short rows' stage
if [ "$TOKENS" = auto ]; then  # seconds per token of each stage, weighted by its share of the tokens
  per_token=$(calc "1 / $(rate 128)")
  if [ -n "$SHORT_FIRST" ]; then
    short=$(calc "$SHORT_SHARE / $(rate "$SHORT_FIRST")")
    per_token=$(calc "$short + (1 - $SHORT_SHARE) * $per_token")
    time_share=$(calc "$short / $per_token")
  fi
  # 80% of what is left after 40 s a stage of data preparation and compiling: evaluations, checkpoints
  TOKENS="$(python -c "print(max(1, round(0.8 * ($BUDGET - $SECONDS - 80) / $per_token / 1e6)))")e6"  # a name with no '+'
  echo "planned: $TOKENS tokens in $((BUDGET - SECONDS)) s (short rows' share of the time $time_share)"
fi
for tokens in ${TOKENS//,/ }; do
  name="$CONFIG-$tokens"
  left=$((BUDGET - SECONDS))
  [ "$left" -gt 30 ] || { echo "$name: skipped (${left} s of the budget left)"; continue; }
  records=("$name/pretrain.json")
  if [ -n "$SHORT_FIRST" ]; then
    pretrain "$name-short" "$(calc "$tokens * $SHORT_SHARE")" "$(calc "int($left * $time_share)")" --seq-len "$SHORT_FIRST"
    short=$(latest "$name-short")
    [ -n "$short" ] || { echo "$name-short: no model"; continue; }
    pretrain "$name" "$(calc "$tokens * (1 - $SHORT_SHARE)")" "$((BUDGET - SECONDS))" --init-from "runs/$name-short/$short"
    records+=("$name-short/pretrain.json")
  else
    pretrain "$name" "$tokens" "$left"
  fi
  model=$(latest "$name")
  [ -n "$model" ] && [ -f "runs/$name/$model/model.safetensors" ] || { echo "$name: no model"; continue; }
  tar -C runs -cf - "$name/$model" "${records[@]}" | split -b 15m -d - "$OUT/$name.tar.part-"
done
ls -l "$OUT"
