"""ICL error curves of BMA and its rivals against their closed forms: the library behind
``python -m icl_bayes.simulate`` and ``python -m icl_bayes.pretrain``.

``curves`` makes the content of ``curves.json``; ``figures`` draws it, ``print_summary`` prints it.
Writes ``DIR/curves.json``:
``{"config", "T": [1..T], "predictors": {NAME: {"mse", "lo", "hi", "excess"}}, "closed_form":
{"bma_mse", "regret", "regret_upper", "average_regret_slope", "average_regret_upper_slope"},
"regret": {"mean", "lo", "hi", "average_slope", "bound"}, "excess_slopes": {NAME: value},
"slope_fit_range": [first T, last T]}`` where
``mse`` is the mean squared error against the noisy query label after T examples (the oracle's is σ²)
with its 95% interval, ``excess`` the mean of ``(prediction - <w, x>)²`` (the per-step excess risk over
the oracle) and ``excess_slopes`` its log-log slope over long prompts (t >= 10d, or the upper half of T).
``regret`` is BMA's cumulative log-loss regret ``R_T`` against the oracle and ``average_slope`` the
log-log slope of ``R_T / T``, the quantity the paper bounds (see ``icl_bayes.rates``): -1 under a finite
prior (``bound``: ``log(1/π(w*))``), about ``-1 + 1/log T`` under a Gaussian prior, whose closed form is
``regret`` = ``½ E log det(I + τ²/σ² XᵀX)`` below ``regret_upper`` = ``½ log det(I + τ²/σ² TΣ)``.
Figures: ``mse.png``, ``excess.png`` (log-log, with excess x T), ``regret.png`` (R_T / T, log-log).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icl_bayes import attention, bma
from icl_bayes.model import GaussianPrior, InvalidArgument, LinearICL, Prompts, stream
from icl_bayes.rates import (
    Z95,
    average,
    fit_range,
    loglog_slope,
    mean_interval,
)


def predictions(model: LinearICL, prompts: Prompts, beta: float, ridge_lambda: float) -> dict[str, np.ndarray]:
    """Every predictor's ``[n, T+1]`` predictions on ``prompts``."""
    x, y = prompts.x, prompts.y
    out = {"oracle": bma.oracle(x, prompts.w), **model.prior.predictors(x, y, model.sigma)}
    out["least_squares"] = bma.least_squares(x, y)
    out["ridge"], _ = bma.ridge_online(x, y, ridge_lambda)
    out["nearest_neighbour"] = bma.nearest_neighbour(x, y)
    out["averaging"] = bma.averaging(y)
    out["attention"] = attention.prompt_attention(x, y, beta, model.cov)
    return out


def bma_curve(model: LinearICL, trials: int, T: int, seed: int = 0, chunk: int = 10_000) -> tuple[np.ndarray, ...]:
    """BMA's squared error on the query at every T, streamed over chunks of prompts (memory independent
    of ``trials``): ``(mse, lo, hi)``, each ``[T+1]``, with the 95% interval."""
    total, total_sq, n = np.zeros(T + 1), np.zeros(T + 1), 0
    for index, start in enumerate(range(0, trials, chunk)):
        prompts = model.sample(min(chunk, trials - start), T, seed=stream(seed, "curve", index), dtype=np.float32)
        pred, _ = model.prior.predictive(prompts.x, prompts.y, model.sigma)
        sq = (pred - prompts.y) ** 2
        total += sq.sum(0)
        total_sq += (sq**2).sum(0)
        n += len(sq)
    mean = total / n
    half = 1.959963984540054 * np.sqrt(np.maximum(total_sq / n - mean**2, 0) / (n - 1))
    return mean, mean - half, mean + half


