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
- kernel behaviour as Definition 3.2 defines it, at every logged step t on ``track`` dev examples:
  the step's linearization error ``‖Δf - J(θ_{t-1}) Δθ‖ / ‖Δf‖`` with ``Δf = f(θ_t) - f(θ_{t-1})`` and
  ``Δθ = θ_t - θ_{t-1}`` (the step is first order in Δθ), and the feature change
  ``‖J(θ_t) - J(θ_0)‖_F / ‖J(θ_0)‖_F`` (the features, ∇f, stay fixed). The end-to-end
  ``linearization_fraction`` is a ratio of loss gains: unstable when fine-tuning gains little.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntk_lab.linearized import linearize
from ntk_lab.pytrees import (
    batch_rows,
    merge_params,
    num_examples,
    split_params,
    take_examples,
)

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
    step_linearization: list[float] = field(default_factory=list)  # per logged step (nan at step 0)
    feature_change: list[float] = field(default_factory=list)  # per logged step
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
    """``apply(params, batch)`` over ``x`` in batches of ``batch_size`` (the last one padded): ``[n, C]``,
    or ``[L, n, C]`` when ``apply`` maps L stacked parameter sets."""
    n = num_examples(x)
    out = []
    for start in range(0, n, batch_size):
        scores = np.asarray(apply(params, take_examples(x, batch_rows(n, start, batch_size))))
        out.append(scores[..., : min(batch_size, n - start), :])
    return np.concatenate(out, axis=-2)


@functools.lru_cache(maxsize=32)
def _compiled(f: Callable, step_f: Callable, treedef: Any, chosen: tuple, optimizer: str,
              loss: str) -> tuple[Callable, Callable]:
    """Jitted ``step(θ, frozen, state, x, y)`` and ``outputs(θ, frozen, x)``, built once per
    (classifiers, parameter layout, optimizer, loss) and reused across seeds and learning rates."""
    step, outputs = _step_and_outputs(f, step_f, treedef, chosen, optimizer, loss)
    return jax.jit(step), jax.jit(outputs)


@functools.lru_cache(maxsize=32)
def _compiled_together(f: Callable, step_f: Callable, treedef: Any, chosen: tuple, optimizer: str,
                       loss: str) -> tuple[Callable, Callable]:
    """``_compiled``'s step and outputs mapped over a leading axis of stacked parameters and optimizer
    states (one per learning rate): L runs advance in one program on the same batch."""
    step, outputs = _step_and_outputs(f, step_f, treedef, chosen, optimizer, loss)
    return jax.jit(jax.vmap(step, in_axes=(0, None, 0, None, None))), jax.jit(jax.vmap(outputs, in_axes=(0, None, None)))


def _step_and_outputs(f: Callable, step_f: Callable, treedef: Any, chosen: tuple, optimizer: str,
                      loss: str) -> tuple[Callable, Callable]:
    """``step(θ, frozen, state, x, y) -> (θ', state', loss)``, the loss and its gradient by ``step_f``,
    and ``outputs(θ, frozen, x) -> [b, C]`` by ``f``."""
    opt = make_optimizer(optimizer, 0.0)

    def outputs(theta, frozen, x):
        return f(merge_params(theta, frozen, treedef, chosen), x)

    def step(theta, frozen, state, x, y):
        def trained(t):  # the loss in float32 at least, whatever the variant computes in
            scores = step_f(merge_params(t, frozen, treedef, chosen), x)
            return scores.astype(jnp.promote_types(scores.dtype, jnp.float32))

        value, grads = jax.value_and_grad(lambda t: loss_value(trained(t), y, loss))(theta)
        updates, state = opt.update(grads, state, theta)
        return optax.apply_updates(theta, updates), state, value

    return step, outputs


