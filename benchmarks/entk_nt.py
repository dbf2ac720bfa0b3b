"""neural-tangents on the benchmark MLP, in its pinned environment (run by benchmarks/entk.py)."""

import json
import resource
import time

import jax
import neural_tangents as nt
import numpy as np

N1, N2 = 16, 16
widths = [64, 2048, 2048, 2048, 2]
keys = jax.random.split(jax.random.PRNGKey(0), len(widths))
params = [jax.random.normal(k, (a, b)) for k, a, b in zip(keys, widths[:-1], widths[1:])]


def f(params, x):
    for w in params[:-1]:
        x = jax.nn.relu(x @ w / np.sqrt(x.shape[-1]))
    return x @ params[-1] / np.sqrt(x.shape[-1])


x = jax.random.normal(keys[-1], (N1 + N2, 64))
for name, impl in (("jacobian_contraction", nt.NtkImplementation.JACOBIAN_CONTRACTION),
                   ("ntk_vector_products", nt.NtkImplementation.NTK_VECTOR_PRODUCTS)):
    kernel = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=impl))
    kernel(x[:N1], x[N1:], params).block_until_ready()
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        kernel(x[:N1], x[N1:], params).block_until_ready()
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"model": "mlp", "implementation": f"neural-tangents {name}", "n1": N1, "n2": N2,
                      "seconds": best, "examples_per_s": (N1 + N2) / best,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
