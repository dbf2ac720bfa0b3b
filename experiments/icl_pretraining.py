"""The paper's pretraining claims, measured: ICL error = BMA error + pretraining error, and how the
pretraining error behaves.

    python -m experiments.icl_pretraining [--steps 600] [--out runs/icl-experiments]

1. Depth: the approximation error falls exponentially with depth (Zhang et al. 2023). Pretraining
   error ``E(ŷ_tf - ŷ_BMA)²`` for 1, 2, 4 layers on fresh prompts; fitted ``log error = a - b·depth``.
2. Pretraining-set size: the generalization error falls sublinearly with the number of pretraining
   tokens. Error for N fixed prompts, N in {64, 256, 1024, 4096}; fitted log-log slope in (-1, 0).
3. Task pool: pretrained on a finite pool of M concepts, evaluated on Gaussian-prior prompts, the
   transformer follows the finite-pool BMA for small M and ridge (the Gaussian BMA) for large M.
4. Misspecified prompts: a fraction ρ of in-context labels from a wrong mapping; ICL error against ρ
   for BMA and the (clean-pretrained) transformer.

Writes ``OUT/icl_pretraining.json``, ``.md`` and ``.png``. Every number is measured here; the
fits state the theory's predicted form beside them.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from experiments import report
from icl_bayes import bma
from icl_bayes.model import FinitePrior, GaussianPrior, LinearICL, stream
from icl_bayes.pretrain import Pretrainer, pretrain
from icl_bayes.rates import loglog_slope


def trained(model: LinearICL, T: int, steps: int, depth: int, seed: int, prompts: int = 0,
            loss: str = "mse") -> Pretrainer:
    trainer = Pretrainer(width=32, depth=depth, heads=4, lr=2e-3, d=model.d, T=T, seed=seed, loss=loss)
    pool = None
    if prompts:
        fixed = model.sample(prompts, T, seed=stream(seed, "pool"))
        pool = (fixed.x, fixed.y)
    pretrain(trainer, model, T, steps, 64, seed, pool, None, steps)
    return trainer


def gap(trainer: Pretrainer, prompts, reference: np.ndarray) -> float:
    """``E(ŷ_tf - ŷ_ref)²`` over prompts and T >= 1."""
    return float(np.mean((trainer.predict(prompts.x, prompts.y) - reference)[:, 1:] ** 2))


def depth_sweep(d: int, T: int, sigma: float, steps: int, trials: int, seed: int,
                depths: tuple[int, ...] = (1, 2, 4)) -> dict[str, Any]:
    """Pretraining error against ridge (the Gaussian BMA) for each depth, and the fitted exponential rate."""
    gaussian = LinearICL(d, sigma, GaussianPrior(1.0))
    test = gaussian.sample(trials, T, seed=stream(seed, "evaluation"))
    ridge_bma, _ = bma.gaussian_bma(test.x, test.y, sigma, 1.0)
    errors = [gap(trained(gaussian, T, steps, depth, seed), test, ridge_bma) for depth in depths]
    return {"depth": list(depths), "pretraining_error": errors,
            "exponential_rate": -float(np.polyfit(depths, np.log(errors), 1)[0]),
            "prediction": "error ∝ exp(-rate·depth), rate > 0"}


def data_sweep(d: int, T: int, sigma: float, steps: int, trials: int, seed: int,
               sizes: tuple[int, ...] = (64, 256, 1024, 4096)) -> dict[str, Any]:
    """Pretraining error for N fixed pretraining prompts, and its log-log slope in the number of tokens."""
    gaussian = LinearICL(d, sigma, GaussianPrior(1.0))
    test = gaussian.sample(trials, T, seed=stream(seed, "evaluation"))
    ridge_bma, _ = bma.gaussian_bma(test.x, test.y, sigma, 1.0)
    errors = [gap(trained(gaussian, T, steps, 2, seed, n), test, ridge_bma) for n in sizes]
    tokens = [n * 2 * (T + 1) for n in sizes]
    return {"prompts": list(sizes), "tokens": tokens, "pretraining_error": errors,
            "loglog_slope": loglog_slope(np.asarray(tokens), np.asarray(errors)),
            "prediction": "sublinear decay: -1 < slope < 0"}


def pool_sweep(d: int, T: int, sigma: float, steps: int, trials: int, seed: int,
               pools: tuple[int, ...] = (4, 256)) -> dict[str, dict[str, float]]:
    """Pretrained on M concepts, tested on Gaussian-prior prompts: distance to the pool's BMA and to ridge."""
    test = LinearICL(d, sigma, GaussianPrior(1.0)).sample(trials, T, seed=stream(seed, "evaluation"))
    ridge_bma, _ = bma.gaussian_bma(test.x, test.y, sigma, 1.0)
    out = {}
    for m in pools:
        prior = FinitePrior.draw(m, d, seed=stream(seed, "concepts"))
        trainer = trained(LinearICL(d, sigma, prior), T, steps, 2, seed)
        finite_bma, _ = bma.finite_bma(test.x, test.y, prior, sigma)
        out[str(m)] = {"to_finite_bma": gap(trainer, test, finite_bma), "to_ridge": gap(trainer, test, ridge_bma)}
    return out


