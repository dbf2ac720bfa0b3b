"""Bayesian model averaging in closed form, and the predictors it is compared with.

Every predictor maps prompts (``x [n, T+1, d]``, ``y [n, T+1]``) to ``pred [n, T+1]``: ``pred[:, t]``
predicts ``y[:, t]`` from the first ``t`` examples (column 0 uses none).

Gaussian prior ``w ~ N(0, τ² I)``: the posterior after t examples is ``N(w̄_t, σ² P_t)`` with

    P_t = (X_tᵀ X_t + λ I)⁻¹,   w̄_t = P_t X_tᵀ y_t,   λ = σ² / τ²

(ridge regression), and the posterior predictive of ``y`` at ``x`` is ``N(<w̄_t, x>, σ²(1 + xᵀ P_t x))``.
Its squared error given the covariates is exactly ``σ² (1 + xᵀ P_t x)`` (the Bayes risk), and its
expected cumulative log-loss regret against the oracle that knows ``w`` is

    E[R_T | X] = I(w; y_1..T | X) = ½ log det(I + (τ²/σ²) X_Tᵀ X_T) = ½ Σ_{t<T} log(1 + x_tᵀ P_t x_t)

(matrix determinant lemma, term by term). ``P_t`` is updated by Sherman–Morrison, one example at a time.

Finite prior ``π`` over ``w_1..w_M``: the posterior is ``p_t(m) ∝ π_m exp(-Σ_{s<t} (y_s - <w_m, x_s>)² / 2σ²)``
and BMA predicts ``Σ_m p_t(m) <w_m, x>``. Its cumulative log-loss regret is at most ``log(1/π(w*))``
on every prompt, since ``Σ_m π_m p(y | w_m) >= π(w*) p(y | w*)``.
"""

from __future__ import annotations

from functools import partial
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = float(np.log(2 * np.pi))


class Concepts(Protocol):
    """A finite prior as the formulas read it: ``concepts [M, d]`` and their ``weights [M]`` (summing to 1)."""

    @property
    def concepts(self) -> np.ndarray: ...

    @property
    def weights(self) -> np.ndarray: ...


