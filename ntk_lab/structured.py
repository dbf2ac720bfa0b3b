"""The structured kernels: dense layers and embedding tables from their factors.

uses the structure of dense layers (as neural-tangents' structured derivatives
do, for this one rule). A parameter ``W`` that enters f once, as an operand of a ``dot_general``
``y = h·W`` (found in f's jaxpr), has the per-example gradient ``∂f_a(x_i)/∂W = Σ_u h_iu ⊗ δ_iau``,
with ``h_iu`` the other operand at position u (token) and ``δ_iau = ∂f_a/∂y_iu``. The backward pass
computes only the δ (never ``∂f/∂W``), and W's kernel term is

    K_W[i,a,j,b] = Σ_{u,v} <h_iu, h_jv> <δ_iau, δ_jbv>

at cost ``n1·n2·U²·(K + c²F)`` (U positions, K contracted, F free coordinates of W), or, where that
is more, by forming the per-example gradients from the factors (``(n1+n2)·c·U·K·F`` plus their Gram).
An embedding table every use of which is a row lookup ``y_u = E[id_u]`` contributes
``Σ_{u,v} [id_iu = id_jv] <δ_iau, δ_jbv>`` (u over the lookups of all uses), without forming a
vocabulary-sized gradient (unless the table is small enough for that to cost less). The other
parameters (biases, LayerNorm scales) get explicit Jacobians. For an MLP (U = 1) the SGD kernel is a
product of two small Gram matrices per layer.

The sign kernels (``signgd``, ``asigngd``) use the same factors. The sign of a sum of outer products
does not factor, so a dense weight's signed gradient ``sign(Σ_u h_iu ⊗ δ_iau)`` is formed from the
factors (``n·c·U·K·F``, one batched matmul, never a backward pass through the whole model), and the
other side's gradient too (``asigngd`` leaves it unsigned). An embedding table's gradient is
nonzero on the rows the example looks up only, ``G_ia[r] = Σ_{u: id_iu = r} δ_iau``; its sign on those
rows, taken at each lookup u and weighted by ``1/#{u' : id_iu' = id_iu}`` (so that a repeated token
counts once), gives

    asigngd  Σ_{u,v} [id_iu = id_jv] w_iu <sign G_ia[id_iu], δ_jbv>
    signgd   Σ_{u,v} [id_iu = id_jv] w_iu w_jv <sign G_ia[id_iu], sign G_jb[id_jv]>

at the SGD kernel's token-pair cost, again without a vocabulary-sized gradient.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from ntk_lab.jacobians import (
    HIGHEST,
    SIGNED,
    X,
    adam_sign,
    contract,
    on_one_example,
    signs,
)


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


def _signed_dot_kernel(h1, d1, h2, d2, sign2: bool, eps: float) -> jax.Array:
    """``<sign G1[i,a], s2(G2[j,b])>`` of one tapped dense weight, ``G[i,a] = Σ_u h[i,u] ⊗ δ[i,a,u]``:
    x1's signed gradients formed from the factors, then x2's formed too (and signed for signgd), or,
    for asigngd where it costs less (few positions: ``n1·c·n2·U·K·F`` against ``n2·c·U·K·F +
    n1·n2·c²·K·F``), ``Σ_v h2[j,v]ᵀ sign G1[i,a] δ2[j,b,v]`` without forming x2's gradients."""
    form = lambda h, d: jnp.einsum("iuk,iauf->iakf", h, d, precision=HIGHEST)
    s1 = adam_sign(form(h1, d1), eps)
    (n1, c), (n2, u2, k), f = s1.shape[:2], h2.shape, d2.shape[3]
    if not sign2 and n1 * c * n2 * u2 * k * f < n2 * c * u2 * k * f + n1 * n2 * c * c * k * f:
        return jnp.einsum("jvk,iakf,jbvf->iajb", h2, s1, d2, precision=HIGHEST, optimize=True)
    g2 = form(h2, d2)
    return jnp.einsum("iakf,jbkf->iajb", s1, adam_sign(g2, eps) if sign2 else g2, precision=HIGHEST)


