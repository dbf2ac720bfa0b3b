"""Empirical neural tangent kernels of any JAX function: SGD, SignGD and A-SignGD, exact.

For ``f(θ, x) -> [n, c]`` and the moving parameters θ (all, or those a ``param_filter`` selects):

    sgd      K[i,a,j,b] = < ∂f_a(x1_i)/∂θ ,      ∂f_b(x2_j)/∂θ >
    signgd   K[i,a,j,b] = < sign ∂f_a(x1_i)/∂θ , sign ∂f_b(x2_j)/∂θ >
    asigngd  K[i,a,j,b] = < sign ∂f_a(x1_i)/∂θ , ∂f_b(x2_j)/∂θ >

where ``sign`` is ``adam_sign``: the sign with Adam's dead zone ``|g| <= ε`` (default ε = 1e-8).

The A-SignGD kernel is asymmetric: the sign sits on the first argument, the training side. In
Adam's early phase (Malladi et al. 2023, Thm. 4.3) an update is a sign-descent step on the training
example's gradient, and the output on any x moves by that signed direction dotted with ∂f(x)/∂θ:
``f(θ - η sign ∇ℓ_i, x) - f(θ, x) ≈ -η sign(ℓ'_i) K_asigngd(x_i, x)``. So ``x1`` is the training
side and ``x2`` the side being predicted. ``binary=True`` differentiates ``f_1 - f_0`` as a single
output (``c = 1``), as the paper does for A-SignGD.

Implementations (all give the same kernel):

- ``"jacobian"``: per-example Jacobians ``[n, c, P]`` of both inputs, contracted. Memory ∝ (n1+n2)·c·P.
- ``"ntk_vp"``: for each cotangent e_{jb}, v = J2ᵀe (a VJP) then J1 v (a JVP); never holds a Jacobian.
  ``chunk`` cotangents at once. SGD kernel only (the sign is not linear).
- ``"streamed"``: Jacobians of at most ``chunk`` x1 examples at a time, then JVPs over all of x2 with
  those (signed) rows as tangents; SignGD contracts x2's signed Jacobians in blocks instead. Memory is
  independent of n1.

``x`` is any pytree of arrays with a leading example axis (a dict batch for the prompted classifier).
The x1 axis is sharded over ``devices`` (default: all JAX devices) with ``jax.sharding``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Params = Any
X = Any
KINDS = ("sgd", "signgd", "asigngd")
IMPLEMENTATIONS = ("jacobian", "ntk_vp", "streamed")
HIGHEST = jax.lax.Precision.HIGHEST


def path_names(path: tuple) -> tuple[str, ...]:
    """A pytree key path as plain strings: ``(DictKey('encoder'), SequenceKey(0))`` -> ``('encoder', '0')``."""
    names = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
    return tuple(names)


def restrict(
    f: Callable[[Params, X], jax.Array], params: Params, param_filter: Callable[[tuple[str, ...]], bool] | None
) -> tuple[Callable[[list[jax.Array], X], jax.Array], list[jax.Array]]:
    """``(g, θ)``: ``g(θ, x) = f(params with the selected leaves replaced by θ, x)``, θ the selected leaves."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    chosen = [param_filter is None or bool(param_filter(path_names(p))) for p, _ in leaves]
    if not any(chosen):
        raise ValueError("param_filter selects no parameters")

    def g(theta: list[jax.Array], x: X) -> jax.Array:
        it = iter(theta)
        full = [next(it) if c else leaf for (_, leaf), c in zip(leaves, chosen)]
        return f(jax.tree_util.tree_unflatten(treedef, full), x)

    return g, [leaf for (_, leaf), c in zip(leaves, chosen) if c]


