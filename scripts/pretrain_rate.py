"""Tokens per second of a pretraining run's step, for planning a run that must end in a time budget.

Takes ``python -m ntk_lab.pretrain``'s flags (``--corpus`` and ``--out`` are required there and unused
here), times the run's own jitted step on random rows as ``benchmarks/pretrain.py`` does (the best of
at least ``--steps`` steps after the compiling one), and prints the rate, a number alone on the last
line (``scripts/device_pretrain.sh`` with ``TOKENS=auto`` reads it):

    python scripts/pretrain_rate.py --corpus x --out x --config medium --seq-len 128 [--steps 30]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from pretrain import measure  # noqa: E402  (benchmarks/pretrain.py)

from ntk_lab.pretrain import parse_args  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    steps = 30
    if "--steps" in argv:
        at = argv.index("--steps")
        steps = int(argv[at + 1])
        del argv[at : at + 2]
    config, _ = parse_args(argv)
    print(f"{measure(config, config.vocab_size, steps)['tokens_per_s']:.0f}")
