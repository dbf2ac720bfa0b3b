"""Kernel predictors fitted on a k-shot train set, in float64, with the pre-trained output as offset.

Notation: ``K[i,a,j,b]`` is a kernel between train example i's output a and example j's output b;
for prediction ``K(X_train, x)`` keeps the train side first, ``[n, c, m, c]`` (for the asymmetric
A-SignGD kernel that is the signed side, as in Adam's dynamics). ``f0 [n, c]`` is the pre-trained
model's output and ``s`` its scaling: the offset is ``o = f0 / s`` (``s = inf``: no offset). Targets
``Y [n, c]`` are one-hot, or ``±1`` when ``c = 1`` (binary mode, ``f = f_1 - f_0``). Every solver
returns a ``KernelFit``, whose decision function is

    F(x)_b = o(x)_b + Σ_{i,a} α[i,a] K(x_i, x)[a, b] + bias_b

(one-vs-rest fits use only the diagonal blocks ``K[:, b, :, b]``). Regularization is relative to the
kernel's scale: ``λ' = λ · σ_max(K_train)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special

LAMBDAS = (0.0, 1e-3, 1e-2, 0.1, 1.0)
SCALES = (10.0, 100.0, 1e3, 1e4, np.inf)


@dataclass(frozen=True)
class KernelFit:
    """Coefficients ``alpha [n, c]`` and ``bias [c]`` of a kernel predictor with offset ``f0 / scale``."""

    alpha: np.ndarray
    bias: np.ndarray
    scale: float
    per_class: bool = False

    def decision(self, k: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """``F [m, c]`` from ``k = K(X_train, x) [n, c, m, c]`` and ``f0 [m, c]``."""
        k = np.asarray(k, np.float64)
        if self.per_class:
            kernel_part = np.einsum("ia,iaja->ja", self.alpha, k)
        else:
            kernel_part = np.einsum("ia,iajb->jb", self.alpha, k)
        return offset(f0, self.scale) + kernel_part + self.bias


def offset(f0: np.ndarray, scale: float) -> np.ndarray:
    """``o = f0 / s`` in float64 (zero for ``s = inf``)."""
    f0 = np.asarray(f0, np.float64)
    return np.zeros_like(f0) if np.isinf(scale) else f0 / scale


def targets(labels: np.ndarray, c: int) -> np.ndarray:
    """``Y [n, c]``: one-hot rows, or ``±1`` in a single column when ``c = 1`` (binary mode)."""
    labels = np.asarray(labels)
    if c == 1:
        return np.where(labels == 1, 1.0, -1.0)[:, None]
    return np.eye(c)[labels]


def predict_labels(scores: np.ndarray) -> np.ndarray:
    """Class indices ``[m]`` from ``[m, c]`` scores: ``argmax``, or ``[F > 0]`` in binary mode."""
    scores = np.asarray(scores)
    return (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(1)


def flat(k: np.ndarray) -> np.ndarray:
    """``K [n, c, m, c]`` as the float64 matrix ``[n·c, m·c]``, rows and columns ordered (example, output);
    a matrix already ``[N, M]`` is only cast."""
    k = np.asarray(k, np.float64)
    if k.ndim == 2:
        return k
    n, c = k.shape[:2]
    return k.reshape(n * c, -1)


def sigma_max(k: np.ndarray) -> float:
    """The largest singular value of the flattened train kernel ``[n·c, n·c]``."""
    return float(np.linalg.norm(flat(k), 2))


def ridge(k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float) -> KernelFit:
    """Kernel ridge regression with offset.

    ``α = (K + λ' I)⁺ (Y - f0/s)`` on the flattened ``[n·c, n·c]`` kernel (minimum-norm least
    squares; for ``λ > 0`` the unique ridge solution), so that ``F = f0/s + Kᵀ α``.
    """
    n, c = k.shape[:2]
    residual = targets(labels, c) - offset(f0, scale)
    a = flat(k).T + lam * sigma_max(k) * np.eye(n * c)
    alpha = np.linalg.lstsq(a, residual.reshape(-1), rcond=None)[0]
    return KernelFit(alpha.reshape(n, c), np.zeros(c), scale)


def _svm_dual(q: np.ndarray, linear: np.ndarray, bound: float, tol: float, max_sweeps: int) -> np.ndarray:
    """``argmax_γ Σ γ_i linear_i - ½ γᵀQγ`` over ``0 <= γ <= bound``, by exact coordinate ascent."""
    n = len(linear)
    gamma = np.zeros(n)
    grad = linear.copy()  # linear - Q γ
    for _ in range(max_sweeps):
        for i in range(n):
            if q[i, i] <= 0:
                continue
            new = min(max(gamma[i] + grad[i] / q[i, i], 0.0), bound)
            if new != gamma[i]:
                grad -= q[:, i] * (new - gamma[i])
                gamma[i] = new
        projected = np.where(gamma <= 0, np.maximum(grad, 0), np.where(gamma >= bound, np.minimum(grad, 0), grad))
        if np.abs(projected).max() <= tol:
            break
    return gamma


def svm(
    k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float, tol: float = 1e-9, max_sweeps: int = 2000
) -> KernelFit:
    """Kernel SVM with hinge loss and offset; one-vs-rest on ``K[:, a, :, a]`` when ``c > 1``.

    Per class (``y_i = ±1``, ``o = f0/s``): ``min_α Σ_i max(0, 1 - y_i ((Kα)_i + o_i)) + λ'/2 αᵀKα``.
    Its dual is ``max_γ Σ γ_i (1 - y_i o_i) - ½ Σ γ_i γ_j y_i y_j K_ij`` over ``0 <= γ_i <= 1/λ'``
    (``λ = 0``: hard margin, no upper bound), with ``α = γ ∘ y``. At the optimum the KKT conditions
    hold: ``γ_i = 0 ⇒ y_i F_i >= 1``, ``0 < γ_i < 1/λ' ⇒ y_i F_i = 1``, ``γ_i = 1/λ' ⇒ y_i F_i <= 1``.
    """
    n, c = k.shape[:2]
    y = targets(labels, c) if c == 1 else 2 * targets(labels, c) - 1
    o = offset(f0, scale)
    lam_abs = lam * sigma_max(k)
    bound = np.inf if lam_abs == 0 else 1.0 / lam_abs
    alpha = np.zeros((n, c))
    for a in range(c):
        kaa = np.asarray(k[:, a, :, a], np.float64)
        q = y[:, a, None] * y[None, :, a] * kaa
        gamma = _svm_dual(q, 1 - y[:, a] * o[:, a], bound, tol, max_sweeps)
        alpha[:, a] = gamma * y[:, a]
    return KernelFit(alpha, np.zeros(c), scale, per_class=True)


def logistic_objective(k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float) -> Callable:
    """``α ↦ (L(α), ∇L(α))`` for ``L(α) = Σ_i ℓ(y_i, F_i) + λ'/2 αᵀKα``, ``F = f0/s + Kᵀα``.

    ``ℓ`` is softmax cross-entropy over the ``c`` outputs, or the logistic loss
    ``log(1 + exp(-y F))`` in binary mode. ``∇L = K (∂ℓ/∂F) + λ' K α`` for symmetric K.
    """
    n, c = k.shape[:2]
    kf = flat(k)
    o = offset(f0, scale).reshape(-1)
    y = targets(labels, c)
    lam_abs = lam * sigma_max(k)

    def fun(alpha: np.ndarray) -> tuple[float, np.ndarray]:
        scores = (o + kf.T @ alpha).reshape(n, c)
        if c == 1:
            margin = y[:, 0] * scores[:, 0]
            loss = np.logaddexp(0, -margin).sum()
            dscore = (-y[:, 0] * scipy.special.expit(-margin))[:, None]
        else:
            lse = scipy.special.logsumexp(scores, axis=1)
            loss = (lse - (scores * y).sum(1)).sum()
            dscore = np.exp(scores - lse[:, None]) - y
        ka = kf @ alpha
        return loss + 0.5 * lam_abs * alpha @ ka, kf @ dscore.reshape(-1) + lam_abs * ka

    return fun


def logistic(
    k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float, max_iter: int = 5000
) -> KernelFit:
    """Kernel logistic regression (softmax over the outputs; sigmoid in binary mode), by L-BFGS.

    Minimizes ``Σ_i ℓ(y_i, F_i) + λ'/2 αᵀKα`` with ``F = f0/s + Kᵀα`` (see ``logistic_objective``).
    With ``λ = 0`` on separable data the loss has no minimizer; the iteration cap stops it.
    """
    n, c = k.shape[:2]
    fun = logistic_objective(k, labels, f0, lam, scale)
    result = scipy.optimize.minimize(
        fun, np.zeros(n * c), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-12, "ftol": 0}
    )
    return KernelFit(result.x.reshape(n, c), np.zeros(c), scale)


def _pm_targets(labels: np.ndarray, c: int) -> np.ndarray:
    return targets(labels, c) if c == 1 else 2 * targets(labels, c) - 1


def lssvm(k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float) -> KernelFit:
    """Least-squares SVM (Suykens) with bias and offset; one-vs-rest on ``K[:, a, :, a]``.

    Per class, with ``Ω_ij = y_i y_j K_ij``, ``γ = 1/λ'`` and ``o = f0/s``:

        [ 0   yᵀ        ] [ b ]   [ 0         ]
        [ y   Ω + I/γ   ] [ a ] = [ 1 - y ∘ o ],     F(x) = o(x) + Σ_i a_i y_i K(x_i, x) + b.
    """
    n, c = k.shape[:2]
    y = _pm_targets(labels, c)
    o = offset(f0, scale)
    ridge_term = lam * sigma_max(k)
    alpha, bias = np.zeros((n, c)), np.zeros(c)
    for a in range(c):
        kaa, ya = np.asarray(k[:, a, :, a], np.float64), y[:, a]
        system = np.zeros((n + 1, n + 1))
        system[0, 1:], system[1:, 0] = ya, ya
        system[1:, 1:] = ya[:, None] * ya[None] * kaa + ridge_term * np.eye(n)
        rhs = np.concatenate([[0.0], 1 - ya * o[:, a]])
        solution = scipy.linalg.lstsq(system, rhs)[0]
        bias[a], alpha[:, a] = solution[0], solution[1:] * ya
    return KernelFit(alpha, bias, scale, per_class=True)


def asym_lssvm(k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float) -> KernelFit:
    """Least-squares SVM for an asymmetric kernel ``K(x, x') = <φ(x), ψ(x')>`` (He et al. 2022, AsK-LS).

    For the A-SignGD kernel ``φ = sign ∇f`` (the source, train side) and ``ψ = ∇f``. The primal

        min ωᵀν + γ/2 Σ e_i² + γ/2 Σ r_i²
        s.t. y_i (ωᵀψ(x_i) + b1 + o_i) = 1 - e_i,   y_i (νᵀφ(x_i) + b2 + o_i) = 1 - r_i

    has stationarity ``ω = Σ β_i y_i φ(x_i)``, ``ν = Σ α_i y_i ψ(x_i)``, ``e = α/γ``, ``r = β/γ``,
    hence, with ``H_ij = y_i y_j K(x_i, x_j)`` and ``γ = 1/λ'``, the symmetric linear system

        [ 0  0  yᵀ    0    ] [ b1 ]   [ 0         ]
        [ 0  0  0     yᵀ   ] [ b2 ] = [ 0         ]
        [ y  0  I/γ   Hᵀ   ] [ α  ]   [ 1 - y ∘ o ]
        [ 0  y  H     I/γ  ] [ β  ]   [ 1 - y ∘ o ]

    The returned predictor is the source one, ``F(x) = o(x) + Σ_i β_i y_i K(x_i, x) + b1``: it needs
    only ``K(X_train, x)``, the direction Adam's sign-descent moves ``f(x)`` in. For a symmetric
    kernel ``α = β`` and ``b1 = b2``, and this is ``lssvm``. One-vs-rest when ``c > 1``.
    """
    n, c = k.shape[:2]
    y = _pm_targets(labels, c)
    o = offset(f0, scale)
    ridge_term = lam * sigma_max(k)
    alpha, bias = np.zeros((n, c)), np.zeros(c)
    for a in range(c):
        kaa, ya = np.asarray(k[:, a, :, a], np.float64), y[:, a]
        h = ya[:, None] * ya[None] * kaa
        system = np.zeros((2 * n + 2, 2 * n + 2))
        system[0, 2 : n + 2] = system[2 : n + 2, 0] = ya
        system[1, n + 2 :] = system[n + 2 :, 1] = ya
        system[2 : n + 2, 2 : n + 2] = system[n + 2 :, n + 2 :] = ridge_term * np.eye(n)
        system[2 : n + 2, n + 2 :] = h.T
        system[n + 2 :, 2 : n + 2] = h
        r = 1 - ya * o[:, a]
        solution = scipy.linalg.lstsq(system, np.concatenate([[0.0, 0.0], r, r]))[0]
        bias[a], alpha[:, a] = solution[0], solution[n + 2 :] * ya
    return KernelFit(alpha, bias, scale, per_class=True)


SOLVERS: dict[str, Callable[..., KernelFit]] = {
    "ridge": ridge,
    "svm": svm,
    "logistic": logistic,
    "lssvm": lssvm,
    "asym-lssvm": asym_lssvm,
}
SYMMETRIC_SOLVERS = ("ridge", "svm", "logistic", "lssvm")  # for symmetric kernels; asym-lssvm takes A-SignGD's


Fit = TypeVar("Fit")


@dataclass(frozen=True)
class Selection(Generic[Fit]):
    """The dev-selected fit (a ``KernelFit``, or ``select_official``'s ``MixedFit``) and its hyperparameters."""

    fit: Fit
    lam: float
    scale: float
    dev_accuracy: float


def select(
    solver: str,
    k_train: np.ndarray,
    y_train: np.ndarray,
    f0_train: np.ndarray,
    k_dev: np.ndarray,
    y_dev: np.ndarray,
    f0_dev: np.ndarray,
    lambdas: tuple[float, ...] = LAMBDAS,
    scales: tuple[float, ...] = SCALES,
) -> Selection[KernelFit]:
    """Fit ``solver`` for every ``(λ, s)`` on train and keep the best dev accuracy (first on ties).

    ``k_train [n, c, n, c]`` is ``K(X_train, X_train)``, ``k_dev [n, c, d, c]`` is ``K(X_train, X_dev)``.
    """
    fit_fn = SOLVERS[solver]
    best: Selection[KernelFit] | None = None
    for lam, scale in itertools.product(lambdas, scales):
        fit = fit_fn(k_train, y_train, f0_train, lam, scale)
        accuracy = float(np.mean(predict_labels(fit.decision(k_dev, f0_dev)) == y_dev))
        if best is None or accuracy > best.dev_accuracy:
            best = Selection(fit, lam, scale, accuracy)
    assert best is not None
    return best


@dataclass(frozen=True)
class MixedFit:
    """LM-Kernel-FT's A-SignGD predictor: ``F(x) = o(x) + mix · ω(x) + (1 - mix) · ν(x)`` with
    ``ω(x)_b = Σ_i alpha[i,b] K(x_i, x)[b,b]`` (the kernel, sign on the train side) and
    ``ν(x)_b = Σ_i beta[i,b] K(x, x_i)[b,b]`` (its transpose, sign on the side of x)."""

    alpha: np.ndarray
    beta: np.ndarray
    mix: float
    scale: float

    def decision(self, k: np.ndarray, k_flipped: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """``F [m, c]`` from ``k = K(X_train, x)`` and ``k_flipped[i, :, j, :] = K(x_j, x_i)``, both
        ``[n, c, m, c]``, and ``f0 [m, c]``."""
        omega = np.einsum("ia,iaja->ja", self.alpha, np.asarray(k, np.float64))
        nu = np.einsum("ia,iaja->ja", self.beta, np.asarray(k_flipped, np.float64))
        return offset(f0, self.scale) + self.mix * omega + (1 - self.mix) * nu


def asym_official(k: np.ndarray, labels: np.ndarray, f0: np.ndarray, lam: float, scale: float, mix: float) -> MixedFit:
    """LM-Kernel-FT's asymmetric least-squares solver for the A-SignGD kernel (Malladi et al. 2023's
    code), one-vs-rest on ``K[:, a, :, a]`` when ``c > 1`` (their code is binary only).

    With the offset folded into the targets, ``Y_i = y_i - o_i`` (``y_i = ±1``, ``o = f0/s``), and
    ``H_ij = Y_i K(x_i, x_j) Y_j``, ``γ = 1/λ'``, it solves without biases (least squares)

        [ I/γ   H   ] [ a ]   [ 1 ]
        [ Hᵀ    I/γ ] [ b ] = [ 1 ],

    and predicts ``F(x) = o(x) + mix · Σ_i a_i Y_i K(x_i, x) + (1 - mix) · Σ_i b_i Y_i K(x, x_i)``. This is
    the bias-free AsK-LS system of ``asym_lssvm`` (whose β is ``a`` here and α is ``b``): its first
    predictor is ``asym_lssvm``'s source predictor, its second the target predictor, which needs the
    kernel with the sign on the evaluated example, and ``mix`` is tuned on dev. For a symmetric kernel
    ``a = b`` and the two predictors coincide.
    """
    n, c = k.shape[:2]
    y = _pm_targets(labels, c) - offset(f0, scale)
    ridge_term = lam * sigma_max(k)
    alpha, beta = np.zeros((n, c)), np.zeros((n, c))
    for a in range(c):
        ya = y[:, a]
        h = ya[:, None] * ya[None] * np.asarray(k[:, a, :, a], np.float64)
        system = np.block([[ridge_term * np.eye(n), h], [h.T, ridge_term * np.eye(n)]])
        solution = scipy.linalg.lstsq(system, np.ones(2 * n))[0]
        alpha[:, a], beta[:, a] = solution[:n] * ya, solution[n:] * ya
    return MixedFit(alpha, beta, mix, scale)


MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)


def select_official(
    k_train: np.ndarray, kf_train: np.ndarray, y_train: np.ndarray, f0_train: np.ndarray,
    k_dev: np.ndarray, kf_dev: np.ndarray, y_dev: np.ndarray, f0_dev: np.ndarray,
    lambdas: tuple[float, ...] = LAMBDAS, scales: tuple[float, ...] = SCALES, mixes: tuple[float, ...] = MIXES,
) -> Selection[MixedFit]:
    """``asym_official`` for every ``(λ, s, mix)``, the best dev accuracy kept (first on ties). ``k_*`` are
    ``K(X_train, ·)`` and ``kf_*`` the flipped kernels (``MixedFit.decision``)."""
    best: Selection[MixedFit] | None = None
    for lam, scale in itertools.product(lambdas, scales):
        solved = asym_official(k_train, y_train, f0_train, lam, scale, 1.0)
        for mix in mixes:
            fit = MixedFit(solved.alpha, solved.beta, mix, scale)
            accuracy = float(np.mean(predict_labels(fit.decision(k_dev, kf_dev, f0_dev)) == y_dev))
            if best is None or accuracy > best.dev_accuracy:
                best = Selection(fit, lam, scale, accuracy)
    assert best is not None
    return best
