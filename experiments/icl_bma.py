"""In-context learning as Bayesian model averaging (Zhang, Zhang, Yang and Wang 2023), measured.

    python -m experiments.icl_bma [--d 4] [--T 32] [--steps 2000] [--out runs/icl-bma]

1. Attention that is BMA: the finite-prior posterior mean as one softmax attention layer whose keys
   and values are the concepts (``icl_bayes.attention.concept_attention``) equals BMA (to float64
   rounding; claim: < 1e-6).
2. Attention over the prompt's own tokens (keys x_s, values y_s, query x_t) tends to the oracle
   ``<w, x_t>``, hence to BMA, as T grows: the gap E(ŷ_attn - ŷ_BMA)² against T.
3. A small transformer pretrained on Gaussian-prior ICL prompts, against BMA (ridge) and least squares
   at every T: pretraining brings it towards BMA, far below least squares for short prompts.
4. Task pool: pretrained on a finite pool of M concepts, the transformer follows that pool's BMA for
   small M and ridge for large M (``experiments.icl_pretraining.pool_sweep``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments import report
from experiments.icl_pretraining import pool_sweep, trained
from icl_bayes import attention, bma
from icl_bayes.model import FinitePrior, GaussianPrior, LinearICL, stream
from icl_bayes.rates import loglog_slope, mean_interval


def attention_is_bma(d: int, T: int, m: int, sigma: float, trials: int, seed: int) -> dict[str, float]:
    """``max |concept attention - finite BMA|`` over prompts and T, absolute and relative to the predictions' scale."""
    prior = FinitePrior.draw(m, d, seed=stream(seed, "concepts"))
    prompts = LinearICL(d, sigma, prior).sample(trials, T, seed=stream(seed, "evaluation"))
    exact, _ = bma.finite_bma(prompts.x, prompts.y, prior, sigma)
    built = attention.concept_attention(prompts.x, prompts.y, prior, sigma)
    gap = float(np.abs(built - exact).max())
    return {"max_abs_difference": gap, "relative": gap / float(np.abs(exact).max())}


