"""Kernel solvers against closed forms on small problems with explicit features ``K = Φ Φᵀ``."""

import numpy as np
import pytest

from ntk_lab import solvers


def _problem(n=24, m=10, c=2, p=40, seed=0):
    """Explicit features ``Φ [n·c, p]``: K[i,a,j,b] = <Φ_ia, Φ_jb>, labels, offsets, and test data."""
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n, c, p))
    phi_test = rng.normal(size=(m, c, p))
    k = np.einsum("iap,jbp->iajb", phi, phi)
    k_test = np.einsum("iap,jbp->iajb", phi, phi_test)
    labels = rng.integers(0, max(c, 2), size=n)
    f0, f0_test = rng.normal(size=(n, c)), rng.normal(size=(m, c))
    return phi, phi_test, k, k_test, labels, f0, f0_test


@pytest.mark.parametrize("lam, scale", [(0.1, 10.0), (1e-2, np.inf), (1.0, 100.0)])
def test_ridge_equals_primal_ridge_on_features(lam, scale):
    phi, phi_test, k, k_test, labels, f0, f0_test = _problem(p=30)
    fit = solvers.ridge(k, labels, f0, lam, scale)
    lam_abs = lam * solvers.sigma_max(k)
    x = phi.reshape(-1, phi.shape[-1])
    residual = (solvers.targets(labels, 2) - solvers.offset(f0, scale)).reshape(-1)
    w = np.linalg.solve(x.T @ x + lam_abs * np.eye(x.shape[1]), x.T @ residual)
    expected = solvers.offset(f0_test, scale) + (phi_test @ w)
    np.testing.assert_allclose(fit.decision(k_test, f0_test), expected, rtol=1e-9, atol=1e-9)


def test_ridge_without_regularization_is_minimum_norm_lstsq():
    phi, phi_test, k, k_test, labels, f0, f0_test = _problem(n=30, p=20)  # K has rank 20 < 60
    fit = solvers.ridge(k, labels, f0, 0.0, 10.0)
    x = phi.reshape(-1, 20)
    residual = (solvers.targets(labels, 2) - f0 / 10).reshape(-1)
    w = np.linalg.lstsq(x, residual, rcond=None)[0]
    np.testing.assert_allclose(fit.decision(k_test, f0_test), f0_test / 10 + phi_test @ w, rtol=1e-7, atol=1e-7)


def test_binary_targets_are_plus_minus_one():
    np.testing.assert_array_equal(solvers.targets(np.array([0, 1, 1]), 1), [[-1], [1], [1]])
    np.testing.assert_array_equal(solvers.predict_labels(np.array([[-0.5], [2.0]])), [0, 1])


@pytest.mark.parametrize("lam", [0.0, 1e-2, 0.1])
def test_svm_satisfies_kkt(lam):
    phi, _, k, _, labels, f0, _ = _problem(n=30, c=1, p=50, seed=1)
    fit = solvers.svm(k, labels, f0, lam, 10.0)
    y = solvers.targets(labels, 1)[:, 0]
    margin = y * fit.decision(k, f0)[:, 0]
    gamma = fit.alpha[:, 0] * y
    bound = np.inf if lam == 0 else 1 / (lam * solvers.sigma_max(k))
    tol = 1e-6
    assert (gamma >= -1e-12).all() and (gamma <= bound + 1e-9).all()
    assert (margin[gamma <= 1e-12] >= 1 - tol).all()
    inside = (gamma > 1e-12) & (gamma < bound - 1e-9)
    np.testing.assert_allclose(margin[inside], 1.0, atol=tol)
    assert (margin[gamma >= bound - 1e-9] <= 1 + tol).all()
    assert inside.any()


def test_svm_one_vs_rest_uses_each_class_block():
    _, _, k, k_test, labels, f0, f0_test = _problem(n=30, c=3, p=60, seed=2)
    fit = solvers.svm(k, labels, f0, 0.01, 100.0)
    for a in range(3):
        block = k[:, a : a + 1, :, a : a + 1]
        lam = 0.01 * solvers.sigma_max(k) / solvers.sigma_max(block)  # the same λ' as the joint fit's
        single = solvers.svm(block, (labels == a).astype(int), f0[:, a : a + 1], lam, 100.0)
        expected = single.decision(k_test[:, a : a + 1, :, a : a + 1], f0_test[:, a : a + 1])[:, 0]
        np.testing.assert_allclose(fit.decision(k_test, f0_test)[:, a], expected, rtol=1e-6, atol=1e-6)
    scores = fit.decision(k, f0)
    y = 2 * np.eye(3)[labels] - 1
    assert (y * scores >= 1 - 1e-6).mean() > 0.5


