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
- ``"blocked"``: Jacobians of at most ``chunk`` x1 examples at a time, contracted against x2's
  Jacobians computed ``column_chunk`` examples at a time. Memory ``(chunk + column_chunk)·c·P``,
  independent of n1 and n2; each x2 Jacobian is recomputed once per x1 block. Costs about
  ``(1 + 2c)/(3·chunk·c)`` of streamed's forward passes (a Jacobian is one forward and c backward
  passes, a JVP about three forward passes), so it is the fast exact choice for large models.
- ``"structured"``: uses the structure of dense layers (as neural-tangents' structured derivatives
  do, for this one rule). A parameter ``W`` that enters f once, as an operand of a ``dot_general``
  ``y = h·W`` (found in f's jaxpr), has the per-example gradient ``∂f_a(x_i)/∂W = Σ_u h_iu ⊗ δ_iau``,
  with ``h_iu`` the other operand at position u (token) and ``δ_iau = ∂f_a/∂y_iu``. The backward pass
  computes only the δ (never ``∂f/∂W``), and W's kernel term is

      K_W[i,a,j,b] = Σ_{u,v} <h_iu, h_jv> <δ_iau, δ_jbv>

  at cost ``n1·n2·U²·(K + c²F)`` (U positions, K contracted, F free coordinates of W), or, where that
  is more, by forming the per-example gradients from the factors (``(n1+n2)·c·U·K·F`` plus their Gram).
  An embedding table every use of which is a row lookup ``y_u = E[id_u]`` contributes
  ``Σ_{u,v} [id_iu = id_jv] <δ_iau, δ_jbv>`` (u over the lookups of all uses), without forming a
  vocabulary-sized gradient (unless the table is small enough for that to cost less). The other parameters (biases, LayerNorm scales) get explicit Jacobians. SGD kernel
  only (the sign of a sum of outer products does not factor). For an MLP (U = 1) this is a product
  of two small Gram matrices per layer.
- ``"auto"``: the fastest exact one for the model, kind and sizes, by the rule of
  ``auto_implementation`` (drawn from ``benchmarks/results/entk.json``), chosen at each call.
- ``"sketch"``: an unbiased random-projection (Johnson–Lindenstrauss) estimate, all kinds:
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

``x`` is any pytree of arrays with a leading example axis (a dict batch for the prompted classifier).
The x1 axis is sharded over ``devices`` (default: all JAX devices) with ``jax.sharding``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntk_lab.pytrees import (
    batch_rows,
    count_params,
    num_examples,
    path_names,
    restrict,
    take_examples,
)

__all__ = ["KINDS", "IMPLEMENTATIONS", "SGD_ONLY", "AUTO", "entk_fn", "auto_implementation", "binary_margin",
           "flatten_kernel", "count_params", "num_examples", "path_names", "restrict", "take_examples"]

Params = Any
X = Any
KINDS = ("sgd", "signgd", "asigngd")
IMPLEMENTATIONS = ("jacobian", "ntk_vp", "streamed", "blocked", "structured")  # exact; "sketch" estimates (see above)
SGD_ONLY = ("ntk_vp", "structured")  # the sign is not linear: these compute the sgd kernel only
AUTO = "auto"  # the fastest exact implementation for the model, kind and sizes: see auto_implementation
AUTO_STRUCTURED_PARAMS = 1_000_000  # sgd: from this many moving parameters on, structured
AUTO_JACOBIAN_BYTES = 2**30  # sign kernels: jacobian while both sides' Jacobians fit in this many bytes
SKETCHES = ("gaussian", "sparse")
HIGHEST = jax.lax.Precision.HIGHEST
YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"  # which ops XLA's CPU backend hands to YNNPACK


def binary_margin(out: Any) -> Any:
    """Binary mode's one output: ``f_1 - f_0``, ``[n, 2] -> [n, 1]`` (numpy or JAX)."""
    return (out[:, 1] - out[:, 0])[:, None]


def _binary(f: Callable[[Params, X], jax.Array]) -> Callable[[Params, X], jax.Array]:
    def fb(params: Params, x: X) -> jax.Array:
        return binary_margin(f(params, x))

    return fb


def _chunks(x: X, size: int) -> X:
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
    total = 0.0
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
    total = 0.0
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


def _signs(kind: str, eps: float) -> tuple[Callable, Callable]:
    identity = lambda leaves: leaves
    sign = lambda leaves: [adam_sign(v, eps) for v in leaves]
    return {"sgd": (identity, identity), "signgd": (sign, sign), "asigngd": (sign, identity)}[kind]


@functools.cache
def _compiles_with(options: tuple[tuple[str, str], ...]) -> bool:
    try:
        jax.jit(lambda v: v + 1, compiler_options=dict(options))(0.0).block_until_ready()
        return True
    except jax.errors.JaxRuntimeError:  # an option this jaxlib does not know: XLA rejects it when compiling
        return False


def cpu_compiler_options(implementation: str) -> dict[str, str]:
    """The XLA options ``entk_fn`` compiles an implementation with on CPU devices.

    XLA's CPU backend (JAX 0.10) hands dots and reductions to YNNPACK by default. The rule, from
    ``benchmarks/entk.py`` (numbers in docs/performance.md): YNNPACK is slower on the large Gram
    contraction and its reductions slow per-example Jacobians, but it is faster on the structured
    kernel's many small dots. So ``structured`` keeps YNNPACK for dots alone and the other
    implementations use it for nothing. Where this jaxlib lacks the option, nothing is set.
    """
    options = {YNN_FUSIONS: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT" if implementation == "structured" else ""}
    return options if _compiles_with(tuple(options.items())) else {}


SPLIT_BYTES = 32 * 2**20  # entk_fn(split=None) splits the jacobian kernel below this much of x2's Jacobian per output


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


def _blocked_rows(g, theta, j1, x2, s2, chunk):
    """Rows ``[b, c, n2, c]``: x1's (signed) Jacobian rows ``j1`` (leaves ``[b, c, ...]``) against
    x2's Jacobians, computed, signed by ``s2`` and contracted ``chunk`` x2 examples at a time."""
    out = jax.lax.map(lambda xb: contract(j1, s2(per_example_jacobian(g, theta, xb))), _chunks(x2, chunk))
    out = out.transpose(1, 2, 0, 3, 4)  # [b, c, blocks, chunk, c]
    return out.reshape(*out.shape[:2], -1, out.shape[-1])[:, :, : num_examples(x2)]


def _streamed_block(g, theta, x1_block, x2, kind, chunk, eps):
    """Rows ``[b, c, n2, c]`` of the kernel for a block of x1, without x1's other Jacobians."""
    s1, s2 = _signs(kind, eps)
    j1 = s1(per_example_jacobian(g, theta, x1_block))  # leaves [b, c, ...]
    if kind == "signgd":  # sign(J2) is not linear in a tangent: contract x2's signed Jacobians by blocks
        return _blocked_rows(g, theta, j1, x2, s2, chunk)
    b, c = j1[0].shape[:2]
    tangents = [v.reshape(b * c, *v.shape[2:]) for v in j1]
    rows = jax.vmap(lambda t: jax.jvp(lambda th: g(th, x2), (theta,), (t,))[1])(tangents)  # [b*c, n2, c]
    return rows.reshape(b, c, *rows.shape[1:])


def _blocked_block(g, theta, x1_block, x2, kind, chunk, eps):
    s1, s2 = _signs(kind, eps)
    return _blocked_rows(g, theta, s1(per_example_jacobian(g, theta, x1_block)), x2, s2, chunk)


def _is_row_gather(e, v) -> bool:
    """Whether eqn ``e`` gathers whole rows of ``v`` (an embedding lookup ``v[ids]``)."""
    if e.primitive.name != "gather" or e.invars[0] is not v or e.invars[1] is v:
        return False
    d, shape, index_ndim = e.params["dimension_numbers"], v.aval.shape, e.invars[1].aval.ndim
    return (d.collapsed_slice_dims == (0,) and d.start_index_map == (0,) and not d.operand_batching_dims
            and e.invars[1].aval.shape[-1] == 1 and tuple(e.params["slice_sizes"]) == (1, *shape[1:])
            and tuple(d.offset_dims) == tuple(range(index_ndim - 1, index_ndim - 2 + len(shape))))


def _taps(jaxpr: jax.extend.core.Jaxpr, n_leaves: int) -> dict[int, tuple[int, str, int]]:
    """``{eqn index: (leaf, "dot" | "gather", side)}``: the parameter leaves with structure. A leaf is
    tapped when it enters f exactly once, as operand ``side`` of a top-level ``dot_general`` without
    batch dimensions whose other operand is not a parameter, or when every use of it is a row gather."""
    leaf_of = {v: i for i, v in enumerate(jaxpr.invars[:n_leaves])}
    param = lambda v: isinstance(v, jax.extend.core.Var) and v in leaf_of
    uses: dict[Any, list[int]] = {}
    for k, e in enumerate(jaxpr.eqns):
        for v in e.invars:
            if param(v):
                uses.setdefault(v, []).append(k)
    for v in jaxpr.outvars:
        if param(v):
            uses.setdefault(v, []).append(-1)
    taps = {}
    for v, ks in uses.items():
        eqns = [jaxpr.eqns[k] if k >= 0 else None for k in ks]
        if all(e is not None and _is_row_gather(e, v) for e in eqns):
            taps.update({k: (leaf_of[v], "gather", 0) for k in ks})
        elif len(ks) == 1 and eqns[0] is not None and eqns[0].primitive.name == "dot_general":
            e = eqns[0]
            side = 0 if e.invars[0] is v else 1
            if e.params["dimension_numbers"][1] == ((), ()) and not param(e.invars[1 - side]):
                taps[ks[0]] = (leaf_of[v], "dot", side)
    return taps


def _structured_parts(g, theta, x) -> tuple[list[int], list, list[tuple[int, str, int]], list]:
    """Per example: the Jacobian of the parameters without structure, and for each tapped equation
    (``y = dot_general(h, W)`` or ``y = W[ids]``) its factors: ``(h [n, U, K], δ [n, c, U, F])`` for a
    dot, ``(ids [n, U], δ [n, c, U, F])`` for a gather, with ``δ_a = ∂f_a/∂y`` (the backward pass never
    forms ``∂f/∂W``). Returns ``(free leaves, their Jacobians [n, c, *shape], tapped, factors)``:
    ``tapped[p] = (leaf, kind, side)`` of the equation whose factors are ``factors[p]``."""
    closed = jax.make_jaxpr(on_one_example(g))(theta, jax.tree_util.tree_map(lambda a: a[0], x))
    jaxpr = closed.jaxpr
    taps = _taps(jaxpr, len(theta))
    tapped_leaves = {leaf for leaf, _, _ in taps.values()}
    free = [i for i in range(len(theta)) if i not in tapped_leaves]
    order = sorted(taps)
    eps0 = [jnp.zeros(jaxpr.eqns[k].outvars[0].aval.shape, jaxpr.eqns[k].outvars[0].aval.dtype) for k in order]

    def tapped(free_values: list[jax.Array], eps: list[jax.Array], xi: X) -> tuple[jax.Array, list[jax.Array]]:
        """f(θ, x_i) with ``ε_k`` added to the output of tapped equation k; also returns its h or ids."""
        leaves = list(theta)
        for i, v in zip(free, free_values):
            leaves[i] = v
        env = dict(zip(jaxpr.constvars, closed.consts))
        env.update(zip(jaxpr.invars, leaves + jax.tree_util.tree_leaves(xi)))
        read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]
        aux, added = [], dict(zip(order, eps))
        for k, e in enumerate(jaxpr.eqns):
            invals = [read(v) for v in e.invars]
            with e.ctx.manager:
                out = e.primitive.bind(*invals, **e.primitive.get_bind_params(e.params))
            out = out if e.primitive.multiple_results else [out]
            if k in added:
                aux.append(invals[1 - taps[k][2]])  # a dot's other operand h, a gather's indices
                out = [out[0] + added[k]]
            env.update(zip(e.outvars, out))
        return read(jaxpr.outvars[0]), aux

    def parts(xi: X):
        jac = jax.jacrev(lambda fv, ep: tapped(fv, ep, xi), argnums=(0, 1), has_aux=True)
        (j_free, deltas), aux = jac([theta[i] for i in free], eps0)
        return j_free, aux, deltas

    j_free, aux, deltas = jax.vmap(parts)(x)
    factors = [_factors(jaxpr.eqns[k], *taps[k][1:], a, d) for k, a, d in zip(order, aux, deltas)]
    return free, j_free, [taps[k] for k in order], factors


def _factors(eqn, kind: str, side: int, aux: jax.Array, delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(h [n, U, K] or ids [n, U], δ [n, c, U, F])`` of a tapped equation: U the positions (tokens) of
    its non-parameter operand, K the contracted coordinates, F the parameter's other coordinates, so
    that ``∂f_a(x_i)/∂W = Σ_u h[i,u] ⊗ δ[i,a,u]`` (dot) or ``Σ_u e_{ids[i,u]} ⊗ δ[i,a,u]`` (gather)."""
    n, c = delta.shape[:2]
    if kind == "gather":
        ids = aux[..., 0].reshape(n, -1)
        return ids, delta.reshape(n, c, ids.shape[1], -1)
    (lc, rc), _ = eqn.params["dimension_numbers"]
    contracted = lc if side == 1 else rc  # of the other operand
    kept = [d for d in range(aux.ndim - 1) if d not in contracted]
    h = aux.transpose(0, *[d + 1 for d in kept], *[d + 1 for d in contracted])
    u = int(np.prod(h.shape[1 : 1 + len(kept)], dtype=int))
    h = h.reshape(n, u, -1)
    if side == 1:  # y = [other free..., W free...]
        return h, delta.reshape(n, c, u, -1)
    return h, delta.reshape(n, c, -1, u).swapaxes(2, 3)  # y = [W free..., other free...]


def _pair_kernel(hh: jax.Array, d1: jax.Array, d2: jax.Array) -> jax.Array:
    """``Σ_{u,v} hh[i,u,j,v] <δ1[i,a,u], δ2[j,b,v]>`` -> ``[n1, c, n2, c]``."""
    dd = jnp.einsum("iauf,jbvf->iaujbv", d1, d2, precision=HIGHEST)
    return jnp.einsum("iujv,iaujbv->iajb", hh, dd, precision=HIGHEST)


def _dot_kernel(h1, d1, h2, d2) -> jax.Array:
    """``Σ_{u,v} <h1[i,u], h2[j,v]> <δ1[i,a,u], δ2[j,b,v]>``: the kernel of one tapped dense weight,
    whichever is cheaper of the token-pair form (``n1·n2·U²·(K + c²F)``) and forming the weight's
    per-example gradients first (``(n1 + n2)·c·U·K·F + n1·n2·c²·K·F``)."""
    (n1, u1, k), (n2, u2, _) = h1.shape, h2.shape
    c, f = d1.shape[1], d1.shape[3]
    if n1 * n2 * u1 * u2 * (k + c * c * f) <= (n1 * u1 + n2 * u2) * c * k * f + n1 * n2 * c * c * k * f:
        return _pair_kernel(jnp.einsum("iuk,jvk->iujv", h1, h2, precision=HIGHEST), d1, d2)
    g1 = jnp.einsum("iuk,iauf->iakf", h1, d1, precision=HIGHEST)
    g2 = jnp.einsum("iuk,iauf->iakf", h2, d2, precision=HIGHEST)
    return jnp.einsum("iakf,jbkf->iajb", g1, g2, precision=HIGHEST)


def _gather_kernel(ids1, d1, ids2, d2, rows: int) -> jax.Array:
    """``Σ_{u,v} [ids1[i,u] = ids2[j,v]] <δ1[i,a,u], δ2[j,b,v]>``: the kernel of an embedding table of
    ``rows`` rows (its lookups at every use concatenated along u). Token pairs cost ``n1·n2·U²·c²F``;
    where scattering δ into per-example gradients ``[n, c, rows, F]`` and contracting costs less
    (small tables), that is done instead."""
    (n1, u1), (n2, u2) = ids1.shape, ids2.shape
    c = d1.shape[1]
    if n1 * n2 * u1 * u2 <= (n1 + n2) * rows + n1 * n2 * c * rows:
        same = (ids1[:, :, None, None] == ids2[None, None]).astype(d1.dtype)
        return _pair_kernel(same, d1, d2)
    scatter = jax.vmap(lambda i, d: jnp.zeros((d.shape[0], rows, d.shape[2]), d.dtype).at[:, i].add(d))
    return jnp.einsum("iavf,jbvf->iajb", scatter(ids1, d1), scatter(ids2, d2), precision=HIGHEST)


def _structured_kernel(g, theta, x1, x2):
    free, j1, tapped, f1 = _structured_parts(g, theta, x1)
    _, j2, _, f2 = (free, j1, tapped, f1) if x2 is None else _structured_parts(g, theta, x2)
    total = contract(j1, j2) if free else 0.0
    uses: dict[int, list[int]] = {}  # leaf -> positions of its tapped equations
    for position, (leaf, _, _) in enumerate(tapped):
        uses.setdefault(leaf, []).append(position)
    for leaf, positions in uses.items():
        if tapped[positions[0]][1] == "dot":
            total = total + _dot_kernel(*f1[positions[0]], *f2[positions[0]])
        else:  # every row lookup of one table: the indices and δ of all uses side by side
            cat = lambda fs, i, axis: jnp.concatenate([fs[p][i] for p in positions], axis=axis)
            rows = theta[leaf].shape[0]
            total = total + _gather_kernel(cat(f1, 0, 1), cat(f1, 1, 2), cat(f2, 0, 1), cat(f2, 1, 2), rows)
    return total


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

    z = jax.lax.map(features, _chunks(x, chunk))  # [blocks, chunk, c, dim]
    return z.reshape(-1, *z.shape[2:])[: num_examples(x)]


def _sketch_kernel(g, theta, x1, x2, kind, key, dim, sketch, block, chunk, eps):
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


def auto_implementation(kind: str, params: int, n1: int, n2: int, c: int) -> str:
    """The exact implementation ``implementation="auto"`` runs for ``params`` moving parameters, ``n1``
    x ``n2`` examples and ``c`` outputs.

    - ``sgd``: ``jacobian`` below ``AUTO_STRUCTURED_PARAMS`` parameters (a small model: one Jacobian
      program beats tracing the dense layers' factors), else ``structured``, which never forms a
      parameter-sized gradient (``benchmarks/results/entk.json``: fastest from an 8.5M-parameter MLP
      to BERT-base on CPU, and on an H200 for roberta-base).
    - ``signgd``, ``asigngd`` (``structured`` and ``ntk_vp`` compute the sgd kernel only):
      ``jacobian`` while both sides' float32 Jacobians, ``(n1 + n2)·c·P`` numbers, fit in
      ``AUTO_JACOBIAN_BYTES``, else ``streamed``, whose memory does not grow with ``n1``.
    """
    if kind == "sgd":
        return "jacobian" if params < AUTO_STRUCTURED_PARAMS else "structured"
    return "jacobian" if (n1 + n2) * c * params * 4 <= AUTO_JACOBIAN_BYTES else "streamed"


def entk_fn(
    f: Callable[[Params, X], jax.Array],
    *,
    kind: str = "sgd",
    implementation: str = "jacobian",
    param_filter: Callable[[tuple[str, ...]], bool] | None = None,
    binary: bool = False,
    chunk: int = 8,
    sign_eps: float = 1e-8,
    column_chunk: int | None = None,
    sketch: str = "gaussian",
    sketch_dim: int = 1024,
    sketch_key: jax.Array | int = 0,
    sketch_block: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    compiler_options: dict[str, str] | None = None,
    split: bool | None = None,
) -> Callable[[Params, X, X | None], jax.Array]:
    """``kernel(params, x1, x2=None) -> [n1, c, n2, c]`` for ``f(params, x) -> [n, c]``.

    ``x2=None`` means ``x2 = x1``. ``param_filter(path) -> bool`` selects the parameters that move,
    ``path`` being the tuple of key names (``('encoder', 'layer_0', 'attention', 'self', 'query',
    'bias')``). ``binary`` differentiates ``f_1 - f_0`` (``c = 1``). ``chunk`` bounds how many x1
    examples (streamed, blocked, sketch) or cotangents (ntk_vp) are in flight at once, ``column_chunk``
    (default ``chunk``) how many x2 examples (blocked). The sign kernels use
    ``adam_sign`` with ``sign_eps`` (Adam's ε).

    ``implementation="sketch"`` estimates the kernel with a ``sketch`` ("gaussian" or "sparse")
    projection to ``sketch_dim`` dimensions drawn from ``sketch_key`` (a key or an int seed), generated
    ``sketch_block`` coordinates at a time (default: ``2**24 // sketch_dim`` for gaussian, ``2**20``
    for sparse). The same key gives the same projection, hence consistent kernels across calls.

    ``compiler_options`` are XLA options for the kernel's computation; by default those of
    ``cpu_compiler_options`` on CPU devices and none elsewhere. JAX applies compiler options to a
    top-level jit only, so inside the caller's ``jax.jit`` the kernel runs with the caller's.

    ``split`` (``jacobian`` only) compiles the kernel as two programs instead of one: both sides'
    Jacobians, the side with fewer examples laid out for ``contract_columns``, then their Gram (with
    ``x2=None``: one Jacobian, then ``contract``). On XLA CPU the one program is slower than its parts
    for a small model but avoids writing large Jacobians out for a large one (``benchmarks/staging.py``,
    numbers in docs/performance.md); by default (``None``) it splits when ``n2 · P`` float32 (x2's
    Jacobian per output) is at most ``SPLIT_BYTES``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if implementation not in (*IMPLEMENTATIONS, AUTO, "sketch"):
        raise ValueError(f"implementation must be one of {(*IMPLEMENTATIONS, AUTO, 'sketch')}, got {implementation!r}")
    if implementation == AUTO:
        options = dict(kind=kind, param_filter=param_filter, binary=binary, chunk=chunk, sign_eps=sign_eps,
                       column_chunk=column_chunk, devices=devices, compiler_options=compiler_options, split=split)
        return _auto_kernel(f, options)
    if sketch not in SKETCHES:
        raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")
    if sketch_dim < 1:
        raise ValueError(f"sketch_dim must be positive, got {sketch_dim}")
    key = jax.random.PRNGKey(sketch_key) if isinstance(sketch_key, int) else sketch_key
    block_size = sketch_block or (max(1, 2**24 // sketch_dim) if sketch == "gaussian" else 2**20)
    if implementation in SGD_ONLY and kind != "sgd":
        raise ValueError(f"implementation {implementation!r} computes the sgd kernel only (sign is not linear)")
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
        if implementation == "structured":
            return _structured_kernel(g, theta, x1, x2)
        if implementation == "sketch":
            return _sketch_kernel(g, theta, x1, x2, kind, key, sketch_dim, sketch, block_size, chunk, sign_eps)
        if implementation == "blocked":
            return _blocked_block(g, theta, x1, x2, kind, column_chunk or chunk, sign_eps)
        return _streamed_block(g, theta, x1, x2, kind, chunk, sign_eps)

    if compiler_options is None:
        cpu = all(d.platform == "cpu" for d in mesh.devices.flat)
        compiler_options = cpu_compiler_options(implementation) if cpu else {}
    symmetric = lambda p, x1: block(p, x1, None)
    s1, s2 = _signs(kind, sign_eps)
    jacobians = lambda p, x: per_example_jacobian(*restrict(fn, p, param_filter), x)
    gram = lambda a, b: contract(s1(a), s2(b))

    def programs(options: dict[str, str] | None) -> dict[str, Callable]:
        jit = lambda fn, **kw: jax.jit(fn, compiler_options=options, **kw)
        return {"block": jit(block, out_shardings=rows), "symmetric": jit(symmetric, out_shardings=rows),
                "jacobians": jit(jacobians), "gram": jit(gram, out_shardings=rows),
                # both sides' signed Jacobians in one program, the side with fewer examples laid out
                # for contract_columns (x1's on a tie), then their Gram
                "x1_columns": jit(lambda p, a, b: (as_columns(s1(jacobians(p, a))), s2(jacobians(p, b)))),
                "x2_columns": jit(lambda p, a, b: (s1(jacobians(p, a)), as_columns(s2(jacobians(p, b))))),
                "gram_x1_columns": jit(lambda c1, j2: contract_columns(j2, c1).transpose(2, 3, 0, 1),
                                       out_shardings=rows),
                "gram_x2_columns": jit(lambda j1, c2: contract_columns(j1, c2), out_shardings=rows)}

    mesh_devices = set(mesh.devices.flat)
    top_level = programs(compiler_options)
    # JAX takes compiler options on a top-level jit only: under the caller's jit the caller's compile
    # settles them, so a traced call runs without ours
    nested = programs(None) if compiler_options else top_level

    def run(params: Params, x1: X, x2: X | None) -> jax.Array:
        """Pad x1 to a multiple of the device count, shard it, run, and drop the padding rows."""
        traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves((params, x1, x2)))
        compiled = nested if traced else top_level
        n = num_examples(x1)
        padded = -(-n // mesh.size) * mesh.size
        x1p = jax.device_put(x1 if padded == n else take_examples(x1, batch_rows(n, 0, padded)), rows)
        if traced or any(getattr(v, "sharding", None) is None or v.sharding.device_set != mesh_devices
                         for v in jax.tree_util.tree_leaves(params)):
            params = jax.device_put(params, replicated)  # else jit takes them where they are
        x2r = None if x2 is None and padded == n else jax.device_put(x1 if x2 is None else x2, replicated)
        n2 = num_examples(x1 if x2 is None else x2)
        if implementation == "jacobian" and (
            split if split is not None else n2 * count_params(params, param_filter) * 4 <= SPLIT_BYTES
        ):
            if x2r is None:  # one Jacobian serves both sides
                j1 = compiled["jacobians"](params, x1p)
                return compiled["gram"](j1, j1)[:n]
            side = "x1_columns" if padded <= n2 else "x2_columns"
            return compiled[f"gram_{side}"](*compiled[side](params, x1p, x2r))[:n]
        if x2r is None:
            return compiled["symmetric"](params, x1p)[:n]
        return compiled["block"](params, x1p, x2r)[:n]

    def kernel(params: Params, x1: X, x2: X | None = None) -> jax.Array:
        if implementation not in ("streamed", "blocked"):
            return run(params, x1, x2)
        n1 = num_examples(x1)
        x2 = x1 if x2 is None else x2
        return jnp.concatenate(
            [run(params, take_examples(x1, np.arange(s, min(s + chunk, n1))), x2) for s in range(0, n1, chunk)]
        )

    return kernel


def _auto_kernel(f: Callable[[Params, X], jax.Array], options: dict[str, Any]) -> Callable[[Params, X, X | None], jax.Array]:
    """``entk_fn(f, implementation=auto_implementation(...), **options)``, chosen at each call from the
    sizes of that call (one compiled kernel per choice); ``kernel.choose(params, x1, x2=None)`` says
    which it runs."""
    built: dict[str, Callable] = {}

    def choose(params: Params, x1: X, x2: X | None = None) -> str:
        fn = _binary(f) if options["binary"] else f
        c = jax.eval_shape(fn, params, take_examples(x1, np.arange(1))).shape[-1]
        n1 = num_examples(x1)
        return auto_implementation(options["kind"], count_params(params, options["param_filter"]), n1,
                                   n1 if x2 is None else num_examples(x2), c)

    def kernel(params: Params, x1: X, x2: X | None = None) -> jax.Array:
        name = choose(params, x1, x2)
        if name not in built:
            built[name] = entk_fn(f, implementation=name, **options)
        return built[name](params, x1, x2)

    kernel.choose = choose  # type: ignore[attr-defined]
    return kernel


def flatten_kernel(k: jax.Array) -> jax.Array:
    """``[n1, c, n2, c] -> [n1·c, n2·c]``, rows and columns ordered (example, output)."""
    n1, c1, n2, c2 = k.shape
    return k.reshape(n1 * c1, n2 * c2)
