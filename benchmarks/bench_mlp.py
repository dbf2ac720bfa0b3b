"""The benchmark MLP (3 hidden ReLU layers of width 2048, NTK parameterization) and its inputs,
importable both here and in neural-tangents' pinned environment (plain JAX only)."""

import jax
import numpy as np

WIDTHS = [64, 2048, 2048, 2048, 2]


def mlp(params, x):
    for w in params[:-1]:
        x = jax.nn.relu(x @ w / np.sqrt(x.shape[-1]))
    return x @ params[-1] / np.sqrt(x.shape[-1])


def setup(n1: int, n2: int):
    """``(params, x1 [n1, 64], x2 [n2, 64])``, the same on every JAX version (explicit PRNG keys)."""
    keys = jax.random.split(jax.random.PRNGKey(0), len(WIDTHS))
    params = [jax.random.normal(k, (a, b)) for k, a, b in zip(keys, WIDTHS[:-1], WIDTHS[1:])]
    x = jax.random.normal(keys[-1], (n1 + n2, WIDTHS[0]))
    return params, x[:n1], x[n1:]
