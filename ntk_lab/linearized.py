"""Training the linearized model f_lin(θ) = f(θ0) + J0 (θ - θ0) on squared loss, in closed form.

With the loss ``L(θ) = (1 / (2 N)) Σ_i ||f(θ, x_i) - y_i||²`` (``N = normalization``, an explicit
argument: the number of examples for a mean, 1 for a sum) and learning rate η, the training
outputs of the linearized model obey ``f_{t+1} = f_t - (η/N) K (f_t - y)`` with K the eNTK on the
training set, ``[n·c, n·c]``. Hence, writing ``r0 = y - f0`` on train:

    gradient flow:     f_t(x) = f0(x) + K(x, X) K⁻¹ (I - exp(-η K t / N)) r0
    gradient descent:  f_t(x) = f0(x) + K(x, X) K⁻¹ (I - (I - η K / N)^t) r0

``K⁻¹ (I - g(K))`` is evaluated on K's eigenvalues, with its limit at λ = 0, so singular kernels work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def linearize(f: Callable[[Any, Any], jax.Array], params0: Any) -> Callable[[Any, Any], jax.Array]:
    """``f_lin(params, x) = f(params0, x) + J0(x) (params - params0)``, by one JVP."""

    def f_lin(params: Any, x: Any) -> jax.Array:
        delta = jax.tree_util.tree_map(lambda a, b: a - b, params, params0)
        out, tangent = jax.jvp(lambda p: f(p, x), (params0,), (delta,))
        return out + tangent

    return f_lin


def _response(k_train: np.ndarray, rate: float, t: float, discrete: bool) -> np.ndarray:
    """``K⁻¹ (I - g(K))`` with g(λ) = exp(-rate λ t) or (1 - rate λ)^t, via K's eigendecomposition."""
    lam, q = np.linalg.eigh((k_train + k_train.T) / 2)
    decay = (1 - rate * lam) ** t if discrete else np.exp(-rate * lam * t)
    small = np.abs(lam) < 1e-12 * max(1.0, np.abs(lam).max())
    safe = np.where(small, 1.0, lam)
    # limit at λ -> 0: (1 - g(λ)) / λ -> rate · t for both forms
    gain = np.where(small, rate * t, (1 - decay) / safe)
    return (q * gain) @ q.T


def predict(
    k_train: np.ndarray,
    k_test_train: np.ndarray,
    f0_train: np.ndarray,
    f0_test: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    t: float,
    normalization: float,
    discrete: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(f_t on train [n, c], f_t on test [m, c])`` of the linearized model after time / steps ``t``.

    ``k_train [n·c, n·c]`` and ``k_test_train [m·c, n·c]`` are flattened eNTKs (``kernels.flatten_kernel``).
    """
    shape_train, shape_test = f0_train.shape, f0_test.shape
    r0 = (y - f0_train).reshape(-1)
    alpha = _response(k_train, lr / normalization, t, discrete) @ r0
    return (f0_train.reshape(-1) + k_train @ alpha).reshape(shape_train), (
        f0_test.reshape(-1) + k_test_train @ alpha
    ).reshape(shape_test)
