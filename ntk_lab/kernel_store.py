"""Kernels computed block by block onto disk: nothing finished is lost, an interrupted run resumes.

A kernel ``[n1, c, n2, c]`` is computed in tiles of ``block`` x1 rows (and optionally
``column_block`` x2 columns); each finished tile is written atomically (a temporary file renamed into
place) to ``folder/rows_START_STOP[_cols_START_STOP].npy``. Running
again skips the blocks already on disk, so the result is identical to an uninterrupted run. The
folder is named by ``kernel_key``: a hash of the model, the data, the kernel kind and the parameter
subset. A block holding NaN or Inf stops the run with an error naming the examples.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from ntk_lab.errors import NtkLabError
from ntk_lab.kernels import num_examples, take_examples


def fingerprint(tree: Any) -> str:
    """A short sha256 of every array in a pytree (shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.asarray(leaf)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def kernel_key(*, model: str, kind: str, subset: str, x1: Any, x2: Any, **extra: Any) -> str:
    """The folder name for one kernel: readable parts plus a hash of everything that determines it."""
    parts = {"model": model, "kind": kind, "subset": subset, "x1": fingerprint(x1), "x2": fingerprint(x2), **extra}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    safe = lambda s: "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(s))
    return f"{safe(Path(model).name)}-{safe(kind)}-{safe(subset)}-{digest}"


def save_atomically(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file beside ``path``, then rename: a crash leaves no partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_finite(block: np.ndarray, start: int, column_start: int = 0) -> None:
    """Raise, naming the x1 and x2 examples, when a kernel block ``[b, c, n2, c]`` has NaN or Inf."""
    bad = ~np.isfinite(block)
    if bad.any():
        rows = (start + np.flatnonzero(bad.any(axis=(1, 2, 3)))).tolist()
        cols = (column_start + np.flatnonzero(bad.any(axis=(0, 1, 3)))).tolist()
        raise NtkLabError(
            f"kernel has NaN/Inf at x1 examples {rows[:10]} against x2 examples {cols[:10]}: check those "
            "inputs, and use float32 rather than float16/bfloat16 if the model overflows"
        )


def compute_kernel(
    kernel: Callable[[Any, Any, Any], Any],
    params: Any,
    x1: Any,
    x2: Any,
    folder: str | Path,
    *,
    block: int = 32,
    column_block: int | None = None,
    desc: str = "kernel",
) -> np.ndarray:
    """``kernel(params, x1[rows], x2[cols])`` for tiles of ``block`` rows (and ``column_block``
    columns; default all), each saved as it finishes.

    Returns the whole kernel ``[n1, c, n2, c]`` as numpy, read back from the tiles on disk.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n1, n2 = num_examples(x1), num_examples(x2)
    row_starts = range(0, n1, block)
    col_starts = [0] if column_block is None else range(0, n2, column_block)
    col_stop = lambda c: n2 if column_block is None else min(c + column_block, n2)
    tile_name = lambda r, c: f"rows_{r:07d}_{min(r + block, n1):07d}" + (
        "" if column_block is None else f"_cols_{c:07d}_{col_stop(c):07d}"
    )
    paths = {(r, c): folder / f"{tile_name(r, c)}.npy" for r in row_starts for c in col_starts}
    todo = [(r, c) for (r, c), p in paths.items() if not p.exists()]
    for r, c in tqdm(todo, desc=desc, unit="tile", disable=not todo, leave=False):
        rows = np.arange(r, min(r + block, n1))
        cols = np.arange(c, col_stop(c))
        x2_tile = x2 if column_block is None else take_examples(x2, cols)
        values = np.asarray(kernel(params, take_examples(x1, rows), x2_tile))
        check_finite(values, r, c)
        save_atomically(paths[r, c], values)
    return np.concatenate(
        [np.concatenate([np.load(paths[r, c]) for c in col_starts], axis=2) for r in row_starts]
    )
