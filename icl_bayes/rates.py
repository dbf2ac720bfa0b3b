"""Curves and their rates: per-step means with 95% intervals, log-log slopes, and the regret's closed forms.

Zhang et al. bound the *average* regret ``R_T / T`` of the Bayes-optimal predictor. How it falls depends
on the prior:

- finite prior of M concepts: ``R_T <= log(1/π(w*))`` (``log M`` for a uniform prior) on every prompt,
  so ``R_T / T`` falls exactly as 1/T (log-log slope -1);
- Gaussian prior ``N(0, τ² I)``: ``E R_T = ½ E log det(I + (τ²/σ²) X_TᵀX_T)``, which grows as
  ``(d/2) log T``, so ``R_T / T`` falls as ``d log T / T``: a log-log slope ``-1 + 1/log T``-ish, near
  -0.84 for d = 4 and T <= 400, not -1.

The per-step excess risk of BMA over the oracle, ``σ² E xᵀP_T x ≈ σ² d / T``, is a different quantity
whose slope is -1.
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def mean_interval(values: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over prompts (axis 0) and its normal ``z``-interval: ``(mean, lo, hi)``, each ``[T+1]``."""
    values = np.asarray(values, np.float64)
    mean = values.mean(axis=0)
    half = z * values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.zeros_like(mean)
    return mean, mean - half, mean + half


def loglog_slope(t: np.ndarray, values: np.ndarray) -> float:
    """The least-squares slope of ``log values`` against ``log t`` (a rate ``t^slope``)."""
    t, values = np.asarray(t, np.float64), np.asarray(values, np.float64)
    keep = (t > 0) & (values > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(t[keep]), np.log(values[keep]), 1)[0])


def fit_range(T: int, d: int) -> np.ndarray:
    """Prompt lengths used for rate fits: ``t >= 10 d`` (T >> d, where the O(1/T) rate is reached)
    when the prompt is at least twice that long, else the upper half ``t >= T/2``."""
    start = 10 * d if 20 * d <= T else max(1, T // 2)
    return np.arange(start, T + 1)


def gaussian_regret_jensen(t: np.ndarray, sigma: float, tau: float, cov: np.ndarray | None, d: int) -> np.ndarray:
    """``½ log det(I + (τ²/σ²) t Σ)`` at each ``t`` (``Σ = cov``, identity when None), shape of ``t``.

    An upper bound on the expected regret ``½ E log det(I + (τ²/σ²) X_tᵀX_t)``: log det is concave and
    ``E X_tᵀX_t = tΣ`` (Jensen). It equals ``(d/2) log t + ½ log det((τ²/σ²) Σ) + O(1/t)``.
    """
    eig = np.ones(d) if cov is None else np.linalg.eigvalsh(np.asarray(cov, np.float64))
    t = np.asarray(t, np.float64)
    return 0.5 * np.log1p(np.multiply.outer(t, eig) * tau**2 / sigma**2).sum(-1)


def average(cumulative: np.ndarray) -> np.ndarray:
    """``R_t / t`` for t = 1..T from a cumulative curve ``[..., T+1]`` (index t holds ``R_t``): ``[..., T]``."""
    cumulative = np.asarray(cumulative, np.float64)
    return cumulative[..., 1:] / np.arange(1, cumulative.shape[-1])
