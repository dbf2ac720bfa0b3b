"""LoRA's kernel at initialization against the kernel of the matrices it adapts, as the rank grows.

    python -m experiments.lora_rank [--model tiny] [--ranks 1,2,4,8,16,32,64,128] [--seeds 8] [--out runs/lora-rank]

At B = 0 only B has a gradient, ``∂f/∂B = Aᵀ ∂f/∂W``, so ``K_LoRA = <Aᵀ G, Aᵀ G'>`` with ``A ~ N(0, 1/R)``
is an unbiased random projection of ``K_qv = <G, G'>`` (the kernel of the query and value matrices),
with relative error ``O(R^{-1/2})``. This measures the mean relative Frobenius error over seeds of A
for each rank on SST-2 prompts, fits the log-log slope (predicted: -1/2) and writes
``OUT/lora_rank.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments import report


def sweep(model_name: str = "tiny", examples: int = 8, ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128),
          seeds: int = 8) -> dict[str, Any]:
    """Mean and spread over ``seeds`` draws of A of ``‖K_LoRA - K_qv‖_F / ‖K_qv‖_F`` at each rank, and the slope."""
    from ntk_lab import kernels, subsets
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, load_task_data

    model = load_masked_lm(model_name)
    task = get_task("sst2")
    train, _ = load_task_data(task, "sample")
    enc = encode(task, train[:examples], model.tokenizer, 64)
    x = inputs(enc)
    f = PromptedClassifier.for_task(model, task)
    qv = lambda path: len(path) > 1 and path[-2] in ("query", "value") and path[-1] == "kernel"
    target = np.asarray(kernels.flatten_kernel(kernels.entk_fn(f, param_filter=qv)(model.params, x)))
    errors = []
    for r in ranks:
        g = subsets.SubsetClassifier(f, subsets.Subset("lora", rank=r))
        kernel = kernels.entk_fn(g, param_filter=g.param_filter)
        per_seed = []
        for seed in range(seeds):
            delta = subsets.Subset("lora", rank=r, seed=seed).init(model.params)
            k = np.asarray(kernels.flatten_kernel(kernel({"frozen": model.params, "delta": delta}, x)))
            per_seed.append(np.linalg.norm(k - target) / np.linalg.norm(target))
        errors.append((float(np.mean(per_seed)), float(np.std(per_seed))))
    means = [e[0] for e in errors]
    return {"ranks": ranks, "error_mean": means, "error_std": [e[1] for e in errors],
            "slope": float(np.polyfit(np.log(ranks), np.log(means), 1)[0]), "predicted_slope": -0.5,
            "config": {"model": model_name, "examples": examples, "seeds": seeds}}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f"rank {r}: ‖K_LoRA - K_qv‖ / ‖K_qv‖", f"{m:.4f} ± {s:.4f}", "∝ R^-1/2")
            for r, m, s in zip(result["ranks"], result["error_mean"], result["error_std"])] + [
            ("log-log slope against the rank", f"{result['slope']:.3f}", "-0.5")]


def figure(result: dict[str, Any], ax: Any = None) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6)) if ax is None else (ax.figure, ax)
    ranks, means = np.asarray(result["ranks"]), np.asarray(result["error_mean"])
    ax.errorbar(ranks, means, yerr=result["error_std"], fmt="o-", label=f"measured (slope {result['slope']:.2f})")
    ax.plot(ranks, means[0] * (ranks / ranks[0]) ** -0.5, "k--", label="R^-1/2")
    ax.set(xscale="log", yscale="log", xlabel="LoRA rank R", ylabel="‖K_LoRA - K_qv‖ / ‖K_qv‖",
           title=f"LoRA kernel at B = 0, {result['config']['model']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("lora_rank", __doc__,
               {"model": "tiny", "examples": 8, "ranks": "1,2,4,8,16,32,64,128", "seeds": 8, "out": "runs/lora-rank"},
               lambda a: sweep(a.model, a.examples, [int(r) for r in a.ranks.split(",")], a.seeds), rows, figure)


if __name__ == "__main__":
    main()
