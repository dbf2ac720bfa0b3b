"""The rates of in-context learning as BMA, and the pretraining error decomposition, measured.

    python -m experiments.icl_rates [--d 4] [--T 400] [--trials 20000] [--steps 2000] [--out runs/icl-rates]

1. Per-step excess risk over the oracle: BMA's is ``σ² E xᵀ P_T x ≈ σ² d / T`` for T >> d, so excess x T
   levels off and the log-log slope is -1; fitted on t >= 10d with a bootstrap 95% interval over prompts.
2. Average regret ``R_T / T``, the quantity the paper's O(1/T) statement is about: finite prior,
   ``R_T <= log(1/π(w*))`` on every prompt, so it falls exactly as 1/T; Gaussian prior, the expected
   regret equals ``½ E log det(I + (τ²/σ²) XᵀX)`` (checked against simulation with its interval), which
   grows as ``(d/2) log T``, so the average falls as ``d log T / T`` (slope about -0.84 at d = 4, T <= 400).
3. The decomposition: because BMA is the posterior mean, ``E[y | prompt] = ŷ_BMA``, so for any
   predictor ``E(ŷ - y)² = E(ŷ_BMA - y)² + E(ŷ - ŷ_BMA)²`` (the cross term has mean zero). Measured for a
   transformer pretrained by likelihood (T = 16): ICL error = BMA error + pretraining error. (How the
   pretraining error falls with depth and data: ``experiments.icl_pretraining``.)
4. The same transformer's cumulative log-loss regret against the oracle: BMA's closed form plus the summed
   ``KL(BMA's predictive || the transformer's)``, the price of not being Bayes-optimal, in expectation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments import report
from experiments.icl_pretraining import trained
from icl_bayes import bma
from icl_bayes.evaluate import predictive_regret, regret, regret_summary
from icl_bayes.model import FinitePrior, GaussianPrior, LinearICL, Prompts, stream
from icl_bayes.rates import (
    Z95,
    average,
    fit_range,
    gaussian_regret_jensen,
    loglog_slope,
    mean_interval,
)


def _bootstrap_slope(per_prompt: np.ndarray, fit: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the log-log slope of the mean over prompts, resampling prompts."""
    rng = np.random.default_rng(seed)
    n = len(per_prompt)
    slopes = [loglog_slope(fit, per_prompt[rng.integers(0, n, n)][:, fit].mean(0)) for _ in range(resamples)]
    return float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))


def excess_rates(d: int, T: int, sigma: float, trials: int, seed: int, resamples: int = 200) -> dict[str, Any]:
    """Excess risk over the oracle at every T for BMA, least squares and a mis-tuned ridge; slopes with intervals."""
    model = LinearICL(d, sigma, GaussianPrior(1.0))
    prompts = model.sample(trials, T, seed=stream(seed, "evaluation", 0))
    preds = {"bma": bma.gaussian_bma(prompts.x, prompts.y, sigma, 1.0)[0],
             "least_squares": bma.least_squares(prompts.x, prompts.y),
             "ridge_lambda_10": bma.ridge_online(prompts.x, prompts.y, 10.0)[0]}
    _, leverage = bma.ridge_online(prompts.x, prompts.y, sigma**2)
    fit = fit_range(T, d)
    out: dict[str, Any] = {"T": list(range(1, T + 1)), "fit_range": [int(fit[0]), int(fit[-1])], "predictors": {},
                           "closed_form_bma_excess": (sigma**2 * leverage.mean(0))[1:].tolist()}
    for name, pred in preds.items():
        excess = (pred - prompts.clean) ** 2
        mean, lo, hi = mean_interval(excess)
        slope = loglog_slope(fit, mean[fit])
        out["predictors"][name] = {"excess": mean[1:].tolist(), "lo": lo[1:].tolist(), "hi": hi[1:].tolist(),
                                   "slope": slope, "slope_interval": _bootstrap_slope(excess, fit, resamples, seed)}
    return out


