"""The pretraining error's two terms in Zhang et al. (2023), measured on trained transformers.

    python -m experiments.icl_scaling [--loss nll] [--depths 1,2,4] [--budgets 1024,4096] [--lengths 8,16,32] [--parts depth,data]

The paper bounds the distance between the pretrained network's predictive distribution and the
Bayes (BMA) predictive by an approximation error that falls exponentially with depth plus a
generalization error Õ(1/√(N_p T_p)) in the number N_p and length T_p of the pretraining prompts.
Both are measured against BMA's closed form under the Gaussian prior (``icl_bayes.bma.gaussian_bma``:
predictive ``N(ŷ_BMA, σ²(1 + xᵀPx))``), per test prompt, as the mean over positions t = 1..T of

- ``--loss nll`` (the paper's likelihood pretraining; the network predicts a mean and a variance):
  ``KL(BMA predictive || network predictive)``, the Gaussian closed form ``bma.gaussian_kl``;
- ``--loss mse``: ``(ŷ_network - ŷ_BMA)²``, the excess squared error over BMA.

1. **Depth at matched compute.** Depth L trained for ``layer_steps / L`` steps on fresh prompts
   (no pretraining set, so no generalization error): the same layer-steps for every depth. Fitted
   ``log error = a - b·L``; the approximation term predicts b > 0. The power law ``a - p·log L`` is
   fitted too, and each form's rms residual in log error says which the measured fall follows.
2. **Number and length of prompts at fixed token budgets.** For each budget B (examples seen in
   pretraining, N_p·T_p) and length T_p, a fixed set of N_p = B / T_p prompts of T_p examples, trained
   for ``data_steps`` steps (many epochs). Errors at positions 1..min(lengths), which every network was
   trained on. Fitted ``log error = c - α log(N_p T_p) + β log T_p``; the bound's rate is α = 1/2 and
   it depends on the split only through the product (β = 0).

The bound is about converged, regularized pretraining. Every run's learning rate decays to 0 along a
cosine over its steps (``--schedule cosine``, the default; ``constant`` keeps ``--lr``): at depth 2 and
d = 4 it reached KL 0.078 in 8000 steps, where a constant 2e-3 took 16000 (0.072 after 20000). Every
network is early-stopped (``sweeps.train_early_stopped``): its pretraining loss on ``--validation``
fresh prompts of its own length (a stream no network trains on) is measured ``--evaluations`` times
along the run (equally spaced on fresh prompts; on a fixed pool, which the smallest overfit within a
few hundred steps, in geometric progression from 1/200 of the run), and the state of the lowest is
the one measured. Each cell records that curve, the
step kept (``stopped_at``) and ``late_gain``, how much the held-out loss still fell in the run's
second half (min over the first half minus min over all). Under likelihood pretraining the held-out
loss exceeds BMA's by the KL averaged over the labels, so the late gain is in the units of the
error: small beside it, the run had converged (or stopped early).

``--microbatches m`` splits each step's batch into m equal parts and averages their gradients: the
same step up to float rounding (``icl_bayes.pretrain._programs``), about twice as fast on the CPU at
depth 4 with m = 4; it is not among a cell's settings, so cells made either way are read alike.

Every cell (setting x training seed) is saved and resumed (``experiments.sweeps``); the fits' 95%
intervals are the percentile bootstrap over training seeds and test prompts. ``--parts depth`` runs the
depth sweep alone (``compute_rows`` and ``compute_figure`` set such runs at several ``--layer_steps``
side by side; ``converged_floors`` says which depths' errors stopped falling with compute and fits the
depth law to those floors alone). Writes
``OUT/icl_scaling.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from experiments import report, sweeps
from icl_bayes import bma
from icl_bayes.model import GaussianPrior, InvalidArgument, LinearICL, Prompts, stream
from icl_bayes.pretrain import LOSSES, Pretrainer

SCHEDULES = ("constant", "cosine")
PARTS = ("depth", "data")
FIRST_EVALUATION = 200  # a fixed pool's run is first evaluated after 1/200 of its steps
DEFAULTS: dict[str, Any] = {
    "d": 4, "T": 16, "noise": 0.5, "loss": "nll", "width": 32, "heads": 4, "lr": 2e-3, "batch": 64, "microbatches": 1,
    "depths": "1,2,4", "layer_steps": 32000, "budgets": "4096,16384,65536", "lengths": "8,16,32", "data_depth": 2,
    "data_steps": 8000, "schedule": "cosine", "seeds": "0,1", "trials": 2000, "validation": 500, "evaluations": 20,
    "bootstrap": 1000, "seed": 0, "parts": "depth,data", "out": "runs/icl-scaling",
}


def distance(trainer: Pretrainer, test: Prompts, sigma: float, positions: int) -> dict[str, np.ndarray]:
    """Per test prompt ``[n]``, the mean over t = 1..``positions``: ``error`` (the KL or the squared
    distance to BMA, as the network was trained; see the module docstring) and ``to_bma``, the squared
    distance of the predicted means."""
    x, y = test.x[:, : positions + 1], test.y[:, : positions + 1]
    mean_bma, var_bma = bma.gaussian_bma(x, y, sigma, 1.0)
    mean = trainer.predict(x, y)
    to_bma = np.mean((mean - mean_bma)[:, 1:] ** 2, axis=1)
    if trainer.loss == "mse":
        return {"error": to_bma, "to_bma": to_bma}
    kl = bma.gaussian_kl(mean_bma, var_bma, mean.astype(np.float64), trainer.predictive_variance(x, y).astype(np.float64))
    return {"error": np.mean(kl[:, 1:], axis=1), "to_bma": to_bma}


def linear_fit(features: np.ndarray, log_errors: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``log_errors [k] ≈ features [k, p] @ coef``."""
    return np.linalg.lstsq(features, log_errors, rcond=None)[0]


