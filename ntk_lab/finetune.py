"""Prompt-based fine-tuning with optax, and the diagnostics that test whether it behaves like a kernel.

Training minimizes the mean loss over the k-shot train set of the classifier ``f(θ, x) -> [b, C]``
(the label words' logits), moving only the parameters a ``param_filter`` selects:

    cross-entropy   ℓ(F, y) = logsumexp(F) - F_y
    mse             ℓ(F, y) = ½ ||F - e_y||²

with SGD (``θ ← θ - η ∇L``), Adam, or SignGD (``θ ← θ - η sign ∇L``). There is no dropout, and the
minibatch order comes from the seed, so a run is deterministic. The learning rate and the number of
steps are chosen on the k-shot dev split: every ``eval_every`` steps the dev accuracy is measured
and the parameters at the best (earliest on ties) checkpoint of the best learning rate are kept.

Diagnostics (Malladi et al. 2023):

- linearization: ``f_lin(θ_T, x) = f(θ0, x) + J0(x)(θ_T - θ0)`` on test, against ``f(θ_T, x)``;
  ``linearization_fraction = (L(f0) - L(f_lin)) / (L(f0) - L(f_T))`` is the share of fine-tuning's
  test-loss improvement over the pre-trained model that the linearized model recovers (1 when
  fine-tuning is exactly kernel behaviour).
- kernel drift: ``||K(θ_T) - K(θ0)||_F / ||K(θ0)||_F`` on the train set.
- order agreement: the share of test examples two minibatch runs that differ only in their example
  order label alike, the ceiling a kernel-vs-fine-tuning agreement is read against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntk_lab.pytrees import batch_rows, merge_params, num_examples, split_params, take_examples
from ntk_lab.linearized import linearize

OPTIMIZERS = ("sgd", "adam", "signgd")
LOSSES = ("ce", "mse")
#: the kernel whose dynamics each optimizer follows in the lazy regime
KERNEL_OF = {"sgd": "sgd", "signgd": "signgd", "adam": "asigngd"}
#: the examples per step each kernel's derivation covers (None: the full batch). The SGD kernel describes
#: gradient descent on the mean loss, ``Δf(x) = -η/n Σ_i ℓ'_i K(x_i, x)``. The A-SignGD kernel describes
#: sign steps on one example at a time: ``Δf(x) = -η sign(ℓ'_i) <sign ∇f(x_i), ∇f(x)>`` (binary output),
#: and Adam's first step is such a sign step. A full-batch sign step ``-η sign(∇L)`` moves f(x) by
#: ``-η <sign ∇L, ∇f(x)>`` instead, which no kernel of single examples gives.
REGIME_BATCH_SIZE = {"sgd": None, "adam": 1, "signgd": 1}


_FACTORIES = {"sgd": optax.sgd, "adam": optax.adam, "signgd": optax.sign_sgd}


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    """``sgd``: ``-η g``; ``adam``: ``-η m̂ / (√v̂ + ε)``; ``signgd``: ``-η sign(g)``.

    The learning rate is a hyperparameter in the optimizer state (``optax.inject_hyperparams``), so
    one compiled step serves every learning rate.
    """
    if name not in _FACTORIES:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return optax.inject_hyperparams(_FACTORIES[name])(learning_rate=lr)


def loss_value(scores: jax.Array, labels: jax.Array, loss: str) -> jax.Array:
    """Mean loss over the batch: cross-entropy ``logsumexp(F) - F_y`` or MSE ``½ ||F - e_y||²``."""
    if loss == "ce":
        return jnp.mean(jax.nn.logsumexp(scores, axis=1) - jnp.take_along_axis(scores, labels[:, None], 1)[:, 0])
    if loss == "mse":
        return jnp.mean(0.5 * jnp.sum((scores - jax.nn.one_hot(labels, scores.shape[1])) ** 2, axis=1))
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax is the label."""
    return float(np.mean(np.asarray(scores).argmax(1) == np.asarray(labels)))


@dataclass
class Run:
    """One learning rate's training run: its curve, and the parameters at its best dev checkpoint."""

    lr: float
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    dev_accuracy: list[float] = field(default_factory=list)
    best_step: int = 0
    best_dev: float = -np.inf
    best_theta: Any = None


@dataclass
class FinetuneResult:
    """The dev-selected fine-tuned parameters and every learning rate's curve."""

    params: Any  # the full parameter pytree at the selected checkpoint
    lr: float
    step: int
    dev_accuracy: float
    runs: list[Run]


def _evaluate(apply: Callable, params: Any, x: Any, batch_size: int) -> np.ndarray:
    """``apply(params, batch)`` over ``x`` in batches of ``batch_size`` (the last one padded)."""
    n = num_examples(x)
    out = []
    for start in range(0, n, batch_size):
        out.append(np.asarray(apply(params, take_examples(x, batch_rows(n, start, batch_size))))[: min(batch_size, n - start)])
    return np.concatenate(out)


