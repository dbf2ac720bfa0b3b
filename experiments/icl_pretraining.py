"""The paper's pretraining claims, measured: ICL error = BMA error + pretraining error, and how the
pretraining error behaves.

    python experiments/icl_pretraining.py [--steps 600] [--out runs/icl-experiments]

1. Depth: the approximation error falls exponentially with depth (Zhang et al. 2023). Pretraining
   error ``E(ŷ_tf - ŷ_BMA)²`` for 1, 2, 4 layers on fresh prompts; fitted ``log error = a - b·depth``.
2. Pretraining-set size: the generalization error falls sublinearly with the number of pretraining
   tokens. Error for N fixed prompts, N in {64, 256, 1024, 4096}; fitted log-log slope in (-1, 0).
3. Task pool: pretrained on a finite pool of M concepts, evaluated on Gaussian-prior prompts, the
   transformer follows the finite-pool BMA for small M and ridge (the Gaussian BMA) for large M.
4. Misspecified prompts: a fraction ρ of in-context labels from a wrong mapping; ICL error against ρ
   for BMA and the (clean-pretrained) transformer.

Writes ``OUT/experiments.json`` and ``OUT/pretraining.png``. Every number is measured here; the
fits state the theory's predicted form beside them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from icl_bayes import bma
from icl_bayes.model import FinitePrior, GaussianPrior, LinearICL
from icl_bayes.pretrain import Pretrainer, pretrain
from icl_bayes.rates import loglog_slope


def trained(model: LinearICL, T: int, steps: int, depth: int, seed: int, prompts: int = 0) -> Pretrainer:
    trainer = Pretrainer(width=32, depth=depth, heads=4, lr=2e-3, d=model.d, T=T, seed=seed)
    pool = None
    if prompts:
        fixed = model.sample(prompts, T, seed=seed + 7_777)
        pool = (fixed.x, fixed.y)
    pretrain(trainer, model, T, steps, 64, seed, pool, None, steps)
    return trainer


def gap(trainer: Pretrainer, prompts, reference: np.ndarray) -> float:
    """``E(ŷ_tf - ŷ_ref)²`` over prompts and T >= 1."""
    return float(np.mean((trainer.predict(prompts.x, prompts.y) - reference)[:, 1:] ** 2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=4)
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/icl-experiments")
    args = p.parse_args()
    d, T, sigma = args.d, args.T, args.noise
    gaussian = LinearICL(d, sigma, GaussianPrior(1.0))
    test = gaussian.sample(args.trials, T, seed=args.seed + 1)
    ridge_bma, _ = bma.gaussian_bma(test.x, test.y, sigma, 1.0)
    result: dict = {"config": vars(args)}

    depths = [1, 2, 4]
    errors = [gap(trained(gaussian, T, args.steps, depth, args.seed), test, ridge_bma) for depth in depths]
    rate = -float(np.polyfit(depths, np.log(errors), 1)[0])
    result["depth"] = {"depth": depths, "pretraining_error": errors, "exponential_rate": rate,
                       "prediction": "error ∝ exp(-rate·depth), rate > 0"}
    print(f"depth {depths}: pretraining error {np.round(errors, 4).tolist()}, fitted exp(-{rate:.2f}·depth)", flush=True)

    sizes = [64, 256, 1024, 4096]
    errors = [gap(trained(gaussian, T, args.steps, 2, args.seed, n), test, ridge_bma) for n in sizes]
    slope = loglog_slope(np.asarray(sizes) * (T + 1), np.asarray(errors))
    result["data"] = {"prompts": sizes, "tokens": [n * 2 * (T + 1) for n in sizes], "pretraining_error": errors,
                      "loglog_slope": slope, "prediction": "sublinear decay: -1 < slope < 0"}
    print(f"pretraining prompts {sizes}: error {np.round(errors, 4).tolist()}, log-log slope {slope:.2f}", flush=True)

    pools = {}
    for m in (4, 256):
        prior = FinitePrior.draw(m, d, seed=args.seed + 5)
        trainer = trained(LinearICL(d, sigma, prior), T, args.steps, 2, args.seed)
        finite_bma, _ = bma.finite_bma(test.x, test.y, prior, sigma)
        pools[m] = {"to_finite_bma": gap(trainer, test, finite_bma), "to_ridge": gap(trainer, test, ridge_bma)}
        print(f"pool M={m}: distance to the pool's BMA {pools[m]['to_finite_bma']:.4f}, to ridge {pools[m]['to_ridge']:.4f}",
              flush=True)
    result["task_pool"] = {str(m): v for m, v in pools.items()}

    clean = trained(gaussian, T, args.steps, 2, args.seed)
    rhos = [0.0, 0.1, 0.2, 0.4]
    mis = {"rho": rhos, "bma_mse": [], "transformer_mse": []}
    for rho in rhos:
        prompts = gaussian.sample(args.trials, T, seed=args.seed + 2, misspecified=rho)
        pred, _ = bma.gaussian_bma(prompts.x, prompts.y, sigma, 1.0)
        mis["bma_mse"].append(float(np.mean((pred - prompts.y)[:, T // 2 :] ** 2)))
        mis["transformer_mse"].append(float(np.mean((clean.predict(prompts.x, prompts.y) - prompts.y)[:, T // 2 :] ** 2)))
    result["misspecified"] = mis
    print(f"misspecified ρ {rhos}: BMA {np.round(mis['bma_mse'], 3).tolist()}, "
          f"transformer {np.round(mis['transformer_mse'], 3).tolist()}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiments.json").write_text(json.dumps(result, indent=2))
    _figure(result, out / "pretraining.png")
    print(f"wrote {out / 'experiments.json'}, pretraining.png")


def _figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