def count_params(params: Params, param_filter: Callable[[tuple[str, ...]], bool] | None = None) -> int:
    """How many scalars move under ``param_filter``."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(int(np.prod(v.shape)) for p, v in leaves if param_filter is None or param_filter(path_names(p)))


def _binary(f: Callable[[Params, X], jax.Array]) -> Callable[[Params, X], jax.Array]:
    def fb(params: Params, x: X) -> jax.Array:
        out = f(params, x)
        return (out[:, 1] - out[:, 0])[:, None]

    return fb


def take_examples(x: X, rows: np.ndarray) -> X:
    """The examples ``rows`` of every array in the pytree ``x``."""
    return jax.tree_util.tree_map(lambda a: a[rows], x)


def num_examples(x: X) -> int:
    """The length of the leading (example) axis of the pytree ``x``."""
    return int(jax.tree_util.tree_leaves(x)[0].shape[0])


def per_example_jacobian(g: Callable, theta: list[jax.Array], x: X) -> list[jax.Array]:
    """Leaves ``[n, c, *leaf_shape]`` of ∂g(θ, x_i)_a/∂θ, one example at a time (vmapped)."""
    single = lambda t, xi: g(t, jax.tree_util.tree_map(lambda a: a[None], xi))[0]
    return jax.vmap(jax.jacrev(single), in_axes=(None, 0))(theta, x)


def contract(j1: list[jax.Array], j2: list[jax.Array]) -> jax.Array:
    """``Σ_leaves Σ_p j1[i,a,p] j2[j,b,p]`` -> ``[n1, c, n2, c]`` at the highest matmul precision."""
    total = 0.0
    for a, b in zip(j1, j2):
        a = a.reshape(*a.shape[:2], -1)
        b = b.reshape(*b.shape[:2], -1)
        total = total + jnp.einsum("iap,jbp->iajb", a, b, precision=HIGHEST)
    return total


def adam_sign(g: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``sign(g)·[|g| > ε]``: the sign of Adam's first step ``g / (|g| + ε)`` as ``|g|/ε -> ∞``.

    Coordinates whose gradient is below Adam's ε take no step. This also keeps float noise out of
    the kernel: a gradient that is zero in exact arithmetic (a key bias, to which softmax is blind)
    comes out as ±1e-17 noise, and a bare ``sign`` would count it as ±1.
    """
    return jnp.where(jnp.abs(g) > eps, jnp.sign(g), 0).astype(g.dtype)


def _signs(kind: str, eps: float) -> tuple[Callable, Callable]:
    identity = lambda leaves: leaves
    sign = lambda leaves: [adam_sign(v, eps) for v in leaves]
    return {"sgd": (identity, identity), "signgd": (sign, sign), "asigngd": (sign, identity)}[kind]


def _jacobian_kernel(g, theta, x1, x2, kind, eps):
    s1, s2 = _signs(kind, eps)
    j1 = per_example_jacobian(g, theta, x1)
    j2 = j1 if x2 is None else per_example_jacobian(g, theta, x2)
    return contract(s1(j1), s2(j2))


def _ntk_vp_kernel(g, theta, x1, x2, chunk):
    x2 = x1 if x2 is None else x2
    out2, vjp2 = jax.vjp(lambda t: g(t, x2), theta)
    n2, c = out2.shape
    basis = jnp.eye(n2 * c, dtype=out2.dtype).reshape(n2 * c, n2, c)

    def column(cotangent: jax.Array) -> jax.Array:
        (v,) = vjp2(cotangent)
        return jax.jvp(lambda t: g(t, x1), (theta,), (v,))[1]  # [n1, c]

    cols = jax.lax.map(column, basis, batch_size=chunk)  # [n2*c, n1, c]
    return cols.reshape(n2, c, *cols.shape[1:]).transpose(2, 3, 0, 1)


