"""neural-tangents on one benchmark model, in its pinned environment (run by benchmarks/entk.py).

    .nt-env/bin/python benchmarks/entk_nt.py MODEL IMPLEMENTATION CASE_DIR

MODEL is ``mlp`` (``bench_mlp``) or a masked LM whose case file ``CASE_DIR/MODEL.npz`` entk.py wrote
(``bench_lm``); IMPLEMENTATION is ``jacobian_contraction`` or ``ntk_vector_products``. Prints one JSON
line and saves the kernel, as ``[n1, c, n2, c]``, beside the case file.
"""

import json
import resource
import sys
from pathlib import Path

import jax
import neural_tangents as nt
import numpy as np
from bench_common import SIZES, first_and_best
from bench_mlp import mlp, setup

IMPLEMENTATIONS = {"jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
                   "ntk_vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS}


def main() -> None:
    model, implementation, case_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    n1, n2 = SIZES[model]
    if model == "mlp":
        f = mlp
        params, x1, x2 = setup(n1, n2)
    else:
        from bench_lm import load_case

        f, params, x1, x2 = load_case(case_dir / f"{model}.npz")
    kernel = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=IMPLEMENTATIONS[implementation]))
    first, best, out = first_and_best(lambda: kernel(x1, x2, params).block_until_ready())
    np.save(case_dir / f"{model}-neural-tangents {implementation}.npy", np.asarray(out).transpose(0, 2, 1, 3))
    print(json.dumps({"n1": n1, "n2": n2, "seconds": best, "first_call_s": first, "examples_per_s": (n1 + n2) / best,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


if __name__ == "__main__":
    main()