def misspecification(d: int, T: int, sigma: float, steps: int, trials: int, seed: int,
                     rhos: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4)) -> dict[str, list[float]]:
    """ICL squared error (second half of the prompt) of BMA and a clean-pretrained transformer against ρ."""
    gaussian = LinearICL(d, sigma, GaussianPrior(1.0))
    clean = trained(gaussian, T, steps, 2, seed)
    out: dict[str, list[float]] = {"rho": list(rhos), "bma_mse": [], "transformer_mse": []}
    for rho in rhos:
        prompts = gaussian.sample(trials, T, seed=stream(seed, "evaluation"), misspecified=rho)
        pred, _ = bma.gaussian_bma(prompts.x, prompts.y, sigma, 1.0)
        out["bma_mse"].append(float(np.mean((pred - prompts.y)[:, T // 2 :] ** 2)))
        out["transformer_mse"].append(float(np.mean((clean.predict(prompts.x, prompts.y) - prompts.y)[:, T // 2 :] ** 2)))
    return out


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    dep, data, mis = result["depth"], result["data"], result["misspecified"]
    out = [(f"pretraining error, depth {k}", f"{e:.4f}", "falls exponentially with depth")
           for k, e in zip(dep["depth"], dep["pretraining_error"])]
    out.append(("fitted rate b in exp(-b·depth)", f"{dep['exponential_rate']:.3f}", "> 0"))
    out += [(f"pretraining error, {n} prompts", f"{e:.4f}", "falls sublinearly with tokens")
            for n, e in zip(data["prompts"], data["pretraining_error"])]
    out.append(("log-log slope against pretraining tokens", f"{data['loglog_slope']:.3f}", "in (-1, 0)"))
    for m, v in result["task_pool"].items():
        out.append((f"pool M = {m}: distance to the pool's BMA / to ridge", f"{v['to_finite_bma']:.4f} / {v['to_ridge']:.4f}",
                    "pool's BMA closer for small M, ridge for large M"))
    out += [(f"misspecified ρ = {r}: BMA / transformer squared error", f"{b:.3f} / {t:.3f}", "rises with ρ")
            for r, b, t in zip(mis["rho"], mis["bma_mse"], mis["transformer_mse"])]
    return out


def main() -> None:
    report.cli("icl_pretraining", __doc__,
               {"d": 4, "T": 16, "noise": 0.5, "steps": 600, "trials": 2000, "seed": 0, "out": "runs/icl-experiments"},
               sweeps, rows, figure)


def sweeps(args: argparse.Namespace) -> dict:
    """Every sweep of this module with the command line's common settings."""
    common = (args.d, args.T, args.noise, args.steps, args.trials, args.seed)
    return {"config": vars(args), "depth": depth_sweep(*common), "data": data_sweep(*common),
            "task_pool": pool_sweep(*common), "misspecified": misspecification(*common)}


def figure(result: dict) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    dep = result["depth"]
    axes[0].semilogy(dep["depth"], dep["pretraining_error"], "o-", label="measured")
    fit = np.exp(np.polyval(np.polyfit(dep["depth"], np.log(dep["pretraining_error"]), 1), dep["depth"]))
    axes[0].semilogy(dep["depth"], fit, "k--", label=f"exp(-{dep['exponential_rate']:.2f}·depth)")
    axes[0].set(xlabel="layers", ylabel="E(ŷ_tf - ŷ_BMA)²", title="approximation error vs depth")
    data = result["data"]
    axes[1].loglog(data["tokens"], data["pretraining_error"], "o-", label=f"slope {data['loglog_slope']:.2f}")
    axes[1].set(xlabel="pretraining tokens", ylabel="E(ŷ_tf - ŷ_BMA)²", title="generalization error vs data")
    mis = result["misspecified"]
    axes[2].plot(mis["rho"], mis["bma_mse"], "o-", label="BMA")
    axes[2].plot(mis["rho"], mis["transformer_mse"], "s-", label="transformer")
    axes[2].set(xlabel="misspecified fraction ρ", ylabel="ICL squared error", title="wrong in-context labels")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
