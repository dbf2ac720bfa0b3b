"""The Gram contraction alone: GFLOP/s of ``[m, P] x [P, m]`` in float32 at the highest precision,
against the matmul roofline and the roofline model's bound measured in the same run, for the XLA CPU
options ``kernels.cpu_compiler_options`` picks and for XLA's default, in three forms: the 2-D form
``contract`` uses (both operands ``[m, P]``), the same with the right operand laid out ``[P, m]``
(``contract_columns``; laying it out is not timed) and the 3-D form ``[n, c, P]``
(``einsum("iap,jbp->iajb")``).

    python benchmarks/gram.py [--out benchmarks/results/gram.json]

``m = n·c`` rows: 32 (16 examples x 2 outputs, the MLP and tiny rows of ``entk.py``) and 8 (BERT-base's
4 x 2). ``P`` includes 2^22, the row length of an MLP 2048 x 2048 weight's Jacobian, and 2^22 + 64, the
same padded off the power of two.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench_common import first_and_best
from roofline import bound, gram_intensity, matmul_roofline, memory_bandwidth

from ntk_lab.cli import parser

ROOT = Path(__file__).resolve().parents[1]
CASES = [(32, 1_000_000), (32, 2**22), (32, 2**22 + 64), (8, 2**22 + 64)]


def gram_gflops(m: int, p: int, options: dict, form: str) -> float:
    """GFLOP/s of the Gram of two random ``[m, p]`` operands (``form`` "2-D", "columns" or "3-D")."""
    import jax
    import jax.numpy as jnp

    from ntk_lab.jacobians import HIGHEST

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a, b = jax.random.normal(k1, (m // 2, 2, p)), jax.random.normal(k2, (m // 2, 2, p))
    if form == "2-D":
        fn = lambda a, b: jnp.dot(a.reshape(m, p), b.reshape(m, p).T, precision=HIGHEST)
    elif form == "columns":
        b = jax.jit(lambda b: b.reshape(m, p).T)(b)  # [P, m] in memory
        fn = lambda a, b: jnp.dot(a.reshape(m, p), b, precision=HIGHEST)
    else:
        fn = lambda a, b: jnp.einsum("iap,jbp->iajb", a, b, precision=HIGHEST)
    gram = jax.jit(fn, compiler_options=options)
    _, best, _ = first_and_best(lambda: gram(a, b).block_until_ready(), least=3)
    return 2 * m * m * p / best / 1e9


def main() -> None:
    p = parser("python benchmarks/gram.py", __doc__.split("\n\n")[0], error_type=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gram.json"))
    args = p.parse_args()
    from ntk_lab.kernels import cpu_compiler_options

    roofline, bandwidth = matmul_roofline(), memory_bandwidth()
    print(f"matmul roofline {roofline:.0f} GFLOP/s, memory bandwidth {bandwidth:.1f} GB/s (this run)")
    print("|  m | P | options | form | GFLOP/s | of roofline | of roofline-model bound |\n|---|---|---|---|---|---|---|")
    rows = []
    for m, size in CASES:
        top = bound(gram_intensity(m, m), roofline, bandwidth)
        for label, options in (("tuned", cpu_compiler_options("jacobian")), ("xla default", {})):
            for form in ("2-D", "columns", "3-D"):
                gflops = gram_gflops(m, size, options, form)
                rows.append({"m": m, "P": size, "options": label, "form": form, "gflops": gflops,
                             "of_roofline": gflops / roofline, "bound_gflops": top, "of_bound": gflops / top})
                print(f"| {m} | {size} | {label} | {form} | {gflops:.0f} | {gflops / roofline:.0%} | {gflops / top:.0%} |",
                      flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"matmul_roofline_gflops": roofline, "memory_bandwidth_gbs": bandwidth,
                                          "cases": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