def regrets(d: int, T: int, sigma: float, trials: int, seed: int, m: int = 16, resamples: int = 200) -> dict[str, Any]:
    """The average regret ``R_T / T`` that the paper bounds, and its log-log slope on the fit range.

    Gaussian prior: the simulated regret with its 95% interval against the closed form
    ``½ E log det(I + (τ²/σ²) XᵀX)`` and its Jensen upper bound ``½ log det(I + (τ²/σ²) TΣ)``; the slope
    (bootstrap interval over prompts) is near ``-1 + 1/log T``. Finite prior: ``R_T <= log(1/π(w*))`` on
    every prompt, and the slope is -1.
    """
    t = np.arange(1, T + 1)
    fit = fit_range(T, d)
    gaussian = LinearICL(d, sigma, GaussianPrior(1.0))
    simulated, closed = regret(gaussian, gaussian.sample(trials, T, seed=stream(seed, "evaluation", 1)))
    mean, lo, hi = mean_interval(simulated)
    upper = gaussian_regret_jensen(t, sigma, 1.0, None, d)
    finite = LinearICL(d, sigma, FinitePrior.draw(m, d, seed=stream(seed, "concepts")))
    sim_f, bound = regret(finite, finite.sample(trials, T, seed=stream(seed, "evaluation", 2)))
    average_f = average(sim_f.mean(0))
    slope = lambda curve: loglog_slope(fit, average(curve)[fit - 1])
    return {"T": t.tolist(), "fit_range": [int(fit[0]), int(fit[-1])],
            "gaussian": {"mean": mean[1:].tolist(), "lo": lo[1:].tolist(), "hi": hi[1:].tolist(),
                         "closed_form": closed.mean(0)[1:].tolist(), "upper": upper.tolist(),
                         "average_slope": slope(mean),
                         "average_slope_interval": _bootstrap_slope(simulated / np.maximum(np.arange(T + 1), 1), fit, resamples, seed),
                         "closed_form_average_slope": slope(closed.mean(0)),
                         "upper_average_slope": loglog_slope(fit, upper[fit - 1] / fit)},
            "finite": {"M": m, "average_regret": average_f.tolist(),
                       "average_bound": average(bound.mean(0)).tolist(),
                       "average_slope": loglog_slope(fit, average_f[fit - 1]),
                       "bound_holds_on_every_prompt": bool(np.all(sim_f <= bound + 1e-9))}}


def decomposition(test: Prompts, sigma: float, tf: np.ndarray, steps: int) -> dict[str, Any]:
    """``E(ŷ_tf - y)²`` against ``E(ŷ_BMA - y)² + E(ŷ_tf - ŷ_BMA)²``, and the cross term's mean with its interval."""
    reference, _ = bma.gaussian_bma(test.x, test.y, sigma, 1.0)
    per_prompt = lambda a: a[:, 1:].mean(1)
    cross = per_prompt(2 * (tf - reference) * (reference - test.y))
    half = Z95 * cross.std(ddof=1) / np.sqrt(len(cross))
    return {"icl_error": float(np.mean(per_prompt((tf - test.y) ** 2))),
            "bma_error": float(np.mean(per_prompt((reference - test.y) ** 2))),
            "pretraining_error": float(np.mean(per_prompt((tf - reference) ** 2))),
            "cross_term": float(cross.mean()), "cross_term_interval": [float(cross.mean() - half), float(cross.mean() + half)],
            "steps": steps}


def transformer_regret(model: LinearICL, test: Prompts, mean: np.ndarray, var: np.ndarray) -> dict[str, Any]:
    """The likelihood-pretrained transformer's cumulative log-loss regret against the oracle at every T (its
    predictive ``N(mean, var)``), with its 95% interval, against its expectation: BMA's closed form
    ``½ E log det(I + τ²/σ² XᵀX)`` plus the summed ``KL(BMA's predictive || the transformer's)``
    (``icl_bayes.evaluate.predictive_regret``); the difference of the two, per prompt, has mean zero."""
    return {"T": list(range(1, test.T + 1)), **regret_summary(predictive_regret(model, test, mean, var))}


