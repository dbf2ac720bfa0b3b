"""What benchmarks/entk.py and neural-tangents' side (entk_nt.py) share, importable in both
environments (standard library only): the kernel sizes and the timing rule."""

import time
from typing import Callable

SIZES = {"mlp": (16, 16), "tiny": (16, 16), "bert-base": (4, 4)}  # (n1, n2) of each benchmark model


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (``fn`` blocks until its result is ready)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def first_and_best(fn: Callable[[], object], repeats: int = 2) -> tuple[float, float]:
    """``(first, best)``: the first call (compile included), then the best of ``repeats`` more."""
    first = timed(fn)
    return first, min(timed(fn) for _ in range(repeats))
