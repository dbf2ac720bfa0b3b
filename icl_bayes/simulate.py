"""``python -m icl_bayes.simulate``: ICL error curves of BMA and its rivals against their closed forms.

    python -m icl_bayes.simulate --d 8 --T 64 --prior gaussian|finite:M --noise SIGMA --trials N --out DIR

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

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from icl_bayes import attention, bma
from icl_bayes.model import (
    FinitePrior,
    GaussianPrior,
    InvalidArgument,
    LinearICL,
    Prompts,
)
from icl_bayes.rates import (
    average,
    fit_range,
    gaussian_regret_jensen,
    loglog_slope,
    mean_interval,
)


def parse_prior(text: str, d: int, tau: float, seed: int) -> GaussianPrior | FinitePrior:
    """``gaussian`` or ``finite:M`` (M concepts drawn from N(0, τ² I) with ``seed``)."""
    if text == "gaussian":
        return GaussianPrior(tau)
    if text.startswith("finite:"):
        try:
            m = int(text.split(":", 1)[1])
        except ValueError:
            raise InvalidArgument(f"--prior finite:M needs an integer M, got '{text}'") from None
        return FinitePrior.draw(m, d, seed=seed + 1_000_003, tau=tau)
    raise InvalidArgument(f"--prior must be 'gaussian' or 'finite:M', got '{text}'")


def predictions(model: LinearICL, prompts: Prompts, beta: float, ridge_lambda: float) -> dict[str, np.ndarray]:
    """Every predictor's ``[n, T+1]`` predictions on ``prompts``."""
    x, y = prompts.x, prompts.y
    out = {"oracle": bma.oracle(x, prompts.w)}
    if isinstance(model.prior, GaussianPrior):
        out["bma"], _ = bma.gaussian_bma(x, y, model.sigma, model.prior.tau)
    else:
        out["bma"], _ = bma.finite_bma(x, y, model.prior, model.sigma)
        out["concept_attention"] = attention.concept_attention(x, y, model.prior, model.sigma)
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
        prompts = model.sample(min(chunk, trials - start), T, seed=(seed << 20) + index, dtype=np.float32)
        if isinstance(model.prior, GaussianPrior):
            pred, _ = bma.gaussian_bma(prompts.x, prompts.y, model.sigma, model.prior.tau)
        else:
            pred, _ = bma.finite_bma(prompts.x, prompts.y, model.prior, model.sigma)
        sq = (pred - prompts.y) ** 2
        total += sq.sum(0)
        total_sq += (sq**2).sum(0)
        n += len(sq)
    mean = total / n
    half = 1.959963984540054 * np.sqrt(np.maximum(total_sq / n - mean**2, 0) / (n - 1))
    return mean, mean - half, mean + half