@functools.lru_cache(maxsize=32)
def _behaviour(f: Callable, treedef: Any, chosen: tuple) -> tuple[Callable, Callable]:
    """Jitted ``step_error(θ_prev, θ, frozen, x) -> (‖Δf - J Δθ‖², ‖Δf‖²)`` and
    ``jacobian_change(θ, θ0, frozen, x1) -> (‖J(θ) - J(θ0)‖²_F, ‖J(θ0)‖²_F)`` on one example ``x1``."""

    def outputs(theta, frozen, x):
        return f(merge_params(theta, frozen, treedef, chosen), x)

    def step_error(previous, theta, frozen, x):
        delta = jax.tree_util.tree_map(jnp.subtract, theta, previous)
        before, along = jax.jvp(lambda t: outputs(t, frozen, x), (previous,), (delta,))
        moved = outputs(theta, frozen, x) - before
        return jnp.sum((moved - along) ** 2), jnp.sum(moved**2)

    def jacobian_change(theta, theta0, frozen, x1):
        jac = lambda t: jax.jacrev(lambda u: outputs(u, frozen, x1)[0])(t)
        now, start = jac(theta), jac(theta0)
        square = lambda tree: sum(jnp.sum(leaf.astype(jnp.float32) ** 2) for leaf in jax.tree_util.tree_leaves(tree))
        return square(jax.tree_util.tree_map(jnp.subtract, now, start)), square(start)

    return jax.jit(step_error), jax.jit(jacobian_change)


