"""Benchmark icl_bayes: BMA error curves for many prompts, and transformer pretraining steps/s.

    python benchmarks/icl.py [--trials 100000] [--d 20] [--T 100] [--out benchmarks/results/icl.json]

Goal: BMA curves for d = 20, T up to 100 and 100,000 prompts in under 10 s on the 2-core machine
(prompt generation included; the first call's compilation reported apart).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = parser("python benchmarks/icl.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--trials", type=int, default=100_000)
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--pretrain-steps", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icl.json"))
    args = p.parse_args()

    from icl_bayes.evaluate import bma_curve
    from icl_bayes.model import FinitePrior, GaussianPrior, LinearICL
    from icl_bayes.pretrain import Pretrainer, pretrain

    records = []
    for name, prior in (("gaussian", GaussianPrior(1.0)), ("finite:16", FinitePrior.draw(16, args.d))):
        model = LinearICL(args.d, 0.5, prior)
        start = time.perf_counter()
        bma_curve(model, 1000, args.T, seed=99)  # compiles the scan for the chunk shape
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        mse, lo, hi = bma_curve(model, args.trials, args.T, seed=0)
        seconds = time.perf_counter() - start
        records.append({"case": f"bma curves, prior {name}", "d": args.d, "T": args.T, "trials": args.trials,
                        "seconds": seconds, "first_call_s": warmup, "prompts_per_s": args.trials / seconds,
                        "mse_at_T": float(mse[-1]), "goal_s": 10.0})
    for depth in (1, 2, 4):
        model = LinearICL(8, 0.5, GaussianPrior(1.0))
        trainer = Pretrainer(width=64, depth=depth, heads=4, lr=1e-3, d=8, T=32, seed=0)
        pretrain(trainer, model, 32, 5, 64, 0, None, None, 5)  # compile
        rate = pretrain(trainer, model, 32, 5 + args.pretrain_steps, 64, 0, None, None, 10**9)
        records.append({"case": f"pretraining, d=8 T=32 width 64 depth {depth} batch 64", "steps_per_s": rate})
    print(f"{'case':<52}{'seconds':>10}{'rate':>16}")
    for r in records:
        if "seconds" in r:
            print(f"{r['case']:<52}{r['seconds']:>10.2f}{r['prompts_per_s']:>12,.0f} p/s   (goal < {r['goal_s']:.0f} s; "
                  f"compile {r['first_call_s']:.1f} s)")
        else:
            print(f"{r['case']:<52}{'':>10}{r['steps_per_s']:>12.1f} st/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
