#!/usr/bin/env bash
# Carry unfinished experiment runs from one session to the next. A session's machine keeps nothing that
# is not committed, and runs/ is git-ignored, so a run longer than a session is kept in git between
# sessions: its cells folder (checkpoints of constant size, see `Pretrainer(keep_losses=False)`, the best
# state and the validation curve of early stopping) under benchmarks/unfinished/NAME/, with the command
# that resumes it.
#
#   bash scripts/carry_runs.sh save runs/NAME 'python -m experiments.icl_scaling ... --out runs/NAME'
#       pause the processes writing runs/NAME, copy its cells/ to benchmarks/unfinished/NAME/ (with the
#       command), resume them; then commit benchmarks/unfinished/NAME
#   bash scripts/carry_runs.sh restore
#       copy every benchmarks/unfinished/NAME/cells back to runs/NAME/cells and print the commands
#   bash scripts/carry_runs.sh drop NAME
#       remove NAME's carried state once the run has finished and its results are committed
set -euo pipefail
cd "$(dirname "$0")/.."
carried=benchmarks/unfinished
case "${1:-}" in
  save)
    [ $# -eq 3 ] || { echo "usage: $0 save runs/NAME 'COMMAND'"; exit 2; }
    run=${2%/}; name=$(basename "$run")
    compgen -G "$run/cells/*" > /dev/null || { echo "$run/cells holds nothing: nothing to carry"; exit 2; }
    writers="^[^ ]*python[0-9.]* .*--out $run( |$)"  # the run's python only: never this script, whose arguments match too
    trap 'pkill -CONT -f -- "$writers" || true' EXIT  # resumed whatever happens below
    pkill -STOP -f -- "$writers" || true  # a consistent snapshot: as if the run had stopped here
    rm -rf "$carried/$name" && mkdir -p "$carried/$name"
    cp -p "$run"/cells/* "$carried/$name/"
    pkill -CONT -f -- "$writers" || true
    printf '%s\n' "$3" > "$carried/$name/command"
    echo "carried $run: $(ls "$carried/$name" | wc -l) files, $(du -sh "$carried/$name" | cut -f1); commit $carried/$name"
    ;;
  restore)
    for dir in "$carried"/*/; do
      [ -f "$dir/command" ] || continue
      name=$(basename "$dir")
      mkdir -p "runs/$name/cells"
      find "$dir" -maxdepth 1 -type f ! -name command -exec cp -pu {} "runs/$name/cells/" \;  # never over a newer file
      echo "runs/$name restored; resume with: $(cat "$dir/command")"
    done
    ;;
  drop)
    [ $# -eq 2 ] || { echo "usage: $0 drop NAME"; exit 2; }
    rm -rf "${carried:?}/$2" && echo "dropped $carried/$2"
    ;;
  *)
    echo "usage: $0 save runs/NAME 'COMMAND' | restore | drop NAME"; exit 2
    ;;
esac
