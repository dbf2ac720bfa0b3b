"""Pytree utilities shared by the kernels, fine-tuning, subsets and the kernel store.

Parameters are pytrees whose leaves are named by their key path (``path_names``); a ``param_filter(path)``
selects the leaves that move. Inputs are pytrees of arrays with a leading example axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

Params = Any
X = Any
ParamFilter = Callable[[tuple[str, ...]], bool]


def path_names(path: tuple) -> tuple[str, ...]:
    """A pytree key path as plain strings: ``(DictKey('encoder'), SequenceKey(0))`` -> ``('encoder', '0')``."""
    names = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
    return tuple(names)


def split_params(params: Params, param_filter: ParamFilter | None) -> tuple[list, list, Any, tuple]:
    """``(moving leaves, frozen leaves, treedef, chosen)``: the leaves ``param_filter`` selects (all
    when None), and the rest."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    chosen = tuple(param_filter is None or bool(param_filter(path_names(p))) for p, _ in leaves)
    if not any(chosen):
        raise ValueError("param_filter selects no parameters")
    theta = [leaf for (_, leaf), c in zip(leaves, chosen) if c]
    frozen = [leaf for (_, leaf), c in zip(leaves, chosen) if not c]
    return theta, frozen, treedef, chosen


def merge_params(theta: list, frozen: list, treedef: Any, chosen: tuple) -> Params:
    """The inverse of ``split_params``."""
    moving, fixed = iter(theta), iter(frozen)
    return jax.tree_util.tree_unflatten(treedef, [next(moving) if c else next(fixed) for c in chosen])


def restrict(f: Callable[[Params, X], jax.Array], params: Params,
             param_filter: ParamFilter | None) -> tuple[Callable[[list, X], jax.Array], list]:
    """``(g, θ)``: ``g(θ, x) = f(params with the selected leaves replaced by θ, x)``, θ the selected leaves."""
    theta, frozen, treedef, chosen = split_params(params, param_filter)
    return (lambda t, x: f(merge_params(t, frozen, treedef, chosen), x)), theta


def count_params(params: Params, param_filter: ParamFilter | None = None) -> int:
    """How many scalars move under ``param_filter`` (all of them when None)."""
    if param_filter is None:  # no paths to build
        return sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params))
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(int(np.prod(v.shape)) for p, v in leaves if param_filter(path_names(p)))


def take_examples(x: X, rows: np.ndarray) -> X:
    """The examples ``rows`` of every array in the pytree ``x``."""
    return jax.tree_util.tree_map(lambda a: a[rows], x)


def num_examples(x: X) -> int:
    """The length of the leading (example) axis of the pytree ``x``."""
    return int(jax.tree_util.tree_leaves(x)[0].shape[0])


def batch_rows(n: int, start: int, size: int) -> np.ndarray:
    """Rows ``start .. start + size`` of ``n`` examples, the ones past the end repeating the last: one
    batch shape serves every batch (the caller drops the repeated rows)."""
    return np.arange(start, start + size).clip(max=n - 1)