def regret(model: LinearICL, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """``(simulated cumulative log-loss regret of BMA [n, T+1], its closed form or bound [n, T+1])``."""
    x, y = prompts.x, prompts.y
    log_oracle = bma.gaussian_log_density(y, bma.oracle(x, prompts.w), model.sigma**2)
    if isinstance(model.prior, GaussianPrior):
        mean, var = bma.gaussian_bma(x, y, model.sigma, model.prior.tau)
        _, leverage = bma.ridge_online(x, y, model.sigma**2 / model.prior.tau**2)
        simulated = bma.cumulative_regret(bma.gaussian_log_density(y, mean, var), log_oracle)
        return simulated, bma.gaussian_regret_closed_form(leverage)
    _, log_p = bma.finite_bma(x, y, model.prior, model.sigma)
    simulated = bma.cumulative_regret(log_p, log_oracle)
    index = np.argmin(np.linalg.norm(prompts.w[:, None] - model.prior.concepts[None], axis=2), axis=1)
    bound = np.broadcast_to(-np.log(model.prior.weights[index])[:, None], simulated.shape)
    return simulated, bound


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
    if isinstance(model.prior, GaussianPrior):
        _, leverage = bma.ridge_online(prompts.x, prompts.y, model.sigma**2 / model.prior.tau**2)
        upper = gaussian_regret_jensen(t, model.sigma, model.prior.tau, model.cov, model.d)
        out["closed_form"] = {"bma_mse": (model.sigma**2 * (1 + leverage.mean(0)))[1:].tolist(),
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
    ax.set(xlabel="T", ylabel="average log-loss regret R_T / T", xscale="log", yscale="log",
           title=f"average regret: log-log slope {r['average_slope']:.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "regret.png", dpi=120)
    plt.close(fig)


def _parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    from ntk_lab.cli import parser

    p = parser(prog, description, epilog, error_type=InvalidArgument)
    p.add_argument("--d", type=int, default=8, help="covariate dimension")
    p.add_argument("--T", type=int, default=64, help="examples per prompt")
    p.add_argument("--prior", default="gaussian", help="gaussian or finite:M")
    p.add_argument("--noise", type=float, default=0.5, help="noise standard deviation σ")
    p.add_argument("--tau", type=float, default=1.0, help="prior scale τ")
    p.add_argument("--trials", type=int, default=2000, help="prompts simulated")
    p.add_argument("--beta", type=float, default=None, help="prompt-attention temperature (unset: √d)")
    p.add_argument("--ridge-lambda", type=float, default=1.0, help="λ of the 'ridge' baseline")
    p.add_argument("--misspecified", type=float, default=0.0, help="fraction of in-context labels from a wrong mapping")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts (and of a finite prior's concepts)")
    p.add_argument("--out", default="runs/icl", help="output folder")
    return p


def validate(args: argparse.Namespace) -> None:
    """One line per bad argument (raised as ``InvalidArgument``)."""
    if args.T < 1:
        raise InvalidArgument(f"--T must be at least 1, got {args.T}")
    if args.d < 1:
        raise InvalidArgument(f"--d must be at least 1, got {args.d}")
    if not 0 < args.noise < math.inf:
        raise InvalidArgument(f"--noise (the noise standard deviation) must be positive, got {args.noise}")
    if not 0 < args.tau < math.inf:
        raise InvalidArgument(f"--tau must be positive, got {args.tau}")
    if args.trials < 2:
        raise InvalidArgument(f"--trials must be at least 2 (for an interval), got {args.trials}")
    if args.beta is not None and not 0 < args.beta < math.inf:
        raise InvalidArgument(f"--beta must be positive, got {args.beta}")
    if not 0 <= args.ridge_lambda < math.inf:
        raise InvalidArgument(f"--ridge-lambda must be zero or positive, got {args.ridge_lambda}")
    if not 0 <= args.misspecified <= 1:
        raise InvalidArgument(f"--misspecified is a fraction in [0, 1], got {args.misspecified}")


def setup(args: argparse.Namespace) -> tuple[LinearICL, dict]:
    validate(args)
    model = LinearICL(args.d, args.noise, parse_prior(args.prior, args.d, args.tau, args.seed))
    config = {"d": args.d, "T": args.T, "prior": args.prior, "noise": args.noise, "tau": args.tau,
              "trials": args.trials, "beta": args.beta or float(np.sqrt(args.d)), "ridge_lambda": args.ridge_lambda,
              "misspecified": args.misspecified, "seed": args.seed}
    return model, config


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


EPILOG = """outputs, in --out:
  curves.json   per predictor the mean squared error at every T with its 95% interval and the excess
                risk; BMA's closed-form risk and regret; the simulated regret; log-log slopes
  mse.png       error against prompt length
  excess.png    excess risk over the oracle (log-log, and times T)
  regret.png    average log-loss regret R_T / T against its closed form or bound
"""


def main(argv: list[str] | None = None) -> None:
    args = _parser("python -m icl_bayes.simulate", "ICL error curves of BMA and its rivals against their closed forms.",
                   EPILOG).parse_args(argv)
    model, config = setup(args)
    prompts = model.sample(args.trials, args.T, args.seed, args.misspecified)
    result = curves(model, prompts, predictions(model, prompts, config["beta"], args.ridge_lambda), config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(result, indent=1))
    figures(result, out)
    print_summary(result)
    print(f"wrote {out / 'curves.json'}, mse.png, excess.png, regret.png")


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """``main(argv)`` with bad arguments reported in one line (exit status 2)."""
    import sys

    try:
        main(argv)
    except InvalidArgument as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def cli(argv: list[str] | None = None) -> None:
    run_cli(main, argv)


if __name__ == "__main__":
    cli()
