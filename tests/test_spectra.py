"""Kernel diagnostics on kernels whose spectrum and alignment are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from ntk_lab import spectra


def _with_spectrum(values: np.ndarray, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(values), len(values))))
    return q @ np.diag(values) @ q.T


def test_spectrum_is_the_eigenvalues_of_a_psd_kernel_and_the_singular_values_of_any():
    values = np.array([5.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    k = _with_spectrum(values).reshape(3, 2, 3, 2)  # [n, c, n, c] flattens back to the same matrix
    np.testing.assert_allclose(spectra.spectrum(k), values, atol=1e-12)
    a = np.random.default_rng(1).standard_normal((5, 5))
    np.testing.assert_allclose(spectra.spectrum(a), np.sqrt(np.linalg.eigvalsh(a @ a.T))[::-1], atol=1e-10)


@pytest.mark.parametrize("r", [1, 3, 8])
def test_effective_rank_of_r_equal_values_is_r(r):
    values = np.concatenate([np.full(r, 2.5), np.zeros(8 - r)])
    assert spectra.effective_rank(spectra.spectrum(_with_spectrum(values))) == pytest.approx(r, rel=1e-9)


def test_effective_rank_closed_form_and_edge_cases():
    p = np.array([0.5, 0.25, 0.25])
    assert spectra.effective_rank(4 * p) == pytest.approx(np.exp(-(p * np.log(p)).sum()))  # = 2^1.5
    assert spectra.effective_rank(4 * p) == pytest.approx(2**1.5)
    assert np.isnan(spectra.effective_rank(np.zeros(3)))
    # between 1 and the number of values, and invariant to the kernel's scale
    values = np.random.default_rng(2).exponential(size=10)
    assert 1 <= spectra.effective_rank(values) <= 10
    assert spectra.effective_rank(7 * values) == pytest.approx(spectra.effective_rank(values))


def test_target_alignment_closed_forms():
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    assert spectra.target_alignment(np.outer(y, y), y) == pytest.approx(1.0)  # K ∝ yyᵀ
    assert spectra.target_alignment(3 * np.outer(y, y), y) == pytest.approx(1.0)
    assert spectra.target_alignment(np.eye(5), y) == pytest.approx(1 / np.sqrt(5))  # ‖y‖² / (√n ‖y‖²)
    u = np.array([1.0, 1.0, 0.0, 0.0, 0.0]) / np.sqrt(2)  # orthogonal to y
    assert abs(u @ y) < 1e-12 and spectra.target_alignment(np.outer(u, u), y) == pytest.approx(0.0, abs=1e-12)
    # against the Frobenius-inner-product definition, for a random PSD kernel
    g = np.random.default_rng(3).standard_normal((5, 7))
    k = g @ g.T
    yy = np.outer(y, y)
    assert spectra.target_alignment(k, y) == pytest.approx((k * yy).sum() / (np.linalg.norm(k) * np.linalg.norm(yy)))
    assert np.isnan(spectra.target_alignment(np.zeros((5, 5)), y))


def test_diagnostics_use_the_solvers_targets():
    labels = np.array([0, 1, 1, 0])
    y = np.where(labels == 1, 1.0, -1.0)
    binary = spectra.diagnostics(np.outer(y, y).reshape(4, 1, 4, 1), labels)
    assert binary["target_alignment"] == pytest.approx(1.0) and binary["effective_rank"] == pytest.approx(1.0)
    onehot = np.eye(2)[labels].reshape(-1)
    multi = spectra.diagnostics(np.outer(onehot, onehot).reshape(4, 2, 4, 2), labels)
    assert multi["target_alignment"] == pytest.approx(1.0) and len(multi["spectrum"]) == 8
