"""Fine-tuning: determinism, dev selection, frozen parameters, kernel drift first order in η. (Lazy-regime
fine-tuning equals kernel gradient descent: asserted in notebooks/03_prompted_finetuning.ipynb.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab import finetune, kernels


@pytest.fixture(scope="module")
def setup(tiny):
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    task = get_task("sst2")
    train, test = load_task_data(task, "sample")
    split = kshot_split(train, test, 2, 16, 13)
    enc = [encode(task, part, tiny.tokenizer, 64) for part in (split.train, split.dev, split.test)]
    xs = [inputs(e) for e in enc]
    return PromptedClassifier.for_task(tiny, task), tiny.params, xs, [e["labels"] for e in enc]


def test_loss_values_against_numpy():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(5, 3)), rng.integers(0, 3, 5)
    ce = np.mean(np.log(np.exp(scores).sum(1)) - scores[np.arange(5), labels])
    mse = np.mean(0.5 * ((scores - np.eye(3)[labels]) ** 2).sum(1))
    np.testing.assert_allclose(finetune.loss_value(jnp.asarray(scores), jnp.asarray(labels), "ce"), ce, rtol=1e-6)
    np.testing.assert_allclose(finetune.loss_value(jnp.asarray(scores), jnp.asarray(labels), "mse"), mse, rtol=1e-6)


def test_signgd_step_is_lr_times_sign():
    theta = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.5, -1e-3, 0.0])}
    opt = finetune.make_optimizer("signgd", 0.1)
    updates, _ = opt.update(grads, opt.init(theta), theta)
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1, 0.0])


def test_kernel_drift_is_first_order_in_the_learning_rate(setup):
    """K(θ_T) - K(θ0) = O(η T): ten times the learning rate, about ten times the drift (as η -> 0)."""
    f, params, (x_train, x_dev, _), (y_train, y_dev, _) = setup
    kernel = kernels.entk_fn(f)
    k0 = np.asarray(kernel(params, x_train))
    drift = []
    for lr in (1e-5, 1e-4):
        result = finetune.train(f, params, x_train, y_train, x_dev, y_dev, optimizer="sgd", lrs=(lr,), steps=50,
                                eval_every=50, loss="ce", keep="last")
        drift.append(finetune.kernel_drift(k0, kernel(result.params, x_train)))
    assert 1e-4 < drift[0] < 1e-2, drift
    assert 8 < drift[1] / drift[0] < 13, drift


def test_selection_deterministic_and_frozen_parameters(setup):
    f, params, (x_train, x_dev, _), (y_train, y_dev, _) = setup
    head_only = lambda path: path[0] == "lm_head"
    run = lambda seed, keep: finetune.train(f, params, x_train, y_train, x_dev, y_dev, optimizer="adam",
                                            lrs=(1e-3, 1e-2), steps=30, eval_every=10, batch_size=8,
                                            param_filter=head_only, seed=seed, keep=keep)
    a, b, c = run(0, "last"), run(0, "last"), run(1, "last")
    leaves = lambda p: jax.tree_util.tree_leaves_with_path(p)
    for (_, x), (_, y) in zip(leaves(a.params), leaves(b.params)):
        np.testing.assert_array_equal(x, y)  # same seed, same minibatches: identical
    assert any(not np.array_equal(x, y) for (_, x), (_, y) in zip(leaves(a.params), leaves(c.params)))
    moved = 0
    for (path, new), (_, old) in zip(leaves(a.params), leaves(params)):
        if head_only(kernels.path_names(path)):
            moved += not np.array_equal(new, old)
        else:
            np.testing.assert_array_equal(new, old)
    assert moved > 0
    best_run = run(0, "best")
    best = max(best_run.runs, key=lambda r: max(r.dev_accuracy))
    assert best_run.lr == best.lr and best_run.dev_accuracy == max(best.dev_accuracy)
    assert best_run.step == best.steps[int(np.argmax(best.dev_accuracy))]


def _mlp_task():
    from tests.test_kernels import mlp, mlp_init

    params = mlp_init(jax.random.PRNGKey(41), [4, 16, 2])
    x = jax.random.normal(jax.random.PRNGKey(42), (10, 4), jnp.float64)
    labels = np.arange(10) % 2
    return mlp, params, x, labels


def test_definition_3_2_is_exact_for_a_model_linear_in_its_parameters():
    """f(θ, x) = x W + b: every step is its own linearization and the features ∇f never change."""
    with jax.enable_x64(True):
        _, params, x, labels = _mlp_task()
        linear = lambda p, x: x @ p["w"] + p["b"]
        theta = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(4, 2))), "b": jnp.zeros(2)}
        run = finetune.train(linear, theta, x, labels, x, labels, optimizer="adam", lrs=(0.1,), steps=6, eval_every=2,
                             track=4).runs[0]
        assert run.steps == [0, 2, 4, 6] and np.isnan(run.step_linearization[0])
        assert max(run.step_linearization[1:]) < 1e-12 and max(run.feature_change) < 1e-12


def test_definition_3_2_against_brute_force_jacobians_and_first_order_in_eta():
    with jax.enable_x64(True):
        mlp, params, x, labels = _mlp_task()
        errors = []
        for lr in (1e-3, 1e-4):
            result = finetune.train(mlp, params, x, labels, x, labels, optimizer="sgd", lrs=(lr,), steps=4, eval_every=4,
                                    track=3, keep="last")
            run = result.runs[0]
            errors.append(run.step_linearization[-1])
            if lr == 1e-3:  # the feature change at step 4 from full Jacobians
                flat = lambda p: jnp.concatenate([jnp.ravel(v) for v in jax.tree_util.tree_leaves(
                    jax.jacrev(lambda q: mlp(q, x[:3]))(p))])
                expected = jnp.linalg.norm(flat(result.params) - flat(params)) / jnp.linalg.norm(flat(params))
                assert run.feature_change[-1] == pytest.approx(float(expected), rel=1e-8)
                assert 0 < run.feature_change[-1] < 1e-2
        # one SGD step's linearization error is O(η) relative: ten times smaller η, about ten times smaller
        assert 1e-7 < errors[1] < errors[0] < 1e-2 and 7 < errors[0] / errors[1] < 13, errors


@pytest.mark.parametrize("optimizer,batch_size", [("sgd", None), ("adam", 3)])
def test_learning_rates_trained_together_equal_the_sequential_runs(optimizer: str, batch_size: int | None) -> None:
    """Stacked and vmapped over learning rates (``together=True``), in float64: every run's curve, kernel
    behaviour and checkpoint equal the run trained alone to 1e-10, and a learning rate whose loss
    becomes non-finite stops at the same step while the others go on."""
    with jax.enable_x64(True):
        mlp, params, x, labels = _mlp_task()
        lrs = (1e-3, 1e-1, 1e300 if optimizer == "sgd" else 1e-2)
        options = dict(optimizer=optimizer, lrs=lrs, steps=12, eval_every=3, batch_size=batch_size, seed=5, track=3,
                       loss="mse" if optimizer == "sgd" else "ce")
        alone = finetune.train(mlp, params, x, labels, x, labels, **options)
        together = finetune.train(mlp, params, x, labels, x, labels, together=True, **options)
    for a, b in zip(alone.runs, together.runs):
        assert a.lr == b.lr and a.steps == b.steps and a.best_step == b.best_step and a.dev_accuracy == b.dev_accuracy
        np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-10)
        np.testing.assert_allclose(b.step_linearization, a.step_linearization, rtol=1e-8)
        np.testing.assert_allclose(b.feature_change, a.feature_change, rtol=1e-8, atol=1e-14)
        for u, v in zip(jax.tree_util.tree_leaves(a.best_theta), jax.tree_util.tree_leaves(b.best_theta)):
            np.testing.assert_allclose(v, u, rtol=1e-10, atol=1e-14)
    if optimizer == "sgd":  # η = 1e300 overflows the squared loss: its run ends early, the others run all 12 steps
        assert len(alone.runs[2].steps) < 5 and alone.runs[0].steps[-1] == 12
    assert (alone.lr, alone.step) == (together.lr, together.step)
