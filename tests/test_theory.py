"""The eNTK against theory: linearized training, Adam's first step. (The infinite-width limit, slope
-0.5 ± 0.15 against width, is asserted in notebooks/01_entk_basics.ipynb.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.integrate import solve_ivp

from ntk_lab.kernels import entk_fn, flatten_kernel
from ntk_lab.linearized import linearize, predict


def _setup():
    from tests.test_kernels import mlp, mlp_init

    params = mlp_init(jax.random.PRNGKey(11), [3, 24, 2])
    x_train = jax.random.normal(jax.random.PRNGKey(12), (6, 3), jnp.float64)
    x_test = jax.random.normal(jax.random.PRNGKey(13), (4, 3), jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(14), (6, 2), jnp.float64)
    kernel = entk_fn(mlp)
    k_train = np.asarray(flatten_kernel(kernel(params, x_train)))
    k_test = np.asarray(flatten_kernel(kernel(params, x_test, x_train)))
    return mlp, params, x_train, x_test, np.asarray(y), k_train, k_test


@pytest.mark.parametrize("normalization", ["mean", "sum"])
def test_linearized_gradient_descent_and_flow_match_closed_forms(normalization: str) -> None:
    with jax.enable_x64(True):
        f, params0, x_train, x_test, y, k_train, k_test = _setup()
        n = len(y)
        norm = float(n) if normalization == "mean" else 1.0
        f_lin = linearize(f, params0)
        loss = lambda p: 0.5 * jnp.sum((f_lin(p, x_train) - y) ** 2) / norm
        grad = jax.jit(jax.grad(loss))
        f0_train, f0_test = np.asarray(f(params0, x_train)), np.asarray(f(params0, x_test))
        lr, steps = 0.5 * norm / np.linalg.eigvalsh(k_train).max(), 40
        p = params0
        for _ in range(steps):
            p = jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grad(p))
        train_t, test_t = predict(k_train, k_test, f0_train, f0_test, y, lr=lr, t=steps, normalization=norm, discrete=True)
        np.testing.assert_allclose(np.asarray(f_lin(p, x_train)), train_t, atol=1e-10)
        np.testing.assert_allclose(np.asarray(f_lin(p, x_test)), test_t, atol=1e-10)

        flat0, unravel = jax.flatten_util.ravel_pytree(params0)
        flow = jax.jit(lambda v: -lr * jax.flatten_util.ravel_pytree(jax.grad(loss)(unravel(v)))[0])
        t_end = 25.0
        sol = solve_ivp(lambda _, v: np.asarray(flow(jnp.asarray(v))), (0, t_end), np.asarray(flat0),
                        method="DOP853", rtol=1e-12, atol=1e-12)
        p_t = unravel(jnp.asarray(sol.y[:, -1]))
        train_t, test_t = predict(k_train, k_test, f0_train, f0_test, y, lr=lr, t=t_end, normalization=norm)
        np.testing.assert_allclose(np.asarray(f_lin(p_t, x_train)), train_t, atol=1e-6)
        np.testing.assert_allclose(np.asarray(f_lin(p_t, x_test)), test_t, atol=1e-6)
        # as t -> ∞ on an invertible kernel, the training set is interpolated
        train_inf, _ = predict(k_train, k_test, f0_train, f0_test, y, lr=lr, t=1e6, normalization=norm)
        np.testing.assert_allclose(train_inf, y, atol=1e-8)


def test_adam_first_step_moves_f_by_the_asigngd_kernel() -> None:
    """One optax Adam step (ε -> 0) on example i, binary mode: Δf(x) = -η sign(ℓ'_i) K_asigngd(x_i, x) + O(η²)."""
    from tests.test_kernels import mlp, mlp_init

    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(21), [4, 32, 2])
        x = jax.random.normal(jax.random.PRNGKey(22), (5, 4), jnp.float64)
        i, y_i = 0, 1.0  # label +1 in binary mode
        fb = lambda p, x: (lambda o: o[:, 1] - o[:, 0])(mlp(p, x))
        loss = lambda p: jnp.log1p(jnp.exp(-y_i * fb(p, x[i : i + 1])[0]))  # logistic, ℓ' = -y σ(-y f): sign -y
        k = np.asarray(entk_fn(mlp, kind="asigngd", binary=True, sign_eps=0.0)(params, x[i : i + 1], x))[0, 0, :, 0]
        errors = []
        for lr in (1e-2, 1e-3, 1e-4):
            opt = optax.adam(lr, eps=1e-14)
            updates, _ = opt.update(jax.grad(loss)(params), opt.init(params), params)
            moved = optax.apply_updates(params, updates)
            delta = np.asarray(fb(moved, x) - fb(params, x))
            predicted = -lr * (-y_i) * k
            errors.append(np.linalg.norm(delta - predicted) / np.linalg.norm(predicted))
        ratios = np.array(errors[1:]) / np.array(errors[:-1])
        assert np.all((ratios > 0.05) & (ratios < 0.2)), (errors, ratios)  # relative error ∝ η
        assert errors[-1] < 1e-3
