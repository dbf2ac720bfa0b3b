"""The benchmark MLP (3 hidden ReLU layers of width 2048, NTK parameterization) and its inputs,
importable both here and in neural-tangents' pinned environment (plain JAX only)."""

import jax
import jax.numpy as jnp
import numpy as np

WIDTHS = [64, 2048, 2048, 2048, 2]


def mlp(params, x):
    for w in params[:-1]:
        x = jax.nn.relu(x @ w / np.sqrt(x.shape[-1]))
    return x @ params[-1] / np.sqrt(x.shape[-1])


def setup(n1: int, n2: int):
    """``(params, x1 [n1, 64], x2 [n2, 64])`` in float32, the same on every JAX version: drawn by numpy
    (JAX 0.5 changed what ``jax.random`` draws from a key, so the pinned environment would differ)."""
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal((a, b)), jnp.float32) for a, b in zip(WIDTHS[:-1], WIDTHS[1:])]
    x = jnp.asarray(rng.standard_normal((n1 + n2, WIDTHS[0])), jnp.float32)
    return params, x[:n1], x[n1:]
