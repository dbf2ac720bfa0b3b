"""Task diversity (Raventós et al. 2023): a transformer pretrained on a pool of M linear-regression
tasks follows the pool's Bayes predictor while M is small and ridge once M passes a threshold M*.

    python -m experiments.task_diversity [--pools 2,8,32,...] [--seeds 0,1] [--steps 2000] [--out DIR]

For each pool size M and training seed s: M tasks ``w_m ~ N(0, I_d)`` drawn once (stream
``(s, "concepts")``), a transformer pretrained with squared loss on prompts of those tasks, then
tested on fresh prompts whose tasks are drawn from the Gaussian itself (tasks it never saw). Two
Bayes predictors are the references, both closed forms (``icl_bayes.bma``):

- the pool's BMA, the posterior mean under the uniform prior on the M tasks (Raventós et al.'s
  dMMSE), ``finite_bma``;
- ridge, the posterior mean under the Gaussian prior the tasks were drawn from, ``gaussian_bma``.

The distance of predictor a to b is ``E (ŷ_a - ŷ_b)²`` over test prompts and positions t = 1..T.
The pool's BMA itself tends to ridge as M grows (its prior tends to the Gaussian), so the distance
between the two references is reported too: where it is small, "follows the pool" and "follows
ridge" cannot be told apart.

The crossover M* is where ``r(M) = log(d(tf, pool BMA) / d(tf, ridge))`` first changes sign from
negative to non-negative along the grid, interpolated linearly in ``log M``; below the grid when
``r >= 0`` at the smallest pool, above it when ``r < 0`` everywhere. Its 95% interval is the
percentile bootstrap that resamples training seeds and test prompts together.

Every trained cell is saved in ``OUT/cells/`` (its distances per test prompt, with the settings that
made it) and the running one is checkpointed, so an interrupted sweep resumes where it stopped.
Writes ``OUT/task_diversity.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from experiments import report, sweeps
from icl_bayes import bma
from icl_bayes.model import (
    FinitePrior,
    GaussianPrior,
    InvalidArgument,
    LinearICL,
    Prompts,
    stream,
)
from icl_bayes.pretrain import Pretrainer

MEASURED = ("to_pool", "to_ridge", "mse", "pool_bma_to_ridge", "pool_bma_mse")

DEFAULTS: dict[str, Any] = {
    "d": 8, "T": 16, "noise": 0.5, "pools": "2,8,32,128,512,2048,8192,16384", "seeds": "0,1",
    "steps": 2000, "batch": 64, "width": 32, "depth": 2, "heads": 4, "lr": 2e-3, "trials": 2000,
    "bootstrap": 1000, "seed": 0, "out": "runs/task-diversity",
}


def per_prompt_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[n]``: the mean over positions t = 1..T of ``(a - b)²`` for predictions ``[n, T+1]``."""
    return np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64))[:, 1:] ** 2, axis=1)


def crossing(log_pools: np.ndarray, to_pool: np.ndarray, to_ridge: np.ndarray) -> float:
    """``log M*`` from the distances ``[k]`` at ``log_pools [k]`` (increasing): the first sign change of
    ``r = log(to_pool / to_ridge)`` from negative to non-negative, interpolated linearly in ``log M``;
    ``-inf`` if ``r >= 0`` at the first pool, ``inf`` if ``r < 0`` at every pool."""
    r = np.log(np.asarray(to_pool, np.float64) / np.asarray(to_ridge, np.float64))
    at = np.flatnonzero(r >= 0)
    if len(at) == 0:
        return float("inf")
    j = int(at[0])
    if j == 0:
        return float("-inf")
    x0, x1 = log_pools[j - 1], log_pools[j]
    return float(x0 + (0.0 - r[j - 1]) * (x1 - x0) / (r[j] - r[j - 1]))


def crossover(pools: list[int], to_pool: np.ndarray, to_ridge: np.ndarray, resamples: int,
              seed: int = 0) -> dict[str, Any]:
    """M* and its 95% percentile-bootstrap interval from per-prompt distances ``[seeds, pools, prompts]``
    (``sweeps.bootstrap``: seeds and test prompts resampled together, the same prompts for every pool).
    Bounds outside the grid are ``None`` with ``below_grid`` / ``above_grid``, the share of resamples
    whose crossing fell there."""
    log_pools = np.log2(np.asarray(pools, np.float64))
    estimate = crossing(log_pools, to_pool.mean(axis=(0, 2)), to_ridge.mean(axis=(0, 2)))
    draws = np.asarray(sweeps.bootstrap(lambda m: crossing(log_pools, m["to_pool"], m["to_ridge"]),
                                        {"to_pool": to_pool, "to_ridge": to_ridge}, resamples, seed))
    lo, hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    finite = lambda v: float(2.0**v) if np.isfinite(v) else None
    return {"M_star": finite(estimate), "lo": finite(lo), "hi": finite(hi),
            "estimate_outside_grid": None if np.isfinite(estimate) else ("below" if estimate < 0 else "above"),
            "below_grid": float(np.mean(draws == -np.inf)), "above_grid": float(np.mean(draws == np.inf)),
            "resamples": resamples}


