"""Softmax attention that implements Bayesian model averaging, built explicitly.

(a) Finite prior, exactly. The log posterior of concept m after t examples is, up to a constant in m,

    log π_m + (y_tᵀ X_t w_m - ½ w_mᵀ X_tᵀ X_t w_m) / σ² = <q_t, k_m>

with the query built from the prompt's sufficient statistics and the keys from the concepts,

    q_t = [X_tᵀ y_t, vec(X_tᵀ X_t), 1],    k_m = [w_m / σ², -vec(w_m w_mᵀ) / 2σ², log π_m],

so one attention layer with values ``v_m = w_m`` returns the posterior mean of w, and its output
dotted with the query covariate is BMA's prediction. This construction is the toolkit's own, not
Zhang et al.'s: the paper builds no attention over concepts.

(b) Any prior, in the limit of long prompts: the paper's statement (Zhang et al. 2023). Attention over the prompt's own
tokens, keys ``x_s``, values ``y_s``, query ``x_t``, temperature β:

    a_t = β Σ_{s<t} softmax_s(x_tᵀ Σ⁻¹ x_s / β) y_s.

For x ~ N(0, Σ), weighting by ``exp(aᵀx)`` tilts the Gaussian to mean ``Σa``, so as t -> ∞
``a_t -> β <w, Σ Σ⁻¹ x_t / β> = <w, x_t>``: the oracle's (and, with it, BMA's) prediction. The gap
shrinks with t at a rate set by the weights' spread, ``exp(x_tᵀ Σ⁻¹ x_t / β²)``.
"""

from __future__ import annotations

import numpy as np

from icl_bayes.bma import Concepts


def _softmax(scores: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def concept_queries(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``q_t = [X_tᵀ y_t, vec(X_tᵀ X_t), 1]`` before each example t, ``[n, T+1, d + d² + 1]``."""
    n, t1, d = x.shape
    xy = np.concatenate([np.zeros((n, 1, d)), np.cumsum(x * y[:, :, None], axis=1)[:, :-1]], axis=1)
    outer = np.einsum("nti,ntj->ntij", x, x).reshape(n, t1, d * d)
    gram = np.concatenate([np.zeros((n, 1, d * d)), np.cumsum(outer, axis=1)[:, :-1]], axis=1)
    return np.concatenate([xy, gram, np.ones((n, t1, 1))], axis=2)


def concept_keys_values(prior: Concepts, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``[M, d + d² + 1]`` and values ``[M, d]`` of the concept-attention layer."""
    w = prior.concepts
    m, d = w.shape
    keys = np.concatenate(
        [w / sigma**2, -np.einsum("mi,mj->mij", w, w).reshape(m, d * d) / (2 * sigma**2), np.log(prior.weights)[:, None]],
        axis=1,
    )
    return keys, w


def concept_attention(x: np.ndarray, y: np.ndarray, prior: Concepts, sigma: float) -> np.ndarray:
    """``<softmax(q_t Kᵀ) V, x_t>`` ``[n, T+1]``: one attention layer over the concepts."""
    keys, values = concept_keys_values(prior, sigma)
    weights = _softmax(concept_queries(x, y) @ keys.T, axis=2)  # [n, T+1, M]
    return np.einsum("ntm,md,ntd->nt", weights, values, x)


def prompt_attention(x: np.ndarray, y: np.ndarray, beta: float, cov: np.ndarray | None = None) -> np.ndarray:
    """``β Σ_{s<t} softmax_s(x_tᵀ Σ⁻¹ x_s / β) y_s`` ``[n, T+1]`` (0 before any example)."""
    metric = np.eye(x.shape[2]) if cov is None else np.linalg.inv(cov)
    scores = np.einsum("nti,ij,nsj->nts", x, metric, x) / beta
    t1 = x.shape[1]
    scores = np.where(np.tril(np.ones((t1, t1), bool), k=-1), scores, -np.inf)
    scores[:, 0, 0] = 0.0  # row 0 attends to nothing; fixed to 0 below
    pred = beta * np.einsum("nts,ns->nt", _softmax(scores, axis=2), y)
    pred[:, 0] = 0.0
    return pred