def _signed_rows(ids: jax.Array, delta: jax.Array, eps: float) -> jax.Array:
    """``w[i,u] · sign G[i,a][ids[i,u]]`` ``[n, c, U, F]``: an embedding table's signed per-example
    gradient on the row each lookup u reads, ``G[i,a][r] = Σ_{u: ids[i,u] = r} δ[i,a,u]``, weighted by
    ``w[i,u] = 1/#{u': ids[i,u'] = ids[i,u]}`` so that summing over u counts each row once."""
    same = (ids[:, :, None] == ids[:, None, :]).astype(delta.dtype)  # [n, U, U]
    rows = adam_sign(jnp.einsum("iuw,iawf->iauf", same, delta, precision=HIGHEST), eps)
    return rows / same.sum(-1)[:, None, :, None]


def _gather_kernel(ids1, d1, ids2, d2, rows: int, kind: str = "sgd", eps: float = 1e-8) -> jax.Array:
    """``<s1(G1[i,a]), s2(G2[j,b])>`` of an embedding table of ``rows`` rows, ``G[i,a][r] = Σ_{u: ids[i,u]
    = r} δ[i,a,u]`` (its lookups at every use concatenated along u; ``s1, s2`` the ``kind``'s signs).
    Token pairs ``Σ_{u,v} [ids1[i,u] = ids2[j,v]] <s1 δ1[i,a,u], s2 δ2[j,b,v]>`` cost ``n1·n2·U²·c²F``, a
    signed side taking ``_signed_rows``; where scattering δ into per-example gradients ``[n, c, rows, F]``
    and contracting costs less (small tables), that is done instead."""
    (n1, u1), (n2, u2) = ids1.shape, ids2.shape
    c = d1.shape[1]
    sign1, sign2 = SIGNED[kind]
    if n1 * n2 * u1 * u2 <= (n1 + n2) * rows + n1 * n2 * c * rows:
        same = (ids1[:, :, None, None] == ids2[None, None]).astype(d1.dtype)
        rows1 = _signed_rows(ids1, d1, eps) if sign1 else d1
        return _pair_kernel(same, rows1, _signed_rows(ids2, d2, eps) if sign2 else d2)
    scatter = jax.vmap(lambda i, d: jnp.zeros((d.shape[0], rows, d.shape[2]), d.dtype).at[:, i].add(d))
    g1, g2 = scatter(ids1, d1), scatter(ids2, d2)
    return jnp.einsum("iavf,jbvf->iajb", adam_sign(g1, eps) if sign1 else g1, adam_sign(g2, eps) if sign2 else g2,
                      precision=HIGHEST)


def structured_kernel(g, theta, x1, x2, kind: str = "sgd", eps: float = 1e-8):
    """The ``kind`` kernel ``[n1, c, n2, c]`` of ``g(θ, x)`` (``x2`` None: x1) from the factors of its
    dense weights and embedding tables, Jacobians for the other leaves (see the module docstring)."""
    free, j1, tapped, f1 = _structured_parts(g, theta, x1)
    _, j2, _, f2 = (free, j1, tapped, f1) if x2 is None else _structured_parts(g, theta, x2)
    s1, s2 = signs(kind, eps)
    sign2 = SIGNED[kind][1]
    total = contract(s1(j1), s2(j2)) if free else 0.0
    uses: dict[int, list[int]] = {}  # leaf -> positions of its tapped equations
    for position, (leaf, _, _) in enumerate(tapped):
        uses.setdefault(leaf, []).append(position)
    for leaf, positions in uses.items():
        if tapped[positions[0]][1] == "dot":
            (h1, d1), (h2, d2) = f1[positions[0]], f2[positions[0]]
            total = total + (_dot_kernel(h1, d1, h2, d2) if kind == "sgd" else _signed_dot_kernel(h1, d1, h2, d2, sign2, eps))
        else:  # every row lookup of one table: the indices and δ of all uses side by side
            cat = lambda fs, i, axis: jnp.concatenate([fs[p][i] for p in positions], axis=axis)
            rows = theta[leaf].shape[0]
            factors = (cat(f1, 0, 1), cat(f1, 1, 2), cat(f2, 0, 1), cat(f2, 1, 2))
            total = total + _gather_kernel(*factors, rows, kind, eps)
    return total