def cell(args: argparse.Namespace, m: int, s: int, test: Prompts, ridge: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    """The per-prompt measurements ``[n]`` (``MEASURED``) of the transformer pretrained on M = ``m`` tasks
    with seed ``s`` and of the pool's BMA (``sweeps.cached_cell``: resumed or read from ``folder``)."""
    settings = {k: getattr(args, k) for k in ("d", "T", "noise", "steps", "batch", "width", "depth", "heads",
                                              "lr", "trials", "seed")} | {"M": m, "training_seed": s}
    prior = FinitePrior.draw(m, args.d, seed=stream(s, "concepts"))

    def compute(checkpoint: Path) -> dict[str, np.ndarray]:
        trainer = Pretrainer(args.width, args.depth, args.heads, args.lr, args.d, args.T, s)
        sweeps.train(trainer, LinearICL(args.d, args.noise, prior), args.T, args.steps, args.batch, s, checkpoint,
                     settings)
        pred = trainer.predict(test.x, test.y)
        pool_bma, _ = bma.finite_bma(test.x, test.y, prior, args.noise)
        return {"to_pool": per_prompt_distance(pred, pool_bma), "to_ridge": per_prompt_distance(pred, ridge),
                "mse": per_prompt_distance(pred, test.y), "pool_bma_to_ridge": per_prompt_distance(pool_bma, ridge),
                "pool_bma_mse": per_prompt_distance(pool_bma, test.y)}

    return sweeps.cached_cell(folder, f"M{m}-seed{s}", settings, compute)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Every (pool size, training seed) cell, the distances and M* (see the module docstring)."""
    pools, seeds = sweeps.parse_ints(args.pools, "pools"), sweeps.parse_ints(args.seeds, "seeds")
    if sorted(set(pools)) != pools or pools[0] < 1:
        raise InvalidArgument(f"--pools must be increasing positive integers, got '{args.pools}'")
    test = LinearICL(args.d, args.noise, GaussianPrior(1.0)).sample(args.trials, args.T, seed=stream(args.seed, "evaluation"))
    ridge, _ = bma.gaussian_bma(test.x, test.y, args.noise, 1.0)
    folder = Path(args.out) / "cells"
    cells = [[cell(args, m, s, test, ridge, folder) for m in pools] for s in seeds]
    stack = sweeps.stack(cells, MEASURED)  # [seeds, pools, n]
    out: dict[str, Any] = {"config": vars(args), "pools": pools, "seeds": seeds,
                           "ridge_mse": float(per_prompt_distance(ridge, test.y).mean()), **sweeps.summarize(stack)}
    out["crossover"] = crossover(pools, stack["to_pool"], stack["to_ridge"], args.bootstrap, args.seed)
    return out


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for i, m in enumerate(result["pools"]):
        out.append((f"M = {m}: distance to the pool's BMA / to ridge",
                    f"{result['to_pool'][i]:.4f} / {result['to_ridge'][i]:.4f}",
                    "pool's BMA closer below M*, ridge above"))
        out.append((f"M = {m}: squared error of transformer / pool's BMA (ridge {result['ridge_mse']:.3f})",
                    f"{result['mse'][i]:.3f} / {result['pool_bma_mse'][i]:.3f}",
                    f"pool's BMA to ridge {result['pool_bma_to_ridge'][i]:.4f}"))
    c = result["crossover"]
    shown = lambda v, side: f"{v:.0f}" if v is not None else f"{side} the grid"
    out.append(("crossover M* [95% bootstrap]",
                f"{shown(c['M_star'], c['estimate_outside_grid'] or '')} [{shown(c['lo'], 'below')}, {shown(c['hi'], 'above')}]",
                "a threshold in task diversity"))
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    pools = np.asarray(result["pools"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, style in [("to_pool", "transformer to the pool's BMA", "o-"), ("to_ridge", "transformer to ridge", "s-"),
                              ("pool_bma_to_ridge", "pool's BMA to ridge", "k--")]:
        line = ax.plot(pools, result[key], style, label=f"{label} (thin: each seed)")[0]
        for seed_values in result[f"{key}_per_seed"]:
            ax.plot(pools, seed_values, style[-1], color=line.get_color(), lw=0.6, alpha=0.5)
    c = result["crossover"]
    if c["M_star"] is not None:
        ax.axvline(c["M_star"], color="0.3", ls=":", label=f"M* = {c['M_star']:.0f}")
        lo, hi = c["lo"] or pools[0], c["hi"] or pools[-1]
        ax.axvspan(lo, hi, color="0.8", alpha=0.4)
    ax.set(xscale="log", yscale="log", xlabel="tasks in the pretraining pool M",
           ylabel="E(ŷ_a - ŷ_b)² on Gaussian tasks", title="which Bayes predictor the transformer follows")
    ax.legend(fontsize=7)
    bx.plot(pools, result["mse"], "o-", label="transformer")
    bx.plot(pools, result["pool_bma_mse"], "s-", label="pool's BMA")
    bx.axhline(result["ridge_mse"], color="k", ls="--", label="ridge (Gaussian BMA)")
    bx.set(xscale="log", xlabel="tasks in the pretraining pool M", ylabel="squared error on y (t = 1..T)",
           title="error on tasks outside the pool")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("task_diversity", __doc__, DEFAULTS, sweep, rows, figure)


if __name__ == "__main__":
    main()
