"""Kernels computed block by block onto disk: nothing finished is lost, an interrupted run resumes.

A kernel ``[n1, c, n2, c]`` is computed in tiles of ``block`` x1 rows (and optionally
``column_block`` x2 columns); each finished tile is written atomically (a temporary file renamed into
place) to ``folder/rows_START_STOP[_cols_START_STOP].npy``, with the sha256 of its bytes beside it
(``.npy.sha256``). Running again skips the tiles already on disk, so the result is identical to an
uninterrupted run. Every tile is checked against its checksum when read; a damaged one (truncated,
overwritten) is recomputed, with a line naming it. The folder is named by ``kernel_key``: a hash of the
model, the data, the kernel kind and the parameter subset. A block holding NaN or Inf stops the run
with an error naming the examples.

Several runs may share one cache: a run claims a tile by creating ``TILE.npy.lock`` (holding its host
and process id) before computing it, and a run that finds a tile claimed computes the others first,
then waits for it. A claim whose process has died (or, from another host, older than
``STALE_CLAIM_SECONDS``) is taken over.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ntk_lab.cache import write_atomically
from ntk_lab.errors import NtkLabError
from ntk_lab.pytrees import batch_rows, num_examples, take_examples
from ntk_lab.state import digest


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
    safe = lambda s: "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(s))
    return f"{safe(Path(model).name)}-{safe(kind)}-{safe(subset)}-{digest(parts)}"


STALE_CLAIM_SECONDS = 3600.0
POLL_SECONDS = 0.5


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_tile(path: Path, array: np.ndarray) -> None:
    """Save a tile and then its checksum, each atomically: a tile without a checksum counts as absent."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    write_atomically(path, data)
    write_atomically(_checksum_path(path), hashlib.sha256(data).hexdigest().encode())


def tile_exists(path: Path) -> bool:
    return path.exists() and _checksum_path(path).exists()


def read_tile(path: Path) -> np.ndarray | None:
    """A tile, checked against its checksum; None, with a line naming the file, when it is damaged."""
    try:
        data, expected = path.read_bytes(), _checksum_path(path).read_text().strip()
    except OSError as e:
        problem = f"cannot be read ({e.strerror})"
    else:
        if hashlib.sha256(data).hexdigest() == expected:
            return np.load(io.BytesIO(data))
        problem = "does not match its checksum (truncated or overwritten)"
    print(f"kernel cache: {path} {problem}; recomputing it", file=sys.stderr, flush=True)
    return None


def _claim_is_stale(lock: Path) -> bool:
    """Whether a claim's process is gone: dead on this host, or older than ``STALE_CLAIM_SECONDS``."""
    try:
        age = time.time() - lock.stat().st_mtime
        host, pid = lock.read_text().split()
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return age > 10 * POLL_SECONDS  # a claim being written has its contents within a poll or two
    if host != socket.gethostname():
        return age > STALE_CLAIM_SECONDS
    if int(pid) == os.getpid():
        return True  # our own, left by an interrupted call in this process
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(lock: Path) -> bool:
    """Create ``lock`` for this process; False when another live process holds it."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _claim_is_stale(lock):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


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
    column_width: int | None = None,
    desc: str = "kernel",
) -> np.ndarray:
    """``kernel(params, x1[rows], x2[cols])`` for tiles of ``block`` rows (and ``column_block``
    columns; default all), each saved as it finishes.

    Every tile is computed at one shape, ``min(block, n1)`` x ``min(column_block, n2)`` examples: the
    last row and column tiles are padded by repeating the last example and the padding is dropped, so
    the kernel compiles once, not once per ragged edge. ``column_width`` pads every column tile to at
    least that many examples, so a kernel of fewer columns runs the program already compiled for
    another kernel's wider tiles (extra arithmetic instead of a compilation).

    Returns the whole kernel ``[n1, c, n2, c]`` as numpy, read back from the tiles on disk and checked
    against their checksums (a damaged tile is recomputed, at most twice).
    """
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
    width = max(n2 if column_block is None else min(column_block, n2), column_width or 0)

    def compute(r: int, c: int) -> None:
        x1_tile = take_examples(x1, batch_rows(n1, r, min(block, n1)))
        x2_tile = take_examples(x2, batch_rows(n2, c, width))
        values = np.asarray(kernel(params, x1_tile, x2_tile))[: min(r + block, n1) - r, :, : col_stop(c) - c]
        check_finite(values, r, c)
        write_tile(paths[r, c], values)

    for _ in range(3):
        _fill(paths, compute, desc)
        tiles, damaged = {}, []
        for tile, path in paths.items():
            values = read_tile(path)
            if values is None:
                damaged.append(tile)
            else:
                tiles[tile] = values
        if not damaged:
            return np.concatenate(
                [np.concatenate([tiles[r, c] for c in col_starts], axis=2) for r in row_starts]
            )
        for tile in damaged:
            paths[tile].unlink(missing_ok=True)
            _checksum_path(paths[tile]).unlink(missing_ok=True)
    raise NtkLabError(f"kernel tiles in {folder} fail their checksums after recomputing them: is the disk full or failing?")


def _fill(paths: dict[tuple[int, int], Path], compute: Callable[[int, int], None], desc: str) -> None:
    """Compute every tile not on disk, claiming each first; then wait for those other runs claimed."""
    from ntk_lab.progress import progress

    pending = [tile for tile, path in paths.items() if not tile_exists(path)]
    waited = False
    with progress(total=len(pending), desc=desc, unit="tile", disable=not pending, leave=False) as bar:
        while pending:
            claimed_elsewhere = []
            for tile in pending:
                path = paths[tile]
                if tile_exists(path):
                    bar.update()
                    continue
                lock = path.with_name(path.name + ".lock")
                if not claim(lock):
                    claimed_elsewhere.append(tile)
                    continue
                try:
                    if not tile_exists(path):
                        compute(*tile)
                finally:
                    lock.unlink(missing_ok=True)
                bar.update()
            if claimed_elsewhere and not waited:
                print(f"kernel cache: waiting for {len(claimed_elsewhere)} tile(s) another run is computing in "
                      f"{next(iter(paths.values())).parent}", file=sys.stderr, flush=True)
                waited = True
            if claimed_elsewhere:
                time.sleep(POLL_SECONDS)
            pending = claimed_elsewhere