def depth_features(depths: list[int]) -> np.ndarray:
    """``[k, 2]``: columns 1 and -L, so the coefficients are ``(a, b)`` of ``a - b·L``."""
    return np.stack([np.ones(len(depths)), -np.asarray(depths, np.float64)], axis=1)


def power_features(depths: list[int]) -> np.ndarray:
    """``[k, 2]``: columns 1 and -log L, so the coefficients are ``(a, p)`` of ``a - p·log L``, the power
    law ``e^a L^-p`` that the exponential is told apart from."""
    return np.stack([np.ones(len(depths)), -np.log(np.asarray(depths, np.float64))], axis=1)


def rms_residual(features: np.ndarray, log_errors: np.ndarray) -> float:
    """Root-mean-square residual of the least-squares fit ``log_errors [k] ≈ features [k, p] @ coef``: 0
    when the form holds exactly."""
    return float(np.sqrt(np.mean((features @ linear_fit(features, log_errors) - log_errors) ** 2)))


def slope_interval(features: np.ndarray, log_errors: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """The second coefficient of the least-squares fit ``log_errors [k] ≈ features [k, 2] @ (a, s)`` with
    its standard error and its ``level`` interval from Student's t with k - 2 degrees of freedom:

        se(s)² = RSS / (k - 2) · [(XᵀX)⁻¹]₁₁,   s ± t_{k-2, (1+level)/2} · se(s),

    the ordinary least-squares interval when the points scatter about the line independently with one
    variance. It measures the scatter of the points about the form, not the uncertainty of each point;
    at k = 3 (one degree of freedom) t is 12.7 at 95%. Needs k ≥ 3."""
    from scipy import stats

    k = len(log_errors)
    if k < 3:
        raise InvalidArgument(f"a slope's interval needs at least 3 points, got {k}")
    coef = linear_fit(features, log_errors)
    rss = float(np.sum((features @ coef - log_errors) ** 2))
    se = float(np.sqrt(rss / (k - 2) * np.linalg.inv(features.T @ features)[1, 1]))
    half = float(stats.t.ppf((1 + level) / 2, k - 2)) * se
    return {"estimate": float(coef[1]), "stderr": se, "lo": float(coef[1]) - half, "hi": float(coef[1]) + half}


def data_features(budgets: list[int], lengths: list[int]) -> np.ndarray:
    """``[k, 3]`` for the cells (budget-major): columns 1, -log(N_p T_p), log T_p, so the coefficients are
    ``(c, α, β)``."""
    b, t = (np.asarray(v, np.float64).ravel() for v in np.meshgrid(budgets, lengths, indexing="ij"))
    return np.stack([np.ones_like(b), -np.log(b), np.log(t)], axis=1)


def fit_with_interval(features: np.ndarray, errors: np.ndarray, names: tuple[str, ...], resamples: int,
                      seed: int) -> dict[str, dict[str, float]]:
    """Each coefficient of the log-linear fit to the cell means of ``errors [seeds, cells, prompts]``,
    with its 95% bootstrap interval (``sweeps.bootstrap``)."""
    estimate = linear_fit(features, np.log(errors.mean(axis=(0, 2))))
    draws = np.asarray(sweeps.bootstrap(lambda m: linear_fit(features, np.log(m["error"])), {"error": errors},
                                        resamples, seed))
    lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
    return {name: {"estimate": float(estimate[i]), "lo": float(lo[i]), "hi": float(hi[i])}
            for i, name in enumerate(names)}


def settings_of(args: argparse.Namespace, **cell: int) -> dict[str, Any]:
    keys = ("d", "noise", "loss", "width", "heads", "lr", "schedule", "batch", "trials", "validation", "evaluations",
            "seed")
    return {k: getattr(args, k) for k in keys} | cell


def train_cell(args: argparse.Namespace, model: LinearICL, depth: int, length: int, steps: int, s: int,
               checkpoint: Path, settings: dict[str, Any], test: Prompts, positions: int,
               pool: Prompts | None = None) -> dict[str, np.ndarray]:
    """One network (``depth`` layers, prompts of ``length``, training seed ``s``) early-stopped on held-out
    prompts (module docstring; with a ``pool``, evaluated from step ``steps / FIRST_EVALUATION`` on in
    geometric progression), then its ``distance`` to BMA on ``test`` and its validation curve."""
    held_out = model.sample(args.validation, length, seed=stream(s, "validation", length))
    trainer = Pretrainer(args.width, depth, args.heads, args.lr, args.d, length, s, args.loss,
                         steps if args.schedule == "cosine" else None, args.microbatches, keep_losses=False)
    curve = sweeps.train_early_stopped(trainer, model, length, steps, args.batch, s, checkpoint, settings,
                                       lambda t: t.objective(held_out.x, held_out.y), args.evaluations,
                                       None if pool is None else (pool.x, pool.y),
                                       None if pool is None else steps // FIRST_EVALUATION)
    return distance(trainer, test, args.noise, positions) | curve


def convergence(cells: list[list[dict[str, np.ndarray]]]) -> dict[str, list]:
    """Per seed and cell: ``stopped_at`` (the step kept), ``late_gain`` (min of the held-out loss over the
    run's first half of steps minus its min over all: 0 when the second half found nothing better) and
    the ``validation`` curve with its ``validation_steps``."""
    def late_gain(cell: dict[str, np.ndarray]) -> float:
        steps, curve = cell["validation_steps"], cell["validation"]
        return float(curve[steps <= steps[-1] // 2].min() - curve.min())

    return {"stopped_at": [[int(c["stopped_at"]) for c in row] for row in cells],
            "late_gain": [[late_gain(c) for c in row] for row in cells],
            "validation": [[c["validation"].tolist() for c in row] for row in cells],
            "validation_steps": [[c["validation_steps"].tolist() for c in row] for row in cells]}


def depth_sweep(args: argparse.Namespace, seeds: list[int], folder: Path) -> dict[str, Any]:
    """Part 1: the error of each depth at matched compute, on fresh prompts (module docstring)."""
    depths = sweeps.parse_ints(args.depths, "depths")
    gaussian = LinearICL(args.d, args.noise, GaussianPrior(1.0))
    test = gaussian.sample(args.trials, args.T, seed=stream(args.seed, "evaluation"))
    cells = []
    for s in seeds:
        row = []
        for depth in depths:
            steps = args.layer_steps // depth
            settings = settings_of(args, T=args.T, depth=depth, steps=steps, training_seed=s)

            def compute(checkpoint: Path, depth: int = depth, steps: int = steps, s: int = s,
                        settings: dict[str, Any] = settings) -> dict[str, np.ndarray]:
                return train_cell(args, gaussian, depth, args.T, steps, s, checkpoint, settings, test, args.T)

            row.append(sweeps.cached_cell(folder, f"depth{depth}-seed{s}", settings, compute))
        cells.append(row)
    stack = sweeps.stack(cells, ("error", "to_bma"))
    out: dict[str, Any] = {"depths": depths, "steps": [args.layer_steps // L for L in depths], **sweeps.summarize(stack),
                           **convergence(cells)}
    if len(depths) < 2:  # one depth: nothing to fit
        return out
    out["fit"] = fit_with_interval(depth_features(depths), stack["error"], ("a", "b"), args.bootstrap, args.seed)
    out["power_fit"] = fit_with_interval(power_features(depths), stack["error"], ("a", "p"), args.bootstrap, args.seed)
    log_means = np.log(stack["error"].mean(axis=(0, 2)))
    out["rms_residual"] = {"exponential": rms_residual(depth_features(depths), log_means),
                           "power": rms_residual(power_features(depths), log_means)}
    return out


def data_sweep(args: argparse.Namespace, seeds: list[int], folder: Path) -> dict[str, Any]:
    """Part 2: the error of each (budget, prompt length) at a fixed number of steps (module docstring)."""
    budgets, lengths = sweeps.parse_ints(args.budgets, "budgets"), sweeps.parse_ints(args.lengths, "lengths")
    gaussian = LinearICL(args.d, args.noise, GaussianPrior(1.0))
    positions = min(lengths)
    test = gaussian.sample(args.trials, positions, seed=stream(args.seed, "evaluation"))
    cells = []
    for s in seeds:
        row = []
        for budget in budgets:
            for length in lengths:
                n = budget // length
                settings = settings_of(args, T=length, prompts=n, depth=args.data_depth, steps=args.data_steps,
                                       training_seed=s, first_evaluation=args.data_steps // FIRST_EVALUATION)

                def compute(checkpoint: Path, length: int = length, n: int = n, s: int = s,
                            settings: dict[str, Any] = settings) -> dict[str, np.ndarray]:
                    fixed = gaussian.sample(n, length, seed=stream(s, "pool", length))
                    return train_cell(args, gaussian, args.data_depth, length, args.data_steps, s, checkpoint,
                                      settings, test, positions, fixed)

                row.append(sweeps.cached_cell(folder, f"B{budget}-T{length}-seed{s}", settings, compute))
        cells.append(row)
    stack = sweeps.stack(cells, ("error", "to_bma"))
    out: dict[str, Any] = {"budgets": budgets, "lengths": lengths, "positions": positions,
                           "cells": [{"budget": b, "length": t, "prompts": b // t} for b in budgets for t in lengths],
                           **sweeps.summarize(stack), **convergence(cells)}
    out["fit"] = fit_with_interval(data_features(budgets, lengths), stack["error"], ("c", "alpha", "beta"),
                                   args.bootstrap, args.seed)
    return out


def check(args: argparse.Namespace) -> None:
    """Every setting that could stop the sweep, checked before anything trains (one error line)."""
    if args.loss not in LOSSES:
        raise InvalidArgument(f"--loss must be one of {', '.join(LOSSES)}, got '{args.loss}'")
    if args.schedule not in SCHEDULES:
        raise InvalidArgument(f"--schedule must be one of {', '.join(SCHEDULES)}, got '{args.schedule}'")
    depths = sweeps.parse_ints(args.depths, "depths")
    if min(depths) < 1 or any(args.layer_steps < L for L in depths):
        raise InvalidArgument(f"--depths must be positive and at most --layer_steps ({args.layer_steps}), got '{args.depths}'")
    budgets, lengths = sweeps.parse_ints(args.budgets, "budgets"), sweeps.parse_ints(args.lengths, "lengths")
    bad = [(b, t) for b in budgets for t in lengths if t < 1 or b % t]
    if bad:
        raise InvalidArgument(f"every --budgets value must be a multiple of every --lengths value (not {bad[0][0]} of {bad[0][1]})")
    sweeps.parse_ints(args.seeds, "seeds")
    if args.microbatches < 1 or args.batch % args.microbatches:
        raise InvalidArgument(f"--microbatches must divide --batch ({args.batch}), got {args.microbatches}")
    if any(part not in PARTS for part in args.parts.split(",")):
        raise InvalidArgument(f"--parts takes a comma-separated subset of {', '.join(PARTS)}, got '{args.parts}'")
    if args.validation < 1 or not 1 <= args.evaluations <= min(args.layer_steps // max(depths), args.data_steps):
        raise InvalidArgument(f"--validation must be positive and --evaluations between 1 and the fewest steps of a run "
                              f"(got {args.validation} and {args.evaluations})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    check(args)
    seeds = sweeps.parse_ints(args.seeds, "seeds")
    folder = Path(args.out) / "cells"
    metric = "KL(BMA || network)" if args.loss == "nll" else "E(ŷ - ŷ_BMA)²"
    sweep = {"depth": depth_sweep, "data": data_sweep}
    return {"config": vars(args), "seeds": seeds, "metric": metric,
            **{part: sweep[part](args, seeds, folder) for part in PARTS if part in args.parts.split(",")}}


def _interval(fit: dict[str, float]) -> str:
    return f"{fit['estimate']:.3f} [{fit['lo']:.3f}, {fit['hi']:.3f}]"


def _stopping(part: dict[str, Any], j: int) -> str:
    """Where cell ``j``'s seeds were stopped and how much their held-out loss still fell late."""
    kept = "/".join(str(row[j]) for row in part["stopped_at"])
    return f"kept step {kept}, late gain {max(row[j] for row in part['late_gain']):.4f}"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table of the parts ``result`` holds (``--parts``)."""
    return ((depth_rows(result["depth"], result["metric"]) if "depth" in result else [])
            + (data_rows(result["data"], result["metric"]) if "data" in result else []))


def depth_rows(dep: dict[str, Any], metric: str) -> list[tuple[str, str, str]]:
    """Each depth's error with where it was stopped, and the fits of both forms."""
    out = [(f"{metric}, depth {L} ({steps} steps)", f"{e:.4f} ± {sd:.4f} ({_stopping(dep, j)})",
            "falls exponentially with depth")
           for j, (L, steps, e, sd) in enumerate(zip(dep["depths"], dep["steps"], dep["error"], dep["error_seed_sd"]))]
    if "fit" in dep:  # a sweep of one depth has none
        out.append(("b in exp(a - b·depth) [95% bootstrap]", _interval(dep["fit"]["b"]), "> 0"))
    if "rms_residual" in dep:  # results from before the power law was fitted, or of one depth, lack it
        out.append(("p in depth^-p, the power law instead [95% bootstrap]", _interval(dep["power_fit"]["p"]), "-"))
        residual = dep["rms_residual"]
        out.append(("rms residual of log error: exponential, power law",
                     f"{residual['exponential']:.3f}, {residual['power']:.3f}", "exponential's the smaller"))
    return out


def data_rows(data: dict[str, Any], metric: str) -> list[tuple[str, str, str]]:
    """Each (N_p, T_p) cell's error with where it was stopped, and the fitted α and β."""
    out = [(f"{metric}, N_p = {c['prompts']} prompts of T_p = {c['length']}", f"{e:.4f} ± {sd:.4f} ({_stopping(data, j)})",
             "depends on N_p·T_p only")
            for j, (c, e, sd) in enumerate(zip(data["cells"], data["error"], data["error_seed_sd"]))]
    out.append(("α in (N_p T_p)^-α", _interval(data["fit"]["alpha"]), "1/2 (the bound's rate)"))
    out.append(("β in T_p^β at fixed N_p T_p", _interval(data["fit"]["beta"]), "0"))
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    parts = [part for part in PARTS if part in result]
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    draw = {"depth": depth_panel, "data": data_panel}
    for part, ax in zip(parts, axes[0]):
        draw[part](ax, result[part], result["metric"])
    fig.tight_layout()
    return fig


def depth_panel(ax: Any, dep: dict[str, Any], metric: str) -> None:
    """Error against depth (mean, each seed) and the fitted exponential."""
    depths = np.asarray(dep["depths"])
    ax.plot(depths, dep["error"], "o", label="measured (mean; x: each seed)")
    for seed_values in dep["error_per_seed"]:
        ax.plot(depths, seed_values, "x", color="0.5")
    if "fit" in dep:  # a sweep of one depth has none
        a, b = dep["fit"]["a"]["estimate"], dep["fit"]["b"]["estimate"]
        ax.plot(depths, np.exp(a - b * depths), "k--", label=f"exp({a:.2f} - {b:.2f}·depth)")
    ax.set(yscale="log", xlabel="layers (matched compute)", ylabel=metric, title="approximation error vs depth")
    ax.legend(fontsize=7)


def data_panel(bx: Any, data: dict[str, Any], metric: str) -> None:
    """Error against the budget N_p·T_p, a colour per prompt length, with the fitted form."""
    fit = data["fit"]
    budgets = np.asarray(data["budgets"], np.float64)
    errors = np.asarray(data["error"]).reshape(len(data["budgets"]), len(data["lengths"]))
    per_seed = np.asarray(data["error_per_seed"]).reshape(-1, len(data["budgets"]), len(data["lengths"]))
    for j, length in enumerate(data["lengths"]):
        line = bx.plot(budgets, errors[:, j], "o", label=f"T_p = {length}")[0]
        for seed_errors in per_seed:
            bx.plot(budgets, seed_errors[:, j], "x", color=line.get_color(), alpha=0.6)
        model = np.exp(fit["c"]["estimate"] - fit["alpha"]["estimate"] * np.log(budgets) + fit["beta"]["estimate"] * np.log(length))
        bx.plot(budgets, model, "--", color=line.get_color())
    bx.set(xscale="log", yscale="log", xlabel="pretraining examples N_p·T_p", ylabel=metric,
           title=f"generalization error: α = {fit['alpha']['estimate']:.2f}, β = {fit['beta']['estimate']:.2f}")
    bx.legend(fontsize=7)


def compute_rows(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The depth sweeps of several runs that differ in ``--layer_steps``, fewest first: each depth's
    error, the fitted b and p, and the two forms' residuals. Errors that still fall with compute are
    upper bounds of the approximation error, not yet the error itself."""
    out = []
    for result in sorted(results, key=lambda r: r["config"]["layer_steps"]):
        dep, compute = result["depth"], result["config"]["layer_steps"]
        errors = ", ".join(f"{e:.4f}" for e in dep["error"])
        depths = ", ".join(str(L) for L in dep["depths"])
        out.append((f"{compute} layer-steps: {result['metric']} at depth {depths}", errors, "falls exponentially with depth"))
        if "rms_residual" in dep:  # results from before the power law was fitted lack it
            residual = dep["rms_residual"]
            out.append((f"{compute} layer-steps: b (exponential), p (power law)",
                        f"{_interval(dep['fit']['b'])}, {_interval(dep['power_fit']['p'])}", "b > 0"))
            out.append((f"{compute} layer-steps: rms residual, exponential vs power law",
                        f"{residual['exponential']:.3f} vs {residual['power']:.3f}", "exponential's the smaller"))
    return out


def floor_fit(computes: np.ndarray, errors: np.ndarray) -> dict[str, float]:
    """The saturating law ``error = E + A·(C / C_0)^-γ`` (``C_0`` the fewest computes; E, A, γ ≥ 0) fitted to
    ``errors [k]`` at ``computes [k]`` by least squares in log error: ``floor`` E, the error at infinite
    compute (the approximation error, if the law holds beyond the computes measured), ``scale`` A and
    ``rate`` γ. An extrapolation: with four computes it has one degree of freedom."""
    from scipy.optimize import curve_fit

    x = np.asarray(computes, np.float64) / computes[0]
    law = lambda c, floor, scale, rate: np.log(floor + scale * c ** -rate)
    start = (float(errors[-1]) / 2, float(errors[0]), 1.0)
    (floor, scale, rate), _ = curve_fit(law, x, np.log(errors), p0=start, bounds=([0, 0, 0], [np.inf, np.inf, 10]))
    return {"floor": float(floor), "scale": float(scale), "rate": float(rate)}


def local_exponent(errors: Any, computes: Any) -> np.ndarray:
    """γ of ``error ∝ compute^-γ`` between neighbouring computes, ``-Δ log error / Δ log compute``:
    errors ``[..., k]`` at computes ``[k]`` -> ``[..., k-1]``."""
    return -np.diff(np.log(np.asarray(errors, np.float64)), axis=-1) / np.diff(np.log(np.asarray(computes, np.float64)))


def measurements(results: list[dict[str, Any]]) -> dict[tuple[int, int, int], float]:
    """Every error the depth sweeps ``results`` hold, keyed ``(compute, depth, seed)``: runs of one
    ``--layer_steps`` count as one, whatever depths and seeds each holds."""
    return {(r["config"]["layer_steps"], L, seed): r["depth"]["error_per_seed"][k][j]
            for r in results for k, seed in enumerate(r["seeds"]) for j, L in enumerate(r["depth"]["depths"])}


def compute_curves(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each depth's error as pretraining compute grows, from depth sweeps that differ in ``--layer_steps``
    (runs of one compute count as one, ``measurements``): ``computes [k]`` (fewest first), ``depths``
    (those measured at every compute), ``error [depths][k]`` (seed means over the training seeds measured
    for each of those depths at every compute, so that computes with more seeds compare like for like),
    ``error_per_seed [seeds][depths][k]`` and ``exponent [depths][k-1]``, the local rate γ of ``error ∝
    compute^-γ`` between neighbouring computes, ``-Δ log error / Δ log compute``; ``exponent_range [depths][k-1]`` is its
    (min, max) over those seeds. An error with a floor (the depth's approximation
    error, reached at convergence) has γ falling to 0 as compute grows; a power law in compute keeps γ
    constant and every error an upper bound of the floor. With four computes or more, ``floor
    [depths]`` is ``floor_fit``'s E for the means and ``floor_per_seed [seeds][depths]`` for each seed."""
    measured = measurements(results)
    computes = np.asarray(sorted({c for c, _, _ in measured}), np.float64)
    every_seed = sorted({s for _, _, s in measured})
    depths = [L for L in sorted({L for _, L, _ in measured})
              if all(any((c, L, s) in measured for s in every_seed) for c in computes)]
    seeds = [s for s in every_seed if all((c, L, s) in measured for c in computes for L in depths)]
    if not depths or not seeds:
        raise InvalidArgument("no depth and training seed is measured at every compute of these runs: "
                              "pass runs that share one")
    per_seed = np.asarray([[[measured[int(c), L, s] for c in computes] for L in depths] for s in seeds])  # [seeds, depths, k]
    error = per_seed.mean(axis=0)  # [depths, k]
    seed_rates = local_exponent(per_seed, computes)
    out = {"computes": computes.astype(int).tolist(), "depths": depths, "seeds": seeds, "error": error.tolist(),
           "error_per_seed": per_seed.tolist(), "exponent": local_exponent(error, computes).tolist(),
           "exponent_range": np.stack([seed_rates.min(axis=0), seed_rates.max(axis=0)], axis=-1).tolist()}
    if len(computes) >= 4:
        out["floor"] = [floor_fit(computes, e)["floor"] for e in error]
        out["floor_per_seed"] = [[floor_fit(computes, e)["floor"] for e in seed] for seed in per_seed]
    return out


CONVERGED = 0.1  # γ at most this between the two largest computes: the error has reached its floor


def converged_floors(results: list[dict[str, Any]], tolerance: float = CONVERGED) -> dict[str, Any]:
    """The approximation error of each depth where its compute curve has reached it, and the depth law
    fitted to those floors alone.

    Each seed of each depth is followed as far as the runs that hold it go (runs of one compute count as
    one, whatever seeds each holds), and judged on its own two largest computes by the local exponent γ
    between them (``local_exponent``): at most ``tolerance``, the last step in compute cut its error by less
    than a factor (C_k / C_{k-1})^γ (7% for a doubling at 0.1). A depth's seeds are those followed to its
    largest compute (``compute [depths]``) and those left behind at a floor (γ ≤ ``tolerance``); a seed left
    behind while still falling was given up (only the others were doubled further), so it is left out. The
    depth is ``converged`` when each of its seeds is, and its ``floor`` is their mean error at their largest
    computes (``floor_per_seed [seeds][depths]`` each seed's, ``compute_per_seed`` where it was measured and
    ``last_exponent`` its γ, NaN for seeds left out): still an upper bound, but one within that factor of
    the floor if the error keeps slowing. Seeds that settle at different floors found different solutions of
    one architecture; the approximation error (the infimum over parameters) lies below the lowest, so
    ``floor_best [depths]`` is the minimum over seeds. With two converged depths or more, ``fit`` holds
    ``a``, ``b`` of ``log floor = a - b·L`` and ``a_power``, ``p`` of the power law ``a_power - p·log L`` on
    the converged depths' means, ``b_per_seed`` and ``p_per_seed`` the same on each seed's floors (the seeds
    that reached every converged depth), ``b_best`` and ``p_best`` on the lowest, ``beyond`` what both forms
    predict for the depths still falling (``depths``, ``exponential``, ``power``: an upper bound measured
    below a form's prediction contradicts that form, as far as the converged floors are the approximation
    errors), and (three or more) ``rms_residual`` of both forms on the means and ``rms_residual_best`` on
    the lowest, and ``b_interval``, ``p_interval``: each slope on the means with its standard error and 95%
    interval (``slope_interval``; one degree of freedom at three depths): the theorem's exponential
    predicts b > 0 and the smaller residual."""
    every = measurements(results)
    depths = sorted({L for _, L, _ in every})
    seeds = sorted({s for _, _, s in every})
    last, floors, reach = (np.full((len(seeds), len(depths)), np.nan) for _ in range(3))
    compute = []
    for j, L in enumerate(depths):
        measured = {(c, seed): e for (c, depth, seed), e in every.items() if depth == L}
        compute.append(int(max(c for c, _ in measured)))
        for i, seed in enumerate(seeds):
            pair = sorted(c for c, s in measured if s == seed)[-2:]  # this seed's two largest computes
            if len(pair) < 2:
                continue
            errors = [measured[c, seed] for c in pair]
            gamma = local_exponent(errors, pair)[0]
            if pair[1] == compute[-1] or gamma <= tolerance:  # left behind while falling: given up, left out
                floors[i, j], last[i, j], reach[i, j] = errors[1], gamma, pair[1]
    converged = np.nanmax(last, axis=0) <= tolerance  # [depths]
    out: dict[str, Any] = {"depths": depths, "seeds": seeds, "compute": compute, "tolerance": tolerance,
                           "converged": converged.tolist(), "last_exponent": last.tolist(),
                           "compute_per_seed": [[None if np.isnan(c) else int(c) for c in row] for row in reach],
                           "floor": np.nanmean(floors, axis=0).tolist(), "floor_per_seed": floors.tolist(),
                           "floor_best": np.nanmin(floors, axis=0).tolist()}
    chosen = [L for L, ok in zip(depths, converged) if ok]
    if len(chosen) < 2:
        return out
    logs = np.log(floors[:, converged])  # [seeds, converged depths]
    complete = logs[np.isfinite(logs).all(axis=1)]
    mean, best = np.log(np.nanmean(floors, axis=0)[converged]), np.log(np.nanmin(floors, axis=0)[converged])
    exponential, power = depth_features(chosen), power_features(chosen)
    (a, b), (a_power, p) = linear_fit(exponential, mean), linear_fit(power, mean)
    out["fit"] = {"depths": chosen, "a": float(a), "b": float(b), "a_power": float(a_power), "p": float(p),
                  "b_per_seed": [float(linear_fit(exponential, seed)[1]) for seed in complete],
                  "p_per_seed": [float(linear_fit(power, seed)[1]) for seed in complete],
                  "b_best": float(linear_fit(exponential, best)[1]), "p_best": float(linear_fit(power, best)[1])}
    others = [L for L, ok in zip(depths, converged) if not ok]
    out["fit"]["beyond"] = {"depths": others, "exponential": [float(np.exp(a - b * L)) for L in others],
                            "power": [float(np.exp(a_power - p * np.log(L))) for L in others]}
    if len(chosen) >= 3:
        for key, errors in (("rms_residual", mean), ("rms_residual_best", best)):
            out["fit"][key] = {"exponential": rms_residual(exponential, errors), "power": rms_residual(power, errors)}
        out["fit"]["b_interval"] = slope_interval(exponential, mean)
        out["fit"]["p_interval"] = slope_interval(power, mean)
    return out


def floor_rows(results: list[dict[str, Any]], tolerance: float = CONVERGED) -> list[tuple[str, str, str]]:
    """Per depth, whether its compute curve has reached a floor and the error there; then the fits of
    ``converged_floors`` over the converged depths."""
    floors, metric = converged_floors(results, tolerance), results[0]["metric"]
    out = []
    for i, L in enumerate(floors["depths"]):
        have = [k for k, row in enumerate(floors["floor_per_seed"]) if np.isfinite(row[i])]
        seeds = ", ".join(f"{floors['floor_per_seed'][k][i]:.4f}" for k in have)
        state = "converged" if floors["converged"][i] else "still falling: an upper bound"
        rates = ", ".join(f"{floors['last_exponent'][k][i]:.2f}" for k in have)
        reach, seeds_of = [floors["compute_per_seed"][k][i] for k in have], [floors["seeds"][k] for k in have]
        where = (f"at {reach[0]} layer-steps (seeds {', '.join(map(str, seeds_of))})" if len(set(reach)) == 1
                 else "(" + ", ".join(f"seed {seed} at {c}" for seed, c in zip(seeds_of, reach)) + " layer-steps)")
        out.append((f"depth {L}: {metric} {where}; last γ per seed",
                    f"{floors['floor'][i]:.4f} ({seeds}); γ {rates}: {state}", f"converged when γ ≤ {tolerance}"))
    if "fit" in floors:
        fit, depths = floors["fit"], ", ".join(map(str, floors["fit"]["depths"]))
        each = lambda key: ", ".join(f"{v:.3f}" for v in fit[key]) or "none has every depth"
        out.append((f"b in exp(a - b·depth) on the converged floors (depths {depths}): means (each seed; lowest)",
                    f"{fit['b']:.3f} ({each('b_per_seed')}; {fit['b_best']:.3f})", "> 0"))
        out.append(("p in depth^-p on the same floors: means (each seed; lowest)",
                    f"{fit['p']:.3f} ({each('p_per_seed')}; {fit['p_best']:.3f})", "-"))
        for key, name in (("b_interval", "b"), ("p_interval", "p")):
            if key in fit:
                v = fit[key]
                out.append((f"{name} on the means: standard error, 95% t-interval (scatter about the form)",
                            f"{v['stderr']:.3f}, [{v['lo']:.3f}, {v['hi']:.3f}]", "> 0" if name == "b" else "-"))
        for L, e, q in zip(fit["beyond"]["depths"], fit["beyond"]["exponential"], fit["beyond"]["power"]):
            bound = floors["floor_best"][floors["depths"].index(L)]
            out.append((f"depth {L}, still falling: its lowest upper bound against each form's prediction from the floors",
                        f"{bound:.4f}: exponential {e:.4f}, power law {q:.4f}", "a bound below a prediction rejects that form"))
        if "rms_residual" in fit:
            residual, best = fit["rms_residual"], fit["rms_residual_best"]
            out.append(("rms residual of log floor, exponential vs power law: means (lowest)",
                        f"{residual['exponential']:.3f} vs {residual['power']:.3f} ({best['exponential']:.3f} vs "
                        f"{best['power']:.3f})", "exponential's the smaller"))
    return out


def floor_figure(results: list[dict[str, Any]], tolerance: float = CONVERGED) -> Any:
    """Each depth's error where ``converged_floors`` followed its seeds to (means and each seed) against
    depth: filled where the compute curve has reached its floor, open where it still falls (an upper
    bound), with the exponential and the power law fitted to the converged floors."""
    import matplotlib.pyplot as plt

    floors = converged_floors(results, tolerance)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    depths, floor, ok = np.asarray(floors["depths"]), np.asarray(floors["floor"]), np.asarray(floors["converged"])
    ax.plot(depths[ok], floor[ok], "o", color="C0", label=f"converged (γ ≤ {tolerance})")
    ax.plot(depths[~ok], floor[~ok], "o", mfc="none", color="C0", label="still falling (upper bound)")
    for seed in floors["floor_per_seed"]:
        ax.plot(depths, seed, "x", color="C0", alpha=0.5)
    if "fit" in floors:
        fit, grid = floors["fit"], np.linspace(depths.min(), depths.max(), 50)
        ax.plot(grid, np.exp(fit["a"] - fit["b"] * grid), "-", color="C1", label=f"exp(a - {fit['b']:.2f}·depth)")
        ax.plot(grid, np.exp(fit["a_power"] - fit["p"] * np.log(grid)), "--", color="C2", label=f"depth^-{fit['p']:.2f}")
    ax.set(yscale="log", xlabel="layers (below each: the layer-steps it was followed to)", ylabel=results[0]["metric"],
           title="each depth's error where its seeds were followed to")
    ax.set_xticks(floors["depths"], [f"{L}\n{c / 1000:g}k" for L, c in zip(floors["depths"], floors["compute"])])
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def compute_curve_rows(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Per depth, its error at each compute and the local exponents of ``compute_curves``."""
    curves, metric = compute_curves(results), results[0]["metric"]
    computes = ", ".join(str(c) for c in curves["computes"])
    out = []
    for i, L in enumerate(curves["depths"]):
        out.append((f"depth {L}: {metric} at {computes} layer-steps (seeds {', '.join(map(str, curves['seeds']))})",
                    ", ".join(f"{e:.4f}" for e in curves["error"][i]), "constant once converged"))
        rates = ", ".join(f"{g:.2f} [{lo:.2f}, {hi:.2f}]" for g, (lo, hi) in zip(curves["exponent"][i], curves["exponent_range"][i]))
        out.append((f"depth {L}: γ in {metric} ∝ compute^-γ between neighbours [seeds' range]", rates,
                    "falls to 0 at a floor"))
        if "floor" in curves:
            seeds = ", ".join(f"{row[i]:.4f}" for row in curves["floor_per_seed"])
            out.append((f"depth {L}: floor E of E + A·compute^-γ, extrapolated (each seed)",
                        f"{curves['floor'][i]:.4f} ({seeds})", "the approximation error, if the law holds"))
    return out


def compute_figure(results: list[dict[str, Any]]) -> Any:
    """Left: error against depth for each run's ``--layer_steps`` (mean and each seed): does the fall with
    depth steepen as compute grows? Right: each depth's error against compute (``compute_curves``), on
    log-log axes: a straight line is a power law in compute, a bend towards flat a floor."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for result in sorted(results, key=lambda r: r["config"]["layer_steps"]):
        dep = result["depth"]
        line = ax.plot(dep["depths"], dep["error"], "o-", label=f"{result['config']['layer_steps']} layer-steps")[0]
        for seed_values in dep["error_per_seed"]:
            ax.plot(dep["depths"], seed_values, "x", color=line.get_color(), alpha=0.6)
    ax.set(yscale="log", xlabel="layers (matched compute)", ylabel=results[0]["metric"],
           xticks=sorted({L for result in results for L in result["depth"]["depths"]}),
           title="approximation error vs depth, by pretraining compute")
    ax.legend(fontsize=7)
    curves = compute_curves(results)
    for L, errors in zip(curves["depths"], curves["error"]):
        bx.plot(curves["computes"], errors, "o-", label=f"depth {L}")
    bx.set(xscale="log", yscale="log", xlabel="layer-steps (pretraining compute)", ylabel=results[0]["metric"],
           title="each depth's error as compute grows")
    bx.set_xticks(curves["computes"], [f"{c / 1000:g}k" for c in curves["computes"]])
    bx.xaxis.set_minor_formatter(plt.NullFormatter())
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("icl_scaling", __doc__, DEFAULTS, run, rows, figure)


if __name__ == "__main__":
    main()