def regret(model: LinearICL, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """``(simulated cumulative log-loss regret of BMA [n, T+1], its closed form or bound [n, T+1])``
    (``model.prior.regret_is_exact`` says which)."""
    x, y = prompts.x, prompts.y
    log_oracle = bma.gaussian_log_density(y, bma.oracle(x, prompts.w), model.sigma**2)
    _, log_p = model.prior.predictive(x, y, model.sigma)
    return bma.cumulative_regret(log_p, log_oracle), model.prior.regret_reference(x, y, prompts.w, model.sigma)


def predictive_regret(model: LinearICL, prompts: Prompts, mean: np.ndarray, var: np.ndarray) -> dict[str, np.ndarray]:
    """The cumulative log-loss regret of a predictive ``N(mean, var)`` (``[n, T+1]`` each: a transformer
    pretrained by likelihood) against the oracle, and what it should be under a Gaussian prior.

    Given the prompt before it, ``y_t`` is distributed as BMA's predictive ``N(ŷ_BMA, v_t)``, so the
    expected log-loss of any other predictive exceeds BMA's by ``KL(N(ŷ_BMA, v_t) || N(mean_t, var_t))``:

        E[R_T^model | history] = E[R_T^BMA | X] + Σ_{t<T} KL_t,   E[R_T^BMA | X] = ½ Σ_{t<T} log(1 + x_tᵀP_t x_t).

    Returns ``{"simulated": R^model, "expected": the right side, "bma": BMA's closed form,
    "kl": Σ KL}``, each ``[n, T+1]`` with column t holding the sum over the first t labels.
    """
    if not isinstance(model.prior, GaussianPrior):
        raise InvalidArgument("the regret against BMA's closed form needs a Gaussian prior")
    x, y = prompts.x, prompts.y
    bma_mean, bma_var = bma.gaussian_bma(x, y, model.sigma, model.prior.tau)
    log_oracle = bma.gaussian_log_density(y, bma.oracle(x, prompts.w), model.sigma**2)
    simulated = bma.cumulative_regret(bma.gaussian_log_density(y, mean, var), log_oracle)
    closed = bma.gaussian_regret_closed_form(bma_var / model.sigma**2 - 1)
    kl = bma.cumulative(bma.gaussian_kl(bma_mean, bma_var, mean, var))
    return {"simulated": simulated, "expected": closed + kl, "bma": closed, "kl": kl}


def regret_summary(regrets: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """``predictive_regret``'s curves as JSON, at T = 1..T: the simulated regret's mean with its 95%
    interval (``mean``, ``lo``, ``hi``), the means of ``expected``, ``bma_closed_form`` and ``kl``, and at the
    last T the simulated minus the expected regret with its interval (``simulated_minus_expected``)."""
    mean, lo, hi = mean_interval(regrets["simulated"])
    diff, diff_lo, diff_hi = mean_interval(regrets["simulated"] - regrets["expected"])
    return {"mean": mean[1:].tolist(), "lo": lo[1:].tolist(), "hi": hi[1:].tolist(),
            "expected": regrets["expected"].mean(0)[1:].tolist(), "bma_closed_form": regrets["bma"].mean(0)[1:].tolist(),
            "kl": regrets["kl"].mean(0)[1:].tolist(),
            "simulated_minus_expected": [float(diff[-1]), float(diff_lo[-1]), float(diff_hi[-1])]}


def relative_excess(pred: np.ndarray, bma_pred: np.ndarray, risk: np.ndarray, tolerance: float = 0.05) -> dict:
    """A predictor's relative excess over the Bayes risk at each position t = 1..T, ``[T]``:

        (E(ŷ_t - y_t)² - R_t) / R_t = E(ŷ_t - ŷ_BMA,t)² / R_t,

    an identity because BMA is the posterior mean (the cross term vanishes), so it is estimated from
    ``(ŷ - ŷ_BMA)²``, which carries no label noise; ``R_t`` is the closed-form risk ``risk [n, T+1]``
    (BMA's ``σ²(1 + x_tᵀP_t x_t)`` per prompt), averaged over the same prompts. The 95% interval of this
    ratio of means is the delta method's. ``within`` says whether the interval's upper end is below
    ``tolerance`` at every t.
    """
    a, b = (np.asarray(pred, np.float64) - bma_pred)[:, 1:] ** 2, np.asarray(risk, np.float64)[:, 1:]
    ratio = a.mean(axis=0) / b.mean(axis=0)
    half = Z95 * (a - ratio * b).std(axis=0, ddof=1) / np.sqrt(len(a)) / b.mean(axis=0)
    return {"mean": ratio.tolist(), "lo": (ratio - half).tolist(), "hi": (ratio + half).tolist(),
            "max": float(ratio.max()), "tolerance": tolerance, "within": bool(np.all(ratio + half < tolerance))}


def curves(model: LinearICL, prompts: Prompts, preds: dict[str, np.ndarray], config: dict) -> dict:
    """The ``curves.json`` content for ``preds`` on ``prompts``."""
    T = prompts.T
    t = np.arange(1, T + 1)
    fit = fit_range(T, model.d)
    out: dict = {"config": config, "T": t.tolist(), "predictors": {}, "excess_slopes": {}}
    for name, pred in preds.items():
        mse, lo, hi = mean_interval((pred - prompts.y) ** 2)
        excess = np.mean((pred - prompts.clean) ** 2, axis=0)
        out["predictors"][name] = {"mse": mse[1:].tolist(), "lo": lo[1:].tolist(), "hi": hi[1:].tolist(),
                                   "excess": excess[1:].tolist()}
        if name != "oracle":
            out["excess_slopes"][name] = loglog_slope(fit, excess[fit])
    simulated, closed = regret(model, prompts)
    mean, lo, hi = mean_interval(simulated)
    out["regret"] = {"mean": mean[1:].tolist(), "lo": lo[1:].tolist(), "hi": hi[1:].tolist(),
                     "average_slope": loglog_slope(fit, average(mean)[fit - 1])}
    if model.prior.regret_is_exact:
        upper = model.prior.regret_upper(t, model.sigma, model.cov, model.d)
        risk = model.prior.bayes_risk(prompts.x, prompts.y, model.sigma)
        assert upper is not None and risk is not None  # a prior with an exact regret has both closed forms
        if not config.get("misspecified"):  # the identity needs labels from the model itself
            out["relative_excess"] = {name: relative_excess(pred, preds["bma"], risk)
                                      for name, pred in preds.items() if name not in ("bma", "oracle")}
        out["closed_form"] = {"bma_mse": risk.mean(0)[1:].tolist(),
                              "regret": closed.mean(0)[1:].tolist(), "regret_upper": upper.tolist(),
                              "average_regret_slope": loglog_slope(fit, average(closed.mean(0))[fit - 1]),
                              "average_regret_upper_slope": loglog_slope(fit, upper[fit - 1] / fit)}
    else:
        out["closed_form"] = {"bma_mse": None, "regret": None, "average_regret_slope": -1.0}
        out["regret"]["bound"] = closed.mean(0)[1:].tolist()
        out["regret"]["bound_holds_on_every_prompt"] = bool(np.all(simulated <= closed + 1e-9))
    out["slope_fit_range"] = [int(fit[0]), int(fit[-1])]
    return out


def figures(result: dict, out: Path) -> None:
    """``mse.png``, ``excess.png`` and ``regret.png`` from a ``curves`` result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(result["T"])
    sigma2 = result["config"]["noise"] ** 2
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in result["predictors"].items():
        ax.plot(t, c["mse"], label=name)
        ax.fill_between(t, c["lo"], c["hi"], alpha=0.2)
    if result["closed_form"]["bma_mse"] is not None:
        ax.plot(t, result["closed_form"]["bma_mse"], "k--", label="BMA Bayes risk (closed form)")
    ax.axhline(sigma2, color="0.5", ls=":", label="σ²")
    ax.set(xlabel="examples in the prompt T", ylabel="squared error on the query", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "mse.png", dpi=120)
    plt.close(fig)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for name, c in result["predictors"].items():
        if name in ("oracle", "averaging", "nearest_neighbour"):
            continue
        excess = np.asarray(c["excess"])
        ax.loglog(t, excess, label=f"{name} (slope {result['excess_slopes'].get(name, float('nan')):.2f})")
        bx.plot(t, excess * t, label=name)
    ax.loglog(t, result["config"]["d"] * sigma2 / t, "k:", label="d σ² / T")
    ax.set(xlabel="T", ylabel="excess risk over the oracle")
    bx.set(xlabel="T", ylabel="excess risk × T", yscale="log")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "excess.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    r = result["regret"]
    ax.plot(t, np.asarray(r["mean"]) / t, label="BMA, simulated")
    ax.fill_between(t, np.asarray(r["lo"]) / t, np.asarray(r["hi"]) / t, alpha=0.2)
    if result["closed_form"]["regret"] is not None:
        ax.plot(t, np.asarray(result["closed_form"]["regret"]) / t, "k--", label="½ E log det(I + τ²/σ² XᵀX) / T")
        ax.plot(t, np.asarray(result["closed_form"]["regret_upper"]) / t, "k:",
                label="½ log det(I + τ²/σ² TΣ) / T ~ (d/2) log T / T")
    if "bound" in r:
        ax.plot(t, np.asarray(r["bound"]) / t, "k--", label="log(1/π(w*)) / T (bound: exactly 1/T)")
    if "transformer_regret" in result:
        tr = result["transformer_regret"]
        ax.plot(t, np.asarray(tr["mean"]) / t, "C3", label="transformer, simulated")
        ax.fill_between(t, np.asarray(tr["lo"]) / t, np.asarray(tr["hi"]) / t, color="C3", alpha=0.2)
        ax.plot(t, np.asarray(tr["expected"]) / t, "C3--", label="transformer: BMA's closed form + Σ KL")
    ax.set(xlabel="T", ylabel="average log-loss regret R_T / T", xscale="log", yscale="log",
           title=f"average regret: log-log slope {r['average_slope']:.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "regret.png", dpi=120)
    plt.close(fig)


def print_summary(result: dict) -> None:
    """The error at a few prompt lengths, the slopes, and the regret against its closed form."""
    t = result["T"]
    show = sorted({1, min(result["config"]["d"], t[-1]), t[len(t) // 2], t[-1]})
    print(f"{'predictor':<20}" + "".join(f"{'mse@' + str(s):>11}" for s in show) + f"{'excess slope':>14}")
    for name, c in result["predictors"].items():
        slope = result['excess_slopes'].get(name)
        print(f"{name:<20}" + "".join(f"{c['mse'][s - 1]:>11.4f}" for s in show)
              + (f"{slope:>14.2f}" if slope is not None else f"{'':>14}"))
    if result["closed_form"]["bma_mse"] is not None:
        print(f"{'bma closed form':<20}" + "".join(f"{result['closed_form']['bma_mse'][s - 1]:>11.4f}" for s in show))
        print(f"regret after T={t[-1]}: simulated {result['regret']['mean'][-1]:.3f} "
              f"[{result['regret']['lo'][-1]:.3f}, {result['regret']['hi'][-1]:.3f}], "
              f"closed form ½ E log det(I + τ²/σ² XᵀX) = {result['closed_form']['regret'][-1]:.3f}")
    else:
        print(f"regret after T={t[-1]}: simulated {result['regret']['mean'][-1]:.3f}, bound log(1/π(w*)) = "
              f"{result['regret']['bound'][-1]:.3f}, holds on every prompt: {result['regret']['bound_holds_on_every_prompt']}")
    first, last = result["slope_fit_range"]
    print(f"average regret R_T/T, log-log slope on T in [{first}, {last}]: simulated {result['regret']['average_slope']:.3f}, "
          f"closed form {result['closed_form']['average_regret_slope']:.3f}"
          + (" (finite prior: R_T <= log(1/π(w*)), so exactly 1/T)" if result["closed_form"]["regret"] is None
             else " (Gaussian prior: R_T ~ (d/2) log T, so d log T / T, not 1/T)"))
