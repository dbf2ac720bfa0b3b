"""Per-example Jacobians and their contractions: the primitives every eNTK implementation builds on.

For ``g(θ, x) -> [n, c]`` with θ a list of leaves, ``per_example_jacobian`` gives leaves
``[n, c, *leaf_shape]`` and ``contract`` (or ``contract_columns``) their Gram ``[n1, c, n2, c]``; the
sign kernels pass the leaves through ``adam_sign`` first (``signs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ntk_lab.pytrees import batch_rows, num_examples, take_examples

Params = Any
X = Any
HIGHEST = jax.lax.Precision.HIGHEST


def binary_margin(out: Any) -> Any:
    """Binary mode's one output: ``f_1 - f_0``, ``[n, 2] -> [n, 1]`` (numpy or JAX)."""
    return (out[:, 1] - out[:, 0])[:, None]


def margin_fn(f: Callable[[Params, X], jax.Array]) -> Callable[[Params, X], jax.Array]:
    """``f``'s binary margin as a function: ``(params, x) -> f_1 - f_0``, ``[n, 1]``."""
    def fb(params: Params, x: X) -> jax.Array:
        return binary_margin(f(params, x))

    return fb


def chunks(x: X, size: int) -> X:
    """``x`` padded to a multiple of ``size`` examples (repeating the last) and split into blocks:
    leaves ``[blocks, size, ...]``, for ``lax.map`` over blocks. Callers drop the padded rows."""
    n = num_examples(x)
    blocks = -(-n // size)
    padded = take_examples(x, batch_rows(n, 0, blocks * size))
    return jax.tree_util.tree_map(lambda a: a.reshape(blocks, size, *a.shape[1:]), padded)


def on_one_example(g: Callable) -> Callable:
    """``(θ, x_i) -> [c]``: ``g`` on a single example ``x_i`` (``x``'s leaves without the example axis)."""
    return lambda t, xi: g(t, jax.tree_util.tree_map(lambda a: a[None], xi))[0]


def per_example_jacobian(g: Callable, theta: list[jax.Array], x: X) -> list[jax.Array]:
    """Leaves ``[n, c, *leaf_shape]`` of ∂g(θ, x_i)_a/∂θ, one example at a time (vmapped)."""
    return jax.vmap(jax.jacrev(on_one_example(g)), in_axes=(None, 0))(theta, x)


def contract(j1: list[jax.Array], j2: list[jax.Array]) -> jax.Array:
    """``Σ_leaves Σ_p j1[i,a,p] j2[j,b,p]`` -> ``[n1, c, n2, c]`` at the highest matmul precision, each
    leaf as one ``[n1·c, p]·[p, n2·c]`` matmul (XLA's CPU dot runs this 2-D form up to twice as fast
    as the same contraction written with the example and output axes apart)."""
    (n1, c), n2 = j1[0].shape[:2], j2[0].shape[0]
    total = jnp.zeros((n1 * c, n2 * c), jnp.result_type(*j1, *j2))
    for a, b in zip(j1, j2):
        total = total + jnp.dot(a.reshape(n1 * c, -1), b.reshape(n2 * c, -1).T, precision=HIGHEST)
    return total.reshape(n1, c, n2, c)


def as_columns(j: list[jax.Array]) -> list[jax.Array]:
    """Leaves ``[n, c, *leaf_shape] -> [p, n·c]``: a Jacobian laid out for ``contract_columns``."""
    return [v.reshape(v.shape[0] * v.shape[1], -1).T for v in j]


def contract_columns(j: list[jax.Array], columns: list[jax.Array]) -> jax.Array:
    """``contract(j, j')`` -> ``[n, c, n', c]`` given ``columns = as_columns(j')`` (leaves ``[p, n'·c]``):
    each leaf one ``[n·c, p]·[p, n'·c]`` matmul, whose right operand XLA's CPU dot (Eigen) reads in
    the order its GEMM packs it instead of transposing it panel by panel, which makes it faster than
    ``contract`` (``benchmarks/gram.py``, ``benchmarks/entk.py``; numbers in docs/performance.md).
    Laying ``j'`` out so costs a transposed write of it, which pays in proportion to ``j``'s rows: the
    split ``jacobian`` kernel lays out the side with fewer examples."""
    (n, c), m = j[0].shape[:2], columns[0].shape[1]
    total = jnp.zeros((n * c, m), jnp.result_type(*j, *columns))
    for a, b in zip(j, columns):
        total = total + jnp.dot(a.reshape(n * c, -1), b, precision=HIGHEST)
    return total.reshape(n, c, m // c, c)


def adam_sign(g: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``sign(g)·[|g| > ε]``: the sign of Adam's first step ``g / (|g| + ε)`` as ``|g|/ε -> ∞``.

    Coordinates whose gradient is below Adam's ε take no step. This also keeps float noise out of
    the kernel: a gradient that is zero in exact arithmetic (a key bias, to which softmax is blind)
    comes out as ±1e-17 noise, and a bare ``sign`` would count it as ±1.
    """
    return jnp.where(jnp.abs(g) > eps, jnp.sign(g), 0).astype(g.dtype)


#: whether each kernel signs (x1's, x2's) gradient: <∇f, ∇f'>, <sign ∇f, sign ∇f'>, <sign ∇f, ∇f'>
SIGNED = {"sgd": (False, False), "signgd": (True, True), "asigngd": (True, False)}


def signs(kind: str, eps: float) -> tuple[Callable, Callable]:
    """The maps applied to (x1's, x2's) Jacobian leaves for ``kind``: identity, or ``adam_sign``."""
    identity = lambda leaves: leaves
    sign = lambda leaves: [adam_sign(v, eps) for v in leaves]
    first, second = SIGNED[kind]
    return sign if first else identity, sign if second else identity
