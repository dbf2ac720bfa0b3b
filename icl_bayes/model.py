"""The Gaussian linear in-context learning model: a hidden concept w, and prompts drawn given it.

A prompt is T + 1 examples ``(x_t, y_t)``, i.i.d. given the concept ``w``:

    x_t ~ N(0, Σ) in R^d,     y_t = <w, x_t> + ε_t,     ε_t ~ N(0, σ²).

The concept has a prior: Gaussian ``w ~ N(0, τ² I)``, or a finite set of M concepts ``w_1..w_M``
with weights ``π_m``. Predicting ``y_{t+1}`` from the first t examples (t = 0..T) uses example t + 1
as the query, which is independent of the first t: one prompt gives the error at every prompt length.

Each prior knows its Bayes-optimal predictor and what the theory says of it (``icl_bayes.bma``):
``predictors`` (BMA, and for a finite prior its one-layer attention form), ``predictive`` (BMA's mean
and the log density it gives each label), ``bayes_risk`` (closed form, where there is one) and
``regret_reference`` (the regret's closed form or its bound, ``regret_is_exact`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from icl_bayes import attention, bma, rates
from ntk_lab.errors import NtkLabError


class InvalidArgument(NtkLabError, ValueError):
    """A bad model argument, said in one line (``ntk_lab.errors.NtkLabError``)."""


#: the named random streams of a run: each draw comes from its own stream ``(seed, STREAMS[name], *index)``
#: (``numpy.random.default_rng`` takes the tuple), so no two uses of one seed share or overlap draws
STREAMS = {"concepts": 1, "pretraining": 2, "pool": 3, "evaluation": 4, "curve": 5, "validation": 6}
Seed = int | tuple[int, ...]


def stream(seed: int, name: str, *index: int) -> tuple[int, ...]:
    """The seed of stream ``name`` (and ``index``, e.g. a step) of a run with ``seed``."""
    return (seed, STREAMS[name], *index)


@dataclass(frozen=True)
class GaussianPrior:
    """``w ~ N(0, τ² I)``."""

    tau: float = 1.0
    regret_is_exact: ClassVar[bool] = True

    def sample(self, rng: np.random.Generator, n: int, d: int) -> np.ndarray:
        """``[n, d]`` concepts."""
        return self.tau * rng.standard_normal((n, d))

    def predictive(self, x: np.ndarray, y: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """BMA's predictive mean (ridge with λ = σ²/τ²) and the log density it gives each label, ``[n, T+1]`` each."""
        mean, var = bma.gaussian_bma(x, y, sigma, self.tau)
        return mean, bma.gaussian_log_density(y, mean, var)

    def predictors(self, x: np.ndarray, y: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
        """``{"bma": [n, T+1]}``."""
        return {"bma": self.predictive(x, y, sigma)[0]}

    def bayes_risk(self, x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
        """BMA's squared error given the covariates, ``σ²(1 + xᵀ P_t x)``, ``[n, T+1]``."""
        _, leverage = bma.ridge_online(x, y, sigma**2 / self.tau**2)
        return sigma**2 * (1 + leverage)

    def regret_reference(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
        """The expected cumulative regret given the covariates, ``½ Σ_{s<t} log(1 + x_sᵀ P_s x_s)``, ``[n, T+1]``."""
        _, leverage = bma.ridge_online(x, y, sigma**2 / self.tau**2)
        return bma.gaussian_regret_closed_form(leverage)

    def regret_upper(self, t: np.ndarray, sigma: float, cov: np.ndarray | None, d: int) -> np.ndarray:
        """Jensen's upper bound on the expected regret, ``½ log det(I + (τ²/σ²) tΣ)`` (``rates.gaussian_regret_jensen``)."""
        return rates.gaussian_regret_jensen(t, sigma, self.tau, cov, d)


@dataclass(frozen=True)
class FinitePrior:
    """``w`` uniform (or ``weights``-weighted) over the rows of ``concepts [M, d]``."""

    concepts: np.ndarray
    weights: np.ndarray
    regret_is_exact: ClassVar[bool] = False

    @classmethod
    def draw(cls, m: int, d: int, seed: Seed = 0, tau: float = 1.0, weights: np.ndarray | None = None) -> FinitePrior:
        """M concepts drawn once from ``N(0, τ² I)`` with ``seed`` (an int or a ``stream``); uniform weights by default."""
        if m < 1:
            raise InvalidArgument(f"the number of concepts M must be at least 1, got {m}")
        concepts = tau * np.random.default_rng(seed).standard_normal((m, d))
        weights = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        return cls(concepts, weights)

    def sample_index(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``[n]`` concept indices drawn from the weights."""
        return rng.choice(len(self.weights), size=n, p=self.weights)

    def sample(self, rng: np.random.Generator, n: int, d: int) -> np.ndarray:
        return self.concepts[self.sample_index(rng, n)]

    def predictive(self, x: np.ndarray, y: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """BMA's predictive mean (the posterior-weighted concepts) and the log density it gives each label."""
        return bma.finite_bma(x, y, self, sigma)

    def predictors(self, x: np.ndarray, y: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
        """``{"bma", "concept_attention"}``: BMA and its one-layer attention form (the toolkit's construction)."""
        return {"bma": self.predictive(x, y, sigma)[0], "concept_attention": attention.concept_attention(x, y, self, sigma)}

    def bayes_risk(self, x: np.ndarray, y: np.ndarray, sigma: float) -> None:
        """No closed form."""
        return None

    def regret_upper(self, t: np.ndarray, sigma: float, cov: np.ndarray | None, d: int) -> None:
        """The bound is ``regret_reference`` itself."""
        return None

    def regret_reference(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
        """The bound ``log(1/π(w*))`` on every prompt's cumulative regret (``w``: each prompt's concept), ``[n, T+1]``."""
        index = np.argmin(np.linalg.norm(w[:, None] - self.concepts[None], axis=2), axis=1)
        return np.broadcast_to(-np.log(self.weights[index])[:, None], y.shape)


Prior = GaussianPrior | FinitePrior


@dataclass(frozen=True)
class LinearICL:
    """The data model: dimension ``d``, noise standard deviation ``sigma``, covariance ``cov`` (default I)."""

    d: int
    sigma: float
    prior: Prior
    cov: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.d < 1:
            raise InvalidArgument(f"d must be at least 1, got {self.d}")
        if not self.sigma > 0:
            raise InvalidArgument(f"the noise standard deviation must be positive, got {self.sigma}")
        if isinstance(self.prior, FinitePrior) and self.prior.concepts.shape[1] != self.d:
            raise InvalidArgument(f"the concepts have dimension {self.prior.concepts.shape[1]}, not d = {self.d}")

    def covariates(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        """``[*shape, d]`` draws of ``x ~ N(0, Σ)``."""
        z = rng.standard_normal((*shape, self.d), dtype=dtype)
        return z if self.cov is None else z @ np.linalg.cholesky(self.cov).T.astype(dtype)

    def sample(self, n: int, T: int, seed: Seed = 0, misspecified: float = 0.0, dtype: type = np.float64) -> Prompts:
        """``n`` prompts of ``T + 1`` examples, from ``seed`` (an int or a ``stream``; ``dtype``: float64, or float32).

        ``misspecified = ρ``: each label is, with probability ρ, drawn from a wrong mapping
        ``y = <w', x> + ε`` with ``w'`` a fresh draw from the prior (the query labels never are).
        """
        if T < 1:
            raise InvalidArgument(f"T must be at least 1, got {T}")
        if n < 1:
            raise InvalidArgument(f"the number of prompts must be at least 1, got {n}")
        if not 0 <= misspecified <= 1:
            raise InvalidArgument(f"the misspecified fraction must lie in [0, 1], got {misspecified}")
        rng = np.random.default_rng(seed)
        w: np.ndarray = self.prior.sample(rng, n, self.d).astype(dtype)
        x = self.covariates(rng, (n, T + 1), dtype)
        clean = np.einsum("ntd,nd->nt", x, w)
        noise = self.sigma * rng.standard_normal((n, T + 1), dtype=dtype)
        y = clean + noise
        if misspecified > 0:
            wrong = np.einsum("ntd,nd->nt", x, self.prior.sample(rng, n, self.d)) + noise
            flip = rng.random((n, T + 1)) < misspecified
            flip[:, -1] = False
            y = np.where(flip, wrong, y)
        return Prompts(x, y, w, clean)


@dataclass(frozen=True)
class Prompts:
    """``x [n, T+1, d]``, ``y [n, T+1]``, the concepts ``w [n, d]`` and the noiseless ``<w, x_t>`` ``[n, T+1]``."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    clean: np.ndarray

    @property
    def T(self) -> int:
        return self.x.shape[1] - 1
