"""The infinite-width NNGP and NTK of a ReLU MLP in NTK parameterization, in closed form.

The network (no biases, weights i.i.d. N(0, 1), widths n_0 = d, n_1, ..., n_L, one output):

    h¹ = W¹ x / √d,    h^{l+1} = W^{l+1} φ(h^l) / √n_l,    f(x) = h^{L+1},    φ = ReLU.

As every n_l -> ∞ (Jacot et al. 2018), with the arc-cosine expectations (Cho and Saul 2009) of a
centred Gaussian pair (u, v) with variances a, b and covariance c, θ = arccos(c / √(ab)):

    E[φ(u) φ(v)]   = √(ab) (sin θ + (π - θ) cos θ) / (2π)
    E[φ'(u) φ'(v)] = (π - θ) / (2π)

    Σ¹ = xᵀx' / d,                 Θ¹ = Σ¹
    Σ^{l+1} = E[φ(u)φ(v)]_{Σ^l},   Θ^{l+1} = Σ^{l+1} + Θ^l · E[φ'(u)φ'(v)]_{Σ^l}

and the NTK of f is Θ^{L+1}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _arccos_pair(cov: np.ndarray, var1: np.ndarray, var2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(E[φ(u)φ(v)], E[φ'(u)φ'(v)])`` for ReLU, elementwise over a covariance matrix ``[n1, n2]``."""
    norms = np.sqrt(np.outer(var1, var2))
    theta = np.arccos(np.clip(cov / norms, -1.0, 1.0))
    return norms * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi), (np.pi - theta) / (2 * np.pi)


def relu_ntk(x1: np.ndarray, x2: np.ndarray, hidden_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """``(NNGP, NTK)``, each ``[n1, n2]``, of the ReLU MLP above with ``hidden_layers`` hidden layers."""
    d = x1.shape[1]
    cov, var1, var2 = x1 @ x2.T / d, (x1 * x1).sum(1) / d, (x2 * x2).sum(1) / d
    ntk = cov
    for _ in range(hidden_layers):
        cov, dot = _arccos_pair(cov, var1, var2)
        var1, var2 = var1 / 2, var2 / 2  # E[φ(u)²] = a/2
        ntk = cov + ntk * dot
    return cov, ntk


def relu_mlp_init(key: jax.Array, widths: list[int], dtype: type = jnp.float64) -> list[jax.Array]:
    """Weights ``W^l [n_{l-1}, n_l]`` i.i.d. N(0, 1) for widths ``[d, n_1, ..., n_L, 1]``."""
    keys = jax.random.split(key, len(widths) - 1)
    return [jax.random.normal(k, (a, b), dtype) for k, a, b in zip(keys, widths[:-1], widths[1:])]


def relu_mlp(params: list[jax.Array], x: jax.Array) -> jax.Array:
    """The finite network above, ``[n, d] -> [n, 1]``: ``h^{l+1} = φ(h^l) W^{l+1} / √n_l``."""
    for w in params[:-1]:
        x = jax.nn.relu(x @ w / np.sqrt(x.shape[-1]))
    return x @ params[-1] / np.sqrt(x.shape[-1])
