"""Kernel diagnostics that explain a kernel predictor's accuracy: its spectrum, effective rank, and
alignment with the labels.

A kernel ``K [n, c, n, c]`` on the train set is read as the ``[n·c, n·c]`` matrix of its flattened
outputs, and the labels as the solvers' targets ``y = vec(Y)`` (``±1`` in binary mode, one-hot
otherwise, ``ntk_lab.solvers.targets``):

- spectrum: the singular values ``σ_1 >= σ_2 >= ...`` of K (for the symmetric PSD SGD and SignGD
  kernels, its eigenvalues; for the asymmetric A-SignGD kernel, singular values);
- effective rank (Roy and Vetterli 2007): ``exp(-Σ_i p_i log p_i)`` with ``p_i = σ_i / Σ_j σ_j``,
  between 1 (one direction) and ``n·c`` (a flat spectrum), ``r`` for ``r`` equal values;
- kernel-target alignment (Cristianini et al. 2002): ``<K, yyᵀ>_F / (‖K‖_F ‖yyᵀ‖_F) = yᵀKy / (‖K‖_F ‖y‖²)``,
  1 when ``K ∝ yyᵀ`` and ``1/√(n·c)`` for the identity; the share of the kernel's energy that lies
  along the labels, so a kernel aligned with the task needs little data to fit it.
"""

from __future__ import annotations

import numpy as np

from ntk_lab.solvers import flat, targets


def spectrum(k: np.ndarray) -> np.ndarray:
    """The singular values of the train kernel, largest first, ``[n·c]``."""
    return np.linalg.svd(flat(k), compute_uv=False)


def effective_rank(values: np.ndarray) -> float:
    """``exp(H(p))`` of the normalized spectrum ``p = σ / Σσ`` (zeros contribute nothing); nan if all zero."""
    values = np.abs(np.asarray(values, np.float64))
    total = values.sum()
    if not total > 0:
        return float("nan")
    p = values[values > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def target_alignment(k: np.ndarray, y: np.ndarray) -> float:
    """``yᵀKy / (‖K‖_F ‖y‖²)`` for the train kernel and targets ``y [n, c]`` (or ``[n·c]``); nan for K = 0."""
    kf = flat(k)
    y = np.asarray(y, np.float64).reshape(-1)
    norm = np.linalg.norm(kf) * (y @ y)
    return float(y @ kf @ y / norm) if norm > 0 else float("nan")


def diagnostics(k: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """``{"spectrum": [n·c], "effective_rank", "target_alignment"}`` of a train kernel ``[n, c, n, c]`` and
    its class labels ``[n]`` (targets as the solvers build them)."""
    values = spectrum(k)
    return {"spectrum": values.tolist(), "effective_rank": effective_rank(values),
            "target_alignment": target_alignment(k, targets(labels, np.shape(k)[1]))}