def kernel_behaviour(f: Callable, treedef: Any, chosen: tuple, frozen: Any, theta0: Any, previous: Any, theta: Any,
                     x: Any) -> tuple[float, float]:
    """Definition 3.2's two conditions at one step on the examples ``x``: the step's relative
    linearization error (nan when the step did not move f) and the relative feature change."""
    step_error, jacobian_change = _behaviour(f, treedef, chosen)
    residual, moved = (float(v) for v in step_error(previous, theta, frozen, x))
    change, norm = 0.0, 0.0
    for i in range(num_examples(x)):
        a, b = jacobian_change(theta, theta0, frozen, take_examples(x, np.array([i])))
        change, norm = change + float(a), norm + float(b)
    error = float(np.sqrt(residual / moved)) if moved > 0 else float("nan")
    return error, float(np.sqrt(change / norm)) if norm > 0 else float("nan")


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
    track: int = 0,
    together: bool = False,
    step_f: Callable[[Any, Any], jax.Array] | None = None,
    desc: str = "fine-tune",
) -> FinetuneResult:
    """Fine-tune ``f`` from ``params0`` for each learning rate; keep the best dev checkpoint.

    ``x_train`` / ``x_dev`` are batches (pytrees with a leading example axis), ``y`` their labels
    ``[n]``. ``batch_size=None`` is full-batch gradient descent; otherwise each epoch visits a
    permutation of the train set drawn from ``seed`` (an int, or a tuple naming its own stream of
    ``numpy.random.default_rng``), the same for every learning rate. Step 0 (the pre-trained model) is a checkpoint
    too. A learning rate whose loss becomes NaN or Inf stops there and keeps its best checkpoint.
    ``keep="last"`` keeps each run's last parameters instead of its best dev checkpoint. ``track > 0``
    measures Definition 3.2's kernel behaviour (``kernel_behaviour``) at every logged step on the
    first ``track`` dev examples (``Run.step_linearization``, ``Run.feature_change``).
    ``together=True`` trains every learning rate at once, their parameters and optimizer states
    stacked and the step vmapped over them (one program; fills an accelerator, holds L copies of
    the parameters and optimizer state), to the sequential runs' results up to float rounding.
    ``step_f`` (default ``f``): the classifier whose loss gradient the optimizer steps on, the same
    function of the same parameters computed another way (``LoadedMaskedLM.variant``: bfloat16 for
    mixed precision, the parameters and optimizer state staying float32); ``f`` measures the dev
    accuracy that selects the checkpoint and Definition 3.2's kernel behaviour (the training loss
    logged after step 0 is the one ``step_f`` computed for its step).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    split = split_params(params0, param_filter)
    groups = [tuple(lrs)] if together and len(lrs) > 1 else [(lr,) for lr in lrs]
    runs = [run for group in groups
            for run in _fit(f, split, group, x_train, y_train, x_dev, y_dev, optimizer=optimizer, steps=steps,
                            eval_every=eval_every, loss=loss, batch_size=batch_size, seed=seed,
                            eval_batch_size=eval_batch_size, keep=keep, track=track, step_f=step_f or f, desc=desc)]
    best = max(runs, key=lambda r: r.best_dev)  # first on ties: the smallest learning rate listed first
    _, frozen, treedef, chosen = split
    params = merge_params(best.best_theta, frozen, treedef, chosen)
    return FinetuneResult(params, best.lr, best.best_step, best.best_dev, runs)


def _fit(f: Callable, split: tuple, lrs: tuple[float, ...], x_train: Any, y_train: np.ndarray, x_dev: Any,
         y_dev: np.ndarray, *, optimizer: str, steps: int, eval_every: int, loss: str, batch_size: int | None,
         seed: int | tuple[int, ...], eval_batch_size: int, keep: str, track: int, step_f: Callable,
         desc: str) -> list[Run]:
    """``train``'s loop for the learning rates ``lrs``: one run (unstacked), or several stacked along a
    leading axis and stepped together."""
    from ntk_lab.progress import progress

    theta0, frozen, treedef, chosen = split
    together = len(lrs) > 1
    if together:
        step_fn, outputs = _compiled_together(f, step_f, treedef, chosen, optimizer, loss)
        stack = lambda trees: jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)
        theta = stack([theta0] * len(lrs))
        state = stack([make_optimizer(optimizer, lr).init(theta0) for lr in lrs])
        pick = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)
    else:
        step_fn, outputs = _compiled(f, step_f, treedef, chosen, optimizer, loss)
        theta, state = theta0, make_optimizer(optimizer, lrs[0]).init(theta0)
        pick = lambda tree, i: tree
    apply = lambda theta, xb: outputs(theta, frozen, xb)
    n = num_examples(x_train)
    y_train_j = jnp.asarray(y_train)
    x_track = take_examples(x_dev, np.arange(min(track, num_examples(x_dev)))) if track > 0 else None
    runs = [Run(lr) for lr in lrs]
    active = list(range(len(lrs)))
    previous = theta
    rng = np.random.default_rng(seed)
    order = np.arange(n)
    first = np.asarray(apply(theta, x_train)).reshape(len(lrs), n, -1)
    values = np.array([float(loss_value(jnp.asarray(scores), y_train_j, loss)) for scores in first])
    label = ",".join(f"{lr:g}" for lr in lrs)
    for t in progress(range(steps + 1), desc=f"{desc} lr={label}", unit="step", leave=False):
        if t % eval_every == 0 or t == steps:
            dev = _evaluate(apply, theta, x_dev, eval_batch_size).reshape(len(lrs), num_examples(x_dev), -1)
            for i in active:
                run = runs[i]
                accuracy_i = accuracy(dev[i], y_dev)
                run.steps.append(t)
                run.train_loss.append(float(values[i]))
                run.dev_accuracy.append(accuracy_i)
                if x_track is not None:
                    error, change = (kernel_behaviour(f, treedef, chosen, frozen, theta0, pick(previous, i), pick(theta, i),
                                                      x_track) if t > 0 else (float("nan"), 0.0))
                    run.step_linearization.append(error)
                    run.feature_change.append(change)
                if accuracy_i > run.best_dev or keep == "last":
                    run.best_step, run.best_dev, run.best_theta = t, accuracy_i, pick(theta, i)
        active = [i for i in active if np.isfinite(values[i])]
        if t == steps or not active:
            break
        if batch_size is None or batch_size >= n:
            x, y = x_train, y_train_j
        else:
            position = (t * batch_size) % n
            if position < batch_size:
                order = rng.permutation(n)
            rows = order[position : position + batch_size]
            x, y = take_examples(x_train, rows), y_train_j[rows]
        previous = theta
        theta, state, value = step_fn(theta, frozen, state, x, y)
        values = np.atleast_1d(np.asarray(value, np.float64))
    return runs


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