def run(d: int = 4, T: int = 200, sigma: float = 0.5, trials: int = 4000, steps: int = 300, seed: int = 0) -> dict[str, Any]:
    model = LinearICL(d, sigma, GaussianPrior(1.0))
    test = model.sample(trials, 16, seed=stream(seed, "evaluation", 3))
    net = trained(model, 16, steps, 2, seed, loss="nll")
    mean = net.predict(test.x, test.y)
    return {"excess": excess_rates(d, T, sigma, trials, seed), "regret": regrets(d, T, sigma, min(trials, 2000), seed),
            "decomposition": decomposition(test, sigma, mean, steps),
            "transformer_regret": transformer_regret(model, test, mean, net.predictive_variance(test.x, test.y)),
            "config": {"d": d, "T": T, "noise": sigma, "trials": trials, "steps": steps, "seed": seed,
                       "decomposition_T": 16}}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    e, r, dec = result["excess"], result["regret"], result["decomposition"]
    out = [(f"{name}: log-log slope of the excess risk on t in {e['fit_range']} (95% bootstrap interval)",
            f"{p['slope']:.3f} [{p['slope_interval'][0]:.3f}, {p['slope_interval'][1]:.3f}]",
            "-1 (BMA, least squares)" if name != "ridge_lambda_10" else "-1 eventually")
           for name, p in e["predictors"].items()]
    bma_excess, closed = e["predictors"]["bma"]["excess"][-1], e["closed_form_bma_excess"][-1]
    out.append((f"BMA excess risk at T = {e['T'][-1]}", f"{bma_excess:.5f}", f"{closed:.5f} (σ² E xᵀP x)"))
    g = r["gaussian"]
    out.append((f"Gaussian prior: cumulative regret R_T at T = {r['T'][-1]} [95% interval]",
                f"{g['mean'][-1]:.3f} [{g['lo'][-1]:.3f}, {g['hi'][-1]:.3f}]",
                f"{g['closed_form'][-1]:.3f} (½ E log det(I + τ²/σ² XᵀX)) <= {g['upper'][-1]:.3f} (½ log det(I + τ²/σ² TΣ))"))
    out.append((f"Gaussian prior: log-log slope of the average regret R_T/T on t in {r['fit_range']} (95% bootstrap)",
                f"{g['average_slope']:.3f} [{g['average_slope_interval'][0]:.3f}, {g['average_slope_interval'][1]:.3f}]",
                f"{g['closed_form_average_slope']:.3f} (closed form), {g['upper_average_slope']:.3f} ((d/2) log T / T form): not -1"))
    f = r["finite"]
    out.append((f"finite prior (M = {f['M']}): average regret at T = {r['T'][-1]}", f"{f['average_regret'][-1]:.4f}",
                f"<= {f['average_bound'][-1]:.4f} (log(1/π)/T); on every prompt: {f['bound_holds_on_every_prompt']}"))
    out.append((f"finite prior: log-log slope of the average regret on t in {r['fit_range']}", f"{f['average_slope']:.3f}",
                "-1 (R_T <= log M: exactly 1/T)"))
    out.append(("ICL error of the transformer", f"{dec['icl_error']:.4f}",
                f"{dec['bma_error'] + dec['pretraining_error']:.4f} (BMA error {dec['bma_error']:.4f} + pretraining error "
                f"{dec['pretraining_error']:.4f})"))
    out.append(("cross term 2E(ŷ_tf - ŷ_BMA)(ŷ_BMA - y) [95% interval]",
                f"{dec['cross_term']:.4f} [{dec['cross_term_interval'][0]:.4f}, {dec['cross_term_interval'][1]:.4f}]", "0"))
    tr = result["transformer_regret"]
    out.append((f"transformer's cumulative log-loss regret R_T at T = {tr['T'][-1]} [95% interval]",
                f"{tr['mean'][-1]:.3f} [{tr['lo'][-1]:.3f}, {tr['hi'][-1]:.3f}]",
                f"{tr['expected'][-1]:.3f} = BMA's closed form {tr['bma_closed_form'][-1]:.3f} + Σ KL(BMA || transformer) "
                f"{tr['kl'][-1]:.3f}"))
    diff = tr["simulated_minus_expected"]
    out.append(("transformer's regret minus its expectation [95% interval]", f"{diff[0]:.4f} [{diff[1]:.4f}, {diff[2]:.4f}]", "0"))
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    e = result["excess"]
    t = np.asarray(e["T"])
    for name, p in e["predictors"].items():
        axes[0].plot(t, np.asarray(p["excess"]) * t, label=f"{name} (slope {p['slope']:.2f})")
    axes[0].plot(t, np.asarray(e["closed_form_bma_excess"]) * t, "k--", label="BMA closed form")
    axes[0].axhline(result["config"]["noise"] ** 2 * result["config"]["d"], color="gray", lw=0.8, label="σ² d")
    axes[0].set(xscale="log", yscale="log", xlabel="T", ylabel="excess risk × T", title="per-step excess risk: × T levels off (slope -1)")
    axes[0].legend(fontsize=7)
    r = result["regret"]
    t, g, f = np.asarray(r["T"]), r["gaussian"], r["finite"]
    axes[1].plot(t, np.asarray(g["mean"]) / t, label=f"Gaussian: simulated (slope {g['average_slope']:.2f})")
    axes[1].fill_between(t, np.asarray(g["lo"]) / t, np.asarray(g["hi"]) / t, alpha=0.3)
    axes[1].plot(t, np.asarray(g["closed_form"]) / t, "k--", label="½ E log det(I + τ²/σ² XᵀX) / T")
    axes[1].plot(t, np.asarray(g["upper"]) / t, "k:", label="½ log det(I + τ²/σ² TΣ) / T ~ (d/2) log T / T")
    axes[1].plot(t, f["average_regret"], label=f"finite: simulated (slope {f['average_slope']:.2f})")
    axes[1].plot(t, f["average_bound"], ":", label="finite: log(1/π(w*)) / T")
    tr = result["transformer_regret"]
    t_tf = np.asarray(tr["T"])
    axes[1].plot(t_tf, np.asarray(tr["mean"]) / t_tf, "C3", label="transformer (likelihood-pretrained): simulated")
    axes[1].plot(t_tf, np.asarray(tr["expected"]) / t_tf, "C3--", label="transformer: BMA's closed form + Σ KL")
    axes[1].set(xscale="log", yscale="log", xlabel="T", ylabel="average log-loss regret R_T / T",
                title="average regret: 1/T (finite), d log T / T (Gaussian)")
    axes[1].legend(fontsize=7)
    dec = result["decomposition"]
    axes[2].bar([0, 1], [dec["icl_error"], dec["bma_error"]], color=["C1", "C0"])
    axes[2].bar([1], [dec["pretraining_error"]], bottom=[dec["bma_error"]], color="C3", label="pretraining error")
    axes[2].set_xticks([0, 1], ["transformer ICL error", "BMA error + pretraining error"])
    axes[2].set(ylabel="squared error", title="ICL error = BMA error + pretraining error")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    report.cli("icl_rates", __doc__,
               {"d": 4, "T": 400, "noise": 0.5, "trials": 20000, "steps": 2000, "seed": 0, "out": "runs/icl-rates"},
               lambda a: run(a.d, a.T, a.noise, a.trials, a.steps, a.seed), rows, figure)


if __name__ == "__main__":
    main()
