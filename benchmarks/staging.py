"""The ``jacobian`` kernel as one XLA program or as several: per-example Jacobians of x1 and x2 and
their Gram in one jit (``entk_fn(split=False)``), in three (each Jacobian apart, then the Gram:
``split=True``), or in two (x2's Jacobian apart, then x1's with the Gram), on the tiny masked LM and
the MLP 3 x 2048.

    python benchmarks/staging.py [--out benchmarks/results/staging.json]

Milliseconds per kernel ``[16, 2, 16, 2]``, best of at least two calls and of three seconds of calls,
with ``cpu_compiler_options("jacobian")``; the tiny model's case file is written by ``entk.py``'s
``--prepare``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import SIZES, first_and_best

ROOT = Path(__file__).resolve().parents[1]


def cases(tmp: Path) -> dict:
    """``{model: (f, params, x1, x2)}`` for the tiny masked LM and the MLP."""
    from bench_lm import load_case
    from bench_mlp import mlp, setup

    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "entk.py"), "--prepare", "tiny", "--case-dir", str(tmp)],
                   check=True, capture_output=True)
    return {"tiny": load_case(tmp / "tiny.npz"), "mlp": (mlp, *setup(*SIZES["mlp"]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "staging.json"))
    args = p.parse_args()
    import jax

    from ntk_lab.kernels import contract, cpu_compiler_options, per_example_jacobian, restrict

    jit = lambda fn: jax.jit(fn, compiler_options=cpu_compiler_options("jacobian"))
    rows = []
    print("| model | programs | ms per kernel |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model, (f, params, x1, x2) in cases(Path(tmp)).items():
            g, theta = restrict(f, params, None)
            jac = jit(lambda t, x: per_example_jacobian(g, t, x))
            gram = jit(contract)
            one = jit(lambda t, a, b: contract(per_example_jacobian(g, t, a), per_example_jacobian(g, t, b)))
            against = jit(lambda t, a, j2: contract(per_example_jacobian(g, t, a), j2))
            variants = {"one (Jacobians and Gram)": lambda: one(theta, x1, x2),
                        "three (Jacobian, Jacobian, Gram)": lambda: gram(jac(theta, x1), jac(theta, x2)),
                        "two (x2's Jacobian, then x1's with the Gram)": lambda: against(theta, x1, jac(theta, x2))}
            for name, call in variants.items():
                _, best, _ = first_and_best(lambda: call().block_until_ready(), seconds=3.0)
                rows.append({"model": model, "programs": name, "ms": best * 1e3})
                print(f"| {model} | {name} | {best * 1e3:.1f} |", flush=True)
    Path(args.out).write_text(json.dumps({"cases": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
