"""Fine-tuning's compile time, step time and error when the model is computed another way
(``LoadedMaskedLM.variant``; ``compare --scan-layers --ft-precision bfloat16``).

    python benchmarks/ft_variants.py [--size base] [--n 8] [--length 64] [--steps 3]
                                     [--variants float32,bfloat16,scan,bfloat16+scan]
                                     [--out benchmarks/results/ft_variants.json]

For a RoBERTa of ``--size`` (random weights; ``base`` is roberta-base's shape) and its prompted
classifier on ``--n`` SST-2 prompts, full-batch SGD (``finetune.train``, lr 1e-2) runs ``--steps``
steps with the optimizer's gradient taken through each variant: ``float32`` (the reference),
``bfloat16`` (mixed precision: bfloat16 compute, float32 parameters), ``scan`` (the layers as one
``jax.lax.scan``, float32) and both. Each variant is timed twice in one process: cold (compilation
included) and warm (programs compiled), so ``compile_s`` = cold - warm and ``step_s`` = warm / steps
(each includes the dev evaluations at step 0 and at the last step). ``update_rel_err`` is
``‖Δθ - Δθ_float32‖ / ‖Δθ_float32‖`` of the parameters' total change. The JSON is written after
every row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench_common import ROBERTA_SHAPES
from precision import classifier_and_inputs

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"float32": ("float32", False), "bfloat16": ("bfloat16", False), "scan": ("float32", True),
            "bfloat16+scan": ("bfloat16", True)}


def run(args) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ntk_lab import finetune
    from ntk_lab.provenance import provenance

    lm, f, x = classifier_and_inputs(args.size, args.n, args.length)
    y = np.arange(args.n) % 2
    out = {**provenance("python benchmarks/ft_variants.py", None), "backend": jax.default_backend(),
           "devices": [str(d) for d in jax.devices()], "rows": []}
    reference = None
    print(f"{'variant':<16}{'compile s':>11}{'step s':>10}{'update rel err':>16}")
    for name in args.variants.split(","):
        dtype, scan = VARIANTS[name]
        compute = dataclasses.replace(f, model=lm.variant(jnp.dtype(dtype), scan))
        measured = dataclasses.replace(f, model=lm.variant(scan=scan))
        seconds = []
        for _ in ("cold", "warm"):
            start = time.perf_counter()
            result = finetune.train(measured, lm.params, x, y, x, y, optimizer="sgd", lrs=(1e-2,), steps=args.steps,
                                    eval_every=args.steps, keep="last", step_f=compute, desc=name)
            jax.block_until_ready(jax.tree_util.tree_leaves(result.params))
            seconds.append(time.perf_counter() - start)
        moved = np.concatenate([np.ravel(np.asarray(a, np.float64) - np.asarray(b, np.float64)) for a, b in
                                zip(jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(lm.params))])
        reference = moved if reference is None else reference
        row = {"variant": name, "dtype": dtype, "scan": scan, "cold_s": seconds[0], "warm_s": seconds[1],
               "compile_s": seconds[0] - seconds[1], "step_s": seconds[1] / args.steps,
               "update_rel_err": float(np.linalg.norm(moved - reference) / np.linalg.norm(reference))}
        out["rows"].append(row)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"{name:<16}{row['compile_s']:>11.1f}{row['step_s']:>10.3f}{row['update_rel_err']:>16.2e}", flush=True)
    return out


def main() -> None:
    p = parser("python benchmarks/ft_variants.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--size", default="base", choices=tuple(ROBERTA_SHAPES), help="the RoBERTa's shape (random weights)")
    p.add_argument("--n", type=int, default=8, help="train examples (one full batch)")
    p.add_argument("--length", type=int, default=64, help="tokens per example")
    p.add_argument("--steps", type=int, default=3, help="SGD steps")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ft_variants.json"))
    run(p.parse_args())


if __name__ == "__main__":
    main()
