"""The sketched eNTK: an unbiased random-projection (Johnson–Lindenstrauss) estimate of any kind.

an unbiased random-projection (Johnson–Lindenstrauss) estimate, all kinds:
``K̂[i,a,j,b] = < S s1(∂f_a(x1_i)), S s2(∂f_b(x2_j)) >`` with one random ``S ∈ R^{p×P}`` for both
sides (``s1, s2`` the kind's signs). ``S`` is regenerated block by block from ``sketch_key``
(``p × sketch_block`` entries at a time) and never stored whole; each example's gradient is
projected once, so memory is ``chunk·c·P + p·sketch_block`` and the contraction is over ``p``
instead of ``P``. For any u, v ∈ R^P, ``E<Su, Sv> = <u, v>`` and

    gaussian  S_kl ~ N(0, 1/p):      Var <Su, Sv> = (‖u‖²‖v‖² + <u,v>²) / p
              P(|<Su,Sv> - <u,v>| > ε‖u‖‖v‖) <= 4 exp(-p ε² / 12)    (0 < ε <= 1, JL + polarization)
    sparse    CountSketch: coordinate l goes to bucket h(l) ~ U{1..p} with sign σ(l) = ±1
              (O(P) per gradient instead of O(pP)):
              Var <Su, Sv> = (‖u‖²‖v‖² + <u,v>² - 2 Σ_l u_l² v_l²) / p
              P(|<Su,Sv> - <u,v>| > ε‖u‖‖v‖) <= 2 / (p ε²)           (Chebyshev)

So every entry is off by about ``‖∂f(x1_i)‖ ‖∂f(x2_j)‖ √(2/p)`` at most; ``sketch_error_std`` gives the
exact standard deviation for given gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntk_lab.jacobians import HIGHEST, X, adam_sign, chunks, per_example_jacobian
from ntk_lab.pytrees import num_examples

SKETCHES = ("gaussian", "sparse")


def _project(leaves: list[jax.Array], key: jax.Array, dim: int, sketch: str, block: int) -> jax.Array:
    """``S v`` for every row of the Jacobian leaves ``[n, c, *shape]`` -> ``[n, c, dim]``.

    ``S`` is generated in column blocks of ``block`` coordinates, block r of leaf l from
    ``fold_in(fold_in(key, l), r)``, so it is the same matrix for every batch of examples.
    """
    n, c = leaves[0].shape[:2]
    total = jnp.zeros((n, c, dim), leaves[0].dtype)
    for index, leaf in enumerate(leaves):
        flat = leaf.reshape(n, c, -1)
        size = flat.shape[-1]
        width = min(block, size)
        blocks = -(-size // width)
        flat = jnp.pad(flat, ((0, 0), (0, 0), (0, blocks * width - size)))
        leaf_key = jax.random.fold_in(key, index)

        def step(acc: jax.Array, r: jax.Array) -> tuple[jax.Array, None]:
            k = jax.random.fold_in(leaf_key, r)
            part = jax.lax.dynamic_slice_in_dim(flat, r * width, width, axis=2)  # [n, c, width], zero-padded
            if sketch == "gaussian":
                s = jax.random.normal(k, (width, dim), flat.dtype) / np.sqrt(dim)
                return acc + jnp.einsum("ncw,wd->ncd", part, s, precision=HIGHEST), None
            bucket_key, sign_key = jax.random.split(k)
            bucket = jax.random.randint(bucket_key, (width,), 0, dim)
            sign = jax.random.rademacher(sign_key, (width,), flat.dtype)
            return acc.at[:, :, bucket].add(part * sign), None

        total, _ = jax.lax.scan(step, total, jnp.arange(blocks))
    return total


def _sketch_features(g, theta, x, signed: bool, key, dim, sketch, block, chunk, eps) -> jax.Array:
    """``S s(∂g(x_i)_a/∂θ)``, ``[n, c, dim]``, computed ``chunk`` examples at a time."""
    def features(xb: X) -> jax.Array:
        jac = per_example_jacobian(g, theta, xb)
        return _project([adam_sign(v, eps) for v in jac] if signed else jac, key, dim, sketch, block)

    z = jax.lax.map(features, chunks(x, chunk))  # [blocks, chunk, c, dim]
    return z.reshape(-1, *z.shape[2:])[: num_examples(x)]


def sketch_kernel(g, theta, x1, x2, kind, key, dim, sketch, block, chunk, eps):
    z1 = _sketch_features(g, theta, x1, kind != "sgd", key, dim, sketch, block, chunk, eps)
    if x2 is None and kind != "asigngd":
        z2 = z1
    else:
        z2 = _sketch_features(g, theta, x1 if x2 is None else x2, kind == "signgd", key, dim, sketch, block, chunk, eps)
    return jnp.einsum("iak,jbk->iajb", z1, z2, precision=HIGHEST)


def sketch_error_std(u: np.ndarray, v: np.ndarray, dim: int, sketch: str = "gaussian") -> np.ndarray:
    """The standard deviation of the sketched ``<Su, Sv>`` for rows ``u [m, P]`` and ``v [n, P]``, ``[m, n]``.

    gaussian: ``√((‖u‖²‖v‖² + <u,v>²)/p)``; sparse: ``√((‖u‖²‖v‖² + <u,v>² - 2 Σ_l u_l² v_l²)/p)``.
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    var = np.outer((u**2).sum(1), (v**2).sum(1)) + (u @ v.T) ** 2
    if sketch == "sparse":
        var = var - 2 * (u**2) @ (v**2).T
    return np.sqrt(var / dim)