def prompt_attention_gap(d: int, T: int, sigma: float, trials: int, seed: int) -> dict[str, Any]:
    """``E(ŷ_attn - ŷ_BMA)²`` at every T (β = √d, Σ = I) with its 95% interval, and its log-log slope."""
    model = LinearICL(d, sigma, GaussianPrior(1.0))
    prompts = model.sample(trials, T, seed=stream(seed, "evaluation"))
    reference, _ = bma.gaussian_bma(prompts.x, prompts.y, sigma, 1.0)
    built = attention.prompt_attention(prompts.x, prompts.y, float(np.sqrt(d)))
    mean, lo, hi = mean_interval((built - reference) ** 2)
    t = np.arange(1, T + 1)
    return {"T": t.tolist(), "gap": mean[1:].tolist(), "lo": lo[1:].tolist(), "hi": hi[1:].tolist(),
            "slope": loglog_slope(t[T // 4 :], mean[1:][T // 4 :])}


def transformer_vs_bma(d: int, T: int, sigma: float, steps: int, trials: int, seed: int) -> dict[str, Any]:
    """Squared error at every T of BMA, least squares, the oracle and the transformer before and after pretraining."""
    model = LinearICL(d, sigma, GaussianPrior(1.0))
    test = model.sample(trials, T, seed=stream(seed, "evaluation"))
    reference, _ = bma.gaussian_bma(test.x, test.y, sigma, 1.0)
    preds = {"bma": reference, "least_squares": bma.least_squares(test.x, test.y),
             "oracle": bma.oracle(test.x, test.w), "transformer_at_init": trained(model, T, 0, 2, seed).predict(test.x, test.y),
             "transformer": trained(model, T, steps, 2, seed).predict(test.x, test.y)}
    mse = {name: np.mean((p - test.y) ** 2, axis=0)[1:].tolist() for name, p in preds.items()}
    to_bma = {name: float(np.mean((p - reference)[:, 1:] ** 2)) for name, p in preds.items() if name != "bma"}
    return {"T": list(range(1, T + 1)), "mse": mse, "distance_to_bma": to_bma, "steps": steps}


def run(d: int = 4, T: int = 16, sigma: float = 0.5, steps: int = 300, trials: int = 1000, seed: int = 0,
        attention_T: int = 256, pool_steps: int = 300) -> dict[str, Any]:
    return {"attention_is_bma": attention_is_bma(d, T, 8, sigma, trials, seed),
            "prompt_attention": prompt_attention_gap(d, attention_T, sigma, min(trials, 1000), seed),  # [n, T, T] scores
            "transformer": transformer_vs_bma(d, T, sigma, steps, trials, seed),
            "task_pool": pool_sweep(d, T, sigma, pool_steps, trials, seed),
            "config": {"d": d, "T": T, "noise": sigma, "steps": steps, "trials": trials, "seed": seed,
                       "attention_T": attention_T, "pool_steps": pool_steps}}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    a, p, tf = result["attention_is_bma"], result["prompt_attention"], result["transformer"]
    out = [("concept attention vs finite-prior BMA, max |difference|", f"{a['max_abs_difference']:.1e}", "0 (< 1e-6)"),
           (f"prompt attention: E(ŷ_attn - ŷ_BMA)² at T = 1 / {p['T'][-1]}", f"{p['gap'][0]:.4f} / {p['gap'][-1]:.4f}",
            "-> 0 as T grows"),
           ("prompt attention gap: log-log slope over the upper 3/4 of T", f"{p['slope']:.3f}", "< 0")]
    out += [(f"E(ŷ - ŷ_BMA)² of {name}", f"{v:.4f}", "0 for BMA itself") for name, v in tf["distance_to_bma"].items()]
    for m, v in result["task_pool"].items():
        out.append((f"pool M = {m}: distance to the pool's BMA / to ridge", f"{v['to_finite_bma']:.4f} / {v['to_ridge']:.4f}",
                    "pool's BMA closer for small M, ridge for large M"))
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    p = result["prompt_attention"]
    axes[0].loglog(p["T"], p["gap"], label=f"measured, slope {p['slope']:.2f}")
    axes[0].fill_between(p["T"], p["lo"], p["hi"], alpha=0.3)
    axes[0].set(xlabel="T", ylabel="E(ŷ_attn - ŷ_BMA)²", title="attention over the prompt → BMA")
    axes[0].legend(fontsize=8)
    tf = result["transformer"]
    for name, mse in tf["mse"].items():
        axes[1].plot(tf["T"], mse, "--" if name == "transformer_at_init" else "-", label=name)
    axes[1].set(yscale="log", xlabel="T (in-context examples)", ylabel="squared error on the query",
                title=f"pretrained transformer ({tf['steps']} steps) vs BMA")
    axes[1].legend(fontsize=7)
    pool = result["task_pool"]
    ms = list(pool)
    x = np.arange(len(ms))
    axes[2].bar(x - 0.2, [pool[m]["to_finite_bma"] for m in ms], 0.4, label="to the pool's BMA")
    axes[2].bar(x + 0.2, [pool[m]["to_ridge"] for m in ms], 0.4, label="to ridge (Gaussian BMA)")
    axes[2].set_xticks(x, [f"M = {m}" for m in ms])
    axes[2].set(ylabel="E(ŷ_tf - ŷ)²", title="which BMA the transformer follows")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("icl_bma", __doc__,
               {"d": 4, "T": 16, "noise": 0.5, "steps": 2000, "trials": 4000, "seed": 0, "out": "runs/icl-bma"},
               lambda a: run(a.d, a.T, a.noise, a.steps, a.trials, a.seed, 512, a.steps), rows, figure)


if __name__ == "__main__":
    main()
