"""Curves and their rates: per-step means with 95% intervals, and log-log slopes."""

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
