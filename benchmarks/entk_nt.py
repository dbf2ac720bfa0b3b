"""neural-tangents on the benchmark MLP, in its pinned environment (run by benchmarks/entk.py)."""

import json
import resource
import time

import jax
import neural_tangents as nt
import numpy as np

from bench_mlp import mlp, setup

N1, N2 = 16, 16
params, x1, x2 = setup(N1, N2)
for name, impl in (("jacobian_contraction", nt.NtkImplementation.JACOBIAN_CONTRACTION),
                   ("ntk_vector_products", nt.NtkImplementation.NTK_VECTOR_PRODUCTS)):
    kernel = jax.jit(nt.empirical_ntk_fn(mlp, trace_axes=(), vmap_axes=0, implementation=impl))
    kernel(x1, x2, params).block_until_ready()
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        kernel(x1, x2, params).block_until_ready()
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"model": "mlp", "implementation": f"neural-tangents {name}", "n1": N1, "n2": N2,
                      "seconds": best, "examples_per_s": (N1 + N2) / best,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
