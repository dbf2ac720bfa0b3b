"""LoRA's kernel at initialization against the kernel of the matrices it adapts, as the rank grows.

    python experiments/lora_rank.py [--model tiny] [--ranks 1,2,4,8,16,32,64,128] [--seeds 8] [--out runs/lora-rank]

At B = 0 only B has a gradient, ``∂f/∂B = Aᵀ ∂f/∂W``, so ``K_LoRA = <Aᵀ G, Aᵀ G'>`` with ``A ~ N(0, 1/R)``
is an unbiased random projection of ``K_qv = <G, G'>`` (the kernel of the query and value matrices),
with relative error ``O(R^{-1/2})``. This measures the mean relative Frobenius error over seeds of A
for each rank on SST-2 prompts, fits the log-log slope (predicted: -1/2) and writes
``OUT/lora_rank.json`` and ``OUT/lora_rank.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--ranks", default="1,2,4,8,16,32,64,128")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--out", default="runs/lora-rank")
    args = p.parse_args()

    from ntk_lab import kernels, subsets
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode
    from ntk_lab.tasks import get_task, load_task_data

    model = load_masked_lm(args.model)
    task = get_task("sst2")
    train, _ = load_task_data(task, "sample")
    enc = encode(task, train[: args.examples], model.tokenizer, 64)
    x = {k: enc[k] for k in ("input_ids", "attention_mask", "mask_pos")}
    f = PromptedClassifier.for_task(model, task)
    qv = lambda path: len(path) > 1 and path[-2] in ("query", "value") and path[-1] == "kernel"
    target = np.asarray(kernels.flatten_kernel(kernels.entk_fn(f, param_filter=qv)(model.params, x)))
    ranks = [int(r) for r in args.ranks.split(",")]
    errors = []
    for r in ranks:
        g = subsets.SubsetClassifier(f, subsets.Subset("lora", rank=r))
        kernel = kernels.entk_fn(g, param_filter=g.param_filter)
        per_seed = []
        for seed in range(args.seeds):
            delta = subsets.Subset("lora", rank=r, seed=seed).init(model.params)
            k = np.asarray(kernels.flatten_kernel(kernel({"frozen": model.params, "delta": delta}, x)))
            per_seed.append(np.linalg.norm(k - target) / np.linalg.norm(target))
        errors.append((float(np.mean(per_seed)), float(np.std(per_seed))))
        print(f"rank {r:>4}: relative error {errors[-1][0]:.4f} ± {errors[-1][1]:.4f}", flush=True)
    slope = float(np.polyfit(np.log(ranks), np.log([e[0] for e in errors]), 1)[0])
    print(f"log-log slope {slope:.3f} (predicted -0.5)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lora_rank.json").write_text(json.dumps({"ranks": ranks, "error_mean": [e[0] for e in errors],
                                                     "error_std": [e[1] for e in errors], "slope": slope,
                                                     "predicted_slope": -0.5, "config": vars(args)}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    means = np.array([e[0] for e in errors])
    ax.errorbar(ranks, means, yerr=[e[1] for e in errors], fmt="o-", label=f"measured (slope {slope:.2f})")
    ax.loglog(ranks, means[0] * (np.asarray(ranks) / ranks[0]) ** -0.5, "k--", label="R^-1/2")
    ax.set(xscale="log", yscale="log", xlabel="LoRA rank R", ylabel="‖K_LoRA - K_qv‖ / ‖K_qv‖",
           title=f"LoRA kernel at B = 0, {args.model}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "lora_rank.png", dpi=120)
    print(f"wrote {out / 'lora_rank.json'}, lora_rank.png")


if __name__ == "__main__":
    main()
