#!/usr/bin/env bash
# The GPU check of issue 21, in one call of the GPU machine (the `device` tool) of at most 8 minutes:
# the test suite's GPU-relevant files, then the GPU benchmarks, a summary at the end, and every JSON
# and the logs in $OUT. Run it whenever a session changes code the GPU runs; README records the last
# result.
#
# On the device:  run(command="bash scripts/device_check.sh", timeout_s=540)
# Smoke test on a CPU (small model, few tests):
#   OUT=/tmp/check SIZE=small TESTS="tests/test_kernels.py -k precision_policy" bash scripts/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT to the folder whose files come back}"
SIZE="${SIZE:-base}"  # the benchmarks' model: base is roberta-base's shape
TESTS="${TESTS:-tests/test_kernels.py tests/test_theory.py tests/test_solvers.py tests/test_finetune.py tests/test_kernel_store.py tests/test_subsets.py tests/test_models.py tests/test_spectra.py tests/test_variants.py}"
TEST_BUDGET="${TEST_BUDGET:-120}"  # seconds for the tests; the benchmarks get the rest of the 8 minutes
export NTK_LAB_CACHE="${NTK_LAB_CACHE:-/tmp/ntk_lab_cache}"
export JAX_COMPILATION_CACHE_DIR="$NTK_LAB_CACHE/xla"  # the persistent cache: the second run below is warm
mkdir -p "$OUT" "$JAX_COMPILATION_CACHE_DIR"
python3 - <<'EOF' 2>&1 | tee "$OUT/machine.txt"
import jax, platform
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices(), "python", platform.python_version())
EOF
pip_list() { python3 -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|flax|optax|transformers|torch) ' ; }
pip_list | tee -a "$OUT/machine.txt"

# 1. the tests, within TEST_BUDGET seconds (in one process: one GPU)
# shellcheck disable=SC2086
timeout "$TEST_BUDGET" python3 -m pytest -q -p no:cacheprovider $TESTS >"$OUT/tests.log" 2>&1
echo "tests: exit $? ($(tail -n 1 "$OUT/tests.log"))"

# 2. benchmarks: LM-Kernel-FT's torch.func procedure against ours, compilation cold then warm (a new
#    process reading the persistent cache), the paper's 32 x 872 kernel in tiles; the precisions' error
bench() {  # name, seconds, then the command; its JSON is $OUT/name.json, written row by row (a timeout keeps them)
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" python3 "$@" --out "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? (124: stopped at ${seconds} s)"; grep -v '^wrote' "$OUT/$name.log" | tail -n 8
}
# 120 + 170 + 60 + 120 s: 470 s, under the 8 minutes; precision compares the policy's float32 with
# the backend's default (TF32 on an NVIDIA GPU), each compile about a minute at roberta-base size
bench entk_torch_cold 170 benchmarks/entk_torch.py --size "$SIZE" --tiles
bench entk_torch_warm 60 benchmarks/entk_torch.py --size "$SIZE"
bench precision 120 benchmarks/precision.py --size "$SIZE" --precisions float32,default
# 3. what is left of the 8 minutes (bash's SECONDS counts this script's): fine-tuning's variants
#    (bfloat16 mixed precision, scanned layers), compile and step time and their error, row by row
left=$((480 - SECONDS))
if [ "$left" -gt 45 ]; then
  bench ft_variants "$left" benchmarks/ft_variants.py --size "$SIZE" --n 32 --steps 10
else
  echo "ft_variants: skipped (${left} s left of the 8 minutes)"
fi
ls -l "$OUT"
