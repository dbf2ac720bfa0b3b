"""Benchmark icl_bayes: BMA error curves for many prompts, and transformer pretraining steps/s.

    python benchmarks/icl.py [--trials 100000] [--d 20] [--T 100] [--chunks 1] [--out benchmarks/results/icl.json]

Goal: BMA curves for d = 20, T up to 100 and 100,000 prompts in under 10 s on the 2-core machine
(prompt generation included; the first call's compilation reported apart).

Pretraining, for the width-64 network of notebook 5 and the width-8 one of the depth series
(``experiments.icl_scaling --width 8``): steps/s of ``icl_bayes.pretrain.pretrain``, ``CHUNK`` steps in one
program (``--chunks`` chunks each), against one call a step (``Pretrainer.train_step``), both compiled
first. Run it on one core (``taskset -c 0``) to read the rates as the series' runs see them.
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
    p.add_argument("--chunks", type=int, default=1, help="chunks of CHUNK steps timed per width-64 network "
                   "(8 times as many for width 8)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icl.json"))
    args = p.parse_args()

    from icl_bayes.evaluate import bma_curve
    from icl_bayes.model import FinitePrior, GaussianPrior, LinearICL
    from icl_bayes.pretrain import CHUNK, Pretrainer, batch, pretrain

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
    networks = [(8, 32, 64, 4, depth, args.chunks) for depth in (1, 2, 4)] + [(2, 8, 8, 2, depth, 8 * args.chunks)
                                                                             for depth in (1, 2, 3, 4)]
    for d, T, width, heads, depth, chunks in networks:
        model = LinearICL(d, 0.5, GaussianPrior(1.0))
        trainer = Pretrainer(width=width, depth=depth, heads=heads, lr=1e-3, d=d, T=T, seed=0, loss="nll")
        pretrain(trainer, model, T, CHUNK, 64, 0, None, None, 10**9)  # compiles the chunk's program
        trainer.train_step(*batch(model, T, 64, 0, 0, None))  # and the single step's
        steps = chunks * CHUNK
        chunked = pretrain(trainer, model, T, trainer.step + steps, 64, 0, None, None, 10**9)
        start = time.perf_counter()
        for s in range(steps):
            trainer.train_step(*batch(model, T, 64, 0, s, None))
        single = steps / (time.perf_counter() - start)
        records.append({"case": f"pretraining, d={d} T={T} width {width} depth {depth} batch 64", "steps": steps,
                        "steps_per_s": chunked, "steps_per_s_one_call_a_step": single, "chunk": CHUNK})
    print(f"{'case':<52}{'seconds':>10}{'rate':>16}")
    for r in records:
        if "seconds" in r:
            print(f"{r['case']:<52}{r['seconds']:>10.2f}{r['prompts_per_s']:>12,.0f} p/s   (goal < {r['goal_s']:.0f} s; "
                  f"compile {r['first_call_s']:.1f} s)")
        else:
            print(f"{r['case']:<52}{'':>10}{r['steps_per_s']:>12.1f} st/s   ({r['steps_per_s_one_call_a_step']:.1f} "
                  f"one call a step: {r['steps_per_s'] / r['steps_per_s_one_call_a_step']:.2f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
