"""The logistic-regression probe that initialises standard fine-tuning's new head (Malladi et al. 2023).

Without a prompt, fine-tuning trains a new linear head ``F = h W + b`` on the first token's final
hidden state ``h [n, d]``. As LM-Kernel-FT does (``LinearHeadTrainer``: scikit-learn's
``LogisticRegressionCV``), the head starts from the multinomial logistic regression fitted on the
k-shot train set's features, not from a random ``N(0, 0.02²)`` head (whose small weights make the
kernel close to a linear probe's):

    min_{W, b}  Σ_i [logsumexp(h_i W + b) - (h_i W + b)_{y_i}] + 1/(2C) ‖W‖²_F     (b not penalized)

with C from ``logspace(-4, 4, 10)`` chosen by 5-fold stratified cross-validation accuracy on the train
set (first best on ties, then refitted on all of it), solved by L-BFGS in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special

CS = tuple(float(c) for c in np.logspace(-4, 4, 10))
FOLDS = 5


@dataclass(frozen=True)
class Probe:
    """A fitted head: ``kernel [d, c]``, ``bias [c]``, and the C it was fitted with."""

    kernel: np.ndarray
    bias: np.ndarray
    C: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``h W + b`` ``[n, c]``."""
        return np.asarray(features, np.float64) @ self.kernel + self.bias


def objective(features: np.ndarray, labels: np.ndarray, num_classes: int, C: float):
    """``w ↦ (L(w), ∇L(w))`` for the penalized multinomial log-loss, ``w = vec([W; b])`` ``[(d+1)·c]``."""
    h = np.asarray(features, np.float64)
    n, d = h.shape
    onehot = np.eye(num_classes)[np.asarray(labels)]

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = w[: d * num_classes].reshape(d, num_classes), w[d * num_classes :]
        scores = h @ kernel + bias
        lse = scipy.special.logsumexp(scores, axis=1)
        loss = (lse - (scores * onehot).sum(1)).sum() + 0.5 / C * (kernel**2).sum()
        dscores = np.exp(scores - lse[:, None]) - onehot
        grad = np.concatenate([(h.T @ dscores + kernel / C).reshape(-1), dscores.sum(0)])
        return float(loss), grad

    return fun


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int, C: float) -> Probe:
    """The penalized multinomial logistic regression at one ``C``."""
    d = np.shape(features)[1]
    result = scipy.optimize.minimize(objective(features, labels, num_classes, C), np.zeros((d + 1) * num_classes),
                                     jac=True, method="L-BFGS-B", options={"maxiter": 10000, "gtol": 1e-9, "ftol": 0})
    w = result.x
    return Probe(w[: d * num_classes].reshape(d, num_classes), w[d * num_classes :], C)


def stratified_folds(labels: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Fold index per example ``[n]``: each class's examples, in order, dealt round-robin to the folds."""
    labels = np.asarray(labels)
    fold = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        fold[members] = np.arange(len(members)) % folds
    return fold


def fit_cv(features: np.ndarray, labels: np.ndarray, num_classes: int, cs: tuple[float, ...] = CS,
           folds: int = FOLDS) -> Probe:
    """``fit`` at the C with the best mean held-out accuracy over stratified folds, refitted on all."""
    labels = np.asarray(labels)
    folds = min(folds, int(np.bincount(labels).min()))
    if folds < 2:  # one example of some class: nothing to hold out, scikit-learn's default C
        return fit(features, labels, num_classes, 1.0)
    fold = stratified_folds(labels, folds)
    scores = []
    for C in cs:
        correct = []
        for k in np.unique(fold):
            held = fold == k
            probe = fit(features[~held], labels[~held], num_classes, C)
            correct.append(np.mean(probe.logits(features[held]).argmax(1) == labels[held]))
        scores.append(np.mean(correct))
    return fit(features, labels, num_classes, cs[int(np.argmax(scores))])