@partial(jax.jit, static_argnames=())
def _ridge_scan(x: jax.Array, y: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(pred [n, T+1], leverage [n, T+1])`` with ``leverage[:, t] = x_tᵀ P_t x_t``."""
    n, _, d = x.shape
    p0 = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype) / lam, (n, d, d))
    b0 = jnp.zeros((n, d), x.dtype)

    def step(carry, xy):
        p, b = carry
        xt, yt = xy  # [n, d], [n]
        px = jnp.einsum("nij,nj->ni", p, xt)
        leverage = jnp.einsum("ni,ni->n", xt, px)
        pred = jnp.einsum("ni,ni->n", px, b)  # <P b, x> = <w̄, x>
        p = p - px[:, :, None] * px[:, None, :] / (1 + leverage)[:, None, None]
        return (p, b + yt[:, None] * xt), (pred, leverage)

    _, (pred, leverage) = jax.lax.scan(step, (p0, b0), (jnp.swapaxes(x, 0, 1), y.T))
    return pred.T, leverage.T


def ridge_online(x: np.ndarray, y: np.ndarray, lam: float, chunk: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    """Ridge predictions and leverages ``xᵀ P_t x`` at every prefix, ``([n, T+1], [n, T+1])``, in chunks of
    prompts (small enough that the chunk's ``P_t [chunk, d, d]`` stays in cache across the scan)."""
    if not lam > 0:
        raise ValueError(f"ridge needs λ > 0 (use least_squares for λ = 0), got {lam}")
    dtype = jnp.result_type(float)  # float64 in x64 mode, else float32
    preds, leverages = [], []
    for start in range(0, len(x), chunk):
        xc, yc = jnp.asarray(x[start : start + chunk], dtype), jnp.asarray(y[start : start + chunk], dtype)
        pred, leverage = _ridge_scan(xc, yc, jnp.asarray(lam, dtype))
        preds.append(np.asarray(pred))
        leverages.append(np.asarray(leverage))
    return np.concatenate(preds), np.concatenate(leverages)


def gaussian_bma(x: np.ndarray, y: np.ndarray, sigma: float, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """BMA under ``w ~ N(0, τ² I)``: ``(predictive mean [n, T+1], predictive variance [n, T+1])``."""
    pred, leverage = ridge_online(x, y, sigma**2 / tau**2)
    return pred, sigma**2 * (1 + leverage)


def gaussian_regret_closed_form(leverage: np.ndarray) -> np.ndarray:
    """``E[R_t | X] = ½ Σ_{s<t} log(1 + x_sᵀ P_s x_s)`` for t = 0..T, ``[n, T+1]`` (``leverage`` from ``ridge_online``)."""
    return cumulative(0.5 * np.log1p(leverage))


@jax.jit
def _finite_chunk(x: jax.Array, y: jax.Array, concepts: jax.Array, log_weights: jax.Array,
                  sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(predictive mean [n, T+1], log predictive density of y [n, T+1])`` in one fused pass."""
    means = jnp.einsum("ntd,md->ntm", x, concepts)
    sq = (y[:, :, None] - means) ** 2 / (2 * sigma**2)
    before = jnp.concatenate([jnp.zeros_like(sq[:, :1]), jnp.cumsum(sq[:, :-1], axis=1)], axis=1)
    log_post = jax.nn.log_softmax(log_weights - before, axis=2)  # log p_t(m) before example t
    pred = jnp.sum(jnp.exp(log_post) * means, axis=2)
    log_p = jax.nn.logsumexp(log_post - sq, axis=2) - 0.5 * LOG_2PI - jnp.log(sigma)
    return pred, log_p


def finite_bma(x: np.ndarray, y: np.ndarray, prior: Concepts, sigma: float, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """BMA under a finite prior: ``(predictive mean [n, T+1], log predictive density of y [n, T+1])``.

    The posterior before example t is ``log p_t(m) = log π_m - Σ_{s<t} (y_s - <w_m, x_s>)² / 2σ² + const``;
    the prediction is ``Σ_m p_t(m) <w_m, x_t>``. Computed in the precision of ``x`` (float32 or float64).
    """
    double = np.asarray(x).dtype == np.float64
    dtype = np.float64 if double else np.float32
    preds, logps = [], []
    with jax.enable_x64(double):
        concepts, log_weights = jnp.asarray(prior.concepts, dtype), jnp.asarray(np.log(prior.weights), dtype)
        for start in range(0, len(x), chunk):
            pred, log_p = _finite_chunk(jnp.asarray(x[start : start + chunk], dtype), jnp.asarray(y[start : start + chunk], dtype),
                                        concepts, log_weights, jnp.asarray(sigma, dtype))
            preds.append(np.asarray(pred))
            logps.append(np.asarray(log_p))
    return np.concatenate(preds), np.concatenate(logps)


def gaussian_log_density(y: np.ndarray, mean: np.ndarray, var: np.ndarray | float) -> np.ndarray:
    """``log N(y; mean, var)`` elementwise."""
    return -0.5 * (LOG_2PI + np.log(var) + (y - mean) ** 2 / var)


def gaussian_kl(mean0: np.ndarray, var0: np.ndarray, mean1: np.ndarray, var1: np.ndarray) -> np.ndarray:
    """``KL(N(mean0, var0) || N(mean1, var1)) = ½[log(var1/var0) + (var0 + (mean0 - mean1)²)/var1 - 1]`` elementwise."""
    return 0.5 * (np.log(var1 / var0) + (var0 + (mean0 - mean1) ** 2) / var1 - 1)


def cumulative_regret(log_p_model: np.ndarray, log_p_oracle: np.ndarray) -> np.ndarray:
    """``R_t = Σ_{s<t} [log p_oracle(y_s) - log p_model(y_s)]`` for t = 0..T, ``[n, T+1]``."""
    return cumulative(log_p_oracle - log_p_model)


def cumulative(steps: np.ndarray) -> np.ndarray:
    """``Σ_{s<t} steps[:, s]`` for t = 0..T: the sum over the labels before t, ``[n, T+1]``."""
    return np.concatenate([np.zeros((len(steps), 1)), np.cumsum(steps[:, :-1], axis=1)], axis=1)


def oracle(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``<w, x_t>``: the predictor that knows the concept; its squared error is σ² on average."""
    return np.einsum("ntd,nd->nt", x, w)


def least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimum-norm least squares ``w = (X_tᵀX_t)⁺ X_tᵀ y_t`` at every prefix (0 before any example)."""
    n, t1, d = x.shape
    gram = np.concatenate([np.zeros((n, 1, d, d)), np.cumsum(np.einsum("nti,ntj->ntij", x, x), axis=1)[:, :-1]], axis=1)
    xy = np.concatenate([np.zeros((n, 1, d)), np.cumsum(x * y[:, :, None], axis=1)[:, :-1]], axis=1)
    w = np.einsum("ntij,ntj->nti", np.linalg.pinv(gram, hermitian=True), xy)
    return np.einsum("nti,nti->nt", w, x)


def nearest_neighbour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The label of the nearest earlier covariate (Euclidean); 0 before any example."""
    dist = np.linalg.norm(x[:, :, None, :] - x[:, None, :, :], axis=-1)  # [n, T+1, T+1]
    t1 = x.shape[1]
    dist = np.where(np.tril(np.ones((t1, t1), bool), k=-1), dist, np.inf)
    nearest = dist.argmin(axis=2)
    pred = np.take_along_axis(y, nearest, axis=1)
    pred[:, 0] = 0.0
    return pred


def averaging(y: np.ndarray) -> np.ndarray:
    """The mean of the earlier labels (ignores x); 0 before any example."""
    total = np.concatenate([np.zeros((len(y), 1)), np.cumsum(y[:, :-1], axis=1)], axis=1)
    return total / np.maximum(np.arange(y.shape[1]), 1)
