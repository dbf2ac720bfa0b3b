"""Fine-tuning a learning-rate grid one run after another, or all at once (``finetune.train(together=True)``:
the parameters and optimizer states stacked, the step vmapped).

    python benchmarks/finetune.py [--models tiny,miniberta-small] [--lrs 1e-4,1e-3,1e-2] [--steps 100]
        [--out benchmarks/results/finetune.json]

The offline SST-2 sample, 16-shot (32 train, 32 dev examples), the prompted classifier; SGD on the
full batch and Adam one example per step (each optimizer in its kernel's regime). For each: seconds
for the whole grid with compilation (a fresh process compiles once per mode: the sequential runs share
one program, the stacked runs another), then again with the programs compiled, and the largest
difference between the two modes' selected parameters. The JSON is written after every row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def grid(model: str, optimizer: str, lrs: tuple[float, ...], steps: int) -> dict:
    """One row: both modes' wall seconds, cold and warm, and how far apart their results are."""
    import jax
    import numpy as np

    from ntk_lab import finetune
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    task = get_task("sst2")
    loaded = load_masked_lm(model)
    train, test = load_task_data(task, "sample")
    split = kshot_split(train, test, 2, 16, 13)
    enc = [encode(task, part, loaded.tokenizer, 64) for part in (split.train, split.dev)]
    (x_train, x_dev), (y_train, y_dev) = [inputs(e) for e in enc], [e["labels"] for e in enc]
    f = PromptedClassifier.for_task(loaded, task)
    batch_size = finetune.REGIME_BATCH_SIZE[optimizer]
    row = {"model": model, "optimizer": optimizer, "lrs": list(lrs), "steps": steps, "batch_size": batch_size or len(y_train)}
    results = {}
    for together in (False, True):
        name = "together" if together else "sequential"
        for attempt in ("cold", "warm"):
            start = time.perf_counter()
            results[name] = finetune.train(f, loaded.params, x_train, y_train, x_dev, y_dev, optimizer=optimizer, lrs=lrs,
                                           steps=steps, eval_every=max(1, steps // 4), batch_size=batch_size,
                                           together=together, desc=f"{model} {optimizer} {name}")
            jax.block_until_ready(jax.tree_util.tree_leaves(results[name].params))
            row[f"{name}_{attempt}_s"] = time.perf_counter() - start
    a, b = (jax.tree_util.tree_leaves(results[m].params) for m in ("sequential", "together"))
    row["max_abs_difference"] = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))
    row["same_selection"] = (results["sequential"].lr, results["sequential"].step) == (results["together"].lr,
                                                                                         results["together"].step)
    row["warm_speedup"] = row["sequential_warm_s"] / row["together_warm_s"]
    return row


def main() -> None:
    p = parser("python benchmarks/finetune.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--models", default="tiny,miniberta-small", help="models, comma-separated")
    p.add_argument("--optimizers", default="sgd,adam", help="optimizers, comma-separated")
    p.add_argument("--lrs", default="1e-4,1e-3,1e-2", help="the learning-rate grid")
    p.add_argument("--steps", type=int, default=100, help="steps per learning rate")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune.json"))
    args = p.parse_args()
    import jax

    from ntk_lab.provenance import provenance

    lrs = tuple(float(v) for v in args.lrs.split(","))
    out = {**provenance("python benchmarks/finetune.py", None), "backend": jax.default_backend(), "rows": []}
    print(f"{'model':<16}{'optimizer':<10}{'sequential cold/warm s':>24}{'together cold/warm s':>22}{'warm x':>8}"
          f"{'max |Δθ|':>11}{'same pick':>11}")
    for model in args.models.split(","):
        for optimizer in args.optimizers.split(","):
            row = grid(model, optimizer, lrs, args.steps)
            out["rows"].append(row)
            Path(args.out).write_text(json.dumps(out, indent=1))
            print(f"{model:<16}{optimizer:<10}{row['sequential_cold_s']:>12.1f}/{row['sequential_warm_s']:<11.1f}"
                  f"{row['together_cold_s']:>10.1f}/{row['together_warm_s']:<11.1f}{row['warm_speedup']:>8.2f}"
                  f"{row['max_abs_difference']:>11.1e}{str(row['same_selection']):>11}", flush=True)


if __name__ == "__main__":
    main()
