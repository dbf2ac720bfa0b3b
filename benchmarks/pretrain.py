"""Pretraining speed: tokens/s and the share of the machine's matmul peak, per named config.

Each config trains on random rows (speed does not depend on the text) for a few steps after the
compiling one; the FLOPs are ``ntk_lab.pretrain.step_flops`` (matmuls, forward and backward), the
peak a large square matmul in the compute dtype measured in the same run (the roofline).

    python benchmarks/pretrain.py [--configs tiny,small,medium,mini] [--steps 5] [--out benchmarks/results/pretrain.json]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import first_and_best  # noqa: E402

from ntk_lab.cli import parser  # noqa: E402
from ntk_lab.pretrain import PretrainConfig, Trainer, compute_dtype, step_flops  # noqa: E402
from ntk_lab.provenance import machine, provenance  # noqa: E402


def matmul_peak(dtype: jnp.dtype, n: int = 4096) -> float:
    """FLOP/s of an n x n matmul in ``dtype``, best of at least 5 calls."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n)).astype(dtype)
    mm = jax.jit(lambda x, y: x @ y)
    _, best, _ = first_and_best(lambda: mm(a, a).block_until_ready(), least=5)
    return 2 * n**3 / best


def measure(config: PretrainConfig, vocab_size: int, steps: int) -> dict:
    rng = np.random.default_rng(0)
    rows = jnp.asarray(rng.integers(5, vocab_size, (config.batch_size, config.seq_len)), jnp.int32)
    trainer = Trainer(config, vocab_size, np.asarray(rows))
    params, opt_state = trainer.init()
    state = {"params": params, "opt_state": opt_state}

    def one() -> float:
        state["params"], state["opt_state"], loss, _ = trainer.step(state["params"], state["opt_state"], rows,
                                                                    trainer.step_key(0))
        return float(loss)

    first, best, _ = first_and_best(one, least=steps, seconds=2.0)
    flops = step_flops(config, vocab_size)
    return {"config": config.config, "architecture": config.architecture_numbers(), "vocab_size": vocab_size,
            "batch": config.batch_size, "seq_len": config.seq_len, "first_step_s": first, "step_s": best,
            "tokens_per_s": config.batch_size * config.seq_len / best, "tflops": flops / best / 1e12}


def main() -> None:
    p = parser("python benchmarks/pretrain.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--configs", default="tiny,small,medium,mini")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain.json"))
    args = p.parse_args()
    base = PretrainConfig(corpus=("random rows",), batch_size=args.batch_size, seq_len=args.seq_len,
                          precision=args.precision)
    dtype = compute_dtype(base)
    peak = matmul_peak(dtype)
    rows = [measure(replace(base, config=name), args.vocab_size, args.steps) for name in args.configs.split(",")]
    print(f"{machine()}: {jnp.dtype(dtype).name} matmul peak {peak / 1e12:.3f} TFLOP/s (4096^3, measured)")
    print(f"{'config':8} {'layers x h':>10} {'first step':>11} {'step':>9} {'tokens/s':>10} {'TFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        r["fraction_of_peak"] = r["tflops"] * 1e12 / peak
        a = r["architecture"]
        shape = f"{a['num_hidden_layers']}x{a['hidden_size']}"
        print(f"{r['config']:8} {shape:>10} {r['first_step_s']:10.2f}s {r['step_s'] * 1e3:7.0f}ms "
              f"{r['tokens_per_s']:10,.0f} {r['tflops']:8.3f} {r['fraction_of_peak']:8.1%}")
    out = {**provenance("python benchmarks/pretrain.py", None), "backend": jax.default_backend(),
           "dtype": jnp.dtype(dtype).name, "peak_tflops": peak / 1e12, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