@pytest.mark.parametrize("c", [1, 3])
def test_logistic_gradient_vanishes_at_optimum(c):
    _, _, k, _, labels, f0, _ = _problem(n=20, c=c, p=80, seed=3)
    lam, scale = 0.05, 10.0
    fit = solvers.logistic(k, labels, f0, lam, scale)
    loss, grad = solvers.logistic_objective(k, labels, f0, lam, scale)(fit.alpha.reshape(-1))
    _, grad0 = solvers.logistic_objective(k, labels, f0, lam, scale)(np.zeros(fit.alpha.size))
    assert np.linalg.norm(grad) < 1e-6 * np.linalg.norm(grad0)


def test_logistic_gradient_matches_finite_differences():
    _, _, k, _, labels, f0, _ = _problem(n=8, c=3, p=30, seed=4)
    fun = solvers.logistic_objective(k, labels, f0, 0.1, 10.0)
    alpha = np.random.default_rng(0).normal(size=24) * 0.01
    _, grad = fun(alpha)
    eps = 1e-6
    numeric = [(fun(alpha + eps * e)[0] - fun(alpha - eps * e)[0]) / (2 * eps) for e in np.eye(24)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_lssvm_solves_its_kkt_system():
    _, _, k, _, labels, f0, _ = _problem(n=16, c=1, p=40, seed=5)
    lam = 0.1
    fit = solvers.lssvm(k, labels, f0, lam, 10.0)
    y = solvers.targets(labels, 1)[:, 0]
    a = fit.alpha[:, 0] * y  # the Lagrange multipliers
    gamma = 1 / (lam * solvers.sigma_max(k))
    # constraints y_i F_i = 1 - e_i with e = a / γ, and Σ a_i y_i = 0
    np.testing.assert_allclose(y * fit.decision(k, f0)[:, 0], 1 - a / gamma, atol=1e-9)
    assert abs(a @ y) < 1e-9


@pytest.mark.parametrize("lam, c", [(0.1, 1), (1e-3, 1), (0.1, 3)])
def test_asym_lssvm_with_a_symmetric_kernel_is_the_lssvm(lam, c):
    _, _, k, k_test, labels, f0, f0_test = _problem(n=16, c=c, p=40, seed=6)
    sym = solvers.lssvm(k, labels, f0, lam, 100.0)
    asym = solvers.asym_lssvm(k, labels, f0, lam, 100.0)
    np.testing.assert_allclose(asym.decision(k_test, f0_test), sym.decision(k_test, f0_test), rtol=1e-7, atol=1e-8)


def test_asym_lssvm_satisfies_both_constraint_sets():
    rng = np.random.default_rng(7)
    n, p = 14, 30
    source, target = rng.normal(size=(n, p)), rng.normal(size=(n, p))  # K(x, x') = <φ(x), ψ(x')>
    kmat = source @ target.T
    assert not np.allclose(kmat, kmat.T)
    labels = rng.integers(0, 2, size=n)
    f0 = rng.normal(size=(n, 1))
    lam, scale = 0.05, 10.0
    fit = solvers.asym_lssvm(kmat[:, None, :, None], labels, f0, lam, scale)
    y, o = solvers.targets(labels, 1)[:, 0], f0[:, 0] / scale
    gamma = 1 / (lam * solvers.sigma_max(kmat[:, None, :, None]))
    beta = fit.alpha[:, 0] * y
    # ω-side constraint y_i F_i = 1 - α_i/γ gives the other multipliers α; then Σ α y = Σ β y = 0
    f_source = fit.decision(kmat[:, None, :, None], f0)[:, 0]
    alpha = gamma * (1 - y * f_source)
    assert abs(alpha @ y) < 1e-8 and abs(beta @ y) < 1e-8
    # ν-side constraint y_i (Σ_j α_j y_j K(x_i, x_j) + b2 + o_i) = 1 - β_i/γ holds with one b2 for all i
    b2 = (1 - beta / gamma) * y - o - kmat @ (alpha * y)
    np.testing.assert_allclose(b2, b2.mean(), atol=1e-8)


def test_official_asym_solver_is_the_stationary_point_of_its_primal():
    """LM-Kernel-FT's bias-free system, from the primal min ωᵀν + γ/2‖e‖² + γ/2‖r‖² s.t.
    Y_i <ω, ψ_i> = 1 - e_i, Y_i <ν, φ_i> = 1 - r_i, with explicit features K(x, x') = <φ(x), ψ(x')>:
    ω = Σ a_i Y_i φ_i, ν = Σ b_i Y_i ψ_i, e = b/γ, r = a/γ, and the two predictors <ω, ψ(x)>, <ν, φ(x)>."""
    rng = np.random.default_rng(8)
    n, m, p = 12, 5, 30
    phi, psi = rng.normal(size=(n, p)), rng.normal(size=(n, p))  # sign side φ, gradient side ψ
    phi_test, psi_test = rng.normal(size=(m, p)), rng.normal(size=(m, p))
    kmat = phi @ psi.T
    labels = rng.integers(0, 2, size=n)
    f0, f0_test = rng.normal(size=(n, 1)), rng.normal(size=(m, 1))
    lam, scale = 0.05, 10.0
    fit = solvers.asym_official(kmat[:, None, :, None], labels, f0, lam, scale, mix=1.0)
    gamma = 1 / (lam * solvers.sigma_max(kmat[:, None, :, None]))
    y = solvers.targets(labels, 1)[:, 0] - f0[:, 0] / scale  # Y: the targets less the offset
    a, b = fit.alpha[:, 0] / y, fit.beta[:, 0] / y
    omega, nu = (a * y) @ phi, (b * y) @ psi
    np.testing.assert_allclose(1 - y * (psi @ omega), b / gamma, atol=1e-9)  # e = b/γ
    np.testing.assert_allclose(1 - y * (phi @ nu), a / gamma, atol=1e-9)  # r = a/γ
    k_test = (phi @ psi_test.T)[:, None, :, None]  # K(x_i, x)
    k_flipped = (psi @ phi_test.T)[:, None, :, None]  # K(x, x_i) = <φ(x), ψ(x_i)>
    o_test = f0_test[:, 0] / scale
    for mix in (0.0, 0.3, 1.0):
        mixed = solvers.MixedFit(fit.alpha, fit.beta, mix, scale).decision(k_test, k_flipped, f0_test)[:, 0]
        np.testing.assert_allclose(mixed, o_test + mix * (psi_test @ omega) + (1 - mix) * (phi_test @ nu), atol=1e-9)


@pytest.mark.parametrize("c", [1, 3])
def test_official_asym_solver_on_a_symmetric_kernel_ignores_the_mix(c):
    _, _, k, k_test, labels, f0, f0_test = _problem(n=16, c=c, p=40, seed=9)
    fit = solvers.asym_official(k, labels, f0, 0.1, 100.0, mix=0.0)
    np.testing.assert_allclose(fit.alpha, fit.beta, rtol=1e-8, atol=1e-10)
    a = solvers.MixedFit(fit.alpha, fit.beta, 0.0, 100.0).decision(k_test, k_test, f0_test)
    b = solvers.MixedFit(fit.alpha, fit.beta, 1.0, 100.0).decision(k_test, k_test, f0_test)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_select_official_keeps_the_best_dev_accuracy():
    _, _, k, k_test, labels, f0, f0_test = _problem(n=16, c=1, p=40, seed=10)
    y_dev = np.random.default_rng(10).integers(0, 2, size=len(f0_test))
    chosen = solvers.select_official(k, k, labels, f0, k_test, k_test, y_dev, f0_test)
    for lam in solvers.LAMBDAS:
        for scale in solvers.SCALES:
            fit = solvers.asym_official(k, labels, f0, lam, scale, mix=0.5)
            accuracy = np.mean(solvers.predict_labels(fit.decision(k_test, k_test, f0_test)) == y_dev)
            assert accuracy <= chosen.dev_accuracy + 1e-12


def test_select_picks_the_best_dev_accuracy():
    _, _, k, _, labels, f0, _ = _problem(n=20, c=1, p=60, seed=8)
    chosen = solvers.select("ridge", k, labels, f0, k[:, :, :10], labels[:10], f0[:10])
    assert chosen.dev_accuracy == 1.0  # the dev set is part of the train set, which ridge interpolates at λ = 0
    assert chosen.lam == 0.0
