"""The ``jacobian`` kernel as one XLA program or as several, on the tiny masked LM (16 x 16, and
16 x 64 with its 16 x2 examples repeated) and the MLP 3 x 2048 (16 x 16): per-example Jacobians of
x1 and x2 and their Gram in one jit (``entk_fn(split=False)``); in three (each Jacobian apart, then
the Gram: ``split=True`` before ``contract_columns``); in two, both Jacobians with x1's laid out
``[P, n1·c]``, then ``contract_columns`` (``split=True`` now, where n1 <= n2); or in two, x2's
Jacobian apart, then x1's with the Gram.

    python benchmarks/staging.py [--out benchmarks/results/staging.json]

Milliseconds per kernel ``[16, 2, n2, 2]``, best of at least two calls and of three seconds of calls,
with ``cpu_compiler_options("jacobian")``; the tiny model's case file is written by ``entk.py``'s
``--prepare``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import SIZES, first_and_best

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def cases(tmp: Path) -> dict:
    """``{model: (f, params, x1, x2)}`` for the tiny masked LM and the MLP."""
    from bench_lm import load_case
    from bench_mlp import mlp, setup

    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "entk.py"), "--prepare", "tiny", "--case-dir", str(tmp)],
                   check=True, capture_output=True)
    import jax
    import jax.numpy as jnp

    f, params, x1, x2 = load_case(tmp / "tiny.npz")
    x2_64 = jax.tree_util.tree_map(lambda v: jnp.concatenate([v] * 4), x2)
    return {("tiny", 16): (f, params, x1, x2), ("tiny", 64): (f, params, x1, x2_64),
            ("mlp", 16): (mlp, *setup(*SIZES["mlp"]))}


def main() -> None:
    p = parser("python benchmarks/staging.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "staging.json"))
    args = p.parse_args()
    import jax

    from ntk_lab.jacobians import (
        as_columns,
        contract,
        contract_columns,
        per_example_jacobian,
    )
    from ntk_lab.kernels import cpu_compiler_options
    from ntk_lab.pytrees import restrict

    jit = lambda fn: jax.jit(fn, compiler_options=cpu_compiler_options("jacobian"))
    rows = []
    print("| model | n1 x n2 | programs | ms per kernel |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for (model, n2), (f, params, x1, x2) in cases(Path(tmp)).items():
            g, theta = restrict(f, params, None)
            jac = jit(lambda t, x: per_example_jacobian(g, t, x))
            both = jit(lambda t, a, b: (as_columns(per_example_jacobian(g, t, a)), per_example_jacobian(g, t, b)))
            gram = jit(contract)
            gram_columns = jit(lambda c1, j2: contract_columns(j2, c1).transpose(2, 3, 0, 1))
            one = jit(lambda t, a, b: contract(per_example_jacobian(g, t, a), per_example_jacobian(g, t, b)))
            against = jit(lambda t, a, j2: contract(per_example_jacobian(g, t, a), j2))
            variants = {"one (Jacobians and Gram)": lambda: one(theta, x1, x2),
                        "three (Jacobian, Jacobian, Gram)": lambda: gram(jac(theta, x1), jac(theta, x2)),
                        "two (both Jacobians, x1's as columns; contract_columns)": lambda: gram_columns(*both(theta, x1, x2)),
                        "two (x2's Jacobian, then x1's with the Gram)": lambda: against(theta, x1, jac(theta, x2))}
            for name, call in variants.items():
                _, best, _ = first_and_best(lambda: call().block_until_ready(), seconds=3.0)
                rows.append({"model": model, "n1": 16, "n2": n2, "programs": name, "ms": best * 1e3})
                print(f"| {model} | 16 x {n2} | {name} | {best * 1e3:.1f} |", flush=True)
    Path(args.out).write_text(json.dumps({"cases": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
