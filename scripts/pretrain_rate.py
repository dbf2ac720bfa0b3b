"""Tokens per second of a pretraining run's step, for planning a run that must end in a time budget.

Takes ``python -m ntk_lab.pretrain``'s flags (``--corpus`` and ``--out`` are required there and unused
here), times ``--steps`` steps of the run's own jitted step on random rows after the compiling one,
and prints the rate, a number alone on the last line (``scripts/device_pretrain.sh`` with ``TOKENS=auto``
reads it):

    python scripts/pretrain_rate.py --corpus x --out x --config medium --seq-len 128 [--steps 30]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ntk_lab.pretrain import Trainer, parse_args  # noqa: E402


def tokens_per_second(argv: list[str], steps: int) -> float:
    config, _ = parse_args(argv)
    rng = np.random.default_rng(0)
    rows = rng.integers(5, config.vocab_size, (steps + 1, config.batch_size, config.seq_len)).astype(np.int32)
    trainer = Trainer(config, config.vocab_size, rows[0, : config.val_sequences])
    params, opt_state = trainer.init()
    params, opt_state, loss, _ = trainer.step(params, opt_state, jnp.asarray(rows[0]), trainer.step_key(0))
    jax.block_until_ready(loss)  # the compiling step
    start = time.perf_counter()
    for step in range(1, steps + 1):
        params, opt_state, loss, _ = trainer.step(params, opt_state, jnp.asarray(rows[step]), trainer.step_key(step))
    jax.block_until_ready(loss)
    return steps * config.batch_size * config.seq_len / (time.perf_counter() - start)


if __name__ == "__main__":
    argv = sys.argv[1:]
    steps = 30
    if "--steps" in argv:
        at = argv.index("--steps")
        steps = int(argv[at + 1])
        del argv[at : at + 2]
    print(f"{tokens_per_second(argv, steps):.0f}")
