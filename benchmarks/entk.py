"""Benchmark the eNTK implementations: examples/s, Gram-contraction GFLOP/s against the matmul
roofline measured in the same run, and peak memory (each case in its own process).

    python benchmarks/entk.py [--models mlp,tiny,bert-base] [--out benchmarks/results/entk.json]

With ``.nt-env`` present (``bash scripts/nt_env.sh``), neural-tangents' two implementations run on
the MLP in their pinned environment, on the same inputs, for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("jacobian", "ntk_vp", "streamed")
SIZES = {"mlp": (16, 16), "tiny": (16, 16), "bert-base": (4, 4)}  # (n1, n2)


def matmul_roofline(n: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of an n x n matmul, best of ``repeats``."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, a).block_until_ready()
    best = min(_timed(lambda: mm(a, a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(model: str):
    """``(f, params, x1, x2)`` for a benchmark model."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n1, n2 = SIZES[model]
    if model == "mlp":
        from bench_mlp import mlp, setup

        return (mlp, *setup(n1, n2))
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode
    from ntk_lab.tasks import TASKS, load_task_data

    if model == "tiny":
        lm = load_masked_lm("tiny")
    else:  # a BERT-base-size random model from its config, with the tiny BERT tokenizer's ids
        import jax.numpy as jnp
        from transformers import BertConfig

        from ntk_lab.models.checkpoint import LoadedMaskedLM
        from ntk_lab.models.encoder import EncoderConfig, MaskedLM

        tiny = load_masked_lm("tiny-bert")
        config = EncoderConfig.from_hf(BertConfig(vocab_size=30522))
        module = MaskedLM(config)
        ids = jnp.zeros((1, 2), jnp.int32)
        lm = LoadedMaskedLM("bert-base-config", config, None, module.init(jax.random.PRNGKey(0), ids, ids + 1)["params"],
                            tiny.tokenizer, module)
    task = TASKS["sst2"]
    train, _ = load_task_data(task, "sample")
    batch = encode(task, train[: n1 + n2], lm.tokenizer, max_length=64)
    pad = 64 - batch["input_ids"].shape[1]  # sequence length 64, as in the issue
    batch["input_ids"] = np.pad(batch["input_ids"], ((0, 0), (0, pad)), constant_values=lm.tokenizer.pad_token_id)
    batch["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (0, pad)))
    x = {k: jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "mask_pos")}
    take = lambda rows: {k: v[rows] for k, v in x.items()}
    return PromptedClassifier.for_task(lm, task), lm.params, take(slice(0, n1)), take(slice(n1, n1 + n2))


def run_case(model: str, implementation: str) -> dict:
    """Time one (model, implementation): a warm-up call (compile), then the best of two calls."""
    import jax
    import numpy as np

    from ntk_lab.kernels import contract, count_params, entk_fn, per_example_jacobian, restrict

    f, params, x1, x2 = build(model)
    n1, n2 = SIZES[model]
    kernel = entk_fn(f, implementation=implementation, chunk=8)
    compile_s = _timed(lambda: kernel(params, x1, x2).block_until_ready())
    seconds = min(_timed(lambda: kernel(params, x1, x2).block_until_ready()) for _ in range(2))
    record = {"model": model, "implementation": implementation, "n1": n1, "n2": n2,
              "params": count_params(params), "seconds": seconds, "first_call_s": compile_s,
              "examples_per_s": (n1 + n2) / seconds}
    if implementation == "jacobian":  # the Gram contraction alone, on precomputed Jacobians
        g, theta = restrict(f, params, None)
        j1, j2 = per_example_jacobian(g, theta, x1), per_example_jacobian(g, theta, x2)
        gram = jax.jit(contract)
        gram(j1, j2).block_until_ready()
        t = min(_timed(lambda: gram(j1, j2).block_until_ready()) for _ in range(3))
        c = int(np.asarray(jax.eval_shape(lambda: f(params, x1)).shape)[1])
        record["gram_gflops"] = 2 * n1 * c * n2 * c * record["params"] / t / 1e9
    record["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,tiny,bert-base")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "entk.json"))
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case.split(":"))))
        return
    roofline = matmul_roofline()
    rows = []
    for model in args.models.split(","):
        for implementation in IMPLEMENTATIONS:
            out = subprocess.run([sys.executable, __file__, "--case", f"{model}:{implementation}"],
                                 capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                rows.append({"model": model, "implementation": implementation, "error": out.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(_row(rows[-1], roofline), flush=True)
    nt_python = ROOT / ".nt-env" / "bin" / "python"
    if nt_python.exists() and "mlp" in args.models:
        out = subprocess.run([str(nt_python), str(ROOT / "benchmarks" / "entk_nt.py")], capture_output=True, text=True, cwd=ROOT)
        for line in out.stdout.strip().splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
                print(_row(rows[-1], roofline), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"matmul_roofline_gflops": roofline, "cases": rows}, indent=2))
    print(f"matmul roofline {roofline:.0f} GFLOP/s; wrote {args.out}")


def _row(r: dict, roofline: float) -> str:
    if "error" in r:
        return f"{r['model']:<10} {r['implementation']:<22} error: {r['error']}"
    gram = f"{r['gram_gflops']:7.1f} GFLOP/s ({r['gram_gflops'] / roofline:4.0%} of roofline)" if "gram_gflops" in r else ""
    return (f"{r['model']:<10} {r['implementation']:<22} {r['examples_per_s']:9.2f} ex/s  "
            f"peak {r['peak_rss_gib']:5.2f} GiB  {gram}")


if __name__ == "__main__":
    main()
