"""A run's finished work on disk, keyed by what produced it, so a rerun resumes and never reuses stale numbers.

``OUT/state/CONFIG/`` (CONFIG: a hash of the run's options) holds one record per (seed, method):
``SEED-METHOD.json`` and its arrays ``SEED-METHOD.npz``. Each record carries its *provenance*, a short
hash of every input that determined it:

- ``data``: the k-shot split's text and labels (train, dev, test);
- ``tokenizer``: the tokenizer's vocabulary and rules, and the label words' ids;
- ``model``: the parameters at θ0 (the checkpoint's, or with a seeded head or adapters);
- ``code``: the source of the ``ntk_lab`` package.

A record is reused only when all four match; otherwise it is recomputed, with one line naming what
changed. A record whose numbers are not finite is never written. ``timing.json`` sums the wall time
of every invocation of the run, so a resumed run reports the whole run's time.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ntk_lab.cache import write_atomically

PROVENANCE = ("data", "tokenizer", "model", "code")


def digest(value: Any) -> str:
    """A short sha256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """A short sha256 of every ``.py`` file of the ``ntk_lab`` package (paths and contents)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def finite(record: dict, arrays: dict[str, np.ndarray]) -> bool:
    """Whether a record's accuracy and every array it keeps are finite."""
    accuracy = record.get("accuracy")
    return (isinstance(accuracy, (int, float)) and bool(np.isfinite(accuracy))
            and all(np.isfinite(np.asarray(a, dtype=float)).all() for a in arrays.values()))


class State:
    """Finished (seed, method) records and their test outputs under ``OUT/state/CONFIG``."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        self.folder = out / "state" / digest(config)[:12]
        self.folder.mkdir(parents=True, exist_ok=True)

    def load(self, seed: int, method: str, provenance: dict[str, str]) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The saved record and arrays, or None when absent, unreadable or made from other inputs."""
        record_path, arrays_path = self.folder / f"{seed}-{method}.json", self.folder / f"{seed}-{method}.npz"
        if not (record_path.exists() and arrays_path.exists()):
            return None
        try:
            saved = json.loads(record_path.read_text())
            with np.load(arrays_path) as data:
                arrays = dict(data)
        except (OSError, ValueError, EOFError) as e:
            print(f"state: recomputing {method} for seed {seed}: {record_path.name} or its arrays cannot be read "
                  f"({type(e).__name__})", file=sys.stderr, flush=True)
            return None
        was = saved.pop("provenance", {})
        changed = [key for key in PROVENANCE if was.get(key) != provenance[key]]
        if changed:
            print(f"state: recomputing {method} for seed {seed}: the {', '.join(changed)} changed since it was saved",
                  file=sys.stderr, flush=True)
            return None
        return saved, arrays

    def save(self, seed: int, method: str, record: dict, arrays: dict[str, np.ndarray], provenance: dict[str, str]) -> bool:
        """Arrays first, then the record with its provenance: a record on disk always has its arrays.

        A record with non-finite numbers is not saved (a rerun computes it again); returns whether it was.
        """
        if not finite(record, arrays):
            print(f"state: not keeping {method} for seed {seed}: its numbers are not finite", file=sys.stderr, flush=True)
            return False
        buffer = io.BytesIO()
        named: dict[str, Any] = dict(arrays)
        np.savez(buffer, **named)
        write_atomically(self.folder / f"{seed}-{method}.npz", buffer.getvalue())
        write_atomically(self.folder / f"{seed}-{method}.json", json.dumps({**record, "provenance": provenance}).encode())
        return True


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Timer:
    """Wall seconds per stage and the peak memory at the end of each stage, over every invocation of a run.

    With a ``path``, the totals of earlier invocations are read from it and the new totals written to
    it by ``save``: a resumed run reports the whole run's time, and ``invocations`` counts its starts.
    """

    path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    peak_gib: dict[str, float] = field(default_factory=dict)
    invocations: int = 1

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
                self.seconds, self.peak_gib = dict(saved["seconds"]), dict(saved["peak_gib"])
                self.invocations = int(saved["invocations"]) + 1
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an unreadable record of past time: count from this invocation

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.peak_gib[name] = max(self.peak_gib.get(name, 0.0), peak_rss_gib())

    def save(self) -> None:
        if self.path is not None:
            write_atomically(self.path, json.dumps({"seconds": self.seconds, "peak_gib": self.peak_gib,
                                                    "invocations": self.invocations}).encode())
