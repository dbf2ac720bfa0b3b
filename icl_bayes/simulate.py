"""``python -m icl_bayes.simulate``: ICL error curves of BMA and its rivals against their closed forms.

    python -m icl_bayes.simulate --d 8 --T 64 --prior gaussian|finite:M --noise SIGMA --trials N --out DIR

Writes ``DIR/curves.json`` and the figures as ``icl_bayes.evaluate`` describes them; this module is
the command line (parsing, checking, setting up), ``icl_bayes.evaluate`` the library.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from icl_bayes.evaluate import curves, figures, predictions, print_summary
from icl_bayes.model import (
    FinitePrior,
    GaussianPrior,
    InvalidArgument,
    LinearICL,
    stream,
)
from ntk_lab.cli import cli_main
from ntk_lab.provenance import provenance


def parse_prior(text: str, d: int, tau: float, seed: int) -> GaussianPrior | FinitePrior:
    """``gaussian`` or ``finite:M`` (M concepts drawn from N(0, τ² I) with ``seed``)."""
    if text == "gaussian":
        return GaussianPrior(tau)
    if text.startswith("finite:"):
        try:
            m = int(text.split(":", 1)[1])
        except ValueError:
            raise InvalidArgument(f"--prior finite:M needs an integer M, got '{text}'") from None
        return FinitePrior.draw(m, d, seed=stream(seed, "concepts"), tau=tau)
    raise InvalidArgument(f"--prior must be 'gaussian' or 'finite:M', got '{text}'")


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


EPILOG = """outputs, in --out:
  curves.json   per predictor the mean squared error at every T with its 95% interval and the excess
                risk; BMA's closed-form risk and regret; the simulated regret; log-log slopes; with
                a Gaussian prior, each predictor's relative excess over the Bayes risk
  mse.png       error against prompt length
  excess.png    excess risk over the oracle (log-log, and times T)
  regret.png    average log-loss regret R_T / T against its closed form or bound
"""


def main(argv: list[str] | None = None) -> None:
    args = _parser("python -m icl_bayes.simulate", "ICL error curves of BMA and its rivals against their closed forms.",
                   EPILOG).parse_args(argv)
    model, config = setup(args)
    prompts = model.sample(args.trials, args.T, stream(args.seed, "evaluation"), args.misspecified)
    result = {**provenance("python -m icl_bayes.simulate", argv),
              **curves(model, prompts, predictions(model, prompts, config["beta"], args.ridge_lambda), config)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(result, indent=1))
    figures(result, out)
    print_summary(result)
    print(f"wrote {out / 'curves.json'}, mse.png, excess.png, regret.png")


cli = cli_main(main, on_interrupt="nothing was written")


if __name__ == "__main__":
    cli()
