"""Mixed-precision fine-tuning against float32 on one comparison: what bfloat16 steps change in the
numbers ``compare`` reports.

    python benchmarks/ft_precision.py [--model miniberta-small] [--data-dir sample] [--seeds 13,42]
        [--steps 100] [--eval-every 25] [--out benchmarks/results/ft_precision_cpu.json]

README's first command (SST-2, 16-shot, both kernels, SGD and Adam fine-tuning) is run twice with
``ntk_lab.protocol.run``: ``--ft-precision float32`` and ``bfloat16``. The kernels are the same in both
(cached; they are always float32), so every difference comes from the fine-tuning steps. Per seed and
fine-tuning: test accuracy, selected learning rate and step, and the agreement of its kernel
counterpart; the share of test examples on which the two precisions' fine-tuned models predict the
same label; and each run's fine-tuning seconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("accuracy", "lr", "step", "linearization", "step_linearization", "feature_change", "kernel_drift")


def main() -> None:
    p = parser("python benchmarks/ft_precision.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--model", default="miniberta-small")
    p.add_argument("--data-dir", default="sample")
    p.add_argument("--seeds", default="13,42")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ft_precision_cpu.json"))
    args = p.parse_args()
    import numpy as np

    from ntk_lab.protocol import CompareConfig, prepare, run
    from ntk_lab.provenance import provenance

    seeds = tuple(int(s) for s in args.seeds.split(","))
    base = CompareConfig(task="sst2", model=args.model, data_dir=args.data_dir, seeds=seeds, steps=args.steps,
                         eval_every=args.eval_every, implementation="structured")
    setup = prepare(base)
    runs, outputs, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for precision in ("float32", "bfloat16"):
            config = CompareConfig(**{**base.as_dict(), "ft_precision": precision})
            results = run(config, Path(scratch) / precision, setup)
            runs[precision] = {(r["seed"], r["method"]): r for r in results.runs}
            outputs[precision] = results.seed_outputs
            seconds[precision] = results.timer.seconds.get("fine-tune")
    rows = []
    for seed in seeds:
        for ft, kernel in (("ft-sgd", "kernel-sgd"), ("ft-adam", "kernel-asigngd")):
            row = {"seed": seed, "method": ft}
            for precision in ("float32", "bfloat16"):
                record = runs[precision][seed, ft]
                row[precision] = {**{k: record.get(k) for k in FIELDS},
                                  "kernel_agreement": runs[precision][seed, kernel].get("agreement")}
            same = [outputs[p][seed][ft]["test"].argmax(1) for p in ("float32", "bfloat16")]
            row["same_prediction"] = float(np.mean(same[0] == same[1]))
            rows.append(row)
    out = {**provenance("python benchmarks/ft_precision.py", None), "fine_tune_seconds": seconds, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{'seed':>5} {'method':<8}{'accuracy f32 / bf16':>22}{'kernel agreement f32 / bf16':>30}{'same prediction':>17}")
    for r in rows:
        a, b = r["float32"], r["bfloat16"]
        print(f"{r['seed']:>5} {r['method']:<8}{a['accuracy']:>11.3f} / {b['accuracy']:<8.3f}"
              f"{a['kernel_agreement']:>19.3f} / {b['kernel_agreement']:<8.3f}{r['same_prediction']:>17.3f}")
    print(f"fine-tuning seconds: float32 {seconds['float32']:.0f}, bfloat16 {seconds['bfloat16']:.0f}; wrote {args.out}")


if __name__ == "__main__":
    main()