@functools.lru_cache(maxsize=32)
def _compiled(f: Callable, treedef: Any, chosen: tuple, optimizer: str, loss: str) -> tuple[Callable, Callable]:
    """Jitted ``step(θ, frozen, state, x, y)`` and ``outputs(θ, frozen, x)``, built once per
    (classifier, parameter layout, optimizer, loss) and reused across seeds and learning rates."""
    opt = make_optimizer(optimizer, 0.0)

    def outputs(theta, frozen, x):
        return f(merge_params(theta, frozen, treedef, chosen), x)

    def step(theta, frozen, state, x, y):
        value, grads = jax.value_and_grad(lambda t: loss_value(outputs(t, frozen, x), y, loss))(theta)
        updates, state = opt.update(grads, state, theta)
        return optax.apply_updates(theta, updates), state, value

    return jax.jit(step), jax.jit(outputs)


def train(
    f: Callable[[Any, Any], jax.Array],
    params0: Any,
    x_train: Any,
    y_train: np.ndarray,
    x_dev: Any,
    y_dev: np.ndarray,
    *,
    optimizer: str,
    lrs: tuple[float, ...],
    steps: int,
    eval_every: int = 50,
    loss: str = "ce",
    batch_size: int | None = None,
    param_filter: Callable[[tuple[str, ...]], bool] | None = None,
    seed: int | tuple[int, ...] = 0,
    eval_batch_size: int = 64,
    keep: str = "best",
    desc: str = "fine-tune",
) -> FinetuneResult:
    """Fine-tune ``f`` from ``params0`` for each learning rate; keep the best dev checkpoint.

    ``x_train`` / ``x_dev`` are batches (pytrees with a leading example axis), ``y`` their labels
    ``[n]``. ``batch_size=None`` is full-batch gradient descent; otherwise each epoch visits a
    permutation of the train set drawn from ``seed`` (an int, or a tuple naming its own stream of
    ``numpy.random.default_rng``). Step 0 (the pre-trained model) is a checkpoint
    too. A learning rate whose loss becomes NaN or Inf stops there and keeps its best checkpoint.
    ``keep="last"`` keeps each run's last parameters instead of its best dev checkpoint.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    from ntk_lab.progress import progress

    theta0, frozen, treedef, chosen = split_params(params0, param_filter)
    step_fn, outputs = _compiled(f, treedef, chosen, optimizer, loss)
    apply = lambda theta, xb: outputs(theta, frozen, xb)
    n = num_examples(x_train)
    y_train_j = jnp.asarray(y_train)
    runs = []
    for lr in lrs:
        opt = make_optimizer(optimizer, lr)
        theta, state = theta0, opt.init(theta0)
        rng = np.random.default_rng(seed)
        order = np.arange(n)
        run = Run(lr)
        value = float(loss_value(apply(theta, x_train), y_train_j, loss))
        for t in progress(range(steps + 1), desc=f"{desc} lr={lr:g}", unit="step", leave=False):
            if t % eval_every == 0 or t == steps:
                dev = accuracy(_evaluate(apply, theta, x_dev, eval_batch_size), y_dev)
                run.steps.append(t)
                run.train_loss.append(value)
                run.dev_accuracy.append(dev)
                if dev > run.best_dev or keep == "last":
                    run.best_step, run.best_dev, run.best_theta = t, dev, theta
            if t == steps or not np.isfinite(value):
                break
            if batch_size is None or batch_size >= n:
                x, y = x_train, y_train_j
            else:
                position = (t * batch_size) % n
                if position < batch_size:
                    order = rng.permutation(n)
                rows = order[position : position + batch_size]
                x, y = take_examples(x_train, rows), y_train_j[rows]
            theta, state, value = step_fn(theta, frozen, state, x, y)
            value = float(value)
        runs.append(run)
    best = max(runs, key=lambda r: r.best_dev)  # first on ties: the smallest learning rate listed first
    params = merge_params(best.best_theta, frozen, treedef, chosen)
    return FinetuneResult(params, best.lr, best.best_step, best.best_dev, runs)


def linearized_outputs(
    f: Callable[[Any, Any], jax.Array],
    params0: Any,
    params: Any,
    x: Any,
    batch_size: int = 64,
) -> np.ndarray:
    """``f(θ0, x) + J0(x) (θ - θ0)`` ``[n, C]``, by one JVP per batch."""
    f_lin = _linearized(f)
    return _evaluate(lambda p, xb: f_lin(params0, p, xb), params, x, batch_size)


@functools.lru_cache(maxsize=8)
def _linearized(f: Callable) -> Callable:
    """Jitted ``(θ0, θ, x) -> f_lin(θ, x)`` around ``θ0`` (θ0 an argument, not a baked-in constant)."""
    return jax.jit(lambda params0, params, x: linearize(f, params0)(params, x))


def linearization_fraction(
    f0: np.ndarray, f_lin: np.ndarray, f_ft: np.ndarray, labels: np.ndarray, loss: str = "ce"
) -> float:
    """``(L(f0) - L(f_lin)) / (L(f0) - L(f_T))`` on the given outputs ``[n, C]`` (NaN if FT did not move L)."""
    value = lambda s: float(loss_value(jnp.asarray(s, jnp.float32), jnp.asarray(labels), loss))
    gain = value(f0) - value(f_ft)
    return float("nan") if gain == 0 else (value(f0) - value(f_lin)) / gain


def kernel_drift(k0: np.ndarray, k_t: np.ndarray) -> float:
    """``||K_T - K_0||_F / ||K_0||_F``."""
    k0, k_t = np.asarray(k0, np.float64), np.asarray(k_t, np.float64)
    return float(np.linalg.norm(k_t - k0) / np.linalg.norm(k0))