def _streamed_block(g, theta, x1_block, x2, kind, chunk, eps):
    """Rows ``[b, c, n2, c]`` of the kernel for a block of x1, without x1's other Jacobians."""
    s1, s2 = _signs(kind, eps)
    j1 = s1(per_example_jacobian(g, theta, x1_block))  # leaves [b, c, ...]
    if kind == "signgd":  # sign(J2) is not linear in a tangent: contract x2's signed Jacobians by blocks
        n2 = num_examples(x2)
        blocks = -(-n2 // chunk)
        padded = take_examples(x2, np.arange(blocks * chunk).clip(max=n2 - 1))
        stacked = jax.tree_util.tree_map(lambda a: a.reshape(blocks, chunk, *a.shape[1:]), padded)
        out = jax.lax.map(lambda xb: contract(j1, s2(per_example_jacobian(g, theta, xb))), stacked)  # [nb, b, c, chunk, c]
        out = out.transpose(1, 2, 0, 3, 4)
        return out.reshape(*out.shape[:2], blocks * chunk, out.shape[-1])[:, :, :n2]
    b, c = j1[0].shape[:2]
    tangents = [v.reshape(b * c, *v.shape[2:]) for v in j1]
    rows = jax.vmap(lambda t: jax.jvp(lambda th: g(th, x2), (theta,), (t,))[1])(tangents)  # [b*c, n2, c]
    return rows.reshape(b, c, *rows.shape[1:])


def entk_fn(
    f: Callable[[Params, X], jax.Array],
    *,
    kind: str = "sgd",
    implementation: str = "jacobian",
    param_filter: Callable[[tuple[str, ...]], bool] | None = None,
    binary: bool = False,
    chunk: int = 8,
    sign_eps: float = 1e-8,
    devices: Sequence[jax.Device] | None = None,
) -> Callable[[Params, X, X | None], jax.Array]:
    """``kernel(params, x1, x2=None) -> [n1, c, n2, c]`` for ``f(params, x) -> [n, c]``.

    ``x2=None`` means ``x2 = x1``. ``param_filter(path) -> bool`` selects the parameters that move,
    ``path`` being the tuple of key names (``('encoder', 'layer_0', 'attention', 'self', 'query',
    'bias')``). ``binary`` differentiates ``f_1 - f_0`` (``c = 1``). ``chunk`` bounds how many x1
    examples (streamed) or cotangents (ntk_vp) are in flight at once. The sign kernels use
    ``adam_sign`` with ``sign_eps`` (Adam's ε).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "ntk_vp" and kind != "sgd":
        raise ValueError("implementation 'ntk_vp' computes the sgd kernel only (sign is not linear)")
    fn = _binary(f) if binary else f
    mesh = Mesh(np.asarray(devices if devices is not None else jax.devices()), ("x1",))
    rows = NamedSharding(mesh, PartitionSpec("x1"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def block(params: Params, x1: X, x2: X | None) -> jax.Array:
        g, theta = restrict(fn, params, param_filter)
        if implementation == "jacobian":
            return _jacobian_kernel(g, theta, x1, x2, kind, sign_eps)
        if implementation == "ntk_vp":
            return _ntk_vp_kernel(g, theta, x1, x2, chunk)
        return _streamed_block(g, theta, x1, x2, kind, chunk, sign_eps)

    sharded_block = jax.jit(block, out_shardings=rows)
    symmetric_block = jax.jit(lambda p, x1: block(p, x1, None), out_shardings=rows)

    def run(params: Params, x1: X, x2: X | None) -> jax.Array:
        """Pad x1 to a multiple of the device count, shard it, run, and drop the padding rows."""
        n = num_examples(x1)
        padded = -(-n // mesh.size) * mesh.size
        x1p = jax.device_put(take_examples(x1, np.arange(padded).clip(max=n - 1)), rows)
        params = jax.device_put(params, replicated)
        if x2 is None and padded == n:
            return symmetric_block(params, x1p)[:n]
        x2r = jax.device_put(x1 if x2 is None else x2, replicated)
        return sharded_block(params, x1p, x2r)[:n]

    def kernel(params: Params, x1: X, x2: X | None = None) -> jax.Array:
        if implementation != "streamed":
            return run(params, x1, x2)
        n1 = num_examples(x1)
        x2 = x1 if x2 is None else x2
        return jnp.concatenate(
            [run(params, take_examples(x1, np.arange(s, min(s + chunk, n1))), x2) for s in range(0, n1, chunk)]
        )

    return kernel


def flatten_kernel(k: jax.Array) -> jax.Array:
    """``[n1, c, n2, c] -> [n1·c, n2·c]``, rows and columns ordered (example, output)."""
    n1, c1, n2, c2 = k.shape
    return k.reshape(n1 * c1, n2 * c2)
