"""Kernels computed block by block onto disk: nothing finished is lost, an interrupted run resumes.

A kernel ``[n1, c, n2, c]`` is computed in blocks of ``block`` x1 rows; each finished block is
written atomically (a temporary file renamed into place) to ``folder/rows_START_STOP.npy``. Running
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


def check_finite(block: np.ndarray, start: int) -> None:
    """Raise, naming the x1 and x2 examples, when a kernel block ``[b, c, n2, c]`` has NaN or Inf."""
    bad = ~np.isfinite(block)
    if bad.any():
        rows = (start + np.flatnonzero(bad.any(axis=(1, 2, 3)))).tolist()
        cols = np.flatnonzero(bad.any(axis=(0, 1, 3))).tolist()
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
    desc: str = "kernel",
) -> np.ndarray:
    """``kernel(params, x1[rows], x2)`` for consecutive blocks of rows, each saved as it finishes.

    Returns the whole kernel ``[n1, c, n2, c]`` as numpy, read back from the blocks on disk.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n1 = num_examples(x1)
    starts = range(0, n1, block)
    paths = [folder / f"rows_{s:07d}_{min(s + block, n1):07d}.npy" for s in starts]
    todo = [(s, p) for s, p in zip(starts, paths) if not p.exists()]
    for s, path in tqdm(todo, desc=desc, unit="block", disable=not todo, leave=False):
        rows = np.arange(s, min(s + block, n1))
        values = np.asarray(kernel(params, take_examples(x1, rows), x2))
        check_finite(values, s)
        save_atomically(path, values)
    return np.concatenate([np.load(p) for p in paths])
